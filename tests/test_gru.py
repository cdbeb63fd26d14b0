"""GRU and GRUCell against PyTorch with copied weights (float64): outputs and final
states (1-3 layers, with and without h0, without biases), first derivatives of a loss
not linear in the outputs four ways, a gradient penalty's gradient (second order), a
stacked GRU's second order at a language model's size, the parameter layout the torch
weight mapping reads, and bad shapes named in a ValueError."""
import signal

import numpy as np
import pytest

from mininet import nn
from mininet.autograd import Tensor, grad, no_grad

torch = pytest.importorskip("torch", reason="PyTorch (the test extra) is the reference here")
pytestmark = pytest.mark.torch
rng = np.random.default_rng(22)
SEQ, BATCH, INP, HIDDEN = 4, 3, 5, 6


@pytest.fixture(autouse=True)
def deadline():
    """A hang guard, not a timing: a gradient that never ends must fail the test."""
    def expire(*_):
        raise TimeoutError("the GRU did not finish within 300 s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def T(a, requires_grad=False):
    return Tensor(a, dtype="float64", requires_grad=requires_grad)


def pairs_of(cells, t, bias):
    """(our parameter, torch's parameter): torch's weights are ours transposed (ours_layout),
    its two biases ours unchanged."""
    sfx = [f"_l{k}" for k in range(len(cells))] if isinstance(t, torch.nn.GRU) else [""]
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    return [(getattr(cell, n.replace("weight", "W")), getattr(t, n + s))
            for cell, s in zip(cells, sfx) for n in names]


def ours_layout(a):
    return a.T if a.ndim == 2 else a


def build(layers, bias=True, sizes=(INP, HIDDEN)):
    """(ours, torch's, pairs) with torch's weights copied; layers 0 means the cells."""
    if layers == 0:
        m, t = nn.GRUCell(*sizes, bias=bias, dtype="float64"), \
            torch.nn.GRUCell(*sizes, bias=bias).double()
        cells = [m]
    else:
        m, t = nn.GRU(*sizes, layers, bias=bias, dtype="float64"), \
            torch.nn.GRU(*sizes, layers, bias=bias).double()
        cells = m.cells
    pairs = pairs_of(cells, t, bias)
    for p, tp in pairs:
        p.data = T(ours_layout(tp.detach().numpy()).copy())
    return m, t, pairs


def close(ours, theirs):
    for a, b in zip(ours, theirs):
        assert a is not None
        np.testing.assert_allclose(a.numpy() if hasattr(a, "numpy") else a, b, rtol=1e-9,
                                   atol=1e-11)


def run(m, x, h0):
    """A loss not linear in any output: squares of the sequence, cubes of the final state;
    the cell takes two steps (its own stack over time)."""
    if isinstance(m, (nn.GRUCell, torch.nn.GRUCell)):
        h = m(x[0]) if h0 is None else m(x[0], h0)
        h = m(x[1], h)
        return (h * h * h).sum()
    out, hn = m(x) if h0 is None else m(x, h0)
    return (out * out).sum() + (hn * hn * hn).sum()


def state_shape(layers, batch=BATCH, hidden=HIDDEN):
    return (batch, hidden) if layers == 0 else (layers, batch, hidden)


def inputs(layers, with_h0, seq=SEQ, batch=BATCH, inp=INP, hidden=HIDDEN):
    xn = rng.standard_normal((seq, batch, inp))
    hn = rng.standard_normal(state_shape(layers, batch, hidden)) if with_h0 else None
    return xn, hn


def torch_grads(t, xn, hn, pairs, order):
    x = torch.tensor(xn, requires_grad=True)
    h = None if hn is None else torch.tensor(hn, requires_grad=True)
    wrt = [x] + ([] if h is None else [h]) + [tp for _, tp in pairs]
    first = torch.autograd.grad(run(t, x, h), wrt, create_graph=order == 2)
    if order == 2:
        first = torch.autograd.grad(sum((g * g).sum() for g in first), wrt)
    k = len(wrt) - len(pairs)   # x and h0 keep their shapes; weights go to our layout
    return [g.detach().numpy() for g in first[:k]] + [ours_layout(g.detach().numpy())
                                                      for g in first[k:]]


def ours_wrt(xn, hn, pairs):
    x = T(xn, True)
    h = None if hn is None else T(hn, True)
    return x, h, [x] + ([] if h is None else [h]) + [p for p, _ in pairs]


# forward ------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
def test_cell_matches_torch(bias, with_h0):
    m, t, _ = build(0, bias)
    xn, hn = inputs(0, with_h0)
    got = m(T(xn[0])) if hn is None else m(T(xn[0]), T(hn))
    want = t(torch.tensor(xn[0])) if hn is None else t(torch.tensor(xn[0]), torch.tensor(hn))
    assert got.shape == (BATCH, HIDDEN)
    close([got], [want.detach().numpy()])


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
def test_gru_output_and_final_state_match_torch(layers, bias, with_h0):
    m, t, _ = build(layers, bias)
    xn, hn = inputs(layers, with_h0)
    out, h = m(T(xn)) if hn is None else m(T(xn), T(hn))
    tout, th = t(torch.tensor(xn)) if hn is None else t(torch.tensor(xn), torch.tensor(hn))
    assert out.shape == (SEQ, BATCH, HIDDEN) and h.shape == (layers, BATCH, HIDDEN)
    close([out, h], [tout.detach().numpy(), th.detach().numpy()])


def test_one_step_one_sample_and_float32_default():
    m, t, _ = build(2, sizes=(1, 1))
    xn = rng.standard_normal((1, 1, 1))
    out, h = m(T(xn))
    tout, th = t(torch.tensor(xn))
    close([out, h], [tout.detach().numpy(), th.detach().numpy()])
    m32 = nn.GRU(3, 2, 2)
    out, h = m32(Tensor(rng.standard_normal((2, 4, 3)), dtype="float32"))
    assert str(out.dtype) == "float32" and str(h.dtype) == "float32" and h.shape == (2, 4, 2)


def test_parameter_layout_is_documented_one():
    """What the torch weight mapping reads: per layer cells.{k}.W_ih (in, 3 * hidden),
    W_hh (hidden, 3 * hidden), columns r, z, n; bias_ih and bias_hh (3 * hidden,) both
    kept (b_hn is multiplied by r, so it cannot be folded), absent with bias=False."""
    m = nn.GRU(5, 4, 2)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "cells.0.W_ih": (5, 12), "cells.0.W_hh": (4, 12), "cells.0.bias_ih": (12,),
        "cells.0.bias_hh": (12,), "cells.1.W_ih": (4, 12), "cells.1.W_hh": (4, 12),
        "cells.1.bias_ih": (12,), "cells.1.bias_hh": (12,)}
    assert list(nn.GRU(5, 4, 1, bias=False).state_dict()) == ["cells.0.W_ih", "cells.0.W_hh"]
    assert list(nn.GRUCell(5, 4).state_dict()) == ["W_ih", "W_hh", "bias_ih", "bias_hh"]
    # the gate order: zero every weight, then only b_hn differs from zero ->
    # n = tanh(r * b_hn) with r = 1/2, z = 1/2, h' = n / 2 from h = 0
    c = nn.GRUCell(1, 1, dtype="float64")
    for p in (c.W_ih, c.W_hh, c.bias_ih, c.bias_hh):
        p.data = T(np.zeros(p.shape))
    c.bias_hh.data = T(np.array([0.0, 0.0, 0.8]))
    np.testing.assert_allclose(c(T(np.zeros((1, 1)))).numpy(), [[np.tanh(0.4) / 2]],
                               rtol=1e-12)


