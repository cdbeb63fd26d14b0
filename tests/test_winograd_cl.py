"""Winograd F(2x2, 5x5) with channels in the vectors (mininet_ext/winograd.pyx forward_cl,
_winograd5_cl.h): the kernel against a float64 direct convolution on odd maps, paddings,
channel and filter counts (whole vectors, part ones, chunks of tiles cut at the band's
end), bands of tile rows, threads, on every kernel set this CPU runs; the CPU backend's
rule; and the conv ops that take it against PyTorch, to the second order."""
import importlib

import numpy as np
import pytest

from mininet.autograd import Tensor
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
from conftest import run_under_isa, t64, torch
from test_winograd5 import direct, rel_err   # the float64 tap-by-tap reference

wg = _isa.variant("winograd")   # as built for this process's kernel set
cpu_backend = importlib.import_module("mininet.backend.cpu")
F = torch.nn.functional if torch is not None else None
rng = np.random.default_rng(46)

# Error bound relative to the output's largest magnitude (N(0, 1) data): the same six
# points as the tile-major F(2x2, 5x5); measured up to 4.6e-6 at 16-128 channels.
F32_TOL = 2e-5


def cl(x, w, b, pad, flip=False, relu=False):
    """The kernel on numpy arrays; the output starts as NaN, so a pixel it misses shows."""
    k = w.shape[1] if flip else w.shape[0]
    n, c, h, wd = x.shape
    out = np.full((n, k, h + 2 * pad[0] - 4, wd + 2 * pad[1] - 4), np.nan, x.dtype)
    wg.forward_cl(Buffer.wrap(np.ascontiguousarray(x)), 0,
                  Buffer.wrap(np.ascontiguousarray(w)), 0,
                  None if b is None else Buffer.wrap(b), 0, Buffer.wrap(out), x.shape, k,
                  pad, x.dtype.itemsize, flip, relu)
    return out


def cl_dw(x, dy, pad):
    """The weight-gradient kernel on numpy arrays (dw starts as NaN)."""
    k, c = dy.shape[1], x.shape[1]
    dw = np.full((k, c, 5, 5), np.nan, np.float32)
    wg.weight_grad_cl(Buffer.wrap(np.ascontiguousarray(dy)), 0,
                      Buffer.wrap(np.ascontiguousarray(x)), 0, Buffer.wrap(dw), x.shape, k,
                      pad, 4)
    return dw


def direct_dw(x, dy, pad):
    """dw[k, c, i, j] = sum over n, y, x of dy[n, k, y, x] * xpad[n, c, y + i, x + j] in
    float64."""
    oh, ow = dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    dw = np.zeros((dy.shape[1], x.shape[1], 5, 5))
    for i in range(5):
        for j in range(5):
            dw[:, :, i, j] = np.einsum("nkhw,nchw->kc", dy, xp[:, :, i:i + oh, j:j + ow])
    return dw


@pytest.mark.parametrize("hw", [(1, 1), (5, 5), (7, 9), (14, 14), (3, 17), (16, 13)])
@pytest.mark.parametrize("pad", [(0, 0), (2, 2), (1, 3), (4, 4)])
@pytest.mark.parametrize("c,k", [(1, 1), (3, 5), (16, 32), (17, 33), (40, 13), (12, 48),
                                 (24, 68)])
def test_kernel_matches_direct(hw, pad, c, k):
    """Forward with bias, the input-gradient form (flipped, swapped filters) and the
    fused ReLU. Odd maps clip the last tile row or column; C and K off the vector width
    leave zero lanes; K of one vector takes the wide chunks, 48 and 68 end on one."""
    if hw[0] + 2 * pad[0] < 5 or hw[1] + 2 * pad[1] < 5:
        pytest.skip("the kernel does not fit")
    x = rng.standard_normal((2, c, *hw)).astype("float32")
    w = rng.standard_normal((k, c, 5, 5)).astype("float32")
    b = rng.standard_normal(k).astype("float32")
    ref = direct(x, w, b, pad)
    assert rel_err(cl(x, w, b, pad), ref) < F32_TOL
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert rel_err(cl(x, wt, None, pad, flip=True), direct(x, w, None, pad)) < F32_TOL
    got = cl(x, w, b, pad, relu=True)
    assert got.min() >= 0 and rel_err(got, np.maximum(ref, 0)) < F32_TOL
    dy = rng.standard_normal(ref.shape).astype("float32")
    assert rel_err(cl_dw(x, dy, pad), direct_dw(x, dy, pad)) < F32_TOL


