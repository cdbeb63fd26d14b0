"""Tensor indexing as torch and numpy: x[index] with ints, slices (any step), None, ...,
integer arrays / lists / int64 tensors and bool masks, mixed (numpy's placement of the
advanced dims); x[index] = value; gradients through every read (repeats accumulate) and
through recorded writes. numpy is the oracle for values, np.add.at and PyTorch CPU for
gradients."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mininet
from mininet import Tensor, no_grad

from conftest import assert_close, torch

rng = np.random.default_rng(22)
needs_torch = pytest.mark.torch


def r(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# one random index over a shape ------------------------------------------------------------
@st.composite
def an_index(draw, shape):
    """A random index over shape: ints, stepped slices, None, ..., int arrays (np, list or
    int64 Tensor) broadcasting together, at most one bool mask."""
    nd = len(shape)
    n_used = draw(st.integers(0, nd))
    kinds, dim = [], 0
    while dim < n_used:
        kind = draw(st.sampled_from(["int", "slice", "slice", "array", "mask"]))
        width = draw(st.integers(1, n_used - dim)) if kind == "mask" else 1
        if kind == "mask" and any(k == "mask" for k, _ in kinds):
            kind, width = "slice", 1
        kinds.append((kind, width))
        dim += width
    items, dim, count = [], 0, None
    for kind, width in kinds:   # the mask first: its count sets the arrays' length
        if kind == "mask":
            m = np.asarray(draw(st.lists(st.booleans(), min_size=int(np.prod(shape[dim:dim + width])),
                                         max_size=int(np.prod(shape[dim:dim + width])))), bool)
            count = int(m.sum())
        dim += width
    adv = (count,) if count is not None else tuple(draw(st.lists(st.integers(1, 3), min_size=1,
                                                                 max_size=2)))
    dim = 0
    for kind, width in kinds:
        n = shape[dim]
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.none() | st.integers(-n - 1, n + 1))
            stop = draw(st.none() | st.integers(-n - 1, n + 1))
            step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
            items.append(slice(start, stop, step))
        elif kind == "array":
            s = tuple(1 if draw(st.booleans()) and count is None else a for a in adv)
            vals = np.asarray(draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(s)),
                                            max_size=int(np.prod(s)))), np.int64).reshape(s)
            form = draw(st.sampled_from(["np", "list", "tensor"]))
            items.append(vals.tolist() if form == "list" and vals.ndim == 1 else
                         Tensor(vals) if form == "tensor" else vals)
        else:
            m = m.reshape(shape[dim:dim + width])
            items.append(Tensor(m) if draw(st.booleans()) else m)
        dim += width
    for _ in range(draw(st.integers(0, 2))):   # None anywhere
        items.insert(draw(st.integers(0, len(items))), None)
    if draw(st.booleans()):   # ... stands for the dims not indexed: anywhere when none are left
        where = draw(st.integers(0, len(items))) if n_used == nd else len(items)
        items.insert(where, Ellipsis)
    return tuple(items)


def as_numpy_index(idx):
    return tuple(i.numpy() if isinstance(i, Tensor) else
                 np.asarray(i, dtype=None if i else np.int64) if isinstance(i, list) else i
                 for i in idx)


def as_torch_index(idx):
    return tuple(torch.tensor(i.numpy()) if isinstance(i, Tensor) else
                 torch.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_reads_and_gradients_match_numpy_fuzz(data):
    shape = data.draw(shapes)
    idx = data.draw(an_index(shape))
    x = r(*shape)
    np_idx = as_numpy_index(idx)
    want = x[np_idx]
    mx = Tensor(x, requires_grad=True)
    got = mx[idx]
    assert got.shape == want.shape, (idx, got.shape, want.shape)
    np.testing.assert_array_equal(got.numpy(), want)
    # the gradient of sum(x[idx] * w): w scattered back, repeats added (np.add.at)
    w = r(*want.shape)
    (got * Tensor(w)).sum().backward()
    grad = np.zeros_like(x)
    np.add.at(grad, np_idx, w)
    assert_close(mx.grad.numpy(), grad, np.float64)
    # and as torch, where torch takes the index and places dims as numpy does
    steps_ok = all(not isinstance(i, slice) or (i.step or 1) > 0 for i in idx)
    # torch applies ints before the arrays (x[0, :, [1, 2]] is (3, 2) there, (2, 3) in numpy)
    ints_with_arrays = any(isinstance(i, int) for i in idx) and \
        any(isinstance(i, (np.ndarray, list, Tensor)) for i in idx)
    if steps_ok and not ints_with_arrays:
        tx = torch.tensor(x, requires_grad=True)
        tw = tx[as_torch_index(np_idx)]
        if tuple(tw.shape) == want.shape:
            (tw * torch.tensor(w)).sum().backward()
            assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_writes_match_numpy_fuzz(data):
    shape = data.draw(shapes)
    idx = data.draw(an_index(shape))
    x = r(*shape)
    np_idx = as_numpy_index(idx)
    target = x[np_idx].shape
    pos = np.arange(x.size).reshape(shape)[np_idx]
    kind = data.draw(st.sampled_from(["scalar", "full", "row"]))
    if kind != "scalar" and np.unique(pos).size != pos.size:
        kind = "scalar"   # repeated targets: which write wins is unspecified (as torch)
    value = 3.5 if kind == "scalar" else r(*target) if kind == "full" else r(*target[-1:])
    mx, want = Tensor(x.copy()), x.copy()
    mx[idx] = value if kind == "scalar" else Tensor(value)
    want[np_idx] = value
    np.testing.assert_array_equal(mx.numpy(), want)


# shapes: numpy's placement of advanced dims ----------------------------------------------
@pytest.mark.parametrize("idx, shape", [
    ((slice(None), [0, 2], [1, 3]), (2, 2)),            # adjacent: stay in place
    (([0, 1], slice(None), [1, 3]), (2, 3)),            # separated by a slice: go first
    ((Ellipsis, [[0, 1], [2, 3]]), (2, 3, 2, 2)),
    ((None, [1], slice(None, None, 2), [3, -1]), (2, 1, 2)),
    ((0, slice(None), [1, 2]), (2, 3)),                 # an int counts as advanced (numpy)
    ((slice(None, None, -1), None, 1, slice(3, 0, -2)), (2, 1, 2)),
    (([],), (0, 3, 4)),
])
def test_result_shapes_follow_numpy(idx, shape):
    x = np.arange(24.0).reshape(2, 3, 4)
    got = Tensor(x)[idx]
    assert got.shape == shape == x[as_numpy_index(idx)].shape
    np.testing.assert_array_equal(got.numpy(), x[as_numpy_index(idx)])


# gradients ---------------------------------------------------------------------------------
@needs_torch
def test_repeated_indices_accumulate_as_torch():
    x = r(4, 5)
    mx, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    rows, cols = [0, 0, 3, 0], [1, 1, 4, 2]
    w = r(4)
    (mx[rows, cols] * Tensor(w)).sum().backward()
    (tx[rows, cols] * torch.tensor(w)).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    assert mx.grad.numpy()[0, 1] == pytest.approx(w[0] + w[1])
    i = Tensor(np.array([[2, 2], [0, 2]]))   # an int64 tensor index, 2-d: rows of x
    mx.grad = None
    w2 = r(2, 2, 5)
    (mx[i] * Tensor(w2)).sum().backward()
    tx.grad = None
    (tx[torch.tensor([[2, 2], [0, 2]])] * torch.tensor(w2)).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)


@needs_torch
def test_second_order_through_an_advanced_read():
    x = r(3, 4)
    mx, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (g,) = mininet.autograd.grad((mx[[0, 0, 2], 1:] ** 3).sum(), [mx], create_graph=True)
    (tg,) = torch.autograd.grad((tx[[0, 0, 2], 1:] ** 3).sum(), tx, create_graph=True)
    assert_close(g.numpy(), tg.detach().numpy(), np.float64)
    g.sum().backward()
    tg.sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)


# writes -------------------------------------------------------------------------------------
@needs_torch
def test_writes_match_torch():
    x = r(3, 4)
    mx, tx = Tensor(x.copy()), torch.tensor(x.copy())
    for m, t in ((mx, tx),):
        m[:, 1] = 0
        t[:, 1] = 0
        m[m > 0.5] = Tensor(np.array(-1.0))
        t[t > 0.5] = torch.tensor(-1.0, dtype=torch.float64)
        m[[0, 2]] = Tensor(np.arange(4.0))                # broadcast over the rows
        t[[0, 2]] = torch.arange(4.0, dtype=torch.float64)
        m[Tensor(np.array([1])), [3, 0]] = Tensor(np.array([7.0, 8.0]))
        t[torch.tensor([1]), [3, 0]] = torch.tensor([7.0, 8.0], dtype=torch.float64)
        m[::-1, ::2] = 9.0
        t[:, ::2] = 9.0
    np.testing.assert_array_equal(mx.numpy(), tx.numpy())
    ints = Tensor(np.arange(6))
    ints[[1, 4]] = 2.9   # cast to the tensor's dtype, as torch
    assert ints.dtype == mininet.int64 and ints.tolist() == [0, 2, 2, 3, 2, 5]
    base = Tensor(np.zeros((2, 3)))
    base[1][[0, 2]] = 5.0     # through a view: the write reaches base
    np.testing.assert_array_equal(base.numpy(), [[0, 0, 0], [5, 0, 5]])


def test_write_rules_as_torch():
    leaf = Tensor(r(3), requires_grad=True)
    for idx in (0, [0, 1], leaf > 0, slice(None, None, 2)):
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
            leaf[idx] = 1.0
    with no_grad():
        leaf[[0, 2]] = 1.0
    assert leaf.numpy()[0] == leaf.numpy()[2] == 1.0 and leaf.requires_grad
    with pytest.raises(ValueError, match="could not assign"):
        Tensor(r(3, 4))[[0, 1]] = Tensor(r(3))


@needs_torch
@pytest.mark.parametrize("idx", [(0,), (slice(None), 1), ([0, 2],), (slice(None), [3, 1]),
                                 ("mask",), (slice(None, None, 2), [0, 1])])
def test_recorded_writes_into_a_graph_tensor_as_torch(idx):
    """Writing into a tensor that requires grad (not a leaf) is recorded, as torch's:
    the gradient reaches the written value and the rest of the old tensor (tests/
    test_inplace_autograd.py has the version checks)."""
    x = r(3, 4)
    if idx == ("mask",):
        idx = (rng.random((3, 4)) < 0.5,)
    shape = x[idx].shape
    v = r(*shape[-1:]) if shape else r()
    mx, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    mv, tv = Tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
    my, ty = mx * 3.0, tx * 3.0
    my[idx] = mv * 2.0
    ty[idx] = tv * 2.0
    assert_close(my.numpy(), ty.detach().numpy(), np.float64)
    (my * my).sum().backward()
    (ty * ty).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), np.float64)
    assert_close(mv.grad.numpy(), tv.grad.numpy(), np.float64)


@needs_torch
def test_writing_a_grad_value_into_a_plain_tensor_records_it():
    w = r(3)
    mw, tw = Tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    mo, to = mininet.zeros(2, 3, dtype="float64"), torch.zeros(2, 3, dtype=torch.float64)
    mo[1] = mw * mw
    to[1] = tw * tw
    assert mo.requires_grad and not mo.is_leaf()
    (mo.sum() * 3).backward()
    (to.sum() * 3).backward()
    assert_close(mw.grad.numpy(), tw.grad.numpy(), np.float64)


# errors ---------------------------------------------------------------------------------------
def test_errors_name_the_index_dim_and_size():
    x = Tensor(r(2, 3, 4))
    for idx, dim, i, n in ((5, 0, 5, 2), ((0, -4), 1, -4, 3), ([0, 5], 0, 5, 2),
                           ((slice(None), Tensor(np.array([1, 3]))), 1, 3, 3),
                           ((None, 0, 1, [9]), 2, 9, 4), ((Ellipsis, [4]), 2, 4, 4)):
        with pytest.raises(IndexError, match=rf"index {i} is out of bounds for dimension {dim} "
                                             rf"with size {n}"):
            x[idx]
        with pytest.raises(IndexError, match=rf"index {i} .* dimension {dim} with size {n}"):
            x[idx] = 0.0
    for bad in (1.5, (0, 2.0), [0.5], Tensor(np.array([1.0])), "a", np.array([0.5])):
        with pytest.raises(IndexError, match="valid indices"):
            x[bad]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0, 0]
    with pytest.raises(IndexError, match="too many indices"):
        x[[0], 0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., [0], ...]
    with pytest.raises(IndexError, match=r"mask of shape \(2,\) does not match"):
        x[:, np.array([True, False])]
