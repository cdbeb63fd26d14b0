"""Tensor and reverse-mode autodiff (needle's design: an Op computes on
NDArrays and gives its gradient as Tensors built from other ops)."""
from __future__ import annotations

import collections
import contextlib
import numbers
import operator
import threading
import weakref
from typing import Any

import numpy as np

from .backend import capture as _capture
from .backend import get_device
from .ndarray import NDArray, _normalize_axes, as_dtype, check_axis

class _GradState(threading.local):
    # a class default every thread sees until it sets its own: reading _state.enabled
    # needs no try (an unset attribute raised and caught an AttributeError, ~2 us)
    enabled = True


_state = _GradState()


def grad_enabled() -> bool:
    """Whether ops record the graph on this thread now: True unless inside
    no_grad() (torch.is_grad_enabled; mininet.is_grad_enabled)."""
    return _state.enabled


class _GradMode(contextlib.ContextDecorator):
    """Grad mode set to `mode` inside the block, restored after (also a decorator). A
    class rather than a generator-based context manager: backward and every eval step
    enter one, and this costs a third as much."""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.old = _state.enabled
        _state.enabled = self.mode

    def __exit__(self, *exc):
        _state.enabled = self.old
        return False

    def _recreate_cm(self):   # a decorated function gets a fresh one per call (recursion)
        return type(self)(self.mode)


def no_grad():
    """Inside this block ops record no graph (like torch.no_grad)."""
    return _GradMode(False)


def enable_grad():
    """Inside this block ops record a graph again, even within no_grad() (like
    torch.enable_grad); also usable as a decorator."""
    return _GradMode(True)


# Observers of op calls: the profiler and the ONNX tracer. An observer has
#   begin(op, inputs, phase) -> token   phase: "forward" (an op builds a Value) or
#                                       "backward" (op.gradient of a node, which builds
#                                       more forward ops inside)
#   end(token, result)                  result: the Value built, or the input gradients
# and may have module_begin(module, args) -> token / module_end(token, output), called
# around Module.__call__. With none installed an op pays one list check.
_observers: list[Any] = []
# whether any tensor ever had a post-accumulate-grad hook: until then backward does not
# look (reading an unset slot raises and catches an AttributeError, ~1 us a leaf)
_any_hooks = False


def add_observer(observer: Any) -> None:
    """Install an observer of op calls (the profiler and the ONNX tracer use this):
    its begin(op, inputs, phase) and end(token, result) are called around every op."""
    _observers.append(observer)


def remove_observer(observer: Any) -> None:
    """Uninstall an observer installed by add_observer (ValueError when it is
    not installed)."""
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
    # whether gradient() reads the node's own output (tanh's 1 - y^2): then a later in-place
    # write into that output is refused in backward. True unless an op says otherwise.
    saves_output = True

    def __call__(self, *args):
        return Tensor.make_from_op(self, args)

    def compute(self, *args):
        """The forward pass on NDArrays: one NDArray per input in, the output NDArray
        (or a tuple of them for a TupleOp) out. A subclass gives it."""
        raise NotImplementedError

    def gradient(self, out_grad, node):
        """The gradient of the output with respect to each input, built from Tensor ops (so it
        is differentiable itself): `out_grad` has the output's shape and `node` is the
        output Tensor (its inputs are node.inputs); returns one Tensor per input, each of
        that input's shape (a lone Tensor for a one-input op). A subclass gives it."""
        raise NotImplementedError

    def gradient_as_tuple(self, out_grad, node):
        """gradient(out_grad, node) as a tuple, one Tensor per input (each of
        that input's shape), whatever form gradient() returned."""
        g = self.gradient(out_grad, node)
        return tuple(g) if isinstance(g, (tuple, list)) else (g,)


class TupleOp(Op):
    """An op whose output is a tuple of Tensors (split)."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


class Value:
    # _versions: set on recorded nodes only (_record_versions), read by _check_versions
    """A node of the computation graph: the op that made it (None for a leaf), its
    inputs, its value `cached_data` (an NDArray, or a tuple of them for a TensorTuple) and
    requires_grad. The base of Tensor and TensorTuple."""
    __slots__ = ("op", "inputs", "cached_data", "requires_grad", "_versions", "__weakref__")

    def realize_cached_data(self):
        """The node's value (an NDArray, computed eagerly when the node
        was made): needle's name for cached_data."""
        return self.cached_data

    def is_leaf(self):
        """Whether this node is a leaf (made by the user, not by an op): leaves
        that require grad get .grad in backward."""
        return self.op is None

    def _init(self, op, inputs, cached_data, requires_grad):
        self.op = op
        self.inputs = inputs
        self.cached_data = cached_data
        self.requires_grad = requires_grad

    @classmethod
    def make_from_op(cls, op, inputs):
        """A new node made by applying `op` to `inputs` (Tensors): computes op.compute on their
        values at once, and records the op and inputs when grad mode is on and an input
        requires grad (else returns a constant). The output's shape is what the op gives."""
        value = object.__new__(cls)
        try:   # (map and attrgetter run in C: a comprehension is a function call in 3.11)
            arrays = list(map(_data_of, inputs))
        except AttributeError:   # a numpy array, list or number where a Tensor belongs
            raise _not_a_tensor(op, inputs) from None
        tokens = _begin(op, inputs, "forward") if _observers else None
        value.cached_data = data = op.compute(*arrays)
        # (_init spelled out: this runs for every op)
        if _state.enabled and any(map(_requires_grad_of, inputs)):
            value.op, value.inputs, value.requires_grad = op, tuple(inputs), True
            value._versions = _record_versions(value)
        else:  # no graph to keep: a constant
            value.op, value.inputs, value.requires_grad = None, (), False
        if cls is Tensor:
            value.grad = None
        if tokens is not None:
            _end(tokens, value)
        return value


