"""Embedding, RNN and LSTM against PyTorch with copied weights (float64): outputs, final
states and every gradient; several layer counts, batch 1, seq 1."""
import numpy as np
import pytest

import mininet
from mininet import nn, ops
from mininet.autograd import Tensor
from conftest import assert_near, gradcheck, t64 as T, torch

rng = np.random.default_rng(11)


def close(a, b, tol=1e-10):
    assert_near(a, b, tol)


@pytest.mark.torch
def test_embedding_matches_torch_and_gradcheck():
    idx = np.array([[1, 4, 4], [0, 2, 1]])
    m = nn.Embedding(5, 3, dtype="float64")
    t = torch.nn.Embedding(5, 3).double()
    with torch.no_grad():
        t.weight.copy_(torch.tensor(m.weight.numpy()))
    g = rng.standard_normal((2, 3, 3))
    y = m(Tensor(idx))
    y.backward(Tensor(g, dtype="float64"))
    ty = t(torch.tensor(idx))
    ty.backward(torch.tensor(g))
    close(y.numpy(), ty.detach().numpy())
    close(m.weight.grad.numpy(), t.weight.grad.numpy())
    gradcheck(lambda w: ops.embedding(idx, w), rng.standard_normal((5, 3)))
    # second order: the gradient is linear in the output grad
    gradcheck(lambda w, h: ops.embedding(idx, w) * h, rng.standard_normal((5, 3)),
              rng.standard_normal((2, 3, 3)))


def test_embedding_bad_indices():
    m = nn.Embedding(5, 3)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        m(Tensor(np.array([0, 5])))
    with pytest.raises(IndexError):
        m(Tensor(np.array([-1])))
    with pytest.raises(TypeError, match="integers"):
        m(Tensor(np.array([0.5])))


def test_embedding_on_a_device_without_row_kernels(monkeypatch):
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {"rows"})
    idx = np.array([3, 0, 3])
    w0 = rng.standard_normal((4, 2))
    w = T(w0)
    y = ops.embedding(idx, w)
    (y * y).sum().backward()
    close(y.numpy(), w0[idx])
    expect = np.zeros_like(w0)
    np.add.at(expect, idx, 2 * w0[idx])
    close(w.grad.numpy(), expect)


def copy_rnn(m, t, lstm):
    """torch's weights into ours: weight_ih_l{k} (k*hidden, in) is W_ih transposed."""
    for k, cell in enumerate(m.cells):
        for ours, theirs in ((cell.W_ih, f"weight_ih_l{k}"), (cell.W_hh, f"weight_hh_l{k}")):
            ours.data = Tensor(getattr(t, theirs).detach().numpy().T.copy(), dtype="float64")
        for ours, theirs in ((cell.bias_ih, f"bias_ih_l{k}"), (cell.bias_hh, f"bias_hh_l{k}")):
            ours.data = Tensor(getattr(t, theirs).detach().numpy().copy(), dtype="float64")


def grads_match(m, t):
    for k, cell in enumerate(m.cells):
        close(cell.W_ih.grad.numpy(), getattr(t, f"weight_ih_l{k}").grad.numpy().T)
        close(cell.W_hh.grad.numpy(), getattr(t, f"weight_hh_l{k}").grad.numpy().T)
        close(cell.bias_ih.grad.numpy(), getattr(t, f"bias_ih_l{k}").grad.numpy())
        close(cell.bias_hh.grad.numpy(), getattr(t, f"bias_hh_l{k}").grad.numpy())


CASES = [(1, 4, 3, 5, 6), (2, 3, 2, 4, 5), (3, 1, 1, 3, 2), (2, 1, 4, 2, 3)]   # layers, seq, batch, in, hidden


