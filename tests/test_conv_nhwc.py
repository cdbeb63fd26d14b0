"""Channels-last (NHWC) convolution (mininet_ext/conv_nhwc.pyx, CPUDevice.conv2d_nhwc*)
against PyTorch's NCHW convolution on permuted tensors, references in float64."""
import importlib

import numpy as np
import pytest

from mininet.backend.cpu import cpu
from mininet.ndarray import NDArray
from mininet_ext import _isa

torch = pytest.importorskip("torch")
F = torch.nn.functional
nhwc = _isa.variant("conv_nhwc")   # as built for this process's kernel set
rng = np.random.default_rng(12)
dev = cpu()

# n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw), (dh, dw)
CASES = [
    (2, 3, 7, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1), (1, 1)),       # ResNet9-like, stride 2
    (3, 5, 9, 11, 7, (3, 2), (2, 3), (1, 0), (1, 1)),        # odd sizes, unequal strides
    (2, 33, 6, 5, 70, (1, 1), (1, 1), (0, 0), (1, 1)),       # 1x1: a plain GEMM
    (2, 7, 9, 9, 3, (1, 1), (2, 2), (0, 0), (1, 1)),         # 1x1 downsampling
    (2, 6, 11, 9, 19, (5, 5), (1, 1), (2, 2), (1, 1)),       # 5x5
    (2, 6, 11, 9, 4, (5, 3), (2, 2), (2, 1), (1, 2)),        # dilation
    (3, 64, 2, 2, 40, (3, 3), (2, 2), (1, 1), (1, 1)),       # 2x2 map: tiles span images
    (5, 24, 1, 1, 36, (3, 3), (1, 1), (1, 1), (1, 1)),       # 1x1 map: only the centre tap
    (2, 3, 17, 17, 40, (4, 4), (5, 5), (0, 2), (1, 1)),      # stride above the kernel
    (1, 2, 3, 3, 2, (3, 3), (1, 1), (3, 3), (1, 1)),         # padding wider than the kernel
]
IDS = [str(c) for c in CASES]


def _tol(dtype, r):
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=3e-6 * r)
    return dict(rtol=1e-10, atol=1e-12 * r)


def _torch(x, w, b, case):
    """y, and a function of the output grad returning (dx, dw, db), all NHWC / (kh, kw, C, K)."""
    s, p, d = case[6:]
    xt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    wt = torch.tensor(w, dtype=torch.float64).permute(3, 2, 0, 1).requires_grad_()
    bt = torch.tensor(b, dtype=torch.float64).requires_grad_()
    y = F.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d)

    def grads(g):
        y.backward(torch.tensor(g, dtype=torch.float64).permute(0, 3, 1, 2))
        return (xt.grad.permute(0, 2, 3, 1).numpy(), wt.grad.permute(2, 3, 1, 0).numpy(),
                bt.grad.numpy())
    return y.detach().permute(0, 2, 3, 1).numpy(), grads


