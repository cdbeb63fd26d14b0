"""Fused batch norm + ReLU (ops.batch_norm_relu, the kernels' column path for small maps,
Sequential's BatchNorm -> ReLU fusion) against PyTorch and against the unfused ops."""
import numpy as np
import pytest

import mininet.nn as nn
import mininet.ops as ops
from mininet.autograd import Tensor

from conftest import t64 as T, torch

rng = np.random.default_rng(7)

# inner sizes on both kernel paths: columns (<= 256 per channel and sample), channels (289)
SHAPES = [(6, 3), (64, 16, 8, 8), (5, 3, 7, 7), (4, 6, 1, 1), (3, 5, 2, 2), (2, 3, 17, 17),
          (1, 4, 3, 3)]


def r(*shape):
    return rng.uniform(-1, 1, size=shape)


def axes_of(shape):
    return (0,) + tuple(range(2, len(shape)))


def torch_bn_relu(x, w, b):
    return torch.relu(torch.nn.functional.batch_norm(x, None, None, w, b, training=True))


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_relu_first_and_second_order_against_torch(shape):
    x, w, b, g = r(*shape), r(shape[1]), r(shape[1]), r(*shape)
    mx, mw, mb = T(x), T(w), T(b)
    y, op = ops.batch_norm_relu(mx, mw, mb, axes_of(shape))
    assert op.relu and op.fused
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch_bn_relu(tx, tw, tb)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.mean.numpy(), x.mean(axis=axes_of(shape)), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(op.var.numpy(), x.var(axis=axes_of(shape)), rtol=1e-10)
    # first order through the fused kernel (no graph recorded)
    y.backward(Tensor(g, dtype="float64"))
    tdx, tdw, tdb = torch.autograd.grad(ty, (tx, tw, tb), torch.tensor(g), create_graph=True)
    for m, t in ((mx, tdx), (mw, tdw), (mb, tdb)):
        np.testing.assert_allclose(m.grad.numpy(), t.detach().numpy(), rtol=1e-9, atol=1e-12)
    # second order: d/d(x, w) of |dL/dx|^2, the gradient's graph recorded (composite path)
    mx, mw, mb = T(x), T(w), T(b)
    ops.batch_norm_relu(mx, mw, mb, axes_of(shape))[0].backward(Tensor(g, dtype="float64"),
                                                                create_graph=True)
    dx = mx.grad
    np.testing.assert_allclose(dx.numpy(), tdx.detach().numpy(), rtol=1e-9, atol=1e-12)
    mx.grad = mw.grad = None
    (dx * dx).sum().backward()
    (tdx * tdx).sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mw.grad.numpy(), tw.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_matches_batch_norm_then_relu(shape, dtype):
    """Same values as the two ops (batch norm's kernel, then ReLU), float32 and float64,
    on a non-contiguous (transposed) input."""
    x = np.ascontiguousarray(np.swapaxes(r(*shape), 0, -1))
    w, b, g = r(shape[1]), r(shape[1]), r(*shape)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    outs = []
    for fused in (True, False):
        mx, mw, mb = (Tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
        view = ops.transpose(mx, (0, len(shape) - 1)) if len(shape) > 1 else mx
        if fused:
            y, _ = ops.batch_norm_relu(view, mw, mb, axes_of(shape))
        else:
            y = ops.relu(ops.batch_norm(view, mw, mb, axes_of(shape))[0])
        y.backward(Tensor(g, dtype=dtype))
        outs.append([a.numpy() for a in (y, mx.grad, mw.grad, mb.grad)])
    for a, c in zip(*outs):
        np.testing.assert_allclose(a, c, **tol)


def test_batch_norm_column_path_against_numpy():
    """Plain batch norm on small maps (the column path): float64 reference, including a
    large offset that a naive E[x^2] - E[x]^2 would cancel away."""
    x = r(32, 8, 3, 3) * 1e-3 + 1e4
    w, b, g = r(8), r(8), r(32, 8, 3, 3)
    mx, mw, mb = T(x), T(w), T(b)
    y, op = ops.batch_norm(mx, mw, mb, (0, 2, 3))
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    want = xhat * w.reshape(1, 8, 1, 1) + b.reshape(1, 8, 1, 1)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-7, atol=1e-7)
    y.backward(Tensor(g, dtype="float64"))
    np.testing.assert_allclose(mb.grad.numpy(), g.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(mw.grad.numpy(), (g * xhat).sum(axis=(0, 2, 3)), rtol=1e-6)


def test_batch_norm_relu_bad_input():
    with pytest.raises(ValueError, match="no values"):
        ops.batch_norm_relu(T(np.zeros((0, 3, 2, 2))), T(np.ones(3)), T(np.zeros(3)), (0, 2, 3))
    with pytest.raises(TypeError):
        ops.batch_norm_relu(Tensor(np.zeros((2, 3), dtype=np.int64)), T(np.ones(3)),
                            T(np.zeros(3)), (0,))


@pytest.mark.parametrize("dropped", [{"batchnorm_relu"}, {"batchnorm"}])
def test_batch_norm_relu_without_the_kernel_falls_back(dropped, monkeypatch):
    """A device without batchnorm_relu (or without batch norm's kernels at all): batch
    norm then ReLU as two ops, same values and gradients."""
    from mininet.backend.cpu import CPUDevice
    x, w, b, g = r(4, 3, 2, 2), r(3), r(3), r(4, 3, 2, 2)
    want = []
    for drop in (set(), dropped):
        monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - drop)
        mx = T(x)
        y, op = ops.batch_norm_relu(mx, T(w), T(b), (0, 2, 3))
        assert op.relu == (not drop)
        y.backward(Tensor(g, dtype="float64"))
        want.append((y.numpy(), mx.grad.numpy()))
    for a, c in zip(*want):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)


