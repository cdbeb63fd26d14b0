"""Kernels around their threading thresholds (issue 25.4): the same results whether a job
runs on one thread or two, for sizes on either side of the size floor (32768 items, or
flops / 64), odd sizes, empty arrays and strided views, against float64 numpy. The
adaptive team use (_omp.threads_timed) is forced each way: "floors" (size floors only:
big jobs split), "one" (a huge wake-up cost: one thread) and "measured" (as in use)."""
import numpy as np
import pytest

import mininet
from mininet.ndarray import NDArray
from mininet_ext import _isa, _omp, buffer
from conftest import assert_close

optim = _isa.variant("optim")   # as built for this process's kernel set
losses = _isa.variant("losses")

rng = np.random.default_rng(25)
FLOOR = 32768
SIZES = [0, 1, 17, FLOOR - 1, FLOOR, FLOOR + 1, 2 * FLOOR + 13, 78400]


@pytest.fixture(params=["floors", "one", "measured"])
def mode(request):
    threads, adaptive = mininet.get_num_threads(), _omp.set_adaptive(True)
    mininet.set_num_threads(2)
    if request.param == "floors":
        _omp.set_adaptive(False)
    _omp.reset_wake_cost(1e12 if request.param == "one" else 0)
    yield request.param
    mininet.set_num_threads(threads)
    _omp.set_adaptive(adaptive)
    _omp.reset_wake_cost()