def test_bands_threads_and_empty():
    """A map wide enough to cut each image into bands of tile rows (the last one
    shorter), a batch the threads share unevenly, the same bits on 1 and 2 threads, and
    an empty batch."""
    import mininet
    x = rng.standard_normal((3, 32, 70, 200)).astype("float32")   # bands of 2 tile rows, 1
    w = rng.standard_normal((40, 32, 5, 5)).astype("float32")
    b = rng.standard_normal(40).astype("float32")
    assert wg.cl_workspace_bytes(x.shape, 40, (2, 2)) < wg.cl_workspace_bytes(
        (3, 32, 70, 30), 40, (2, 2)) * 10   # banded: not the whole 70-row image
    old = mininet.get_num_threads()
    try:
        mininet.set_num_threads(2)
        two = cl(x, w, b, (2, 2))
        mininet.set_num_threads(1)
        one = cl(x, w, b, (2, 2))
    finally:
        mininet.set_num_threads(old)
    assert rel_err(two, direct(x, w, b, (2, 2))) < F32_TOL
    np.testing.assert_array_equal(one, two)
    dy = rng.standard_normal(two.shape).astype("float32")
    assert wg.cl_weight_grad_workspace_bytes(x.shape, 40, (2, 2)) < 4 << 20   # banded
    try:
        mininet.set_num_threads(2)
        dw = cl_dw(x, dy, (2, 2))   # the two threads' sums added at the end
    finally:
        mininet.set_num_threads(old)
    assert rel_err(dw, direct_dw(x, dy, (2, 2))) < F32_TOL
    x = rng.standard_normal((5, 16, 14, 14)).astype("float32")
    w = rng.standard_normal((32, 16, 5, 5)).astype("float32")
    assert rel_err(cl(x, w, None, (2, 2)), direct(x, w, None, (2, 2))) < F32_TOL
    assert cl(np.ones((0, 16, 9, 9), np.float32), w, None, (2, 2)).shape == (0, 32, 9, 9)


def test_nan_and_inf_stay_near_their_outputs():
    """An inf or NaN in the input makes every output whose window holds it non-finite, as
    the direct sum does, and, through the transforms, the other outputs of the 2x2 tiles
    whose 6x6 patches hold it (Winograd's reach), nothing beyond; the fused ReLU keeps
    NaN."""
    x = rng.standard_normal((2, 16, 11, 12)).astype("float32")
    x[0, 3, 4, 5] = np.inf
    x[1, 7, 0, 0] = np.nan
    w = rng.standard_normal((32, 16, 5, 5)).astype("float32")
    y = cl(x, w, None, (2, 2))
    bad = ~np.isfinite(y)
    direct_reach = np.zeros_like(bad)
    direct_reach[0, :, 2:7, 3:8] = True
    direct_reach[1, :, 0:3, 0:3] = True
    # padded (6, 7) lies in the patches of tile rows 1-3, tile columns 1-3; (2, 2) in 0-1
    tiles = np.zeros_like(bad)
    tiles[0, :, 2:8, 2:8] = True
    tiles[1, :, 0:4, 0:4] = True
    assert bad[direct_reach].all() and not bad[~tiles].any()
    clean = x.copy()
    clean[0, 3, 4, 5] = clean[1, 7, 0, 0] = 0
    ref = direct(clean, w, None, (2, 2))
    assert np.abs(y - ref)[~tiles].max() < F32_TOL * np.abs(ref).max()
    assert np.isnan(cl(x, w, None, (2, 2), relu=True)[1, :, 0, 0]).all()


