"""Winograd F(2x2, 5x5) convolution (mininet_ext/winograd.pyx with ksize=5) and the fused
ReLU of the Winograd forward: the (float32) kernels against a float64 direct convolution
and PyTorch, on every kernel set this CPU runs, and the CPU backend's 5x5 conv ops with
Winograd on and off against PyTorch (first- and second-order gradients)."""
import importlib

import numpy as np
import pytest

from mininet import ops
from mininet.autograd import Tensor
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
from conftest import close_in_dtype, conv_vs_torch, run_under_isa, t64, torch

wg = _isa.variant("winograd")   # as built for this process's kernel set

cpu_backend = importlib.import_module("mininet.backend.cpu")
F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(5)

# Error bounds relative to the output's largest magnitude. Measured (N(0, 1) data, 16-256
# channels, batch 4, 16x16): float32 up to 1.1e-5 (weight gradient). The filter
# transform's constants (up to 2/3) grow the rounding a little more than the 3x3 path's.
F32_TOL = 5e-5


def direct(x, w, b, pad):
    """float64 reference: the r x r convolution tap by tap."""
    r = w.shape[2]
    n, c, h, wd = x.shape
    oh, ow = h + 2 * pad[0] - r + 1, wd + 2 * pad[1] - r + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    y = np.zeros((n, w.shape[0], oh, ow))
    for i in range(r):
        for j in range(r):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow],
                           w[:, :, i, j].astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def direct_wgrad(x, dy, pad, r=5):
    oh, ow = dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    dw = np.zeros((dy.shape[1], x.shape[1], r, r))
    for i in range(r):
        for j in range(r):
            dw[:, :, i, j] = np.einsum("nchw,nkhw->kc", xp[:, :, i:i + oh, j:j + ow],
                                       dy.astype(np.float64))
    return dw


def winograd(x, w, b, pad, flip=False, relu=False):
    """The kernel on numpy arrays (x may be a view: compacted here, as the op does)."""
    r = w.shape[2]
    k = w.shape[1] if flip else w.shape[0]
    n, c, h, wd = x.shape
    out = np.full((n, k, h + 2 * pad[0] - r + 1, wd + 2 * pad[1] - r + 1), np.nan, x.dtype)
    wg.forward(Buffer.wrap(np.ascontiguousarray(x)), 0, Buffer.wrap(np.ascontiguousarray(w)),
               0, None if b is None else Buffer.wrap(b), 0, Buffer.wrap(out), x.shape, k, pad,
               x.dtype.itemsize, flip, relu, r)
    return out


def winograd_wgrad(x, dy, pad, r=5):
    k = dy.shape[1]
    dw = np.full((k, x.shape[1], r, r), np.nan, x.dtype)
    wg.weight_grad(Buffer.wrap(np.ascontiguousarray(dy)), 0,
                   Buffer.wrap(np.ascontiguousarray(x)), 0, Buffer.wrap(dw), x.shape, k, pad,
                   x.dtype.itemsize, r)
    return dw


def rel_err(y, ref):
    return np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-300)


def fits(hw, pad):
    return hw[0] + 2 * pad[0] >= 5 and hw[1] + 2 * pad[1] >= 5