@pytest.mark.torch
@pytest.mark.parametrize("layers,seq,batch,inp,hidden", CASES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_rnn_matches_torch(layers, seq, batch, inp, hidden, nonlinearity, with_h0):
    m = nn.RNN(inp, hidden, layers, nonlinearity=nonlinearity, dtype="float64")
    t = torch.nn.RNN(inp, hidden, layers, nonlinearity=nonlinearity).double()
    copy_rnn(m, t, False)
    x0 = rng.standard_normal((seq, batch, inp))
    h0 = rng.standard_normal((layers, batch, hidden))
    x, tx = T(x0), torch.tensor(x0, requires_grad=True)
    h, th = T(h0), torch.tensor(h0, requires_grad=True)
    out, hn = m(x, h if with_h0 else None)
    tout, thn = t(tx, th if with_h0 else None)
    close(out.numpy(), tout.detach().numpy())
    close(hn.numpy(), thn.detach().numpy())
    g1, g2 = rng.standard_normal(out.shape), rng.standard_normal(hn.shape)
    ((out * Tensor(g1, dtype="float64")).sum() + (hn * Tensor(g2, dtype="float64")).sum()).backward()
    ((tout * torch.tensor(g1)).sum() + (thn * torch.tensor(g2)).sum()).backward()
    close(x.grad.numpy(), tx.grad.numpy())
    if with_h0:
        close(h.grad.numpy(), th.grad.numpy())
    grads_match(m, t)


@pytest.mark.torch
@pytest.mark.parametrize("layers,seq,batch,inp,hidden", CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_matches_torch(layers, seq, batch, inp, hidden, with_state):
    m = nn.LSTM(inp, hidden, layers, dtype="float64")
    t = torch.nn.LSTM(inp, hidden, layers).double()
    copy_rnn(m, t, True)
    x0 = rng.standard_normal((seq, batch, inp))
    h0, c0 = (rng.standard_normal((layers, batch, hidden)) for _ in range(2))
    x, tx = T(x0), torch.tensor(x0, requires_grad=True)
    h, th = T(h0), torch.tensor(h0, requires_grad=True)
    c, tc = T(c0), torch.tensor(c0, requires_grad=True)
    out, (hn, cn) = m(x, (h, c) if with_state else None)
    tout, (thn, tcn) = t(tx, (th, tc) if with_state else None)
    close(out.numpy(), tout.detach().numpy())
    close(hn.numpy(), thn.detach().numpy())
    close(cn.numpy(), tcn.detach().numpy())
    gs = [rng.standard_normal(a.shape) for a in (out, hn, cn)]
    sum((a * Tensor(g, dtype="float64")).sum() for a, g in zip((out, hn, cn), gs)).backward()
    sum((a * torch.tensor(g)).sum() for a, g in zip((tout, thn, tcn), gs)).backward()
    close(x.grad.numpy(), tx.grad.numpy())
    if with_state:
        close(h.grad.numpy(), th.grad.numpy())
        close(c.grad.numpy(), tc.grad.numpy())
    grads_match(m, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lstm_gates_match_the_composite(dtype):
    """The one-kernel step and its one-kernel gradient against the same math in ops;
    second order (create_graph) through it; NaN propagates."""
    from mininet.ops.rnn import lstm_gates_composite
    r = np.random.default_rng(3)
    z, c = r.standard_normal((5, 4 * 7)) * 3, r.standard_normal((5, 7))
    z[0, 3] = 40.0                      # saturated gates
    z[1, 7 * 2 + 1] = -40.0
    gh, gc = r.standard_normal((5, 7)), r.standard_normal((5, 7))
    got = []
    for f in (ops.lstm_gates, lstm_gates_composite):
        Z, C = (Tensor(a, dtype=dtype, requires_grad=True) for a in (z, c))
        h, cn = f(Z, C)
        ((h * Tensor(gh, dtype=dtype)).sum() + (cn * Tensor(gc, dtype=dtype)).sum()).backward()
        got.append([h.numpy(), cn.numpy(), Z.grad.numpy(), C.grad.numpy()])
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, **tol)
    Z, C = (Tensor(a, dtype="float64", requires_grad=True) for a in (z, c))
    gradcheck(lambda zz, cc: sum((t * t).sum() for t in ops.lstm_gates(zz, cc)), z.copy(), c.copy())
    h, cn = ops.lstm_gates(Z, C)
    (h.sum() + cn.sum()).backward(create_graph=True)
    second = (Z.grad * Z.grad).sum()
    Z2, C2 = (Tensor(a, dtype="float64", requires_grad=True) for a in (z, c))
    h2, cn2 = lstm_gates_composite(Z2, C2)
    (h2.sum() + cn2.sum()).backward(create_graph=True)
    second2 = (Z2.grad * Z2.grad).sum()
    Z.grad = C.grad = Z2.grad = C2.grad = None
    second.backward()
    second2.backward()
    np.testing.assert_allclose(Z.grad.numpy(), Z2.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(C.grad.numpy(), C2.grad.numpy(), rtol=1e-12, atol=1e-13)
    z[2, 0] = np.nan
    h, cn = ops.lstm_gates(Tensor(z, dtype=dtype), Tensor(c, dtype=dtype))
    assert np.isnan(h.numpy()[2, 0]) and np.isnan(cn.numpy()[2, 0])
    assert np.isfinite(h.numpy()[[0, 1, 3, 4]]).all()
    with pytest.raises(ValueError, match="must be"):
        ops.lstm_gates(Tensor(z[:, :27], dtype=dtype), Tensor(c, dtype=dtype))


@pytest.mark.parametrize("seq,batch", [(5, 3), (1, 1)])
def test_fused_lstm_layer_matches_the_step_by_step_composite(seq, batch):
    """The whole-layer op (reverse loop, one weight-gradient GEMM) against per-step ops:
    outputs, the gradients of every input, and second order through a create_graph
    backward."""
    from mininet.ops.rnn import lstm_layer_composite
    r = np.random.default_rng(4)
    n = 6
    arrays = [r.standard_normal((seq, batch, 4 * n)), r.standard_normal((n, 4 * n)) * 0.5,
              r.standard_normal((batch, n)), r.standard_normal((batch, n))]
    weights = [r.standard_normal((seq, batch, n)), r.standard_normal((batch, n)),
               r.standard_normal((batch, n))]
    results = []
    for f in (ops.lstm_layer, lstm_layer_composite):
        ins = [Tensor(a, dtype="float64", requires_grad=True) for a in arrays]
        outs = f(*ins)
        loss = sum((o * Tensor(wt, dtype="float64")).sum() for o, wt in zip(outs, weights))
        loss.backward(create_graph=True)
        firsts = [x.grad for x in ins]
        results.append([o.numpy() for o in outs] + [g.numpy() for g in firsts])
        for x in ins:
            x.grad = None
        sum((g * g).sum() for g in firsts).backward()
        results[-1] += [x.grad.numpy() for x in ins]
        ins = [Tensor(a, dtype="float64", requires_grad=True) for a in arrays]   # plain backward
        outs = f(*ins)
        sum((o * Tensor(wt, dtype="float64")).sum() for o, wt in zip(outs, weights)).backward()
        results[-1] += [x.grad.numpy() for x in ins]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def _lstm_layer_run(arrays, weights, dtype):
    """(outputs, gradients of every input) of ops.lstm_layer under a weighted-sum loss."""
    ins = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    outs = ops.lstm_layer(*ins)
    sum((o * Tensor(w, dtype=dtype)).sum() for o, w in zip(outs, weights)).backward()
    return [o.numpy() for o in outs] + [x.grad.numpy() for x in ins]


def _fused_and_steps(monkeypatch, run, capability, threads):
    """run() with the device's sequence kernels, then with `capability` removed (the same
    op step by step), at `threads` threads."""
    from mininet.backend.cpu import CPUDevice
    before = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        fused = run()
        monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {capability})
        return fused, run()
    finally:
        mininet.set_num_threads(before)


def _assert_same(fused, steps, dtype):
    tol = 2e-5 if dtype == "float32" else 1e-12
    for a, b in zip(fused, steps):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seq,batch,n", [(35, 20, 64), (3, 70, 33), (1, 1, 1), (2, 5, 129),
                                         (2, 64, 40)])
