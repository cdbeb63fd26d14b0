"""Tensor and reverse-mode autodiff (needle's design: an Op computes on
NDArrays and gives its gradient as Tensors built from other ops)."""
from __future__ import annotations

import collections
import contextlib
import numbers
import threading
import weakref
from typing import Any

import numpy as np

from .backend import get_device
from .ndarray import NDArray, _normalize_axes, as_dtype, check_axis

_state = threading.local()


def grad_enabled():
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph (like torch.no_grad)."""
    old = grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = old


@contextlib.contextmanager
def enable_grad():
    old = grad_enabled()
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = old


# Observers of op calls: the profiler and the ONNX tracer. An observer has
#   begin(op, inputs, phase) -> token   phase: "forward" (an op builds a Value) or
#                                       "backward" (op.gradient of a node, which builds
#                                       more forward ops inside)
#   end(token, result)                  result: the Value built, or the input gradients
# and may have module_begin(module, args) -> token / module_end(token, output), called
# around Module.__call__. With none installed an op pays one list check.
_observers: list[Any] = []


def add_observer(observer):
    _observers.append(observer)


def remove_observer(observer):
    _observers.remove(observer)


def _begin(op, inputs, phase):
    return [(o, o.begin(op, inputs, phase)) for o in _observers]


def _end(tokens, result):
    for o, token in reversed(tokens):
        o.end(token, result)


class Op:
    """compute(*NDArray) -> NDArray; gradient(out_grad, node) -> one Tensor per input.

    An op that picks element `tuple_index` of its one TensorTuple input (TupleGetItem)
    sets tuple_index: backward then passes its gradient to that element alone, and the
    tuple's gradient is assembled once from all of them (zeros only where none came),
    instead of one full tuple of zeros per use (O(seq^2) for a split sequence)."""
    tuple_index = None

    def __call__(self, *args):
        return Tensor.make_from_op(self, args)

    def compute(self, *args):
        raise NotImplementedError

    def gradient(self, out_grad, node):
        raise NotImplementedError

    def gradient_as_tuple(self, out_grad, node):
        g = self.gradient(out_grad, node)
        return tuple(g) if isinstance(g, (tuple, list)) else (g,)


class TupleOp(Op):
    """An op whose output is a tuple of Tensors (split)."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


class Value:
    __slots__ = ("op", "inputs", "cached_data", "requires_grad", "__weakref__")

    def realize_cached_data(self):
        return self.cached_data

    def is_leaf(self):
        return self.op is None

    def _init(self, op, inputs, cached_data, requires_grad):
        self.op = op
        self.inputs = inputs
        self.cached_data = cached_data
        self.requires_grad = requires_grad

    @classmethod
    def make_from_op(cls, op, inputs):
        value = object.__new__(cls)
        try:
            arrays = [x.cached_data for x in inputs]
        except AttributeError:   # a numpy array, list or number where a Tensor belongs
            raise _not_a_tensor(op, inputs) from None
        tokens = _begin(op, inputs, "forward") if _observers else None
        data = op.compute(*arrays)
        if grad_enabled() and any(x.requires_grad for x in inputs):
            value._init(op, tuple(inputs), data, True)
        else:  # no graph to keep: a constant
            value._init(None, (), data, False)
        if cls is Tensor:
            value.grad = None
        if tokens is not None:
            _end(tokens, value)
        return value


def _not_a_tensor(op, inputs):
    """The TypeError for an op given something that is not a Tensor (the slow path of
    make_from_op): names the module running (if any), the op, the input and what it is."""
    k, x = next(((k, x) for k, x in enumerate(inputs) if not isinstance(x, Value)),
                (None, None))
    if k is None:   # a Value whose data was never set
        return AttributeError(f"{type(op).__name__}: an input Tensor has no data")
    kind = type(x)
    what = (kind.__qualname__ if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}")
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        what += f" (shape {tuple(x.shape)}, {x.dtype})"
    elif isinstance(x, (list, tuple)):
        what += f" (length {len(x)})"
    opname = type(op).__name__
    module = _running_module()
    where = f"{module} (op {opname}, input {k})" if module else f"{opname} (input {k})"
    return TypeError(f"{where}: expected a mininet Tensor, got {what}; wrap it: mininet.tensor(x)")


def _running_module():
    """The class name of the innermost nn.Module whose forward is on the stack, or None
    (found by looking at the frames: autograd does not import nn)."""
    import sys
    frame = sys._getframe(2)
    while frame is not None:
        self = frame.f_locals.get("self")
        if self is not None and any(c.__name__ == "Module" and c.__module__ == "mininet.nn.module"
                                    for c in type(self).__mro__):
            return type(self).__name__
        frame = frame.f_back
    return None


class TensorTuple(Value):
    __slots__ = ()

    def __len__(self):
        return len(self.cached_data)

    def __getitem__(self, i):
        return tuple_get_item(self, i)

    def tuple(self):
        return tuple(self[i] for i in range(len(self)))

    def __iter__(self):
        return iter(self.tuple())

    def detach(self):
        return TensorTuple.make_const(self.cached_data)

    @staticmethod
    def make_const(data):
        t = object.__new__(TensorTuple)
        t._init(None, (), tuple(data), False)
        return t


