"""The MLP step's fused pieces (issue 25, item 4) give what the separate ops give: the
Linear epilogue kernel (bias add, ReLU) against numpy, Linear + ReLU fused in Sequential
against the unfused modules and PyTorch (values, gradients, second order, in-place
checks), the softmax cross-entropy's row blocks for few classes against numpy in float64,
and the loss's labels read without a copy (a later write to them changes nothing)."""
import numpy as np
import pytest

import mininet
from mininet import nn, ops
from mininet.backend.cpu import cpu
from mininet.ndarray import NDArray
from mininet_ext import _isa

from conftest import assert_close, gradcheck

losses = _isa.variant("losses")   # as built for this process's kernel set

DTYPES = (np.float32, np.float64)


# the epilogue kernel -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (100, 100), (33, 17), (0, 5), (5, 0),
                                   (2, 3, 5)])
@pytest.mark.parametrize("relu", [False, True])
def test_bias_act_matches_numpy(dtype, shape, relu):
    rng = np.random.default_rng(1)
    y0 = rng.standard_normal(shape).astype(dtype)
    if y0.size > 3:
        y0.reshape(-1)[:3] = [np.nan, -np.inf, np.inf]
    b = rng.standard_normal(shape[-1]).astype(dtype)
    for bias in (b, None):
        y = NDArray(y0)
        cpu().bias_act(y, None if bias is None else NDArray(bias), relu)
        want = y0.astype(np.float64) + (0 if bias is None else bias)
        if relu:
            want = np.where(want < 0, 0, want)   # NaN kept, as relu
        np.testing.assert_array_equal(y.numpy(), want.astype(dtype))


def test_bias_act_views_and_offsets():
    """y a compact view that starts past its buffer's start; bias strided."""
    rng = np.random.default_rng(2)
    big = rng.standard_normal((9, 6)).astype(np.float32)
    whole = NDArray(big)
    y = whole[3:]                             # compact, from item 18
    b_src = rng.standard_normal(12).astype(np.float32)
    b = NDArray(b_src)[::2]                   # strided (6,)
    cpu().bias_act(y, b, True)
    np.testing.assert_array_equal(y.numpy(), np.maximum(big[3:] + b_src[::2], 0))
    np.testing.assert_array_equal(whole.numpy()[:3], big[:3])   # rows before it untouched


def test_bias_act_refuses_a_non_compact_output():
    """A transposed view would be updated as if its items were in row order."""
    y = NDArray(np.arange(12.0).reshape(3, 4) - 5).permute((1, 0))
    before = y.numpy().copy()
    with pytest.raises(ValueError, match="bias_act: the output must be compact"):
        cpu().bias_act(y, NDArray(np.array([1.0, 2.0, -100.0])), True)
    np.testing.assert_array_equal(y.numpy(), before)


def test_bias_act_rejects_bad_bias():
    y = NDArray(np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="bias_act"):
        cpu().bias_act(y, NDArray(np.zeros(4, np.float32)), False)
    with pytest.raises(TypeError, match="bias_act"):
        cpu().bias_act(y, NDArray(np.zeros(3, np.float64)), False)
    with pytest.raises(TypeError, match="bias_act"):
        cpu().bias_act(NDArray(np.zeros((4, 3), np.int64)), None, True)


# Linear + ReLU in one op ---------------------------------------------------------------------
def _mlp(seed, dtype="float32", bias=True):
    mininet.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5, bias=bias, dtype=dtype), nn.ReLU(),
                         nn.Linear(5, 4, bias=bias, dtype=dtype), nn.ReLU(),
                         nn.Linear(4, 3, dtype=dtype))