def test_bad_input():
    w = np.ones((4, 3, 5, 5), np.float32)
    out = np.zeros((1, 4, 5, 5), np.float32)
    x = Buffer.wrap(np.ones((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="weight"):   # a 3x3 weight buffer for a 5x5 call
        wg.forward_cl(x, 0, Buffer.wrap(np.ones((4, 3, 3, 3), np.float32)), 0, None, 0,
                      Buffer.wrap(out), (1, 3, 5, 5), 4, (2, 2), 4)
    with pytest.raises(ValueError, match="5x5 kernel does not fit"):
        wg.forward_cl(x, 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out), (1, 3, 3, 3), 4,
                      (0, 0), 4)
    with pytest.raises(ValueError, match="output"):   # room for a 1x1 map, not 5x5
        wg.forward_cl(x, 0, Buffer.wrap(w), 0, None, 0,
                      Buffer.wrap(np.zeros((1, 4, 1, 1), np.float32)), (1, 3, 5, 5), 4,
                      (2, 2), 4)
    x64 = Buffer.wrap(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="float32 only"):
        wg.forward_cl(x64, 0, Buffer.wrap(np.ones((4, 3, 5, 5))), 0, None, 0,
                      Buffer.wrap(np.zeros((1, 4, 5, 5))), (1, 3, 5, 5), 4, (2, 2), 8)
    with pytest.raises(ValueError, match="output grad"):
        wg.weight_grad_cl(Buffer.wrap(np.zeros((1, 4, 1, 1), np.float32)), 0, x, 0,
                          Buffer.wrap(w), (1, 3, 5, 5), 4, (2, 2), 4)
    with pytest.raises(ValueError, match="weight grad"):
        wg.weight_grad_cl(Buffer.wrap(out), 0, x, 0, Buffer.wrap(np.zeros((4, 3, 3, 3),
                          np.float32)), (1, 3, 5, 5), 4, (2, 2), 4)
    with pytest.raises(ValueError, match="float32 only"):
        wg.weight_grad_cl(Buffer.wrap(np.zeros((1, 4, 5, 5))), 0, x64, 0,
                          Buffer.wrap(np.zeros((4, 3, 5, 5))), (1, 3, 5, 5), 4, (2, 2), 8)
    with pytest.raises(ValueError, match="zero input channels"):
        wg.forward_cl(Buffer.wrap(np.ones((1, 0, 5, 5), np.float32)), 0,
                      Buffer.wrap(np.ones((4, 0, 5, 5), np.float32)), 0, None, 0,
                      Buffer.wrap(out), (1, 0, 5, 5), 4, (2, 2), 4)


def test_workspace_is_bounded():
    """Per thread a band of padded input rows and outputs (CL_BAND_BYTES, at least one tile
    row) and one chunk's transforms; the transformed filters once (36 x C x K)."""
    one, two = (wg.cl_workspace_bytes((100, 16, 14, 14), 32, (2, 2), t) for t in (1, 2))
    filters = 4 * (36 * 16 * 32 + 32)
    assert filters < one and two - one == one - filters and one - filters < 1 << 20
    tall = wg.cl_workspace_bytes((1, 64, 4096, 64), 64, (2, 2))
    assert tall < 2 << 20   # banded
    # the weight gradient: per thread its sums (36 x K x C) and one band's tiles
    one, two = (wg.cl_weight_grad_workspace_bytes((100, 16, 14, 14), 32, (2, 2), t)
                for t in (1, 2))
    assert two == 2 * one and 36 * 32 * 16 * 4 < one < 1 << 20
    assert wg.cl_weight_grad_workspace_bytes((1, 64, 4096, 64), 64, (2, 2)) < 2 << 20


# every kernel set this CPU runs, each in a fresh process --------------------------------
ISA_CHECK = r"""
import json
import numpy as np
from mininet_ext import _isa
from mininet_ext.buffer import Buffer
wg = _isa.variant("winograd")
rng = np.random.default_rng(3)
worst = 0.0
for c, k, h, wd, pad in ((3, 5, 7, 9, 2), (33, 70, 11, 10, 1), (16, 32, 14, 14, 2),
                         (32, 16, 14, 14, 2)):
    x = rng.standard_normal((3, c, h, wd)).astype("float32")
    w = rng.standard_normal((k, c, 5, 5)).astype("float32")
    oh, ow = h + 2 * pad - 4, wd + 2 * pad - 4
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ref = sum(np.einsum("nchw,kc->nkhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
              for i in range(5) for j in range(5))
    out = np.full(ref.shape, np.nan, np.float32)
    wg.forward_cl(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(out),
                  x.shape, k, (pad, pad), 4)
    worst = max(worst, float(np.abs(out - ref).max() / np.abs(ref).max()))
    dy = rng.standard_normal(ref.shape).astype("float32")
    dref = np.stack([np.stack([np.einsum("nkhw,nchw->kc", dy, xp[:, :, i:i + oh, j:j + ow])
                               for j in range(5)], -1) for i in range(5)], -2)
    dw = np.full(dref.shape, np.nan, np.float32)
    wg.weight_grad_cl(Buffer.wrap(dy), 0, Buffer.wrap(x), 0, Buffer.wrap(dw), x.shape, k,
                      (pad, pad), 4)
    worst = max(worst, float(np.abs(dw - dref).max() / np.abs(dref).max()))
print(json.dumps({"active": _isa.active(), "worst": worst}))
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512bf16"])
def test_every_kernel_set(isa):
    if isa not in _isa.supported():
        pytest.skip(f"this CPU or build does not run {isa}")
    got = run_under_isa(ISA_CHECK, isa, threads=2)
    assert got["active"] == isa and got["worst"] < F32_TOL


# the backend -----------------------------------------------------------------------------
def test_default_rule(monkeypatch):
    """5x5 stride-1 float32 forwards with 12-96 channels in and 32-128 filters (input
    gradients: also 8-16 filters from 32 channels; weight gradients: 12-128 channels and
    filters, C K <= 96 x 128); MININET_WINOGRAD_CL=0 or MININET_WINOGRAD=0 turns it
    off."""
    fits = cpu_backend._wcl_fits
    monkeypatch.delenv("MININET_WINOGRAD_CL", raising=False)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    geo = ((1, 1), (2, 2), (1, 1), 1)
    assert fits((32, 16, 5, 5), *geo, (100, 16, 14, 14))   # MNIST's conv2
    assert fits((128, 96, 5, 5), *geo, (64, 96, 16, 16))
    assert fits((32, 12, 5, 5), (1, 1), (0, 0), (1, 1), 1, (8, 12, 5, 5))
    assert not fits((16, 32, 5, 5), *geo, (100, 32, 14, 14))   # one vector of filters
    # input gradients: also 8-16 filters from exactly 32 channels (MNIST's conv2: 32 -> 16)
    assert fits((16, 32, 5, 5), *geo, (100, 32, 14, 14), grad_input=True)
    assert fits((8, 32, 5, 5), *geo, (100, 32, 14, 14), grad_input=True)
    assert fits((48, 32, 5, 5), *geo, (64, 32, 16, 16), grad_input=True)
    assert not fits((24, 32, 5, 5), *geo, (64, 32, 16, 16), grad_input=True)
    assert not fits((16, 64, 5, 5), *geo, (64, 64, 16, 16), grad_input=True)
    assert not fits((16, 16, 5, 5), *geo, (100, 16, 14, 14), grad_input=True)
    assert not fits((32, 8, 5, 5), *geo, (100, 8, 14, 14))
    assert not fits((128, 128, 5, 5), *geo, (64, 128, 16, 16))
    assert not fits((256, 64, 5, 5), *geo, (64, 64, 16, 16))
    assert not fits((64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, (8, 64, 16, 16))
    assert not fits((64, 64, 5, 5), (2, 2), (2, 2), (1, 1), 1, (8, 64, 16, 16))
    assert not fits((64, 64, 5, 5), (1, 1), (2, 2), (2, 2), 1, (8, 64, 16, 16))
    assert not fits((64, 32, 5, 5), (1, 1), (2, 2), (1, 1), 2, (8, 64, 16, 16))
    assert not fits((32, 16, 5, 5), (1, 1), (0, 0), (1, 1), 1, (8, 16, 4, 9))
    # weight gradients: 12-128 channels and filters, C K <= 96 x 128
    assert fits((32, 16, 5, 5), *geo, (100, 16, 14, 14), grad_weight=True)
    assert fits((96, 128, 5, 5), *geo, (64, 128, 16, 16), grad_weight=True)
    assert fits((16, 32, 5, 5), *geo, (64, 32, 16, 16), grad_weight=True)
    assert fits((32, 12, 5, 5), *geo, (100, 12, 14, 14), grad_weight=True)
    assert not fits((128, 128, 5, 5), *geo, (64, 128, 16, 16), grad_weight=True)
    assert not fits((32, 8, 5, 5), *geo, (100, 8, 14, 14), grad_weight=True)
    assert not fits((256, 64, 5, 5), *geo, (64, 64, 16, 16), grad_weight=True)
    monkeypatch.setenv("MININET_WINOGRAD_CL", "0")
    assert not fits((32, 16, 5, 5), *geo, (100, 16, 14, 14))
    assert not fits((32, 16, 5, 5), *geo, (100, 16, 14, 14), grad_weight=True)
    monkeypatch.setenv("MININET_WINOGRAD_CL", "1")
    monkeypatch.setenv("MININET_WINOGRAD", "0")
    assert not fits((32, 16, 5, 5), *geo, (100, 16, 14, 14))


def test_rule_is_cached_per_layer_and_follows_patched_bounds(monkeypatch):
    """The shape rule (with its Cython workspace geometry) is asked once a layer; a
    patched bound or the workspace limit still changes the answer."""
    monkeypatch.delenv("MININET_WINOGRAD_CL", raising=False)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    fits, rule = cpu_backend._wcl_fits, cpu_backend._wcl_rule
    layer = ((32, 16, 5, 5), (1, 1), (2, 2), (1, 1), 1, (100, 16, 14, 14))
    assert fits(*layer)
    hits = rule.cache_info().hits
    assert fits(*layer) and rule.cache_info().hits == hits + 1
    monkeypatch.setattr(cpu_backend, "WCL_MIN_CHANNELS", 24)
    assert not fits(*layer)
    monkeypatch.setattr(cpu_backend, "WCL_MIN_CHANNELS", 12)
    monkeypatch.setattr(cpu_backend, "WROWS_MAX_BYTES", 1024)   # the workspace outgrows it
    assert not fits(*layer) and not fits(*layer, grad_weight=True)
    monkeypatch.undo()
    assert fits(*layer) and fits(*layer, grad_weight=True)


@pytest.fixture
def counted(monkeypatch):
    """The conv ops on the fused kernels at any map size, counting forward_cl calls (by
    their input's shape) and weight_grad_cl ones (("dw", x's shape))."""
    from mininet.backend.cpu import CPUDevice
    monkeypatch.setattr(CPUDevice, "conv2d_min_pixels", 0)
    monkeypatch.delenv("MININET_WINOGRAD_CL", raising=False)
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    calls = []
    real = wg.forward_cl

    def spy(*args, **kw):
        calls.append(args[7])
        return real(*args, **kw)

    def spy_dw(*args, **kw):
        calls.append(("dw", args[5]))
        return real_dw(*args, **kw)
    real_dw = wg.weight_grad_cl
    monkeypatch.setattr(cpu_backend._wino, "forward_cl", spy)
    monkeypatch.setattr(cpu_backend._wino, "weight_grad_cl", spy_dw)
    return calls


@pytest.mark.torch
def test_mnist_conv2_with_relu_and_gradients(counted):
    """MNIST's conv2 (float32, fused ReLU) forward, input and weight gradients on this path
    against PyTorch; float64 stays off it."""
    from mininet.nn import functional as mf
    x = rng.standard_normal((6, 16, 14, 14)).astype("float32")
    w = (rng.standard_normal((32, 16, 5, 5)) / 10).astype("float32")
    b = rng.standard_normal(32).astype("float32")
    mx, mw, mb = (Tensor(a, dtype="float32", requires_grad=True) for a in (x, w, b))
    y = mf.relu(mf.conv2d(mx, mw, mb, padding=2))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.relu(F.conv2d(tx, tw, tb, padding=2))
    assert counted == [(6, 16, 14, 14)]
    want = ty.detach().numpy()
    assert np.abs(y.numpy() - want).max() < F32_TOL * np.abs(want).max()
    g = rng.standard_normal(want.shape).astype("float32")
    y.backward(Tensor(g, dtype="float32"))
    ty.backward(torch.tensor(g))
    assert sorted(map(str, counted)) == sorted(map(str, [
        (6, 16, 14, 14), (6, 32, 14, 14), ("dw", (6, 16, 14, 14))]))   # dx: 32 -> 16
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        ref = t.grad.numpy()
        assert np.abs(m.grad.numpy() - ref).max() < 1e-4 * np.abs(ref).max()
    del counted[:]
    mf.conv2d(t64(x), t64(w), t64(b), padding=2)
    assert counted == []


@pytest.mark.torch
def test_second_order_through_the_forward(counted):
    """d/dx of |d conv / dW|^2 and d/dW of |d conv / dx|^2 in float32 where the forward
    runs here, against PyTorch."""
    from mininet.nn import functional as mf
    x = rng.standard_normal((2, 16, 9, 8)).astype("float32")
    w = (rng.standard_normal((32, 16, 5, 5)) / 10).astype("float32")
    mx, mw = (Tensor(a, dtype="float32", requires_grad=True) for a in (x, w))
    y = mf.conv2d(mx, mw, None, padding=2)
    assert counted
    g = rng.standard_normal(y.shape).astype("float32")
    y.backward(Tensor(g, dtype="float32"), create_graph=True)
    gw, gx = mw.grad, mx.grad
    mx.grad = mw.grad = None
    ((gw * gw).sum() + (gx * gx).sum()).backward()
    tx, tw = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w))
    ty = F.conv2d(tx, tw, None, padding=2)
    tgx, tgw = torch.autograd.grad(ty, (tx, tw), torch.tensor(g.astype(np.float64)),
                                   create_graph=True)
    ((tgw * tgw).sum() + (tgx * tgx).sum()).backward()
    for m, t in ((mx, tx), (mw, tw)):
        ref = t.grad.numpy()
        assert np.abs(m.grad.numpy() - ref).max() < 1e-4 * np.abs(ref).max()
