"""export(): trace one forward pass, map its ops to ONNX, write the file atomically."""
import contextlib
import os

import numpy as np

from ..autograd import Tensor
from ..interop.atomic import write_atomically
from ..nn.module import Module
from .graph import Graph
from .modules import bind_outputs, handler_for
from .ops import map_op
from .trace import (Dim, OnnxExportError, check_writes, flatten_values, run_traced,
                    symbolic_shapes)

MIN_OPSET = 15   # Shape's start/end, Reshape's allowzero
CHUNK = 1 << 20


def require_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'mininet-dl[onnx]'") \
            from None
    return onnx


def export(model: Module, example_input: Tensor | np.ndarray | tuple | list,
           path: str | os.PathLike[str], opset: int = 17,
           input_names: list[str] | tuple[str, ...] | None = None,
           output_names: list[str] | tuple[str, ...] | None = None,
           dynamic_batch: bool = True):
    """Write model as an ONNX file at path (whole or not at all) and return the ModelProto.

    One forward pass on example_input (a Tensor, a numpy array, or a tuple of them: the
    model's positional arguments) is recorded in eval mode (dropout is the identity, batch
    norm uses its running statistics); the model's training flags are restored after.
    Parameters and buffers become initializers named by the module tree, any other tensor
    the ops read a constant. Outputs are the Tensors the model returns (nested tuples are
    flattened, None left out). Default names: input / input_0, ... and output /
    output_0, ....

    dynamic_batch: True makes axis 0 of every input the symbolic dimension "batch" (the
    model is traced at two batch sizes to see which dimensions follow it); an int names
    another axis for every input ((seq, batch) token ids: 1); a sequence gives one axis
    (or None) per input; False keeps every traced size."""
    proto = to_model(model, example_input, opset, input_names, output_names, dynamic_batch)
    save(proto, path)
    return proto


def save(proto, path: str | os.PathLike[str]) -> None:
    """Serialize proto and write it atomically (a failure leaves no partial file)."""
    try:
        data = proto.SerializeToString()
    except ValueError as e:   # protobuf refuses messages over 2 GiB
        raise OnnxExportError(f"the ONNX model is too large for one protobuf file: {e}") from None
    write_atomically(os.fspath(path), lambda f: write_chunks(f, data), "ONNX model")


def write_chunks(f, data):
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        f.write(view[start:start + CHUNK])


def to_model(model: Module, example_input: Tensor | np.ndarray | tuple | list, opset: int = 17,
             input_names: list[str] | tuple[str, ...] | None = None,
             output_names: list[str] | tuple[str, ...] | None = None,
             dynamic_batch: bool = True):
    """The ONNX ModelProto that export() writes, without writing it: one forward
    pass of `model` on example_input (a Tensor or array of the model's input shape, e.g.
    (N, C, H, W), or a tuple of them), axis 0 of every input the symbolic "batch" with
    dynamic_batch. Needs the onnx package; errors as export's."""
    onnx = require_onnx()
    _check_args(onnx, model, opset)
    inputs = _as_inputs(example_input)
    axes = _batch_axes(dynamic_batch, inputs)
    in_names = _names(input_names, len(inputs), "input")
    leaves, modules = _leaf_names(model), _module_names(model)
    with _eval_mode(model):
        trace, outputs, shapes, batch = _trace(model, inputs, axes, leaves, modules)
    out_names = _names(output_names, len(outputs), "output")
    if set(in_names) & set(out_names):
        raise ValueError(f"ONNX export: names used for both an input and an output: "
                         f"{sorted(set(in_names) & set(out_names))}")
    source = None
    if batch is not None:
        k = next(i for i, a in enumerate(axes) if a is not None)
        source = (in_names[k], axes[k], batch)
    g = Graph(onnx, opset, shapes, leaves, source)
    g.trace, g.module_names = trace, modules
    g.input_ids, g.producers = {id(x) for x in inputs}, {id(n.result): n for n in trace.nodes}
    g.used.update(in_names + out_names)
    for x, name in zip(inputs, in_names):
        g.bind(x, name)
    _emit(g, trace, outputs)
    _name_outputs(g, outputs, out_names, set(in_names))
    return _model_proto(g, type(model).__name__, list(zip(inputs, in_names)),
                        list(zip(outputs, out_names)))


