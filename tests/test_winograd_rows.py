"""Winograd F(4, 5) along the rows (mininet_ext/winograd.pyx forward_rows,
_winograd_row_t.h): the kernel against a float64 direct convolution on odd maps, paddings,
channel counts and blocks, on every kernel set this CPU runs; the CPU backend's rule; and
the 5x5 conv ops that take it (forward and input gradient) against PyTorch, to the second
order."""
import importlib

import numpy as np
import pytest

from mininet.autograd import Tensor
from mininet_ext import _isa, matmul
from mininet_ext.buffer import Buffer
from conftest import close_in_dtype, conv_vs_torch, run_under_isa, t64, torch
from test_winograd5 import direct, rel_err   # the float64 tap-by-tap reference

wg = _isa.variant("winograd")   # as built for this process's kernel set
cpu_backend = importlib.import_module("mininet.backend.cpu")
F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(45)

# Error bounds relative to the output's largest magnitude. Measured (N(0, 1) data, 1-300
# channels): float32 up to 3.5e-6 (the 8-point transform's constants reach 21/4 and 32/45).
F32_TOL = 2e-5


def rows(x, w, b, pad, flip=False, relu=False):
    """The kernel on numpy arrays; the output starts as NaN, so a pixel it misses shows."""
    k = w.shape[1] if flip else w.shape[0]
    n, c, h, wd = x.shape
    out = np.full((n, k, h + 2 * pad[0] - 4, wd + 2 * pad[1] - 4), np.nan, x.dtype)
    wg.forward_rows(Buffer.wrap(np.ascontiguousarray(x)), 0,
                    Buffer.wrap(np.ascontiguousarray(w)), 0,
                    None if b is None else Buffer.wrap(b), 0, Buffer.wrap(out), x.shape, k,
                    pad, x.dtype.itemsize, flip, relu)
    return out


