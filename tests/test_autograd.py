"""Gradients: central differences in float64, and PyTorch CPU where installed."""
import numpy as np
import pytest

import mininet.ops as ops
from mininet.autograd import Tensor, no_grad

from conftest import gradcheck, t64 as T, torch

rng = np.random.default_rng(2)


def r(*shape, low=-1, high=1):
    return rng.uniform(low, high, size=shape)


CASES = {
    "add_broadcast": (lambda a, b: a + b, [r(3, 4), r(4)]),
    "sub": (lambda a, b: a - b, [r(3, 4), r(3, 1)]),
    "mul_broadcast": (lambda a, b: a * b, [r(2, 3, 4), r(3, 1)]),
    "div": (lambda a, b: a / b, [r(3, 4), r(3, 4, low=0.5, high=2)]),
    "scalars": (lambda a: (a * 3 + 2) / 4 - 1, [r(5)]),
    "rdiv": (lambda a: 2 / a, [r(5, low=0.5, high=2)]),
    "power_scalar": (lambda a: a ** 3, [r(3, 4)]),
    "power": (lambda a, b: a ** b, [r(3, low=0.5, high=2), r(3)]),
    "neg": (lambda a: -a, [r(3)]),
    "exp": (ops.exp, [r(3, 4)]),
    "log": (ops.log, [r(3, 4, low=0.5, high=2)]),
    "sqrt": (ops.sqrt, [r(3, 4, low=0.5, high=2)]),
    "tanh": (ops.tanh, [r(3, 4)]),
    "sigmoid": (ops.sigmoid, [r(3, 4)]),
    "relu": (ops.relu, [r(3, 4) + 0.01]),
    "log1p": (ops.log1p, [r(3, 4, low=-0.5, high=2)]),
    "expm1": (ops.expm1, [r(3, 4)]),
    "abs": (ops.abs, [np.where(r(3, 4) < 0, -1, 1) * r(3, 4, low=0.1, high=1)]),
    "clip": (lambda a: ops.clip(a, -0.5, 0.5), [np.array([-0.9, -0.3, 0.1, 0.45, 0.7])]),
    "clip_min_only": (lambda a: ops.clip(a, min=0.2), [np.array([-0.9, 0.1, 0.45, 0.7])]),
    "matmul": (ops.matmul, [r(3, 5), r(5, 4)]),
    "matmul_batched": (ops.matmul, [r(2, 3, 5), r(5, 4)]),
    "matmul_vec": (ops.matmul, [r(3, 5), r(5)]),
    "sum_axes": (lambda a: ops.summation(a, (0, 2)), [r(2, 3, 4)]),
    "sum_keepdims": (lambda a: ops.summation(a, 1, keepdims=True), [r(2, 3)]),
    "mean": (lambda a: ops.mean(a, 1), [r(2, 3)]),
    "max": (lambda a: ops.max(a, 1), [r(3, 5)]),
    "reshape": (lambda a: ops.reshape(a, (4, 3)), [r(2, 6)]),
    "transpose": (lambda a: ops.transpose(a), [r(2, 3, 4)]),
    "permute": (lambda a: ops.permute(a, (2, 0, 1)), [r(2, 3, 4)]),
    "broadcast_to": (lambda a: ops.broadcast_to(a, (3, 2, 4)), [r(2, 1)]),
    "getitem": (lambda a: a[1:, ::2], [r(3, 5)]),
    "stack": (lambda a, b: ops.stack([a, b], 1), [r(2, 3), r(2, 3)]),
    "split": (lambda a: ops.split(a, 1)[2] * 2, [r(2, 3)]),
    "concatenate": (lambda a, b: ops.concatenate([a, b], 1), [r(2, 3), r(2, 2)]),
    "logsumexp": (lambda a: ops.logsumexp(a, 1), [r(3, 5) * 10]),
    "logsoftmax": (lambda a: ops.logsoftmax(a, 1), [r(3, 5)]),
    "softmax": (lambda a: ops.softmax(a, -1), [r(3, 5)]),
    "cross_entropy": (lambda a: ops.softmax_cross_entropy(a, [0, 4, 2]), [r(3, 5)]),
    "linear": (lambda x, w, b: ops.linear(x, w, b), [r(2, 3, 4), r(4, 5), r(5)]),
    "linear_nobias": (lambda x, w: ops.linear(x, w), [r(3, 4), r(4, 2)]),
    "batch_norm": (lambda x, w, b: ops.batch_norm(x, w, b, (0,))[0], [r(6, 3), r(3), r(3)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    fn, arrays = CASES[name]
    gradcheck(fn, *[a.copy() for a in arrays])


def test_gradient_accumulates_and_reuse():
    x = T([1.0, 2.0, 3.0])
    y = x * x + x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1, 2, 3.0]) + 1)
    (x * 2).sum().backward()  # accumulates into .grad, as PyTorch
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1, 2, 3.0]) + 3)