def test_batch_norm_with_no_channels():
    """C = 0: an empty output and no statistics for (N, 0); an (N, 0, H, W) input is a
    clear ValueError (its map size cannot be told from the kernel's view), never a crash."""
    y, op = ops.batch_norm_relu(T(np.zeros((3, 0))), T(np.ones(0)), T(np.zeros(0)), (0,))
    assert y.shape == (3, 0) and op.mean.shape == (0,)
    for shape in ((3, 0, 2, 2), (3, 0, 20, 20)):
        try:
            y, _ = ops.batch_norm_relu(T(np.zeros(shape)), T(np.ones(0)), T(np.zeros(0)),
                                       axes_of(shape))
            assert y.shape == shape
        except ValueError as e:
            assert "no values" in str(e)


def conv_bn_relu(dtype="float64"):
    return nn.Sequential(nn.Conv(3, 4, 3, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype), nn.ReLU())


def test_sequential_fuses_bn_relu_with_the_same_results():
    """Sequential's fused BatchNorm -> ReLU: outputs, gradients and running statistics as
    the unfused modules (a ReLU subclass is never fused), state_dict keys unchanged."""
    class PlainReLU(nn.ReLU):
        pass
    x = r(5, 3, 6, 6)
    fused, plain = conv_bn_relu(), conv_bn_relu()
    plain.load_state_dict(fused.state_dict())
    plain[2] = PlainReLU()
    assert fused._bn_relu_pairs(fused.modules_list) == {1}
    assert not plain._bn_relu_pairs(plain.modules_list)
    assert list(fused.state_dict()) == list(plain.state_dict())
    outs = []
    for m in (fused, plain):
        xt = T(x)
        y = m(xt)
        (y * y).sum().backward()
        outs.append([y.numpy(), xt.grad.numpy(), m[0].weight.grad.numpy(),
                     m[1].weight.grad.numpy(), m[1].running_mean.numpy(),
                     m[1].running_var.numpy()])
    for a, c in zip(*outs):
        np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-13)
    fused.eval()   # eval mode: the running statistics, unfused
    plain.eval()
    np.testing.assert_allclose(fused(T(x)).numpy(), plain(T(x)).numpy(), rtol=1e-12)


def test_sequential_fusion_follows_changes_to_the_list():
    seq = conv_bn_relu()
    assert seq._bn_relu_pairs(seq.modules_list) == {1}
    seq[2] = nn.Identity()
    x = r(2, 3, 5, 5)
    y = seq(T(x))
    assert seq._bn_relu_pairs(seq.modules_list) == frozenset()
    assert (y.numpy() < 0).any()   # no ReLU applied any more


@pytest.mark.torch
def test_resnet9_step_against_torch():
    """The course ResNet9 (its conv-BN-ReLU blocks fused): logits and every parameter's
    gradient as its torch twin built from the same spec and weights."""
    from mininet.models.resnet9 import ResNet9
    from mininet.models.spec import to_torch
    model = ResNet9(dtype="float64")
    tmodel = to_torch(model.spec).double()
    params = [p for p in model.parameters()]
    tparams = list(tmodel.parameters())
    assert len(params) == len(tparams)
    def ours(a):   # mininet's Linear weight is (in, out), torch's (out, in)
        return a.T if a.ndim == 2 else a
    with torch.no_grad():
        for p, tp in zip(params, tparams):
            tp.copy_(torch.tensor(ours(p.numpy())))
    x = r(4, 3, 32, 32)
    y = model(T(x))
    ty = tmodel(torch.tensor(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-8, atol=1e-10)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(ours(p.grad.numpy()), tp.grad.numpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (4, 3, 20, 20), (6, 5)])
def test_fused_keeps_nan_as_relu_does(shape):
    """A NaN in the batch makes its channel's statistics NaN: the fused op must give NaN
    there, as relu(batch_norm(x)) does, not 0 (that would hide a diverged run)."""
    x = r(*shape)
    x[(1, 0) + (0,) * (len(shape) - 2)] = np.nan
    c = shape[1]
    args = (np.ones(c), np.zeros(c))
    fused, _ = ops.batch_norm_relu(T(x), T(args[0]), T(args[1]), axes_of(shape))
    plain, _ = ops.batch_norm(T(x), T(args[0]), T(args[1]), axes_of(shape))
    want = ops.relu(plain).numpy()
    got = fused.numpy()
    assert np.isnan(got[:, 0]).all() and not np.isnan(got[:, 1:]).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-12, atol=1e-12)
