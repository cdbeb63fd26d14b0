"""One forward pass recorded for export: an observer of autograd's op hook keeps every op
(its inputs and result) and every module call (its arguments and output), in order.

Ops run under no_grad, so no graph is kept; the tracer's own list holds every value,
so no id is reused while it lives. An op that runs inside another op's compute is part
of that op and not recorded. Two traces at batch sizes B and B + 1 give each value's
shape as numbers and `Dim`s (a * batch + c): the dynamic batch dimension."""
from collections import namedtuple

import numpy as np

from ..autograd import TensorTuple, Value, add_observer, no_grad, remove_observer
from ..ops.index import MaskPass, SetItem, TakeRows


class OnnxExportError(ValueError):
    """A model that cannot be exported as it is; the message says why and where."""


class Node:
    __slots__ = ("index", "op", "inputs", "result", "scope")

    def __init__(self, index, op, inputs, scope):
        self.index, self.op, self.inputs, self.scope = index, op, inputs, scope
        self.result = None


class Scope:
    """One Module.__call__: its arguments, output and the nodes [first, last) it ran."""
    __slots__ = ("module", "args", "output", "parent", "first", "last", "handler", "training")

    def __init__(self, module, args, parent, first):
        self.module, self.args, self.parent, self.first = module, args, parent, first
        self.output = self.last = self.handler = None
        self.training = getattr(module, "training", None)   # the mode it ran in

    def contains(self, node):
        return self.first <= node.index < self.last


class Tracer:
    """The observer: begin/end per op, module_begin/module_end per module call."""

    def __init__(self):
        self.nodes, self.scopes, self._stack, self._depth = [], [], [], 0
        self.written = []   # tensors written in place (x[i] = v, add_...) while tracing

    def rebind(self, value, other):
        """An in-place write into value (autograd's hook): the references recorded so far
        mean other (value before the write; or value is a temporary whose object the
        written tensor takes over)."""
        self.written.append(value)
        swap = lambda v: other if v is value else v   # noqa: E731
        for node in self.nodes:
            node.inputs = tuple(swap(v) for v in node.inputs)
            node.result = swap(node.result)
        for scope in self.scopes:
            scope.args = _swap_in(scope.args, value, other)
            scope.output = _swap_in(scope.output, value, other)

    def begin(self, op, inputs, phase):
        if phase != "forward":
            return None
        self._depth += 1
        if self._depth > 1:   # an op built inside another op's compute: part of that op
            return ("inner", None)
        node = Node(len(self.nodes), op, tuple(inputs), self._stack[-1] if self._stack else None)
        self.nodes.append(node)
        return ("op", node)

    def end(self, token, result):
        if token is None:
            return
        self._depth -= 1
        if token[0] == "op":
            token[1].result = result

    def module_begin(self, module, args):
        scope = Scope(module, tuple(args), self._stack[-1] if self._stack else None,
                      len(self.nodes))
        self.scopes.append(scope)
        self._stack.append(scope)
        return scope

    def module_end(self, scope, output):
        scope.output, scope.last = output, len(self.nodes)
        while self._stack and self._stack.pop() is not scope:
            pass


def _swap_in(obj, value, other):
    """obj (nested tuples/lists of values) with value replaced by other."""
    if obj is value:
        return other
    if isinstance(obj, (tuple, list)):
        return type(obj)(_swap_in(v, value, other) for v in obj)
    return obj


def check_writes(tracer, inputs, leaves):
    """Refuse a model that writes in place into an input, a parameter or a buffer: the
    graph would read a frozen copy of it (clone first: x = x.clone())."""
    known = {id(x) for x in inputs} | set(leaves)
    for v in tracer.written:
        if id(v) in known:
            what = "an input" if any(v is x for x in inputs) else "a parameter or buffer"
            raise OnnxExportError(f"the model writes in place into {what} (shape "
                                  f"{tuple(v.shape)}) while it runs: ONNX export needs it "
                                  "unchanged; write into a copy (x = x.clone()) instead")


def run_traced(model, inputs):
    """(tracer, output) of model(*inputs) under no_grad."""
    tracer = Tracer()
    add_observer(tracer)
    try:
        with no_grad():
            output = model(*inputs)
    finally:
        remove_observer(tracer)
    return tracer, output


# shapes with a symbolic batch -----------------------------------------------------------
class Dim(namedtuple("Dim", "a c")):
    """A dimension a * batch + c."""

    def value(self, batch):
        return self.a * batch + self.c

    def __str__(self):
        s = "batch" if self.a == 1 else f"batch*{self.a}"
        return s + (f"+{self.c}" if self.c > 0 else f"{self.c}" if self.c else "")


def shape_of(v):
    """A Value's shape; a tuple's: a tuple of shapes."""
    if isinstance(v, TensorTuple):
        return tuple(tuple(x.shape) for x in v.cached_data)
    return tuple(v.shape)


