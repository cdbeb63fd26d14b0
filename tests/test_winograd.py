"""Winograd F(4x4, 3x3) convolution (mininet_ext/winograd.pyx, float32): the kernel against
a float64 direct convolution, and the CPU backend's conv ops with it on and off against
PyTorch and central differences (float64 convolutions take the implicit GEMM)."""
import importlib

import numpy as np
import pytest

from mininet import ops
from mininet.autograd import Tensor
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
from conftest import conv_second_order_vs_torch, conv_vs_torch, gradcheck, t64, torch

wg = _isa.variant("winograd")   # as built for this process's kernel set

cpu_backend = importlib.import_module("mininet.backend.cpu")   # the module, not cpu()
F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(11)

# Error bounds relative to the output's largest magnitude. Measured: float32 up to 1.2e-5
# (256 channels, 32x32); the transforms' constants (4, 5, 1/6, 1/24) grow the rounding
# error of a direct sum by a small factor.
F32_TOL = 3e-5


def direct(x, w, b, pad):
    """float64 reference: the 3x3 convolution tap by tap."""
    n, c, h, wd = x.shape
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    y = np.zeros((n, w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow],
                           w[:, :, i, j].astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def winograd(x, w, b, pad, flip=False):
    """The kernel on numpy arrays; flip: w is (C, K, 3, 3), used rotated and swapped."""
    k = w.shape[1] if flip else w.shape[0]
    n, c, h, wd = x.shape
    out = np.full((n, k, h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2), np.nan, x.dtype)
    wg.forward(Buffer.wrap(np.ascontiguousarray(x)), 0, Buffer.wrap(np.ascontiguousarray(w)),
               0, None if b is None else Buffer.wrap(b), 0, Buffer.wrap(out), x.shape, k, pad,
               x.dtype.itemsize, flip)
    return out


def rel_err(y, ref):
    return np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-300)


@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (13, 13), (4, 4), (8, 9)])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 2), (2, 0)])
@pytest.mark.parametrize("c,k", [(1, 1), (3, 5), (17, 13), (64, 70)])
def test_kernel_matches_direct(hw, pad, c, k):
    dtype = "float32"
    h, wd = hw
    if h + 2 * pad[0] < 3 or wd + 2 * pad[1] < 3:
        pytest.skip("the kernel does not fit")
    x = rng.standard_normal((2, c, h, wd)).astype(dtype)
    w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ref = direct(x, w, b, pad)
    tol = F32_TOL
    assert rel_err(winograd(x, w, b, pad), ref) < tol
    # the input gradient's form: filters (C, K, 3, 3) rotated by 180 degrees and swapped
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert rel_err(winograd(x, wt, None, pad, flip=True), direct(x, w, None, pad)) < tol


@pytest.mark.parametrize("n", [1, 7, 33, 70])
@pytest.mark.parametrize("hw,pad", [((4, 4), (1, 1)), ((6, 6), (0, 0)), ((2, 2), (2, 2)),
                                    ((4, 6), (1, 0)), ((3, 5), (1, 1)), ((1, 1), (1, 1))])
