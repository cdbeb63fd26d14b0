"""Small-map convolutions: the phased implicit GEMM's copy through its phase tables
(mininet_ext/_phase.h) and Winograd on maps where every tile touches the padding (its
whole-panel zero fill and constant-height filter transform, mininet_ext/_winograd_t.h),
against PyTorch in float64."""
import numpy as np
import pytest

from mininet.backend.cpu import _winograd_fits, cpu
from mininet.ndarray import NDArray

torch = pytest.importorskip("torch")
F = torch.nn.functional
rng = np.random.default_rng(12)
dev = cpu()

# n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw)
PHASED = [
    (2, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3)),    # ResNet9's first layer
    (3, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1)),
    (2, 2, 10, 10, 3, (3, 3), (4, 4), (0, 0)),     # rows and columns 7..9 read by no output
    (2, 3, 11, 7, 5, (2, 3), (3, 2), (1, 0)),      # odd sizes, unequal strides
    (1, 1, 5, 9, 2, (1, 1), (2, 3), (0, 0)),       # 1x1, most pixels unread
    (2, 4, 6, 6, 4, (3, 3), (2, 2), (2, 2)),       # padding wider than a phase step
]

# n, c, h, w, k, ksize, pad: 3x3 Winograd, 32+ channels
WINO = [
    (3, 32, 4, 4, 32, 3, 1),      # ResNet9: one 4x4 tile an image, all edge tiles
    (2, 40, 8, 8, 33, 3, 1),      # 33 filters: a 12-row panel with 3 padding rows
    (5, 32, 2, 2, 40, 3, 1),      # 40 filters: 8-row panels; tiles past the last
    (1, 33, 7, 5, 36, 3, 0),      # no padding: some inside tiles, some edge ones
    (2, 32, 9, 9, 32, 3, 2),
]


def _tol(dtype, r):
    if dtype == np.float32:
        return dict(rtol=2e-4, atol=3e-6 * r)
    return dict(rtol=1e-10, atol=1e-12 * r)


def _check_all(x, w, b, stride, pad, dtype):
    """Forward, input and weight gradients on the device against torch (float64)."""
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    gy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    geometry = (stride, pad, (1, 1), 1)
    out = NDArray.make(tuple(ty.shape), dtype=np.dtype(dtype))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, *geometry)
    dx = NDArray.make(x.shape, dtype=np.dtype(dtype))
    dw = NDArray.make(w.shape, dtype=np.dtype(dtype))
    dev.conv2d_grad_input(NDArray(gy), NDArray(w), dx, *geometry)
    dev.conv2d_grad_weight(NDArray(gy), NDArray(x), dw, *geometry)
    r = w[0].size
    np.testing.assert_allclose(out.numpy(), ty.detach().numpy(), **_tol(dtype, r))
    np.testing.assert_allclose(dx.numpy(), tx.grad.numpy(), **_tol(dtype, w.shape[0] * r))
    np.testing.assert_allclose(dw.numpy(), tw.grad.numpy(), **_tol(dtype, gy[:, 0].size))
    return dx.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PHASED, ids=[str(c) for c in PHASED])
def test_phased_copy_and_its_adjoint(case, dtype):
    n, c, h, w, k, ks, s, p = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c) + ks).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    dx = _check_all(x, wt, b, s, p, dtype)
    if case[2] == 10:    # the pixels no output reads get an exact zero gradient
        assert not dx[:, :, 7:, :].any() and not dx[:, :, :, 7:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINO, ids=[str(c) for c in WINO])
def test_winograd_small_maps(case, dtype):
    n, c, h, w, k, ks, p = case
    assert _winograd_fits((k, c, ks, ks), (1, 1), (p, p), (1, 1), 1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, ks, ks)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    _check_all(x, wt, b, (1, 1), (p, p), dtype)