_data_of = operator.attrgetter("cached_data")
_requires_grad_of = operator.attrgetter("requires_grad")


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
    """A node whose value is a tuple of NDArrays (the output of a TupleOp such as
    split): t[i] is the i-th Tensor (differentiable), len(t) their number."""
    __slots__ = ()

    def __len__(self):
        return len(self.cached_data)

    def __getitem__(self, i):
        return tuple_get_item(self, i)

    def tuple(self):
        """The elements as a tuple of Tensors, each of the shape its array has."""
        return tuple(self[i] for i in range(len(self)))

    def __iter__(self):
        return iter(self.tuple())

    def detach(self):
        """A TensorTuple of the same arrays, cut from the graph (no op, no grad)."""
        return TensorTuple.make_const(self.cached_data)

    @staticmethod
    def make_const(data):
        """A TensorTuple holding the NDArrays of `data` as they are, with no op
        and no grad (a leaf)."""
        t = object.__new__(TensorTuple)
        t._init(None, (), tuple(data), False)
        return t


class Tensor(Value):
    """A node of the computation graph holding an n-d array (cached_data, an NDArray):
    its shape, dtype (float32, float64, int64 or bool) and device, the op that made it, and
    after backward() its .grad (of the same shape). Tensor(data, dtype=None, device=None,
    requires_grad=False) copies data (numpy arrays, lists, numbers, NDArrays, tensors) and
    keeps numpy's dtype (mininet.tensor follows torch's instead: Python floats become
    float32). Only float tensors can require grad (TypeError otherwise)."""
    # _hooks: set only on leaves that have hooks; _unversioned: only on .data's tensors
    __slots__ = ("grad", "_hooks", "_unversioned")

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
        """A leaf Tensor over `data` (an NDArray, or a Tensor's array) without
        copying, of data's shape; requires_grad as given. The fast constructor the ops use."""
        t = object.__new__(Tensor)   # (_init spelled out: ~10 of these a training step)
        t.op, t.inputs, t.requires_grad, t.grad = None, (), requires_grad, None
        t.cached_data = data.cached_data if isinstance(data, Tensor) else data
        return t

    # data access -------------------------------------------------------------
    @property
    def data(self):
        """The same values as a new leaf Tensor without grad (shares the memory; writes through
        it are neither recorded nor counted as versions: as torch's, a backward that saved
        these values then reads the written ones). Setting .data replaces the values by a
        Tensor or NDArray of the same shape (ValueError otherwise)."""
        t = Tensor.make_const(self.cached_data)
        t._unversioned = True
        return t

    @data.setter
    def data(self, value):
        _capture.refuse("a rebinding")
        value = value.cached_data if isinstance(value, Tensor) else value
        if value.shape != self.shape:
            raise ValueError(f"cannot set data of shape {value.shape} on a tensor of shape {self.shape}")
        self.cached_data = value

    def detach(self) -> Tensor:
        """A new leaf Tensor sharing this one's memory, of the same shape and dtype,
        cut from the graph (requires_grad False)."""
        return Tensor.make_const(self.cached_data)

    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(tensor) each time backward has accumulated this leaf's .grad (as
        PyTorch's): the gradient of that backward is complete. Returns a handle whose
        remove() unregisters it. Data-parallel training starts reducing here."""
        if self.op is not None:
            raise RuntimeError("post-accumulate-grad hooks go on leaf tensors (parameters)")
        global _any_hooks
        hooks = getattr(self, "_hooks", None)
        if hooks is None:
            hooks = self._hooks = []
        hooks.append(hook)
        _any_hooks = True   # backward looks for hooks from now on
        return _HookHandle(hooks, hook)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Set requires_grad in place (a leaf starts or stops collecting
        .grad) and return self (same shape)."""
        self.requires_grad = flag
        return self

    @property
    def shape(self):
        """The shape, a tuple of ints (torch's torch.Size is a tuple too)."""
        return self.cached_data.shape

    @property
    def dtype(self):
        """The element type, a numpy dtype: float32, float64, int64 or bool."""
        return self.cached_data.dtype

    @property
    def device(self):
        """The device the values live on (mininet.cpu() or a CUDA device)."""
        return self.cached_data.device

    @property
    def ndim(self):
        """The number of dimensions, len(shape) (0 for a scalar tensor)."""
        return self.cached_data.ndim

    def size(self, dim: int | None = None) -> Any:
        """The shape as a tuple (torch's size()), or with `dim` the size of that dim
        (negative counts from the end)."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        """The number of elements, the product of the shape (1 for shape ())."""
        return self.cached_data.size

    def __len__(self):
        return len(self.cached_data)

    def __bool__(self):
        return bool(self.cached_data)

    # numpy defers to our reflected operators: np.float32(0.5) * t is t.__rmul__, a Tensor
    __array_ufunc__ = None

    def numpy(self) -> np.ndarray:
        """A numpy copy of the values, of the same shape and dtype. PyTorch's .numpy()
        shares memory; here np.asarray(t) and np.from_dlpack(t) do (CPU tensors)."""
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
        """The value of a one-element tensor (any shape with one element) as a Python
        number: float, int or bool by dtype. More elements raise ValueError."""
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
    def backward(self, out_grad: Tensor | None = None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into each leaf's .grad (of the leaf's shape). `out_grad`
        (of self's shape) may be left out for a one-element output (it is then 1); otherwise
        RuntimeError. retain_graph defaults to create_graph (as PyTorch): a recorded
        gradient can refer to forward nodes (tanh's is g * (1 - y^2)), so their graph must
        outlive this pass. A second backward through a freed graph raises RuntimeError."""
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

    def logical_not(self):
        """not x (nonzero is True), elementwise: a bool Tensor of the same shape."""
        return _ops().logical_not(self)

    def logical_and(self, other):
        """x and other (nonzero is True), elementwise with broadcasting: a bool
        Tensor of the broadcast shape."""
        return _ops().logical_and(self, other)

    def logical_or(self, other):
        """x or other (nonzero is True), elementwise with broadcasting: a bool
        Tensor of the broadcast shape."""
        return _ops().logical_or(self, other)

    def logical_xor(self, other):
        """x xor other (nonzero is True), elementwise with broadcasting: a bool
        Tensor of the broadcast shape."""
        return _ops().logical_xor(self, other)

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    __hash__ = object.__hash__

    # reductions: dim=/axis=/axes= and keepdim=/keepdims= (one helper, _reduce_args) ----
    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *,
            axis: int | tuple[int, ...] | None = None, axes: int | tuple[int, ...] | None = None,
            keepdims: bool | None = None) -> Tensor:
        """The sum over dims: `dim` (torch) / `axis` / `axes` (numpy's and needle's spellings):
        an int, a tuple, or None for every dim; the result's shape drops the reduced dims,
        or keeps them as size 1 with keepdim (keepdims). The sum of a bool tensor counts the
        True entries (int64). Differentiable."""
        return _ops().summation(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def mean(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *,
             axis: int | tuple[int, ...] | None = None, axes: int | tuple[int, ...] | None = None,
             keepdims: bool | None = None) -> Tensor:
        """The mean over dims: `dim` (torch) / `axis` / `axes` (numpy's and needle's
        spellings): an int, a tuple, or None for every dim; the result's shape drops the
        reduced dims, or keeps them as size 1 with keepdim (keepdims). A bool tensor raises
        TypeError (as torch); an empty reduction gives NaN."""
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
        """x.min(): the minimum (shape ()); x.min(dim): (values, indices) with that dim dropped
        (kept as 1 with keepdim), as torch; x.min(axis=/axes=): the values alone (numpy's
        and needle's meaning); x.min(other): the elementwise minimum (broadcast shape)."""
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

    def amax(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *,
             axis: int | tuple[int, ...] | None = None, axes: int | tuple[int, ...] | None = None,
             keepdims: bool | None = None) -> Tensor:
        """The maxima over dims (values alone): `dim` (torch) / `axis` / `axes` (numpy's and
        needle's spellings): an int, a tuple, or None for every dim; the result's shape
        drops the reduced dims, or keeps them as size 1 with keepdim (keepdims). Tied maxima
        share the gradient, as torch."""
        return _ops().max(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def amin(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *,
             axis: int | tuple[int, ...] | None = None, axes: int | tuple[int, ...] | None = None,
             keepdims: bool | None = None) -> Tensor:
        """The minima over dims (values alone): `dim` (torch) / `axis` / `axes` (numpy's and
        needle's spellings): an int, a tuple, or None for every dim; the result's shape
        drops the reduced dims, or keeps them as size 1 with keepdim (keepdims). Tied minima
        share the gradient, as torch."""
        args = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
        if self.dtype == _BOOL:   # no negation of bools: min is not(max(not x)), as torch's all
            return ~_ops().max(~self, *args)
        return -_ops().max(-self, *args)

    def argmax(self, dim: int | None = None, keepdim: bool = False, *, axis: int | None = None,
               keepdims: bool | None = None) -> Tensor:
        """The int64 index of the maximum along `dim` (axis=): that dim dropped, or kept as 1
        with keepdim; dim=None indexes the flattened tensor (shape ()). No gradient."""
        return self._arg("argmax", dim, axis, keepdim, keepdims)

    def argmin(self, dim: int | None = None, keepdim: bool = False, *, axis: int | None = None,
               keepdims: bool | None = None) -> Tensor:
        """The int64 index of the minimum along `dim` (axis=): that dim dropped, or kept as 1
        with keepdim; dim=None indexes the flattened tensor (shape ()). No gradient."""
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
        """The standard deviation, sqrt(var(dim, keepdim, correction=1 ...)): reduced
        shape as var's (torch's default correction=1, Bessel's)."""
        return self.var(dim, keepdim, **kw).sqrt()

    def prod(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """The product over `dim` (axis=; None: every element, shape ()), that dim
        dropped or kept as 1 with keepdim. Differentiable."""
        return _ops().prod(self, _one_of("prod", dim=dim, axis=axis), bool(keepdim or keepdims))

    def cumsum(self, dim=None, *, axis=None):
        """The cumulative sum along `dim` (axis=): the same shape, entry i the sum of
        entries 0..i. Differentiable."""
        return _ops().cumsum(self, _one_of("cumsum", dim=dim, axis=axis))

    def logsumexp(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *,
                  axis: int | tuple[int, ...] | None = None,
                  axes: int | tuple[int, ...] | None = None,
                  keepdims: bool | None = None) -> Tensor:
        """log(sum(exp(x))) over dims, computed stably: `dim` (torch) / `axis` / `axes`
        (numpy's and needle's spellings): an int, a tuple, or None for every dim; the
        result's shape drops the reduced dims, or keeps them as size 1 with keepdim
        (keepdims)."""
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
        """Whether every entry (along `dim`) is nonzero: a bool tensor, the reduced dim
        dropped or kept as 1 with keepdim (dim=None: shape ()); true for no entries."""
        ax, keep = _reduce_args(self, dim, axis, None, keepdim, keepdims)
        return Tensor.make_const(self.cached_data.all(ax, keep))

    def softmax(self, dim: int = -1, *, axis: int | None = None) -> Tensor:
        """softmax along `dim` (default the last; axis= too): the same shape, each
        slice along dim summing to 1. Differentiable."""
        return _ops().softmax(self, self._dim(dim, axis, "softmax"))

    def log_softmax(self, dim: int = -1, *, axis: int | None = None) -> Tensor:
        """log(softmax(x)) along `dim` (default the last; axis= too), computed
        stably: the same shape. Differentiable."""
        return _ops().logsoftmax(self, self._dim(dim, axis, "log_softmax"))

    def _dim(self, dim, axis, what, extra=0):
        """One dim (dim= or axis=) as a non-negative int; AxisError when out of range."""
        d = dim if axis is None else axis
        return check_axis(d, max(self.ndim + extra, 1), what)

    # shape ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        """The same values in another shape (varargs or one tuple; one -1 is
        inferred): a view when the strides allow, else a copy. view is the same method (no
        contiguity error, unlike torch). ValueError when the sizes differ."""
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _ops().reshape(self, shape)

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        """reshape(other.shape): the same values in the shape of the tensor `other`."""
        return self.reshape(other.shape)

    reshape_as = view_as

    def dim(self) -> int:
        """The number of dimensions, as torch's dim() (the same as ndim)."""
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

    def swapaxes(self, a: int, b: int) -> Tensor:
        """The dims a and b exchanged (numpy's swapaxes; transpose(a, b)): shape
        (.., n_a, .., n_b, ..) becomes (.., n_b, .., n_a, ..). A view."""
        return self.transpose(a, b)

    def t(self) -> Tensor:
        """The transpose of a matrix: shape (m, n) becomes (n, m); 0-d and 1-d tensors are
        returned as they are; more dims raise ValueError (torch raises RuntimeError)."""
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self if self.ndim < 2 else self.transpose(0, 1)

    def permute(self, *axes):
        """The dims reordered (varargs or one tuple, a permutation of 0..ndim-1): dim i of the
        result is dim axes[i], e.g. (N, C, H, W).permute(0, 2, 3, 1) is (N, H, W, C). A
        view; differentiable."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _ops().permute(self, axes)

    @property
    def T(self):
        """Every dim reversed: shape (a, b, c) becomes (c, b, a) (a view; differentiable)."""
        return _ops().permute(self, tuple(reversed(range(self.ndim))))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Dims start_dim..end_dim (inclusive; negative from the end) merged into one: (N, C,
        H, W).flatten(1) is (N, C * H * W); a 0-d tensor gives shape (1,). ValueError when
        start_dim comes after end_dim."""
        if self.ndim == 0:
            return self.reshape(1)
        s, e = (check_axis(d, self.ndim, "flatten") for d in (start_dim, end_dim))
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def unsqueeze(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        """A new dim of size 1 inserted at `dim` (axis=; negative counts from the
        end of the result): shape (a, b).unsqueeze(1) is (a, 1, b). A view."""
        d = self._dim(dim, axis, "unsqueeze", extra=1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None, *, axis=None, axes=None):
        """Drop size-1 dims (all, or those of dim; a dim of another size stays, as torch)."""
        d = _one_of("squeeze", dim=dim, axis=axis, axes=axes)
        drop = range(self.ndim) if d is None else _normalize_axes(d, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if i not in drop or n != 1))

    def broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        """The values broadcast to `shape` (numpy's rules: size-1 dims stretch,
        new dims lead); a view; the gradient sums back to this tensor's shape."""
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

    def expand_as(self, other: Tensor) -> Tensor:
        """broadcast_to(other.shape): the values broadcast to the shape of `other`."""
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
        """`chunks` pieces along `dim` (axis=), each of size ceil(n / chunks) (the last
        smaller, so fewer pieces when n does not split evenly), as a tuple of views."""
        d = self._dim(dim, axis, "chunk")
        return self.split(-(-self.shape[d] // chunks) or 1, d)

    def contiguous(self) -> Tensor:
        """Itself when its memory is row-major contiguous, else a compact copy of
        the same shape (differentiable)."""
        return self if self.cached_data.is_compact() else _ops().clone(self)

    def clone(self) -> Tensor:
        """A copy with its own memory, the same shape and dtype, recorded in the graph
        (the gradient flows back to this tensor)."""
        return _ops().clone(self)

    # indexing and selection -------------------------------------------------------------------
    def gather(self, dim: int, index: Any) -> Tensor:
        """torch.gather: `out[i][j] = x[i][index[i][j]]` along `dim`; `index` (int64) has
        the tensor's number of dims and gives the output's shape. Differentiable in x."""
        return _ops().gather(self, dim, index)

    def index_select(self, dim: int, index: Any) -> Tensor:
        """The entries at the int64 indices `index` (shape (k,)) along `dim`: that
        dim becomes size k. Differentiable."""
        return _ops().index_select(self, dim, index)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        """A copy with `value` where the bool `mask` (broadcasting to this tensor's
        shape) is True: the same shape. Differentiable in x."""
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
        """The k largest (smallest with largest=False) entries along `dim` (default the last),
        sorted, as (values, indices) with that dim of size k; values carry the gradient.
        ValueError for k outside [0, size]."""
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
        """The tensor converted to `dtype` (a dtype or its name), the same shape;
        differentiable between float dtypes."""
        return _ops().cast(self, dtype)

    def float(self):
        """The tensor as float32, the same shape (a differentiable cast)."""
        return _ops().cast(self, "float32")

    def double(self):
        """The tensor as float64, the same shape (a differentiable cast)."""
        return _ops().cast(self, "float64")

    def long(self):
        """The tensor as int64, the same shape (no int32 here: .int() is this too).
        Floats are truncated toward zero."""
        return _ops().cast(self, "int64")

    def bool(self):
        """The tensor as bool (nonzero is True), the same shape."""
        return _ops().cast(self, "bool")

    int = long   # int64: there is no int32 dtype

    def cpu(self) -> Tensor:
        """The tensor on the CPU, the same shape (itself when already there)."""
        return self.to("cpu")

    def cuda(self) -> Tensor:
        """The tensor on the CUDA device, the same shape (DeviceUnavailable without a
        GPU and PyCUDA)."""
        return self.to("cuda")

    def tolist(self) -> Any:
        """The values as nested Python lists (a number for a 0-d tensor), as torch's
        tolist(): the nesting follows the shape."""
        return self.cached_data.numpy().tolist()

    # elementwise ---------------------------------------------------------------------------
    def exp(self) -> Tensor:
        """exp(x), elementwise; the same shape, differentiable."""
        return _ops().exp(self)

    def log(self) -> Tensor:
        """The natural log, elementwise; the same shape, differentiable."""
        return _ops().log(self)

    def relu(self) -> Tensor:
        """max(x, 0), elementwise; the same shape, differentiable."""
        return _ops().relu(self)

    def tanh(self) -> Tensor:
        """tanh(x), elementwise; the same shape, differentiable."""
        return _ops().tanh(self)

    def sigmoid(self) -> Tensor:
        """1 / (1 + exp(-x)), elementwise; the same shape, differentiable."""
        return _ops().sigmoid(self)

    def sqrt(self) -> Tensor:
        """The square root, elementwise; the same shape, differentiable."""
        return _ops().sqrt(self)

    def log1p(self) -> Tensor:
        """log(1 + x), exact for small x, elementwise; the same shape, differentiable."""
        return _ops().log1p(self)

    def expm1(self) -> Tensor:
        """exp(x) - 1, exact for small x, elementwise; the same shape, differentiable."""
        return _ops().expm1(self)

    def abs(self) -> Tensor:
        """|x|, elementwise; the same shape, differentiable (sign(x) as the gradient)."""
        return _ops().abs(self)

    def erf(self) -> Tensor:
        """The error function erf(x), elementwise; the same shape, differentiable."""
        return _ops().erf(self)

    def pow(self, p: Any) -> Tensor:
        """x ** p, elementwise (p a number or a Tensor, broadcast): the broadcast shape,
        differentiable."""
        return self ** p

    __abs__ = abs

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        """x clamped to [min, max] elementwise (None: no bound on that side), the same
        shape; clamp is the same method. The gradient is 1 inside the bounds, 0 outside."""
        return _ops().clip(self, min, max)

    clamp = clip

    def eq(self, other):
        """x == other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self == other

    def ne(self, other):
        """x != other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self != other

    def lt(self, other):
        """x < other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self < other

    def le(self, other):
        """x <= other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self <= other

    def gt(self, other):
        """x > other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self > other

    def ge(self, other):
        """x >= other, elementwise with broadcasting: a bool Tensor of the broadcast shape."""
        return self >= other

    def add(self, other, alpha=1):
        """x + alpha * other (torch's add), elementwise with broadcasting: the broadcast
        shape, differentiable."""
        return self + other * alpha if alpha != 1 else self + other

    def sub(self, other, alpha=1):
        """x - alpha * other (torch's sub), elementwise with broadcasting: the broadcast
        shape, differentiable. Bool tensors raise TypeError."""
        return self - other * alpha if alpha != 1 else self - other

    def mul(self, other):
        """x * other, elementwise with broadcasting: the broadcast shape, differentiable."""
        return self * other

    def div(self, other):
        """x / other, elementwise with broadcasting: the broadcast shape, differentiable."""
        return self / other

    def matmul(self, other: Tensor) -> Tensor:
        """x @ other, numpy's matmul rules: (m, k) @ (k, n) is (m, n); leading batch
        dims broadcast, `(*, m, k)` @ `(*, k, n)` is `(*, m, n)`; 1-d operands are vectors.
        Differentiable."""
        return self @ other

    def mm(self, other: Tensor) -> Tensor:
        """The matrix product of two 2-d tensors: (m, k) @ (k, n) gives (m, n) (torch's mm: no
        broadcasting, no 1-d). Other ranks or mismatched inner sizes raise ValueError naming
        the shapes."""
        b = other.shape if isinstance(other, Tensor) else np.shape(other)
        if self.ndim != 2 or len(b) != 2:
            raise ValueError(f"mm: both operands must be 2-d matrices, got shapes {self.shape} "
                             f"and {tuple(b)}")
        if self.shape[1] != b[0]:
            raise ValueError(f"mm: shapes {self.shape} and {tuple(b)} cannot be multiplied "
                             f"({self.shape[0]}x{self.shape[1]} and {b[0]}x{b[1]})")
        return self @ other

    # in place: writes into this tensor's memory (so p.data.add_ changes p) ------------------
    # As torch: every write bumps the buffer's version (see _check_versions); a leaf that
    # requires grad is refused while grad mode is on; a write into a tensor in a graph (or
    # of a value that requires grad) is recorded: this object gets the write's node, whose
    # input is its old node (_old_node), so later reads differentiate through the write.
    def _write(self, value, idx=()):
        """Copy value (an NDArray or a number, broadcast, cast to self's dtype) into self's
        memory, unrecorded (the caller checked _refuse_write)."""
        self.cached_data[idx] = value
        if not getattr(self, "_unversioned", False):
            _bump(self.cached_data)
        return self

    def _value(self, other):
        return other.cached_data if isinstance(other, Tensor) else other

    def _arith_(self, what, other, host, make, reads_old=True):
        """self = make(self, other): host(NDArray, other's NDArray or number) computes it
        unrecorded; make(Tensor, other) builds it from ops when recorded (or traced)."""
        if _refuse_write(self, other, what) or _tracing():
            readers = _readers(self, other)
            old = _old_node(self, _snapshot(self, reads_old or bool(readers)))
            return _commit_result(self, make(old, _repoint(readers, self, old, other)))
        new = host(self.cached_data, self._value(other))
        if new.shape != self.shape:
            raise RuntimeError(f"{what}: output with shape {self.shape} doesn't match the "
                               f"broadcast shape {new.shape}")
        return self._write(new)

    def add_(self, other, alpha=1):
        """In place: self += alpha * other (broadcast to self's shape, which must not
        change: RuntimeError otherwise); returns self. Recorded in the graph as torch's."""
        if alpha != 1:
            return self._arith_("add_", other, lambda a, b: a + b * alpha,
                                lambda t, o: t + o * alpha, reads_old=False)
        return self._arith_("add_", other, lambda a, b: a + b, lambda t, o: t + o,
                            reads_old=False)

    def sub_(self, other, alpha=1):
        """In place: self -= alpha * other (broadcast to self's shape); returns self."""
        return self.add_(other, -alpha)

    def mul_(self, other):
        """In place: self *= other (broadcast to self's shape); returns self."""
        return self._arith_("mul_", other, lambda a, b: a * b, lambda t, o: t * o)

    def div_(self, other):
        """In place: self /= other (broadcast to self's shape); returns self."""
        return self._arith_("div_", other, lambda a, b: a / b, lambda t, o: t / o)

    def clamp_(self, min=None, max=None):
        """In place: self clamped to [min, max] elementwise (None: no bound), the same
        shape; returns self. clip_ is the same method."""
        return self._arith_("clamp_", None, lambda a, _: a.clip(min, max),
                            lambda t, _: t.clip(min, max))

    clip_ = clamp_

    def fill_(self, value):
        """In place: every element set to `value` (a number or a 0-d Tensor; another
        Tensor raises RuntimeError), the shape unchanged; returns self."""
        if isinstance(value, Tensor) and value.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with "
                               f"{value.ndim} dimensions")
        if not isinstance(value, Tensor):
            value = float(value) if self.dtype.kind == "f" else value
        self[...] = value
        return self

    def zero_(self) -> Tensor:
        """In place: every element set to 0, the shape unchanged; returns self."""
        return self.fill_(0)

    def copy_(self, src):
        """Copy src's values (broadcast, cast) into self; recorded as torch's (the gradient
        reaches src, none reaches the old values)."""
        if not isinstance(src, (Tensor, NDArray)):
            src = NDArray(np.asarray(src), dtype=self.dtype, device=self.device)
        self[...] = src
        return self


MinMax = collections.namedtuple("MinMax", ["values", "indices"])   # torch.return_types.max
MinMax.__doc__ = """(values, indices) of max(dim), min(dim), sort and topk, as torch's return
types: two Tensors of one shape, the values (differentiable) and their int64 indices."""


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
    """Element `index` of a TensorTuple as a Tensor (differentiable: the
    gradient reaches that element of the tuple only)."""
    return _ops().tuple_get_item(value, index)


def find_topo_sort(node_list, stop=None):
    """Nodes in topological order (inputs first), iteratively: deep graphs do
    not hit Python's recursion limit. Nodes whose id is in stop are not expanded."""
    # depth first, a node's inputs taken last to first (the order the stack of pending
    # nodes gave before): one stack entry per node, its inputs read through an iterator
    order, visited = [], set()
    for root in node_list:
        if id(root) in visited:
            continue
        visited.add(id(root))
        stack = [(root, _inputs_of(root, stop))]
        while stack:
            node, todo = stack[-1]
            for child in todo:
                if child.requires_grad and id(child) not in visited:
                    visited.add(id(child))
                    if child.op is None:   # a leaf (no inputs): its own entry at once
                        order.append(child)
                        continue
                    stack.append((child, reversed(child.inputs) if stop is None else
                                  _inputs_of(child, stop)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _inputs_of(node, stop):
    return iter(()) if stop is not None and id(node) in stop else reversed(node.inputs)


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
    a = x.cached_data   # (its fields read directly: backward's seed, every step)
    return Tensor.make_const(NDArray.make(a.shape, None, a.device, None, 0, a.dtype).fill(1.0))


# version counters: in-place writes against the values backward reads -----------------------
# Each buffer (the handle that an NDArray and all its views share) has a version, bumped by
# every in-place write through a Tensor. A recorded node keeps the versions of its inputs
# and of its output as they were when it was made; before the node's gradient runs,
# backward compares them (torch's saved-variable check).
_STALE = ("one of the variables needed for gradient computation has been modified by an "
          "inplace operation")


def _version(arr):
    """The version of an NDArray's buffer (0 for a handle that keeps none, or a tuple)."""
    return getattr(getattr(arr, "handle", None), "version", 0)


def _bump(arr):
    """Mark arr's buffer written (all views of it see the new version)."""
    try:
        arr.handle.version += 1
    except AttributeError:   # a foreign handle (a test device) keeps no versions
        pass


def _record_versions(node):
    """(each input's version, ..., the output's version), as they are now. Made for every
    recorded node: one to three inputs are spelled out (40% less than a list)."""
    ins = node.inputs
    try:
        out = node.cached_data.handle.version
        n = len(ins)
        if n == 2:
            return (ins[0].cached_data.handle.version, ins[1].cached_data.handle.version, out)
        if n == 1:
            return (ins[0].cached_data.handle.version, out)
        if n == 3:   # (a Linear with its bias)
            return (ins[0].cached_data.handle.version, ins[1].cached_data.handle.version,
                    ins[2].cached_data.handle.version, out)
        vs = [x.cached_data.handle.version for x in ins]
    except AttributeError:   # a tuple value, or a handle without versions
        vs, out = [_version(x.cached_data) for x in ins], _version(node.cached_data)
    vs.append(out)
    return tuple(vs)


def _check_versions(node):
    """Raise torch's error when something node's gradient reads was written in place after
    node was made. A view (an output sharing an input's buffer) reads no values: a write
    into its base shows through it, and its gradient goes to the base's new history, as
    torch rebases views. Any other input changed is refused, whether or not the op reads
    it (torch refuses only saved ones): the node's input is the written tensor's object,
    which now stands for the value after the write. The output counts when the op's
    gradient reads it (Op.saves_output). The old node of a write (_old_node) is exempt as
    an input: the write's op reads it only where it holds its own copy (_snapshot)."""
    try:
        saved = node._versions
    except AttributeError:   # a node made without a record
        return
    now = _record_versions(node)
    if now == saved:
        return
    out = node.cached_data
    for k, x in enumerate(node.inputs):
        # the old node of a write: read only where it keeps a copy (_snapshot), never written
        if now[k] != saved[k] and not _same_buffer(x.cached_data, out) and \
                _BEFORE_WRITES.get(id(x)) is not x:
            raise _stale(node, f"input {k}", x, now[k], saved[k])
    if now[-1] != saved[-1] and node.op.saves_output and \
            not any(_same_buffer(x.cached_data, out) for x in node.inputs):
        raise _stale(node, "output", node, now[-1], saved[-1])


def _same_buffer(a, b):
    return getattr(a, "handle", None) is getattr(b, "handle", a)


def _stale(node, which, x, now, saved):
    return RuntimeError(f"{_STALE}: [{type(node.op).__name__} {which}, shape {tuple(x.shape)}] "
                        f"is at version {now}; expected version {saved} instead. Hint: the "
                        "tensor was changed in place (x[i] = v, add_, mul_, ..., copy_, an "
                        "optimizer step) after this op used it: use the out-of-place form "
                        "(x = x * 2) or .clone() before the write")


def _refuse_write(x, value, what):
    """Whether a write into x is recorded in the graph (grad mode is on and x or value
    requires grad); raises where torch would, or where the write cannot be recorded."""
    if not grad_enabled() or not (x.requires_grad or getattr(value, "requires_grad", False)):
        return False
    if x.requires_grad and x.op is None:
        raise RuntimeError(f"{what}: a leaf Variable that requires grad is being used in an "
                           "in-place operation (torch's rule: a leaf tensor that requires grad "
                           "cannot be changed in place while grad mode is on); use "
                           "mininet.no_grad() or .data")
    if _is_view(x):
        raise RuntimeError(f"{what}: x is a view of another tensor and the write would be "
                           "recorded (x or the value requires grad): torch rebases the viewed "
                           "tensor's history, mininet does not; write into the base tensor "
                           "(base[index] = value), or build the result out of place")
    if x.dtype.kind != "f":
        raise RuntimeError(f"{what}: cannot record a write into a {x.dtype} tensor (only float "
                           "tensors carry gradients)")
    return True


def _is_view(x):
    """x shares its memory with the tensor it was made from (a view in the graph), or, a
    constant, does not own its whole buffer (a slice of another array)."""
    arr = x.cached_data
    if x.op is not None:   # (the old node of a write into x shares x's buffer: not a base)
        return any(_same_buffer(i.cached_data, arr) and _BEFORE_WRITES.get(id(i)) is not i
                   for i in x.inputs)
    size = getattr(arr.handle, "nbytes", None)
    return not (arr.offset == 0 and arr.is_compact() and (size is None or size == arr.nbytes))


def _old_node(x, data):
    """x's node as it was before a write into x, as a separate tensor (the write's input),
    holding data: a copy of x's old values (_snapshot) or x's buffer itself."""
    snapshot = data is not x.cached_data
    old = object.__new__(Tensor)
    _BEFORE_WRITES[id(old)] = old
    old._init(x.op, x.inputs, data, x.requires_grad)
    old.grad = None
    vs = getattr(x, "_versions", None) if x.op is not None else None
    if vs is not None:
        # the copy's version stands for the values x had: still stale if they were already
        stale = vs[-1] != _version(x.cached_data)
        old._versions = vs[:-1] + ((-1 if stale else _version(data)) if snapshot else vs[-1],)
    for o in _observers:   # earlier references to x in a trace mean the old value
        if hasattr(o, "rebind"):
            o.rebind(x, old)
    return old


def _readers(x, value):
    """The recorded nodes of value's graph that read x (directly or through one another),
    inputs first: a value computed from x before a write into x (h[:, 0] = h[:, 0] * 2)."""
    if not isinstance(value, Value) or value is x or value.op is None:
        return []
    order, seen, stack = [], {id(x)}, [(value, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((i, False) for i in node.inputs if i.op is not None or i is x)
    reach, found = {id(x)}, []
    for node in order:
        if any(id(i) in reach for i in node.inputs):
            reach.add(id(node))
            found.append(node)
    return found


def _repoint(readers, x, old, value):
    """Make the readers of x in a written value read old (x before the write) instead of
    x, whose object becomes the write: their values came from the old ones, so must their
    gradients (and the write's graph would loop through x otherwise). A reader that is a
    view of x stays as it is for later use (a write shows through a view, whose gradient
    then follows the write, as torch's); the value's graph gets a copy of it over old.
    Returns the value to write (value, or its copy)."""
    if value is x:
        return old
    moved = {id(x): old}
    for node in readers:
        inputs = tuple(moved.get(id(i), i) for i in node.inputs)
        if _same_buffer(node.cached_data, x.cached_data):
            copy = object.__new__(Tensor)
            copy._init(node.op, inputs, _view_over(node.cached_data, x, old), True)
            copy.grad = None
            copy._versions = _record_versions(copy)
            moved[id(node)] = copy
            continue
        saved, before = getattr(node, "_versions", None), node.inputs
        node.inputs = inputs
        if saved is not None:   # the moved inputs' versions as they were (stale stays stale)
            node._versions = tuple(
                v if i is j else (_version(j.cached_data) if v == _version(i.cached_data) else -1)
                for v, i, j in zip(saved, before + (None,), inputs + (None,)))
    return moved.get(id(value), value)


def _view_over(view, x, old):
    """view (an NDArray over x's buffer) as the same view of old's copy of x (the same
    layout: both compact from 0), else view itself (a view op reads no values)."""
    a, b = x.cached_data, old.cached_data
    if b is a or not (a.is_compact() and a.offset == 0 and b.is_compact() and b.offset == 0):
        return view
    return NDArray.make(view.shape, view.strides, view.device, b.handle, view.offset, view.dtype)


# the old nodes of writes (_old_node) by id, while they live (Tensor's == is elementwise)
_BEFORE_WRITES: Any = weakref.WeakValueDictionary()


def _snapshot(x, reads_old):
    """x's values for its old node: a copy where they will be read after the write (the
    write's gradient reads them, x's op reads its output, a tracer may store them as a
    constant), else x's buffer (no copy)."""
    if _tracing() or reads_old or (x.op is not None and x.op.saves_output):
        return x.cached_data.copy()
    return x.cached_data


def _tracing():
    """Whether an observer follows values through in-place writes (the ONNX tracer)."""
    return any(hasattr(o, "rebind") for o in _observers) if _observers else False


def _commit_write(x, op, inputs):
    """x becomes the node op(inputs) over its own (already written) buffer; its object
    stays the same, as torch's."""
    arr = x.cached_data
    _bump(arr)
    tokens = _begin(op, inputs, "forward") if _observers else None
    if grad_enabled() and any(i.requires_grad for i in inputs):
        x._init(op, tuple(inputs), arr, True)
        x._versions = _record_versions(x)
    if tokens is not None:
        _end(tokens, x)
    return x


def _commit_result(x, new):
    """A write computed out of place (new = f(old, other), recorded): copy new's values
    into x's buffer and give x new's node. Observers already saw new: they rebind it."""
    if new.shape != x.shape:
        raise RuntimeError(f"output with shape {x.shape} doesn't match the broadcast shape "
                           f"{new.shape}")
    if new.dtype != x.dtype:
        new = _ops().cast(new, x.dtype)
    arr = x.cached_data
    arr[()] = new.cached_data
    _bump(arr)
    if new.op is not None:
        x._init(new.op, new.inputs, arr, True)
        x._versions = _record_versions(x)
    for o in _observers:
        if hasattr(o, "rebind"):
            o.rebind(new, x)
    return x


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
    if captured is None and not _observers and not isinstance(output, list):
        return _backward_to_leaves(output, out_grad, retain_graph)
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
        single = len(parts) == 1 and type(node) is not TensorTuple   # (most nodes: no sum)
        g = parts[0] if single else _sum_grads(parts, node)
        if captured is not None and id(node) in captured:
            captured[id(node)] = g if grad_enabled() else g.detach()
            if needed is None or not any(id(x) in needed for x in node.inputs):
                continue
        if node.op is None:
            if captured is not None:
                continue
            if isinstance(node, Tensor) and node.requires_grad:
                _accumulate(node, g, grad_enabled())
            continue
        if node.op.tuple_index is not None:
            if node.inputs[0].requires_grad:
                grads.setdefault(id(node.inputs[0]), []).append((node.op.tuple_index, g))
            elif isinstance(node.inputs[0].inputs, _Freed):
                raise _freed_error(node)
        else:
            _check_versions(node)
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


def _backward_to_leaves(output, out_grad, retain_graph):
    """compute_gradient_of_variables for one output, every leaf's .grad accumulated and no
    observer installed (Tensor.backward's pass): the same steps in the same order, without
    the branches for captured nodes and observers (it runs every training step)."""
    grads = {id(output): [out_grad]}
    recording = _state.enabled
    for node in reversed(find_topo_sort((output,))):
        parts = grads.pop(id(node), None)
        if parts is None:
            continue
        g = parts[0] if len(parts) == 1 and type(node) is not TensorTuple else \
            _sum_grads(parts, node)
        op = node.op
        if op is None:
            if node.requires_grad and isinstance(node, Tensor):
                _accumulate(node, g, recording)
            continue
        inputs = node.inputs
        if op.tuple_index is not None:
            if inputs[0].requires_grad:
                grads.setdefault(id(inputs[0]), []).append((op.tuple_index, g))
            elif isinstance(inputs[0].inputs, _Freed):
                raise _freed_error(node)
        else:
            _check_versions(node)
            in_grads = op.gradient(g, node)
            if type(in_grads) is not tuple:
                in_grads = tuple(in_grads) if isinstance(in_grads, (tuple, list)) else (in_grads,)
            for inp, ig in zip(inputs, in_grads):
                if ig is None:
                    continue
                if inp.requires_grad:
                    waiting = grads.get(id(inp))
                    if waiting is None:
                        grads[id(inp)] = [ig]
                    else:
                        waiting.append(ig)
                elif isinstance(inp.inputs, _Freed):
                    raise _freed_error(node)
        if not retain_graph:
            node.inputs = _FREED
            node.op = None
            node.requires_grad = False  # its graph is spent


def _accumulate(leaf, g, recording):
    """leaf.grad += g (a leaf that requires grad), then its post-accumulate hooks."""
    if not recording:   # a new leaf over g's values (detached), of the leaf's dtype
        data, dtype = g.cached_data, leaf.cached_data.dtype
        if data.dtype is not dtype and data.dtype != dtype:
            data = data.astype(dtype)   # f32 leaf, f64 data
        g = Tensor.make_const(data)
    if _capture._active is not None:
        _capture.check_new_grad(leaf)
    leaf.grad = g if leaf.grad is None else leaf.grad + g
    if _any_hooks:
        for hook in getattr(leaf, "_hooks", None) or ():
            hook(leaf)


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
        """Keep tensors (or None) for backward, read back as ctx.saved_tensors; any other value
        raises TypeError (keep those as attributes of ctx)."""
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
        """The forward computation (a staticmethod of a subclass): forward(ctx, *args) computes
        the outputs (Tensors) from the arguments, on their values (no graph is recorded
        inside), and saves what backward needs on ctx."""
        raise NotImplementedError("a Function defines forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        """The gradient (a staticmethod of a subclass): backward(ctx,
        *grad_outputs), one gradient per output (each of that output's shape), returns one
        gradient per argument of forward (of that argument's shape, or None)."""
        raise NotImplementedError("a Function defines backward(ctx, *grad_outputs)")

    @staticmethod
    def setup_context(ctx, inputs, output):
        """torch 2's split form: forward(*args) computes, setup_context saves."""

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the function on `args` and record it in the graph: calls forward (and
        setup_context), returns its output Tensor(s), whose gradient calls backward. The
        outputs have the shapes forward gives."""
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