# first and second order ------------------------------------------------------------------
KINDS = [0, 1, 2, 3]   # 0: the cell


@pytest.mark.parametrize("layers", KINDS)
@pytest.mark.parametrize("bias,with_h0", [(True, False), (True, True), (False, True)])
@pytest.mark.parametrize("how", ["grad_with_graph", "grad_no_graph", "backward",
                                 "backward_create_graph"])
def test_first_order_gradient_of_a_nonlinear_loss_matches_torch(layers, bias, with_h0, how):
    m, t, pairs = build(layers, bias)
    xn, hn = inputs(layers, with_h0)
    x, h, wrt = ours_wrt(xn, hn, pairs)
    if how == "grad_no_graph":
        loss = run(m, x, h)
        with no_grad():
            got = grad(loss, wrt)
    elif how == "grad_with_graph":
        got = grad(run(m, x, h), wrt, create_graph=True)
    else:
        run(m, x, h).backward(create_graph=how == "backward_create_graph")
        got = [w.grad for w in wrt]
    close(got, torch_grads(t, xn, hn, pairs, 1))


@pytest.mark.parametrize("layers", KINDS)
@pytest.mark.parametrize("bias,with_h0", [(True, False), (True, True), (False, True)])
def test_gradient_penalty_second_order_matches_torch(layers, bias, with_h0):
    m, t, pairs = build(layers, bias)
    xn, hn = inputs(layers, with_h0)
    x, h, wrt = ours_wrt(xn, hn, pairs)
    first = grad(run(m, x, h), wrt, create_graph=True)
    pen = (first[0] * first[0]).sum()
    for g in first[1:]:
        pen = pen + (g * g).sum()
    close(grad(pen, wrt), torch_grads(t, xn, hn, pairs, 2))


