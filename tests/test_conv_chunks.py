"""Session 14's convolution paths against PyTorch (float64 references): the pixel-major
forward with its taps summed in L1-sized chunks over groups of output rows, one channel
vector in several blocks where two vectors' tile heights do not fit a row (OW = 16), the
vector transpose of the output grad in the tap-major weight gradient, and the Winograd
gather's zero-padded strips for edge tiles. Odd sizes, rows that read only padding,
float32 and float64, offset views, 1 and 2 threads."""
import numpy as np
import pytest

import mininet
from mininet import ops
from mininet.autograd import Tensor
from mininet_ext import _isa, convgemm
from mininet_ext.buffer import Buffer
from conftest import torch

wg = _isa.variant("winograd")   # as built for this process's kernel set

F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(14)


@pytest.fixture(autouse=True)
def fused_kernels_on_small_maps(monkeypatch):
    """The fused kernels for every map here (the small ones would take im2col)."""
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)


@pytest.fixture(params=[1, 2])
def threads(request):
    old = mininet.get_num_threads()
    mininet.set_num_threads(request.param)
    yield request.param
    mininet.set_num_threads(old)


def conv_all_grads(x, w, b, pad, dil, dtype):
    """mininet's forward and its three gradients for sum(conv(x) * g), and PyTorch's in
    float64 (any kh x kw); x is given one image too many and used from image 1 (an
    offset view)."""
    oh = x.shape[2] + 2 * pad - dil * (w.shape[2] - 1)
    ow = x.shape[3] + 2 * pad - dil * (w.shape[3] - 1)
    g = rng.standard_normal((x.shape[0] - 1, w.shape[0], oh, ow))
    mx, mw, mb = (Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in (x, w, b))
    y = ops.conv(mx[1:], mw, mb, padding=pad, dilation=dil)
    y.backward(Tensor(g.astype(dtype), dtype=dtype))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x[1:], w, b))
    ty = F.conv2d(tx, tw, tb, padding=pad, dilation=dil)
    (ty * torch.tensor(g)).sum().backward()
    got = (y.numpy(), mx.grad.numpy()[1:], mw.grad.numpy(), mb.grad.numpy())
    return got, tuple(a.detach().numpy() for a in (ty, tx.grad, tw.grad, tb.grad))


def check(got, ref, dtype):
    for a, r in zip(got, ref):
        scale = max(np.abs(r).max(), 1.0)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(a / scale, r / scale, rtol=0, atol=tol)


# (N, C, H, W, K, k, pad, dilation), stride 1: 1000 taps (several chunks of the pixel-major
# forward, and of its input gradient), kernel rows on vertical padding skipped across chunk
# ends, two output rows reading only padding, a 13-wide output in 14-pixel tiles (the
# tile's row longer than the output's) over several row groups, OW = 16 with 32 and 33
# channels (one vector in two and three blocks), 20 channels (the weight gradient's
# transposed output grad padded to the vector)
CHUNK_CASES = [(2, 40, 14, 14, 16, 5, 2, 1), (1, 70, 2, 8, 16, 3, 4, 1),
               (2, 30, 40, 13, 16, 3, 1, 1), (2, 5, 16, 16, 32, 3, 1, 1),
               (2, 3, 16, 16, 33, 3, 1, 1), (2, 7, 14, 14, 20, 5, 2, 1),
               (2, 24, 14, 14, 32, 5, 2, 1)]