def test_lstm_sequence_kernel_matches_the_per_step_ops(monkeypatch, dtype, threads, seq, batch,
                                                       n):
    """The CPU's whole-sequence kernels (each thread a block of hidden units, one barrier
    a step) against the same op run a step at a time (a GEMM and the gate kernel per
    step): outputs and the gradients of xp, w_hh, h_0 and c_0, odd unit counts that
    split unevenly over the threads, batch 1 and a batch past the few-rows GEMM path."""
    r = np.random.default_rng(seq * 1000 + batch + n)
    arrays = [r.standard_normal((seq, batch, 4 * n)), r.standard_normal((n, 4 * n)) * 0.3,
              r.standard_normal((batch, n)), r.standard_normal((batch, n))]
    weights = [r.standard_normal((seq, batch, n)), r.standard_normal((batch, n)),
               r.standard_normal((batch, n))]
    _assert_same(*_fused_and_steps(monkeypatch, lambda: _lstm_layer_run(arrays, weights, dtype),
                                   "lstm_seq", threads), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seq,batch,n,bias", [(35, 20, 64, True), (3, 70, 33, False),
                                              (1, 1, 1, True), (2, 5, 129, True),
                                              (2, 64, 40, False)])
def test_gru_sequence_kernel_matches_the_per_step_ops(monkeypatch, dtype, threads, seq, batch,
                                                      n, bias):
    """The GRU's whole-sequence kernels against the same op a step at a time (array ops):
    outputs and the gradients of xp, w_hh, h_0 and b_hh (its n block inside r's product)."""
    from mininet.ops.rnn import gru_layer
    r = np.random.default_rng(seq * 1000 + batch + n)
    arrays = [r.standard_normal((seq, batch, 3 * n)), r.standard_normal((n, 3 * n)) / np.sqrt(n),
              r.standard_normal((batch, n))] + ([r.standard_normal(3 * n)] if bias else [])
    weights = [r.standard_normal((seq, batch, n)), r.standard_normal((batch, n))]

    def run():
        ins = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
        outs = gru_layer(*ins)
        sum((o * Tensor(w, dtype=dtype)).sum() for o, w in zip(outs, weights)).backward()
        return [o.numpy() for o in outs] + [x.grad.numpy() for x in ins]
    _assert_same(*_fused_and_steps(monkeypatch, run, "gru_seq", threads), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("seq,batch,n", [(35, 20, 64), (3, 70, 33), (1, 1, 1), (2, 5, 129),
                                         (2, 64, 40)])
def test_rnn_sequence_kernel_matches_the_per_step_ops(monkeypatch, dtype, threads,
                                                      nonlinearity, seq, batch, n):
    """The Elman RNN's whole-sequence kernels against the same layer a step at a time
    (matmul, add, tanh / relu ops): outputs and the gradients of xp, w_hh and h_0."""
    from mininet.ops.rnn import rnn_layer
    r = np.random.default_rng(seq * 1000 + batch + n)
    arrays = [r.standard_normal((seq, batch, n)), r.standard_normal((n, n)) / np.sqrt(n),
              r.standard_normal((batch, n))]
    weights = [r.standard_normal((seq, batch, n)), r.standard_normal((batch, n))]

    def run():
        ins = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
        outs = rnn_layer(*ins, nonlinearity)
        sum((o * Tensor(w, dtype=dtype)).sum() for o, w in zip(outs, weights)).backward()
        return [o.numpy() for o in outs] + [x.grad.numpy() for x in ins]
    _assert_same(*_fused_and_steps(monkeypatch, run, "rnn_seq", threads), dtype)


def test_rnn_layer_second_order_matches_the_composite():
    """A create_graph backward through the one-op layer is the composite's: the gradient
    of a gradient penalty matches the per-step ops'."""
    from mininet.ops.rnn import rnn_layer, rnn_layer_composite
    r = np.random.default_rng(8)
    arrays = [r.standard_normal((4, 3, 5)), r.standard_normal((5, 5)) * 0.4,
              r.standard_normal((3, 5))]
    results = []
    for f in (rnn_layer, rnn_layer_composite):
        ins = [Tensor(a, dtype="float64", requires_grad=True) for a in arrays]
        out, h = f(*ins)
        ((out * out).sum() + (h * h * h).sum()).backward(create_graph=True)
        firsts = [x.grad for x in ins]
        for x in ins:
            x.grad = None
        sum((g * g).sum() for g in firsts).backward()
        results.append([g.numpy() for g in firsts] + [x.grad.numpy() for x in ins])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_rnn_layer_and_kernels_name_bad_input():
    from mininet.ndarray import NDArray
    from mininet.ops.rnn import rnn_layer
    xp, w, h = (Tensor(np.zeros(s)) for s in ((3, 2, 4), (4, 4), (2, 4)))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        rnn_layer(xp, w, h, "gelu")
    with pytest.raises(ValueError, match=r"needs w_hh \(4, 4\) and a state \(2, 4\)"):
        rnn_layer(xp, Tensor(np.zeros((4, 5))), h)
    with pytest.raises(ValueError, match="at least one step"):
        rnn_layer(Tensor(np.zeros((0, 2, 4))), w, h)
    dev = mininet.cpu()
    make = lambda *shape: NDArray(np.zeros(shape, dtype="float32"), device=dev)
    with pytest.raises(ValueError, match=r"hs must be compact of shape \(4, 2, 4\)"):
        dev.rnn_sequence(make(3, 2, 4), make(4, 4), make(3, 2, 4), False)
    with pytest.raises(ValueError, match=r"dz must be compact of shape \(3, 2, 4\)"):
        dev.rnn_sequence_grad(make(4, 2, 4), make(4, 4), make(3, 2, 4), make(2, 4),
                              make(3, 2, 5), make(2, 4), True)


def test_gru_sequence_kernels_refuse_wrong_arrays():
    from mininet.ndarray import NDArray
    dev = mininet.cpu()
    S, B, n = 3, 2, 4
    make = lambda *shape, dt="float32": NDArray(np.zeros(shape, dtype=dt), device=dev)
    xp, w, hs, act = make(S, B, 3 * n), make(n, 3 * n), make(S + 1, B, n), make(S, B, 4 * n)
    with pytest.raises(ValueError, match=r"b must be compact of shape \(12,\)"):
        dev.gru_sequence(xp, w, make(4 * n), hs, act)
    with pytest.raises(ValueError, match=r"act must be compact of shape \(3, 2, 16\)"):
        dev.gru_sequence(xp, w, None, hs, make(S, B, 3 * n))
    with pytest.raises(TypeError, match="b float64"):
        dev.gru_sequence(xp, w, make(3 * n, dt="float64"), hs, act)
    st = make(B, n)
    with pytest.raises(ValueError, match=r"dhp must be compact of shape \(3, 2, 12\)"):
        dev.gru_sequence_grad(act, hs, w, make(S, B, n), st, make(S, B, 3 * n), make(S, B, n), st)
    dev.gru_sequence(xp, w, make(3 * n), hs, act)   # zeros in: r = z = 1/2, h stays 0
    assert not hs.numpy().any() and np.allclose(act.numpy()[..., :2 * n], 0.5)


def test_lstm_sequence_kernels_refuse_wrong_arrays():
    """The device kernels name the wrong argument (shape, dtype, layout, rank) before
    anything runs."""
    from mininet.ndarray import NDArray
    dev = mininet.cpu()
    S, B, n = 3, 2, 4
    make = lambda *shape, dt="float32": NDArray(np.zeros(shape, dtype=dt), device=dev)
    xp, w, hs, cs, act = make(S, B, 4 * n), make(n, 4 * n), make(S + 1, B, n), make(S + 1, B, n), \
        make(S, B, 5 * n)
    with pytest.raises(ValueError, match=r"act must be compact of shape \(3, 2, 20\), got "
                                         r"shape \(3, 2, 16\)"):
        dev.lstm_sequence(xp, w, hs, cs, make(S, B, 4 * n))
    with pytest.raises(TypeError, match="share one float dtype, got xp float32, w float64"):
        dev.lstm_sequence(xp, make(n, 4 * n, dt="float64"), hs, cs, act)
    with pytest.raises(ValueError, match=r"w must be compact .*\(strides \(1, 4\)\)"):
        dev.lstm_sequence(xp, make(4 * n, n).permute((1, 0)), hs, cs, act)
    with pytest.raises(TypeError, match="float32 or float64"):
        i64 = lambda *shape: make(*shape, dt="int64")
        dev.lstm_sequence(i64(S, B, 4 * n), i64(n, 4 * n), i64(S + 1, B, n), i64(S + 1, B, n),
                          i64(S, B, 5 * n))
    with pytest.raises(ValueError, match=r"xp must be 3-D \(seq, batch, 4 \* hidden\)"):
        dev.lstm_sequence(make(B, 4 * n), w, hs, cs, act)
    with pytest.raises(ValueError, match=r"xp must be 3-D"):
        dev.lstm_sequence(make(S, B, 4 * n - 1), w, hs, cs, act)
    with pytest.raises(TypeError, match="hs must be an array, got NoneType"):
        dev.lstm_sequence(xp, w, None, cs, act)
    dhs, st = make(S, B, n), make(B, n)
    with pytest.raises(ValueError, match=r"dh0 must be compact of shape \(2, 4\)"):
        dev.lstm_sequence_grad(act, cs, w, dhs, st, st, make(S, B, 4 * n), make(B, n + 1), st)
    with pytest.raises(ValueError, match=r"dhs must be 3-D"):
        dev.lstm_sequence_grad(act, cs, w, make(B, n), st, st, make(S, B, 4 * n), st, st)
    dev.lstm_sequence(xp, w, hs, cs, act)   # the right arrays run: zeros in, h = 0
    assert not hs.numpy().any() and np.allclose(act.numpy()[..., :n], 0.5)


def test_sequence_kernels_with_a_smaller_openmp_team_than_asked():
    """OMP_THREAD_LIMIT (or OMP_DYNAMIC) can start fewer threads than the kernels ask for:
    their blocks of units follow the count asked, so they run on one thread then, not
    leave the missing threads' units unwritten."""
    import subprocess
    import sys
    code = """
import numpy as np, mininet
from mininet import Tensor, ops
from mininet.ops.rnn import lstm_layer_composite, gru_layer, gru_layer_composite
from mininet.ops.rnn import rnn_layer, rnn_layer_composite
mininet.set_num_threads(2)
r = np.random.default_rng(0); S, B, n = 3, 64, 256
T = lambda *s: Tensor(0.05 * r.standard_normal(s), dtype="float64", requires_grad=True)
xp, w, h, c = T(S, B, 4 * n), T(n, 4 * n), T(B, n), T(B, n)
errs = []
for f in (ops.lstm_layer, lstm_layer_composite):
    out = f(xp, w, h, c)[0]
    out.sum().backward()
    errs.append([out.numpy(), xp.grad.numpy(), w.grad.numpy()])
    xp.grad = w.grad = h.grad = c.grad = None
gx, gw = T(S, B, 3 * n), T(n, 3 * n)
for f in (gru_layer, gru_layer_composite):
    errs.append([f(gx, gw, h)[0].numpy()])
rx, rw = T(S, B, n), T(n, n)
for f in (rnn_layer, rnn_layer_composite):
    errs.append([f(rx, rw, h)[0].numpy()])
d = max(float(np.abs(a - b).max()) for a, b in zip(errs[0], errs[1]))
d = max(d, float(np.abs(errs[2][0] - errs[3][0]).max()))
d = max(d, float(np.abs(errs[4][0] - errs[5][0]).max()))
print(d)
"""
    import os
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 1e-12


def test_lstm_layer_bad_shapes_name_them():
    xp, w, h = (Tensor(np.zeros(s)) for s in ((3, 2, 8), (2, 8), (2, 2)))
    with pytest.raises(ValueError, match=r"needs w_hh \(2, 8\) and states \(2, 2\)"):
        ops.lstm_layer(xp, Tensor(np.zeros((3, 8))), h, h)
    with pytest.raises(ValueError, match="states"):
        ops.lstm_layer(xp, w, Tensor(np.zeros((1, 2))), h)
    with pytest.raises(ValueError, match="at least one step"):
        ops.lstm_layer(Tensor(np.zeros((0, 2, 8))), w, h, h)
    with pytest.raises(ValueError, match="share a dtype"):
        ops.lstm_layer(xp, Tensor(np.zeros((2, 8)), dtype="float32"), h, h)


def test_lstm_on_a_device_without_the_lstm_kernels(monkeypatch):
    from mininet.backend.cpu import CPUDevice
    r = np.random.default_rng(6)
    x = r.standard_normal((4, 2, 3))
    mininet.manual_seed(0)
    fused = nn.LSTM(3, 5, num_layers=2, dtype="float64")
    out_f, (h_f, c_f) = fused(Tensor(x, dtype="float64"))
    monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {"lstm"})
    out_c, (h_c, c_c) = fused(Tensor(x, dtype="float64"))
    for a, b in ((out_f, out_c), (h_f, h_c), (c_f, c_c)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.torch
def test_cells_match_torch():
    x0, h0, c0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for ours, theirs in ((nn.RNNCell(4, 5, dtype="float64"), torch.nn.RNNCell(4, 5).double()),
                         (nn.LSTMCell(4, 5, dtype="float64"), torch.nn.LSTMCell(4, 5).double())):
        ours.W_ih.data = Tensor(theirs.weight_ih.detach().numpy().T.copy(), dtype="float64")
        ours.W_hh.data = Tensor(theirs.weight_hh.detach().numpy().T.copy(), dtype="float64")
        ours.bias_ih.data = Tensor(theirs.bias_ih.detach().numpy().copy(), dtype="float64")
        ours.bias_hh.data = Tensor(theirs.bias_hh.detach().numpy().copy(), dtype="float64")
        if isinstance(ours, nn.LSTMCell):
            h, c = ours(T(x0, False), (T(h0, False), T(c0, False)))
            th, tc = theirs(torch.tensor(x0), (torch.tensor(h0), torch.tensor(c0)))
            close(c.numpy(), tc.detach().numpy())
        else:
            h = ours(T(x0, False), T(h0, False))
            th = theirs(torch.tensor(x0), torch.tensor(h0))
        close(h.numpy(), th.detach().numpy())


def test_bad_shapes_name_the_problem():
    with pytest.raises(ValueError, match="seq_len, batch, features"):
        nn.LSTM(3, 4)(Tensor(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="features, expected 3"):
        nn.RNN(3, 4)(Tensor(np.zeros((2, 1, 5))))
    with pytest.raises(ValueError, match="2 layers"):
        nn.RNN(3, 4, 2)(Tensor(np.zeros((2, 1, 3))), Tensor(np.zeros((1, 1, 4))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="gelu")


def test_short_char_model_learns():
    """Embedding -> LSTM -> Linear on a repeating sequence: the loss falls well below
    chance (log 5), so gradients reach every part of the model."""
    mininet.init.manual_seed(0)
    text = np.array([0, 1, 2, 3, 4] * 8)
    emb, lstm, head = nn.Embedding(5, 8), nn.LSTM(8, 16), nn.Linear(16, 5)
    params = emb.parameters() + lstm.parameters() + head.parameters()
    opt = mininet.optim.Adam(params, lr=0.05)
    x, y = text[:-1].reshape(-1, 1), text[1:]
    first = None
    for _ in range(40):
        opt.zero_grad()
        out, _ = lstm(emb(Tensor(x)))
        loss = nn.SoftmaxLoss()(head(ops.reshape(out, (len(y), 16))), Tensor(y))
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert first > 1.2 and loss.item() < 0.2, (first, loss.item())


@pytest.mark.parametrize("seq_model", ["rnn", "lstm"])
def test_language_model_learns_with_truncated_bptt(seq_model):
    """LanguageModel over windows of a repeating token stream, the state detached between
    windows: the loss falls from chance (log 7) to near zero."""
    from mininet.models import LanguageModel
    mininet.init.manual_seed(1)
    stream = np.tile(np.array([0, 3, 1, 4, 1, 5, 6]), 30)
    seq, batch = 6, 2
    cols = stream[:len(stream) // batch * batch].reshape(batch, -1).T    # (steps, batch)
    model = LanguageModel(8, 7, 24, 2, seq_model)
    opt = mininet.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for epoch in range(12):
        state = None
        for i in range(0, cols.shape[0] - seq - 1, seq):
            x, y = cols[i:i + seq], cols[i + 1:i + seq + 1].reshape(-1)
            opt.zero_grad()
            out, state = model(Tensor(x), state)
            assert out.shape == (seq * batch, 7)
            loss = nn.SoftmaxLoss()(out, Tensor(y))
            loss.backward()
            opt.step()
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            losses.append(loss.item())
    assert losses[0] > 1.5 and np.mean(losses[-5:]) < 0.3, (losses[0], losses[-5:])
    with pytest.raises(ValueError, match="seq_model"):
        LanguageModel(8, 7, 24, 1, "gru")


@pytest.mark.torch
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 3])
def test_multihead_attention_matches_torch(batch_first, causal, heads):
    d, t, b = 6, 5, 2
    m = nn.MultiHeadAttention(d, heads, causal=causal, batch_first=batch_first, dtype="float64")
    tm = torch.nn.MultiheadAttention(d, heads, batch_first=batch_first).double()
    w, bias = tm.in_proj_weight.detach().numpy(), tm.in_proj_bias.detach().numpy()
    for k, (W, B) in enumerate(((m.W_q, m.b_q), (m.W_k, m.b_k), (m.W_v, m.b_v))):
        W.data = Tensor(w[k * d:(k + 1) * d].T.copy(), dtype="float64")
        B.data = Tensor(bias[k * d:(k + 1) * d].copy(), dtype="float64")
    m.W_out.data = Tensor(tm.out_proj.weight.detach().numpy().T.copy(), dtype="float64")
    m.b_out.data = Tensor(tm.out_proj.bias.detach().numpy().copy(), dtype="float64")
    shape = (b, t, d) if batch_first else (t, b, d)
    x0 = rng.standard_normal(shape)
    x, tx = T(x0), torch.tensor(x0, requires_grad=True)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None
    y = m(x)
    ty, tw = tm(tx, tx, tx, attn_mask=mask, average_attn_weights=False)
    close(y.numpy(), ty.detach().numpy())
    close(m.attention.numpy(), tw.detach().numpy())
    g = rng.standard_normal(y.shape)
    y.backward(Tensor(g, dtype="float64"))
    ty.backward(torch.tensor(g))
    close(x.grad.numpy(), tx.grad.numpy())
    close(m.W_out.grad.numpy(), tm.out_proj.weight.grad.numpy().T)
    close(m.W_q.grad.numpy(), tm.in_proj_weight.grad.numpy()[:d].T)
    close(m.b_v.grad.numpy(), tm.in_proj_bias.grad.numpy()[2 * d:])


def test_multihead_attention_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiHeadAttention(6, 4)
    with pytest.raises(ValueError, match="6 features"):
        nn.MultiHeadAttention(6, 2)(Tensor(np.zeros((2, 3, 5))))


def _copy_layer(ours, theirs):
    d = ours.attn.embed_dim
    w, b = theirs.self_attn.in_proj_weight.detach().numpy(), theirs.self_attn.in_proj_bias.detach().numpy()
    for k, (W, B) in enumerate(((ours.attn.W_q, ours.attn.b_q), (ours.attn.W_k, ours.attn.b_k),
                                (ours.attn.W_v, ours.attn.b_v))):
        W.data = Tensor(w[k * d:(k + 1) * d].T.copy(), dtype="float64")
        B.data = Tensor(b[k * d:(k + 1) * d].copy(), dtype="float64")
    pairs = [(ours.attn.W_out, theirs.self_attn.out_proj.weight, True),
             (ours.attn.b_out, theirs.self_attn.out_proj.bias, False),
             (ours.linear1.weight, theirs.linear1.weight, True), (ours.linear1.bias, theirs.linear1.bias, False),
             (ours.linear2.weight, theirs.linear2.weight, True), (ours.linear2.bias, theirs.linear2.bias, False),
             (ours.norm1.weight, theirs.norm1.weight, False), (ours.norm1.bias, theirs.norm1.bias, False),
             (ours.norm2.weight, theirs.norm2.weight, False), (ours.norm2.bias, theirs.norm2.bias, False)]
    for a, t, transpose in pairs:
        v = t.detach().numpy()
        a.data = Tensor(v.T.copy() if transpose else v.copy(), dtype="float64")


@pytest.mark.torch
@pytest.mark.parametrize("causal", [False, True])
def test_transformer_layer_matches_torch(causal):
    d, heads, hidden, t, b = 8, 2, 12, 5, 3
    ours = nn.TransformerLayer(d, heads, hidden, causal=causal, batch_first=True, dtype="float64")
    theirs = torch.nn.TransformerEncoderLayer(d, heads, hidden, dropout=0.0, norm_first=True,
                                              batch_first=True).double()
    _copy_layer(ours, theirs)
    x0 = rng.standard_normal((b, t, d))
    x, tx = T(x0), torch.tensor(x0, requires_grad=True)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None
    y, ty = ours(x), theirs(tx, src_mask=mask)
    close(y.numpy(), ty.detach().numpy(), 1e-9)
    g = rng.standard_normal(y.shape)
    y.backward(Tensor(g, dtype="float64"))
    ty.backward(torch.tensor(g))
    close(x.grad.numpy(), tx.grad.numpy(), 1e-9)
    close(ours.linear1.weight.grad.numpy(), theirs.linear1.weight.grad.numpy().T, 1e-9)
    close(ours.norm1.weight.grad.numpy(), theirs.norm1.weight.grad.numpy(), 1e-9)


def test_transformer_language_model_learns():
    """Transformer (learned positions, causal) in a LanguageModel-style stack learns a
    repeating sequence."""
    mininet.init.manual_seed(2)
    seq = np.tile(np.array([0, 3, 1, 2]), 12)
    emb, tr, head = nn.Embedding(4, 16), nn.Transformer(16, 32, 2, 2), nn.Linear(16, 4)
    opt = mininet.optim.Adam(emb.parameters() + tr.parameters() + head.parameters(), lr=0.01)
    x, y = seq[:-1].reshape(-1, 1), seq[1:]
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out, _ = tr(emb(Tensor(x)))
        loss = nn.SoftmaxLoss()(head(ops.reshape(out, (len(y), 16))), Tensor(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.0 and losses[-1] < 0.2, (losses[0], losses[-1])
