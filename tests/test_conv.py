"""Convolution, pooling, pad/flip/dilate, BatchNorm2d and the CNN, against PyTorch
and central differences."""
import numpy as np
import pytest

from mininet import nn, ops
from mininet.autograd import Tensor
from mininet.models import build_model
from conftest import check_batchnorm_against_torch, conv_second_order_vs_torch, gradcheck, t64, torch

F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(5)


def run_both(mn_fn, torch_fn, *arrays):
    """Forward and input gradients of mininet and PyTorch for sum(f(...) * g) (tests
    marked torch)."""
    mins = [t64(a) for a in arrays]
    tins = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = mn_fn(*mins), torch_fn(*tins)
    g = rng.standard_normal(ty.shape)
    y.backward(Tensor(g, dtype="float64"))
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-11)
    for m, t in zip(mins, tins):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-11)


# N, C, H, W, K, k, stride, padding, dilation, groups
CONV_CASES = [
    (2, 3, 7, 9, 4, 3, 1, 1, 1, 1),
    (1, 4, 8, 8, 6, 3, 2, 1, 1, 2),       # batch 1, groups
    (3, 6, 11, 10, 6, 3, 2, 2, 2, 3),     # dilation, odd sizes
    (2, 3, 5, 5, 5, 1, 1, 0, 1, 1),       # 1x1
    (2, 2, 6, 7, 4, 5, 3, 4, 1, 2),       # padding wider than the stride
    (2, 4, 9, 9, 4, 3, 1, 0, 1, 4),       # depthwise
    (1, 1, 28, 28, 6, 5, 1, 2, 1, 1),     # the MNIST CNN's first layer
    (2, 3, 5, 7, 4, 3, 1, 3, 1, 1),       # padding beyond the kernel's reach (OW > W + pad)
    (2, 3, 9, 8, 5, 3, 1, 0, 2, 1),       # dilation without padding
    (3, 2, 6, 6, 4, 2, 1, 1, 1, 1),       # even kernel
    (1, 4, 4, 9, 3, 5, 1, 4, 1, 1),       # kernel taller than the image
    (2, 30, 6, 5, 40, 3, 1, 1, 1, 1),     # 270 taps (two tap blocks), 40 output channels
]


@pytest.fixture(params=["fused", "im2col"])
def conv_path(request, monkeypatch):
    """Both CPU convolution paths: the fused implicit GEMM, and im2col + GEMM (the path of
    devices without fused kernels)."""
    from mininet.backend.cpu import CPUDevice
    caps = CPUDevice.capabilities if request.param == "fused" else CPUDevice.capabilities - {"conv2d"}
    monkeypatch.setattr(CPUDevice, "capabilities", caps)
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)   # small test images too
    return request.param


@pytest.mark.torch
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_torch(case, bias, conv_path):
    _conv_case(case, bias)


# maps of 1 to 63 output pixels (a ResNet's late stages: im2col/col2im loop over images
# or channels innermost there), and kernels with dead taps (only padding under them for
# every output: cropped before the GEMM)
SMALL_MAP_CASES = [
    (5, 6, 1, 1, 7, 3, 1, 1, 1, 1),       # 1x1 map, 3x3 kernel: one live tap
    (4, 4, 2, 2, 6, 3, 2, 1, 1, 2),       # 2x2 -> 1x1, stride 2: 2x2 live taps, groups
    (3, 3, 1, 3, 4, 3, 1, 1, 1, 1),       # 1x3: rows cropped, columns not
    (3, 5, 2, 4, 4, 3, 2, 1, 1, 1),       # 1x2 output
    (6, 3, 4, 4, 5, 3, 2, 1, 1, 1),       # 2x2 output
    (3, 4, 4, 4, 4, 3, 1, 1, 1, 1),       # 4x4 output
    (2, 3, 13, 13, 4, 3, 2, 1, 1, 1),     # 7x7 output
    (2, 3, 32, 32, 4, 7, 4, 3, 1, 1),     # ResNet9's first layer: 8x8
    (3, 2, 3, 3, 3, 5, 1, 2, 1, 1),       # 3x3 map, 5x5 kernel, all taps live
    (2, 3, 1, 1, 2, 3, 3, 1, 1, 1),       # stride larger than the map
    (2, 3, 2, 2, 4, 3, 1, 2, 2, 1),       # dilation: not cropped
]


