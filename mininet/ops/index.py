"""Selection and gathering ops (x[index] and x[index] = value, where, gather, index_select,
sort's values), cumsum, prod, erf, dtype casts and clone. Index arithmetic runs on the
host (numpy): indices are constants of the graph, and each op is linear in its float
input, so its adjoint is another op of this file and higher-order gradients work."""
import math
import numbers

import numpy as np

from ..autograd import Op, Tensor
from ..ndarray import (NDArray, _ewise as nd_ewise, as_dtype, bool_, check_axis, int64,
                       mask_index, select_rows)


def _const(a, like):
    """A numpy array as an NDArray on like's device, in like's dtype."""
    return NDArray(np.asarray(a), dtype=like.dtype, device=like.device)


# where / masked_fill --------------------------------------------------------------------
class MaskPass(Op):
    """x where mask is true (nonzero), else 0 (never x * 0: inf or NaN off the mask stays
    out)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, mask):
        self.mask = mask   # an NDArray of x's shape: bool, or numbers (nonzero is true)

    def compute(self, x):
        mask = self.mask if self.mask.dtype == bool_ else self.mask != 0.0
        return nd_ewise(x, mask.astype(x.dtype), "pass_pos")

    def gradient(self, g, node):
        return MaskPass(self.mask)(g)


def _mask_of(cond):
    """cond (a Tensor, NDArray or array data) as a bool NDArray: nonzero is true. torch
    takes bool conditions only; 0/1 numbers still work here, as they always have."""
    c = cond.cached_data if isinstance(cond, Tensor) else \
        cond if isinstance(cond, NDArray) else NDArray(np.asarray(cond))
    return c if c.dtype == bool_ else c != 0


def _is_int(v):
    """An integer or bool value (a Tensor, a number or a numpy array): not a float."""
    if isinstance(v, Tensor):
        return v.dtype.kind in "biu"
    return isinstance(v, (int, np.integer, np.bool_)) or (isinstance(v, np.ndarray) and v.dtype.kind in "biu")


def _host_mask(cond):
    c = cond.cached_data if isinstance(cond, Tensor) else cond
    return (c.numpy() if isinstance(c, NDArray) else np.asarray(c)) != 0


def _host_values(v):
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def where(cond, a, b):
    """a where cond is true (nonzero), else b (broadcast together, as torch.where). Integer
    or bool a and b give int64, or bool when both are bool, as torch (on the host: there
    are no integer kernels; no gradient)."""
    from .math import _tensor
    from .shape import broadcast_to
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if like is not None and _is_int(a) and _is_int(b):
        host = [_host_values(v) for v in (a, b)]
        dtype = bool_ if all(h.dtype == bool_ for h in host) else int64
        out = np.where(_host_mask(cond), host[0], host[1]).astype(dtype)
        return Tensor.make_const(NDArray(out, dtype=dtype, device=like.device))
    if like is None:
        like = Tensor(np.asarray(a, dtype=np.float32))
    a, b = _tensor(a, like), _tensor(b, like)
    a, b = (x.float() if x.dtype == bool_ else x for x in (a, b))   # bool with a float: float
    mask = _mask_of(cond)
    from ..ndarray import broadcast_shapes
    shape = broadcast_shapes(mask.shape, a.shape, b.shape)
    mask = mask.broadcast_to(shape).compact()
    return MaskPass(mask)(broadcast_to(a, shape)) + MaskPass(~mask)(broadcast_to(b, shape))


def masked_fill(x, mask, value):
    """x with value where mask is true (mask broadcasts to x's shape). An int64 or bool x
    keeps its dtype (computed on the host, exactly: there are no integer kernels)."""
    if x.dtype.kind in "biu":
        m = np.broadcast_to(_host_mask(mask), x.shape)
        if isinstance(value, float) and not float(value).is_integer():
            raise TypeError(f"masked_fill: cannot fill an {x.dtype} tensor with {value!r}")
        fill = bool(value) if x.dtype == bool_ else np.int64(int(value))
        out = np.where(m, fill, x.numpy()).astype(x.dtype)
        return Tensor.make_const(NDArray(out, dtype=x.dtype, device=x.device))
    m = _mask_of(mask).broadcast_to(x.shape).compact()
    fill = NDArray.make(x.shape, device=x.device, dtype=x.dtype).fill(float(value))
    return MaskPass(~m)(x) + Tensor.make_const(nd_ewise(fill, m.astype(x.dtype), "pass_pos"))


# x[index]: basic indices are views (GetItem); advanced ones gather rows --------------------
class TakeRows(Op):
    """x seen as (rows, *rest): the rows at idx (an int64 numpy array of any shape), giving
    (*idx.shape, *rest), a copy; the gradient adds g back at idx (repeats accumulate)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, idx, rest):
        self.idx, self.rest = idx, tuple(rest)

    def compute(self, x):
        out = select_rows(x, self.idx.reshape(-1), self.rest)
        return out.reshape(self.idx.shape + self.rest)

    def gradient(self, g, node):
        return AddRows(self.idx, node.inputs[0].shape)(g)