def test_stacked_gru_penalty_by_backward_create_graph_matches_torch():
    m, t, pairs = build(3)
    xn, hn = inputs(3, True, seq=2, batch=1)
    x, h, wrt = ours_wrt(xn, hn, pairs)
    run(m, x, h).backward(create_graph=True)
    pen = (x.grad * x.grad).sum()
    for w in wrt:
        w.grad = None
    pen.backward()
    xt, ht = torch.tensor(xn, requires_grad=True), torch.tensor(hn, requires_grad=True)
    gx, = torch.autograd.grad(run(t, xt, ht), [xt], create_graph=True)
    (gx * gx).sum().backward()
    close([x.grad, h.grad] + [p.grad for p, _ in pairs],
          [xt.grad.numpy(), ht.grad.numpy()] + [ours_layout(tp.grad.numpy()) for _, tp in pairs])


def test_stacked_gru_second_order_at_language_model_size_runs():
    """3 layers, seq 35, batch 20, hidden 64: the gradient penalty's gradient finishes (a
    few seconds) and its input gradient is torch's."""
    m, t, pairs = build(3, sizes=(16, 64))
    xn, _ = inputs(3, False, seq=35, batch=20, inp=16, hidden=64)
    x = T(xn, True)
    gx, = grad(run(m, x, None), [x], create_graph=True)
    gw = grad((gx * gx).sum(), [x] + [p for p, _ in pairs[:2]])
    xt = torch.tensor(xn, requires_grad=True)
    tgx, = torch.autograd.grad(run(t, xt, None), [xt], create_graph=True)
    tgw = torch.autograd.grad((tgx * tgx).sum(), [xt] + [tp for _, tp in pairs[:2]])
    close(gw, [ours_layout(g.detach().numpy()) for g in tgw])


# bad shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,match", [((4, 5), r"\(4, 5\)"), ((4, 3, 5, 1), r"\(4, 3, 5, 1\)"),
                                         ((5,), r"\(5,\)"), ((4, 3, 7), r"\(4, 3, 7\)")])
def test_gru_bad_input_shape_is_named(shape, match):
    with pytest.raises(ValueError, match=match):
        nn.GRU(5, 6, 2, dtype="float64")(T(np.zeros(shape)))


@pytest.mark.parametrize("h0,match", [((3, 3, 6), r"\(3, 3, 6\)"), ((2, 4, 6), r"\(4, 6\)"),
                                      ((2, 3, 5), r"\(3, 5\)")])
def test_gru_bad_initial_state_is_named(h0, match):
    with pytest.raises(ValueError, match=match):
        nn.GRU(5, 6, 2, dtype="float64")(T(np.zeros((4, 3, 5))), T(np.zeros(h0)))


@pytest.mark.parametrize("x,h,match", [((5,), None, r"\(5,\)"), ((2, 3, 5), None, r"\(2, 3, 5\)"),
                                       ((3, 4), None, r"\(3, 4\)"), ((3, 5), (3, 4), r"\(3, 4\)"),
                                       ((3, 5), (2, 6), r"\(2, 6\)")])
def test_cell_bad_shapes_are_named(x, h, match):
    c = nn.GRUCell(5, 6, dtype="float64")
    with pytest.raises(ValueError, match=match):
        c(T(np.zeros(x))) if h is None else c(T(np.zeros(x)), T(np.zeros(h)))
