"""Direct convolution for few input channels (mininet_ext/conv_direct.pyx, the hook in
CPUDevice.conv2d) against PyTorch's conv2d in float64."""
import importlib

import numpy as np
import pytest

from mininet import Tensor, ops
from mininet.backend.cpu import _direct_wins, cpu
from mininet.ndarray import NDArray
from mininet_ext import _isa

torch = pytest.importorskip("torch")
F = torch.nn.functional
direct = _isa.variant("conv_direct")   # as built for this process's kernel set
Buffer = importlib.import_module("mininet_ext.buffer").Buffer
rng = np.random.default_rng(25)
dev = cpu()

# n, c, h, w, k, (kh, kw), (sh, sw), (ph, pw), (dh, dw)
CASES = [
    (4, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3), (1, 1)),     # ResNet9's first layer
    (3, 3, 32, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1)),     # CIFAR CNN's first layer
    (2, 1, 28, 28, 16, (5, 5), (1, 1), (2, 2), (1, 1)),     # MNIST CNN's conv1
    (3, 3, 13, 11, 20, (3, 3), (2, 2), (1, 1), (1, 1)),     # odd sizes, K past one vector
    (2, 2, 9, 17, 7, (3, 5), (3, 1), (0, 2), (1, 1)),       # unequal strides, K = 7
    (1, 5, 9, 17, 40, (3, 3), (2, 3), (1, 0), (2, 1)),      # dilation, 3 K blocks
    (2, 3, 10, 10, 16, (2, 2), (2, 4), (3, 3), (1, 1)),     # padding wider than the kernel
    (1, 3, 70, 65, 24, (7, 7), (2, 2), (3, 3), (1, 1)),     # several bands an image
    (5, 1, 4, 3, 3, (3, 3), (1, 1), (1, 1), (1, 1)),        # a map smaller than a tile
]
IDS = [str(c) for c in CASES]


def _tol(dtype, taps):
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=3e-6 * taps)
    return dict(rtol=1e-10, atol=1e-12 * taps)


def _arrays(case, dtype):
    n, c, h, w, k, (kh, kw) = case[:6]
    return (rng.standard_normal((n, c, h, w)).astype(dtype),
            rng.standard_normal((k, c, kh, kw)).astype(dtype),
            rng.standard_normal(k).astype(dtype))


def _want(x, w, b, case, relu=False):
    s, p, d = case[6:]
    y = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                 None if b is None else torch.tensor(b, dtype=torch.float64),
                 stride=s, padding=p, dilation=d)
    return (y.clamp(min=0) if relu else y).numpy()


