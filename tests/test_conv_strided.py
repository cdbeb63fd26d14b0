"""Strided convolutions on the implicit GEMM's phased path (mininet_ext/convgemm.pyx,
plan_phases) and the fused ReLU epilogue of the forward, against PyTorch in float64."""
import importlib

import numpy as np
import pytest

from mininet import Tensor, ops
from mininet.backend.cpu import CPUDevice, _phases_fit, cpu
from mininet.ndarray import NDArray

torch = pytest.importorskip("torch")
F = torch.nn.functional
conv_ops = importlib.import_module("mininet.ops.conv")
convgemm = importlib.import_module("mininet_ext.convgemm")
rng = np.random.default_rng(25)
dev = cpu()

# n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups
STRIDED = [
    (3, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3), (1, 1), 1),     # ResNet9's first layer
    (2, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 32, 4, 4, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 8, 2, 2, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 5, 9, 11, 7, (3, 2), (2, 3), (1, 0), (1, 1), 1),       # odd sizes, unequal strides
    (2, 4, 13, 10, 6, (3, 3), (3, 2), (2, 1), (2, 1), 2),      # dilation and groups
    (1, 3, 7, 7, 5, (1, 1), (2, 2), (0, 0), (1, 1), 1),        # a 1x1 downsampling conv
    (2, 6, 11, 9, 4, (5, 3), (2, 2), (2, 1), (1, 2), 2),
    (2, 3, 17, 17, 40, (4, 4), (5, 5), (0, 2), (1, 1), 1),     # stride above the kernel
    (0, 3, 8, 8, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),        # an empty batch
]


