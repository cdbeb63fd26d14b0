"""The CUDA kernels no other test reaches, against the CPU backend: the im2col convolution
path (CUDA's conv takes the implicit GEMM unless the device lacks "conv2d"), float64
pooling, max pooling's second order (maxpool_gather), float64 scalar ops and optimizer
steps, int64 fill. Under the emulator each test also checks that it launched the entry
points it is here for; the suite-wide check is `python -m mininet.backend.emulator
<coverage.json>` after a run with MININET_CUDA_EMU_COVERAGE (see that module)."""
import numpy as np
import pytest

import mininet
from mininet import nn, ops, optim
from mininet.autograd import Tensor
from mininet.backend.cuda import emulated
from mininet.ndarray import NDArray

pytestmark = pytest.mark.gpu
DTYPES = [np.float32, np.float64]
SUFFIX = {np.float32: "f32", np.float64: "f64"}
TOL = {np.float32: 2e-4, np.float64: 1e-10}


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


@pytest.fixture
def launched():
    """check(*names): each entry point was launched since the test began (emulator only:
    a real driver does not count launches)."""
    if not emulated():
        return lambda *names: None
    from mininet.backend.emulator import driver

    def total(name, counts):
        c = counts.get(name, {"fast": 0, "checked": 0})
        return c["fast"] + c["checked"]
    before = driver.coverage()

    def check(*names):
        now = driver.coverage()
        missing = [n for n in names if total(n, now) == total(n, before)]
        assert not missing, f"never launched: {missing}"
    return check


def close(got, want, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


@pytest.fixture
def im2col_path(gpu, monkeypatch):
    """The CUDA device without its implicit-GEMM convolution: ops compose conv from im2col,
    one GEMM and the layout kernels, as on a backend that lacks "conv2d"."""
    monkeypatch.setattr(type(gpu), "capabilities", gpu.capabilities - {"conv2d"})
    assert not gpu.has("conv2d")
    return gpu


# (N, C, H, W), (K, C/groups, kh, kw), stride, padding, dilation, groups
CONV_CASES = [((2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1, 1),
              ((3, 4, 11, 10), (6, 2, 3, 2), 2, (2, 1), 2, 2),
              ((2, 1, 12, 12), (5, 1, 5, 5), 1, 2, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,stride,pad,dil,groups", CONV_CASES)
def test_the_im2col_conv_path_and_pooling_match_the_cpu(im2col_path, launched, dtype, xs, ws,
                                                        stride, pad, dil, groups):
    """conv (+ bias) -> relu -> max pool -> avg pool, forward and every gradient; the input a
    strided view (im2col reads strides)."""
    rng = np.random.default_rng(sum(xs))
    x = rng.standard_normal((xs[0], xs[1], xs[2], 2 * xs[3])).astype(dtype)
    w, b = rng.standard_normal(ws).astype(dtype), rng.standard_normal(ws[0]).astype(dtype)
    results = []
    for dev in ("cpu", im2col_path):
        tx, tw, tb = (Tensor(a, device=dev, requires_grad=True) for a in (x, w, b))
        y = ops.conv(tx[:, :, :, ::2], tw, tb, stride, pad, dil, groups)
        z = ops.avg_pool2d(ops.max_pool2d(ops.relu(y), 2, 1), 2, 1, 1)
        (z * z).sum().backward()
        results.append([z.numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()])
    for got, want in zip(results[1], results[0]):
        close(got, want, dtype)
    s = SUFFIX[dtype]
    launched(*(f"{k}_{s}" for k in ("im2col", "col2im", "to_nchw", "from_nchw", "row_sums",
                                    "maxpool", "maxpool_backward", "avgpool",
                                    "avgpool_backward")))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_without_bias_on_the_im2col_path(im2col_path, launched, dtype):
    """No bias: to_nchw without one, and the weight gradient from the kept columns."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    results = []
    for dev in ("cpu", im2col_path):
        tx, tw = (Tensor(a, device=dev, requires_grad=True) for a in (x, w))
        y = ops.conv(tx, tw, None, 1, 0)
        (y * y).sum().backward()
        results.append([y.numpy(), tx.grad.numpy(), tw.grad.numpy()])
    for got, want in zip(results[1], results[0]):
        close(got, want, dtype)
    launched(f"to_nchw_{SUFFIX[dtype]}", f"im2col_{SUFFIX[dtype]}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_second_order_matches_the_cpu(gpu, launched, dtype):
    """d/dx of sum(dL/dx * v): max pooling's gradient's gradient gathers at the argmax."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    v = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for dev in ("cpu", gpu):
        tx = Tensor(x, device=dev, requires_grad=True)
        z = ops.max_pool2d(ops.tanh(tx), 3, 2, 1)
        (z * z).sum().backward(create_graph=True)
        first = tx.grad
        tx.grad = None
        (first * Tensor(v, device=dev)).sum().backward()
        results.append([z.numpy(), first.numpy(), tx.grad.numpy()])
    for got, want in zip(results[1], results[0]):
        close(got, want, dtype)
    launched(f"maxpool_gather_{SUFFIX[dtype]}", f"maxpool_backward_{SUFFIX[dtype]}")


@pytest.mark.parametrize("name", ["__add__", "__sub__", "__mul__", "__truediv__", "__pow__",
                                  "__radd__", "__rsub__", "__rmul__", "__rtruediv__", "maximum",
                                  "minimum", "__lt__", "__ge__", "__eq__"])
def test_float64_scalar_ops_on_views_match_the_cpu(gpu, launched, name):
    x = np.random.default_rng(5).uniform(0.5, 2.0, (6, 10)).astype(np.float64)
    x[0, 0] = 1.5                                      # __eq__ finds one
    cx, gx = NDArray(x), NDArray(x, device=gpu)
    got = getattr(gx.T[::2], name)(1.5)
    want = getattr(cx.T[::2], name)(1.5)
    compare = name in ("__lt__", "__ge__", "__eq__")   # comparisons give bool masks
    assert got.dtype == want.dtype == (np.bool_ if compare else np.float64)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-13, atol=1e-15)
    launched("compare_scalar_f64" if compare else "binary_scalar_f64")


def _train(dev, make_opt, steps=3):
    mininet.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7, dtype="float64"), nn.Tanh(),
                        nn.Linear(7, 3, dtype="float64")).to(dev)
    opt = make_opt(net.parameters())
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((8, 5)), dtype="float64", device=dev)
    y = Tensor(rng.integers(0, 3, 8), device=dev)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.SoftmaxLoss()(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.numpy() for p in net.parameters()]