def _check_args(onnx, model, opset):
    if not isinstance(model, Module):
        raise TypeError(f"ONNX export: model must be a mininet.nn.Module, got "
                        f"{type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"ONNX export: opset must be an integer from {MIN_OPSET} to {newest} "
                         f"(the installed onnx's newest), got {opset!r}")


def _trace(model, inputs, axes, leaves, modules):
    """(trace, output tensors, shapes with Dims, traced batch size or None)."""
    trace, output = run_traced(model, inputs)
    check_writes(trace, inputs, leaves)
    outputs = flatten_values(output)
    if not outputs:
        raise OnnxExportError(f"ONNX export: {type(model).__name__} returned no tensors "
                              f"(got {type(output).__name__})")
    if all(a is None for a in axes):
        return trace, outputs, {}, None
    batch = _common_batch(inputs, axes)
    trace2, output2 = run_traced(model, _grow(inputs, axes))
    known = set(leaves) | {id(x) for x in inputs}
    shapes = symbolic_shapes(trace, trace2, batch, _where_fn(modules), known)
    _shapes_of_ends(shapes, inputs, axes, outputs, flatten_values(output2), batch)
    return trace, outputs, shapes, batch


def _model_proto(g, graph_name, inputs, outputs):
    onnx = g.onnx
    graph = onnx.helper.make_graph(
        g.nodes, graph_name, [_value_info(g, n, x.dtype, g.shape(x)) for x, n in inputs],
        [_value_info(g, n, v.dtype, g.shape(v)) for v, n in outputs], initializer=g.initializers)
    opsets = [onnx.helper.make_opsetid("", g.opset)]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="mininet",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"ONNX export built an invalid model (a bug in mininet.onnx): "
                              f"{e}") from None
    return proto


# inputs and the batch -----------------------------------------------------------------------
def _as_inputs(example_input):
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    out = []
    for i, x in enumerate(items):
        if isinstance(x, Tensor):
            out.append(x.detach())
        elif isinstance(x, (np.ndarray, np.generic, list, int, float)):
            out.append(Tensor(np.asarray(x)))
        else:
            raise TypeError(f"ONNX export: example input {i} must be a Tensor or a numpy array, "
                            f"got {type(x).__name__}")
    if not out:
        raise ValueError("ONNX export: give at least one example input")
    return tuple(out)


def _batch_axes(dynamic_batch, inputs):
    if dynamic_batch is False or dynamic_batch is None:
        return [None] * len(inputs)
    if dynamic_batch is True:
        given = [0] * len(inputs)
    elif isinstance(dynamic_batch, (int, np.integer)):
        given = [int(dynamic_batch)] * len(inputs)
    else:
        given = list(dynamic_batch)
        if len(given) != len(inputs):
            raise ValueError(f"ONNX export: dynamic_batch gives {len(given)} axes for "
                             f"{len(inputs)} inputs")
    axes = []
    for i, (x, a) in enumerate(zip(inputs, given)):
        if a is not None and not -x.ndim <= a < x.ndim:
            raise ValueError(f"ONNX export: batch axis {a} is out of range for input {i} of "
                             f"shape {tuple(x.shape)}")
        axes.append(None if a is None else a % x.ndim)
    return axes


def _common_batch(inputs, axes):
    sizes = {x.shape[a] for x, a in zip(inputs, axes) if a is not None}
    if len(sizes) != 1:
        raise ValueError(f"ONNX export: the inputs' batch axes have different sizes "
                         f"{sorted(sizes)}")
    batch = sizes.pop()
    if batch < 1:
        raise ValueError("ONNX export: the example batch is empty; give at least one sample")
    return batch


def _grow(inputs, axes):
    """The inputs with their samples in reverse order and one more (the first again): a
    batch of another size, and other data in each position."""
    out = []
    for x, a in zip(inputs, axes):
        if a is None:
            out.append(x)
            continue
        arr = x.numpy()
        rev = np.flip(arr, axis=a)
        out.append(Tensor(np.concatenate([rev, arr.take([0], axis=a)], axis=a), dtype=x.dtype,
                          device=x.device))
    return tuple(out)