def test_kernel_one_tile_per_image(n, hw, pad):
    """Maps whose 4x4 output is one tile (ResNet9's 4x4 layers): the kernel's whole-image
    gather, with batches that leave a part-filled last panel; non-zero images next to
    each other, so a tile that read its neighbour's pixels would show."""
    dtype = "float32"
    h, wd = hw
    x = (rng.standard_normal((n, 32, h, wd)) + 3).astype(dtype)
    w = rng.standard_normal((40, 32, 3, 3)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    tol = F32_TOL
    y = winograd(x, w, b, pad)
    assert not np.isnan(y).any()
    assert rel_err(y, direct(x, w, b, pad)) < tol
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert rel_err(winograd(x, wt, None, pad, flip=True), direct(x, w, None, pad)) < tol


def test_kernel_many_blocks_and_threads():
    """More tiles than one block holds, spread over the threads; every output written."""
    x = rng.standard_normal((5, 40, 23, 19)).astype("float32")
    w = rng.standard_normal((50, 40, 3, 3)).astype("float32")
    y = winograd(x, w, None, (1, 1))
    assert not np.isnan(y).any()
    assert rel_err(y, direct(x, w, None, (1, 1))) < F32_TOL


def test_kernel_blocks_handed_out_same_bits():
    """The threads take blocks of tiles as they come free: a tile's outputs do not depend
    on who took its block, so 1 and 2 threads (several blocks each) give the same bits."""
    dtype = "float32"
    from mininet import get_num_threads, set_num_threads
    x = rng.standard_normal((9, 40, 23, 19)).astype(dtype)
    w = rng.standard_normal((50, 40, 3, 3)).astype(dtype)
    b = rng.standard_normal(50).astype(dtype)
    old = get_num_threads()
    try:
        ys = []
        for t in (1, 2, 2):
            set_num_threads(t)
            ys.append(winograd(x, w, b, (1, 1)))
    finally:
        set_num_threads(old)
    assert np.array_equal(ys[0], ys[1]) and np.array_equal(ys[1], ys[2])
    assert rel_err(ys[0], direct(x, w, b, (1, 1))) < F32_TOL


def test_kernel_zero_sizes_and_bad_input():
    w = np.ones((4, 3, 3, 3), np.float32)
    assert winograd(np.ones((0, 3, 5, 5), np.float32), w, None, (1, 1)).shape == (0, 4, 5, 5)
    out = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="input"):   # buffer smaller than the shape says
        wg.forward(Buffer.wrap(np.ones((1, 3, 4, 5), np.float32)), 0, Buffer.wrap(w), 0, None,
                   0, Buffer.wrap(out), (1, 3, 5, 5), 4, (1, 1), 4)
    with pytest.raises(ValueError, match="weight"):
        wg.forward(Buffer.wrap(np.ones((1, 3, 5, 5), np.float32)), 0,
                   Buffer.wrap(np.ones(10, np.float32)), 0, None, 0, Buffer.wrap(out),
                   (1, 3, 5, 5), 4, (1, 1), 4)
    with pytest.raises(ValueError, match="does not fit"):
        wg.forward(Buffer.wrap(np.ones((1, 3, 1, 1), np.float32)), 0, Buffer.wrap(w), 0, None,
                   0, Buffer.wrap(out), (1, 3, 1, 1), 4, (0, 0), 4)
    with pytest.raises(ValueError, match="itemsize"):
        wg.forward(Buffer.wrap(np.ones((1, 3, 5, 5), np.float32)), 0, Buffer.wrap(w), 0, None,
                   0, Buffer.wrap(out), (1, 3, 5, 5), 4, (1, 1), 2)


def test_workspace_is_bounded():
    """A ResNet-18 layer (64 x 256 x 16 x 16, 256 filters): the transformed filters
    (36 x 256 x 256 floats, 9.4 MB) plus at most a few MB per thread."""
    per_thread = wg.workspace_bytes((64, 256, 16, 16), 256, (1, 1), 4, 2) - \
        wg.workspace_bytes((64, 256, 16, 16), 256, (1, 1), 4, 1)
    assert 0 < per_thread < 4 << 20
    assert wg.workspace_bytes((64, 256, 16, 16), 256, (1, 1), 4, 2) < 20 << 20


# the weight gradient ------------------------------------------------------------------------
def direct_wgrad(x, dy, pad):
    """float64 reference: dw[k, c, i, j] = sum over n, y, x of dy[n, k] x_padded[n, c] at
    the tap's offset."""
    oh, ow = dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    dw = np.zeros((dy.shape[1], x.shape[1], 3, 3))
    for i in range(3):
        for j in range(3):
            dw[:, :, i, j] = np.einsum("nchw,nkhw->kc", xp[:, :, i:i + oh, j:j + ow],
                                       dy.astype(np.float64))
    return dw