@pytest.mark.torch
@pytest.mark.parametrize("case", SMALL_MAP_CASES, ids=[str(c) for c in SMALL_MAP_CASES])
def test_conv_on_small_maps_matches_torch(case, conv_path):
    _conv_case(case, True)
    _conv_case(case, False)


def _conv_case(case, bias):
    n, c, h, w, k, ks, s, p, d, g = case
    arrays = [rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c // g, ks, ks))]
    if bias:
        arrays.append(rng.standard_normal(k))
    run_both(lambda *a: ops.conv(*a, stride=s, padding=p, dilation=d, groups=g),
             lambda *a: F.conv2d(*a, stride=s, padding=p, dilation=d, groups=g), *arrays)


def test_dead_taps_are_cropped():
    import importlib
    conv_ops = importlib.import_module("mininet.ops.conv")

    def live(shape, k, s, p):
        params = conv_ops.ConvParams(s, p)
        spans = conv_ops._live_taps(shape[2:], (k, k), params.stride, params.padding,
                                    params.dilation, params.out_hw(shape, (k, k)))
        return None if spans is None else list(spans)
    assert live((1, 1, 1, 1), 3, 1, 1) == [(1, 2), (1, 2)]
    assert live((1, 1, 2, 2), 3, 2, 1) == [(1, 3), (1, 3)]
    assert live((1, 1, 4, 4), 3, 1, 1) is None          # every tap reads the image
    assert live((1, 1, 1, 1), 7, 4, 3) == [(3, 4), (3, 4)]
    assert live((1, 1, 28, 28), 5, 1, 2) is None


@pytest.mark.torch
def test_conv_float32_and_strided_input():
    x = rng.standard_normal((4, 3, 12, 10)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    # a non-contiguous input: every other column of a wider array, channels permuted
    wide = rng.standard_normal((4, 12, 20, 3)).astype(np.float32)
    xv = Tensor(wide).permute((0, 3, 1, 2))[:, :, :, ::2]
    want = F.conv2d(torch.tensor(wide).permute(0, 3, 1, 2)[:, :, :, ::2], torch.tensor(w), padding=1)
    got = ops.conv(xv, Tensor(w), padding=1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.conv(Tensor(x), Tensor(w), stride=2).numpy(),
                               F.conv2d(torch.tensor(x), torch.tensor(w), stride=2).numpy(),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_float32_batch_gradients(stride, conv_path):
    # float32 kernels (other panel widths than float64), a batch split over threads and
    # images wider than one chunk of pixel panels
    x = rng.standard_normal((9, 16, 20, 20)).astype(np.float32)
    w = (rng.standard_normal((32, 16, 5, 5)) / 20).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    g = rng.standard_normal((9, 32, 20 // stride, 20 // stride)).astype(np.float32)
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = ops.conv(mx, mw, mb, stride=stride, padding=2)
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=2)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=2e-3)


def test_conv_zero_sized_batch_and_channels(conv_path):
    # no images: empty output and input grad, zero weight and bias grads
    x = Tensor(np.zeros((0, 3, 5, 5), np.float32), requires_grad=True)
    w = Tensor(np.ones((4, 3, 3, 3), np.float32), requires_grad=True)
    b = Tensor(np.ones(4, np.float32), requires_grad=True)
    y = ops.conv(x, w, b, padding=1)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), 0)
    np.testing.assert_array_equal(b.grad.numpy(), 0)
    # no input channels: the output is the bias
    x = Tensor(np.ones((2, 0, 5, 5), np.float32), requires_grad=True)
    w = Tensor(np.ones((4, 0, 3, 3), np.float32), requires_grad=True)
    y = ops.conv(x, w, b, padding=1)
    np.testing.assert_array_equal(y.numpy(), np.ones((2, 4, 5, 5)))
    y.sum().backward()
    assert x.grad.shape == (2, 0, 5, 5) and w.grad.shape == (4, 0, 3, 3)


def test_conv_gradcheck_float64():
    gradcheck(lambda x, w, b: ops.conv(x, w, b, stride=2, padding=1, dilation=1, groups=2),
              rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((4, 2, 3, 3)),
              rng.standard_normal(4))


@pytest.mark.torch
def test_conv_second_order_gradient(conv_path):
    """d/dx of |d conv / dW|^2 through the gradient ops, against PyTorch."""
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    conv_second_order_vs_torch(x, w)


@pytest.mark.torch
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
def test_pooling_matches_torch(k, s, p):
    x = rng.standard_normal((2, 3, 9, 8))
    run_both(lambda a: ops.max_pool2d(a, k, s, p), lambda a: F.max_pool2d(a, k, s, p), x)
    run_both(lambda a: ops.avg_pool2d(a, k, s, p), lambda a: F.avg_pool2d(a, k, s, p), x)


def test_pooling_gradcheck_and_second_order():
    x = rng.permutation(2 * 2 * 6 * 5).reshape(2, 2, 6, 5) / 10.0  # distinct: max is smooth
    gradcheck(lambda a: ops.max_pool2d(a, 3, 2, 1), x)
    gradcheck(lambda a: ops.avg_pool2d(a, 3, 2, 1), x)
    # the scatter ops are linear, so their gradients (gather / pool again) check too
    g = rng.standard_normal((2, 2, 3, 3))
    gradcheck(lambda a, h: ops.max_pool2d(a, 3, 2, 1) * h, x, g)


@pytest.mark.torch
def test_pad_flip_dilate():
    x = rng.standard_normal((2, 3, 4))
    run_both(lambda a: ops.pad(a, ((0, 0), (1, 2), (2, 0))),
             lambda a: F.pad(a, (2, 0, 1, 2)), x)
    run_both(lambda a: ops.flip(a, (0, 2)), lambda a: torch.flip(a, (0, 2)), x)
    d = ops.dilate(t64(x), (1, 2), 1).numpy()
    want = np.zeros((2, 6, 8))
    want[:, ::2, ::2] = x
    np.testing.assert_array_equal(d, want)
    np.testing.assert_array_equal(ops.undilate(Tensor(want, dtype="float64"), (1, 2), 1).numpy(), x)
    gradcheck(lambda a: ops.dilate(ops.flip(ops.pad(a, ((1, 0), (0, 1), (1, 1))), 1), 2, 2), x)


@pytest.mark.torch
def test_batchnorm2d_train_and_eval_match_torch():
    x = rng.standard_normal((4, 3, 5, 6)) * 2 + 1
    check_batchnorm_against_torch(nn.BatchNorm2d(3, dtype="float64"),
                                  torch.nn.BatchNorm2d(3).double(), x, rng)


@pytest.mark.torch
def test_conv_module_matches_torch_layer():
    tc = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    mc = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype="float64")
    assert mc.weight.shape == tuple(tc.weight.shape)
    mc.weight.data = Tensor(tc.weight.detach().numpy(), dtype="float64")
    mc.bias.data = Tensor(tc.bias.detach().numpy(), dtype="float64")
    x = rng.standard_normal((3, 4, 7, 7))
    np.testing.assert_allclose(mc(t64(x)).numpy(), tc(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-11)
    # kaiming-uniform bound with fan_in = in/groups * k * k
    big = nn.Conv(64, 64, 3).weight.numpy()
    assert abs(big.max() - np.sqrt(6 / (64 * 9))) < 0.01 and abs(big.std() - np.sqrt(2 / (64 * 9))) < 0.005


@pytest.mark.parametrize("call,msg", [
    (lambda: ops.conv(Tensor(np.zeros((1, 3, 8, 8))), Tensor(np.zeros((4, 2, 3, 3)))), "channels"),
    (lambda: ops.conv(Tensor(np.zeros((1, 6, 8, 8))), Tensor(np.zeros((4, 3, 3, 3))), groups=4),
     "groups=4 must divide"),
    (lambda: ops.conv(Tensor(np.zeros((1, 3, 4, 4))), Tensor(np.zeros((4, 3, 7, 7))), padding=1),
     "larger than the padded input"),
    (lambda: ops.conv(Tensor(np.zeros((3, 8, 8))), Tensor(np.zeros((4, 3, 3, 3)))), "must both be 4-D"),
    (lambda: ops.max_pool2d(Tensor(np.zeros((3, 8, 8))), 2), "4-D"),
    (lambda: ops.avg_pool2d(Tensor(np.zeros((1, 1, 2, 2))), 3), "larger than the padded input"),
    (lambda: nn.Conv(3, 4, 3, groups=2), "groups=2 must divide"),
    (lambda: nn.BatchNorm2d(3)(Tensor(np.zeros((2, 4, 3, 3)))), "4 channels"),
])
def test_bad_input_names_the_shapes(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


@pytest.mark.torch
def test_cnn_step_matches_torch():
    """One SGD step of the whole CNN equals PyTorch's with the same weights."""
    from mininet import optim
    model = build_model("cnn", channels=(4, 6), hidden=16)
    layers = [m for m in model.net.modules_list if isinstance(m, (nn.Conv, nn.Linear))]
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(6 * 49, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    tlayers = [m for m in tnet if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for m, t in zip(layers, tlayers):
            wt = m.weight.numpy()
            t.weight.copy_(torch.tensor(wt.T if isinstance(m, nn.Linear) else wt))
            t.bias.copy_(torch.tensor(m.bias.numpy()))
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = nn.SoftmaxLoss()(model(Tensor(x)), Tensor(y, dtype="int64"))
    loss.backward()
    opt.step()
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    tloss = F.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    topt.step()
    assert abs(loss.numpy() - tloss.item()) < 1e-5
    for m, t in zip(layers, tlayers):
        wt = t.weight.detach().numpy()
        np.testing.assert_allclose(m.weight.numpy(), wt.T if isinstance(m, nn.Linear) else wt,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 2, 28, 28), (1, 1, 6, 70), (2, 1, 7, 9)])
def test_max_pool_2x2_fast_path_values_indices_ties_and_nan(dtype, shape):
    """The vectorised 2x2/stride-2 path against torch: values, the gradient (it follows the
    argmax), ties (the first tap wins) and NaN (planes with a NaN take the general path)."""
    x = rng.integers(0, 4, size=shape).astype(dtype)    # many ties
    x[0, 0, 1, 1] = np.nan
    x[-1, -1, 0, 1] = np.nan
    x[-1, -1, 0, 0] = np.nan                             # two NaNs in one window: the first wins
    t = torch.tensor(x, requires_grad=True)
    ty = F.max_pool2d(t, 2)
    g = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(g))
    m = Tensor(x, dtype=dtype, requires_grad=True)
    y = ops.max_pool2d(m, 2)
    y.backward(Tensor(g, dtype=dtype))
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())


