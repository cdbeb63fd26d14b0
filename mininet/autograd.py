"""Tensor and reverse-mode autodiff (needle's design: an Op computes on
NDArrays and gives its gradient as Tensors built from other ops)."""
import collections
import contextlib
import numbers
import threading

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
_observers = []


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
        tokens = _begin(op, inputs, "forward") if _observers else None
        data = op.compute(*[x.cached_data for x in inputs])
        if grad_enabled() and any(x.requires_grad for x in inputs):
            value._init(op, tuple(inputs), data, True)
        else:  # no graph to keep: a constant
            value._init(None, (), data, False)
        if cls is Tensor:
            value.grad = None
        if tokens is not None:
            _end(tokens, value)
        return value


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

    # autodiff ------------------------------------------------------------------
    def backward(self, out_grad=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into each leaf's .grad. retain_graph defaults to
        create_graph (as PyTorch): a recorded gradient can refer to forward nodes (tanh's
        is g * (1 - y^2)), so their graph must outlive this pass."""
        if retain_graph is None:
            retain_graph = create_graph
        if not self.requires_grad:
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
        return _ops().add(self, -other)

    def __rsub__(self, other):
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

    def __neg__(self):
        return _ops().negate(self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __getitem__(self, idx):
        return _ops().get_item(self, idx)

    def _compare(self, other, name):
        b = other.cached_data if isinstance(other, Tensor) else other
        return Tensor.make_const(getattr(self.cached_data, name)(b))

    def __eq__(self, other): return self._compare(other, "__eq__")
    def __ne__(self, other): return self._compare(other, "__ne__")
    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    __hash__ = object.__hash__

    # reductions: dim=/axis=/axes= and keepdim=/keepdims= (one helper, _reduce_args) ----
    def sum(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        return _ops().summation(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        return _ops().mean(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def max(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        """x.max(): the maximum; x.max(dim): (values, indices) as torch; x.max(axis=/axes=):
        the values alone (numpy's and needle's meaning); x.max(other): the elementwise one."""
        if isinstance(dim, Tensor):
            return _ops().maximum(self, dim)
        return self._extreme(dim, axis, axes, keepdim, keepdims, "max")

    def min(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        if isinstance(dim, Tensor):
            return -_ops().maximum(-self, -dim)
        return self._extreme(dim, axis, axes, keepdim, keepdims, "min")

    def _extreme(self, dim, axis, axes, keepdim, keepdims, name):
        if dim is None or not isinstance(dim, numbers.Integral):
            ax, keep = _reduce_args(self, dim, axis, axes, keepdim, keepdims)
            if name == "max":
                return _ops().max(self, ax, keep)
            return -_ops().max(-self, ax, keep)
        idx = getattr(self, "arg" + name)(dim, keepdim=True)
        values = _ops().gather(self, dim, idx)
        if not (keepdim or keepdims):
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return MinMax(values, idx)

    def amax(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        """The maxima over dim (values alone; tied maxima share the gradient, as torch)."""
        return _ops().max(self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

    def amin(self, dim=None, keepdim=False, *, axis=None, axes=None, keepdims=None):
        return -_ops().max(-self, *_reduce_args(self, dim, axis, axes, keepdim, keepdims))

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
        ax, keep = _reduce_args(self, dim, axis, None, keepdim, keepdims)
        return Tensor(self.numpy().astype(bool).any(ax, keepdims=keep), device=self.device)

    def all(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        ax, keep = _reduce_args(self, dim, axis, None, keepdim, keepdims)
        return Tensor(self.numpy().astype(bool).all(ax, keepdims=keep), device=self.device)

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

    # in place: writes into this tensor's memory (so p.data.add_ changes p) ------------------
    def _write(self, value, what):
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
        self.cached_data[()] = value
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
    return isinstance(a, str) and a in ("float32", "float64", "int64")


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


def grad(output, inputs, out_grad=None, retain_graph=None):
    """The gradients of output with respect to `inputs` (as torch.autograd.grad; leaves
    or intermediate tensors): returned as a list (None where output does not depend on
    one), without touching any .grad or running hooks, and without going below the
    inputs. output may be a list of tensors with out_grad a list of their seeds: the
    seeds are then constants of this pass (it never differentiates through them) while
    a graph built from them keeps them, so a vector-Jacobian product taken this way has
    a second derivative. Builds a graph when grad is enabled (and then keeps output's
    graph, which that gradient refers to, unless retain_graph says otherwise)."""
    if retain_graph is None:
        retain_graph = grad_enabled()
    outputs = list(output) if isinstance(output, (list, tuple)) else [output]
    seeds = list(out_grad) if isinstance(out_grad, (list, tuple)) else [out_grad]
    if len(seeds) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(seeds)} out_grads")
    seeds = [_ones_like(o) if s is None else s for o, s in zip(outputs, seeds)]
    captured = {id(x): None for x in inputs}
    compute_gradient_of_variables(outputs, seeds, retain_graph, captured)
    return [captured[id(x)] for x in inputs]


def _ones_like(x):
    return Tensor(NDArray.make(x.shape, device=x.device, dtype=x.dtype).fill(1.0))


def compute_gradient_of_variables(output, out_grad, retain_graph=False, captured=None):
    """Reverse-mode pass from output (a tensor, or a list of them with a list of seeds).
    captured: {id(leaf): None} to return those leaves' gradients in it instead of
    accumulating every leaf's .grad."""
    outputs, seeds = (output, out_grad) if isinstance(output, list) else ([output], [out_grad])
    grads = {}
    for o, g in zip(outputs, seeds):
        grads.setdefault(id(o), []).append(g)
    order = find_topo_sort(outputs, stop=captured)
    for node in reversed(order):
        parts = grads.pop(id(node), None)
        if parts is None:
            continue
        g = _sum_grads(parts, node)
        if captured is not None and id(node) in captured:
            captured[id(node)] = g if grad_enabled() else g.detach()
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
        else:
            if _observers:
                tokens = _begin(node.op, node.inputs, "backward")
                in_grads = node.op.gradient_as_tuple(g, node)
                _end(tokens, in_grads)
            else:
                in_grads = node.op.gradient_as_tuple(g, node)
            for inp, ig in zip(node.inputs, in_grads):
                if inp.requires_grad and ig is not None:
                    grads.setdefault(id(inp), []).append(ig)
        if not retain_graph:
            node.inputs = ()
            node.op = None
            node.requires_grad = False  # its graph is spent

