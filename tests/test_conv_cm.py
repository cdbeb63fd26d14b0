"""The channel-major direct convolution (mininet_ext/conv_direct.pyx forward_cm: stride 1,
few input channels, tiles stored straight into NCHW) against PyTorch's conv2d in float64,
and the rule that sends layers to it (mininet.backend.cpu._cm_wins)."""
import importlib

import numpy as np
import pytest

from mininet import Tensor, ops, set_num_threads, get_num_threads
from mininet.backend.cpu import _cm_row_fits, _cm_wins, cpu
from mininet.ndarray import NDArray
from mininet_ext import _isa
from test_conv_direct import _arrays, _tol   # (n, c, h, w, k, (kh, kw), ...) cases alike

torch = pytest.importorskip("torch")
F = torch.nn.functional
direct = _isa.variant("conv_direct")   # as built for this process's kernel set
Buffer = importlib.import_module("mininet_ext.buffer").Buffer
cpu_mod = importlib.import_module("mininet.backend.cpu")
rng = np.random.default_rng(31)
dev = cpu()
needs_cm = pytest.mark.skipif(not direct.cm_available(),
                              reason="this build's conv_direct has no AVX-512 (no forward_cm)")

# n, c, h, w, k, (kh, kw), (ph, pw)
CASES = [
    (3, 3, 32, 32, 32, (3, 3), (1, 1)),      # the CIFAR CNN's first layer
    (2, 3, 32, 32, 33, (3, 3), (1, 1)),      # K past whole channel blocks (4 a block)
    (2, 1, 28, 28, 16, (5, 5), (2, 2)),      # MNIST's conv1: 28 of 32 lanes, masked
    (2, 2, 16, 16, 5, (3, 3), (1, 1)),       # one vector of pixels a row, 6-row tiles
    (1, 3, 17, 40, 7, (7, 2), (2, 3)),       # odd sizes, two column tiles, unequal pads
    (2, 3, 5, 7, 3, (3, 3), (0, 0)),         # a map smaller than a tile, no padding
    (1, 3, 200, 20, 8, (3, 3), (1, 1)),      # several bands an image
    (2, 4, 9, 9, 1, (1, 1), (0, 0)),         # 1x1 filter, one output channel
    (2, 3, 6, 6, 4, (3, 3), (3, 3)),         # padding as wide as the kernel
]
IDS = [str(c) for c in CASES]


def _want(x, w, b, pad, relu=False):
    y = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                 None if b is None else torch.tensor(b, dtype=torch.float64), padding=pad)
    return (y.clamp(min=0) if relu else y).numpy()


def _run(x, w, b, case, relu=False, x_off=0):
    """forward_cm on buffers (x placed x_off items into its buffer), the output prefilled
    with NaN so that any pixel it misses shows; (ok, y)."""
    n, c, h, wd, k, ks, p = case
    oh, ow = h + 2 * p[0] - ks[0] + 1, wd + 2 * p[1] - ks[1] + 1
    xb = np.concatenate([np.full(x_off, 5, x.dtype), x.ravel()])
    y = np.full((n, k, max(oh, 0), max(ow, 0)), np.nan, x.dtype)
    ok = direct.forward_cm(Buffer.wrap(xb), x_off, Buffer.wrap(w), 0,
                           None if b is None else Buffer.wrap(b), 0, Buffer.wrap(y), 0,
                           x.shape, k, ks, p, x.itemsize, relu)
    return ok, y


@needs_cm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_matches_torch(case, dtype):
    x, w, b = _arrays(case, dtype)
    ok, y = _run(x, w, b, case, x_off=3)
    assert ok
    taps = case[1] * case[5][0] * case[5][1]
    np.testing.assert_allclose(y, _want(x, w, b, case[6]), **_tol(dtype, taps))


@needs_cm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_no_bias(dtype):
    for case in (CASES[0], CASES[2], CASES[4]):
        x, w, _ = _arrays(case, dtype)
        ok, y = _run(x, w, None, case, relu=True)
        assert ok
        taps = case[1] * case[5][0] * case[5][1]
        np.testing.assert_allclose(y, _want(x, w, None, case[6], relu=True), **_tol(dtype, taps))


@needs_cm
def test_thread_counts_agree_bitwise():
    """Each output is one thread's sum, in the same order whatever the team."""
    old = get_num_threads()
    x, w, b = _arrays(CASES[6], np.float32)
    try:
        outs = []
        for threads in (1, 2, 3):
            set_num_threads(threads)
            outs.append(_run(x, w, b, CASES[6])[1])
    finally:
        set_num_threads(old)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@needs_cm
