"""NDArray views, indexing, elementwise ops, reductions against numpy."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from mininet.ndarray import NDArray, broadcast_shapes, concatenate, stack, zeros
from conftest import assert_close, torch

DTYPES = [np.float32, np.float64]
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": np.maximum, "minimum": np.minimum}
COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
           "gt": np.greater, "ge": np.greater_equal}
UNARY = {"neg": np.negative, "abs": np.abs, "exp": np.exp, "tanh": np.tanh,
         "relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
         "sign": np.sign, "square": np.square, "erf": np.vectorize(math.erf),
         "silu": lambda x: x / (1 + np.exp(-x)),
         "gelu": np.vectorize(lambda v: v * 0.5 * math.erfc(-v / math.sqrt(2.0)))}
rng = np.random.default_rng(0)


def rand(*shape, dtype=np.float32, low=-2, high=2):
    return rng.uniform(low, high, size=shape).astype(dtype)


VIEWS = {
    "plain": lambda x: x,
    "transposed": lambda x: x.T,
    "stepped": lambda x: x[::2, ::-1][:, 1::3],
    "broadcast": lambda x: x[:1].broadcast_to(x.shape) if isinstance(x, NDArray)
    else np.broadcast_to(x[:1], x.shape),
}
METHOD = {"add": "__add__", "sub": "__sub__", "mul": "__mul__", "div": "__truediv__",
          "maximum": "maximum", "minimum": "minimum", "eq": "__eq__", "ne": "__ne__",
          "lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


def views(x):
    """Non-contiguous views of a 2-d array: (name, numpy view, mininet view)."""
    a = NDArray(x)
    for name, f in VIEWS.items():
        yield name, f(x), f(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BINARY) + list(COMPARE))
def test_binary_on_views(name, dtype):
    fn = {**BINARY, **COMPARE}[name]
    x, y = rand(9, 11, dtype=dtype), rand(9, 11, dtype=dtype)
    if name == "div":
        y = np.abs(y) + 0.5
    y[0, :3] = x[0, :3]  # equal entries exercise eq/le/ge
    for label, f in VIEWS.items():
        got = getattr(f(NDArray(x)), METHOD[name])(f(NDArray(y)))
        assert got.dtype == (np.bool_ if name in COMPARE else dtype), label   # masks: bool
        assert_close(got.numpy(), fn(f(x).astype(np.float64), f(y).astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_ops_and_reverse(dtype):
    x = rand(5, 7, dtype=dtype, low=0.5, high=2)
    a = NDArray(x)
    x64 = x.astype(np.float64)
    assert_close((a + 2).numpy(), x64 + 2, dtype)
    assert_close((2 - a).numpy(), 2 - x64, dtype)
    assert_close((3 / a).numpy(), 3 / x64, dtype)
    assert_close((a ** 1.5).numpy(), x64 ** 1.5, dtype)
    assert_close((2 ** a).numpy(), 2 ** x64, dtype)
    assert_close((a > 1).numpy(), (x64 > 1), dtype)
    assert (a * 2).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(UNARY) + ["log", "sqrt"])
def test_unary(name, dtype):
    x = rand(13, 17, dtype=dtype, low=0.1 if name in ("log", "sqrt") else -3, high=3)
    fn = UNARY.get(name) or getattr(np, name)
    for label, xv, av in views(x):
        got = av.__neg__() if name == "neg" else getattr(av, name)()
        assert_close(got.numpy(), fn(xv.astype(np.float64)), dtype)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_broadcasting_matches_numpy(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                         min_side=0, max_side=5))
    s1, s2 = shapes.input_shapes
    dtype = data.draw(st.sampled_from(DTYPES))
    x, y = rand(*s1, dtype=dtype), rand(*s2, dtype=dtype)
    got = NDArray(x) * NDArray(y) + NDArray(x)
    assert got.shape == shapes.result_shape
    assert_close(got.numpy(), x.astype(np.float64) * y + x, dtype)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_reductions_match_numpy(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    dtype = data.draw(st.sampled_from(DTYPES))
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)))
    axis = tuple(axes) if axes else None
    keepdims = data.draw(st.booleans())
    x = rand(*shape, dtype=dtype)
    perm = data.draw(st.permutations(range(len(shape))))
    xv, av = x.transpose(perm), NDArray(x).permute(perm)
    n = xv.size if axis is None else int(np.prod([xv.shape[a] for a in axis]))
    for name in ("sum", "mean", "max", "min"):
        got = getattr(av, name)(axis=axis, keepdims=keepdims)
        want = getattr(xv.astype(np.float64), name)(axis=axis, keepdims=keepdims)
        assert got.shape == np.shape(want), name
        assert_close(got.numpy(), want, dtype, scale=n)


@pytest.mark.parametrize("axis", [0, 1, 2, None])
def test_argmax_argmin(axis):
    x = rand(4, 5, 6)
    a = NDArray(x)
    np.testing.assert_array_equal(a.argmax(axis).numpy(), x.argmax(axis))
    np.testing.assert_array_equal(a.argmin(axis).numpy(), x.argmin(axis))
    np.testing.assert_array_equal(a.T.argmax(axis).numpy(), x.T.argmax(axis))


@pytest.mark.parametrize("n", [1, 100, 4_000_001])
def test_long_sums_are_accurate(n):
    x = rand(n)
    assert_close(NDArray(x).sum().numpy(), x.astype(np.float64).sum(), scale=np.sqrt(n))
    assert_close(NDArray(x).reshape(1, n).sum(1).numpy(), [x.astype(np.float64).sum()], scale=np.sqrt(n))


def test_zero_size_and_0d():
    e = NDArray(np.zeros((0, 3), np.float32))
    assert (e + 1).shape == (0, 3)
    assert e.sum(0).shape == (3,)
    np.testing.assert_array_equal(e.sum(0).numpy(), np.zeros(3))
    assert e.sum().numpy() == 0
    with pytest.raises(ValueError, match="zero-size"):
        e.max(0)
    s = NDArray(np.float32(3.5))
    assert s.shape == () and s.ndim == 0
    assert (s * 2).numpy() == 7.0
    assert s.sum().numpy() == 3.5
    assert (s + NDArray(np.ones((2, 2), np.float32))).shape == (2, 2)


def test_views_share_memory():
    a = NDArray(np.arange(24, dtype=np.float32).reshape(4, 6))
    v = a[1:3, ::2]
    v[:] = -1
    want = np.arange(24, dtype=np.float32).reshape(4, 6)
    want[1:3, ::2] = -1
    np.testing.assert_array_equal(a.numpy(), want)
    t = a.T
    t[0, :] = 9  # column 0 of a
    want[:, 0] = 9
    np.testing.assert_array_equal(a.numpy(), want)
    r = a.reshape(24)
    r[5] = 100
    want.reshape(24)[5] = 100
    np.testing.assert_array_equal(a.numpy(), want)


def test_setitem_with_broadcast_and_strides():
    x = np.zeros((5, 6), np.float32)
    a = NDArray(x)
    row = np.arange(3, dtype=np.float32)
    a[::2, 1::2] = NDArray(row)
    x[::2, 1::2] = row
    np.testing.assert_array_equal(a.numpy(), x)
    a[-1] = 4.0
    x[-1] = 4.0
    np.testing.assert_array_equal(a.numpy(), x)
    a[1:, :] = a[:-1, :]  # overlapping copy reads before it writes
    x[1:, :] = x[:-1, :].copy()
    np.testing.assert_array_equal(a.numpy(), x)


def test_reshape_views_and_copies():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = NDArray(x)
    assert a.reshape(6, 4).handle is a.handle
    p = a.permute(2, 0, 1)
    r = p.reshape(4, 6)  # needs a copy
    np.testing.assert_array_equal(r.numpy(), x.transpose(2, 0, 1).reshape(4, 6))
    s = a[:, :, ::2].reshape(2, 3, 2, 1)  # a view: strides allow it
    assert s.handle is a.handle
    np.testing.assert_array_equal(s.numpy(), x[:, :, ::2].reshape(2, 3, 2, 1))
    np.testing.assert_array_equal(a.reshape(-1, 2).numpy(), x.reshape(-1, 2))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        a.reshape(5, 5)


@given(st.data())
@settings(max_examples=80, deadline=None)
def test_getitem_matches_numpy(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=7))
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    idx = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    got = NDArray(x)[idx]
    np.testing.assert_array_equal(got.numpy(), x[idx])


def test_dtypes_and_construction():
    assert NDArray([1, 2, 3]).dtype == np.int64     # integer data stays integer (numpy, torch)
    assert NDArray(np.arange(3, dtype=np.float64)).dtype == np.float64
    assert NDArray([1, 2], dtype="int64").numpy().dtype == np.int64
    mixed = NDArray(np.ones(3, np.float32)) + NDArray(np.ones(3, np.float64))
    assert mixed.dtype == np.float64
    with pytest.raises(TypeError, match="complex"):
        NDArray(np.ones(3, np.complex64))
    with pytest.raises(TypeError, match="float16"):
        NDArray([1.0], dtype="float16")
    assert "NDArray(" in repr(NDArray([1.5]))


def test_bad_input_errors():
    a = NDArray(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        a + NDArray(np.ones(4, np.float32))
    with pytest.raises(IndexError, match="out of bounds"):
        a[2]
    with pytest.raises(IndexError, match="too many indices"):
        a[0, 0, 0]
    with pytest.raises(IndexError):
        a["x"]
    with pytest.raises(ValueError, match="cannot broadcast"):
        a.broadcast_to((3, 3))
    with pytest.raises(ValueError, match="permutation"):
        a.permute(0, 0)
    with pytest.raises(ValueError, match="out of range"):
        a.sum(axis=2)
    with pytest.raises(ValueError, match="could not assign"):
        a[:] = NDArray(np.ones(4, np.float32))


def test_stack_concatenate_and_helpers():
    xs = [rand(3, 4) for _ in range(3)]
    arrs = [NDArray(x) for x in xs]
    np.testing.assert_array_equal(stack(arrs, 1).numpy(), np.stack(xs, 1))
    np.testing.assert_array_equal(concatenate(arrs, 1).numpy(), np.concatenate(xs, 1))
    assert zeros((2, 2)).numpy().sum() == 0
    assert broadcast_shapes((3, 1), (1, 4)) == (3, 4)


def test_threads_setting():
    import mininet
    old = mininet.get_num_threads()
    try:
        mininet.set_num_threads(1)
        x = rand(300, 300)
        one = (NDArray(x) @ NDArray(x)).numpy()
        mininet.set_num_threads(2)
        two = (NDArray(x) @ NDArray(x)).numpy()
        np.testing.assert_array_equal(one, two)
        with pytest.raises(ValueError):
            mininet.set_num_threads(0)
    finally:
        mininet.set_num_threads(old)


def test_cuda_views_collapse_to_few_dims():
    """The CUDA launcher's view packing is pure Python: check it without a GPU."""
    from mininet.backend.cuda_device import MAXDIM, _views
    n, (v,) = _views((4, 5, 6), (30, 6, 1))
    assert n == 120 and v == (1,) * (MAXDIM - 1) + (120,) + (0,) * (MAXDIM - 1) + (1,)
    # a transposed operand next to a compact output keeps two dims
    n, (vo, va) = _views((3, 5), (5, 1), (1, 3))
    assert vo[MAXDIM - 2:MAXDIM] == (3, 5) and vo[-2:] == (5, 1) and va[-2:] == (1, 3)
    # broadcast (stride 0) dims merge with each other
    n, (vb,) = _views((2, 3, 4), (0, 0, 1))
    assert n == 24 and vb[MAXDIM - 2:MAXDIM] == (6, 4) and vb[-2:] == (0, 1)
    with pytest.raises(ValueError, match="at most"):
        _views((2,) * 8, tuple(2 ** (2 * i) for i in range(8)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_table_ops_against_numpy(dtype):
    x = np.array([-0.9, -1e-9, 0.0, 1e-9, 0.5, 3.0, np.nan], dtype=dtype)
    np.testing.assert_allclose(NDArray(x).log1p().numpy(), np.log1p(x), rtol=1e-6)
    np.testing.assert_allclose(NDArray(x).expm1().numpy(), np.expm1(x), rtol=1e-6)
    np.testing.assert_array_equal(NDArray(x).clip(-0.5, 0.5).numpy(), np.clip(x, -0.5, 0.5))
    assert NDArray(x).log1p().dtype == dtype


def test_op_table_is_the_kernels_table():
    """The compiled kernels and the CUDA header come from backend/opcodes.py."""
    from mininet.backend import opcodes
    from mininet_ext import elementwise
    assert elementwise.SIGNATURE == opcodes.signature()
    cuda = opcodes.cuda_header()
    for i, (name, expr, _) in enumerate(opcodes.UNARY_OPS):
        assert f"case {i}: return {expr};" in cuda
    assert cuda.count("__trap()") == 2
    with pytest.raises(ValueError, match="unknown op"):
        elementwise.unary(len(opcodes.UNARY_OPS), NDArray([1.0]).handle, 0, (1,),
                          NDArray([1.0]).handle, (1,), 4)


def test_share_numpy_shares_memory_and_keeps_it_alive():
    import gc
    from mininet.ndarray import share_numpy
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = share_numpy(x)
    x[0, 0] = 100.0
    assert a.numpy()[0, 0] == 100.0          # shared, as torch.from_numpy
    del x
    gc.collect()
    np.testing.assert_array_equal((a * 2.0).numpy()[0], [200, 2, 4, 6])
    # not contiguous or not ours: a copy
    y = np.arange(12.0).reshape(3, 4).T
    b = share_numpy(y)
    y[0, 0] = -1
    assert b.numpy()[0, 0] == 0


@pytest.mark.torch
@pytest.mark.parametrize("shift", [4, 8, 12])
def test_kernels_read_misaligned_shared_memory(shift):
    """numpy memory is only 16-byte aligned (or less, from a byte buffer): every kernel must
    read it as well as the pool's 64-byte aligned blocks."""
    from mininet import ops
    from mininet.autograd import Tensor
    from mininet.ndarray import share_numpy
    rng = np.random.default_rng(0)
    raw = np.zeros(4 * 3000 + 64, dtype=np.uint8)
    x = np.frombuffer(raw.data, dtype=np.float32, count=2 * 3 * 12 * 12, offset=shift).reshape(2, 3, 12, 12)
    x[...] = rng.standard_normal(x.shape)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    a = share_numpy(x)
    np.testing.assert_allclose(a.numpy(), x)
    np.testing.assert_allclose((a.exp() + a).numpy(), np.exp(x) + x, rtol=1e-6, atol=1e-6)
    m = a.reshape(12, 72)
    np.testing.assert_allclose((m @ m.T).numpy(), x.reshape(12, 72) @ x.reshape(12, 72).T,
                               rtol=1e-4, atol=1e-4)
    y = ops.conv(Tensor.make_const(a), Tensor(w), padding=1).numpy()
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.max_pool2d(Tensor.make_const(a), 2).numpy(),
                               x.reshape(2, 3, 6, 2, 6, 2).max(axis=(3, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "log1p", "expm1"])
def test_vectorised_math_special_values_and_range(dtype, name):
    """exp, log, tanh ... run through glibc's vector math (libmvec) when built with it:
    NaN and infinities as numpy, and within a few ulp over a wide range."""
    ref = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "log1p": np.log1p, "expm1": np.expm1,
           "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name]
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 80.0, -80.0, 700.0, -700.0])
    wide = np.concatenate([special, np.linspace(-30, 30, 1001), np.geomspace(1e-8, 1e3, 300)])
    x = wide.astype(dtype)
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64)).astype(dtype)
    got = getattr(NDArray(x), name)().numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got[finite], want[finite], rtol=8 * eps, atol=np.finfo(dtype).tiny)
