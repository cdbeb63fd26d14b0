"""Each op class of mininet.ops and the ONNX nodes it becomes: map_op(graph, node) -> the
name of its result (a tuple of names for an op with a tuple result)."""
from typing import Any, Callable

import numpy as np

from ..ndarray import _expand_index, _normalize_axes
from ..ops import index, math, nn, pool, reduce, rnn, shape
from ..ops.conv import Conv
from ..ops.conv_fused import ConvReLU
from .graph import INT64_MAX, INT64_MIN
from .trace import Dim, OnnxExportError

MAPPINGS: dict[type, Callable[..., Any]] = {}   # Op class -> its ONNX emitter


def maps(*op_classes):
    def register(fn):
        for cls in op_classes:
            MAPPINGS[cls] = fn
        return fn
    return register


def result_dtype(node):
    return node.result.dtype


def inputs_as_result(g, node):
    """The inputs' names, each cast to the result's dtype (ONNX has no type promotion)."""
    dt = result_dtype(node)
    return [g.input_as(x, dt) for x in node.inputs]


# elementwise -----------------------------------------------------------------------------
def _elementwise(op_type):
    def fn(g, node):
        return g.node(op_type, inputs_as_result(g, node))
    return fn


for _cls, _type in ((math.EWiseAdd, "Add"), (math.EWiseMul, "Mul"), (math.EWiseDiv, "Div"),
                    (math.EWisePow, "Pow"), (math.Negate, "Neg"), (math.Exp, "Exp"),
                    (math.Log, "Log"), (math.Abs, "Abs"), (math.Sqrt, "Sqrt"),
                    (math.Tanh, "Tanh"), (math.Sigmoid, "Sigmoid"), (math.ReLU, "Relu"),
                    (math.Maximum, "Max"), (math.MatMul, "MatMul"), (index.Erf, "Erf")):
    MAPPINGS[_cls] = _elementwise(_type)


def _with_scalar(g, node, op_type, scalar):
    dt = result_dtype(node)
    return g.node(op_type, [g.input_as(node.inputs[0], dt), g.scalar(scalar, dt)])


@maps(math.AddScalar)
def add_scalar(g, node):
    return _with_scalar(g, node, "Add", node.op.scalar)


@maps(math.MulScalar)
def mul_scalar(g, node):
    return _with_scalar(g, node, "Mul", node.op.scalar)


@maps(math.DivScalar)
def div_scalar(g, node):   # computed as a * (1 / s), as the op does
    return _with_scalar(g, node, "Mul", math._reciprocal(node.op.scalar))


@maps(math.PowerScalar)
def power_scalar(g, node):
    x = g.input_as(node.inputs[0], result_dtype(node))
    if node.op.scalar == 2:   # the op squares: x * x, as here
        return g.node("Mul", [x, x])
    return g.node("Pow", [x, g.scalar(node.op.scalar, result_dtype(node))])


@maps(math.Gelu)
def gelu(g, node):
    """x * 0.5 * (1 + Erf(x / sqrt(2))): ONNX's Gelu needs opset 20."""
    dt = result_dtype(node)
    x = g.input_as(node.inputs[0], dt)
    e = g.node("Erf", [g.node("Mul", [x, g.scalar(0.7071067811865476, dt)])])
    return g.node("Mul", [g.node("Mul", [x, g.scalar(0.5, dt)]),
                          g.node("Add", [e, g.scalar(1, dt)])])


@maps(math.GeluTanh)
def gelu_tanh(g, node):
    """x * 0.5 * (1 + Tanh(c (x + 0.044715 x^3))), c = sqrt(2 / pi)."""
    dt = result_dtype(node)
    x = g.input_as(node.inputs[0], dt)
    cube = g.node("Mul", [g.node("Mul", [x, x]), x])
    inner = g.node("Add", [x, g.node("Mul", [cube, g.scalar(0.044715, dt)])])
    t = g.node("Tanh", [g.node("Mul", [inner, g.scalar(0.7978845608028654, dt)])])
    return g.node("Mul", [g.node("Mul", [x, g.scalar(0.5, dt)]),
                          g.node("Add", [t, g.scalar(1, dt)])])


@maps(math.LeakyReLU)
def leaky_relu(g, node):
    return g.node("LeakyRelu", [g.input_as(node.inputs[0], result_dtype(node))],
                  alpha=node.op.slope)