class Tensor(Value):
    __slots__ = ("grad", "_hooks")  # _hooks: set only on leaves that have hooks

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.cached_data
        if isinstance(data, NDArray):
            nd = data
            if dtype is not None and as_dtype(dtype) != nd.dtype:
                nd = nd.astype(dtype)
            if device is not None and get_device(device) != nd.device:
                nd = nd.to(device)
        else:
            nd = NDArray(data, dtype=dtype, device=device)
        if requires_grad and nd.dtype.kind != "f":
            raise TypeError(f"only float tensors can require grad, got {nd.dtype}: pass "
                            "dtype='float32' (or float64)")
        self._init(None, (), nd, bool(requires_grad))
        self.grad = None

    @staticmethod
    def make_const(data, requires_grad=False):
        t = object.__new__(Tensor)
        t._init(None, (), data.cached_data if isinstance(data, Tensor) else data, requires_grad)
        t.grad = None
        return t

    # data access -------------------------------------------------------------
    @property
    def data(self):
        return Tensor.make_const(self.cached_data)

    @data.setter
    def data(self, value):
        value = value.cached_data if isinstance(value, Tensor) else value
        if value.shape != self.shape:
            raise ValueError(f"cannot set data of shape {value.shape} on a tensor of shape {self.shape}")
        self.cached_data = value

    def detach(self):
        return Tensor.make_const(self.cached_data)

    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(tensor) each time backward has accumulated this leaf's .grad (as
        PyTorch's): the gradient of that backward is complete. Returns a handle whose
        remove() unregisters it. Data-parallel training starts reducing here."""
        if self.op is not None:
            raise RuntimeError("post-accumulate-grad hooks go on leaf tensors (parameters)")
        hooks = getattr(self, "_hooks", None)
        if hooks is None:
            hooks = self._hooks = []
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    @property
    def shape(self):
        return self.cached_data.shape

    @property
    def dtype(self):
        return self.cached_data.dtype

    @property
    def device(self):
        return self.cached_data.device

    @property
    def ndim(self):
        return self.cached_data.ndim

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return self.cached_data.size

    def __len__(self):
        return len(self.cached_data)

    def __bool__(self):
        return bool(self.cached_data)

    # numpy defers to our reflected operators: np.float32(0.5) * t is t.__rmul__, a Tensor
    __array_ufunc__ = None

    def numpy(self):
        """A numpy copy of the values. PyTorch's .numpy() shares memory; here
        np.asarray(t) and np.from_dlpack(t) do (CPU tensors)."""
        return self.cached_data.numpy()

    # zero-copy interchange: the NDArray's (views of the memory this tensor holds now)
    def __dlpack__(self, stream=None, *, max_version=None, dl_device=None, copy=None):
        return self.cached_data.__dlpack__(stream, max_version=max_version,
                                           dl_device=dl_device, copy=copy)

    def __dlpack_device__(self):
        return self.cached_data.__dlpack_device__()

    @property
    def __array_interface__(self):
        return self.cached_data.__array_interface__

    def __array__(self, dtype=None, copy=None):
        return self.cached_data.__array__(dtype)

    def item(self):
        return self.cached_data.item()

    def __float__(self):
        return float(self.item())

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.cached_data.numpy()!s}, dtype={self.dtype}{grad})"

    def __str__(self):
        return str(self.cached_data.numpy())

    def __format__(self, spec):
        """format(t, spec) as torch's: a 0-d tensor formats its item ('{:+.2f}'.format(x));
        any other tensor takes only the empty spec (str(t))."""
        if self.ndim == 0:
            return self.item().__format__(spec)
        return object.__format__(self, spec)   # TypeError for a non-empty spec

    # autodiff ------------------------------------------------------------------
    def backward(self, out_grad=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into each leaf's .grad. retain_graph defaults to
        create_graph (as PyTorch): a recorded gradient can refer to forward nodes (tanh's
        is g * (1 - y^2)), so their graph must outlive this pass."""
        if retain_graph is None:
            retain_graph = create_graph
        if not self.requires_grad:
            if isinstance(self.inputs, _Freed):
                raise RuntimeError(f"backward: {_SECOND_PASS}")
            raise RuntimeError("backward: this tensor does not require grad (no graph leads to it)")
        if out_grad is None:
            if self.cached_data.size != 1:
                raise RuntimeError(f"backward: grad can be implied only for a scalar output, "
                                   f"not shape {self.shape}; pass out_grad")
            out_grad = _ones_like(self)
        ctx = enable_grad() if create_graph else no_grad()
        with ctx:
            compute_gradient_of_variables(self, out_grad, retain_graph)

    # operators: reach the ops layer through one lazy import --------------------
    def __add__(self, other):
        return _ops().add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        _no_bool_sub(self, other)
        return _ops().add(self, -other)

    def __rsub__(self, other):
        _no_bool_sub(self, other)
        return _ops().add(-self, other)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().multiply(_ops().power_scalar(self, -1.0), other)

    def __pow__(self, other):
        if isinstance(other, Tensor):
            return _ops().power(self, other)
        return _ops().power_scalar(self, other)

    def __rpow__(self, other):
        """other ** self: 2 ** x (gradient log(2) * 2 ** x), or array data ** x."""
        return _ops().power(other, self)

    def __neg__(self):
        return _ops().negate(self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __getitem__(self, idx):
        """x[idx] as torch: ints, slices, None, ... (views); int arrays, lists, int64 tensors
        and bool masks (copies, numpy's placement rules); differentiable."""
        return _ops().getitem(self, idx)

    def __setitem__(self, idx, value):
        """x[idx] = value in place for any index x[idx] takes. Refused on a leaf that
        requires grad in grad mode; recorded in the graph when x or value requires grad."""
        _ops().setitem(self, idx, value)

    # comparisons and logical ops: bool tensors, no gradient ---------------------------------
    def _compare(self, other, name):
        b = other.cached_data if isinstance(other, Tensor) else other
        return Tensor.make_const(getattr(self.cached_data, name)(b))

    def __eq__(self, other):
        return False if other is None else self._compare(other, "__eq__")

    def __ne__(self, other):
        return True if other is None else self._compare(other, "__ne__")

    def __and__(self, other): return self._compare(other, "__and__")
    def __or__(self, other): return self._compare(other, "__or__")
    def __xor__(self, other): return self._compare(other, "__xor__")
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self):
        return Tensor.make_const(~self.cached_data)

    def logical_not(self): return _ops().logical_not(self)
    def logical_and(self, other): return _ops().logical_and(self, other)
    def logical_or(self, other): return _ops().logical_or(self, other)
    def logical_xor(self, other): return _ops().logical_xor(self, other)

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    __hash__ = object.__hash__

    # reductions: dim=/axis=/axes= and keepdim=/keepdims= (one helper, _reduce_args) ----
    def sum(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        return _ops().summation(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        if self.dtype == np.bool_:
            raise TypeError("mean: not defined for bool tensors (as torch): use .float().mean() "
                            "(the fraction of True)")
        return _ops().mean(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def max(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        """x.max(): the maximum; x.max(dim): (values, indices) as torch; x.max(axis=/axes=):
        the values alone (numpy's and needle's meaning); x.max(other): the elementwise one."""
        if isinstance(dim, Tensor):
            return _ops().maximum(self, dim)
        return self._extreme(dim, axis, axes, keepdim, keepdims, "max")

    def min(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        if isinstance(dim, Tensor):
            if self.dtype == _BOOL and dim.dtype == _BOOL:
                return self & dim
            return -_ops().maximum(-self, -dim)
        return self._extreme(dim, axis, axes, keepdim, keepdims, "min")

    def _extreme(self, dim, axis, axes, keepdim, keepdims, name):
        if dim is None or not isinstance(dim, numbers.Integral):
            ax, keep = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
            if name == "max":
                return _ops().max(self, ax, keep)
            return self.amin(ax, keep)
        idx = getattr(self, "arg" + name)(dim, keepdim=True)
        values = _ops().gather(self, dim, idx)
        if not (keepdim or keepdims):
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return MinMax(values, idx)

    def amax(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        """The maxima over dim (values alone; tied maxima share the gradient, as torch)."""
        return _ops().max(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def amin(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        args = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
        if self.dtype == _BOOL:   # no negation of bools: min is not(max(not x)), as torch's all
            return ~_ops().max(~self, *args)
        return -_ops().max(-self, *args)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmax", dim, axis, keepdim, keepdims)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmin", dim, axis, keepdim, keepdims)

    def _arg(self, name, dim, axis, keepdim, keepdims):
        d = _one_of(name, dim=dim, axis=axis)
        if d is not None:
            d = check_axis(d, max(self.ndim, 1), name)
        return Tensor.make_const(getattr(self.cached_data, name)(d, bool(keepdim or keepdims)))

    def var(self, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, axes=None,
            keepdims=None):
        """sum((x - mean)^2) / (n - correction) (torch's default correction=1)."""
        ax, keep = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
        correction = correction if unbiased is None else int(unbiased)
        n = 1
        for i in (range(self.ndim) if ax is None else ax):
            n *= self.shape[i]
        xc = self - self.mean(ax, keepdim=True)
        return (xc * xc).sum(ax, keepdim=keep) / float(max(n - correction, 0))

    def std(self, dim=None, keepdim=False, **kw):
        return self.var(dim, keepdim, **kw).sqrt()

    def prod(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops().prod(self, _one_of("prod", dim=dim, axis=axis), bool(keepdim or keepdims))

    def cumsum(self, dim=None, *, axis=None):
        return _ops().cumsum(self, _one_of("cumsum", dim=dim, axis=axis))

    def logsumexp(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        return _ops().logsumexp(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def norm(self, p="fro", dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        """The p-norm over dim (all entries by default): 2 ("fro"), 1, inf, or any p > 0."""
        ax, keep = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
        if p in ("fro", 2, 2.0):
            return _ops().norm2(self, ax, keep)
        a = self.abs()
        if p == 1:
            return a.sum(ax, keepdim=keep)
        if p == float("inf"):
            return a.max(axes=ax, keepdims=keep)
        return (a ** p).sum(ax, keepdim=keep) ** (1.0 / p)

    def any(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Whether any entry (along dim) is nonzero: a bool tensor (computed on the device)."""
        ax, keep = _reduce_args(self, dim, axis, None, keepdim, keepdims)
        return Tensor.make_const(self.cached_data.any(ax, keep))

    def all(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        ax, keep = _reduce_args(self, dim, axis, None, keepdim, keepdims)
        return Tensor.make_const(self.cached_data.all(ax, keep))

    def softmax(self, dim=-1, *, axis=None):
        return _ops().softmax(self, self._dim(dim, axis, "softmax"))

    def log_softmax(self, dim=-1, *, axis=None):
        return _ops().logsoftmax(self, self._dim(dim, axis, "log_softmax"))

    def _dim(self, dim, axis, what, extra=0):
        """One dim (dim= or axis=) as a non-negative int; AxisError when out of range."""
        d = dim if axis is None else axis
        return check_axis(d, max(self.ndim + extra, 1), what)

    # shape ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _ops().reshape(self, shape)

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def dim(self):
        return self.ndim

    def transpose(self, dim0=None, dim1=None, *, axes=None):
        """transpose(d0, d1) swaps two dims (torch); transpose() the last two and
        transpose((d0, d1)) those two (needle's spellings)."""
        if isinstance(dim0, (tuple, list)):
            dim0, axes = None, dim0
        if axes is None and dim0 is not None:
            if dim1 is None:
                raise TypeError("transpose: give two dims (d0, d1), a pair, or none for the last two")
            axes = (dim0, dim1)
        return _ops().transpose(self, axes)

    def swapaxes(self, a, b):
        return self.transpose(a, b)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self if self.ndim < 2 else self.transpose(0, 1)

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _ops().permute(self, axes)

    @property
    def T(self):
        return _ops().permute(self, tuple(reversed(range(self.ndim))))

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = (check_axis(d, self.ndim, "flatten") for d in (start_dim, end_dim))
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def unsqueeze(self, dim=None, *, axis=None):
        d = self._dim(dim, axis, "unsqueeze", extra=1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None, *, axis=None, axes=None):
        """Drop size-1 dims (all, or those of dim; a dim of another size stays, as torch)."""
        d = _one_of("squeeze", dim=dim, axis=axis, axes=axes)
        drop = range(self.ndim) if d is None else _normalize_axes(d, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if i not in drop or n != 1))

    def broadcast_to(self, shape):
        return _ops().broadcast_to(self, shape)

    def expand(self, *sizes):
        """broadcast_to, where -1 keeps that dim's size (torch)."""
        sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: {len(sizes)} sizes for a tensor of {self.ndim} dimensions")
        for i, n in enumerate(sizes):
            if n < 0 and (n != -1 or i < lead):
                raise ValueError(f"expand: size {n} at dim {i} is invalid (-1 keeps an existing "
                                 "dim's size; a new leading dim needs a size)")
        return self.broadcast_to(tuple(self.shape[i - lead] if n == -1 else n
                                       for i, n in enumerate(sizes)))

    def expand_as(self, other):
        return self.broadcast_to(other.shape)

    def repeat(self, *sizes):
        """Tile: dim i repeated sizes[i] times (torch's repeat, numpy's tile)."""
        sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: {len(sizes)} sizes for a tensor of {self.ndim} dimensions")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        x = self.reshape(tuple(v for n in shape for v in (1, n)))
        x = x.broadcast_to(tuple(v for r, n in zip(sizes, shape) for v in (r, n)))
        return x.reshape(tuple(r * n for r, n in zip(sizes, shape)))

    def split(self, split_size_or_sections, dim=0, *, axis=None):
        """Pieces of split_size along dim (the last smaller), or of the listed sizes (torch)."""
        d = self._dim(dim, axis, "split")
        n = self.shape[d]
        sizes = split_size_or_sections
        if isinstance(sizes, int):
            sizes = [min(sizes, n - i) for i in range(0, n, sizes)] if sizes > 0 else None
        if sizes is None or sum(sizes) != n:
            raise ValueError(f"split: sizes {split_size_or_sections} do not split a dim of size {n}")
        out, start = [], 0
        for s in sizes:
            out.append(self[(slice(None),) * d + (slice(start, start + s),)])
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0, *, axis=None):
        d = self._dim(dim, axis, "chunk")
        return self.split(-(-self.shape[d] // chunks) or 1, d)

    def contiguous(self):
        return self if self.cached_data.is_compact() else _ops().clone(self)

    def clone(self):
        return _ops().clone(self)

    # indexing and selection -------------------------------------------------------------------
    def gather(self, dim, index):
        return _ops().gather(self, dim, index)

    def index_select(self, dim, index):
        return _ops().index_select(self, dim, index)

    def masked_fill(self, mask, value):
        return _ops().masked_fill(self, mask, value)

    def sort(self, dim=-1, descending=False, *, axis=None):
        """(values, indices), as torch.sort (stable); values carry the gradient."""
        d = self._dim(dim, axis, "sort")
        a = self.numpy()
        if descending:   # NaN counts as the largest (first), as torch; ties keep their order
            nan = np.isnan(a)
            idx = np.lexsort((np.where(nan, 0.0, -a), ~nan), axis=d) if a.ndim else np.zeros((), int)
        else:            # numpy's stable argsort already puts NaN last
            idx = np.argsort(a, axis=d, kind="stable")
        idx = Tensor(idx.astype(np.int64), device=self.device)
        return MinMax(_ops().gather(self, d, idx), idx)

    def topk(self, k, dim=-1, largest=True, sorted=True, *, axis=None):
        d = self._dim(dim, axis, "topk")
        if not 0 <= k <= self.shape[d]:
            raise ValueError(f"topk: k={k} is out of range for a dim of size {self.shape[d]}")
        _, idx = self.sort(d, descending=largest)
        idx = idx[(slice(None),) * d + (slice(0, k),)]
        return MinMax(_ops().gather(self, d, idx), idx)

    # dtype and device -------------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        """to(device), to(dtype), to(device, dtype): both differentiable, as torch's (a
        tensor that requires grad gives a non-leaf whose gradient reaches the source)."""
        for a in args:
            if _is_dtype(a):
                dtype = a
            else:
                device = a
        out = self if dtype is None else _ops().cast(self, dtype)
        if device is None:
            return out
        return _ops().to_device(out, device)

    def type(self, dtype):
        return _ops().cast(self, dtype)

    def float(self):
        return _ops().cast(self, "float32")

    def double(self):
        return _ops().cast(self, "float64")

    def long(self):
        return _ops().cast(self, "int64")

    def bool(self):
        return _ops().cast(self, "bool")

    int = long   # int64: there is no int32 dtype

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def tolist(self):
        return self.cached_data.numpy().tolist()

    # elementwise ---------------------------------------------------------------------------
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def relu(self): return _ops().relu(self)
    def tanh(self): return _ops().tanh(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def sqrt(self): return _ops().sqrt(self)
    def log1p(self): return _ops().log1p(self)
    def expm1(self): return _ops().expm1(self)
    def abs(self): return _ops().abs(self)
    def erf(self): return _ops().erf(self)
    def pow(self, p): return self ** p
    __abs__ = abs

    def clip(self, min=None, max=None):
        return _ops().clip(self, min, max)

    clamp = clip

    def eq(self, other): return self == other
    def ne(self, other): return self != other
    def lt(self, other): return self < other
    def le(self, other): return self <= other
    def gt(self, other): return self > other
    def ge(self, other): return self >= other

    def add(self, other, alpha=1): return self + other * alpha if alpha != 1 else self + other
    def sub(self, other, alpha=1): return self - other * alpha if alpha != 1 else self - other
    def mul(self, other): return self * other
    def div(self, other): return self / other
    def matmul(self, other): return self @ other

    def mm(self, other):
        """The matrix product of two 2-d tensors (torch's mm: no broadcasting, no 1-d)."""
        b = other.shape if isinstance(other, Tensor) else np.shape(other)
        if self.ndim != 2 or len(b) != 2:
            raise ValueError(f"mm: both operands must be 2-d matrices, got shapes {self.shape} "
                             f"and {tuple(b)}")
        if self.shape[1] != b[0]:
            raise ValueError(f"mm: shapes {self.shape} and {tuple(b)} cannot be multiplied "
                             f"({self.shape[0]}x{self.shape[1]} and {b[0]}x{b[1]})")
        return self @ other

    # in place: writes into this tensor's memory (so p.data.add_ changes p) ------------------
    def _write(self, value, what, idx=()):
        """Copy value (an NDArray, broadcast, cast to self's dtype) into self's memory.
        Refused, as torch, on a leaf that requires grad while grad mode is on; refused on
        a tensor inside a recorded graph too (torch would track versions: here use the
        out-of-place form)."""
        if self.requires_grad and grad_enabled():
            if self.op is None:
                raise RuntimeError(f"{what}: a leaf tensor that requires grad cannot be changed in "
                                   "place while grad mode is on: use mininet.no_grad() or .data")
            raise RuntimeError(f"{what}: in-place changes to a tensor inside a recorded graph are "
                               "not supported: use the out-of-place op (x = x + y)")
        self.cached_data[idx] = value
        return self

    def _value(self, other):
        return other.cached_data if isinstance(other, Tensor) else other

    def add_(self, other, alpha=1):
        other = self._value(other)
        return self._write(self.cached_data + (other * alpha if alpha != 1 else other), "add_")

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def mul_(self, other):
        return self._write(self.cached_data * self._value(other), "mul_")

    def div_(self, other):
        return self._write(self.cached_data / self._value(other), "div_")

    def clamp_(self, min=None, max=None):
        return self._write(self.cached_data.clip(min, max), "clamp_")

    def fill_(self, value):
        return self._write(float(self._value(value)), "fill_")

    def zero_(self):
        return self.fill_(0.0)

    def copy_(self, src):
        src = self._value(src)
        return self._write(src if isinstance(src, NDArray) else NDArray(src), "copy_")


MinMax = collections.namedtuple("MinMax", ["values", "indices"])   # torch.return_types.max


def _one_of(what, **given):
    """The one axis argument given (dim=, axis= or axes=), or None."""
    given = {k: v for k, v in given.items() if v is not None}
    if len(given) > 1:
        raise TypeError(f"{what}: give one of {' / '.join(given)}, not several")
    return next(iter(given.values()), None)


def _reduce_args(x, dim, axis, axes, keepdim, keepdims):
    """(axes, keepdims) for a reduction from torch's dim=/keepdim=, numpy's axis=/keepdims=
    or needle's axes=: a sorted tuple of non-negative axes (None for all); AxisError for an
    axis out of range. A 0-d tensor takes axis 0 or -1 (as torch) and reduces nothing."""
    d = _one_of("reduction", dim=dim, axis=axis, axes=axes)
    keep = bool(keepdim or keepdims)
    if d is None:
        return None, keep
    d = _normalize_axes(d, x.ndim)
    return (d if x.ndim else None), keep


def _is_dtype(a):
    if isinstance(a, np.dtype) or (isinstance(a, type) and issubclass(a, np.generic)):
        return True
    return a is bool or isinstance(a, str) and a in ("float32", "float64", "int64", "bool")


_BOOL = np.dtype("bool")


def _no_bool_sub(a, b):
    if a.dtype is _BOOL or getattr(b, "dtype", None) is _BOOL or isinstance(b, (bool, np.bool_)):
        raise TypeError("subtraction (-) with a bool tensor is not supported (as torch): to "
                        "invert a mask use ~ or logical_not(); otherwise convert with .float()")


class _HookHandle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


_ops_module = None


def _ops():
    global _ops_module
    if _ops_module is None:
        from . import ops  # the one allowed upward reference (DESIGN.md)
        _ops_module = ops
    return _ops_module


def tuple_get_item(value, index):
    return _ops().tuple_get_item(value, index)


def find_topo_sort(node_list, stop=None):
    """Nodes in topological order (inputs first), iteratively: deep graphs do
    not hit Python's recursion limit. Nodes whose id is in stop are not expanded."""
    order, visited = [], set()
    for root in node_list:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if stop is not None and id(node) in stop:
                continue
            for child in node.inputs:
                if id(child) not in visited and child.requires_grad:
                    stack.append((child, False))
    return order


def _sum_grads(parts, node):
    """The total of one node's gradient parts. A tuple node's parts are whole gradient
    tuples or (index, Tensor) pairs from ops with tuple_index: summed per element."""
    if isinstance(node, TensorTuple):
        slots = [[] for _ in node.cached_data]
        for p in parts:
            if isinstance(p, tuple):
                slots[p[0]].append(p[1])
            else:
                for i in range(len(slots)):
                    slots[i].append(p[i])
        return _ops().make_tuple(*[_sum_grads(s, None) if s else _zeros_like(x)
                                   for s, x in zip(slots, node.cached_data)])
    g = parts[0]
    for p in parts[1:]:
        g = g + p
    return g


def _zeros_like(x):
    return Tensor.make_const(NDArray.make(x.shape, device=x.device, dtype=x.dtype).fill(0.0))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, materialize_grads=False):
    """The gradients of outputs (a tensor or a sequence of them, seeded by grad_outputs:
    None stands for ones, allowed for a one-element output) with respect to inputs (a
    tensor or a sequence; leaves or computed tensors), as a tuple, as torch.autograd.grad:
    no .grad is touched and no hook runs. Every output must require grad. create_graph:
    the gradients have a graph of their own (for second derivatives); retain_graph (default
    create_graph) keeps the outputs' graph for another pass. An input that the outputs do
    not depend on, or that does not require grad, is a RuntimeError unless allow_unused
    (then None; zeros with materialize_grads). An input computed from another input passes
    the other its share, as torch's."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    single = isinstance(inputs, Value)
    inputs = [inputs] if single else list(inputs)
    if allow_unused is None:
        allow_unused = materialize_grads
    if materialize_grads and not allow_unused:
        raise ValueError("grad: materialize_grads=True needs allow_unused=True (or None)")
    if retain_graph is None:
        retain_graph = create_graph
    for k, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"grad: input {k} is a {type(x).__name__}, not a Tensor")
        if not x.requires_grad and not allow_unused:
            raise RuntimeError(f"grad: input {k} does not require grad (pass allow_unused=True "
                               "to get None for it)")
    for k, o in enumerate(outputs):
        if not isinstance(o, Tensor):
            raise TypeError(f"grad: output {k} is a {type(o).__name__}, not a Tensor")
        if not o.requires_grad:
            if isinstance(o.inputs, _Freed):
                raise RuntimeError(f"grad: output {k} does not require grad any more, "
                                   f"{_SECOND_PASS}")
            raise RuntimeError(f"grad: output {k} does not require grad (no graph leads to it)")
    seeds = _seeds(outputs, grad_outputs)
    captured = {id(x): None for x in inputs if x.requires_grad}
    with enable_grad() if create_graph else no_grad():
        compute_gradient_of_variables(outputs, seeds, retain_graph, captured, cut=False)
    found = []
    for k, x in enumerate(inputs):
        g = captured.get(id(x))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {k} (shape {x.shape}) was not used to compute the "
                               "outputs (pass allow_unused=True to get None for it)")
        if g is None and materialize_grads:
            g = _zeros_like(x)
        found.append(g)
    return tuple(found)


def _seeds(outputs, grad_outputs):
    """One seed Tensor per output: grad_outputs' (a Tensor, a sequence with Nones, or None)
    checked against the output's shape, ones for a one-element output."""
    given = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs]
    if grad_outputs is None:
        given = [None] * len(outputs)
    if len(given) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(given)} grad_outputs")
    seeds = []
    for k, (o, s) in enumerate(zip(outputs, given)):
        if s is None:
            if o.cached_data.size != 1:
                raise RuntimeError(f"grad: output {k} has shape {o.shape}; a seed of ones is "
                                   "implied only for one element: pass grad_outputs")
            s = _ones_like(o)
        elif not isinstance(s, Tensor):
            s = Tensor(s, dtype=o.dtype, device=o.device)
        if s.shape != o.shape:
            raise ValueError(f"grad: grad_outputs[{k}] has shape {s.shape}, output {k} has "
                             f"shape {o.shape}")
        seeds.append(s)
    return seeds


def partial_grads(outputs, inputs, grad_outputs):
    """For an op's gradient: d(outputs)/d(inputs) seeded by grad_outputs (one per output),
    the inputs taken as independent variables (the pass stops at each input: nothing is
    passed below one, not even to another input). A list with None for an input the
    outputs do not depend on. The seeds are constants of this pass (it never
    differentiates through them) while a graph built from them keeps them, so a
    vector-Jacobian product taken this way has a second derivative. Builds a graph when
    grad mode is on (inside a backward pass: when that pass has create_graph), and then
    keeps the outputs' graph, which that gradient refers to."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    seeds = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs]
    if len(seeds) != len(outputs):
        raise ValueError(f"partial_grads: {len(outputs)} outputs but {len(seeds)} grad_outputs")
    captured = {id(x): None for x in inputs}
    compute_gradient_of_variables(outputs, seeds, grad_enabled(), captured)
    return [captured[id(x)] for x in inputs]


def _ones_like(x):
    return Tensor(NDArray.make(x.shape, device=x.device, dtype=x.dtype).fill(1.0))


class _Freed(tuple):
    """The inputs of a node whose graph a backward pass freed (an empty tuple, told apart
    from a constant's so that a second pass through it says why it cannot)."""
    __slots__ = ()


_FREED = _Freed()
_SECOND_PASS = ("trying to backward through the graph a second time: a previous backward() "
                "freed it. Specify retain_graph=True in the first backward() (or "
                "autograd.grad) to backward through it again, or compute the output again")


def _freed_error(node):
    """A pass reached, from node, a node whose graph an earlier pass freed."""
    return RuntimeError(f"backward: {_SECOND_PASS} (an input of {type(node.op).__name__} "
                        "belongs to a graph already freed, shared with an earlier backward's "
                        "output)")


def compute_gradient_of_variables(output, out_grad, retain_graph=False, captured=None,
                                  cut=True):
    """Reverse-mode pass from output (a tensor, or a list of them with a list of seeds).
    captured: {id(node): None} to return those nodes' gradients in it instead of
    accumulating every leaf's .grad; the pass stops at them (cut), or goes on below one
    as far as other captured nodes lie there (cut=False: total derivatives)."""
    outputs, seeds = (output, out_grad) if isinstance(output, list) else ([output], [out_grad])
    grads = {}
    for o, g in zip(outputs, seeds):
        grads.setdefault(id(o), []).append(g)
    order = find_topo_sort(outputs, stop=captured if cut else None)
    needed = None if cut or captured is None else _leading_to(order, captured)
    for node in reversed(order):
        parts = grads.pop(id(node), None)
        if parts is None or (needed is not None and id(node) not in needed):
            continue
        g = _sum_grads(parts, node)
        if captured is not None and id(node) in captured:
            captured[id(node)] = g if grad_enabled() else g.detach()
            if needed is None or not any(id(x) in needed for x in node.inputs):
                continue
        if node.op is None:
            if captured is not None:
                continue
            if isinstance(node, Tensor) and node.requires_grad:
                g = g if grad_enabled() else g.detach()
                if g.dtype != node.dtype and not grad_enabled():  # f32 leaf, f64 data: as torch
                    g = Tensor.make_const(g.cached_data.astype(node.dtype))
                node.grad = g if node.grad is None else node.grad + g
                for hook in getattr(node, "_hooks", None) or ():
                    hook(node)
            continue
        if node.op.tuple_index is not None:
            if node.inputs[0].requires_grad:
                grads.setdefault(id(node.inputs[0]), []).append((node.op.tuple_index, g))
            elif isinstance(node.inputs[0].inputs, _Freed):
                raise _freed_error(node)
        else:
            if _observers:
                tokens = _begin(node.op, node.inputs, "backward")
                in_grads = node.op.gradient_as_tuple(g, node)
                _end(tokens, in_grads)
            else:
                in_grads = node.op.gradient_as_tuple(g, node)
            for inp, ig in zip(node.inputs, in_grads):
                if inp.requires_grad and ig is not None and (needed is None or id(inp) in needed):
                    grads.setdefault(id(inp), []).append(ig)
                elif ig is not None and isinstance(inp.inputs, _Freed):
                    raise _freed_error(node)
        if not retain_graph:
            node.inputs = _FREED
            node.op = None
            node.requires_grad = False  # its graph is spent


def _leading_to(order, captured):
    """ids of the nodes in order (inputs first) from which a captured node is reached."""
    found = set()
    for node in order:
        if id(node) in captured or any(id(x) in found for x in node.inputs):
            found.add(id(node))
    return found


# custom differentiable functions (torch.autograd.Function) ----------------------------------
class FunctionCtx:
    """What forward leaves for backward: save_for_backward(*tensors) / saved_tensors,
    needs_input_grad (one bool per argument of apply), and any attribute set on it."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._saved, self._swap = (), {}

    def save_for_backward(self, *tensors):
        for k, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward: argument {k} is a {type(t).__name__}, not "
                                "a Tensor or None (keep other values as attributes of ctx)")
        self._saved = tensors

    @property
    def saved_tensors(self):
        """The saved tensors; in backward, a saved input or output is the one in the graph,
        so a backward written with tensor ops has a gradient itself (create_graph)."""
        return tuple(self._swap.get(id(t), t) if t is not None else None for t in self._saved)


class _FunctionOp(TupleOp):
    """An Op running a Function: forward on detached tensors, backward on the gradients.
    Its value is a tuple (apply hands out its elements, or the one output alone); a
    subclass per Function carries its name, so profiles and errors name the user's."""

    def __init__(self, fn, args, ctx):
        self.fn, self.args, self.ctx = fn, args, ctx
        self.slots = [k for k, a in enumerate(args) if isinstance(a, Tensor)]
        self.results = ()   # weak references to the output tensors apply hands out

    def compute(self, *arrays):
        args = list(self.args)
        self.detached = [Tensor.make_const(a) for a in arrays]
        for k, t in zip(self.slots, self.detached):
            args[k] = t
        with no_grad():
            if self.fn.setup_context is Function.setup_context:
                out = self.fn.forward(self.ctx, *args)
            else:   # torch 2's split form: forward(*args), then setup_context
                out = self.fn.forward(*args)
                self.fn.setup_context(self.ctx, tuple(args), out)
        self.single = not isinstance(out, tuple)
        self.outputs = (out,) if self.single else out
        for k, o in enumerate(self.outputs):
            if not isinstance(o, Tensor):
                raise TypeError(f"{self.fn.__name__}.forward: output {k} is a "
                                f"{type(o).__name__}, not a Tensor")
        return tuple(o.cached_data for o in self.outputs)

    def gradient(self, out_grad, node):
        name = f"{self.fn.__name__}.backward"
        ctx = self.ctx
        ctx._swap = {id(t): x for t, x in zip(self.detached, node.inputs)}
        for t, ref in zip(self.outputs, self.results):
            if ref() is not None:
                ctx._swap[id(t)] = ref()
        try:
            grads = self.fn.backward(ctx, *out_grad.tuple())
        finally:
            ctx._swap = {}
        grads = grads if isinstance(grads, (tuple, list)) else (grads,)
        n = len(self.args)
        if len(grads) < n or any(g is not None for g in grads[n:]):
            raise RuntimeError(f"{name} returned {len(grads)} gradients, expected {n} (one per "
                               "argument of apply, None for those without one)")
        for k, g in enumerate(grads[:n]):
            if g is not None and k not in self.slots:
                raise RuntimeError(f"{name}: gradient {k} is not None, but argument {k} is not "
                                   "a Tensor")
        return tuple(_fit_grad(name, k, grads[k], x) for k, x in zip(self.slots, node.inputs))


def _fit_grad(name, k, g, x):
    """g as x's gradient: None, or a Tensor of x's shape (summed over broadcast dims, as
    torch) and dtype."""
    if g is None:
        return None
    if not isinstance(g, Tensor):
        raise TypeError(f"{name}: gradient {k} is a {type(g).__name__}, not a Tensor or None")
    if g.shape != x.shape:
        try:
            ok = np.broadcast_shapes(g.shape, x.shape) == g.shape
        except ValueError:
            ok = False
        if not ok:
            raise RuntimeError(f"{name}: gradient {k} has shape {g.shape}, its input has shape "
                               f"{x.shape}")
        g = _ops().unbroadcast(g, x.shape)
    return g if g.dtype == x.dtype else g.to(x.dtype)


class Function:
    """A differentiable function written by hand, as torch.autograd.Function:

        class Exp(Function):
            @staticmethod
            def forward(ctx, x):
                y = x.exp()
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, g):
                y, = ctx.saved_tensors
                return g * y

        y = Exp.apply(x)

    forward runs without a graph on detached copies of the tensor arguments (other
    arguments pass as they are) and returns a Tensor or a tuple of them; backward gets one
    gradient per output (zeros for an output not used) and returns one per argument of
    apply (None where there is none; a gradient of a broadcast shape is summed to its
    input's). With create_graph, backward's ops are recorded: written with tensor ops on
    ctx.saved_tensors, it has a gradient itself. torch 2's form (forward without ctx and
    a setup_context(ctx, inputs, output)) works too."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError("a Function defines forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("a Function defines backward(ctx, *grad_outputs)")

    @staticmethod
    def setup_context(ctx, inputs, output):
        """torch 2's split form: forward(*args) computes, setup_context saves."""

    @classmethod
    def apply(cls, *args, **kwargs):
        if kwargs:
            raise TypeError(f"{cls.__name__}.apply takes positional arguments only, got "
                            f"{', '.join(kwargs)}")
        record = grad_enabled()
        needs = tuple(record and isinstance(a, Tensor) and a.requires_grad for a in args)
        op_class = cls.__dict__.get("_op_class")
        if op_class is None:
            op_class = type(cls.__name__, (_FunctionOp,), {})
            cls._op_class = op_class
        op = op_class(cls, args, FunctionCtx(needs))
        outs = op(*[args[k] for k in op.slots]).tuple()
        op.results = tuple(weakref.ref(t) for t in outs)
        return outs[0] if op.single else outs