def _arrays(case, dtype):
    n, c, h, w, k, (kh, kw) = case[:6]
    return (rng.standard_normal((n, h, w, c)).astype(dtype),
            rng.standard_normal((kh, kw, c, k)).astype(dtype),
            rng.standard_normal(k).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_torch(case, dtype):
    x, w, b = _arrays(case, dtype)
    s, p, d = case[6:]
    want, grads = _torch(x, w, b, case)
    shape = dev.conv2d_nhwc_shape(x.shape, w.shape, s, p, d)
    assert shape == want.shape
    r = w.shape[0] * w.shape[1] * w.shape[2]
    out = NDArray.make(shape, dtype=np.dtype(dtype))
    dev.conv2d_nhwc(NDArray(x), NDArray(w), NDArray(b), out, s, p, d)
    np.testing.assert_allclose(out.numpy(), want, **_tol(dtype, r))

    g = rng.standard_normal(shape).astype(dtype)
    dx_want, dw_want, db_want = grads(g)
    dx = NDArray.make(x.shape, dtype=np.dtype(dtype))
    dw = NDArray.make(w.shape, dtype=np.dtype(dtype))
    db = NDArray.make(b.shape, dtype=np.dtype(dtype))
    dev.conv2d_nhwc_grad_input(NDArray(g), NDArray(w), dx, s, p, d)
    dev.conv2d_nhwc_grad_weight(NDArray(g), NDArray(x), dw, s, p, d)
    dev.conv2d_nhwc_grad_bias(NDArray(g), db)
    np.testing.assert_allclose(dx.numpy(), dx_want, **_tol(dtype, w.shape[0] * w.shape[1] * w.shape[3]))
    np.testing.assert_allclose(dw.numpy(), dw_want, **_tol(dtype, g.size // g.shape[3]))
    np.testing.assert_allclose(db.numpy(), db_want, **_tol(dtype, g.size // g.shape[3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_epilogue_and_no_bias(dtype):
    case = CASES[1]
    x, w, b = _arrays(case, dtype)
    want, _ = _torch(x, w, np.zeros_like(b), case)
    out = NDArray.make(want.shape, dtype=np.dtype(dtype))
    dev.conv2d_nhwc(NDArray(x), NDArray(w), None, out, *case[6:], relu=True)
    np.testing.assert_allclose(out.numpy(), np.maximum(want, 0), **_tol(dtype, 144))
    assert (out.numpy() >= 0).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_reads_nchw_input(case):
    """x_nchw: the float32 forward reads x as (N, C, H, W), channels a map apart, and
    matches PyTorch's float64 result; float64 is refused by name."""
    from mininet_ext.buffer import Buffer
    x, w, b = _arrays(case, np.float32)
    want, _ = _torch(x, w, b, case)
    y = np.full(want.shape, np.nan, np.float32)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    nhwc.forward(Buffer.wrap(x_nchw), 0, Buffer.wrap(w), 0, Buffer.wrap(b), 0,
                 Buffer.wrap(y), 0, x.shape, w.shape, *case[6:], 4, x_nchw=True)
    np.testing.assert_allclose(y, want, **_tol(np.float32, w.shape[0] * w.shape[1] * w.shape[2]))
    with pytest.raises(ValueError, match="NCHW input .* float32 only"):
        nhwc.forward(Buffer.wrap(x_nchw.astype(np.float64)), 0, Buffer.wrap(w.astype(np.float64)),
                     0, None, 0, Buffer.wrap(y.astype(np.float64)), 0, x.shape, w.shape,
                     *case[6:], 8, x_nchw=True)


def test_zero_size_batch_and_channels():
    for n, c, k in ((0, 3, 4), (2, 0, 4), (2, 3, 0)):
        x = np.zeros((n, 5, 5, c), np.float32)
        w = rng.standard_normal((3, 3, c, k)).astype(np.float32)
        b = np.ones(k, np.float32)
        shape = dev.conv2d_nhwc_shape(x.shape, w.shape, 1, 1)
        out = NDArray.make(shape, dtype=np.dtype("float32"))
        dev.conv2d_nhwc(NDArray(x), NDArray(w), NDArray(b), out, 1, 1)
        assert out.shape == (n, 5, 5, k)
        np.testing.assert_array_equal(out.numpy(), np.ones(shape, np.float32))   # bias only
        g = np.ones(shape, np.float32)
        dx = NDArray.make(x.shape, dtype=np.dtype("float32"))
        dw = NDArray.make(w.shape, dtype=np.dtype("float32"))
        dev.conv2d_nhwc_grad_input(NDArray(g), NDArray(w), dx, 1, 1)
        dev.conv2d_nhwc_grad_weight(NDArray(g), NDArray(x), dw, 1, 1)
        np.testing.assert_array_equal(dx.numpy(), 0)
        np.testing.assert_array_equal(dw.numpy(), 0)


def test_non_contiguous_and_offset_inputs():
    """A channels-last view of an NCHW array, a weight view from another layout, and arrays
    that start past their buffer's first element."""
    case = CASES[2]
    x, w, b = _arrays(case, np.float64)
    want, grads = _torch(x, w, b, case)
    xv = NDArray(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).permute(0, 2, 3, 1)
    wv = NDArray(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).permute(2, 3, 1, 0)
    assert not xv.is_compact() and not wv.is_compact()
    bv = NDArray(np.concatenate([[7.0], b]))[1:]
    out = NDArray.make(want.shape, dtype=np.dtype("float64"))
    dev.conv2d_nhwc(xv, wv, bv, out, *case[6:])
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-11)

    g = rng.standard_normal(want.shape)
    dx_want, dw_want, _ = grads(g)
    gv = NDArray(np.concatenate([np.zeros((1,) + g.shape[1:]), g]))[1:]
    big = NDArray.make((2 * x.size,), dtype=np.dtype("float64"))
    dx = big[x.size:].reshape(*x.shape)      # a compact output that starts at an offset
    dev.conv2d_nhwc_grad_input(gv, wv, dx, *case[6:])
    np.testing.assert_allclose(dx.numpy(), dx_want, rtol=1e-10, atol=1e-11)
    dw = NDArray.make(w.shape, dtype=np.dtype("float64"))
    dev.conv2d_nhwc_grad_weight(gv, xv, dw, *case[6:])
    np.testing.assert_allclose(dw.numpy(), dw_want, rtol=1e-10, atol=1e-10)


def test_one_by_one_is_a_gemm():
    x = rng.standard_normal((3, 4, 5, 24)).astype(np.float32)
    w = rng.standard_normal((1, 1, 24, 40)).astype(np.float32)
    out = NDArray.make((3, 4, 5, 40), dtype=np.dtype("float32"))
    dev.conv2d_nhwc(NDArray(x), NDArray(w), None, out)
    want = x.reshape(-1, 24).astype(np.float64) @ w.reshape(24, 40)
    np.testing.assert_allclose(out.numpy().reshape(-1, 40), want, rtol=1e-4, atol=1e-4)


def _f32(*shape):
    return NDArray(rng.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("args, match", [
    ((_f32(2, 5, 5), _f32(3, 3, 5, 4)), r"input \(N, H, W, C\) must have 4 dimensions"),
    ((_f32(2, 5, 5, 3), _f32(3, 5, 4)), r"weight \(kh, kw, C, K\) must have 4 dimensions"),
    ((_f32(2, 5, 5, 3), _f32(3, 3, 4, 4)), "input has 3 channels .* expects 4"),
    ((_f32(1, 2, 2, 3), _f32(5, 5, 3, 4)), "larger than the padded input"),
])
def test_bad_shapes_are_named(args, match):
    out = NDArray.make((2, 3, 3, 4), dtype=np.dtype("float32"))
    with pytest.raises(ValueError, match=match):
        dev.conv2d_nhwc(*args, None, out)


def test_bad_dtypes_and_sizes_are_named():
    x, w = _f32(2, 5, 5, 3), _f32(3, 3, 3, 4)
    out = NDArray.make((2, 3, 3, 4), dtype=np.dtype("float32"))
    with pytest.raises(TypeError, match="share one dtype"):
        dev.conv2d_nhwc(x, w.astype("float64"), None, out)
    with pytest.raises(TypeError, match="float32 or float64"):
        dev.conv2d_nhwc(x.astype("int64"), w, None, out)
    with pytest.raises(ValueError, match=r"output \(N, OH, OW, K\) has shape \(2, 2, 2, 4\)"):
        dev.conv2d_nhwc(x, w, None, NDArray.make((2, 2, 2, 4), dtype=np.dtype("float32")))
    with pytest.raises(ValueError, match=r"bias \(K,\) has shape \(5,\)"):
        dev.conv2d_nhwc(x, w, _f32(5), out)
    with pytest.raises(ValueError, match="stride"):
        dev.conv2d_nhwc(x, w, None, out, stride=0)
    with pytest.raises(ValueError, match=r"output gradient .* has shape \(2, 2, 2, 4\)"):
        dev.conv2d_nhwc_grad_weight(_f32(2, 2, 2, 4), x, NDArray.make((3, 3, 3, 4),
                                    dtype=np.dtype("float32")))


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 5, 7, 8, 10)],
                         ids=[IDS[i] for i in (0, 2, 5, 7, 8, 10)])
def test_runs_by_kernel_rows_or_by_taps(case, by_rows):
    """Both ways of cutting an output pixel's inputs into runs (whole kernel rows, kw*C
    values, with copies at the image's sides; or single taps, C values) give the same."""
    from mininet_ext.buffer import Buffer
    x, w, b = _arrays(case, np.float64)
    s, p, d = case[6:]
    want, grads = _torch(x, w, b, case)
    y = np.zeros(want.shape)
    nhwc.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, Buffer.wrap(b), 0, Buffer.wrap(y), 0,
                 x.shape, w.shape, s, p, d, 8, by_rows=by_rows)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-11)
    g = rng.standard_normal(want.shape)
    _, dw_want, _ = grads(g)
    dw = np.full(w.shape, np.nan)
    nhwc.weight_grad(Buffer.wrap(g), 0, Buffer.wrap(x), 0, Buffer.wrap(dw), 0, x.shape,
                     w.shape, s, p, d, 8, by_rows=by_rows)
    np.testing.assert_allclose(dw, dw_want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [(64, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1), (1, 1)),
                                  (64, 32, 4, 4, 64, (3, 3), (2, 2), (1, 1), (1, 1)),
                                  (5, 3, 9, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1))],
                         ids=["resnet9-8x8", "resnet9-4x4", "one-share"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_split_over_threads(case, dtype):
    """The weight gradient splits the output pixels over the threads (a share of at least
    64 pixels each, whole kernel rows counted in the work) and sums the threads' partial
    results: 1 and 2 threads both match torch (ResNet9's 8x8 layer, 1024 output pixels,
    and its 4x4 one, 256, split in two; 315 pixels of little work stay on one thread)."""
    from mininet import get_num_threads, set_num_threads
    from mininet_ext.buffer import Buffer
    x, w, b = _arrays(case, dtype)
    s, p, d = case[6:]
    want, grads = _torch(x, w, b, case)
    g = rng.standard_normal(want.shape).astype(dtype)
    _, dw_want, _ = grads(g)
    old = get_num_threads()
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            dw = np.full(w.shape, np.nan, dtype)
            nhwc.weight_grad(Buffer.wrap(g), 0, Buffer.wrap(x), 0, Buffer.wrap(dw), 0,
                             x.shape, w.shape, s, p, d, x.itemsize)
            np.testing.assert_allclose(dw, dw_want, **_tol(dtype, np.abs(dw_want).max()))
    finally:
        set_num_threads(old)


@pytest.mark.parametrize("case", [(64, 16, 8, 8, 32, (3, 3), (2, 2), (1, 1), (1, 1)),
                                  (64, 32, 4, 4, 64, (3, 3), (2, 2), (1, 1), (1, 1)),
                                  (7, 5, 9, 11, 7, (3, 2), (2, 3), (1, 0), (1, 1))],
                         ids=["resnet9-8x8", "resnet9-4x4", "odd"])
def test_tiles_handed_out_same_bits(case):
    """The forward and the input gradient hand out chunks of tiles to the threads as
    they come free: 1 and 2 threads give the same bits (and torch's values)."""
    from mininet import get_num_threads, set_num_threads
    from mininet_ext.buffer import Buffer
    x, w, b = _arrays(case, np.float32)
    s, p, d = case[6:]
    want, grads = _torch(x, w, b, case)
    g = rng.standard_normal(want.shape).astype(np.float32)
    dx_want = grads(g)[0]
    old, outs = get_num_threads(), []
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            y, dx = np.full(want.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
            nhwc.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, Buffer.wrap(b), 0,
                         Buffer.wrap(y), 0, x.shape, w.shape, s, p, d, 4)
            nhwc.input_grad(Buffer.wrap(g), 0, Buffer.wrap(w), 0, Buffer.wrap(dx), 0, x.shape,
                            w.shape, s, p, d, 4)
            outs.append((y, dx))
    finally:
        set_num_threads(old)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    np.testing.assert_allclose(outs[1][0], want, **_tol(np.float32, np.abs(want).max()))
    np.testing.assert_allclose(outs[1][1], dx_want, **_tol(np.float32, np.abs(dx_want).max()))


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_border_classes_cover_each_pixel_with_its_inside_taps(case, by_rows):
    """The forward's border classes: every output pixel in exactly one class, whose runs
    are exactly the pixel's taps inside the image (no padding multiplied, none missed)."""
    n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = case
    geo = (n, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw)
    oh_n = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow_n = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = nhwc._live_ranges(oh_n, kh, sh, ph, dh, h)
    cols = nhwc._live_ranges(ow_n, kw, sw, pw, dw, w)
    seen = {}
    for a, hq, i0, i1 in rows:
        for b, wq, j0, j1 in cols:
            for oh in range(a, a + hq):
                for ow in range(b, b + wq):
                    seen[oh, ow] = {(i, j) for i in range(i0, i1) for j in range(j0, j1)}
    assert sorted(seen) == [(o, q) for o in range(oh_n) for q in range(ow_n)]
    for (oh, ow), taps in seen.items():
        inside = {(i, j) for i in range(kh) for j in range(kw)
                  if 0 <= oh * sh - ph + i * dh < h and 0 <= ow * sw - pw + j * dw < w}
        assert taps == inside, (oh, ow)
    _, _, nclass, ntiles, _, _ = nhwc._border_classes(geo, by_rows)
    assert nclass == len(rows) * len(cols)
    mr = nhwc.tile_sizes()[0]
    assert ntiles == sum(-(-n * hq * wq // mr) for _, hq, _, _ in rows for _, wq, _, _ in cols)


def test_kernel_refuses_short_buffers():
    from mininet_ext.buffer import Buffer
    x = np.zeros((2, 5, 5, 3), np.float32)
    w = np.zeros((3, 3, 3, 4), np.float32)
    y = np.zeros((2, 5, 5, 3), np.float32)     # one channel short
    with pytest.raises(ValueError, match=r"output \(N, OH, OW, K\)"):
        nhwc.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(y), 0,
                     x.shape, w.shape, (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match=r"input \(N, H, W, C\)"):
        nhwc.forward(Buffer.wrap(x), 1, Buffer.wrap(w), 0, None, 0, Buffer.wrap(y), 0,
                     x.shape, w.shape, (1, 1), (1, 1), (1, 1), 4)


# the NCHW switch: CPUDevice.conv2d / its gradients run on the NHWC kernels ------------------
cpu_mod = importlib.import_module("mininet.backend.cpu")

# n, c, h, w, k, kernel, stride, padding: one case per shape class the switch can take
SWITCHED = [
    (5, 24, 1, 1, 36, 3, 1, 1),     # 1x1 map: no relayout of x or y
    (3, 64, 2, 2, 40, 3, 2, 1),     # 2x2 -> 1x1, stride 2
    (4, 32, 4, 4, 33, 3, 1, 1),     # 4x4, odd K
    (3, 16, 8, 8, 32, 3, 2, 1),     # 8x8 stride 2
    (2, 5, 9, 7, 6, 5, 1, 2),       # odd sizes, 5x5
    (2, 3, 13, 11, 7, 7, 4, 3),     # 7x7 stride 4
    (2, 7, 10, 10, 9, 1, 1, 0),     # 1x1 kernel on a map
]
SW_IDS = [str(c) for c in SWITCHED]


def _nchw_ref(x, w, b, s, p, g):
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, stride=s, padding=p)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _nchw_case(case, dtype):
    n, c, h, w, k, ks, s, p = case
    oh, ow = (h + 2 * p - ks) // s + 1, (w + 2 * p - ks) // s + 1
    return (rng.standard_normal((n, c, h, w)).astype(dtype),
            rng.standard_normal((k, c, ks, ks)).astype(dtype),
            rng.standard_normal(k).astype(dtype),
            rng.standard_normal((n, k, oh, ow)).astype(dtype))


@pytest.fixture
def taken(monkeypatch):
    """Forces the switch on and records the modes it took."""
    seen = []
    orig = cpu_mod._nhwc_wins

    def spy(*args):
        won = orig(*args)
        if won:
            seen.append(args[-1])
        return won
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    monkeypatch.setattr(cpu_mod, "_nhwc_wins", spy)
    return seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SWITCHED, ids=SW_IDS)
def test_switched_device_conv(case, dtype, taken):
    x, w, b, g = _nchw_case(case, dtype)
    s, p = (case[6],) * 2, (case[7],) * 2
    y_ref, dx_ref, dw_ref, _ = _nchw_ref(x, w, b, s, p, g)
    geo = (s, p, (1, 1), 1)
    out = NDArray.make(y_ref.shape, device=dev, dtype=np.dtype(dtype))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, *geo, relu=True)
    dx = NDArray.make(x.shape, device=dev, dtype=np.dtype(dtype))
    dev.conv2d_grad_input(NDArray(g), NDArray(w), dx, *geo)
    dw = NDArray.make(w.shape, device=dev, dtype=np.dtype(dtype))
    dev.conv2d_grad_weight(NDArray(g), NDArray(x), dw, *geo)
    r = case[1] * case[5] ** 2
    np.testing.assert_allclose(out.numpy(), np.maximum(y_ref, 0), **_tol(dtype, r))
    np.testing.assert_allclose(dx.numpy(), dx_ref, **_tol(dtype, r))
    np.testing.assert_allclose(dw.numpy(), dw_ref, **_tol(dtype, g[:, 0].size))
    assert set(taken) == {"fwd", "dx", "dw"}


