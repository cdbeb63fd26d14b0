"""The bool dtype (mininet.bool, one byte, numpy's np.bool_): comparisons give bool masks,
logical ops, torch's promotion table for bool operands, counts and any/all, masks in
where/masked_fill and as indices (x[mask], with its gradient), conversions, DLPack and
safetensors; and 2 ** x, x ** y, abs, == None, bool(x). PyTorch (CPU) is the reference."""
import numpy as np
import pytest

import mininet
from mininet import Tensor, nn, no_grad
from mininet.backend import cpu
from mininet.backend.device import LOGICAL
from mininet.backend.opcodes import BINARY
from mininet.ndarray import NDArray

from conftest import assert_close, t64, torch

rng = np.random.default_rng(23)
BOOL = np.dtype("bool")
needs_torch = pytest.mark.torch


def r(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def with_ties(*shape, dtype=np.float64):
    """Small integers as floats: equal entries across two draws exercise eq/le/ge."""
    return rng.integers(-2, 3, shape).astype(dtype)


def mask(*shape):
    return rng.random(shape) < 0.5


def same(got, want):
    """Equal values and dtype (a mininet Tensor/NDArray against a torch tensor)."""
    got_np = got.numpy()
    want_np = want.numpy() if hasattr(want, "numpy") else np.asarray(want)
    assert got_np.dtype == want_np.dtype, (got_np.dtype, want_np.dtype)
    np.testing.assert_array_equal(got_np, want_np)


OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
       "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
METHODS = ("eq", "ne", "lt", "le", "gt", "ge")


# comparisons -------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("op", list(OPS))
def test_comparisons_give_bool_masks(op, dtype):
    x, y = with_ties(4, 5, dtype=dtype), with_ties(4, 5, dtype=dtype)
    x[0, 0] = y[0, 0]
    f = OPS[op]
    mx, my, tx, ty = Tensor(x), Tensor(y), torch.tensor(x), torch.tensor(y)
    same(f(mx, my), f(tx, ty))
    same(f(mx, my[1:2]), f(tx, ty[1:2]))             # broadcast
    same(f(mx.T[::2], my.T[-3:]), f(tx.T[::2], ty.T[-3:]))     # strided views
    same(f(mx, 0.5), f(tx, 0.5))
    same(f(0.5, mx), f(0.5, tx))                     # reflected
    same(f(mx, 1), f(tx, 1))
    assert f(mx, my).dtype == mininet.bool


@needs_torch
@pytest.mark.parametrize("name", METHODS)
def test_comparison_methods_match_torch_and_carry_no_gradient(name):
    x, y = with_ties(3, 4), with_ties(3, 4)
    mx = Tensor(x, requires_grad=True)
    got = getattr(mx, name)(Tensor(y))
    same(got, getattr(torch.tensor(x), name)(torch.tensor(y)))
    assert not got.requires_grad and got.op is None
    same(getattr(mx, name)(0.0), getattr(torch.tensor(x), name)(0.0))


@needs_torch
def test_nan_compares_as_torch():
    x = np.array([np.nan, 1.0, -np.inf, np.inf], np.float32)
    for op, f in OPS.items():
        same(f(Tensor(x), Tensor(x)), f(torch.tensor(x), torch.tensor(x)))
        same(f(Tensor(x), 1.0), f(torch.tensor(x), 1.0))


@needs_torch
def test_bool_operands_compare_as_torch():
    a, b = mask(3, 4), mask(3, 4)
    f = r(3, 4)
    for op, fn in OPS.items():
        same(fn(Tensor(a), Tensor(b)), fn(torch.tensor(a), torch.tensor(b)))
        same(fn(Tensor(a), Tensor(f)), fn(torch.tensor(a), torch.tensor(f)))
        same(fn(Tensor(a), True), fn(torch.tensor(a), True))
        same(fn(Tensor(a), 0.5), fn(torch.tensor(a), 0.5))


def test_ndarray_comparisons_are_bool_and_match_numpy():
    x, y = with_ties(5, 6), with_ties(5, 6)
    for op, f in OPS.items():
        got = f(NDArray(x), NDArray(y))
        assert got.dtype == BOOL and got.itemsize == 1
        np.testing.assert_array_equal(got.numpy(), f(x, y))
        np.testing.assert_array_equal(f(NDArray(x)[1:, ::2], 0.0).numpy(), f(x[1:, ::2], 0.0))


def test_compare_kernels_write_bool_at_offsets_and_on_views():
    """The backend kernels on views that start inside their buffers, writing into a bool
    output that itself starts at an offset: the bytes around it stay untouched."""
    x, y = with_ties(4, 7), with_ties(4, 7)
    a, b = NDArray(x)[1:], NDArray(y).T.T[1:]
    out_buf = NDArray(np.full(3 * 7 + 10, True))
    out = out_buf[5:5 + 21].reshape(3, 7)
    cpu().binary(BINARY["lt"], a, b, out)
    np.testing.assert_array_equal(out.numpy(), x[1:] < y[1:])
    assert out_buf.numpy()[:5].all() and out_buf.numpy()[26:].all()
    cpu().binary_scalar(BINARY["ge"], a, 0.0, True, out)
    np.testing.assert_array_equal(out.numpy(), 0.0 >= x[1:])


# logical ops -------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("op", ["&", "|", "^"])
def test_logical_operators_match_torch(op):
    f = {"&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}[op]
    a, b = mask(4, 6), mask(4, 6)
    ma, mb, ta, tb = Tensor(a), Tensor(b), torch.tensor(a), torch.tensor(b)
    same(f(ma, mb), f(ta, tb))
    same(f(ma[:, ::2], mb[1:2, ::2]), f(ta[:, ::2], tb[1:2, ::2]))   # strided, broadcast
    same(f(ma.T, mb.T), f(ta.T, tb.T))
    same(f(ma, True), f(ta, True))
    same(f(False, ma), f(False, ta))
    same(f(ma, np.True_), f(ta, True))


@needs_torch
def test_invert_and_logical_functions_match_torch():
    a, b = mask(3, 5), mask(3, 5)
    x = np.array([[0.0, 1.5, -2.0, np.nan, 0.0]])
    same(~Tensor(a), ~torch.tensor(a))
    same(~Tensor(a).T, ~torch.tensor(a).T)
    for name in ("logical_and", "logical_or", "logical_xor"):
        ref = getattr(torch, name)
        same(getattr(mininet, name)(Tensor(a), Tensor(b)), ref(torch.tensor(a), torch.tensor(b)))
        # any dtype in: nonzero (NaN too) is true
        same(getattr(mininet, name)(Tensor(x), Tensor(a)), ref(torch.tensor(x), torch.tensor(a)))
        same(getattr(Tensor(a), name)(Tensor(b)), getattr(torch.tensor(a), name)(torch.tensor(b)))
    same(mininet.logical_not(Tensor(x)), torch.logical_not(torch.tensor(x)))
    same(Tensor(a).logical_not(), torch.tensor(a).logical_not())


@pytest.mark.parametrize("op", ["&", "|", "^"])
def test_bitwise_ops_on_floats_are_refused_naming_the_dtypes(op):
    f = {"&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}[op]
    x = Tensor(r(3))
    with pytest.raises(TypeError, match=r"float64 and float64"):
        f(x, x)
    with pytest.raises(TypeError, match=r"bool and float32"):
        f(Tensor(mask(3)), Tensor(r(3, dtype=np.float32)))
    with pytest.raises(TypeError, match=r"int64"):
        f(Tensor(mask(3)), Tensor(np.arange(3)))
    with pytest.raises(TypeError, match="only bool arrays can be inverted"):
        ~x


def test_logical_kernel_on_offset_views_and_unknown_op():
    a, b = mask(3, 8), mask(3, 8)
    va, vb = NDArray(a)[1:], NDArray(b)[1:]
    out = NDArray.make((2, 8), dtype=BOOL)
    for name, ref in (("and", a & b), ("or", a | b), ("xor", a ^ b)):
        cpu().logical(LOGICAL[name], va, vb, out)
        np.testing.assert_array_equal(out.numpy(), ref[1:])
    with pytest.raises(ValueError, match="unknown op"):
        cpu().logical(7, va, vb, out)
    with pytest.raises(TypeError, match="needs bool arrays"):
        cpu().logical(0, NDArray(r(2, 8)), vb, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compare_kernels_refuse_ops_that_are_not_comparisons(dtype):
    """The bool-output kernels exist for eq..ge alone: another op is refused by name,
    never run as some other op or trapped in C."""
    a, b = NDArray(r(2, 5, dtype=dtype)), NDArray(r(2, 5, dtype=dtype))
    out = NDArray.make((2, 5), dtype=BOOL)
    for name in ("add", "maximum", "pass_pos", "gelu_grad"):
        with pytest.raises(ValueError, match="is not a comparison"):
            cpu().binary(BINARY[name], a, b, out)
        with pytest.raises(ValueError, match="is not a comparison"):
            cpu().binary_scalar(BINARY[name], a, 0.5, False, out)
    for name, ref in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                      ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)):
        cpu().binary(BINARY[name], a, b, out)
        np.testing.assert_array_equal(out.numpy(), ref(a.numpy(), b.numpy()))
        cpu().binary_scalar(BINARY[name], a, 0.5, True, out)
        np.testing.assert_array_equal(out.numpy(), ref(dtype(0.5), a.numpy()))


def test_logical_ops_read_any_nonzero_byte_as_true():
    """Bytes from elsewhere (a numpy bool array viewed from uint8) may hold 2: 2 & 1 is
    still true, ~2 false."""
    raw = np.array([2, 0, 1, 255], np.uint8).view(np.bool_)
    b = mininet.from_numpy(raw)
    np.testing.assert_array_equal((b & Tensor(np.ones(4, bool))).numpy(), [True, False, True, True])
    np.testing.assert_array_equal((~b).numpy(), [False, True, False, False])


# promotion ---------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("other", ["bool", "float32", "float64", "int64"])
@pytest.mark.parametrize("op", ["+", "*", "/", "**"])
def test_bool_with_tensors_promotes_as_torch(op, other):
    f = {"+": lambda a, b: a + b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
         "**": lambda a, b: a ** b}[op]
    b = mask(3, 4)
    o = mask(3, 4) if other == "bool" else with_ties(3, 4).astype(other) + 3
    for left, right, tl, tr in ((Tensor(b), Tensor(o), torch.tensor(b), torch.tensor(o)),
                                (Tensor(o), Tensor(b), torch.tensor(o), torch.tensor(b))):
        try:
            want = f(tl, tr)
        except (RuntimeError, NotImplementedError):   # torch refuses: so must mininet
            with pytest.raises(TypeError, match="bool"):
                f(left, right)
            continue
        got = f(left, right)
        assert got.dtype == np.dtype(str(want.dtype).replace("torch.", "")), (op, other)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


@needs_torch
@pytest.mark.parametrize("other", ["bool", "float32", "float64", "int64"])
def test_bool_maximum_minimum_promote_as_torch(other):
    b = mask(3, 4)
    o = mask(3, 4) if other == "bool" else with_ties(3, 4).astype(other)
    tb, to = torch.tensor(b), torch.tensor(o)
    same(mininet.ops.maximum(Tensor(b), Tensor(o)), torch.maximum(tb, to))
    same(Tensor(o).max(Tensor(b)), torch.maximum(to, tb))
    same(Tensor(NDArray(b).minimum(NDArray(o))), torch.minimum(tb, to))


@needs_torch
@pytest.mark.parametrize("scalar", [True, False, 2, -3, 2.5])
@pytest.mark.parametrize("op", ["+", "*", "/", "**", "r+", "r*", "r/", "r**"])
def test_bool_with_python_scalars_promotes_as_torch(op, scalar):
    f = {"+": lambda a, s: a + s, "*": lambda a, s: a * s, "/": lambda a, s: a / s,
         "**": lambda a, s: a ** s, "r+": lambda a, s: s + a, "r*": lambda a, s: s * a,
         "r/": lambda a, s: s / a, "r**": lambda a, s: s ** a}[op]
    b = mask(2, 5)
    b[0, :2] = [True, False]
    try:
        want = f(torch.tensor(b), scalar)
    except (RuntimeError, NotImplementedError):
        with pytest.raises((TypeError, ValueError)):
            f(Tensor(b), scalar)
        return
    got = f(Tensor(b), scalar)
    assert got.dtype == np.dtype(str(want.dtype).replace("torch.", "")), (op, scalar)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


@needs_torch
def test_subtraction_and_negation_of_bool_are_refused_as_torch():
    b, f = Tensor(mask(3)), Tensor(r(3))
    for line in (lambda: b - b, lambda: b - f, lambda: f - b, lambda: 1.0 - b, lambda: b - 1,
                 lambda: f - True):
        with pytest.raises(TypeError, match="subtraction .* bool"):
            line()
    with pytest.raises(TypeError, match=r"negation .* bool.*~"):
        -b
    with pytest.raises(TypeError, match="abs: not defined for bool"):
        abs(b)
    with pytest.raises(RuntimeError):
        torch.tensor([True]) - torch.tensor([1.0])


def test_ndarray_keeps_numpys_bool_rules_for_subtraction():
    b = NDArray(np.array([True, False]))
    np.testing.assert_array_equal((1.5 - b).numpy(), [0.5, 1.5])
    with pytest.raises(TypeError, match="two bool arrays"):
        b - b
    with pytest.raises(TypeError, match="negation"):
        -b


def test_bool_to_a_negative_integer_power_is_refused():
    with pytest.raises(ValueError, match="negative integer powers"):
        Tensor(mask(3)) ** -1


@needs_torch
def test_unary_math_on_bool_computes_in_float32():
    b = np.array([True, False])
    for name in ("exp", "sqrt", "tanh", "sigmoid", "log1p", "log"):
        got, want = getattr(Tensor(b), name)(), getattr(torch.tensor(b), name)()
        same(got, want) if name in ("sqrt", "log") else None
        assert got.dtype == np.float32 and want.dtype == torch.float32, name
        assert_close(got.numpy(), want.numpy().astype(np.float64), np.float32)


# reductions --------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_any_all_of_bool_match_torch(dim, keepdim):
    b = mask(4, 7)
    b[:, 0] = True
    b[0, :] = False
    mb, tb = Tensor(b), torch.tensor(b)
    kw = {} if dim is None else {"dim": dim, "keepdim": keepdim}
    same(mb.sum(**kw), tb.sum(**kw))
    same(mb.any(**kw), tb.any(**kw))
    same(mb.all(**kw), tb.all(**kw))
    x = np.where(b, 0.0, r(4, 7))
    same(Tensor(x).any(**kw), torch.tensor(x).any(**kw))
    same(Tensor(x).all(**kw), torch.tensor(x).all(**kw))


@needs_torch
def test_reductions_of_bool_edge_cases_match_torch():
    empty = np.zeros((0, 3), bool)
    for name in ("sum", "any", "all"):
        same(getattr(Tensor(empty), name)(), getattr(torch.tensor(empty), name)())
        same(getattr(Tensor(empty), name)(0), getattr(torch.tensor(empty), name)(0))
    nan = np.array([np.nan, 0.0])
    same(Tensor(nan).any(), torch.tensor(nan).any())
    same(Tensor(nan[:1]).all(), torch.tensor(nan[:1]).all())
    b = mask(3, 4)
    same(Tensor(b).max(), torch.tensor(b).max())
    same(Tensor(b).amax(1), torch.tensor(b).amax(1))
    same(Tensor(b).cumsum(1), torch.tensor(b).cumsum(1))
    same(Tensor(b).prod(1), torch.tensor(b).prod(1))
    big = Tensor(np.ones(1 << 25, bool))
    assert big.sum().item() == 1 << 25        # beyond float32's exact integers
    with pytest.raises(TypeError, match=r"mean: not defined for bool"):
        Tensor(b).mean()
    with pytest.raises(RuntimeError):
        torch.tensor(b).mean()
    assert_close(Tensor(b).float().mean().numpy(), b.mean(), np.float32)


def test_if_any_works():
    x = Tensor(np.array([0.0, -1.0, 0.0]))
    assert bool(x.any()) is True and bool(x.all()) is False
    if (x > 0).any():
        pytest.fail("no entry is positive")
    if not (x < 0).any():
        pytest.fail("one entry is negative")


# where, masked_fill ------------------------------------------------------------------------
@needs_torch
def test_where_and_masked_fill_with_bool_masks_match_torch():
    x, y, m = r(3, 4), r(3, 4), mask(3, 4)
    mx, my = t64(x), t64(y)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y, requires_grad=True)
    w = r(3, 4)
    out = mininet.where(Tensor(m), mx, my) * 2.0 + mx.masked_fill(Tensor(m[0]), -7.0)
    ref = torch.where(torch.tensor(m), tx, ty) * 2.0 + tx.masked_fill(torch.tensor(m[0]), -7.0)
    assert_close(out.numpy(), ref.detach().numpy(), np.float64)
    (out * Tensor(w)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    assert_close(my.grad.numpy(), ty.grad.numpy(), np.float64)
    # inf off the mask stays out
    z = np.array([np.inf, 1.0, -np.inf])
    keep = np.array([False, True, False])
    same(mininet.where(Tensor(keep), Tensor(z), Tensor(np.zeros(3))),
         torch.where(torch.tensor(keep), torch.tensor(z), torch.zeros(3, dtype=torch.float64)))


@needs_torch
def test_where_and_masked_fill_on_bool_values_stay_bool():
    a, b, m = mask(5), mask(5), mask(5)
    same(mininet.where(Tensor(m), Tensor(a), Tensor(b)),
         torch.where(torch.tensor(m), torch.tensor(a), torch.tensor(b)))
    same(Tensor(a).masked_fill(Tensor(m), True), torch.tensor(a).masked_fill(torch.tensor(m), True))
    # a bool value with a float one promotes to the float
    x = r(5)
    same(mininet.where(Tensor(m), Tensor(a), Tensor(x)),
         torch.where(torch.tensor(m), torch.tensor(a), torch.tensor(x)))


def test_numeric_masks_still_work_where_they_did():
    """torch requires bool conditions; mininet keeps taking 0/1 numbers (nonzero is true)."""
    x = r(4)
    m = np.array([1.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(Tensor(x).masked_fill(Tensor(m), 5.0).numpy(),
                                  np.where(m != 0, 5.0, x))
    np.testing.assert_array_equal(mininet.where(Tensor(m.astype(np.int64)), Tensor(x), 0.0).numpy(),
                                  np.where(m != 0, x, 0.0))


# boolean-mask indexing ---------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("mshape", [(3, 4, 5), (3, 4), (3,)])
def test_mask_reads_and_their_gradient_match_torch(mshape):
    x = r(3, 4, 5)
    m = mask(*mshape)
    m.reshape(-1)[0] = True
    mx, tx = t64(x), torch.tensor(x, requires_grad=True)
    got, want = mx[Tensor(m)], tx[torch.tensor(m)]
    assert got.shape == tuple(want.shape)
    assert_close(got.numpy(), want.detach().numpy(), np.float64)
    w = rng.standard_normal(tuple(want.shape))
    (got * Tensor(w)).sum().backward()
    (want * torch.tensor(w)).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    # numpy masks, NDArray masks, float32 data and views index the same way
    assert_close(mx[m].numpy(), want.detach().numpy(), np.float64)
    assert_close(Tensor(x.astype(np.float32))[Tensor(m).cached_data].numpy(),
                 want.detach().numpy(), np.float32)
    xt = Tensor(x.transpose(2, 1, 0).copy()).permute(2, 1, 0)   # a non-compact view of x
    assert_close(xt[Tensor(m)].numpy(), want.detach().numpy(), np.float64)


@needs_torch
def test_mask_read_second_order_and_edge_cases():
    x, m = r(4, 3), mask(4, 3)
    mx = t64(x)
    y = (mx[Tensor(m)] ** 3).sum()
    (g,) = mininet.autograd.grad(y, [mx], create_graph=True)
    g.sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    (tg,) = torch.autograd.grad((tx[torch.tensor(m)] ** 3).sum(), tx, create_graph=True)
    tg.sum().backward()
    assert_close(g.numpy(), tg.detach().numpy(), np.float64)
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    none = np.zeros((4, 3), bool)
    assert Tensor(x)[Tensor(none)].shape == (0,)
    assert Tensor(mask(4) | True)[Tensor(np.ones(4, bool))].shape == (4,)
    with pytest.raises(IndexError, match=r"mask of shape \(3,\) does not match"):
        Tensor(x)[Tensor(mask(3))]
    ints = Tensor(np.arange(6).reshape(2, 3))
    same(ints[ints > 2], torch.arange(6).reshape(2, 3)[torch.arange(6).reshape(2, 3) > 2])
    b = Tensor(m)
    same(b[b], torch.tensor(m)[torch.tensor(m)])
    same(mininet.masked_select(Tensor(x), Tensor(m[0])),
         torch.masked_select(torch.tensor(x), torch.tensor(m[0])))


@needs_torch
def test_mask_writes_match_torch():
    x, m = r(3, 4), mask(3, 4)
    mx, tx = Tensor(x.copy()), torch.tensor(x.copy())
    mx[Tensor(m)] = 0.5
    tx[torch.tensor(m)] = 0.5
    same(mx, tx)
    k = int(m[0].sum())
    vals = r(k)
    mx[0][Tensor(m[0])] = Tensor(vals)      # through a view: writes reach x
    tx[0][torch.tensor(m[0])] = torch.tensor(vals)
    same(mx, tx)
    rows = Tensor(np.array([True, False, True]))
    mx[rows] = Tensor(np.arange(4.0))       # broadcast over the selected rows
    tx[torch.tensor([True, False, True])] = torch.arange(4.0, dtype=torch.float64)
    same(mx, tx)
    leaf = Tensor(x, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf[Tensor(m)] = 0.0
    with no_grad():
        leaf[Tensor(m)] = 0.0
    np.testing.assert_array_equal(leaf.numpy(), np.where(m, 0.0, x))


# conversions -------------------------------------------------------------------------------
@needs_torch
def test_conversions_both_ways_match_torch():
    x = np.array([[0.0, -0.0, 2.5, np.nan], [np.inf, 1e-30, -3.0, 0.0]])
    mx, tx = Tensor(x), torch.tensor(x)
    same(mx.bool(), tx.bool())
    same(mx.T.bool(), tx.T.bool())                       # a strided view
    same(mx.to(mininet.bool), tx.to(torch.bool))
    same(mx.to("bool"), tx.bool())
    same(Tensor(x.astype(np.float32)).bool(), torch.tensor(x.astype(np.float32)).bool())
    ints = np.array([0, 3, -1])
    same(Tensor(ints).bool(), torch.tensor(ints).bool())
    b = tx.bool()
    same(mx.bool().float(), b.float())
    same(mx.bool().double(), b.double())
    same(mx.bool().long(), b.long())
    assert mx.bool().float().dtype == np.float32 and not mx.bool().float().requires_grad
    nd = NDArray(x)
    np.testing.assert_array_equal(nd.astype(bool).numpy(), x.astype(bool))
    np.testing.assert_array_equal(nd.astype(bool).astype("float32").numpy(),
                                  x.astype(bool).astype(np.float32))
    with pytest.raises(TypeError, match="only float tensors can require grad"):
        Tensor(np.array([True]), requires_grad=True)


@needs_torch
def test_creation_and_python_values_are_torchs():
    same(mininet.tensor([True, False]), torch.tensor([True, False]))
    assert Tensor(np.array([True])).dtype == mininet.bool
    z = mininet.zeros(2, 3, dtype=mininet.bool)
    same(z, torch.zeros(2, 3, dtype=torch.bool))
    same(mininet.ones(4, dtype="bool"), torch.ones(4, dtype=torch.bool))
    b = Tensor(np.array([True, False]))
    assert b.tolist() == [True, False] and all(type(v) is bool for v in b.tolist())
    assert b[0].item() is True and b[1].item() is False
    assert "True" in repr(b) and "False" in str(b) and "bool" in repr(b)
    assert "True" in repr(b.cached_data)
    assert mininet.bool == np.dtype("bool") and mininet.bool.itemsize == 1
    assert b.cached_data.nbytes == 2


def test_bool_of_a_tensor():
    assert bool(Tensor(np.array([2.0]))) is True
    assert bool(Tensor(np.array(0.0))) is False
    assert bool(Tensor(np.array([[True]]))) is True
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor(np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="empty"):
        bool(Tensor(np.zeros(0)))


def test_eq_none_is_false_not_an_error():
    for x in (Tensor(r(3)), NDArray(r(3)), Tensor(mask(2))):
        assert (x == None) is False     # noqa: E711 (the point of the test)
        assert (x != None) is True      # noqa: E711
    assert Tensor(r(2)) not in [None]
    if torch is not None:
        assert (torch.zeros(2) == None) is False   # noqa: E711


# powers and abs ----------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalar_to_a_tensor_power_and_its_gradient(dtype):
    x = r(3, 4, dtype=dtype)
    for base in (2, 0.5, 10.0):
        mx = Tensor(x, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        y, ty = base ** mx, base ** tx
        assert y.dtype == dtype
        assert_close(y.numpy(), ty.detach().numpy().astype(np.float64), dtype)
        y.sum().backward()
        ty.sum().backward()
        assert_close(mx.grad.numpy(), tx.grad.numpy().astype(np.float64), dtype)
    ints = np.arange(4)
    same(2 ** Tensor(np.array([True, False])), 2 ** torch.tensor([True, False]))
    base = np.abs(r(4, dtype=dtype)) + 0.5               # array data as the base
    mx = Tensor(x, requires_grad=True)
    y = base ** mx
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(base) ** tx
    assert_close(y.numpy(), ty.detach().numpy().astype(np.float64), dtype)
    y.sum().backward()
    ty.sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy().astype(np.float64), dtype)
    assert_close((2 ** Tensor(ints)).numpy(), 2.0 ** ints)


@needs_torch
def test_zero_base_power_gradient_matches_torch():
    x = np.array([0.0, 1.5, 2.0])
    mx, tx = t64(x), torch.tensor(x, requires_grad=True)
    (0.0 ** mx).sum().backward()
    (0.0 ** tx).sum().backward()
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())


@needs_torch
def test_tensor_to_a_tensor_power_gradients_match_torch():
    a = np.abs(r(3, 4)) + 0.3
    b = r(1, 4)     # broadcast exponent
    ma, mb = t64(a), t64(b)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    w = r(3, 4)
    out, ref = ma ** mb, ta ** tb
    assert_close(out.numpy(), ref.detach().numpy(), np.float64)
    (out * Tensor(w)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    assert_close(ma.grad.numpy(), ta.grad.numpy(), np.float64)
    assert_close(mb.grad.numpy(), tb.grad.numpy(), np.float64)
    # a zero base with exponents >= 0: torch's flat gradient, not 0 * log(0) = NaN
    a0, b0 = np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.0, 1.5])
    ma, mb = t64(a0), t64(b0)
    ta, tb = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    (ma ** mb).sum().backward()
    (ta ** tb).sum().backward()
    assert_close(ma.grad.numpy(), ta.grad.numpy(), np.float64)
    assert_close(mb.grad.numpy(), tb.grad.numpy(), np.float64)
    # the exponent alone requiring grad
    c = t64(b)
    (Tensor(a) ** c).sum().backward()
    tc = torch.tensor(b, requires_grad=True)
    (torch.tensor(a) ** tc).sum().backward()
    assert_close(c.grad.numpy(), tc.grad.numpy(), np.float64)


@needs_torch
def test_builtin_abs_and_its_gradient_match_torch():
    x = np.array([-2.0, 0.0, 3.5, -0.25])
    mx, tx = t64(x), torch.tensor(x, requires_grad=True)
    y, ty = abs(mx), abs(tx)
    assert_close(y.numpy(), ty.detach().numpy(), np.float64)
    (y * 3.0).sum().backward()
    (ty * 3.0).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    np.testing.assert_array_equal(abs(NDArray(x)).numpy(), np.abs(x))


# interchange -------------------------------------------------------------------------------
@needs_torch
def test_dlpack_shares_bool_memory_with_torch_both_ways():
    b = Tensor(np.array([[True, False, True], [False, False, True]]))
    t = torch.from_dlpack(b)
    assert t.dtype == torch.bool
    t[0, 1] = True                        # torch writes, mininet reads
    assert b.numpy()[0, 1]
    b.cached_data[1, 0] = True            # mininet writes, torch reads
    assert bool(t[1, 0])
    tv = torch.from_dlpack(b.T[1:])       # a strided view with an offset
    same(Tensor(tv.clone()), t.T[1:])
    src = torch.tensor([False, True, False, True])
    m = mininet.from_dlpack(src[1:])      # torch -> mininet, sharing, from an offset
    assert m.dtype == mininet.bool
    src[3] = False
    np.testing.assert_array_equal(m.numpy(), [True, False, False])
    m.cached_data[0] = False
    assert not bool(src[1])
    same(~m, ~src[1:])


def test_dlpack_and_numpy_share_bool_memory():
    b = Tensor(np.array([True, False, False]))
    a = np.from_dlpack(b)
    assert a.dtype == np.bool_
    a[2] = True
    np.testing.assert_array_equal(b.numpy(), [True, False, True])
    v = np.asarray(b)
    b.cached_data[1] = True
    assert v[1]
    src = np.array([True, False, True, False])
    m = mininet.from_numpy(src)
    src[1] = True
    assert m.numpy()[1]
    m.cached_data[0] = False
    assert not src[0]
    d = mininet.from_dlpack(src[::2])
    np.testing.assert_array_equal(d.numpy(), src[::2])
    from mininet.backend.dlpack import CODES
    assert CODES[BOOL] == (6, 8)          # kDLBool, 8 bits


def test_safetensors_round_trip_of_bool(tmp_path):
    b = mask(3, 5)
    x = r(4)
    path = tmp_path / "m.safetensors"
    mininet.save_file({"mask": Tensor(b), "x": Tensor(x), "view": Tensor(b).T}, path)
    back = mininet.load_file(path)
    assert back["mask"].dtype == mininet.bool
    np.testing.assert_array_equal(back["mask"].numpy(), b)
    np.testing.assert_array_equal(back["view"].numpy(), b.T)
    np.testing.assert_array_equal(back["x"].numpy(), x)
    assert b"BOOL" in path.read_bytes()[:400]


@needs_torch
def test_torch_reads_our_bool_safetensors_and_we_read_theirs(tmp_path):
    pytest.importorskip("safetensors")
    import safetensors.torch as st_torch
    b = mask(2, 6)
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    mininet.save_file({"m": Tensor(b)}, ours)
    t = st_torch.load_file(str(ours))["m"]
    assert t.dtype == torch.bool and (t.numpy() == b).all()
    st_torch.save_file({"m": torch.tensor(b)}, str(theirs))
    same(mininet.load_file(theirs)["m"], torch.tensor(b))


def test_a_bool_buffer_round_trips_through_state_dict_and_safetensors(tmp_path):
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)
            self.register_buffer("keep", Tensor(np.array([True, False, True, True])))

        def forward(self, x):
            return self.lin(x.masked_fill(~self.keep, 0.0))

    m = Masked()
    path = tmp_path / "masked.safetensors"
    mininet.save_file(m.state_dict(), path)
    fresh = Masked()
    fresh.keep = Tensor(np.zeros(4, bool))
    fresh.load_state_dict(mininet.load_file(path))
    assert fresh.keep.dtype == mininet.bool
    np.testing.assert_array_equal(fresh.keep.numpy(), [True, False, True, True])
    x = Tensor(r(3, 4))
    np.testing.assert_array_equal(fresh(x).numpy(), m(x).numpy())
