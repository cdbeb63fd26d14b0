"""The bool dtype on the CUDA device against the CPU backend: comparisons written straight
into 1-byte masks (compare_*), the logical kernel, bool copies, fills and casts both ways,
and the Tensor-level uses (counts, any/all, where, masked_fill, x[mask] with its
gradient). Under the emulator each test also checks the entry points it is here for."""
import numpy as np
import pytest

import mininet
from mininet.autograd import Tensor
from mininet.backend.cuda import emulated
from mininet.backend.device import LOGICAL
from mininet.backend.opcodes import BINARY
from mininet.ndarray import NDArray

pytestmark = pytest.mark.gpu
rng = np.random.default_rng(41)
BOOL = np.dtype("bool")


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


@pytest.fixture
def launched():
    """check(*names): each entry point was launched since the test began (emulator only)."""
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


def ties(*shape, dtype=np.float32):
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.reshape(-1)[:2] = np.nan if x.dtype.kind == "f" else 0
    return x


def same(got, want):
    g, w = np.asarray(got.numpy()), np.asarray(want.numpy() if hasattr(want, "numpy") else want)
    assert g.dtype == w.dtype, (g.dtype, w.dtype)
    np.testing.assert_array_equal(g, w)


NAMES = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bool_outputs_refuse_ops_that_are_not_comparisons(gpu, dtype):
    """As on the CPU: a bool output is a comparison's mask, another op is refused by name."""
    a = NDArray(rng.standard_normal((3, 4)).astype(dtype), device=gpu)
    out = NDArray.make((3, 4), device=gpu, dtype=BOOL)
    for name in ("add", "maximum", "pass_pos"):
        with pytest.raises(ValueError, match="is not a comparison"):
            gpu.binary(BINARY[name], a, a, out)
        with pytest.raises(ValueError, match="is not a comparison"):
            gpu.binary_scalar(BINARY[name], a, 0.5, False, out)
    gpu.binary(BINARY["lt"], a, a, out)
    same(out, np.zeros((3, 4), bool))


@pytest.mark.parametrize("dtype,s", [(np.float32, "f32"), (np.float64, "f64")])
def test_comparisons_write_bool_masks(gpu, launched, dtype, s):
    x, y = ties(6, 35, dtype=dtype), ties(35, dtype=dtype)
    cx, cy = NDArray(x), NDArray(y)
    gx, gy = NDArray(x, device=gpu), NDArray(y, device=gpu)
    for name in NAMES:
        got = getattr(gx.T[::3], name)(gy[::3, None])        # strided and broadcast
        assert got.dtype == BOOL and got.device == gpu
        same(got, getattr(cx.T[::3], name)(cy[::3, None]))
        same(getattr(gx[1:], name)(0.5), getattr(cx[1:], name)(0.5))
        op = name.strip("_")   # the scalar on the left: the kernel's reverse flag
        same(gx._binary(0.5, op, True), cx._binary(0.5, op, True))
    launched(f"compare_{s}", f"compare_scalar_{s}")


def test_compare_kernel_output_at_an_offset(gpu, launched):
    x, y = ties(4, 9), ties(4, 9)
    gx, gy = NDArray(x, device=gpu), NDArray(y, device=gpu)
    buf = NDArray(np.ones(50, bool), device=gpu)
    out = buf[7:7 + 27].reshape(3, 9)
    gpu.binary(BINARY["le"], gx[1:], gy[1:], out)
    np.testing.assert_array_equal(out.numpy(), x[1:] <= y[1:])
    host = buf.numpy()
    assert host[:7].all() and host[34:].all()
    launched("compare_f32")


def test_logical_kernel_and_operators(gpu, launched):
    a, b = rng.random((5, 40)) < 0.5, rng.random((40,)) < 0.5
    ga, gb = NDArray(a, device=gpu), NDArray(b, device=gpu)
    same(ga & gb, a & b)
    same(ga.T[::2] | gb[::2, None], a.T[::2] | b[::2, None])
    same(ga ^ True, a ^ True)
    same(~ga[1:], ~a[1:])
    out = NDArray.make((5, 40), device=gpu, dtype=BOOL)
    for name, ref in (("and", a & b), ("or", a | b), ("xor", a ^ b)):
        gpu.logical(LOGICAL[name], ga, gb.broadcast_to((5, 40)), out)
        np.testing.assert_array_equal(out.numpy(), ref)
    with pytest.raises(TypeError, match="needs bool arrays"):
        gpu.logical(0, NDArray(np.ones((5, 40)), device=gpu), ga, out)
    launched("logical_b8")


def test_bool_copies_fills_and_casts(gpu, launched):
    b = rng.random((6, 7)) < 0.5
    gb = NDArray(b, device=gpu)
    same(gb.T.copy(), b.T.copy())                       # a strided 1-byte copy
    same(NDArray.make((3, 4), device=gpu, dtype=BOOL).fill(True), np.ones((3, 4), bool))
    same(NDArray.make((3,), device=gpu, dtype=BOOL).fill(0.0), np.zeros(3, bool))
    for dtype in ("float32", "float64", "int64"):
        same(gb.T.astype(dtype), b.T.astype(dtype))       # bool -> numbers
    x = np.array([[0.0, -0.0, np.nan, 2.5], [np.inf, 1e-30, -3.0, 0.0]])
    for dtype in ("float32", "float64"):
        gx = NDArray(x.astype(dtype), device=gpu)
        same(gx.T.astype(bool), x.astype(dtype).T.astype(bool))   # nonzero, NaN too
    ints = np.array([0, 3, -1, 0, 7])
    same(NDArray(ints, device=gpu)[::2].astype(bool), ints[::2].astype(bool))
    gb[1:3, ::2] = NDArray(np.zeros((2, 4), bool), device=gpu)   # setitem copies bytes
    b[1:3, ::2] = False
    same(gb, b)
    launched("copy_1", "fill_b8", "cast_b8_f32", "cast_b8_f64", "cast_b8_i64", "cast_f32_b8",
             "cast_f64_b8", "cast_i64_b8")


def test_tensor_masks_counts_and_selection_on_the_device(gpu, launched):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    gx = Tensor(x, device=gpu)
    m = gx > 0
    assert m.dtype == mininet.bool and m.device == gpu
    assert m.sum().item() == int((x > 0).sum()) and m.sum().dtype == np.int64
    same(m.any(1), (x > 0).any(1))
    same(m.all(0), (x > 0).all(0))
    same((gx != 0).all(), np.bool_(True))
    if (gx > 100).any():
        pytest.fail("no entry is above 100")
    np.testing.assert_array_equal(mininet.where(m, gx, -gx).numpy(), np.abs(x))
    np.testing.assert_array_equal(gx.masked_fill(~m, 0.0).numpy(), np.maximum(x, 0))
    # x[mask] reads through the row gather; its gradient scatters back
    leaf = Tensor(x, device=gpu, requires_grad=True)
    sel = leaf[m]
    np.testing.assert_array_equal(sel.numpy(), x[x > 0])
    (sel * 2.0).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.where(x > 0, 2.0, 0.0).astype(np.float32))
    rows = Tensor(np.array([True, False, True, True, False]), device=gpu)
    np.testing.assert_array_equal(gx[rows].numpy(), x[[0, 2, 3]])
    g = Tensor(x.copy(), device=gpu)
    g[m] = 0.0
    np.testing.assert_array_equal(g.numpy(), np.where(x > 0, 0.0, x))
    launched("compare_scalar_f32", "take_rows_f32", "logical_b8")