def _arrays(case, dtype):
    n, c, h, w, k, ks, _, _, _, g = case
    return (rng.standard_normal((n, c, h, w)).astype(dtype),
            rng.standard_normal((k, c // g) + ks).astype(dtype),
            rng.standard_normal(k).astype(dtype))


def _torch_conv(x, w, b, case):
    _, _, _, _, _, _, s, p, d, g = case
    return F.conv2d(*(torch.tensor(a, dtype=torch.float64) for a in (x, w, b)), stride=s,
                    padding=p, dilation=d, groups=g)


def _tol(dtype, r):
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=3e-6 * r)
    return dict(rtol=1e-10, atol=1e-12 * r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", STRIDED, ids=[str(c[:9]) for c in STRIDED])
def test_phased_kernels_match_torch(case, dtype):
    x, w, b = _arrays(case, dtype)
    geometry = case[6:]
    want = _torch_conv(x, w, b, case)
    out = NDArray.make(tuple(want.shape), dtype=np.dtype(dtype))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, *geometry)
    r = w[0].size
    np.testing.assert_allclose(out.numpy(), want.numpy(), **_tol(dtype, r))

    gy = rng.standard_normal(tuple(want.shape)).astype(dtype)
    tx, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    F.conv2d(tx, tw, None, *geometry).backward(torch.tensor(gy, dtype=torch.float64))
    dx = NDArray.make(x.shape, dtype=np.dtype(dtype))
    dw = NDArray.make(w.shape, dtype=np.dtype(dtype))
    dev.conv2d_grad_input(NDArray(gy), NDArray(w), dx, *geometry)
    dev.conv2d_grad_weight(NDArray(gy), NDArray(x), dw, *geometry)
    np.testing.assert_allclose(dx.numpy(), tx.grad.numpy(), **_tol(dtype, w.shape[0] * r))
    np.testing.assert_allclose(dw.numpy(), tw.grad.numpy(), **_tol(dtype, gy[:, 0].size))


def test_phases_run_the_small_strided_layers_worth_it():
    # ResNet9: 7x7 stride 4 at 32x32 (8x8 out), 3x3 stride 2 at 8x8 (4x4 out) fused;
    # 4x4 -> 2x2 and 2x2 -> 1x1 fill a 32-pixel panel by 4 and 1: im2col
    assert _phases_fit((16, 3, 7, 7), (4, 4), (1, 1), (8, 8))
    assert _phases_fit((32, 16, 3, 3), (2, 2), (1, 1), (4, 4))
    assert not _phases_fit((64, 32, 3, 3), (2, 2), (1, 1), (2, 2))
    assert not _phases_fit((128, 64, 3, 3), (2, 2), (1, 1), (1, 1))
    assert not _phases_fit((32, 32, 3, 3), (1, 1), (1, 1), (4, 4))   # stride 1: not phased
    p = conv_ops.ConvParams(4, 3)
    assert conv_ops._fused(dev, 8, 8, (16, 3, 7, 7), p)


@pytest.mark.parametrize("shape", [(3, 3, 32, 32, 16, 7, 4, 3), (4, 16, 8, 8, 32, 3, 2, 1),
                                   (4, 32, 4, 4, 64, 3, 2, 1), (4, 64, 2, 2, 128, 3, 2, 1)])
def test_resnet9_strided_layers_through_the_op(shape):
    """Forward and both gradients through ops.conv (phased or im2col, as routed), on a
    non-contiguous input, against torch in float64."""
    n, c, h, w, k, ks, s, p = shape
    wide = rng.standard_normal((n, h, w, c))
    xv = Tensor(wide, requires_grad=True)
    x = xv.permute((0, 3, 1, 2))
    wt, b = rng.standard_normal((k, c, ks, ks)), rng.standard_normal(k)
    mw, mb = Tensor(wt, requires_grad=True), Tensor(b, requires_grad=True)
    y = ops.conv(x, mw, mb, stride=s, padding=p)
    gy = rng.standard_normal(y.shape)
    y.backward(Tensor(gy))
    tx = torch.tensor(wide, requires_grad=True)
    tw, tb = (torch.tensor(a, requires_grad=True) for a in (wt, b))
    ty = F.conv2d(tx.permute(0, 3, 1, 2), tw, tb, stride=s, padding=p)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, want in ((xv, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(got.grad.numpy(), want.grad.numpy(), rtol=1e-10, atol=1e-10)


# the fused ReLU epilogue -------------------------------------------------------------------
RELU = [
    (2, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3), (1, 1), 1),     # phased panels
    (2, 5, 9, 11, 7, (3, 2), (2, 3), (1, 0), (1, 1), 1),
    (2, 16, 14, 14, 32, (5, 5), (1, 1), (2, 2), (1, 1), 1),    # pixel-major tiles
    (2, 3, 13, 9, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),       # stride-1 panels
    (2, 32, 9, 7, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # Winograd
    (2, 4, 7, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2),        # groups
    (0, 3, 8, 8, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", RELU, ids=[str(c[:9]) for c in RELU])
def test_conv2d_relu_epilogue_matches_relu_of_torch(case, dtype):
    x, w, b = _arrays(case, dtype)
    want = F.relu(_torch_conv(x, w, b, case)).numpy()
    out = NDArray.make(want.shape, dtype=np.dtype(dtype))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, *case[6:], relu=True)
    np.testing.assert_allclose(out.numpy(), want, **_tol(dtype, w[0].size))
    if want.size:
        assert (out.numpy() == 0).mean() > 0.2      # the ReLU did clip


@pytest.mark.parametrize("fused", [True, False])
def test_conv_forward_relu_on_both_paths(fused, monkeypatch):
    """The NDArray-level forward with relu: the fused kernels, or im2col + GEMM + to_nchw."""
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0 if fused else 10 ** 9)
    case = (3, 6, 10, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    x, w, b = _arrays(case, np.float64)
    p = conv_ops.ConvParams(1, 1)
    out, col = conv_ops.conv_forward(NDArray(x), NDArray(w), NDArray(b), p, relu=True)
    assert (col is None) == fused
    np.testing.assert_allclose(out.numpy(), F.relu(_torch_conv(x, w, b, case)).numpy(),
                               rtol=1e-10, atol=1e-12)


def test_phased_kernel_rejects_a_wrong_output_shape():
    x, w, b = _arrays(STRIDED[1], np.float32)
    out = NDArray.make((2, 32, 5, 4), dtype=np.dtype(np.float32))    # 4x4 is right
    with pytest.raises(ValueError, match="output"):
        dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, (2, 2), (1, 1), (1, 1), 1)


# Stride-1 layers on the pixel-major path (convgemm_rows.pxi, forward_rows): its tiles are
# transposed into NCHW a span of up to TAB_SPAN pixels at a time. Rows of one span (32: the
# RGB layer), of a full span and a part (70, 66, 130), output channels that are not a
# multiple of the vectors (20, 40), with and without bias and relu.
PIXEL_MAJOR = [
    (2, 3, 32, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # the RGB layer's geometry
    (2, 3, 6, 70, 20, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 5, 66, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 2, 4, 130, 16, (5, 5), (1, 1), (2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PIXEL_MAJOR, ids=[str(c[:9]) for c in PIXEL_MAJOR])
def test_pixel_major_spans_match_torch(case, dtype, bias, relu):
    x, w, b = _arrays(case, dtype)
    b = b if bias else np.zeros_like(b)
    want = _torch_conv(x, w, b, case)
    want = (F.relu(want) if relu else want).numpy()
    n, c, h, wd, k, ks, _, pad, _, _ = case
    oh, ow = h + 2 * pad[0] - ks[0] + 1, wd + 2 * pad[1] - ks[1] + 1
    assert convgemm.row_tiles((n, c, h, wd), k, 1, ks, (1, 1), pad, (1, 1), oh, ow,
                             np.dtype(dtype).itemsize)     # the path under test
    out = NDArray(np.full(want.shape, np.nan, dtype))    # every output is written
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b) if bias else None, out, *case[6:], relu=relu)
    np.testing.assert_allclose(out.numpy(), want, **_tol(dtype, w[0].size))
