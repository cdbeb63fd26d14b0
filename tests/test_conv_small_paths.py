"""Small convolution layers (ResNet9's late stages): the 1x1-map GEMM path of ops/conv.py
against PyTorch (float64, first and second order, views, empty batches, bf16 autocast),
the NHWC kernels reading PyTorch's weight layout in place, the vector-block NCHW <-> NHWC
relayout against numpy, and the cached routing answer (conv2d_small) against the
switches and rules that tests flip."""
import importlib

import numpy as np
import pytest

import mininet as mn
from mininet.autograd import Tensor
from mininet.backend.cpu import CPUDevice, cpu
from mininet.ndarray import NDArray
from mininet.ops import conv
from mininet.ops.conv_fused import conv_relu

torch = pytest.importorskip("torch")
F = torch.nn.functional
cpu_mod = importlib.import_module("mininet.backend.cpu")
conv_mod = importlib.import_module("mininet.ops.conv")
buffer = importlib.import_module("mininet_ext.buffer")

# (N, C, H, W, K, k, stride, pad): 1x1 output maps; the first two are ResNet9's layers
DENSE = [(5, 12, 1, 1, 7, 3, 1, 1),     # one live tap (3x3 pad 1 on a 1x1 map)
         (4, 6, 2, 2, 9, 3, 2, 1),      # 2x2 live taps of 3x3: W's window copied
         (3, 5, 1, 1, 4, 1, 1, 0),      # a 1x1 kernel on a 1x1 map
         (3, 4, 3, 3, 6, 3, 1, 0),      # the kernel is the image: the whole weight
         (2, 3, 1, 1, 5, 5, 2, 2),      # one tap of 5x5, stride 2
         (3, 4, 2, 1, 5, 3, 2, 1)]      # 2 taps by 1
IDS = [str(c) for c in DENSE]


def _case(case, dtype=np.float64, seed=0):
    n, c, h, w, k, ks, s, p = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, h, w)).astype(dtype),
            rng.standard_normal((k, c, ks, ks)).astype(dtype),
            rng.standard_normal(k).astype(dtype))


def _torch(x, w, b, s, p, g, relu=False):
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, s, p)
    ty = torch.relu(ty) if relu else ty
    ty.backward(torch.tensor(g, dtype=torch.float64))
    return [a.detach().numpy() for a in (ty, tx.grad, tw.grad, tb.grad)]


def _mine(x, w, b, s, p, g, relu=False, dtype="float64"):
    mx, mw, mb = (Tensor(a, dtype=dtype, requires_grad=True) for a in (x, w, b))
    y = (conv_relu if relu else conv)(mx, mw, mb, s, p)
    (y * Tensor(g, dtype=dtype)).sum().backward()
    return [a.numpy() for a in (y, mx.grad, mw.grad, mb.grad)]