def _unfused(model, x):
    """The same model's modules called one by one (the ops the fusion replaces)."""
    for m in model:
        x = m(x)
    return x


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_sequential_linear_relu_matches_unfused(bias, train):
    model = _mlp(0, bias=bias)
    model.train(train)
    x0 = np.random.default_rng(3).standard_normal((7, 6)).astype(np.float32)
    grads = []
    for run in (model, lambda x: _unfused(model, x)):
        model.zero_grad()
        x = mininet.Tensor(x0, requires_grad=True)
        y = run(x)
        (y * y).sum().backward()
        grads.append([y.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_linear_relu_gradcheck_float64():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    gradcheck(lambda x, w, b: ops.linear(x, w, b, relu=True), x, w, b)
    gradcheck(lambda x, w: ops.linear(x, w, relu=True), x, w)


def test_linear_relu_batched_input():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    gradcheck(lambda x, w, b: ops.linear(x, w, b, relu=True), x, w, b)


def test_linear_relu_second_order():
    """create_graph through the fused op: d/dx of |dL/dW|^2 as the unfused ops give it."""
    rng = np.random.default_rng(6)
    x0, w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    out = []
    for fused in (True, False):
        x, w, b = (mininet.Tensor(a, dtype="float64", requires_grad=True) for a in (x0, w0, b0))
        y = ops.linear(x, w, b, relu=True) if fused else ops.relu(ops.linear(x, w, b))
        ((y * y).sum()).backward(create_graph=True)
        gw = w.grad
        x.grad = None
        (gw * gw).sum().backward()
        out.append((y.numpy(), x.grad.numpy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
def test_sequential_linear_relu_matches_torch():
    import torch
    model = _mlp(7, dtype="float64")
    layers = [m for m in model if isinstance(m, nn.Linear)]
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4),
                                 torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    tlayers = [tmodel[0], tmodel[2], tmodel[4]]
    with torch.no_grad():
        for m, t in zip(layers, tlayers):
            t.weight.copy_(torch.from_numpy(m.weight.numpy().T))
            t.bias.copy_(torch.from_numpy(m.bias.numpy()))
    x0 = np.random.default_rng(8).standard_normal((9, 6))
    y = model(mininet.Tensor(x0, dtype="float64"))
    ty = tmodel(torch.from_numpy(x0))
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    assert_close(y.numpy(), ty.detach().numpy(), np.float64)
    for m, t in zip(layers, tlayers):
        assert_close(m.weight.grad.numpy(), t.weight.grad.numpy().T, np.float64, scale=10)
        assert_close(m.bias.grad.numpy(), t.bias.grad.numpy(), np.float64, scale=10)


@pytest.mark.parametrize("fused", [True, False])
def test_linear_relu_output_written_in_place_is_refused(fused):
    """A write into the output before backward raises, fused or not."""
    rng = np.random.default_rng(9)
    x = mininet.Tensor(rng.standard_normal((3, 4)).astype(np.float32))
    w = mininet.Tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    y = ops.linear(x, w, relu=True) if fused else ops.relu(ops.linear(x, w))
    z = y.sum()
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_linear_relu_keeps_nan():
    """NaN passes the fused ReLU as it passes relu (a diverged unit stays visible)."""
    x = mininet.Tensor(np.array([[np.nan, 1.0], [-1.0, -2.0]], np.float32))
    w = mininet.Tensor(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    b = mininet.Tensor(np.array([0.0, np.nan], np.float32))
    fused = ops.linear(x, w, b, relu=True).numpy()
    np.testing.assert_array_equal(fused, ops.relu(ops.linear(x, w, b)).numpy())
    np.testing.assert_array_equal(np.isnan(fused), [[True, True], [False, True]])


def test_observers_see_the_relu_module():
    """Under the profiler, Sequential runs every module by itself (no fusion)."""
    from mininet.profiler import profile
    model = _mlp(10)
    x = mininet.Tensor(np.ones((2, 6), np.float32))
    with profile() as prof:
        model(x)
    assert "ReLU" in prof.table(row_limit=None)


# softmax cross-entropy by row blocks --------------------------------------------------------
TOLS = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 8, 16, 17, 100])
@pytest.mark.parametrize("c", [1, 2, 10, 16, 32, 33])
def test_xent_rows_match_numpy(dtype, n, c):
    rng = np.random.default_rng(n * 100 + c)
    z = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    if n > 3 and c > 2:   # a NaN, an all -inf row, an inf: NaN where numpy's are
        z[1, 1], z[2, :], z[3, 0] = np.nan, -np.inf, np.inf
    big = np.concatenate([np.zeros((2, c), dtype), z])   # the logits from item 2 * c
    zz, yy = NDArray(big), NDArray(y)
    p = NDArray.make((n, c), dtype=np.dtype(dtype))
    loss = losses.forward(zz.handle, 2 * c, yy.handle, p.handle, n, c, np.dtype(dtype).itemsize)
    z64 = z.astype(np.float64)
    with np.errstate(all="ignore"):
        m = z64.max(1, keepdims=True)
        e = np.exp(z64 - m)
        s = e.sum(1, keepdims=True)
        want = np.mean(np.log(s[:, 0]) - (z64[np.arange(n), y] - m[:, 0]))
    np.testing.assert_allclose(p.numpy(), e / s, rtol=TOLS[dtype], atol=TOLS[dtype])
    if np.isnan(want):
        assert np.isnan(loss)
    else:
        assert abs(loss - want) <= 10 * TOLS[dtype] * (1 + abs(want))


# labels read without a copy -----------------------------------------------------------------
def test_loss_labels_written_after_forward_change_nothing():
    """The loss reads the labels' memory without a copy but keeps its own: writing into
    the label tensor between forward and backward changes neither loss nor gradient."""
    rng = np.random.default_rng(11)
    z0 = rng.standard_normal((6, 4)).astype(np.float32)
    grads = []
    for write in (False, True):
        z = mininet.Tensor(z0, requires_grad=True)
        y = mininet.Tensor(np.array([0, 1, 2, 3, 0, 1]))
        loss = nn.SoftmaxLoss()(z, y)
        if write:
            cpu().array_view(y.cached_data)[:] = 3   # straight into the labels' memory
            assert y.numpy().tolist() == [3] * 6
        loss.backward()
        grads.append((loss.item(), z.grad.numpy()))
    assert grads[0][0] == grads[1][0]
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_loss_labels_views_and_bad_range():
    z = mininet.Tensor(np.zeros((3, 4), np.float32))
    base = mininet.Tensor(np.array([9, 1, 2, 3, 9]))
    loss = nn.SoftmaxLoss()(z, base[1:4])       # a compact view past its buffer's start
    assert abs(loss.item() - np.log(4)) < 1e-6
    loss = nn.SoftmaxLoss()(z, mininet.Tensor(np.array([0, 7, 1, 7, 2]))[::2])   # strided
    assert abs(loss.item() - np.log(4)) < 1e-6
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nn.SoftmaxLoss()(z, mininet.Tensor(np.array([0, 4, 1])))


def test_linear_relu_without_the_kernel(monkeypatch):
    """A device without bias_act (the CUDA one) runs the epilogue as NDArray ops."""
    from mininet.backend.cpu import CPUDevice
    rng = np.random.default_rng(12)
    x0, w0, b0 = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    runs = []
    for caps in (CPUDevice.capabilities, CPUDevice.capabilities - {"bias_act"}):
        monkeypatch.setattr(CPUDevice, "capabilities", caps)
        x, w, b = (mininet.Tensor(a, dtype="float64", requires_grad=True) for a in (x0, w0, b0))
        y = ops.linear(x, w, b, relu=True)
        (y * y).sum().backward()
        runs.append([y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(runs[0][0], np.maximum(x0 @ w0 + b0, 0), rtol=1e-12, atol=1e-12)