@maps(math.ELU)
def elu(g, node):
    return g.node("Elu", [g.input_as(node.inputs[0], result_dtype(node))], alpha=node.op.alpha)


@maps(math.Softplus)
def softplus(g, node):
    """ONNX's Softplus has no threshold: Where(x > threshold, x, Softplus(x))."""
    dt = result_dtype(node)
    x = g.input_as(node.inputs[0], dt)
    above = g.node("Greater", [x, g.scalar(node.op.threshold, dt)])
    return g.node("Where", [above, x, g.node("Softplus", [x])])


@maps(math.SiLU)
def silu(g, node):
    x = g.input_as(node.inputs[0], result_dtype(node))
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


@maps(math.Log1p)
def log1p(g, node):
    x = g.input_as(node.inputs[0], result_dtype(node))
    return g.node("Log", [g.node("Add", [x, g.scalar(1, result_dtype(node))])])


@maps(math.Expm1)
def expm1(g, node):
    x = g.input_as(node.inputs[0], result_dtype(node))
    return g.node("Sub", [g.node("Exp", [x]), g.scalar(1, result_dtype(node))])


@maps(math.Clip)
def clip(g, node):
    dt = result_dtype(node)
    lo, hi = node.op.lo, node.op.hi
    return g.node("Clip", [g.input_as(node.inputs[0], dt),
                           "" if lo is None else g.scalar(lo, dt),
                           "" if hi is None else g.scalar(hi, dt)])


@maps(math.Linear)
def linear(g, node):
    """x @ W (+ b), W (in, out): Gemm for a matrix x, else MatMul then Add."""
    x, w = g.name(node.inputs[0]), g.name(node.inputs[1])
    b = [g.name(node.inputs[2])] if len(node.inputs) == 3 else []
    if node.inputs[0].ndim == 2:
        return g.node("Gemm", [x, w] + b, hint="Linear")
    y = g.node("MatMul", [x, w], hint="Linear")
    return g.node("Add", [y, b[0]], hint="Linear") if b else y


@maps(index.Cast)
def cast(g, node):
    return g.node("Cast", [g.name(node.inputs[0])], to=g.elem_type(node.op.dtype))


@maps(index.Clone, index.ToDevice)
def identity(g, node):
    return g.node("Identity", [g.name(node.inputs[0])])


@maps(index.MaskPass)
def mask_pass(g, node):
    """x where the mask is nonzero, else 0 (Where: inf and NaN off the mask stay out)."""
    mask = node.op.mask.numpy() != 0
    cond = g.constant(mask, g.shape(node.result), "mask")
    x = g.name(node.inputs[0])
    return g.node("Where", [cond, x, g.scalar(0, result_dtype(node))])


# shapes -----------------------------------------------------------------------------------
@maps(shape.Reshape)
def reshape(g, node):
    return g.node("Reshape", [g.name(node.inputs[0]), g.reshape_target(g.shape(node.result))],
                  allowzero=1 if 0 in g.shape(node.result) else None)


@maps(shape.Permute)
def permute(g, node):
    nd = node.inputs[0].ndim
    return g.node("Transpose", [g.name(node.inputs[0])], perm=[a % nd for a in node.op.axes])


@maps(shape.BroadcastTo)
def broadcast_to(g, node):
    """Expand: where the input already has the target's batch dimension, 1 suffices."""
    src, dst = g.shape(node.inputs[0]), g.shape(node.result)
    lead = len(dst) - len(src)
    target = tuple(1 if isinstance(d, Dim) and i >= lead and src[i - lead] == d else d
                   for i, d in enumerate(dst))
    return g.node("Expand", [g.name(node.inputs[0]), g.shape_tensor(target)])


