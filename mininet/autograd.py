"""Tensor and reverse-mode autodiff (needle's design: an Op computes on
NDArrays and gives its gradient as Tensors built from other ops)."""
import contextlib
import threading

from .backend import get_device
from .ndarray import NDArray, as_dtype

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
        data = op.compute(*[x.cached_data for x in inputs])
        if grad_enabled() and any(x.requires_grad for x in inputs):
            value._init(op, tuple(inputs), data, True)
        else:  # no graph to keep: a constant
            value._init(None, (), data, False)
        if cls is Tensor:
            value.grad = None
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

    def to(self, device):
        return Tensor(self.cached_data.to(device), requires_grad=self.requires_grad)

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

    def sum(self, axes=None, keepdims=False):
        return _ops().summation(self, axes, keepdims)

    def mean(self, axes=None, keepdims=False):
        return _ops().mean(self, axes, keepdims)

    def max(self, axes=None, keepdims=False):
        return _ops().max(self, axes, keepdims)

    def argmax(self, axis=None):
        return Tensor.make_const(self.cached_data.argmax(axis))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _ops().reshape(self, shape)

    view = reshape

    def transpose(self, axes=None):
        return _ops().transpose(self, axes)

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _ops().permute(self, axes)

    @property
    def T(self):
        return _ops().permute(self, tuple(reversed(range(self.ndim))))

    def broadcast_to(self, shape):
        return _ops().broadcast_to(self, shape)

    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def relu(self): return _ops().relu(self)
    def tanh(self): return _ops().tanh(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def sqrt(self): return _ops().sqrt(self)
    def log1p(self): return _ops().log1p(self)
    def expm1(self): return _ops().expm1(self)
    def abs(self): return _ops().abs(self)
    __abs__ = abs

    def clip(self, min=None, max=None):
        return _ops().clip(self, min, max)

    clamp = clip


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
            for inp, ig in zip(node.inputs, node.op.gradient_as_tuple(g, node)):
                if inp.requires_grad and ig is not None:
                    grads.setdefault(id(inp), []).append(ig)
        if not retain_graph:
            node.inputs = ()
            node.op = None
            node.requires_grad = False  # its graph is spent