def winograd_wgrad(x, dy, pad):
    k = dy.shape[1]
    dw = np.full((k, x.shape[1], 3, 3), np.nan, x.dtype)
    wg.weight_grad(Buffer.wrap(np.ascontiguousarray(dy)), 0,
                   Buffer.wrap(np.ascontiguousarray(x)), 0, Buffer.wrap(dw), x.shape, k, pad,
                   x.dtype.itemsize)
    return dw


# Error bounds relative to the weight gradient's largest magnitude, the same as the
# forward's. Measured: float32 up to 6e-6 (64 -> 70 channels, 40 -> 50 over 5 images of
# 23x19).
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (13, 13), (4, 4), (8, 9)])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 2), (2, 0)])
@pytest.mark.parametrize("c,k", [(1, 1), (3, 5), (17, 13), (64, 70)])
def test_weight_grad_matches_direct(hw, pad, c, k):
    dtype = "float32"
    h, wd = hw
    if h + 2 * pad[0] < 3 or wd + 2 * pad[1] < 3:
        pytest.skip("the kernel does not fit")
    x = rng.standard_normal((2, c, h, wd)).astype(dtype)
    dy = rng.standard_normal((2, k, h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2)).astype(dtype)
    tol = F32_TOL
    assert rel_err(winograd_wgrad(x, dy, pad), direct_wgrad(x, dy, pad)) < tol


def test_weight_grad_many_blocks_threads_and_zero_batch():
    """More tiles than one block holds, over the threads, each thread's sums added; an
    empty batch gives zeros."""
    x = rng.standard_normal((5, 40, 23, 19)).astype("float32")
    dy = rng.standard_normal((5, 50, 23, 19)).astype("float32")
    dw = winograd_wgrad(x, dy, (1, 1))
    assert rel_err(dw, direct_wgrad(x, dy, (1, 1))) < F32_TOL
    dw0 = winograd_wgrad(np.ones((0, 3, 5, 5), np.float32), np.ones((0, 4, 5, 5), np.float32),
                         (1, 1))
    assert dw0.shape == (4, 3, 3, 3) and np.all(dw0 == 0)
    with pytest.raises(ValueError, match="output grad"):
        wg.weight_grad(Buffer.wrap(np.ones(10, np.float32)), 0,
                       Buffer.wrap(np.ones((1, 3, 5, 5), np.float32)), 0,
                       Buffer.wrap(np.zeros((4, 3, 3, 3), np.float32)), (1, 3, 5, 5), 4,
                       (1, 1), 4)


def test_weight_grad_workspace_is_bounded():
    """The ResNet-18 layer: per thread its sums (36 x 256 x 256 floats, 9.4 MB) and one
    block of transformed tiles (at most 4 MB)."""
    one = wg.weight_grad_workspace_bytes((64, 256, 16, 16), 256, (1, 1), 4, 1)
    assert one < 14 << 20
    assert wg.weight_grad_workspace_bytes((64, 256, 16, 16), 256, (1, 1), 4, 2) <= 2 * one


# the backend: conv ops with Winograd on and off -------------------------------------------
@pytest.fixture(params=["winograd", "gemm"])
def wino(request, monkeypatch):
    """Run the conv ops on the fused kernels at any size and channel count, with Winograd
    on (counting its calls) or off (MININET_WINOGRAD=0)."""
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)
    monkeypatch.setattr(cpu_backend, "WINOGRAD_MIN_CHANNELS", 1)
    calls = []
    real = wg.forward

    def counted(*args, **kw):
        calls.append(args[11] if len(args) > 11 else kw.get("flip", False))
        return real(*args, **kw)
    monkeypatch.setattr(cpu_backend._wino, "forward", counted)
    wcalls = []
    real_w = wg.weight_grad
    monkeypatch.setattr(cpu_backend._wino, "weight_grad",
                        lambda *a, **kw: wcalls.append(a[5]) or real_w(*a, **kw))
    monkeypatch.setenv("MININET_WINOGRAD", "1" if request.param == "winograd" else "0")
    return request.param, calls, wcalls


