"""The graph being built: value names, nodes, initializers, constants and the shape
tensors a dynamic batch needs. Op and module mappings (ops.py, modules.py) talk to it."""
import numpy as np

from ..autograd import TensorTuple
from .trace import Dim, OnnxExportError, is_symbolic

INT64_MAX, INT64_MIN = 2 ** 63 - 1, -2 ** 63


class Graph:
    def __init__(self, onnx, opset, shapes, leaves, batch_source=None):
        """shapes: {id(value): shape with Dims}; leaves: {id(tensor): initializer name} for
        parameters and buffers; batch_source: (graph input name, axis, traced batch)."""
        self.onnx, self.opset, self.shapes = onnx, opset, shapes
        self.leaf_names, self.batch_source = leaves, batch_source
        self.nodes, self.initializers = [], []
        self.names = {}        # id(value) -> ONNX name (a tuple of names for a TensorTuple)
        self.keep = []         # values named here, alive while their ids are used
        self.used = set()
        self.produced = set()  # names that some node outputs
        self._cache = {}
        self.scope = ""        # the module path of the op being mapped (for names)
        self.module = None     # the module it ran in (for messages)
        self.module_names = {}  # id(module) -> its path in the model's tree
        self.trace = None       # the Tracer: its nodes, scopes
        self.producers = {}     # id(value) -> the trace node that made it
        self.input_ids = set()  # ids of the graph inputs' tensors

    # names --------------------------------------------------------------------------------
    def fresh(self, hint):
        hint = hint or "v"
        name, k = hint, 0
        while name in self.used:
            k += 1
            name = f"{hint}_{k}"
        self.used.add(name)
        return name

    def bind(self, value, name):
        self.names[id(value)] = name
        self.keep.append(value)

    def name(self, value):
        """The ONNX name of a traced value: bound already, or a leaf made an initializer
        (a parameter or buffer under its module-tree name, any other tensor a constant)."""
        key = id(value)
        if key in self.names:
            return self.names[key]
        if isinstance(value, TensorTuple):
            raise OnnxExportError("a constant tuple of tensors feeds an op; only tensors can be "
                                  "exported as constants")
        data = value.numpy()
        if key in self.leaf_names:
            name = self.initializer(data, self.leaf_names[key], exact=True)
        else:
            name = self.constant(data, self.shapes.get(key, data.shape), "const")
        self.bind(value, name)
        return name

    def shape(self, value):
        """A value's shape, with Dims where it follows the batch."""
        s = self.shapes.get(id(value))
        return s if s is not None else (tuple(value.shape) if not isinstance(value, TensorTuple)
                                         else tuple(tuple(x.shape) for x in value.cached_data))

    # nodes and initializers ---------------------------------------------------------------
    def node(self, op_type, inputs, outputs=1, hint=None, names=None, **attrs):
        """Add a node; returns its output name (or a list of names for outputs > 1).
        names: the output names, already reserved (graph outputs)."""
        base = f"{self.scope}/{hint or op_type}" if self.scope else (hint or op_type)
        outs = names or [self.fresh(base if outputs == 1 else f"{base}.{i}")
                         for i in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs,
                                                     name=self.fresh(f"node:{base}"), **attrs))
        self.produced.update(outs)
        return outs[0] if outputs == 1 else outs

    def initializer(self, array, hint, exact=False):
        array = np.ascontiguousarray(array)
        name = hint if exact and hint not in self.used else self.fresh(hint)
        self.used.add(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def derived(self, source, name, make):
        """An initializer computed from a parameter (make() -> array), made once per source
        tensor and name: a module called twice shares it."""
        key = ("derived", id(source), name)
        if key not in self._cache:
            self.keep.append(source)
            self._cache[key] = self.initializer(make(), name)
        return self._cache[key]

    def const(self, array, hint="const"):
        """A constant (cached by value for small ones: scalars, axes, shapes)."""
        array = np.asarray(array)
        key = None
        if array.size <= 16:
            key = ("const", array.dtype.str, array.shape, array.tobytes())
            if key in self._cache:
                return self._cache[key]
        prefix = f"{self.scope}.{hint}" if self.scope and hint == "const" else hint
        name = self.initializer(array, prefix)
        if key is not None:
            self._cache[key] = name
        return name

    def ints(self, values):
        return self.const(np.asarray(list(values), dtype=np.int64), "ints")

    def scalar(self, value, dtype):
        return self.const(np.asarray(value, dtype=dtype), "scalar")

    def constant(self, array, shape, hint="const"):
        """A constant of a traced shape: where the shape follows the batch, the constant
        must be the same along those axes; it is stored once and expanded at run time."""
        array = np.asarray(array)
        if not is_symbolic(shape):
            return self.const(array, hint)
        axes = tuple(i for i, d in enumerate(shape) if isinstance(d, Dim))
        first = array[tuple(slice(0, 1) if i in axes else slice(None) for i in range(array.ndim))]
        same = (array == first) | ((array != array) & (first != first))
        if not np.all(same):
            raise OnnxExportError(
                f"a constant of shape {array.shape} ({self.where()}) depends on the batch size "
                "and differs along it: compute it from the input with ops, or export with "
                "dynamic_batch=False")
        return self.node("Expand", [self.const(first, hint), self.shape_tensor(shape)],
                         hint="expand_const")

    def enter(self, scope):
        """Map what ran in this module scope next (names and messages follow it)."""
        self.module = None if scope is None else scope.module
        self.scope = "" if scope is None else self.module_names.get(id(self.module), "")

    def where(self):
        if self.module is None:
            return "outside any module"
        kind = type(self.module).__name__
        return f"in module {self.scope!r} ({kind})" if self.scope else f"in the model ({kind})"

    # dtypes ------------------------------------------------------------------------------
    def elem_type(self, dtype):
        return self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def cast(self, name, src, dst):
        if np.dtype(src) == np.dtype(dst):
            return name
        return self.node("Cast", [name], to=self.elem_type(dst))

    def input_as(self, value, dtype):
        return self.cast(self.name(value), value.dtype, dtype)

    # shapes --------------------------------------------------------------------------------
    def batch(self):
        """The run-time batch size, a 1-d int64 tensor of one element."""
        if "batch" not in self._cache:
            if self.batch_source is None:
                raise OnnxExportError("a shape depends on the batch but no input has a batch axis")
            name, axis, _ = self.batch_source
            self._cache["batch"] = self.node("Shape", [name], start=axis, end=axis + 1,
                                             hint="batch_size")
        return self._cache["batch"]

    def shape_tensor(self, shape):
        """A 1-d int64 tensor holding shape at run time (Dims computed from the batch)."""
        if not is_symbolic(shape):
            return self.ints(shape)
        key = ("shape", tuple(shape))
        if key in self._cache:
            return self._cache[key]
        pieces, run = [], []
        for d in shape:
            if not isinstance(d, Dim):
                run.append(d)
                continue
            if run:
                pieces.append(self.ints(run))
                run = []
            b = self.batch()
            if d.a != 1:
                b = self.node("Mul", [b, self.ints([d.a])], hint="dim")
            if d.c:
                b = self.node("Add", [b, self.ints([d.c])], hint="dim")
            pieces.append(b)
        if run:
            pieces.append(self.ints(run))
        out = pieces[0] if len(pieces) == 1 else self.node("Concat", pieces, axis=0, hint="shape")
        self._cache[key] = out
        return out

    def reshape_target(self, shape):
        """Reshape's shape input: constants with -1 for the one batch dimension, else the
        shape computed at run time."""
        sym = [i for i, d in enumerate(shape) if isinstance(d, Dim)]
        if len(sym) == 1:
            return self.ints([-1 if i == sym[0] else d for i, d in enumerate(shape)])
        return self.shape_tensor(shape)

    # reductions: axes became an input in opset 13 (ReduceSum) and 18 (the others) ----------
    def reduce(self, op_type, x, axes, keepdims, hint=None):
        axes = None if axes is None else [int(a) for a in axes]
        as_input = op_type == "ReduceSum" or self.opset >= 18
        if as_input:
            inputs = [x] if axes is None else [x, self.ints(axes)]
            return self.node(op_type, inputs, keepdims=int(keepdims), hint=hint)
        return self.node(op_type, [x], axes=axes, keepdims=int(keepdims), hint=hint)

    def squeeze(self, x, axes):
        return self.node("Squeeze", [x, self.ints(axes)])

    def unsqueeze(self, x, axes):
        return self.node("Unsqueeze", [x, self.ints(axes)])