@pytest.mark.parametrize("hw", [(1, 1), (5, 5), (7, 9), (14, 14), (3, 17)])
@pytest.mark.parametrize("pad", [(0, 0), (2, 2), (1, 3), (4, 4)])
@pytest.mark.parametrize("c,k", [(1, 1), (3, 5), (16, 32), (40, 13), (24, 68)])
def test_kernel_matches_direct(hw, pad, c, k):
    """Forward with bias, the input-gradient form (flipped, swapped filters) and the
    fused ReLU; K = 68 ends on a short panel (8 filters), 13 and 5 inside one."""
    dtype = "float32"
    if hw[0] + 2 * pad[0] < 5 or hw[1] + 2 * pad[1] < 5:
        pytest.skip("the kernel does not fit")
    x = rng.standard_normal((2, c, *hw)).astype(dtype)
    w = rng.standard_normal((k, c, 5, 5)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    tol = F32_TOL
    ref = direct(x, w, b, pad)
    assert rel_err(rows(x, w, b, pad), ref) < tol
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert rel_err(rows(x, wt, None, pad, flip=True), direct(x, w, None, pad)) < tol
    got = rows(x, w, b, pad, relu=True)
    assert got.min() >= 0 and rel_err(got, np.maximum(ref, 0)) < tol


def test_blocks_threads_wide_channels_and_empty():
    """A batch that leaves a last block short, 300 channels (the reduction in WINO_KC
    chunks), one image, and an empty batch."""
    x = rng.standard_normal((13, 300, 9, 10)).astype("float32")
    w = rng.standard_normal((20, 300, 5, 5)).astype("float32")
    y = rows(x, w, None, (2, 2))
    assert not np.isnan(y).any() and rel_err(y, direct(x, w, None, (2, 2))) < F32_TOL
    assert rel_err(rows(x[:1], w, None, (1, 2)), direct(x[:1], w, None, (1, 2))) < F32_TOL
    x = rng.standard_normal((37, 24, 14, 14)).astype("float32")
    w = rng.standard_normal((32, 24, 5, 5)).astype("float32")
    assert rel_err(rows(x, w, None, (2, 2)), direct(x, w, None, (2, 2))) < F32_TOL
    with pytest.raises(ValueError, match="float32 only.*itemsize 8"):
        rows(x.astype(np.float64), w.astype(np.float64), None, (2, 2))
    assert rows(np.ones((0, 24, 9, 9), np.float32), w.astype(np.float32), None,
                (2, 2)).shape == (0, 32, 9, 9)


def test_nan_and_inf_stay_near_their_outputs():
    """An inf or NaN in the input makes every output whose window holds it non-finite, as
    the direct sum does, and, through the transform along the row, the other outputs of
    the 4-pixel segments that read it (Winograd's known reach; F(2x2, 5x5) has it too),
    nothing beyond: the rows past the map that the GEMM computes and drops read memory
    past a segment's rows, and must not leak into kept outputs."""
    x = rng.standard_normal((2, 24, 11, 12)).astype("float32")
    x[0, 3, 4, 5] = np.inf
    x[1, 7, 0, 0] = np.nan
    w = rng.standard_normal((24, 24, 5, 5)).astype("float32")
    y = rows(x, w, None, (2, 2))
    bad = ~np.isfinite(y)
    direct_reach = np.zeros_like(bad)
    direct_reach[0, :, 2:7, 3:8] = True
    direct_reach[1, :, 0:3, 0:3] = True
    segments = np.zeros_like(bad)   # padded column 7 lies in segments 0 and 1; 2 in 0
    segments[0, :, 2:7, 0:8] = True
    segments[1, :, 0:3, 0:4] = True
    assert bad[direct_reach].all() and not bad[~segments].any()
    clean = x.copy()
    clean[0, 3, 4, 5] = clean[1, 7, 0, 0] = 0
    ref = direct(clean, w, None, (2, 2))
    assert np.abs(y - ref)[~segments].max() < F32_TOL * np.abs(ref).max()


def test_bad_input():
    w = np.ones((4, 3, 5, 5), np.float32)
    out = np.zeros((1, 4, 5, 5), np.float32)
    x = Buffer.wrap(np.ones((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="weight"):   # a 3x3 weight buffer for a 5x5 call
        wg.forward_rows(x, 0, Buffer.wrap(np.ones((4, 3, 3, 3), np.float32)), 0, None, 0,
                        Buffer.wrap(out), (1, 3, 5, 5), 4, (2, 2), 4)
    with pytest.raises(ValueError, match="5x5 kernel does not fit"):
        wg.forward_rows(x, 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), (1, 3, 3, 3), 4,
                        (0, 0), 4)
    with pytest.raises(ValueError, match="output"):   # room for a 1x1 map, not 5x5
        wg.forward_rows(x, 0, Buffer.wrap(w), 0, None, 0,
                        Buffer.wrap(np.zeros((1, 4, 1, 1), np.float32)), (1, 3, 5, 5), 4,
                        (2, 2), 4)
    with pytest.raises(ValueError, match="itemsize|item size"):
        wg.forward_rows(x, 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), (1, 3, 5, 5), 4,
                        (0, 0), 2)


def test_workspace_is_bounded():
    """Per thread: a block's transformed rows and 8 products (blocks of whole images, up
    to 256 tiles); the transformed filters once (8 x 5 x C x K)."""
    one, two = (wg.rows_workspace_bytes((64, 128, 16, 16), 128, (2, 2), 4, t) for t in (1, 2))
    mr = matmul.blocking()["mr"]   # the kernel set's A panels
    filters = 8 * 5 * 128 * (128 + (-128) % mr) * 4
    assert filters < one and two - one == one - filters and one - filters < 4 << 20
    mnist = wg.rows_workspace_bytes((100, 32, 14, 14), 64, (2, 2), 4, 2)
    assert mnist < 2 << 20


# every kernel set this CPU runs, each in a fresh process --------------------------------
ISA_CHECK = r"""
import json
import numpy as np
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
wg = _isa.variant("winograd")
rng = np.random.default_rng(2)
worst = {}
for dt in ("float32",):
    for c, k, h, wd, pad in ((3, 5, 7, 9, 2), (33, 70, 11, 10, 1), (24, 32, 14, 14, 2)):
        x = rng.standard_normal((3, c, h, wd)).astype(dt)
        w = rng.standard_normal((k, c, 5, 5)).astype(dt)
        oh, ow = h + 2 * pad - 4, wd + 2 * pad - 4
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        ref = sum(np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
                  for i in range(5) for j in range(5))
        out = np.full(ref.shape, np.nan, dt)
        wg.forward_rows(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out),
                        x.shape, k, (pad, pad), x.dtype.itemsize)
        e = np.abs(out - ref).max() / np.abs(ref).max()
        worst[dt] = max(worst.get(dt, 0.0), float(e))
print(json.dumps({"active": _isa.active(), "worst": worst}))
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512bf16"])
def test_every_kernel_set(isa):
    if isa not in _isa.supported():
        pytest.skip(f"this CPU or build does not run {isa}")
    got = run_under_isa(ISA_CHECK, isa, threads=2)
    assert got["active"] == isa
    assert got["worst"]["float32"] < F32_TOL


# the backend -----------------------------------------------------------------------------
def test_default_rule(monkeypatch):
    """5x5 stride-1 layers with 24 to 128 channels in and out, on maps whose workspace
    fits; MININET_WINOGRAD_ROWS=0 or MININET_WINOGRAD=0 turns it off."""
    fits = cpu_backend._wrows_fits
    monkeypatch.delenv("MININET_WINOGRAD_ROWS", raising=False)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    geo = ((1, 1), (2, 2), (1, 1), 1)
    assert fits((64, 32, 5, 5), *geo, (64, 32, 16, 16), 4)
    assert fits((24, 128, 5, 5), *geo, (8, 128, 56, 56), 4)
    assert not fits((32, 16, 5, 5), *geo, (100, 16, 14, 14), 4)   # MNIST's conv2
    assert not fits((16, 32, 5, 5), *geo, (100, 32, 14, 14), 4)   # its input gradient
    assert not fits((256, 256, 5, 5), *geo, (32, 256, 16, 16), 4)
    assert not fits((64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, (8, 64, 16, 16), 4)
    assert not fits((64, 64, 5, 5), (2, 2), (2, 2), (1, 1), 1, (8, 64, 16, 16), 4)
    assert not fits((64, 64, 5, 5), (1, 1), (2, 2), (2, 2), 1, (8, 64, 16, 16), 4)
    assert not fits((64, 32, 5, 5), (1, 1), (2, 2), (1, 1), 2, (8, 64, 16, 16), 4)
    assert not fits((64, 64, 5, 5), *geo, (1, 64, 1000, 1000), 4)   # workspace too big
    monkeypatch.setenv("MININET_WINOGRAD_ROWS", "0")
    assert not fits((64, 32, 5, 5), *geo, (64, 32, 16, 16), 4)
    monkeypatch.setenv("MININET_WINOGRAD_ROWS", "1")
    monkeypatch.setenv("MININET_WINOGRAD", "0")
    assert not fits((64, 32, 5, 5), *geo, (64, 32, 16, 16), 4)


@pytest.fixture
def counted(monkeypatch):
    """The conv ops on the fused kernels at any map size, counting forward_rows calls
    (False: a forward, True: an input gradient)."""
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)
    monkeypatch.delenv("MININET_WINOGRAD_ROWS", raising=False)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    monkeypatch.setenv("MININET_WINOGRAD_CL", "0")   # float32 forwards: not forward_cl
    calls = []
    real = wg.forward_rows

    def spy(*args, **kw):
        calls.append(bool(args[11]) if len(args) > 11 else False)
        return real(*args, **kw)
    monkeypatch.setattr(cpu_backend._wino, "forward_rows", spy)
    return calls


@pytest.mark.torch
@pytest.mark.parametrize("shape,pad", [((2, 24, 9, 11, 32), 2), ((3, 32, 7, 6, 24), 1),
                                       ((1, 40, 12, 5, 30), 4)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_ops_match_torch(shape, pad, dtype, counted):
    conv_vs_torch(rng, shape, 5, pad, dtype)
    # the forward and the input gradient; float64 takes the implicit GEMM
    assert counted == ([False, True] if dtype == "float32" else [])


@pytest.mark.torch
def test_conv_relu_float32(counted):
    """The fused conv + ReLU (nn.functional.relu of a conv) on this path."""
    from mininet.nn import functional as mf
    x = rng.standard_normal((4, 32, 10, 10)).astype("float32")
    w = (rng.standard_normal((48, 32, 5, 5)) / 10).astype("float32")
    b = rng.standard_normal(48).astype("float32")
    got = mf.relu(mf.conv2d(Tensor(x, dtype="float32"), Tensor(w, dtype="float32"),
                            Tensor(b, dtype="float32"), padding=2)).numpy()
    want = torch.relu(F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                               padding=2)).numpy()
    assert got.min() >= 0 and np.abs(got - want).max() < F32_TOL * np.abs(want).max()
    assert counted and counted[0] is False


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_functional_conv2d_second_order(dtype, counted):
    """d/dx of |d conv / dW|^2 and d/dW of |d conv / dx|^2 through
    mininet.nn.functional.conv2d, against PyTorch in float64 (float32: to 1e-4 of the
    largest magnitude, on this path)."""
    from mininet.nn import functional as mf
    x, w = rng.standard_normal((2, 24, 8, 7)), rng.standard_normal((32, 24, 5, 5))
    b = rng.standard_normal(32)
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    mx, mw, mb = (Tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
    y = mf.conv2d(mx, mw, mb, padding=2)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g, dtype=dtype), create_graph=True)
    gw, gx = mw.grad, mx.grad
    mx.grad = mw.grad = None
    ((gw * gw).sum() + (gx * gx).sum()).backward()
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, padding=2)
    tgx, tgw = torch.autograd.grad(ty, (tx, tw), torch.tensor(g, dtype=torch.float64),
                                   create_graph=True)
    ((tgw * tgw).sum() + (tgx * tgx).sum()).backward()
    pairs = ((gw, tgw), (gx, tgx), (mx.grad, tx.grad), (mw.grad, tw.grad))
    for got, want in ((m.numpy(), t.detach().numpy()) for m, t in pairs):
        close_in_dtype(got, want, dtype, 1e-9)
    if dtype == "float32":
        assert False in counted and True in counted
    else:
        assert counted == []