def data(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise(mode, n, dtype):
    x, y = data(n, dtype=dtype), data(n, dtype=dtype)
    a, b = NDArray(x), NDArray(y)
    assert_close((a + b).numpy(), x.astype(np.float64) + y, dtype)
    assert_close(a.exp().numpy(), np.exp(x.astype(np.float64)), dtype)
    assert_close((a * 3.0).numpy(), x.astype(np.float64) * 3, dtype)
    np.testing.assert_array_equal((a > b).numpy(), x > y)


@pytest.mark.parametrize("rows", [0, 3, 181, 362])
def test_elementwise_strided_and_broadcast(mode, rows):
    """A transposed view and a broadcast row, the bias add and ReLU of a layer."""
    x, bias = data(181, rows), data(181, 1)
    a = NDArray(x).swapaxes(0, 1)      # (rows, 181), strides (1, rows)
    b = NDArray(bias.ravel()).broadcast_to((rows, 181))
    want = x.T.astype(np.float64) + bias.ravel()
    assert_close((a + b).numpy(), want, np.float32)
    assert_close((a + b).maximum(0.0).numpy(), np.maximum(want, 0), np.float32)
    assert_close(NDArray(x)[:, ::2].exp().numpy(), np.exp(x[:, ::2].astype(np.float64)), np.float32)


@pytest.mark.parametrize("shape", [(0, 5), (7, 0), (1, FLOOR + 1), (FLOOR + 3, 1), (181, 181),
                                   (100, 100), (3, 2 * FLOOR + 5), (2 * FLOOR + 5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions(mode, shape, dtype):
    x = data(*shape, dtype=dtype)
    a, x64 = NDArray(x), x.astype(np.float64)
    for axis in (0, 1):
        assert_close(a.sum(axis=axis).numpy(), x64.sum(axis=axis), dtype, scale=shape[axis])
        if shape[axis]:
            assert_close(a.max(axis=axis).numpy(), x64.max(axis=axis), dtype)
    assert_close(a.sum().numpy(), x64.sum(), dtype, scale=max(x.size, 1))
    # an offset view: the kernel must start at the view's first item
    if shape[0] > 1:
        assert_close(NDArray(x)[1:].sum(axis=0).numpy(), x64[1:].sum(axis=0), dtype,
                     scale=shape[0])


@pytest.mark.parametrize("mnk", [(100, 100, 784), (784, 100, 100), (100, 10, 100), (64, 64, 64),
                                 (65, 63, 67), (129, 127, 131), (4, 300, 2500), (1, 1, 1),
                                 (0, 5, 5), (5, 5, 0), (203, 66, 700), (70, 36, 300),
                                 (17, 36, 300)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_paths(mode, mnk, dtype):
    """The MLP's products (forward, weight gradient through x^T, input gradient through
    W^T) and shapes either side of the GEMM floors; N a few columns past whole panels
    (100, 66, 36: the narrow path's tail kernels, rows and K off their vector multiples)."""
    m, n, k = mnk
    x, y = data(m, k, dtype=dtype), data(k, n, dtype=dtype)
    want = x.astype(np.float64) @ y
    assert_close((NDArray(x) @ NDArray(y)).numpy(), want, dtype, scale=max(k, 1))
    xt = NDArray(np.ascontiguousarray(x.T)).swapaxes(0, 1)
    yt = NDArray(np.ascontiguousarray(y.T)).swapaxes(0, 1)
    assert_close((xt @ yt).numpy(), want, dtype, scale=max(k, 1))


def _buf(arr):
    b = buffer.Buffer(max(arr.nbytes, 8))
    np.frombuffer(b, dtype=arr.dtype, count=arr.size)[:] = arr.ravel()
    return b


def _view(b, like):
    return np.frombuffer(b, dtype=like.dtype, count=like.size).reshape(like.shape)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_and_sgd(mode, n, dtype):
    p, g, m = data(n, dtype=dtype), data(n, dtype=dtype), data(n, dtype=dtype)
    v = np.abs(data(n, dtype=dtype))
    bp, bg, bm, bv = _buf(p), _buf(np.concatenate([data(3, dtype=dtype), g])), _buf(m), _buf(v)
    lr, b1, b2, eps, wd, t = 1e-2, 0.9, 0.999, 1e-8, 0.01, 3
    optim.adam_step(bp, bg, 3, bm, bv, n, lr, b1, b2, eps, wd, False, t, p.itemsize)
    p64, g64 = p.astype(np.float64), g.astype(np.float64) + wd * p
    m64 = b1 * m + (1 - b1) * g64
    v64 = b2 * v + (1 - b2) * g64 ** 2
    want = p64 - lr / (1 - b1 ** t) * m64 / (np.sqrt(v64 / (1 - b2 ** t)) + eps)
    assert_close(_view(bm, m), m64, dtype)
    assert_close(_view(bv, v), v64, dtype)
    assert_close(_view(bp, p), want, dtype)
    bp, bv = _buf(p), _buf(v)
    optim.sgd_step(bp, bg, 3, bv, n, lr, 0.9, 0.0, 0.0, False, False, p.itemsize)
    assert_close(_view(bv, v), 0.9 * v.astype(np.float64) + g, dtype)
    assert_close(_view(bp, p), p - lr * (0.9 * v.astype(np.float64) + g), dtype)


@pytest.mark.parametrize("n", [1, 16, 37])
def test_adam_where_v_overflows_the_update_is_zero_not_nan(mode, n):
    """A gradient of 1e22 makes v inf: m / inf is 0, so the parameter keeps its
    value (the reciprocal path's Newton step would make inf * 0 a NaN there)."""
    p = data(n, dtype=np.float32)
    g = np.full(n, 1e22, np.float32)   # (1 - b2) g^2 overflows float32
    g[::2] = 0.5   # ordinary lanes beside the overflowed ones, in one vector
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    bp, bg, bm, bv = _buf(p), _buf(g), _buf(m), _buf(v)
    optim.adam_step(bp, bg, 0, bm, bv, n, 1e-2, 0.9, 0.999, 1e-8, 0.0, False, 1, 4)
    got = _view(bp, p)
    assert np.all(np.isfinite(got))
    assert np.isinf(_view(bv, v)[1::2]).all()
    np.testing.assert_array_equal(got[1::2], p[1::2])
    assert_close(got[::2], _adam_ref(p, g, m, v, 1, wd=0.0)[0][::2], np.float32)


@pytest.mark.parametrize("nc", [(100, 10), (1, 10), (0, 10), (4097, 10), (300, 1000), (7, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent(mode, nc, dtype):
    n, c = nc
    z = data(n + 2, c, dtype=dtype) * 3
    y = rng.integers(0, c, n).astype(np.int64)
    bz, by, bprobs, bout = _buf(z), _buf(y), _buf(np.zeros((n, c), dtype)), _buf(np.zeros((n, c), dtype))
    loss = losses.forward(bz, 2 * c, by, bprobs, n, c, z.itemsize)   # from row 2: an offset
    z64 = z[2:].astype(np.float64)
    lse = np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1)
    probs = np.exp(z64 - lse[:, None])
    if n == 0:
        assert np.isnan(loss)
        return
    assert loss == pytest.approx((lse - z64[np.arange(n), y]).mean(), rel=1e-5, abs=1e-5)
    assert_close(_view(bprobs, np.zeros((n, c), dtype)), probs, dtype)
    losses.backward(bprobs, by, bout, n, c, 1.0 / n, z.itemsize)
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1
    assert_close(_view(bout, np.zeros((n, c), dtype)), (probs - onehot) / n, dtype)


def test_wake_cost_is_measured_and_decides():
    """Two threads on a job past the floor note the team's arrival cost; a cost above the
    job's saving keeps the next job on one thread (the results above check both give the
    same numbers)."""
    if not _omp.openmp_enabled():
        pytest.skip("built without OpenMP")
    threads, adaptive = mininet.get_num_threads(), _omp.set_adaptive(True)
    try:
        mininet.set_num_threads(2)
        _omp.reset_wake_cost()
        a = NDArray(data(300, 300))
        for _ in range(3):
            a @ a
        assert _omp.wake_cost_ns() > 0
        with pytest.raises(ValueError, match="ns must be >= 0"):
            _omp.reset_wake_cost(-1)
    finally:
        mininet.set_num_threads(threads)
        _omp.set_adaptive(adaptive)
        _omp.reset_wake_cost()


def _adam_ref(p, g, m, v, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, wd=0.01, decoupled=False):
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return p - lr / (1 - b1 ** t) * m / (np.sqrt(v / (1 - b2 ** t)) + eps), m, v


@pytest.mark.parametrize("sizes", [[78400, 100, 1000, 10], [0, 5, 0], [FLOOR + 3, FLOOR - 5, 17],
                                   [1], [2 * FLOOR + 1, 2 * FLOOR + 1]])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_steps_over_several_parameters(mode, sizes, decoupled, dtype):
    """One call over parameters of any sizes (empty ones too), each with its own step
    count and a gradient that starts past its buffer's first item."""
    ps = [data(n, dtype=dtype) for n in sizes]
    gs = [data(n, dtype=dtype) for n in sizes]
    ms = [data(n, dtype=dtype) for n in sizes]
    vs = [np.abs(data(n, dtype=dtype)) for n in sizes]
    steps = [k + 1 for k in range(len(sizes))]
    bps, bms, bvs = [_buf(p) for p in ps], [_buf(m) for m in ms], [_buf(v) for v in vs]
    bgs = [_buf(np.concatenate([data(5, dtype=dtype), g])) for g in gs]
    optim.adam_steps(bps, bgs, [5] * len(sizes), bms, bvs, list(sizes), steps, 1e-2, 0.9,
                     0.999, 1e-8, 0.01, decoupled, np.dtype(dtype).itemsize)
    for k in range(len(sizes)):
        want = _adam_ref(ps[k], gs[k], ms[k], vs[k], steps[k], decoupled=decoupled)
        for got, w, like in zip((bps[k], bms[k], bvs[k]), want, (ps[k], ms[k], vs[k])):
            assert_close(_view(got, like), w, dtype)


def test_adam_steps_rejects_bad_input():
    b = [_buf(np.zeros(8, np.float32))]
    args = (1e-3, 0.9, 0.999, 1e-8, 0.0, False, 4)
    with pytest.raises(ValueError, match="1 parameters but 2 grads"):
        optim.adam_steps(b, b * 2, [0], b, b, [8], [1], *args)
    with pytest.raises(ValueError, match="step of parameter 0 must be >= 1"):
        optim.adam_steps(b, b, [0], b, b, [8], [0], *args)
    with pytest.raises(ValueError, match="size of parameter 0 must be >= 0"):
        optim.adam_steps(b, b, [0], b, b, [-1], [1], *args)
    with pytest.raises(ValueError, match="gradient 0"):
        optim.adam_steps(b, b, [1], b, b, [8], [1], *args)
    with pytest.raises(ValueError, match="second moment v 0"):
        optim.adam_steps(b, b, [0], b, [_buf(np.zeros(7, np.float32))], [8], [1], *args)
    from mininet.backend import get_device
    dev = get_device("cpu")
    p32, p64 = NDArray(np.zeros(4, np.float32)), NDArray(np.zeros(4, np.float64))
    with pytest.raises(TypeError, match="share one dtype"):
        dev.adam_steps([p32, p64], [p32, p64], [p32, p64], [p32, p64], [1, 1], *args[:-1])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_optimizer_fused_matches_one_call_per_parameter(amsgrad):
    """Adam's step over a group (one fused call per dtype) against the same updates made
    one parameter at a time, with mixed dtypes, maximize, and a parameter without a
    gradient in some steps (its step count falls behind the others')."""
    from mininet import Tensor
    from mininet.optim import Adam
    shapes = [((30, 20), "float32"), ((20,), "float32"), ((7, 3), "float64"), ((3,), "float32")]
    init = [data(*s).astype(d) for s, d in shapes]

    def run(fused):
        ps = [Tensor(a.copy(), requires_grad=True) for a in init]
        opt = Adam([{"params": ps[:2], "maximize": True}, {"params": ps[2:], "lr": 0.05}],
                   lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
        if not fused:
            opt.update_group = lambda items, group: [opt.update(i, p, g, group)
                                                     for i, p, g in items]
        grads = np.random.default_rng(3)
        for step in range(4):
            for k, p in enumerate(ps):
                skip = k == 3 and step % 2 == 0
                p.grad = None if skip else Tensor(grads.standard_normal(p.shape).astype(p.dtype))
            opt.step()
        return [p.numpy() for p in ps], dict(opt.steps)

    got, got_steps = run(True)
    want, want_steps = run(False)
    assert got_steps == want_steps == {0: 4, 1: 4, 2: 4, 3: 2}
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_results_do_not_depend_on_the_timed_thread_choice():
    """threads_timed picks 1 or 2 threads by timing; a sum split in partial sums, the
    cross-entropy's total and a K-split product must round the same either way, or the
    same computation would give different bits from call to call."""
    rng = np.random.default_rng(5)
    x = mininet.Tensor(rng.standard_normal(1_000_003))
    z = mininet.Tensor(rng.standard_normal((200_000, 10)))
    y = mininet.Tensor(rng.integers(0, 10, 200_000).astype(np.int64))
    a = mininet.Tensor(rng.standard_normal((16, 50_000)).astype(np.float32))
    b = mininet.Tensor(rng.standard_normal((50_000, 16)).astype(np.float32))
    old = mininet.get_num_threads()
    mininet.set_num_threads(2)
    seen = {"sum": set(), "xent": set(), "ksplit": set()}
    try:
        for i in range(8):
            _omp.reset_wake_cost(1e9 if i % 2 else 0)   # 1 thread, then 2
            seen["sum"].add(x.sum().numpy().tobytes())
            seen["xent"].add(mininet.nn.SoftmaxLoss()(z, y).numpy().tobytes())
            seen["ksplit"].add((a @ b).numpy().tobytes())
    finally:
        _omp.reset_wake_cost(0)
        mininet.set_num_threads(old)
    assert {k: len(v) for k, v in seen.items()} == {"sum": 1, "xent": 1, "ksplit": 1}