@pytest.mark.parametrize("hw", [(1, 1), (5, 5), (7, 9), (13, 11), (6, 8)])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 2), (2, 0)])
@pytest.mark.parametrize("c,k", [(1, 1), (3, 5), (17, 13), (40, 36)])
def test_kernel_matches_direct(hw, pad, c, k):
    """Forward, input-gradient form (flipped filters) and weight gradient; odd maps."""
    dtype = "float32"
    if not fits(hw, pad):
        pytest.skip("the kernel does not fit")
    x = rng.standard_normal((2, c, *hw)).astype(dtype)
    w = rng.standard_normal((k, c, 5, 5)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    tol = F32_TOL
    ref = direct(x, w, b, pad)
    assert rel_err(winograd(x, w, b, pad), ref) < tol
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert rel_err(winograd(x, wt, None, pad, flip=True), direct(x, w, None, pad)) < tol
    dy = rng.standard_normal(ref.shape).astype(dtype)
    assert rel_err(winograd_wgrad(x, dy, pad), direct_wgrad(x, dy, pad)) < tol


@pytest.mark.parametrize("c", [16, 64, 256])
def test_accuracy_float32_wide(c):
    """The stated bound: float32 within 1e-4 of the output's scale at 16-256 channels."""
    x = rng.standard_normal((2, c, 12, 12)).astype("float32")
    w = rng.standard_normal((24, c, 5, 5)).astype("float32")
    assert rel_err(winograd(x, w, None, (2, 2)), direct(x, w, None, (2, 2))) < 1e-4
    dy = rng.standard_normal((2, 24, 12, 12)).astype("float32")
    assert rel_err(winograd_wgrad(x, dy, (2, 2)), direct_wgrad(x, dy, (2, 2))) < 1e-4


def test_many_blocks_threads_batch_one_and_zero():
    x = rng.standard_normal((3, 40, 23, 19)).astype("float32")
    w = rng.standard_normal((50, 40, 5, 5)).astype("float32")
    y = winograd(x, w, None, (2, 2))
    assert not np.isnan(y).any() and rel_err(y, direct(x, w, None, (2, 2))) < F32_TOL
    assert rel_err(winograd(x[:1], w, None, (1, 2)), direct(x[:1], w, None, (1, 2))) < F32_TOL
    dy = rng.standard_normal(y.shape).astype("float32")
    assert rel_err(winograd_wgrad(x, dy, (2, 2)), direct_wgrad(x, dy, (2, 2))) < F32_TOL
    assert winograd(np.ones((0, 40, 9, 9), np.float32), w, None, (2, 2)).shape == (0, 50, 9, 9)
    dw0 = winograd_wgrad(np.ones((0, 3, 6, 6), np.float32), np.ones((0, 4, 6, 6), np.float32),
                         (2, 2))
    assert dw0.shape == (4, 3, 5, 5) and np.all(dw0 == 0)


def test_noncontiguous_input():
    """A strided view of a channels-last array, compacted for the kernel."""
    wide = rng.standard_normal((2, 11, 22, 24)).astype("float32")   # N, H, W, C
    x = wide.transpose(0, 3, 1, 2)[:, :, :, ::2]
    w = rng.standard_normal((8, 24, 5, 5)).astype("float32")
    assert rel_err(winograd(x, w, None, (2, 2)), direct(x, w, None, (2, 2))) < F32_TOL


def test_bad_input():
    w = np.ones((4, 3, 5, 5), np.float32)
    out = np.zeros((1, 4, 5, 5), np.float32)
    x = Buffer.wrap(np.ones((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="weight"):   # a 3x3 weight buffer for a 5x5 call
        wg.forward(x, 0, Buffer.wrap(np.ones((4, 3, 3, 3), np.float32)), 0, None, 0,
                   Buffer.wrap(out), (1, 3, 5, 5), 4, (2, 2), 4, False, False, 5)
    with pytest.raises(ValueError, match="5x5 kernel does not fit"):
        wg.forward(x, 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), (1, 3, 3, 3), 4, (0, 0),
                   4, False, False, 5)
    with pytest.raises(ValueError, match="filter size 7x7"):
        wg.forward(x, 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), (1, 3, 5, 5), 4, (3, 3),
                   4, False, False, 7)
    with pytest.raises(ValueError, match="weight grad"):
        wg.weight_grad(Buffer.wrap(out), 0, x, 0, Buffer.wrap(np.zeros((4, 3, 3, 3), np.float32)),
                       (1, 3, 5, 5), 4, (2, 2), 4, 5)


def test_workspace_is_bounded():
    """A 256 -> 256 layer on 16x16 maps, batch 64: the transformed filters (36 x 256 x 256
    floats, 9.4 MB) plus a few MB per thread, as for 3x3; the weight gradient's per-thread
    sums the same size."""
    ws = [wg.workspace_bytes((64, 256, 16, 16), 256, (2, 2), 4, t, 5) for t in (1, 2)]
    assert 0 < ws[1] - ws[0] < 4 << 20 and ws[1] < 20 << 20
    one = wg.weight_grad_workspace_bytes((64, 256, 16, 16), 256, (2, 2), 4, 1, 5)
    assert one < 14 << 20
    assert wg.weight_grad_workspace_bytes((64, 256, 16, 16), 256, (2, 2), 4, 2, 5) <= 2 * one


# the fused ReLU (3x3 and 5x5) ---------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("r,pad", [(3, (1, 1)), (3, (0, 2)), (5, (2, 2)), (5, (1, 0))])
def test_relu_epilogue_matches_torch(r, pad):
    dtype = "float32"
    x = rng.standard_normal((2, 33, 9, 11)).astype(dtype)
    w = (rng.standard_normal((20, 33, r, r)) / 10).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    want = torch.relu(F.conv2d(torch.tensor(x, dtype=torch.float64),
                               torch.tensor(w, dtype=torch.float64),
                               torch.tensor(b, dtype=torch.float64), padding=pad)).numpy()
    got = winograd(x, w, b, pad, relu=True)
    assert got.min() >= 0 and np.all(got[want == 0] == 0)
    assert rel_err(got, want) < F32_TOL
    # without relu: the plain convolution, negatives kept
    assert (winograd(x, w, b, pad) < 0).any()


# every kernel set this CPU runs, each in a fresh process --------------------------------
ISA_CHECK = r"""
import json
import numpy as np
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
wg = _isa.variant("winograd")
rng = np.random.default_rng(1)
worst = {}
def direct(x, w, pad):
    oh, ow = x.shape[2] + 2 * pad - 4, x.shape[3] + 2 * pad - 4
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sum(np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
               for i in range(5) for j in range(5))
for dt in ("float32",):
    for c, k, h, wd, pad in ((3, 5, 7, 9, 2), (33, 70, 11, 10, 1), (64, 64, 16, 16, 2)):
        x = rng.standard_normal((2, c, h, wd)).astype(dt)
        w = rng.standard_normal((k, c, 5, 5)).astype(dt)
        ref = direct(x, w.astype(np.float64), pad)
        out = np.full(ref.shape, np.nan, dt)
        wg.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), x.shape, k,
                   (pad, pad), x.dtype.itemsize, False, True, 5)
        e1 = np.abs(out - np.maximum(ref, 0)).max() / np.abs(ref).max()
        dy = rng.standard_normal(ref.shape).astype(dt)
        dw = np.full(w.shape, np.nan, dt)
        wg.weight_grad(Buffer.wrap(dy), 0, Buffer.wrap(x), 0, Buffer.wrap(dw), x.shape, k,
                       (pad, pad), x.dtype.itemsize, 5)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oh, ow = ref.shape[2:]
        want = np.stack([np.stack([np.einsum("nchw,nkhw->kc", xp[:, :, i:i + oh, j:j + ow], dy)
                                   for j in range(5)], -1) for i in range(5)], -2)
        e2 = np.abs(dw - want).max() / np.abs(want).max()
        worst[dt] = max(worst.get(dt, 0.0), float(e1), float(e2))
print(json.dumps({"active": _isa.active(), "worst": worst}))
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512bf16"])
def test_every_kernel_set(isa):
    if isa not in _isa.supported():
        pytest.skip(f"this CPU or build does not run {isa}")
    got = run_under_isa(ISA_CHECK, isa, threads=2)
    assert got["active"] == isa
    assert got["worst"]["float32"] < F32_TOL


# the backend: 5x5 conv ops with Winograd on and off ------------------------------------------
@pytest.fixture(params=["winograd", "gemm"])
def wino(request, monkeypatch):
    """The conv ops on the fused kernels at any size and channel count, with Winograd on
    (counting the 5x5 calls: forward False, input gradient True, weight gradient "w") or off."""
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)
    monkeypatch.setattr(cpu_backend, "WINOGRAD5_MIN_CHANNELS", 1)
    calls = []
    real, real_w = wg.forward, wg.weight_grad

    def counted(*args, **kw):
        if kw.get("ksize") == 5:
            calls.append(args[11] if len(args) > 11 else False)
        return real(*args, **kw)

    def counted_w(*args, **kw):
        if kw.get("ksize") == 5:
            calls.append("w")
        return real_w(*args, **kw)
    monkeypatch.setattr(cpu_backend._wino, "forward", counted)
    monkeypatch.setattr(cpu_backend._wino, "weight_grad", counted_w)
    monkeypatch.setenv("MININET_WINOGRAD", "1" if request.param == "winograd" else "0")
    monkeypatch.setenv("MININET_WINOGRAD_ROWS", "0")   # the 2-D kernels, not F(4, 5) rows
    monkeypatch.setenv("MININET_WINOGRAD_CL", "0")     # nor the channels-last F(2x2, 5x5)
    return request.param, calls


@pytest.mark.torch
@pytest.mark.parametrize("shape,pad", [((2, 3, 7, 9, 4), 2), ((3, 17, 13, 11, 5), 0),
                                       ((1, 8, 6, 7, 6), 1), ((0, 4, 6, 6, 3), 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_ops_match_torch(shape, pad, dtype, wino):
    """float32 on Winograd where it is on; float64 always on the implicit GEMM."""
    conv_vs_torch(rng, shape, 5, pad, dtype)
    mode, calls = wino
    # forward, input gradient (flipped filters, padding 4 - pad), weight gradient
    assert calls == ([] if mode == "gemm" or dtype == "float64" else [False, True, "w"])


@pytest.mark.torch
def test_conv_float32_noncontiguous_input(wino):
    wide = rng.standard_normal((2, 12, 30, 32)).astype("float32")   # N, H, W, C
    w = rng.standard_normal((20, 32, 5, 5)).astype("float32") / 10
    x = Tensor(wide, dtype="float32").permute(0, 3, 1, 2)[:, :, :, ::2]
    want = F.conv2d(torch.tensor(wide).permute(0, 3, 1, 2)[:, :, :, ::2], torch.tensor(w),
                    padding=2).numpy()
    got = ops.conv(x, Tensor(w, dtype="float32"), padding=2).numpy()
    assert np.abs(got - want).max() < F32_TOL * np.abs(want).max()
    assert wino[1] == ([] if wino[0] == "gemm" else [False])


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_functional_conv2d_second_order(dtype, wino):
    """d/dx of |d conv / dW|^2 through mininet.nn.functional.conv2d, against PyTorch in
    float64 (float32: to 1e-4 of the largest magnitude, on Winograd where it is on)."""
    from mininet.nn import functional as mf
    x, w = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((4, 3, 5, 5))
    b = rng.standard_normal(4)
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    mx, mw, mb = (Tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
    y = mf.conv2d(mx, mw, mb, padding=2)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g, dtype=dtype), create_graph=True)
    gw = mw.grad
    mx.grad = None
    (gw * gw).sum().backward()
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, padding=2)
    (tgw,) = torch.autograd.grad(ty, tw, torch.tensor(g, dtype=torch.float64),
                                 create_graph=True)
    (tgw * tgw).sum().backward()
    for got, want in ((gw.numpy(), tgw.detach().numpy()), (mx.grad.numpy(), tx.grad.numpy())):
        close_in_dtype(got, want, dtype, 1e-9)
    assert bool(wino[1]) == (wino[0] == "winograd" and dtype == "float32")


def test_default_rule(monkeypatch):
    """5x5 layers take Winograd from WINOGRAD5_MIN_CHANNELS channels, stride 1 only."""
    fits = cpu_backend._winograd_fits
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    big = cpu_backend.WINOGRAD5_MIN_CHANNELS
    assert fits((big, big, 5, 5), (1, 1), (2, 2), (1, 1), 1)
    assert not fits((big, 16, 5, 5), (1, 1), (2, 2), (1, 1), 1)
    assert not fits((big, big, 5, 5), (2, 2), (2, 2), (1, 1), 1)
    assert not fits((big, big, 5, 5), (1, 1), (2, 2), (2, 2), 1)
    assert not fits((big, big, 7, 7), (1, 1), (3, 3), (1, 1), 1)
    monkeypatch.setenv("MININET_WINOGRAD", "0")
    assert not fits((big, big, 5, 5), (1, 1), (2, 2), (1, 1), 1)