def test_zero_sizes():
    for case in [(0, 3, 8, 8, 4, (3, 3), (1, 1)), (2, 3, 8, 8, 0, (3, 3), (1, 1))]:
        x, w, b = _arrays(case, np.float32)
        ok, y = _run(x, w, b, case)
        assert ok and y.size == 0


def test_unsupported_geometry_returns_false():
    x, w, b = _arrays((1, 3, 8, 8, 4, (3, 3), (1, 1)), np.float32)
    ok, y = _run(x, w, b, (1, 3, 8, 8, 4, (3, 3), (-1, 1)))    # negative padding
    assert ok is False and np.isnan(y).all()


@needs_cm
def test_bad_input_is_a_clear_error():
    x, w, b = _arrays(CASES[0], np.float32)
    with pytest.raises(ValueError, match="weight"):
        direct.forward_cm(Buffer.wrap(x.ravel()), 0, Buffer.wrap(w.ravel()[:10].copy()), 0,
                          None, 0, Buffer.wrap(np.zeros(3 * 32 * 32 * 32, np.float32)), 0,
                          x.shape, 32, (3, 3), (1, 1), 4)
    with pytest.raises(ValueError, match="output"):
        direct.forward_cm(Buffer.wrap(x.ravel()), 0, Buffer.wrap(w.ravel()), 0, None, 0,
                          Buffer.wrap(np.zeros(100, np.float32)), 0, x.shape, 32, (3, 3),
                          (1, 1), 4)


@needs_cm
def test_rule():
    assert _cm_wins((64, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, 4)
    assert _cm_wins((64, 3, 64, 64), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, 4)
    assert not _cm_wins((64, 3, 32, 32), (32, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1, 4)
    assert not _cm_wins((64, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1), (2, 2), 1, 4)
    assert not _cm_wins((64, 16, 32, 32), (32, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1, 4)
    assert not _cm_wins((100, 1, 28, 28), (16, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1, 4)
    assert not _cm_wins((8, 3, 224, 224), (64, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, 4)
    assert not _cm_wins((64, 4, 32, 32), (16, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2, 4)
    # 15 of 16 lanes used passes, 14 does not; 31 of 32
    assert _cm_row_fits(15, 16) and not _cm_row_fits(14, 16) and _cm_row_fits(31, 16)
    assert not _cm_row_fits(65, 16) and not _cm_row_fits(0, 16)


@pytest.mark.parametrize("force", ["0", "1"])
def test_switch_sends_layers_elsewhere(force, monkeypatch):
    monkeypatch.setenv("MININET_CONV_DIRECT", force)
    assert not _cm_wins((64, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, 4)


@needs_cm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_op_takes_it_for_the_cifar_first_layer(dtype, monkeypatch):
    """ops.conv on a non-contiguous input: the forward goes through forward_cm, and the
    output and all three gradients match torch."""
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(direct, name)

        def forward_cm(self, *args):
            calls.append(args[8])
            return direct.forward_cm(*args)
    monkeypatch.setattr(cpu_mod, "_direct", Spy())
    x, w, b = _arrays(CASES[0], dtype)
    xv = Tensor(np.ascontiguousarray(x.transpose(0, 1, 3, 2)), requires_grad=True)
    wt, bt = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    y = ops.conv(xv.transpose((2, 3)), wt, bt, 1, 1)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g))
    assert calls == [x.shape]
    xr = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wr = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    br = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    yr = F.conv2d(xr, wr, br, padding=1)
    yr.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_allclose(y.numpy(), yr.detach().numpy(), **_tol(dtype, 300))
    np.testing.assert_allclose(xv.grad.numpy().transpose(0, 1, 3, 2), xr.grad.numpy(),
                               **_tol(dtype, 300))
    np.testing.assert_allclose(wt.grad.numpy(), wr.grad.numpy(), **_tol(dtype, 3000))
    np.testing.assert_allclose(bt.grad.numpy(), br.grad.numpy(), **_tol(dtype, 3000))


@needs_cm
def test_device_relu_epilogue():
    x, w, b = _arrays(CASES[0], np.float32)
    out = NDArray.make((3, 32, 32, 32), dtype=np.dtype("float32"))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, (1, 1), (1, 1), (1, 1), 1, relu=True)
    np.testing.assert_allclose(out.numpy(), _want(x, w, b, (1, 1), relu=True),
                               **_tol(np.float32, 27))