def _merge(s1, s2, batch, where):
    if len(s1) != len(s2):
        raise OnnxExportError(f"{where} has rank {len(s1)} at batch size {batch} but "
                              f"{len(s2)} at {batch + 1}: export it with dynamic_batch=False")
    return tuple(d1 if d1 == d2 else Dim(d2 - d1, d1 - (d2 - d1) * batch) for d1, d2 in zip(s1, s2))


def _scalar_attrs(op):
    return {k: v for k, v in vars(op).items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def symbolic_shapes(t1, t2, batch, where, known):
    """{id(value of t1): shape with Dims} from traces at batch sizes batch and batch + 1
    (the second on the samples in reverse order, plus one). A tuple value maps to a tuple
    of shapes. Ops must match one for one, with the same scalars (a mean over the batch
    bakes 1/batch into the graph: refused). Constants the ops read (other than `known`
    ids: parameters, buffers, inputs) must not change with the data: a tensor computed
    outside ops from the input (a comparison, a round trip through numpy) would be
    frozen into the graph."""
    made = {id(n.result) for n in t1.nodes}
    if len(t1.nodes) != len(t2.nodes):
        raise OnnxExportError(f"the model ran {len(t1.nodes)} ops at batch size {batch} but "
                              f"{len(t2.nodes)} at {batch + 1}: its graph depends on the batch "
                              "size; export it with dynamic_batch=False")
    shapes = {}
    for n1, n2 in zip(t1.nodes, t2.nodes):
        name = type(n1.op).__name__
        if type(n1.op) is not type(n2.op) or len(n1.inputs) != len(n2.inputs):
            raise OnnxExportError(f"op {n1.index} is {name} at batch size {batch} but "
                                  f"{type(n2.op).__name__} at {batch + 1}: export it with "
                                  "dynamic_batch=False")
        a1, a2 = _scalar_attrs(n1.op), _scalar_attrs(n2.op)
        for k in a1:
            if k in a2 and a1[k] != a2[k] and not (a1[k] != a1[k] and a2[k] != a2[k]):
                raise OnnxExportError(
                    f"op {name} ({where(n1)}) has {k}={a1[k]} at batch size {batch} but "
                    f"{a2[k]} at {batch + 1}: a number that depends on the batch size (a mean "
                    "over the batch?) cannot be exported with a dynamic batch; use "
                    "dynamic_batch=False")
        if isinstance(n1.op, MaskPass):
            _same_data(n1.op.mask.numpy(), n2.op.mask.numpy(), f"the mask of op {name} "
                       f"({where(n1)})")
        for a1, a2 in zip(_index_arrays(n1), _index_arrays(n2)):
            _same_data(a1, a2, f"the index of op {name} ({where(n1)})")
        for v1, v2 in zip(n1.inputs + (n1.result,), n2.inputs + (n2.result,)):
            if id(v1) in shapes:
                continue
            if id(v1) not in made and id(v1) not in known and not isinstance(v1, TensorTuple):
                _same_data(v1.numpy(), v2.numpy(), f"a constant read by op {name} ({where(n1)})")
            s1, s2 = shape_of(v1), shape_of(v2)
            what = f"a value of op {name} ({where(n1)})"
            if isinstance(v1, TensorTuple):
                if len(s1) != len(s2):
                    raise OnnxExportError(f"{what} changes length with the batch size")
                shapes[id(v1)] = tuple(_merge(a, b, batch, what) for a, b in zip(s1, s2))
            else:
                shapes[id(v1)] = _merge(s1, s2, batch, what)
    return shapes


def _index_arrays(node):
    """The index arrays an indexing op holds, baked into the graph as constants (not a
    row gather's indices when an integer input of its module holds them: table[ids])."""
    op = node.op
    if isinstance(op, TakeRows):
        return [] if _held_by_an_input(node, op.idx) else [op.idx]
    if isinstance(op, SetItem):
        return [i for i in op.items if isinstance(i, np.ndarray)]
    return []


def _held_by_an_input(node, indices):
    scope = node.scope
    while scope is not None:
        for arg in flatten_values(scope.args):
            if arg.dtype.kind in "iu" and tuple(arg.shape) == indices.shape and \
                    np.array_equal(arg.numpy(), indices):
                return True
        scope = scope.parent
    return False


def _same_data(a, b, what):
    if a.shape != b.shape:
        if a.ndim != b.ndim or any(m > n for m, n in zip(a.shape, b.shape)):
            return
        b = b[tuple(slice(0, m) for m in a.shape)]
    if a.dtype.kind == "f":
        same = (a == b) | ((a != a) & (b != b))
    else:
        same = a == b
    if not np.all(same):
        raise OnnxExportError(
            f"{what} changes with the input: a tensor computed from the data outside ops (a "
            "comparison such as x > 0, a .numpy() round trip, random numbers) would be frozen "
            "into the graph as a constant. Build it from ops, or leave it out of the model")


def is_symbolic(shape):
    return any(isinstance(d, Dim) for d in shape)


def flatten_values(obj):
    """The Values inside nested tuples/lists (None skipped), in order."""
    if obj is None:
        return []
    if isinstance(obj, Value) and not isinstance(obj, TensorTuple):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [v for x in obj for v in flatten_values(x)]
    return []