def test_deep_graph_no_recursion_limit():
    x = T([1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-9)


def test_higher_order_gradient():
    x = T([0.5, -1.0, 2.0])
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    g = x.grad
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    x.grad = None
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy())


def test_no_grad_detach_and_data():
    x = T([1.0, 2.0])
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.op is None
    d = (x * 3).detach()
    assert not d.requires_grad
    assert not x.data.requires_grad
    z = x * 2
    z.backward(Tensor(np.ones(2), dtype="float64"))
    assert z.inputs == ()  # graph freed after backward
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()


@pytest.mark.torch
def test_against_torch():
    a, b = r(4, 6), r(6, 3)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(torch.tanh(ta @ tb) * 3, torch.tensor([0, 2, 1, 1]))
    tl.backward()
    ma, mb = T(a), T(b)
    ml = ops.softmax_cross_entropy(ops.tanh(ma @ mb) * 3, [0, 2, 1, 1])
    ml.backward()
    np.testing.assert_allclose(ml.numpy(), tl.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(ma.grad.numpy(), ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-9, atol=1e-12)
    lse = ops.logsumexp(T(a * 50), 1).numpy()
    np.testing.assert_allclose(lse, torch.logsumexp(torch.tensor(a * 50), 1).numpy(), rtol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("fused", [True, False])
def test_cross_entropy_second_order_against_torch(fused, monkeypatch):
    """d/dz |dL/dz|^2 and the loss's gradient, through the fused kernel and through the
    composite ops (the path of devices without it)."""
    from mininet.backend.cpu import CPUDevice
    if not fused:
        monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {"softmax_xent"})
    z, labels = r(5, 4) * 3, [3, 0, 1, 1, 2]
    mz = T(z)
    loss = ops.softmax_cross_entropy(mz, labels) * 2.5
    loss.backward(create_graph=True)
    gz = mz.grad
    mz.grad = None
    (gz * gz).sum().backward()
    tz = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(labels)) * 2.5
    (tgz,) = torch.autograd.grad(tloss, tz, create_graph=True)
    (tgz * tgz).sum().backward()
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gz.numpy(), tgz.detach().numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mz.grad.numpy(), tz.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_cross_entropy_backward_twice_through_a_retained_graph():
    """The fused gradient is written over the kept probabilities; a second backward of the
    same graph recomputes them (composed path) and gives the same gradient."""
    z, labels = r(6, 5) * 3, [4, 0, 1, 1, 2, 3]
    mz = T(z)
    loss = ops.softmax_cross_entropy(mz, labels)
    loss.backward(retain_graph=True)
    first = mz.grad.numpy().copy()
    mz.grad = None
    loss.backward()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = (p - np.eye(5)[labels]) / 6
    np.testing.assert_allclose(first, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mz.grad.numpy(), want, rtol=1e-10, atol=1e-14)


def test_cross_entropy_bad_labels():
    with pytest.raises(ValueError, match="labels must lie in"):
        ops.softmax_cross_entropy(T(r(3, 4)), [0, 4, 1])