@pytest.mark.torch
@pytest.mark.parametrize("case", CHUNK_CASES, ids=[str(c) for c in CHUNK_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_major_paths_match_torch(case, dtype, threads):
    n, c, h, w, k, ks, pad, dil = case
    x = rng.standard_normal((n + 1, c, h, w))
    wt = rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)
    b = rng.standard_normal(k)
    got, ref = conv_all_grads(x, wt, b, pad, dil, dtype)
    check(got, ref, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("blocks", [(64, 64), (4096, 1), (1 << 20, 1 << 20)],
                         ids=["one-run-chunks-one-row-groups", "one-row-groups", "one-chunk"])
@pytest.mark.parametrize("case", [CHUNK_CASES[0], CHUNK_CASES[2], CHUNK_CASES[6]],
                         ids=[str(c) for c in (CHUNK_CASES[0], CHUNK_CASES[2], CHUNK_CASES[6])])
def test_pixel_major_paths_at_any_tab_blocking(case, blocks, threads):
    """forward_rows' chunk and row-group sizes (convgemm.tab_blocking) change only the
    order of work: the smallest (a chunk of one run of taps, a group of one row) and one
    chunk of all taps give PyTorch's results, as the defaults do (the test above); the
    forward and the input gradient run forward_rows."""
    before = convgemm.tab_blocking()
    n, c, h, w, k, ks, pad, dil = case
    x = rng.standard_normal((n + 1, c, h, w))
    wt = rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)
    b = rng.standard_normal(k)
    try:
        assert convgemm.tab_blocking(*blocks) == {"chunk_bytes": blocks[0], "group_bytes": blocks[1]}
        got, ref = conv_all_grads(x, wt, b, pad, dil, np.float32)
    finally:
        convgemm.tab_blocking(before["chunk_bytes"], before["group_bytes"])
    check(got, ref, np.float32)


@pytest.mark.parametrize("bad", [(0, None), (None, -4), (1 << 31, None)])
def test_tab_blocking_refuses_sizes_out_of_range(bad):
    before = convgemm.tab_blocking()
    with pytest.raises(ValueError, match="tab_blocking: (chunk|group)_bytes must be 1 to"):
        convgemm.tab_blocking(*bad)
    assert convgemm.tab_blocking() == before


@pytest.mark.parametrize("bad", [4096.5, "4096", True])
def test_tab_blocking_refuses_sizes_that_are_not_ints(bad):
    before = convgemm.tab_blocking()
    with pytest.raises(TypeError, match="tab_blocking: chunk_bytes must be an int"):
        convgemm.tab_blocking(bad, 4096)
    assert convgemm.tab_blocking() == before


def test_tab_blocking_takes_numpy_ints():
    before = convgemm.tab_blocking()
    try:
        assert convgemm.tab_blocking(np.int64(8192), np.int32(6144)) == {
            "chunk_bytes": 8192, "group_bytes": 6144}
    finally:
        convgemm.tab_blocking(before["chunk_bytes"], before["group_bytes"])


def test_chunk_cases_take_the_pixel_major_path():
    """The cases above run forward_rows (and OW = 16 with 32 channels does since one
    vector's 16-pixel tile fits it, with AVX-512)."""
    for n, c, h, w, k, ks, pad, dil in CHUNK_CASES[:3] + CHUNK_CASES[5:]:
        oh, ow = h + 2 * pad - dil * (ks - 1), w + 2 * pad - dil * (ks - 1)
        assert convgemm.row_tiles((n, c, h, w), k, 1, (ks, ks), (1, 1), (pad, pad),
                                  (dil, dil), oh, ow, 4)
    from mininet_ext import _isa
    if _isa.active().startswith("avx512"):
        assert convgemm.row_tiles((2, 5, 16, 16), 32, 1, (3, 3), (1, 1), (1, 1), (1, 1),
                                  16, 16, 4) == 16


def direct(x, w, pad):
    """float64 reference: the 3x3 convolution tap by tap."""
    n, c, h, wd = x.shape
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    y = np.zeros((n, w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow],
                           w[:, :, i, j].astype(np.float64))
    return y


# (H, W, padding): every tile on an edge (8x8), 12 of 16 (16x16), odd sizes, padding 2 and
# 0, a map whose padded strip is wider than WINO_STRIP (the bounded copy)
WINO_CASES = [(8, 8, (1, 1)), (16, 16, (1, 1)), (13, 11, (1, 1)), (9, 14, (2, 2)),
              (10, 7, (0, 0)), (6, 270, (1, 1)), (5, 9, (2, 0))]


@pytest.mark.parametrize("case", WINO_CASES, ids=[str(c) for c in WINO_CASES])
def test_winograd_edge_tiles_match_direct(case, threads):
    h, wd, pad = case
    dtype = np.float32   # Winograd is float32 only
    x = rng.standard_normal((3, 33, h, wd)).astype(dtype)
    w = (rng.standard_normal((35, 33, 3, 3)) / 10).astype(dtype)
    out = np.full((3, 35, h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2), np.nan, dtype)
    wg.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), x.shape, 35,
               pad, x.dtype.itemsize)
    ref = direct(x, w, pad)
    assert np.abs(out - ref).max() <= 3e-5 * np.abs(ref).max()