def _run(x, w, b, case, relu=False, out_fill=np.nan, x_off=0):
    """direct.forward on buffers (x placed x_off items into its buffer); (ok, y)."""
    n, c, h, wd, k, ks, s, p, d = case
    oh, ow = (direct.out_size(h, ks[0], s[0], p[0], d[0]),
              direct.out_size(wd, ks[1], s[1], p[1], d[1]))
    xb = np.concatenate([np.full(x_off, 5, x.dtype), x.ravel()])
    y = np.full((n, k, max(oh, 0), max(ow, 0)), out_fill, x.dtype)
    ok = direct.forward(Buffer.wrap(xb), x_off, Buffer.wrap(w), 0,
                        None if b is None else Buffer.wrap(b), 0, Buffer.wrap(y), 0,
                        x.shape, k, ks, s, p, d, x.itemsize, relu)
    return ok, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_matches_torch(case, dtype):
    x, w, b = _arrays(case, dtype)
    ok, y = _run(x, w, b, case, x_off=3)
    assert ok
    np.testing.assert_allclose(y, _want(x, w, b, case), **_tol(dtype, w[0].size))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_no_bias(dtype):
    for case in CASES[:2] + CASES[3:5]:
        x, w, _ = _arrays(case, dtype)
        ok, y = _run(x, w, None, case, relu=True)
        assert ok
        np.testing.assert_allclose(y, _want(x, w, None, case, relu=True),
                                   **_tol(dtype, w[0].size))
        assert (y >= 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts_agree(threads, monkeypatch):
    import mininet
    before = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        for case in (CASES[0], CASES[7]):
            x, w, b = _arrays(case, np.float64)
            ok, y = _run(x, w, b, case)
            assert ok
            np.testing.assert_allclose(y, _want(x, w, b, case), **_tol(np.float64, 200))
    finally:
        mininet.set_num_threads(before)


def test_jobs_handed_out_same_bits():
    """The threads take chunks of (band, image) jobs as they come free: each output is
    one job's, so 1, 2 and 3 threads give the same bits."""
    import mininet
    before = mininet.get_num_threads()
    case = (37, 3, 32, 32, 16, (7, 7), (4, 4), (3, 3), (1, 1))
    x, w, b = _arrays(case, np.float32)
    outs = []
    try:
        for threads in (1, 2, 3):
            mininet.set_num_threads(threads)
            ok, y = _run(x, w, b, case)
            assert ok
            outs.append(y)
    finally:
        mininet.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    np.testing.assert_allclose(outs[0], _want(x, w, b, case), **_tol(np.float32, 150))


def test_zero_sizes():
    for n, k in ((0, 16), (2, 0)):
        case = (n, 3, 8, 8, k, (3, 3), (2, 2), (1, 1), (1, 1))
        x, w, b = _arrays(case, np.float32)
        ok, y = _run(x, w, b, case)
        assert ok and y.shape == (n, k, 4, 4)


def test_unsupported_geometry_returns_false():
    """Column stride 5 has no kernel; negative padding is left to the other paths."""
    case = (1, 3, 20, 20, 8, (3, 3), (1, 5), (1, 1), (1, 1))
    x, w, b = _arrays(case, np.float32)
    ok, y = _run(x, w, b, case)
    assert not ok and np.isnan(y).all()      # nothing written


def test_bad_input_is_a_clear_error():
    case = CASES[3]
    x, w, b = _arrays(case, np.float32)
    y = np.zeros((3, 20, 7, 6), np.float32)
    args = (x.shape, 20, (3, 3), (2, 2), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="itemsize"):
        direct.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(y), 0,
                       *args, 2)
    with pytest.raises(ValueError, match="output"):
        direct.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0,
                       Buffer.wrap(y[:2].copy()), 0, *args, 4)
    with pytest.raises(ValueError, match="weight"):
        direct.forward(Buffer.wrap(x), 0, Buffer.wrap(w[:10].copy()), 0, None, 0,
                       Buffer.wrap(y), 0, *args, 4)
    with pytest.raises(ValueError, match="bias"):
        direct.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, Buffer.wrap(b[:3].copy()), 0,
                       Buffer.wrap(y), 0, *args, 4)
    with pytest.raises(ValueError, match="stride"):
        direct.forward(Buffer.wrap(x), 0, Buffer.wrap(w), 0, None, 0, Buffer.wrap(y), 0,
                       x.shape, 20, (3, 3), (0, 2), (1, 1), (1, 1), 4)


def _dw_want(x, g, w_shape, case):
    s, p, d = case[6:]
    wt = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(torch.tensor(x, dtype=torch.float64), wt, stride=s, padding=p, dilation=d)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return wt.grad.numpy()


def _run_dw(x, g, case, g_off=0):
    n, c, h, wd, k, ks, s, p, d = case
    gb = np.concatenate([np.full(g_off, 9, g.dtype), g.ravel()])
    dw = np.full((k, c) + ks, np.nan, x.dtype)
    ok = direct.weight_grad(Buffer.wrap(gb), g_off, Buffer.wrap(x), 0, Buffer.wrap(dw), 0,
                            x.shape, k, ks, s, p, d, x.itemsize)
    return ok, dw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_weight_grad_matches_torch(case, dtype):
    x, w, _ = _arrays(case, dtype)
    oh, ow = (direct.out_size(case[2], case[5][0], case[6][0], case[7][0], case[8][0]),
              direct.out_size(case[3], case[5][1], case[6][1], case[7][1], case[8][1]))
    g = rng.standard_normal((case[0], case[4], oh, ow)).astype(dtype)
    ok, dw = _run_dw(x, g, case, g_off=5)
    assert ok
    np.testing.assert_allclose(dw, _dw_want(x, g, w.shape, case),
                               **_tol(dtype, g[:, 0].size))