@pytest.mark.torch
@pytest.mark.parametrize("shape,pad,expect", [
    ((2, 3, 7, 9, 4), 1, [False, True]),      # forward, then the input gradient (flipped)
    ((3, 17, 13, 13, 5), 0, [False, True]),
    ((1, 8, 5, 7, 6), 2, [False, True]),
    ((2, 4, 1, 1, 3), 1, [])])                # ops/conv.py crops the dead taps: a 1x1 conv
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_ops_match_torch(shape, pad, expect, dtype, wino):
    """float32 runs Winograd where it is on; float64 always the implicit GEMM."""
    conv_vs_torch(rng, shape, 3, pad, dtype)
    mode, calls, wcalls = wino
    if mode == "gemm" or dtype == "float64":
        expect = []
    assert calls == expect
    assert len(wcalls) == (1 if expect else 0)   # the weight gradient


@pytest.mark.torch
def test_conv_float32_noncontiguous_input(wino):
    """A strided view of a channels-last array: the op compacts it for the kernel."""
    wide = rng.standard_normal((2, 12, 30, 32)).astype("float32")   # N, H, W, C
    w = rng.standard_normal((20, 32, 3, 3)).astype("float32") / 10
    x = Tensor(wide, dtype="float32").permute(0, 3, 1, 2)[:, :, :, ::2]
    want = F.conv2d(torch.tensor(wide).permute(0, 3, 1, 2)[:, :, :, ::2], torch.tensor(w),
                    padding=1).numpy()
    got = ops.conv(x, Tensor(w, dtype="float32"), padding=1).numpy()
    assert np.abs(got - want).max() < F32_TOL * np.abs(want).max()
    assert wino[1] == ([] if wino[0] == "gemm" else [False])


def test_conv_zero_batch(wino):
    x = Tensor(np.zeros((0, 5, 6, 6)), dtype="float64", requires_grad=True)
    w = Tensor(rng.standard_normal((4, 5, 3, 3)), dtype="float64", requires_grad=True)
    y = ops.conv(x, w, padding=1)
    assert y.shape == (0, 4, 6, 6)
    y.sum().backward()
    assert x.grad.shape == (0, 5, 6, 6) and np.all(w.grad.numpy() == 0)


def test_conv_gradcheck_float64(wino):
    """float64 convolutions (and their gradients) take the implicit GEMM, Winograd on or
    off: float32 only there."""
    gradcheck(lambda x, w, b: ops.conv(x, w, b, padding=1),
              rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 3)),
              rng.standard_normal(4))
    assert wino[1] == [] and wino[2] == []


def test_kernel_refuses_float64():
    """A float64 call names the problem (the backend never makes one)."""
    x, w = np.ones((1, 4, 6, 6)), np.ones((4, 4, 3, 3))
    out = np.zeros((1, 4, 6, 6))
    with pytest.raises(ValueError, match="float32 only.*itemsize 8"):
        wg.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), x.shape,
                   4, (1, 1), 8)
    with pytest.raises(ValueError, match="float32 only.*itemsize 8"):
        wg.weight_grad(Buffer.wrap(out), 0, Buffer.wrap(x), 0, Buffer.wrap(w), x.shape, 4,
                       (1, 1), 8)
    for fn in (wg.workspace_bytes, wg.weight_grad_workspace_bytes):
        with pytest.raises(ValueError, match="float32 only"):
            fn((1, 4, 6, 6), 4, (1, 1), 8)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_second_order_gradient(dtype, wino):
    """d/dx of |d conv / dW|^2 through the gradient ops, against PyTorch (float32 on
    Winograd where it is on)."""
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    conv_second_order_vs_torch(x, w, dtype)
    mode, calls, wcalls = wino
    assert bool(calls) == (mode == "winograd" and dtype == "float32")