def test_winograd_reads_a_view_with_an_offset():
    """A compact view that does not start at 0 (x[1:]) and a zero-size batch."""
    x = rng.standard_normal((3, 32, 4, 4))
    wt, b = rng.standard_normal((32, 32, 3, 3)), rng.standard_normal(32)
    view = NDArray(x)[1:]
    out = NDArray.make((2, 32, 4, 4), dtype=np.dtype(np.float64))
    dev.conv2d(view, NDArray(wt), NDArray(b), out, (1, 1), (1, 1), (1, 1), 1)
    want = F.conv2d(*(torch.tensor(a) for a in (x[1:], wt, b)), padding=1).numpy()
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-10)
    empty = NDArray.make((0, 32, 4, 4), dtype=np.dtype(np.float64))
    dev.conv2d(NDArray(x[:0]), NDArray(wt), NDArray(b), empty, (1, 1), (1, 1), (1, 1), 1)


# Forward panels that span images (convgemm.forward_images): an image's padded-row pixels
# (OH rows of Wp) do not fill whole 32-wide panels, so a panel goes on in the next image.
# n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw), groups
SPANNING = [
    (5, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3), 1),    # 72 pixels an image: 2.25 panels
    (7, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1), 1),     # 20 pixels: panels over 2 images
    (6, 3, 4, 4, 4, (3, 3), (2, 2), (1, 1), 1),       # 6 pixels: an image inside a panel
    (3, 4, 9, 13, 5, (3, 3), (1, 1), (1, 1), 1),      # stride 1, odd sizes
    (4, 2, 3, 3, 3, (3, 3), (1, 1), (1, 1), 1),       # stride 1, 12 pixels an image
    (5, 4, 6, 7, 6, (3, 3), (2, 2), (1, 1), 2),       # two groups
    (1, 3, 8, 8, 8, (3, 3), (2, 2), (1, 1), 1),       # one image: nothing to span
]


def _forward(x, wt, b, stride, pad, groups):
    """convgemm.forward itself (the device may pick other kernels for a shape)."""
    from mininet_ext import convgemm
    n, c, h, w = x.shape
    k, _, kh, kw = wt.shape
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    X, W, B = NDArray(x), NDArray(wt), NDArray(b)
    out = NDArray.make((n, k, oh, ow), dtype=x.dtype)
    convgemm.forward(X.handle, X.offset, W.handle, W.offset, B.handle, B.offset, out.handle,
                     x.shape, k, groups, (kh, kw), stride, pad, (1, 1), oh, ow,
                     x.dtype.itemsize)
    return out.numpy()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SPANNING, ids=[str(c) for c in SPANNING])
def test_forward_panels_span_images(case, dtype, threads):
    import mininet
    n, c, h, w, k, ks, s, p, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups) + ks).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    want = F.conv2d(*(torch.tensor(a, dtype=torch.float64) for a in (x, wt, b)), stride=s,
                    padding=p, groups=groups).numpy()
    before = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        got = _forward(x, wt, b, s, p, groups)
    finally:
        mininet.set_num_threads(before)
    np.testing.assert_allclose(got, want, **_tol(dtype, wt[0].size))


# The vector deal into stride phases (_phase.h, float, column strides 2 and 4): widths
# around its 16-lane loads and every padding a phase step allows.
@pytest.mark.parametrize("sw", [2, 4])
@pytest.mark.parametrize("w", [5, 8, 16, 17, 33, 40])
@pytest.mark.parametrize("pw", [0, 1, 2, 3])
def test_phase_deal_widths(sw, w, pw):
    x = rng.standard_normal((2, 2, 5, w)).astype(np.float32)
    wt = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    want = F.conv2d(*(torch.tensor(a, dtype=torch.float64) for a in (x, wt, b)),
                    stride=(2, sw), padding=(1, pw)).numpy()
    got = _forward(x, wt, b, (2, sw), (1, pw), 1)
    np.testing.assert_allclose(got, want, **_tol(np.float32, wt[0].size))