def test_switched_forward_from_an_offset(taken):
    """float32 x read in place (x_nchw) from an offset into its buffer, as PyTorch."""
    x, w, b, _ = _nchw_case((4, 16, 8, 8, 32, 3, 2, 1), np.float32)
    xv = NDArray(np.concatenate([x[:1], x]))[1:]
    assert xv.offset > 0 and xv.is_compact()
    y_ref = F.conv2d(*(torch.tensor(a, dtype=torch.float64) for a in (x, w, b)), stride=2,
                     padding=1).numpy()
    out = NDArray.make(y_ref.shape, device=dev, dtype=np.dtype(np.float32))
    dev.conv2d(xv, NDArray(w), NDArray(b), out, (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(out.numpy(), y_ref, **_tol(np.float32, 144))
    assert taken == ["fwd"]


@pytest.mark.parametrize("switch", ["1", "0"])
@pytest.mark.parametrize("case", SWITCHED, ids=SW_IDS)
def test_switched_conv_op(case, switch, monkeypatch):
    """The conv op and its autograd through mininet.nn.functional, switch forced on or off."""
    import mininet
    import mininet.nn.functional as MF
    monkeypatch.setenv("MININET_CONV_NHWC", switch)
    x, w, b, g = _nchw_case(case, np.float64)
    s, p = case[6], case[7]
    mx, mw, mb = (mininet.Tensor(a, dtype="float64", requires_grad=True) for a in (x, w, b))
    y = MF.conv2d(mx, mw, mb, s, p)
    (y * mininet.Tensor(g, dtype="float64")).sum().backward()
    refs = _nchw_ref(x, w, b, (s, s), (p, p), g)
    for got, ref in zip((y, mx.grad, mw.grad, mb.grad), refs):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_switch_off_and_groups(monkeypatch):
    monkeypatch.setenv("MININET_CONV_NHWC", "0")
    assert not cpu_mod._nhwc_wins((2, 8, 4, 4), (8, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1, "fwd")
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    assert cpu_mod._nhwc_wins((2, 8, 4, 4), (8, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1, "fwd")
    # groups stay on the NCHW kernels
    assert not cpu_mod._nhwc_wins((2, 8, 4, 4), (8, 4, 3, 3), (1, 1), (1, 1), (1, 1), 2, "fwd")


def test_switch_non_float_error(monkeypatch):
    """An int array is not misread by the NHWC path: the NCHW checks name the dtype."""
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    x = NDArray(np.ones((1, 2, 3, 3), np.int64))
    w = NDArray(np.ones((2, 2, 3, 3), np.int64))
    out = NDArray.make((1, 2, 1, 1), device=dev, dtype=np.dtype(np.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        dev.conv2d(x, w, None, out, (1, 1), (0, 0), (1, 1), 1)


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (2, 3, 1, 0), (3, 2, 0, 1)])
@pytest.mark.parametrize("shape", [(3, 5, 17, 2), (2, 33, 1, 19), (0, 4, 3, 3), (1, 1, 1, 1),
                                   (3, 2, 2, 37), (2, 4, 1, 8), (2, 2, 2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relayout(perm, shape, dtype):
    """Every relayout; (N, 2, 2, C) -> NCHW takes the 4-value runs' 4 x 4 blocks (37
    channels: a short last block; 3: the walk)."""
    a = rng.standard_normal(shape).astype(dtype)
    src = NDArray(np.concatenate([[7.0], a.ravel()]).astype(dtype))[1:]   # a non-zero offset
    want = a.transpose(perm)
    dst = NDArray.make(want.shape, device=dev, dtype=np.dtype(dtype))
    cpu_mod._transpose(src.handle, src.offset, shape, perm, dst.handle, dst.offset,
                       a.itemsize)
    np.testing.assert_array_equal(dst.numpy(), want)


def test_relayout_bounds():
    src = NDArray(np.zeros(10, np.float32))
    dst = NDArray.make((2, 3, 4), device=dev)
    with pytest.raises(ValueError, match="past its buffer"):
        nhwc.relayout(src.handle, 0, dst.handle, 0, 2, 3, 4, 12, 4, 1, 4)


def test_default_rule(monkeypatch):
    """The measured rule: strided, 16+ channels, 2x2 .. 4x4 output; forward and weight
    grad, and the input grad onto 2x2."""
    monkeypatch.delenv("MININET_CONV_NHWC", raising=False)
    wins = cpu_mod._nhwc_wins
    geo = ((2, 2), (1, 1), (1, 1), 1)
    assert wins((64, 16, 8, 8), (32, 16, 3, 3), *geo, "fwd")
    assert wins((64, 32, 4, 4), (64, 32, 3, 3), *geo, "dw")
    assert wins((64, 32, 4, 4), (64, 32, 3, 3), *geo, "dx")           # onto 2x2
    assert not wins((64, 16, 8, 8), (32, 16, 3, 3), *geo, "dx")        # onto 4x4
    assert not wins((64, 64, 2, 2), (128, 64, 3, 3), *geo, "fwd")      # 1x1 output
    assert not wins((64, 3, 8, 8), (32, 3, 3, 3), *geo, "fwd")         # few channels
    assert not wins((64, 32, 4, 4), (32, 32, 3, 3), (1, 1), (1, 1), (1, 1), 1, "fwd")
    # conv2d_small says yes for them, so the op sends them to the device
    assert dev.conv2d_small((64, 32, 3, 3), geo, 4, out_hw=(2, 2))


@pytest.mark.parametrize("case", [(3, 16, 8, 8, 32, 3, 2, 1), (4, 32, 4, 4, 64, 3, 2, 1),
                                  (2, 17, 7, 9, 5, 3, 2, 1)], ids=str)
def test_default_rule_op(case, monkeypatch):
    """The layers the default rule switches, through the op and autograd (float32)."""
    import mininet
    import mininet.nn.functional as MF
    monkeypatch.delenv("MININET_CONV_NHWC", raising=False)
    x, w, b, g = _nchw_case(case, np.float32)
    s, p = case[6], case[7]
    mx, mw, mb = (mininet.Tensor(a, requires_grad=True) for a in (x, w, b))
    y = MF.relu(MF.conv2d(mx, mw, mb, s, p))
    (y * mininet.Tensor(g)).sum().backward()
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    yt = torch.relu(F.conv2d(xt, wt, bt, stride=s, padding=p))
    yt.backward(torch.tensor(g, dtype=torch.float64))
    for got, ref in zip((y, mx.grad, mw.grad, mb.grad), (yt, xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(got.numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-3)


def test_switch_rejects_wrong_shapes(monkeypatch):
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    x, w, b, g = _nchw_case((2, 16, 8, 8, 32, 3, 2, 1), np.float32)
    geo = ((2, 2), (1, 1), (1, 1), 1)
    bad = NDArray.make((2, 32, 5, 4), device=dev)                      # 4x4 is right
    with pytest.raises(ValueError, match="output"):
        dev.conv2d(NDArray(x), NDArray(w), NDArray(b), bad, *geo)
    with pytest.raises(ValueError, match="output gradient"):
        dev.conv2d_grad_input(NDArray(g[:, :, :3]), NDArray(w), NDArray.make(x.shape), *geo)
    with pytest.raises(ValueError, match="output gradient"):
        dev.conv2d_grad_weight(NDArray(g[:1]), NDArray(x), NDArray.make(w.shape), *geo)