# (N, C, H, W, K, kernel, stride, pad): the pixel-major forward and its input gradient
# (MNIST's second layer), the implicit GEMM's image path (strided, 7x7 / 4) and its
# scatter input gradient, N not a multiple of the chunk (37 images)
DYNAMIC_CASES = [(37, 16, 14, 14, 32, 5, 1, 2), (37, 3, 32, 32, 16, 7, 4, 3),
                 (37, 8, 9, 11, 12, 3, 2, 1)]


@pytest.mark.parametrize("case", DYNAMIC_CASES, ids=[str(c) for c in DYNAMIC_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dynamic_image_chunks_same_bits_at_any_thread_count(case, dtype):
    """The implicit GEMM's forward and input gradient hand out chunks of images to the
    threads as they come free (convgemm.chunk_images): the output must not depend on
    which thread took a chunk, so 1 and 2 threads give the same bits, and torch's
    float64 values. The weight gradient sums a partial dw per chunk, in chunk order:
    two runs on 2 threads give the same bits, and torch's values."""
    from mininet.backend.cpu import cpu
    from mininet.ndarray import NDArray
    n, c, h, wd, k, ks, s, p = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = (rng.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)).astype(dtype)
    oh, ow = (h + 2 * p - ks) // s + 1, (wd + 2 * p - ks) // s + 1
    g = rng.standard_normal((n, k, oh, ow)).astype(dtype)
    dev = cpu()
    X, W, G = (NDArray(a, device=dev) for a in (x, w, g))
    outs = []
    old = mininet.get_num_threads()
    try:
        for t in (1, 2):
            mininet.set_num_threads(t)
            y = NDArray(np.zeros((n, k, oh, ow), dtype), device=dev)
            dx = NDArray(np.zeros(x.shape, dtype), device=dev)
            from mininet_ext import convgemm as cg
            cg.forward(X.handle, X.offset, W.handle, W.offset, None, 0, y.handle, x.shape, k,
                       1, (ks, ks), (s, s), (p, p), (1, 1), oh, ow, x.itemsize)
            cg.input_grad(G.handle, G.offset, W.handle, W.offset, dx.handle, x.shape, k, 1,
                          (ks, ks), (s, s), (p, p), (1, 1), oh, ow, x.itemsize)
            outs.append((y.numpy(), dx.numpy()))
        dws = []
        for t in (1, 2, 2):
            mininet.set_num_threads(t)
            dw = NDArray(np.zeros(w.shape, dtype), device=dev)
            cg.weight_grad(G.handle, G.offset, X.handle, X.offset, dw.handle, x.shape, k, 1,
                           (ks, ks), (s, s), (p, p), (1, 1), oh, ow, x.itemsize)
            dws.append(dw.numpy())
    finally:
        mininet.set_num_threads(old)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
    assert np.array_equal(dws[1], dws[2])
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    tw = torch.tensor(w.astype(np.float64), requires_grad=True)
    ty = F.conv2d(tx, tw, stride=s, padding=p)
    ty.backward(torch.tensor(g.astype(np.float64)))
    check(outs[0] + (dws[0], dws[1]), (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(),
                                       tw.grad.numpy()), dtype)