@pytest.mark.torch
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 5)])
def test_batch_norm_first_and_second_order_against_torch(fused, shape, monkeypatch):
    """Training-mode batch norm over all axes but 1: gradients through the fused kernels
    (or the composite ops, as on devices without them), and d/dx of |dL/dx|^2, which
    records the gradient's graph and so always takes the composite path."""
    from mininet.backend.cpu import CPUDevice
    if not fused:
        monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {"batchnorm"})
    axes = (0,) + tuple(range(2, len(shape)))
    x, w, b, g = r(*shape), r(shape[1]), r(shape[1]), r(*shape)
    mx, mw, mb = T(x), T(w), T(b)
    y, op = ops.batch_norm(mx, mw, mb, axes)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.var.numpy(), tx.detach().numpy().var(axis=axes), rtol=1e-10)
    y.backward(Tensor(g, dtype="float64"), create_graph=True)
    tdx, tdw, tdb = torch.autograd.grad(ty, (tx, tw, tb), torch.tensor(g), create_graph=True)
    for m, t in ((mx, tdx), (mw, tdw), (mb, tdb)):
        np.testing.assert_allclose(m.grad.numpy(), t.detach().numpy(), rtol=1e-9, atol=1e-12)
    dx = mx.grad
    mx.grad = mw.grad = None
    (dx * dx).sum().backward()
    (tdx * tdx).sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mw.grad.numpy(), tw.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_batch_norm_fused_backward_matches_composite():
    """A plain backward (no graph recorded) uses the fused kernel: same values."""
    x, w, b, g = r(8, 5), r(5), r(5), r(8, 5)
    grads = []
    for create in (False, True):
        mx, mw, mb = T(x), T(w), T(b)
        ops.batch_norm(mx, mw, mb, (0,))[0].backward(Tensor(g, dtype="float64"), create_graph=create)
        grads.append([a.grad.numpy() for a in (mx, mw, mb)])
    for a, c in zip(*grads):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("xshape", [(4, 3), (2, 4, 3)])
def test_linear_second_order_against_torch(xshape):
    x, w, b = r(*xshape), r(3, 5), r(5)
    mx, mw, mb = T(x), T(w), T(b)
    y = ops.tanh(ops.linear(mx, mw, mb))
    y.backward(Tensor(np.ones(y.shape), dtype="float64"), create_graph=True)
    gx, gw, gb = mx.grad, mw.grad, mb.grad
    mx.grad = mw.grad = mb.grad = None
    ((gx * gx).sum() + (gw * gw).sum() + (gb * gb).sum()).backward()
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.tanh(tx @ tw + tb)
    tgx, tgw, tgb = torch.autograd.grad(ty.sum(), (tx, tw, tb), create_graph=True)
    ((tgx * tgx).sum() + (tgw * tgw).sum() + (tgb * tgb).sum()).backward()
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_create_graph_keeps_the_forward_graph():
    """exp's gradient is g * exp(x), the forward node itself: with create_graph the
    forward graph must survive the first pass for the second derivative to reach x."""
    x = r(5)
    mx = T(x)
    ops.exp(mx).sum().backward(create_graph=True)
    first = mx.grad
    mx.grad = None
    first.sum().backward()
    np.testing.assert_allclose(first.numpy(), np.exp(x), rtol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), np.exp(x), rtol=1e-12)


@pytest.mark.torch
def test_fused_kernels_read_offset_views():
    """Row slices are compact but start at an offset into their buffer: the fused
    kernels (cross-entropy, batch norm, conv) must read from there, not from item 0."""
    big = r(7, 5)
    z = T(big)[2:6]                           # compact rows 2..5 of a (7, 5) buffer
    loss = ops.softmax_cross_entropy(z, [0, 4, 1, 2])
    want = torch.nn.functional.cross_entropy(torch.tensor(big[2:6]), torch.tensor([0, 4, 1, 2]))
    np.testing.assert_allclose(loss.numpy(), want.numpy(), rtol=1e-12)
    y, _ = ops.batch_norm(T(big)[3:7], T(np.ones(5)), T(np.zeros(5)), (0,))
    x = big[3:7]
    np.testing.assert_allclose(y.numpy(), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-9)
    imgs = r(5, 2, 6, 6)
    w = r(3, 2, 3, 3)
    got = ops.conv(T(imgs)[2:4], T(w), padding=1)
    want = torch.nn.functional.conv2d(torch.tensor(imgs[2:4]), torch.tensor(w), padding=1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