def test_weight_grad_edges():
    """No images: zeros; no output channels: nothing; a column dilation: not applicable."""
    case = (0, 3, 8, 8, 16, (7, 7), (2, 2), (3, 3), (1, 1))
    x = np.zeros((0, 3, 8, 8), np.float32)
    ok, dw = _run_dw(x, np.zeros((0, 16, 4, 4), np.float32), case)
    assert ok and (dw == 0).all()
    case = (2, 3, 8, 8, 0, (7, 7), (2, 2), (3, 3), (1, 1))
    ok, dw = _run_dw(np.ones((2, 3, 8, 8)), np.zeros((2, 0, 4, 4)), case)
    assert ok and dw.shape == (0, 3, 7, 7)
    case = (2, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 2))
    ok, dw = _run_dw(np.ones((2, 3, 8, 8)), np.zeros((2, 4, 8, 6)), case)
    assert not ok and np.isnan(dw).all()
    with pytest.raises(ValueError, match="output grad"):
        _run_dw(np.ones((2, 3, 8, 8)), np.zeros((2, 4, 8, 5)),
                (2, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1)))


def test_rule_takes_strided_first_layers():
    assert _direct_wins((64, 3, 32, 32), (16, 3, 7, 7), (4, 4), 1)
    assert _direct_wins((64, 3, 32, 32), (16, 3, 3, 3), (2, 2), 1)
    assert not _direct_wins((64, 3, 32, 32), (32, 3, 3, 3), (1, 1), 1)     # stride 1
    assert not _direct_wins((64, 16, 8, 8), (32, 16, 3, 3), (2, 2), 1)     # many channels
    assert not _direct_wins((64, 4, 32, 32), (16, 2, 3, 3), (2, 2), 2)     # groups


def _op_case(x, w, b, stride, padding, dtype):
    """conv through the op on a non-contiguous input (a transposed view), forward and
    gradients, against torch."""
    xv = Tensor(np.ascontiguousarray(x.transpose(0, 1, 3, 2)), requires_grad=True)
    xin = xv.transpose((2, 3))
    wt, bt = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    y = ops.conv(xin, wt, bt, stride, padding)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g))
    xr = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wr = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    br = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    yr = F.conv2d(xr, wr, br, stride=stride, padding=padding)
    yr.backward(torch.tensor(g, dtype=torch.float64))
    tol = _tol(dtype, 300)
    np.testing.assert_allclose(y.numpy(), yr.detach().numpy(), **tol)
    np.testing.assert_allclose(xv.grad.numpy().transpose(0, 1, 3, 2), xr.grad.numpy(), **tol)
    np.testing.assert_allclose(wt.grad.numpy(), wr.grad.numpy(), **_tol(dtype, 3000))
    np.testing.assert_allclose(bt.grad.numpy(), br.grad.numpy(), **_tol(dtype, 3000))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_op_resnet9_first_layer(dtype, monkeypatch):
    """The op sends this small-map layer to the device's conv2d (conv2d_small), and the
    device to the direct kernel."""
    cpu_mod = importlib.import_module("mininet.backend.cpu")
    calls = []

    class Spy:
        def forward(self, *args):
            calls.append(("fwd", args[8]))
            return direct.forward(*args)

        def weight_grad(self, *args):
            calls.append(("dw", args[6]))
            return direct.weight_grad(*args)
    monkeypatch.setattr(cpu_mod, "_direct", Spy())
    x, w, b = _arrays(CASES[0], dtype)
    _op_case(x, w, b, 4, 3, dtype)
    assert calls == [("fwd", x.shape), ("dw", x.shape)]


@pytest.mark.parametrize("force", ["1", "0"])
def test_op_forced_on_and_off(force, monkeypatch):
    """MININET_CONV_DIRECT=1 sends stride-1 layers through the kernel too; =0 none."""
    monkeypatch.setenv("MININET_CONV_DIRECT", force)
    for case in (CASES[1], CASES[2]):
        x, w, b = _arrays(case, np.float64)
        _op_case(x, w, b, case[6][0], case[7][0], np.float64)


def test_device_relu_epilogue():
    case = CASES[0]
    x, w, b = _arrays(case, np.float32)
    out = NDArray.make((4, 16, 8, 8), dtype=np.dtype("float32"))
    dev.conv2d(NDArray(x), NDArray(w), NDArray(b), out, (4, 4), (3, 3), (1, 1), 1, relu=True)
    np.testing.assert_allclose(out.numpy(), _want(x, w, b, case, relu=True), **_tol(np.float32, 147))