@maps(shape.GetItem)
def get_item(g, node):
    """Basic indexing: one Slice, Squeeze for integer indices, Unsqueeze for None."""
    x = node.inputs[0]
    items = _expand_index(node.op.index, x.ndim)
    xshape = g.shape(x)
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    dim = out = 0
    for item in items:
        if item is None:
            unsqueeze.append(out)
            out += 1
            continue
        n = xshape[dim]
        if isinstance(item, slice):
            s = _slice_bounds(item, n)
            if s is not None:
                starts.append(s[0]), ends.append(s[1]), axes.append(dim), steps.append(s[2])
            out += 1
        else:
            i = int(item)
            if not isinstance(n, Dim):
                i %= n
            starts.append(i), ends.append(INT64_MAX if i == -1 else i + 1), axes.append(dim)
            steps.append(1)
            squeeze.append(dim)
        dim += 1
    y = g.name(x)
    if axes:
        y = g.node("Slice", [y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    if squeeze:
        y = g.squeeze(y, squeeze)
    if unsqueeze:
        y = g.unsqueeze(y, unsqueeze)
    return y if y != g.name(x) else g.node("Identity", [y])


def _slice_bounds(item, n):
    """(start, end, step) for ONNX's Slice, or None for the whole axis. On the batch axis
    the slice's own numbers go as they are: ONNX reads negative ones from the end and
    clamps as Python does."""
    if isinstance(n, Dim):
        step = 1 if item.step is None else item.step
        start = item.start if item.start is not None else (0 if step > 0 else -1)
        stop = item.stop if item.stop is not None else (INT64_MAX if step > 0 else INT64_MIN)
        return None if (start, stop, step) == (0, INT64_MAX, 1) else (start, stop, step)
    start, stop, step = item.indices(n)
    if (start, stop, step) == (0, n, 1):
        return None
    if step < 0 and stop < 0:   # through index 0: ONNX reads -1 as the last element
        stop = INT64_MIN
    return start, stop, step


@maps(shape.ScatterItem)
def scatter_item(g, node):
    """Zero padding (ops.pad): the index is a slice of step 1 on every axis."""
    idx = _expand_index(node.op.index, len(node.op.shape))
    src = node.inputs[0].shape
    if not all(isinstance(s, slice) and s.step in (None, 1) for s in idx):
        raise _unmapped(node, g, "only its zero-padding form (ops.pad) exports")
    before = [s.indices(n)[0] for s, n in zip(idx, node.op.shape)]
    after = [n - b - m for n, b, m in zip(node.op.shape, before, src)]
    return g.node("Pad", [g.name(node.inputs[0]), g.ints(before + after)], mode="constant")


@maps(shape.Stack)
def stack(g, node):
    axis = node.op.axis % (node.inputs[0].ndim + 1)
    return g.node("Concat", [g.unsqueeze(g.name(x), [axis]) for x in node.inputs], axis=axis,
                  hint="Stack")


@maps(shape.Concatenate)
def concatenate(g, node):
    axis = node.op.axis % node.inputs[0].ndim
    return g.node("Concat", inputs_as_result(g, node), axis=axis)


@maps(shape.Split)
def split(g, node):
    x = node.inputs[0]
    axis = node.op.axis % x.ndim
    n = g.shape(x)[axis]
    if isinstance(n, Dim):
        raise OnnxExportError(f"split along the batch axis ({g.where()}) gives a number of "
                              "tensors that depends on the batch: use dynamic_batch=False")
    if n == 1:
        return (g.squeeze(g.name(x), [axis]),)
    parts = g.node("Split", [g.name(x), g.ints([1] * n)], outputs=n, axis=axis)
    return tuple(g.squeeze(p, [axis]) for p in parts)


@maps(shape.MakeTuple)
def make_tuple(g, node):
    return tuple(g.name(x) for x in node.inputs)


@maps(shape.TupleGetItem)
def tuple_get_item(g, node):
    return g.name(node.inputs[0])[node.op.index]


# reductions and softmax -------------------------------------------------------------------
def _reduce(op_type):
    def fn(g, node):
        x = node.inputs[0]
        axes = _normalize_axes(node.op.axes, x.ndim)
        if x.ndim and not axes:   # nothing to reduce
            return g.node("Identity", [g.name(x)])
        return g.reduce(op_type, g.input_as(x, result_dtype(node)), axes if x.ndim else None,
                        node.op.keepdims)
    return fn


MAPPINGS[reduce.Summation] = _reduce("ReduceSum")
MAPPINGS[reduce.Max] = _reduce("ReduceMax")
MAPPINGS[reduce.LogSumExp] = _reduce("ReduceLogSumExp")
MAPPINGS[reduce.Norm2] = _reduce("ReduceL2")


@maps(index.Prod)
def prod(g, node):
    x = node.inputs[0]
    axes = None if node.op.axis is None else [node.op.axis]
    return g.reduce("ReduceProd", g.input_as(x, result_dtype(node)), axes, node.op.keepdims)


@maps(index.Cumsum)
def cumsum(g, node):
    x = g.input_as(node.inputs[0], result_dtype(node))
    if node.op.axis is None:
        return g.node("Identity", [x])
    return g.node("CumSum", [x, g.const(np.int64(node.op.axis), "axis")])


@maps(reduce.Softmax)
def softmax(g, node):
    return g.node("Softmax", [g.name(node.inputs[0])], axis=node.op.axis)


@maps(reduce.LogSoftmax)
def logsoftmax(g, node):
    return g.node("LogSoftmax", [g.name(node.inputs[0])], axis=node.op.axis)


# gathers ------------------------------------------------------------------------------------
def index_source(g, node, indices):
    """The name of an integer tensor holding `indices`: a traced input of the module the op
    ran in (or of one around it) when one holds exactly these values, else a constant."""
    scope = node.scope
    while scope is not None:
        for arg in _values(scope.args):
            if id(arg) in g.names and arg.dtype.kind in "iu" and tuple(arg.shape) == indices.shape \
                    and np.array_equal(arg.numpy(), indices):
                return g.cast(g.names[id(arg)], arg.dtype, np.int64), g.shape(arg)
        scope = scope.parent
    return None, None


def _values(args):
    from ..autograd import Tensor
    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (tuple, list)):
            yield from _values(a)


@maps(nn.EmbeddingLookup)
def embedding(g, node):
    """Gather rows of the table: by the traced index input when it is one, else a constant."""
    idx = node.op.idx.numpy().reshape(node.op.shape)
    name, _ = index_source(g, node, idx)
    if name is None:
        name = g.constant(idx, g.shape(node.result)[:-1], "indices")
    return g.node("Gather", [g.name(node.inputs[0]), name], axis=0, hint="Embedding")


@maps(index.Take)
def take(g, node):
    """index_select (one index array on one axis) as Gather; gather (an open grid with the
    index at one axis) as GatherElements."""
    x, index_ = node.inputs[0], node.op.index
    arrays = [i for i, a in enumerate(index_) if isinstance(a, np.ndarray)]
    if len(arrays) == 1 and all(a == slice(None) for i, a in enumerate(index_) if i != arrays[0]):
        axis = arrays[0]
        return g.node("Gather", [g.name(x), g.const(index_[axis].astype(np.int64), "index")],
                      axis=axis)
    if len(index_) == x.ndim and all(isinstance(a, np.ndarray) for a in index_):
        full = np.broadcast_arrays(*index_)
        axes = [i for i in range(x.ndim) if not _is_grid(full[i], i)]
        if len(axes) <= 1:
            axis = axes[0] if axes else 0
            idx = g.constant(full[axis].astype(np.int64), g.shape(node.result), "index")
            return g.node("GatherElements", [g.name(x), idx], axis=axis)
    raise _unmapped(node, g, "only index_select and gather forms export")


@maps(index.TakeRows)
def take_rows(g, node):
    """x[int arrays / mask] (and embedding-style table[ids]): a Gather of rows. x is seen as
    (rows, *rest) over its leading dims; those are one dim (Gather on axis 0, by the traced
    index input when it holds the indices), a static run of dims (Reshape, then Gather),
    or the batch then static dims with the same positions in every batch row (Gather on
    axis 1 of x seen as (batch, rows, *rest))."""
    x, pos, rest = node.inputs[0], node.op.idx, node.op.rest
    shape = g.shape(x)
    lead = shape[:len(shape) - len(rest)]
    name = g.name(x)
    if len(lead) == 1:
        idx, _ = index_source(g, node, pos)
        if idx is None:
            idx = g.constant(pos, g.shape(node.result)[:pos.ndim], "indices")
        return g.node("Gather", [name, idx], axis=0, hint="TakeRows")
    if not any(isinstance(d, Dim) for d in lead):
        rows = (int(np.prod(lead)),) + tuple(shape[len(lead):])
        flat = g.node("Reshape", [name, g.reshape_target(rows)])
        return g.node("Gather", [flat, g.const(pos, "indices")], axis=0, hint="TakeRows")
    inner = _batch_rows(lead, pos, x.shape[0])
    if inner is None:
        raise _unmapped(node, g, "the index mixes the batch axis with others; export with "
                                 "dynamic_batch=False")
    size, rest_shape = int(np.prod(lead[1:])), shape[len(lead):]
    rows = g.node("Reshape", [name, g.reshape_target((lead[0], size) + tuple(rest_shape))])
    return g.node("Gather", [rows, g.const(inner, "indices")], axis=1, hint="TakeRows")


def _batch_rows(lead, pos, batch):
    """For leading dims (batch, *static) and positions in them (traced at batch rows): the
    positions within one batch row, when every row takes the same ones (x[:, idx]), else
    None."""
    if any(isinstance(d, Dim) for d in lead[1:]) or pos.ndim == 0 or pos.shape[0] != batch:
        return None
    size = int(np.prod(lead[1:]))
    rows = np.arange(batch).reshape((-1,) + (1,) * (pos.ndim - 1))
    return pos[0] if np.array_equal(pos, rows * size + pos[0]) else None


@maps(index.SetItem)
def set_item(g, node):
    """x[index] = value as ScatterND on x flattened: the written positions are constants
    (numpy's placement of the index; the last write wins at a repeated position) and the
    value is expanded to the indexed shape. With a dynamic batch on axis 0 and an index
    that keeps that axis whole, the same positions are written in every batch row."""
    x, v = node.inputs
    shape = g.shape(x)
    dt = result_dtype(node)
    items = node.op.items
    static = tuple(x.shape)
    where_ = np.arange(int(np.prod(static)), dtype=np.int64).reshape(static)[items]
    value = g.input_as(v, dt)
    if not any(isinstance(d, Dim) for d in shape):
        pos, pick = _last_writes(where_.reshape(-1))
        vals = g.node("Reshape", [g.node("Expand", [value, g.ints(where_.shape)]), g.ints([-1])])
        if pick is not None:
            vals = g.node("Gather", [vals, g.const(pick, "indices")], axis=0)
        flat = g.node("Reshape", [g.name(x), g.ints([-1])])
        out = g.node("ScatterND", [flat, g.const(pos.reshape(-1, 1), "indices"), vals],
                     hint="SetItem")
        return g.node("Reshape", [out, g.ints(static)])
    inner = _batch_rows(shape[:1] + static[1:], where_, static[0])
    if isinstance(shape[0], Dim) and inner is not None:
        return _set_rows(g, node, value, inner, shape)
    raise _unmapped(node, g, "the index touches the batch axis; export with dynamic_batch=False")


def _set_rows(g, node, value, inner, shape):
    """The dynamic-batch write: x as (rows, batch) (transposed) takes (K, batch) updates at
    the K positions inner of one batch row."""
    size = int(np.prod(shape[1:]))
    pos, pick = _last_writes(inner.reshape(-1))
    x = g.node("Reshape", [g.name(node.inputs[0]), g.ints([-1, size])])
    xt = g.node("Transpose", [x], perm=[1, 0])
    target = g.shape_tensor(shape[:1] + inner.shape)
    vals = g.node("Reshape", [g.node("Expand", [value, target]), g.ints([0, -1])])
    vals = g.node("Transpose", [vals], perm=[1, 0])
    if pick is not None:
        vals = g.node("Gather", [vals, g.const(pick, "indices")], axis=0)
    out = g.node("ScatterND", [xt, g.const(pos.reshape(-1, 1), "indices"), vals], hint="SetItem")
    out = g.node("Transpose", [out], perm=[1, 0])
    return g.node("Reshape", [out, g.reshape_target(shape)])


def _last_writes(pos):
    """(positions written, each once; which update goes there: None for all in order)
    where numpy's assignment lets the last of repeated positions win."""
    uniq, first_rev = np.unique(pos[::-1], return_index=True)
    if len(uniq) == len(pos):
        return pos, None
    pick = len(pos) - 1 - first_rev
    return uniq, pick.astype(np.int64)


def _is_grid(a, axis):
    """a holds each position's own index along axis (np.indices' grid there)."""
    shape = [1] * a.ndim
    shape[axis] = a.shape[axis]
    return np.array_equal(a, np.broadcast_to(np.arange(a.shape[axis]).reshape(shape), a.shape))


# fused nn ops -----------------------------------------------------------------------------
@maps(nn.SoftmaxCrossEntropy)
def softmax_cross_entropy(g, node):
    """The mean cross-entropy: ONNX's SoftmaxCrossEntropyLoss, labels from the traced input
    that holds them (else constants)."""
    op = node.op
    labels = op.labels if op.labels is not None else op.ylabels.numpy()
    labels = np.asarray(labels, dtype=np.int64)
    name, _ = index_source(g, node, labels)
    if name is None:
        name = g.constant(labels, g.shape(node.inputs[0])[:1], "labels")
    return g.node("SoftmaxCrossEntropyLoss", [g.name(node.inputs[0]), name], reduction="mean")


@maps(nn.BatchNorm)
def batch_norm_train(g, node):
    """Training-mode batch norm (batch statistics), composed."""
    x, w, b = node.inputs
    dt = result_dtype(node)
    axes = list(node.op.axes)
    keep = [1 if i in axes else n for i, n in enumerate(x.shape)]
    xn = g.name(x)
    mean = g.reduce("ReduceMean", xn, axes, True)
    xc = g.node("Sub", [xn, mean])
    var = g.reduce("ReduceMean", g.node("Mul", [xc, xc]), axes, True)
    inv = g.node("Pow", [g.node("Add", [var, g.scalar(node.op.eps, dt)]), g.scalar(-0.5, dt)])
    y = g.node("Mul", [g.node("Mul", [xc, inv]), g.node("Reshape", [g.name(w), g.ints(keep)])])
    return g.node("Add", [y, g.node("Reshape", [g.name(b), g.ints(keep)])], hint="BatchNorm")


@maps(nn.LayerNorm)
def layer_norm(g, node):
    """ONNX's LayerNormalization from opset 17 (ones for an absent weight), else composed."""
    op, (x, w, b) = node.op, node.op._split(node.inputs)
    dt = result_dtype(node)
    shape = list(x.shape[x.ndim - op.ndim:])
    xn = g.name(x)
    if g.opset >= 17:
        scale = g.name(w) if w is not None else g.const(np.ones(shape, dtype=dt), "ones")
        ins = [xn, scale] + ([g.name(b)] if b is not None else [])
        stash = g.elem_type(dt) if dt == np.float64 else None   # else float32's
        return g.node("LayerNormalization", ins, axis=-op.ndim, epsilon=float(op.eps),
                      stash_type=stash, hint="LayerNorm")
    axes = list(range(x.ndim - op.ndim, x.ndim))
    xc = g.node("Sub", [xn, g.reduce("ReduceMean", xn, axes, True)])
    var = g.reduce("ReduceMean", g.node("Mul", [xc, xc]), axes, True)
    inv = g.node("Pow", [g.node("Add", [var, g.scalar(op.eps, dt)]), g.scalar(-0.5, dt)])
    y = g.node("Mul", [xc, inv])
    if w is not None:
        y = g.node("Mul", [y, g.name(w)])
    return y if b is None else g.node("Add", [y, g.name(b)], hint="LayerNorm")


# convolution and pooling ------------------------------------------------------------------
def _pads(p):
    return [p.padding[0], p.padding[1], p.padding[0], p.padding[1]]


@maps(Conv)
def conv2d(g, node):
    p = node.op.p
    w = node.inputs[1]
    return g.node("Conv", [g.name(x) for x in node.inputs], kernel_shape=list(w.shape[2:]),
                  strides=list(p.stride), pads=_pads(p), dilations=list(p.dilation),
                  group=p.groups)


@maps(ConvReLU)
def conv2d_relu(g, node):   # the fused op is Conv then Relu in ONNX
    return g.node("Relu", [conv2d(g, node)])


@maps(pool.MaxPool2d)
def max_pool(g, node):
    p = node.op.p
    return g.node("MaxPool", [g.name(node.inputs[0])], kernel_shape=list(node.op.kernel),
                  strides=list(p.stride), pads=_pads(p), dilations=list(p.dilation))


@maps(pool.AvgPool2d)
def avg_pool(g, node):
    if node.op.backward:
        raise _unmapped(node, g, "its adjoint (backward=True) does not export")
    p = node.op.p
    return g.node("AveragePool", [g.name(node.inputs[0])], kernel_shape=list(node.op.kernel),
                  strides=list(p.stride), pads=_pads(p), count_include_pad=1)


# recurrent ----------------------------------------------------------------------------------
ONNX_GATES = (0, 3, 1, 2)   # ONNX's i, o, f, c from our (PyTorch's) i, f, g, o blocks


def gate_order(n):
    """Column indices that reorder 4n gate columns into ONNX's order."""
    return np.concatenate([np.arange(k * n, (k + 1) * n) for k in ONNX_GATES])


@maps(rnn.LSTMGates)
def lstm_gates(g, node):
    """One step from the gate pre-activations: (h', c')."""
    z, c = (g.name(x) for x in node.inputs)
    n = node.inputs[1].shape[1]
    i, f, gg, o = g.node("Split", [z, g.ints([n] * 4)], outputs=4, axis=1)
    c_new = g.node("Add", [g.node("Mul", [g.node("Sigmoid", [f]), c]),
                           g.node("Mul", [g.node("Sigmoid", [i]), g.node("Tanh", [gg])])])
    h_new = g.node("Mul", [g.node("Sigmoid", [o]), g.node("Tanh", [c_new])])
    return h_new, c_new


@maps(rnn.LSTMLayer)
def lstm_layer(g, node):
    """ONNX's LSTM over the projected input xp (S, B, 4n): W a permutation matrix that puts
    the gates in ONNX's order, R = w_hh's columns in that order, transposed."""
    xp, w_hh, h0, c0 = node.inputs
    n = w_hh.shape[0]
    order = gate_order(n)
    eye = np.eye(4 * n, dtype=xp.dtype)[order][None]
    r = g.node("Gather", [g.name(w_hh), g.ints(order)], axis=1)
    r = g.unsqueeze(g.node("Transpose", [r], perm=[1, 0]), [0])
    y, yh, yc = g.node("LSTM", [g.name(xp), g.const(eye, "lstm_W"), r, "", "",
                                g.unsqueeze(g.name(h0), [0]), g.unsqueeze(g.name(c0), [0])],
                       outputs=3, hidden_size=n)
    return g.squeeze(y, [1]), g.squeeze(yh, [0]), g.squeeze(yc, [0])


@maps(rnn.RNNLayer)
def rnn_layer(g, node):
    """ONNX's RNN over the projected input xp (S, B, n): W the identity (xp already holds
    x W_ih and both biases), R = w_hh transposed; Tanh or Relu."""
    xp, w_hh, h0 = node.inputs
    n = w_hh.shape[0]
    eye = np.eye(n, dtype=xp.dtype)[None]
    r = g.unsqueeze(g.node("Transpose", [g.name(w_hh)], perm=[1, 0]), [0])
    y, yh = g.node("RNN", [g.name(xp), g.const(eye, "rnn_W"), r, "", "",
                           g.unsqueeze(g.name(h0), [0])],
                   outputs=2, hidden_size=n, activations=["Relu" if node.op.relu else "Tanh"])
    return g.squeeze(y, [1]), g.squeeze(yh, [0])


GRU_GATES = (1, 0, 2)   # ONNX's z, r, h from our (PyTorch's) r, z, n blocks


def gru_order(n):
    return np.concatenate([np.arange(k * n, (k + 1) * n) for k in GRU_GATES])


@maps(rnn.GRULayer)
def gru_layer(g, node):
    """ONNX's GRU (linear_before_reset, PyTorch's n gate) over the projected input xp
    (S, B, 3n): W a permutation matrix into ONNX's gate order, R = w_hh's columns in that
    order, transposed, B = [0, b_hh in that order]."""
    xp, w_hh, h0 = node.inputs[:3]
    n = w_hh.shape[0]
    order = gru_order(n)
    eye = np.eye(3 * n, dtype=xp.dtype)[order][None]
    r = g.node("Gather", [g.name(w_hh), g.ints(order)], axis=1)
    r = g.unsqueeze(g.node("Transpose", [r], perm=[1, 0]), [0])
    b = ""
    if len(node.inputs) == 4:
        rb = g.node("Gather", [g.name(node.inputs[3]), g.ints(order)], axis=0)
        b = g.unsqueeze(g.node("Concat", [g.const(np.zeros(3 * n, xp.dtype), "zeros"), rb],
                               axis=0), [0])
    y, yh = g.node("GRU", [g.name(xp), g.const(eye, "gru_W"), r, b, "",
                           g.unsqueeze(g.name(h0), [0])],
                   outputs=2, hidden_size=n, linear_before_reset=1)
    return g.squeeze(y, [1]), g.squeeze(yh, [0])


def _unmapped(node, g, why=""):
    return OnnxExportError(f"ONNX export has no mapping for op {type(node.op).__name__} "
                           f"({type(node.op).__module__}), which ran {g.where()}"
                           + (f": {why}" if why else ""))


def map_op(g, node):
    fn = MAPPINGS.get(type(node.op))
    if fn is None:
        raise _unmapped(node, g)
    return fn(g, node)