@pytest.mark.parametrize("kind,make_opt", [
    ("sgd", lambda p: optim.SGD(p, 0.1, weight_decay=1e-3)),
    ("sgd", lambda p: optim.SGD(p, 0.1, momentum=0.9, dampening=0.1)),
    ("sgd", lambda p: optim.SGD(p, 0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("adam", lambda p: optim.Adam(p, 0.01, weight_decay=1e-2)),
    ("adam", lambda p: optim.AdamW(p, 0.01, weight_decay=1e-2))])
def test_float64_optimizer_steps_match_the_cpu(gpu, launched, kind, make_opt):
    cpu_losses, cpu_params = _train("cpu", make_opt)
    gpu_losses, gpu_params = _train(gpu, make_opt)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-12)
    for got, want in zip(gpu_params, cpu_params):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    launched(f"{kind}_f64")


def test_int64_fill_and_scalar_setitem_match_the_cpu(gpu, launched):
    x = np.arange(60, dtype=np.int64).reshape(5, 12)
    cx, gx = NDArray(x), NDArray(x, device=gpu)
    for a in (cx, gx):
        a[1:4, ::3] = 7
        a[4] = -(2 ** 40) - 1                      # beyond float32: the value travels as double
        a.T[::5, 0] = 9
    assert gx.dtype == np.int64
    np.testing.assert_array_equal(gx.numpy(), cx.numpy())
    z = NDArray.make((3, 4), device=gpu, dtype=np.dtype(np.int64)).fill(-5)
    np.testing.assert_array_equal(z.numpy(), np.full((3, 4), -5))
    launched("fill_i64")


@pytest.mark.parametrize("src,dst", [(s, d) for s in ("float32", "float64", "int64")
                                     for d in ("float32", "float64", "int64") if s != d])
def test_astype_converts_on_the_device_as_numpy(gpu, launched, src, dst):
    """Every dtype pair, from a strided view: floats to int64 truncate toward zero."""
    x = (np.linspace(-7.5, 7.5, 24).reshape(4, 6) * 3).astype(src)
    if src != "int64":   # NaN, infinities and out-of-range values: numpy gives INT64_MIN
        x[0, :6:2] = [np.nan, np.inf, -np.inf]
        x[1, 0] = 1e30
    got = NDArray(x, device=gpu)[:, ::2].T.astype(dst)
    with np.errstate(invalid="ignore"):
        want = x[:, ::2].T.astype(dst)
    assert got.dtype == want.dtype and got.device == gpu
    np.testing.assert_array_equal(got.numpy(), want)
    names = {"float32": "f32", "float64": "f64", "int64": "i64"}
    launched(f"cast_{names[src]}_{names[dst]}")


# (M, K, N, how): float32 products whose operands have rows or columns 16 bytes apart take
# gemm_XY_f32 (4-float vector loads; X, Y: r row-major, t a transposed view), with edges in
# every dimension; "slice": steps of 16 bytes but K and N not multiples of 4 (views of wider
# arrays), "batch": batched and broadcast 3-d products
GEMM_VEC = [(128, 64, 128, "plain"), (130, 12, 132, "plain"), (1, 4, 4, "plain"),
            (257, 37, 131, "slice"), (5, 9, 3, "slice"), (3, 20, 36, "batch"),
            (70, 8, 260, "batch")]


def _vec_operand(shape, transposed, ragged, rng):
    """A float32 array of `shape` (last two dims) on the host, and the index that views it:
    transposed: stored as its transpose; rows stored 4-float multiples apart (and 4 more
    when ragged: a view of a wider array)."""
    *batch, r, c = shape
    rows, cols = (c, r) if transposed else (r, c)
    wide = cols + (-cols) % 4 + (4 if ragged else 0)
    a = rng.standard_normal((*batch, rows, wide)).astype(np.float32)
    return a, (..., slice(None), slice(0, cols))


@pytest.mark.parametrize("layout", ["rr", "rt", "tr", "tt"])
@pytest.mark.parametrize("m,k,n,how", GEMM_VEC)
def test_float32_products_take_the_vector_kernels(gpu, launched, m, k, n, how, layout):
    rng = np.random.default_rng(m * 1000 + n)
    batch = how == "batch"
    a, ia = _vec_operand((3, m, k) if batch else (m, k), layout[0] == "t", how == "slice", rng)
    b, ib = _vec_operand((1, k, n) if batch else (k, n), layout[1] == "t", how == "slice", rng)
    va, vb = NDArray(a, device=gpu)[ia], NDArray(b, device=gpu)[ib]
    ha, hb = a[ia], b[ib]
    if layout[0] == "t":
        va, ha = va.swapaxes(-1, -2), np.swapaxes(ha, -1, -2)
    if layout[1] == "t":
        vb, hb = vb.swapaxes(-1, -2), np.swapaxes(hb, -1, -2)
    got = (va @ vb).numpy()
    want = ha.astype(np.float64) @ hb.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    launched(f"gemm_{layout}_f32")


def test_size_one_dims_do_not_keep_products_off_the_vector_kernels(gpu, launched):
    """A (K, 1) column cut from a vector (strides (1, 1)) reads as a transposed operand,
    one row of a matrix 5 floats wide as a row-major one: the stride of a dim of size 1
    is never used."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    v = rng.standard_normal(8).astype(np.float32)
    col = NDArray(v, device=gpu).reshape(8, 1)
    assert col.strides == (1, 1)
    got = (NDArray(x, device=gpu) @ col).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ v[:, None], rtol=1e-5, atol=1e-5)
    launched("gemm_rt_f32")
    wide = rng.standard_normal((3, 5)).astype(np.float32)
    y = rng.standard_normal((4, 8)).astype(np.float32)
    row = NDArray(wide, device=gpu)[0:1, 0:4]
    assert row.strides == (5, 1)
    got = (row @ NDArray(y, device=gpu)).numpy()
    np.testing.assert_allclose(got, wide[0:1, :4].astype(np.float64) @ y, rtol=1e-5, atol=1e-5)
    launched("gemm_rr_f32")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_past_the_grid_limits_launch_in_slices(gpu, launched, monkeypatch, dtype):
    """More matrices than a grid holds in z, or more 128-row blocks than it holds in y:
    slices of the batch and of the rows, one launch each (the limits shrunk to 3 and 2
    here, so that small products cross them: real ones are 65535)."""
    import importlib
    cuda_device = importlib.import_module("mininet.backend.cuda_device")
    monkeypatch.setattr(cuda_device, "GRID_LIMITS", ((1 << 31) - 1, 2, 3))
    rng = np.random.default_rng(7)
    for ashape, bshape in (((7, 5, 8), (7, 8, 4)),      # batch 7: z slices of 3, 3, 1
                           ((600, 8), (8, 4)),           # 600 rows: slices of 256
                           ((2, 300, 8), (1, 8, 4))):    # both, B broadcast
        x = rng.standard_normal(ashape).astype(dtype)
        y = rng.standard_normal(bshape).astype(dtype)
        got = (NDArray(x, device=gpu) @ NDArray(y, device=gpu)).numpy()
        close(got, x.astype(np.float64) @ y.astype(np.float64), dtype)
    launched("gemm_rr_f32" if dtype == np.float32 else "gemm_f64")


def test_products_the_vector_kernels_cannot_read_take_the_generic_one(gpu, launched):
    """Rows 5 floats apart (neither layout in 16-byte steps), float64: gemm_f32 / gemm_f64."""
    rng = np.random.default_rng(3)
    odd = rng.standard_normal((7, 5)).astype(np.float32)
    got = (NDArray(odd, device=gpu) @ NDArray(odd.T.copy(), device=gpu)).numpy()
    np.testing.assert_allclose(got, odd.astype(np.float64) @ odd.T, rtol=1e-4, atol=1e-4)
    launched("gemm_f32")
    d = rng.standard_normal((9, 12))
    close((NDArray(d, device=gpu) @ NDArray(d.T.copy(), device=gpu)).numpy(), d @ d.T,
          np.float64)
    launched("gemm_f64")