def test_default_rule(monkeypatch):
    """Winograd only for 3x3, stride 1, no dilation, one group, enough channels; and not
    with MININET_WINOGRAD=0."""
    fits = cpu_backend._winograd_fits
    monkeypatch.setenv("MININET_WINOGRAD", "0")
    assert not fits((64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    big = cpu_backend.WINOGRAD_MIN_CHANNELS
    assert fits((big, big, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert not fits((big, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1)       # an image's RGB layer
    assert not fits((big, big, 3, 3), (2, 2), (1, 1), (1, 1), 1)
    assert not fits((big, big, 3, 3), (1, 1), (1, 1), (2, 2), 1)
    assert not fits((big, big, 3, 3), (1, 1), (1, 1), (1, 1), 2)
    assert not fits((big, big, 5, 5), (1, 1), (2, 2), (1, 1), 1)


@pytest.mark.torch
@pytest.mark.parametrize("hw,expect", [((8, 8), [False, True]), ((4, 4), [False, True]),
                                       ((2, 2), []), ((1, 1), [])])
def test_small_maps_take_winograd_where_it_pays(hw, expect, monkeypatch):
    """Maps under conv2d_min_pixels (im2col otherwise) run on Winograd, forward and
    input gradient, from one 4x4 tile an image; smaller maps stay on im2col. Float32
    results against PyTorch."""
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    calls, wcalls = [], []
    real, real_w = wg.forward, wg.weight_grad
    monkeypatch.setattr(cpu_backend._wino, "forward",
                        lambda *a, **kw: calls.append(a[11] if len(a) > 11 else
                                                      kw.get("flip", False)) or real(*a, **kw))
    monkeypatch.setattr(cpu_backend._wino, "weight_grad",
                        lambda *a, **kw: wcalls.append(a[5]) or real_w(*a, **kw))
    big = cpu_backend.WINOGRAD_MIN_CHANNELS
    x = rng.standard_normal((3, big, *hw)).astype("float32")
    w = (rng.standard_normal((big + 8, big, 3, 3)) / 10).astype("float32")
    mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = ops.conv(mx, mw, padding=1)
    g = rng.standard_normal(y.shape).astype("float32")
    y.backward(Tensor(g))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = F.conv2d(tx, tw, padding=1)
    ty.backward(torch.tensor(g))
    for m, t in ((y, ty), (mx.grad, tx.grad), (mw.grad, tw.grad)):
        want = t.detach().numpy()
        assert np.abs(m.numpy() - want).max() < F32_TOL * np.abs(want).max()
    assert calls == expect
    assert len(wcalls) == (1 if expect else 0)   # the weight gradient too


def _spec_convs(spec):
    """(cin, cout, kernel, stride, pad) of every conv in a model spec (nested tuples)."""
    if isinstance(spec, tuple) and spec and spec[0] == "conv":
        return {spec[1:6]}
    found = set()
    for part in spec if isinstance(spec, tuple) else ():
        found |= _spec_convs(part)
    return found


def test_bench_conv_defaults_cover_the_cifar_models():
    """`mininet bench conv`'s default layers include every conv of cifar-cnn and resnet9
    (batch 64), and a ResNet-18-style 3x3 stack up to 256 channels."""
    from mininet.cli.bench import CONV_SHAPES, parse_conv_shapes
    from mininet.models.mlp import cifar_cnn_spec
    from mininet.models.resnet9 import resnet9_spec
    shapes = parse_conv_shapes(CONV_SHAPES)
    at_64 = {(c, k, ks, s, p) for n, c, h, w, k, ks, s, p in shapes if n == 64}
    assert _spec_convs(cifar_cnn_spec()) | _spec_convs(resnet9_spec()) <= at_64
    assert {(64, 64, 32), (128, 128, 16), (256, 256, 16)} <= {(c, k, h) for n, c, h, w, k, ks, s,
                                                          p in shapes if ks == 3 and s == 1}