# (N, C, H, W, K, k, pad, dilation): stride 1, one group, output rows that split into
# whole tiles of the pixel-major forward (OW 14, 28, 13, 27, 56; K 1..64: one or two
# channel vectors, several channel blocks)
ROW_CASES = [(2, 3, 14, 14, 32, 5, 2, 1), (2, 1, 28, 28, 16, 5, 2, 1), (1, 2, 13, 13, 17, 3, 1, 1),
             (2, 4, 27, 29, 5, 3, 1, 1), (1, 3, 56, 56, 64, 3, 1, 1), (2, 2, 16, 16, 33, 3, 1, 1),
             (1, 2, 18, 18, 1, 5, 2, 2), (3, 5, 14, 14, 40, 1, 0, 1),
             # kernel rows on vertical padding skipped: whole output rows in it, a 7x7
             # kernel, dilation
             (2, 3, 2, 8, 16, 3, 4, 1), (1, 3, 12, 12, 16, 7, 4, 1), (2, 2, 10, 12, 24, 3, 3, 2)]


@pytest.mark.torch
@pytest.mark.parametrize("case", ROW_CASES, ids=[str(c) for c in ROW_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_forward_by_rows_matches_torch(case, dtype, bias):
    """The pixel-major forward (tap-table kernel, stride 1): values against torch, on a
    batch view that starts at an offset."""
    n, c, h, w, k, ks, pad, dil = case
    x = rng.standard_normal((n + 1, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, ks, ks)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    y = ops.conv(Tensor(x, dtype=dtype)[1:], Tensor(wt, dtype=dtype),
                 None if b is None else Tensor(b, dtype=dtype), padding=pad, dilation=dil)
    ref = F.conv2d(torch.tensor(x[1:]), torch.tensor(wt), None if b is None else torch.tensor(b),
                   padding=pad, dilation=dil).numpy()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y.numpy(), ref, **tol)


@pytest.mark.torch
@pytest.mark.parametrize("case", ROW_CASES + [(2, 3, 14, 14, 8, 3, 3, 1), (1, 2, 14, 14, 4, 3, 0, 2)],
                         ids=[str(c) for c in ROW_CASES + [(2, 3, 14, 14, 8, 3, 3, 1), (1, 2, 14, 14, 4, 3, 0, 2)]])
def test_conv_input_grad_as_a_convolution_matches_torch(case):
    """Stride 1: the input gradient runs as the forward of the flipped, channel-swapped
    weights (padding beyond the kernel's reach falls back to the scatter)."""
    n, c, h, w, k, ks, pad, dil = case
    run_both(lambda a, b: ops.conv(a, b, padding=pad, dilation=dil),
             lambda a, b: F.conv2d(a, b, padding=pad, dilation=dil),
             rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, ks, ks)))