@pytest.fixture
def counted(monkeypatch):
    """Counts the device's im2col and implicit-GEMM calls: the dense path makes none."""
    calls = []
    for name in ("im2col", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "to_nchw"):
        orig = getattr(CPUDevice, name)

        def spy(self, *a, _orig=orig, _name=name, **kw):
            calls.append(_name)
            return _orig(self, *a, **kw)
        monkeypatch.setattr(CPUDevice, name, spy)
    return calls


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", DENSE, ids=IDS)
def test_dense_matches_torch(case, relu, counted):
    x, w, b = _case(case)
    s, p = case[6], case[7]
    g = np.random.default_rng(1).standard_normal((case[0], case[4], 1, 1))
    assert conv_mod._dense_taps(cpu(), x.shape, w.shape, conv_mod.ConvParams(s, p), 1, 1)
    # the forward and both gradients: one GEMM each (W's live taps copied where they
    # are neither one nor all), no im2col, no implicit-GEMM kernel
    for got, ref in zip(_mine(x, w, b, s, p, g, relu), _torch(x, w, b, s, p, g, relu)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert counted == []


@pytest.mark.parametrize("case", DENSE, ids=IDS)
def test_dense_float32(case):
    x, w, b = _case(case, np.float32)
    s, p = case[6], case[7]
    g = np.random.default_rng(2).standard_normal((case[0], case[4], 1, 1)).astype(np.float32)
    terms = case[1] * case[5] ** 2
    for got, ref in zip(_mine(x, w, b, s, p, g, dtype="float32"), _torch(x, w, b, s, p, g)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * terms)


@pytest.mark.parametrize("case", DENSE, ids=IDS)
def test_dense_second_order(case):
    """Gradients of gradients: ConvGradInput / ConvGradWeight of a 1x1 map run the same
    GEMM path, checked against torch's double backward."""
    x, w, b = _case(case, seed=3)
    s, p = case[6], case[7]
    mx, mw, mb = (Tensor(a, dtype="float64", requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv(mx, mw, mb, s, p)
    ty = F.conv2d(tx, tw, tb, s, p)
    gx, gw = mn.autograd.grad((y * y).sum(), [mx, mw], create_graph=True)
    tgx, tgw = torch.autograd.grad((ty * ty).sum(), [tx, tw], create_graph=True)
    ((gx * gx).sum() + (gw * gw).sum()).backward()
    ((tgx * tgx).sum() + (tgw * tgw).sum()).backward()
    for got, ref in ((mx.grad, tx.grad), (mw.grad, tw.grad), (mb.grad, tb.grad)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-10, atol=1e-10)


def test_dense_reads_views():
    """A non-compact input (a permuted array) and weight (a slice of a larger one)."""
    x, w, b = _case((4, 6, 2, 2, 9, 3, 2, 1), seed=4)
    g = np.random.default_rng(5).standard_normal((4, 9, 1, 1))
    mxt = Tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), dtype="float64",
                 requires_grad=True)
    mwb = Tensor(np.concatenate([w, w[:2]], axis=0), dtype="float64", requires_grad=True)
    mb = Tensor(b, dtype="float64", requires_grad=True)
    y = conv(mxt.permute((1, 0, 2, 3)), mwb[:9], mb, 2, 1)
    (y * Tensor(g, dtype="float64")).sum().backward()
    ty, tdx, tdw, tdb = _torch(x, w, b, 2, 1, g)
    np.testing.assert_allclose(y.numpy(), ty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mxt.grad.numpy(), tdx.transpose(1, 0, 2, 3), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(mwb.grad.numpy()[:9], tdw, rtol=1e-12, atol=1e-12)
    assert not mwb.grad.numpy()[9:].any()


@pytest.mark.parametrize("shape", [(0, 8, 1, 1, 4), (2, 0, 1, 1, 4), (2, 8, 1, 1, 0)])
def test_dense_empty(shape):
    n, c, h, w, k = shape
    x = Tensor(np.ones((n, c, h, w)), dtype="float64", requires_grad=True)
    wt = Tensor(np.ones((k, c, 3, 3)), dtype="float64", requires_grad=True)
    b = Tensor(np.full(k, 2.0), dtype="float64", requires_grad=True)
    y = conv(x, wt, b, 1, 1)
    assert y.shape == (n, k, 1, 1)
    np.testing.assert_array_equal(y.numpy(), np.full((n, k, 1, 1), 2.0))
    y.sum().backward()
    assert x.grad.shape == x.shape and wt.grad.shape == wt.shape
    np.testing.assert_array_equal(b.grad.numpy(), np.full(k, float(n)))


def test_dense_bf16_autocast():
    """Under bf16 autocast the GEMM rounds x and W to bf16 and sums in float32."""
    x, w, b = _case((8, 32, 2, 2, 16, 3, 2, 1), np.float32, seed=6)
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    with mn.autocast("bf16"):
        y = conv(mx, mw, mb, 2, 1)
    t64 = lambda a: torch.tensor(a, dtype=torch.float64)   # noqa: E731
    ref = F.conv2d(t64(x), t64(w), t64(b), 2, 1).numpy()
    scale = F.conv2d(t64(np.abs(x)), t64(np.abs(w)), None, 2, 1).numpy()
    assert np.all(np.abs(y.numpy() - ref) <= 2 * 2.0 ** -8 * scale + 1e-6)
    y.sum().backward()
    assert mw.grad.shape == w.shape and np.isfinite(mw.grad.numpy()).all()


def test_dense_rejects_bad_shapes():
    x = Tensor(np.ones((2, 3, 1, 1)), dtype="float64")
    with pytest.raises(ValueError, match="channels"):
        conv(x, Tensor(np.ones((4, 5, 3, 3)), dtype="float64"), None, 1, 1)
    with pytest.raises(ValueError, match="bias"):
        conv(x, Tensor(np.ones((4, 3, 3, 3)), dtype="float64"),
             Tensor(np.ones(5), dtype="float64"), 1, 1)


def test_dense_taps_rule():
    """Which layers are one GEMM: a 1x1 output whose window past the padding holds the
    image; not larger outputs, dilation or groups."""
    P = conv_mod.ConvParams
    dense = conv_mod._dense_taps
    dev = cpu()
    assert dense(dev, (64, 128, 1, 1), (128, 128, 3, 3), P(1, 1), 1, 1) == ((1, 2), (1, 2))
    assert dense(dev, (64, 64, 2, 2), (128, 64, 3, 3), P(2, 1), 1, 1) == ((1, 3), (1, 3))
    assert dense(dev, (2, 4, 3, 3), (5, 4, 3, 3), P(1, 0), 1, 1) == ((0, 3), (0, 3))
    assert dense(dev, (2, 4, 4, 4), (5, 4, 3, 3), P(2, 1), 2, 2) is None      # 2x2 output
    assert dense(dev, (2, 4, 1, 1), (4, 2, 3, 3), P(1, 1, groups=2), 1, 1) is None
    assert dense(dev, (2, 4, 1, 1), (5, 4, 3, 3), P(1, 2, dilation=2), 1, 1) is None


# the NHWC kernels on NCHW arrays: the weight read in PyTorch's layout --------------------
SWITCHED = [(3, 16, 8, 8, 32, 3, 2, 1), (2, 5, 7, 9, 37, 3, 2, 1), (2, 33, 4, 4, 70, 3, 1, 1),
            (2, 4, 5, 5, 3, 1, 1, 0), (2, 3, 6, 6, 17, 5, 2, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SWITCHED, ids=str)
def test_nhwc_reads_kcrs_weight(case, dtype, monkeypatch):
    """The forward and input grad with the switch forced on: the kernels pack the
    (K, C, kh, kw) weight in place (w_kcrs), from an offset into a larger buffer."""
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    x, w, b = _case(case, dtype, seed=8)
    s, p = case[6], case[7]
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = F.conv2d(tx, torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                  s, p)
    g = np.random.default_rng(9).standard_normal(ty.shape).astype(dtype)
    ty.backward(torch.tensor(g, dtype=torch.float64))
    wbig = NDArray(np.concatenate([np.zeros(5, dtype), w.ravel()]))[5:].reshape(w.shape)
    geo = ((s, s), (p, p), (1, 1), 1)
    out = NDArray.make(tuple(ty.shape), device=cpu(), dtype=np.dtype(dtype))
    cpu().conv2d(NDArray(x), wbig, NDArray(b), out, *geo)
    dx = NDArray.make(x.shape, device=cpu(), dtype=np.dtype(dtype))
    cpu().conv2d_grad_input(NDArray(g), wbig, dx, *geo)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out.numpy(), ty.detach().numpy(), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dx.numpy(), tx.grad.numpy(), rtol=tol, atol=tol * 10)


# the NCHW <-> NHWC relayout ---------------------------------------------------------------
RELAYOUT = [(64, 16, 8, 8), (3, 17, 5, 7), (2, 33, 4, 4), (1, 8, 1, 16), (5, 16, 16, 3),
            (2, 40, 9, 9), (0, 3, 2, 2), (4, 1, 1, 1), (2, 16, 4, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (2, 3, 1, 0), (3, 2, 0, 1)],
                         ids=str)
@pytest.mark.parametrize("shape", RELAYOUT, ids=str)
def test_relayout_matches_numpy(shape, perm, dtype):
    """Whole vector blocks, edge blocks and the scalar walk, with offsets on both sides."""
    a = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    pad = 3
    src = np.concatenate([np.full(pad, -1, dtype), a.ravel()])
    dst = np.full(a.size + 2 * pad, -2, dtype)
    sbuf, dbuf = buffer.Buffer.wrap(src), buffer.Buffer.wrap(dst)
    cpu_mod._transpose(sbuf, pad, shape, perm, dbuf, pad, a.itemsize)
    np.testing.assert_array_equal(dst[pad:pad + a.size].reshape([shape[p] for p in perm]),
                                  a.transpose(perm))
    assert (dst[:pad] == -2).all() and (dst[pad + a.size:] == -2).all()   # nothing past


# the routing answer, cached -----------------------------------------------------------------
GEO1 = ((1, 1), (1, 1), (1, 1), 1)


def test_route_follows_the_switches(monkeypatch):
    """conv2d_small's cached answer changes when MININET_WINOGRAD flips or a test patches
    the rule's bounds: the cache key holds them."""
    dev = cpu()
    monkeypatch.delenv("MININET_WINOGRAD", raising=False)
    monkeypatch.delenv("MININET_CONV_NHWC", raising=False)
    wshape = (32, 32, 3, 3)
    assert dev.conv2d_small(wshape, GEO1, 16, out_hw=(4, 4))             # Winograd
    monkeypatch.setenv("MININET_WINOGRAD", "0")
    assert not dev.conv2d_small(wshape, GEO1, 16, out_hw=(4, 4))
    monkeypatch.setenv("MININET_WINOGRAD", "1")
    assert dev.conv2d_small(wshape, GEO1, 16, out_hw=(4, 4))
    monkeypatch.setattr(cpu_mod, "WINOGRAD_MIN_CHANNELS", 64)
    assert not dev.conv2d_small(wshape, GEO1, 16, out_hw=(4, 4))
    monkeypatch.setattr(cpu_mod, "WINOGRAD_MIN_CHANNELS", 32)
    geo2 = ((2, 2), (1, 1), (1, 1), 1)
    assert dev.conv2d_small((64, 32, 3, 3), geo2, 4, out_hw=(2, 2))      # NHWC rule
    monkeypatch.setenv("MININET_CONV_NHWC", "0")
    assert not dev.conv2d_small((64, 32, 3, 3), geo2, 4, out_hw=(2, 2))


def test_env_reads_the_live_environment(monkeypatch):
    monkeypatch.setenv("MININET_CONV_NHWC", "1")
    assert cpu_mod._env("MININET_CONV_NHWC") == "1"
    monkeypatch.delenv("MININET_CONV_NHWC")
    assert cpu_mod._env("MININET_CONV_NHWC", "dflt") == "dflt"
    monkeypatch.setenv("MININET_SOME_OTHER", "x")
    assert cpu_mod._env("MININET_SOME_OTHER") == "x"