def _shapes_of_ends(shapes, inputs, axes, outputs, outputs2, batch):
    for x, a in zip(inputs, axes):
        shapes[id(x)] = tuple(Dim(1, 0) if i == a else n for i, n in enumerate(x.shape))
    if len(outputs) != len(outputs2):
        raise OnnxExportError("the model returns a different number of tensors at another "
                              "batch size: export it with dynamic_batch=False")
    for v1, v2 in zip(outputs, outputs2):
        if id(v1) not in shapes:
            shapes[id(v1)] = tuple(n if n == m else Dim(m - n, n - (m - n) * batch)
                                   for n, m in zip(v1.shape, v2.shape))


@contextlib.contextmanager
def _eval_mode(model):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _names(names, count, kind):
    if names is None:
        return [kind] if count == 1 else [f"{kind}_{i}" for i in range(count)]
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != count or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"ONNX export: {kind}_names must be {count} non-empty strings (the "
                         f"model has {count} {kind}s), got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"ONNX export: {kind}_names repeat a name: {names!r}")
    return names


def _leaf_names(model):
    """{id(tensor): name} for the parameters and buffers, by the module tree."""
    leaves = {}
    for name, p in model.named_parameters():
        leaves.setdefault(id(p), name)
    for full, buf in model.named_buffers():
        leaves.setdefault(id(buf), full)
    return leaves


def _module_names(model):
    names = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    return names


def _where_fn(modules):
    def where(node):
        s = node.scope
        if s is None:
            return "outside any module"
        return f"in module {modules.get(id(s.module), '?')!r} ({type(s.module).__name__})"
    return where


# the graph ---------------------------------------------------------------------------------
def _handled_scopes(g, trace):
    """{id(value): scope} for outputs of the outermost scopes a module handler exports."""
    handled, taken = {}, set()
    for scope in trace.scopes:   # in call order: outer scopes first
        if scope.last is None or _inside(scope, taken):
            continue
        values = flatten_values(scope.output)
        if not values or not all(id(v) in g.producers and scope.contains(g.producers[id(v)])
                                 for v in values):
            continue
        handler = handler_for(g, scope)
        if handler is not None:
            taken.add(id(scope))
            scope.handler = handler
            for v in values:
                handled[id(v)] = scope
    return handled


def _inside(scope, taken):
    s = scope.parent
    while s is not None:
        if id(s) in taken:
            return True
        s = s.parent
    return False


def _emit(g, trace, outputs):
    """Map what the outputs need, in the order it ran."""
    handled = _handled_scopes(g, trace)
    nodes, scopes, seen = {}, {}, set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        scope = handled.get(id(v))
        if scope is not None:
            if id(scope) not in scopes:
                scopes[id(scope)] = scope
                stack.extend(flatten_values(scope.args))
            continue
        node = g.producers.get(id(v))
        if node is not None and node.index not in nodes:
            nodes[node.index] = node
            stack.extend(node.inputs)
    events = [(n.index, 1, n.index, n) for n in nodes.values()]
    events += [(s.last, 0, s.first, s) for s in scopes.values()]
    for _, kind, _, item in sorted(events, key=lambda e: e[:3]):
        if kind == 1:
            g.enter(item.scope)
            g.bind(item.result, map_op(g, item))
        else:
            g.enter(item)
            bind_outputs(g, item, item.handler.emit(g, item))


def _name_outputs(g, outputs, out_names, in_names):
    """Rename the nodes' results to the output names (Identity where a name cannot move:
    an input, an initializer, or a value returned twice)."""
    renamed = set()
    for v, name in zip(outputs, out_names):
        inner = g.name(v)
        if inner in g.produced and inner not in renamed and inner not in in_names:
            for node in g.nodes:
                for field in (node.input, node.output):
                    for i, x in enumerate(field):
                        if x == inner:
                            field[i] = name
            g.produced.add(name)
            renamed.update((inner, name))
            g.names = {k: (name if n == inner else n) for k, n in g.names.items()}
        else:
            g.node("Identity", [inner], names=[name])


def _value_info(g, name, dtype, shape):
    dims = [str(d) if isinstance(d, Dim) else int(d) for d in shape]
    return g.onnx.helper.make_tensor_value_info(name, g.elem_type(dtype), dims)