class AddRows(Op):
    """zeros(shape) with g's rows added at idx (shape seen as (rows, *g.shape[idx.ndim:]);
    repeated indices add up): TakeRows' adjoint."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, idx, shape):
        self.idx, self.shape = idx, tuple(shape)

    def compute(self, g):
        rest = g.shape[self.idx.ndim:]
        return add_rows(self.shape, self.idx.reshape(-1), g.reshape((self.idx.size,) + rest))

    def gradient(self, h, node):
        return TakeRows(self.idx, node.inputs[0].shape[self.idx.ndim:])(h)


MaskSelect, MaskScatter = TakeRows, AddRows   # x[mask] is a row gather as well


def add_rows(shape, idx, rows):
    """zeros(shape) with rows (n, *rest) added at the rows idx (1-d int64 numpy) of shape
    seen as (-1, *rest): the device's row scatter-add for floats, else on the host."""
    d, dev = math.prod(rows.shape[1:]), rows.device
    out = NDArray.make(shape, device=dev, dtype=rows.dtype).fill(0)
    if not idx.size or not d:
        return out
    if rows.dtype.kind == "f" and dev.has("rows"):
        dev.add_rows(rows.compact().reshape(idx.size, d), NDArray(idx, dtype=int64, device=dev),
                     out.reshape(out.size // d, d))
        return out
    host = out.numpy()
    np.add.at(host.reshape((-1,) + rows.shape[1:]), idx, rows.numpy())
    return NDArray(host, dtype=rows.dtype, device=dev)


def _bool_index(mask):
    m = mask.cached_data if isinstance(mask, Tensor) else mask
    m = m if isinstance(m, NDArray) else np.asarray(m)
    if m.dtype != bool_:
        raise TypeError(f"mask: needs a bool mask, got {m.dtype} (compare first: x > 0)")
    return m


def mask_select(x, mask):
    """x[mask] for a bool mask covering x's leading dims (of their shape): a
    (count, *rest) copy, differentiable in x."""
    m = _bool_index(mask)
    if m.ndim == 0:
        raise IndexError("a 0-d bool mask is not supported as an index: use a 1-d mask")
    return MaskSelect(*mask_index(m, x.shape))(x)


def masked_select(x, mask):
    """The entries of x where mask is true, as a 1-d tensor (torch.masked_select: x and the
    bool mask broadcast together)."""
    from .shape import broadcast_to, reshape
    m = _bool_index(mask)
    m = m if isinstance(m, NDArray) else NDArray(m, device=x.device)
    from ..ndarray import broadcast_shapes
    shape = broadcast_shapes(m.shape, x.shape)
    x = broadcast_to(x, shape) if x.shape != shape else x
    return mask_select(reshape(x, (-1,)), m.broadcast_to(shape).compact().reshape(-1))


# x[index] and x[index] = value, as torch (numpy's rules) -----------------------------------
_INDEX_KINDS = ("only integers, slices (:), ellipsis (...), None and integer or bool "
                "arrays/tensors are valid indices")


def _index_item(item):
    """One index item as a basic item (int, slice, None, ...) or a numpy array (int64, or
    bool: a mask)."""
    if isinstance(item, Tensor):
        item = item.cached_data
    if isinstance(item, NDArray):
        item = item.numpy()
    elif isinstance(item, list):
        item = np.asarray(item)
        if item.size == 0 and item.dtype.kind == "f":   # x[[]]: no entries, an int index
            item = item.astype(np.int64)
    elif isinstance(item, (bool, np.bool_)):
        item = np.asarray(item)
    if isinstance(item, np.ndarray):
        if item.dtype == bool_:
            return item
        if item.dtype.kind not in "iu":
            raise IndexError(f"{_INDEX_KINDS}: tensors and arrays used as indices must hold "
                             f"integers (int64) or bools, got {item.dtype}")
        return int(item) if item.ndim == 0 else item.astype(np.int64, copy=False)
    if isinstance(item, numbers.Integral):
        return int(item)
    if item is None or item is Ellipsis or isinstance(item, slice):
        return item
    raise IndexError(f"{_INDEX_KINDS}, got {item!r} ({type(item).__name__})")


def _index_items(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return tuple(_index_item(i) for i in items)


def _is_advanced(items):
    return any(isinstance(i, np.ndarray) for i in items)


def _is_full(item):
    return isinstance(item, slice) and item.start is None and item.stop is None and \
        item.step in (None, 1)


def _rows_of(shape, items):
    """An advanced index over shape as (the int64 positions, of the result's leading
    shape, in shape seen as (rows, *rest); rest): numpy's placement rules come from
    indexing an arange with the index itself. Trailing full slices stay out (rest)."""
    def width(i):
        return i.ndim if isinstance(i, np.ndarray) and i.dtype == bool_ else \
            0 if i is None or i is Ellipsis else 1
    used = sum(width(i) for i in items)
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if used > len(shape):
        raise IndexError(f"too many indices for a tensor of dimension {len(shape)}: "
                         f"{used} were indexed")
    fill = [slice(None)] * (len(shape) - used)
    out = []
    for i in items:   # an empty ... stays: it still separates advanced indices (numpy)
        out.extend(([i] if not fill else fill) if i is Ellipsis else [i])
    if not any(i is Ellipsis for i in items):
        out.extend(fill)
    dim = 0
    for i in out:   # name the index, the dim and the size (numpy's mask message is vaguer)
        if isinstance(i, np.ndarray) and i.dtype == bool_ and i.ndim:
            if i.shape != tuple(shape[dim:dim + i.ndim]):
                raise IndexError(f"the boolean mask of shape {i.shape} does not match the "
                                 f"indexed shape {tuple(shape)} at dim {dim}")
        elif isinstance(i, int) or isinstance(i, np.ndarray) and i.dtype != bool_:
            n, a = shape[dim], np.asarray(i)
            bad = a[(a < -n) | (a >= n)]
            if bad.size:
                raise IndexError(f"index {int(bad.flat[0])} is out of bounds for dimension {dim} "
                                 f"with size {n}")
        dim += width(i)
    k = len(shape)
    while out and _is_full(out[-1]):
        out.pop()
        k -= 1
    lead = tuple(shape[:k])
    pos = np.arange(math.prod(lead), dtype=np.int64).reshape(lead)[tuple(out)]
    return pos, tuple(shape[k:])


def getitem(x, idx):
    """x[idx] as torch: ints, slices (any step), None and ... give a view (GetItem);
    integer arrays/tensors/lists and bool masks gather a copy (TakeRows), placed by
    numpy's rules; gradients flow through both (repeated indices accumulate)."""
    from .shape import get_item
    items = _index_items(idx)
    if not _is_advanced(items):
        return get_item(x, items)
    return TakeRows(*_rows_of(x.shape, items))(x)


def _write_rows(arr, pos, rest, value):
    """arr[pos rows] = value (broadcast) in arr's memory, through the host."""
    host = arr.numpy()
    rows = host.reshape((math.prod(arr.shape[:arr.ndim - len(rest)]),) + rest)
    v = value.numpy() if isinstance(value, NDArray) else np.asarray(value)
    try:
        rows[pos] = v
    except ValueError:
        raise ValueError(f"could not assign values of shape {v.shape} to the indexed "
                         f"shape {pos.shape + rest}") from None
    arr[...] = host


def _write(arr, items, value):
    """arr[items] = value in arr's memory (value: a number, an NDArray or array data)."""
    if not _is_advanced(items):
        arr[items] = value
        return
    _write_rows(arr, *_rows_of(arr.shape, items), value)


class SetItem(Op):
    """x with value written at index: the node of x[index] = value. compute gives a copy
    (setitem writes in place and makes the node itself); d/dx is g with zeros where value
    went, d/dvalue is g at index, summed back to value's shape (as torch's CopySlices)."""
    saves_output = False

    def __init__(self, items):
        self.items = items

    def compute(self, x, v):
        out = x.copy()
        _write(out, self.items, v)
        return out

    def gradient(self, g, node):
        from .math import unbroadcast
        x, v = node.inputs
        keep = np.ones(x.shape, dtype=bool)
        _host_write(keep, self.items, False)
        gx = MaskPass(NDArray(keep, device=g.device))(g)
        return gx, unbroadcast(getitem(g, self.items), v.shape)


def _host_write(host, items, value):
    if not _is_advanced(items):
        host[items] = value
        return
    pos, rest = _rows_of(host.shape, items)
    host.reshape((math.prod(host.shape[:host.ndim - len(rest)]),) + rest)[pos] = value


def _value_of(value, x):
    """value as a Tensor of x's dtype, on x's device (a Tensor keeps its graph)."""
    if not isinstance(value, Tensor):
        value = Tensor.make_const(value if isinstance(value, NDArray) else
                                  NDArray(np.asarray(value), dtype=x.dtype, device=x.device))
    if value.device != x.device:
        value = value.to(x.device)
    return value if value.dtype == x.dtype else cast(value, x.dtype)


def setitem(x, idx, value):
    """x[idx] = value in x's memory, as torch: the buffer's version goes up (backward
    refuses ops that used the old values); refused on a leaf that requires grad while
    grad mode is on. Recorded when grad mode is on and x or value requires grad: x (the
    same object) becomes a SetItem node whose inputs are x's old node and value, so reads
    of x after the write differentiate through it (earlier views of x see the write and
    follow it too). A write into a view of a tensor that requires grad is refused (torch
    rebases the base's history; mininet does not)."""
    from ..autograd import (_bump, _commit_write, _old_node, _readers, _refuse_write, _repoint,
                            _snapshot, _tracing)
    items = _index_items(idx)
    if not _refuse_write(x, value, "x[index] = value") and not _tracing():
        _write(x.cached_data, items, value.cached_data if isinstance(value, Tensor) else value)
        if not getattr(x, "_unversioned", False):   # .data writes are not counted, as torch's
            _bump(x.cached_data)
        return
    v = _value_of(value, x)
    readers = _readers(x, v)   # v computed from x (x[1:] = x[:-1] * 2) reads the old x
    old = _old_node(x, _snapshot(x, reads_old=bool(readers) or v is x))
    v = _repoint(readers, x, old, v)
    _write(x.cached_data, items, v.cached_data)
    _commit_write(x, SetItem(items), (old, v))


# gather / index_select / scatter-add ----------------------------------------------------
class Take(Op):
    """a[index] for a numpy advanced index (a tuple of integer arrays and slices)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, index):
        self.index = index

    def compute(self, a):
        return _const(a.numpy()[self.index], a)

    def gradient(self, g, node):
        return TakeAdjoint(self.index, node.inputs[0].shape)(g)


class TakeAdjoint(Op):
    """zeros(shape) with g added at index (repeated indices add up): Take's adjoint."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, index, shape):
        self.index, self.shape = index, tuple(shape)

    def compute(self, g):
        out = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(out, self.index, g.numpy())
        return _const(out, g)

    def gradient(self, h, node):
        return Take(self.index)(h)


def _int_index(index, what):
    raw = index.cached_data if isinstance(index, Tensor) else index
    arr = raw.numpy() if isinstance(raw, NDArray) else np.asarray(raw)
    if arr.dtype.kind not in "iu":   # torch: "Expected dtype int64 for index"
        raise TypeError(f"{what}: index must hold integers (int64), got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(idx, n, what, dim):
    """Indices in [0, n): torch's gather and index_select reject negative ones."""
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what}: index {idx.max() if idx.max() >= n else idx.min()} is out of "
                         f"range for dimension {dim} of size {n}")


def gather(x, dim, index):
    """out[i][j][k] = x[i][index[i][j][k]][k] for dim 1 (torch.gather)."""
    dim = check_axis(dim, max(x.ndim, 1), "gather")
    idx = _int_index(index, "gather")
    if idx.ndim != x.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dimensions, input {x.ndim}")
    _check_range(idx, x.shape[dim] if x.ndim else 1, "gather", dim)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[dim] = idx
    return Take(tuple(grid))(x)


def index_select(x, dim, index):
    """The entries at `index` (1-d) along dim (torch.index_select)."""
    dim = check_axis(dim, max(x.ndim, 1), "index_select")
    idx = _int_index(index, "index_select").reshape(-1)
    _check_range(idx, x.shape[dim], "index_select", dim)
    return Take((slice(None),) * dim + (idx,))(x)


# cumsum, prod ---------------------------------------------------------------------------
class Cumsum(Op):
    saves_output = False   # its gradient does not read its output

    def __init__(self, axis):
        self.axis = axis   # None: a 0-d input, whose cumsum is itself (shape (), as torch)

    def compute(self, a):
        if self.axis is None:
            return a.compact().copy()
        return _const(np.cumsum(a.numpy(), axis=self.axis), a)

    def gradient(self, g, node):
        from .shape import flip
        if self.axis is None:
            return g
        return flip(cumsum(flip(g, self.axis), self.axis), self.axis)


def cumsum(x, dim):
    x = x.long() if x.dtype == bool_ else x   # counts, int64 (as torch)
    return Cumsum(check_axis(dim, max(x.ndim, 1), "cumsum") if x.ndim else None)(x)


class ProdOthers(Op):
    """out[..., i] = the product of a[..., j] for j != i, over the last axis: Prod's
    gradient factor, exact where an entry is 0 (no division). Its own gradient is built
    from ops (one more axis per order), so every order of prod's derivative is exact."""
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        x = a.numpy()
        if x.shape[-1] == 0:
            return _const(x, a)
        ones = np.ones(x.shape[:-1] + (1,), dtype=x.dtype)
        left = np.cumprod(np.concatenate([ones, x[..., :-1]], -1), -1)
        right = np.cumprod(np.concatenate([ones, x[..., :0:-1]], -1), -1)[..., ::-1]
        return _const(left * right, a)

    def gradient(self, h, node):
        # d out_i / d a_j = prod_{k != i, j} a_k (i != j), 0 on the diagonal: ProdOthers of
        # rows b_i = a with entry i set to 1, the diagonal masked out
        from .shape import broadcast_to, reshape
        x = node.inputs[0]
        lead, n = x.shape[:-1], x.shape[-1]
        if n == 0:
            return h
        like = x.cached_data
        eye = np.broadcast_to(np.eye(n), lead + (n, n))
        rows = broadcast_to(reshape(x, lead + (1, n)), lead + (n, n))
        b = MaskPass(_const(1.0 - eye, like))(rows) + Tensor.make_const(_const(eye, like))
        m = MaskPass(_const(1.0 - eye, like))(ProdOthers()(b))
        return (broadcast_to(reshape(h, lead + (n, 1)), lead + (n, n)) * m).sum(len(lead))


def _prod_others(x, axis):
    from .shape import permute, reshape
    if axis is None:
        return reshape(ProdOthers()(reshape(x, (-1,))), x.shape)
    perm = tuple(i for i in range(x.ndim) if i != axis) + (axis,)
    back = tuple(int(i) for i in np.argsort(perm))
    return permute(ProdOthers()(permute(x, perm)), back)


class Prod(Op):
    """The product along one axis (or all); gradient g * (the product of the others)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def compute(self, a):
        return _const(np.prod(a.numpy(), axis=self.axis, keepdims=self.keepdims), a)

    def gradient(self, g, node):
        from .shape import broadcast_to, reshape
        x = node.inputs[0]
        shape, axis = x.shape, self.axis
        keep = (1,) * len(shape) if axis is None else shape[:axis] + (1,) + shape[axis + 1:]
        return broadcast_to(reshape(g, keep), shape) * _prod_others(x, axis)


def prod(x, dim=None, keepdim=False):
    x = x.long() if x.dtype == bool_ else x   # int64, as torch
    axis = None if dim is None or x.ndim == 0 else check_axis(dim, x.ndim, "prod")
    return Prod(axis, keepdim)(x)


# casts, clone ----------------------------------------------------------------------------
class Cast(Op):
    """A float-to-float dtype change; the gradient goes back in the input's dtype."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, dtype):
        self.dtype = as_dtype(dtype)

    def compute(self, a):
        return a.astype(self.dtype)

    def gradient(self, g, node):
        return Cast(node.inputs[0].dtype)(g)


def cast(x, dtype):
    dtype = as_dtype(dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind != "f":   # integers carry no gradient, as torch
        return Tensor.make_const(x.cached_data.astype(dtype))
    return Cast(dtype)(x)


class ToDevice(Op):
    """A copy on another device; the gradient goes back to the input's device (torch's
    .to(device) is differentiable: the result is not a leaf)."""
    saves_output = False   # its gradient does not read its output

    def __init__(self, device):
        self.device = device

    def compute(self, a):
        return a.to(self.device)

    def gradient(self, g, node):
        return ToDevice(node.inputs[0].device)(g)


def to_device(x, device):
    from ..backend import get_device
    device = get_device(device)
    return x if device == x.device else ToDevice(device)(x)


class Clone(Op):
    """A compact copy; the gradient passes through."""
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        return a.copy()

    def gradient(self, g, node):
        return g


def clone(x):
    return Clone()(x)


# erf ----------------------------------------------------------------------------------
# One kernel pass (the elementwise table, backend/opcodes.py; GELU, which reads it, is in
# ops/math.py). Composed of the other kernels (a rational approximation over exp, +, *, /),
# erf took about 40 passes: GELU's forward took 28-80x PyTorch's time (256 x 512 to
# 700 x 1024).
class Erf(Op):
    saves_output = False   # its gradient does not read its output

    def compute(self, a):
        return a.erf()

    def gradient(self, g, node):
        from .math import exp
        x = node.inputs[0]
        return g * exp(-(x * x)) * (2.0 / math.sqrt(math.pi))


def erf(x):
    return Erf()(x)