def test_conv_forward_by_rows_is_taken():
    """The cases above do run the pixel-major path (and a stride-2 one does not)."""
    from mininet_ext import convgemm
    assert convgemm.row_tiles((2, 3, 14, 14), 32, 1, (5, 5), (1, 1), (2, 2), (1, 1), 14, 14, 4)
    assert convgemm.row_tiles((2, 1, 28, 28), 16, 1, (5, 5), (1, 1), (2, 2), (1, 1), 28, 28, 4)
    assert not convgemm.row_tiles((2, 3, 14, 14), 32, 1, (5, 5), (2, 2), (2, 2), (1, 1), 7, 7, 4)
    assert not convgemm.row_tiles((2, 4, 8, 8), 4, 2, (3, 3), (1, 1), (1, 1), (1, 1), 8, 8, 4)
    # the skip of kernel rows on vertical padding: where it saves at least 1/16 of them
    for n, c, h, w, k, ks, pad, dil in ROW_CASES[-3:] + [ROW_CASES[0]]:
        oh, ow = (h + 2 * pad - dil * (ks - 1), w + 2 * pad - dil * (ks - 1))
        args = ((n, c, h, w), k, 1, (ks, ks), (1, 1), (pad, pad), (dil, dil), oh, ow, 4)
        assert convgemm.row_tiles(*args) and convgemm.row_skip(*args)
    assert not convgemm.row_skip((2, 64, 56, 56), 64, 1, (3, 3), (1, 1), (1, 1), (1, 1), 56, 56, 4)
    assert not convgemm.row_skip((2, 1, 28, 28), 16, 1, (5, 5), (1, 1), (2, 2), (1, 1), 28, 28, 4)
