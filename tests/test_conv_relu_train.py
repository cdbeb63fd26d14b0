"""Conv2d + ReLU fused in training (Sequential), and the kernel that masks the output grad
and sums it for the bias in one pass (CPUDevice.relu_grad_bias)."""
import numpy as np
import pytest

import mininet as mn
from mininet import nn
from mininet.autograd import Tensor
from mininet.ndarray import NDArray
from mininet.ops.conv_fused import ConvReLU
from conftest import torch

rng = np.random.default_rng(14)


# the kernel -------------------------------------------------------------------------------
# odd maps; maps shorter than a vector, between one and two, and longer; many channels on
# small maps (blocks of channels summed together, split unevenly at first over threads)
SHAPES = [(3, 5, 7, 9), (2, 4, 33), (1, 1, 1, 1), (4, 3, 16, 16), (2, 17, 64), (5, 2, 31, 1),
          (3, 150, 4, 4), (2, 70, 5, 5), (4, 33, 20), (3, 37, 12), (2, 9, 14, 14)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_relu_grad_bias_matches_numpy(dtype, shape, threads):
    g = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    y.flat[::7] = 0   # y == 0 masks, as ReLU's gradient at 0
    old = mn.get_num_threads()
    mn.set_num_threads(threads)
    try:
        gd, yd = NDArray(g), NDArray(y)
        out = NDArray.make(shape, device=gd.device, dtype=np.dtype(dtype))
        db = NDArray.make((shape[1],), device=gd.device, dtype=np.dtype(dtype))
        gd.device.relu_grad_bias(gd, yd, out, db)
    finally:
        mn.set_num_threads(old)
    want = np.where(y > 0, g, 0)
    np.testing.assert_array_equal(out.numpy(), want)
    axes = (0,) + tuple(range(2, len(shape)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(db.numpy(), want.astype(np.float64).sum(axes), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(0, 5, 3, 3), (2, 3, 0, 0), (2, 0, 4, 4)])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_bias_grad_matches_numpy(dtype, shape, threads):
    """The plain bias gradient (a convolution without a fused ReLU): dy summed over all
    axes but 1 (zeros for an empty batch or map)."""
    g = rng.standard_normal(shape).astype(dtype)
    old = mn.get_num_threads()
    mn.set_num_threads(threads)
    try:
        gd = NDArray(g)
        db = NDArray(np.full(shape[1], 7, dtype))
        gd.device.conv2d_grad_bias(gd, db)
    finally:
        mn.set_num_threads(old)
    axes = (0,) + tuple(range(2, len(shape)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(db.numpy(), g.astype(np.float64).sum(axes), rtol=tol, atol=tol)


def test_relu_grad_bias_nan_and_empty():
    g = np.array([[[np.nan, 1.0, np.inf, 2.0]]], np.float32)
    y = np.array([[[1.0, np.nan, 1.0, -1.0]]], np.float32)   # a NaN output masks
    gd, yd = NDArray(g), NDArray(y)
    out = NDArray.make(g.shape, device=gd.device)
    db = NDArray.make((1,), device=gd.device)
    gd.device.relu_grad_bias(gd, yd, out, db)
    np.testing.assert_array_equal(out.numpy(), [[[np.nan, 0, np.inf, 0]]])
    assert np.isnan(db.numpy()[0])
    for shape in [(0, 3, 4), (2, 0, 4), (2, 3, 0)]:
        e = NDArray(np.zeros(shape, np.float32))
        db = NDArray(np.full(shape[1], 7.0, np.float32))
        e.device.relu_grad_bias(e, e, NDArray.make(shape, device=e.device), db)
        np.testing.assert_array_equal(db.numpy(), np.zeros(shape[1]) if shape[2] else 0)


def test_relu_grad_bias_refuses_mismatches():
    dev = NDArray(np.zeros(1, np.float32)).device
    a = NDArray(np.zeros((2, 3, 4), np.float32))
    db = NDArray(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="relu_grad_bias"):
        dev.relu_grad_bias(a, NDArray(np.zeros((2, 3, 5), np.float32)), a, db)
    with pytest.raises(ValueError, match="relu_grad_bias"):
        dev.relu_grad_bias(a, a, a, NDArray(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="relu_grad_bias"):
        dev.relu_grad_bias(a, NDArray(np.zeros((2, 3, 4))), a, db)   # float64 y
    with pytest.raises(ValueError, match="relu_grad_bias"):
        dev.relu_grad_bias(NDArray(np.zeros((2, 4, 3), np.float32)).permute((0, 2, 1)), a, a, db)


# the op and Sequential ---------------------------------------------------------------------
def _spy(monkeypatch):
    """Counts relu_grad_bias calls on the CPU device."""
    from mininet.backend.cpu import CPUDevice
    calls = []
    real = CPUDevice.relu_grad_bias

    def spy(self, *a):
        calls.append(a[0].shape)
        return real(self, *a)
    monkeypatch.setattr(CPUDevice, "relu_grad_bias", spy)
    return calls


def _model(bias=True, dtype="float64"):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=bias, dtype=dtype), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 5, padding=2, bias=bias, dtype=dtype),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10, dtype=dtype))


def _torch_twin(m):
    t = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=m[0].bias is not None),
                            torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Conv2d(8, 16, 5, padding=2, bias=m[3].bias is not None),
                            torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10)).double()
    with torch.no_grad():
        for i in (0, 3):
            t[i].weight.copy_(torch.tensor(m[i].weight.numpy()))
            if m[i].bias is not None:
                t[i].bias.copy_(torch.tensor(m[i].bias.numpy()))
        t[6].weight.copy_(torch.tensor(m[6].weight.numpy().T))
        t[6].bias.copy_(torch.tensor(m[6].bias.numpy()))
    return t


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fused_kernel", [True, False])
def test_sequential_conv_relu_trains_as_torch(bias, fused_kernel, monkeypatch):
    """A training Sequential runs Conv2d + ReLU as one ConvReLU op; loss and every
    parameter gradient match torch's (float64), with and without the one-pass mask + bias
    sum (capability relu_grad_bias)."""
    from mininet.backend.cpu import CPUDevice
    if not fused_kernel:
        monkeypatch.setattr(CPUDevice, "capabilities",
                            CPUDevice.capabilities - {"relu_grad_bias"})
    calls = _spy(monkeypatch)
    ops = []
    real_compute = ConvReLU.compute

    def compute(self, *a):
        ops.append(type(self))
        return real_compute(self, *a)
    monkeypatch.setattr(ConvReLU, "compute", compute)
    m = _model(bias)
    t = _torch_twin(m)
    x = rng.standard_normal((4, 3, 8, 8))
    y = m(Tensor(x, dtype="float64"))
    ty = t(torch.tensor(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    r = rng.standard_normal(ty.shape)
    (y * Tensor(r, dtype="float64")).sum().backward()
    (ty * torch.tensor(r)).sum().backward()
    assert len(ops) == 2   # both conv layers fused with their ReLU
    assert len(calls) == (2 if bias and fused_kernel else 0)
    for i in (0, 3, 6):
        w = m[i].weight.grad.numpy()
        np.testing.assert_allclose(w.T if i == 6 else w, t[i].weight.grad.numpy(),
                                   rtol=1e-9, atol=1e-11)
        if m[i].bias is not None:
            np.testing.assert_allclose(m[i].bias.grad.numpy(), t[i].bias.grad.numpy(),
                                       rtol=1e-9, atol=1e-11)


@pytest.mark.torch
def test_conv_relu_second_order_keeps_the_recorded_mask(monkeypatch):
    """create_graph: the ReLU mask is recorded as an op (no one-pass kernel), and the
    gradient of |dL/dw|^2 matches torch's."""
    calls = _spy(monkeypatch)
    m = _model()
    t = _torch_twin(m)
    x = rng.standard_normal((2, 3, 8, 8))
    y = m(Tensor(x, dtype="float64"))
    (gw,) = mn.autograd.grad((y * y).sum(), [m[0].weight], create_graph=True)
    assert calls == []   # recorded: the mask is a ReLUGrad op
    (gw * gw).sum().backward()
    ty = t(torch.tensor(x))
    (tgw,) = torch.autograd.grad((ty * ty).sum(), [t[0].weight], create_graph=True)
    (tgw * tgw).sum().backward()
    np.testing.assert_allclose(m[3].weight.grad.numpy(), t[3].weight.grad.numpy(),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m[0].bias.grad.numpy(), t[0].bias.grad.numpy(),
                               rtol=1e-8, atol=1e-10)


def test_eval_sequential_fuses_conv_relu_and_matches_unfused():
    m = _model(dtype="float32")
    m.eval()
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    want = x
    for layer in m.modules_list:
        want = layer(want)
    np.testing.assert_allclose(m(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
