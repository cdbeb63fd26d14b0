"""PyTorch's weights in and out: one table of mininet's modules against torch's names and
layouts, used to load a torch state dict into a mininet model, to export a model's
weights under torch's names, and by whatever else needs torch's names (ONNX's
initializers): torch_names(model).

The table (mininet module: its tensors = torch's, T = transposed):
  Linear                 weight = weight^T (ours is (in, out), torch's (out, in)), bias
  Conv (Conv2d)          weight (out, in/groups, kh, kw), bias: the same
  BatchNorm1d/2d         weight, bias, running_mean, running_var: the same. torch's
                         num_batches_tracked has no counterpart (it only feeds
                         momentum=None's cumulative average, which mininet lacks): a load
                         checks it (an integer scalar >= 0) and drops it, an export writes 0
  LayerNorm1d            weight, bias: torch's LayerNorm(dim) (over the last axis only)
  Embedding              weight: the same
  RNNCell/LSTMCell/GRUCell  W_ih = weight_ih^T, W_hh = weight_hh^T, bias_ih, bias_hh (the
                         gates in torch's order: LSTM i, f, g, o; GRU r, z, n)
  RNN/LSTM/GRU           cells[k]'s as weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}
  MultiHeadAttention     in_proj_weight = [W_q^T; W_k^T; W_v^T] (row blocks), in_proj_bias =
                         [b_q; b_k; b_v], out_proj.weight = W_out^T, out_proj.bias = b_out
  TransformerLayer       TransformerEncoderLayer(norm_first=True, activation="relu"): attn is
                         self_attn (drop1/2/3 are dropout1, dropout, dropout2)
  Sequential             children 0, 1, ... (ours sit in modules_list)
  any other module       its parameters and buffers under their attribute names

mininet's classes are recognised by name (a class of mininet.nn, or a subclass of one):
this package sits below nn in the layers, so it does not import it.

A torch module given to load_torch_state_dict is also checked for what its state dict
does not show (norm_first, the activation, num_heads, eps, strides, ...); anything that
would compute differently is refused by name. Its state_dict() loads the weights alone.
"""
import os
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import Tensor
from ..ndarray import NDArray
from .pt_reader import read_pt, write_pt
from .safetensors import load_file, save_file


class TorchWeightsError(ValueError):
    """Weights that do not fit the model (names, shapes, dtypes) or a torch module that
    does not compute what the model does; the message names each problem."""


class Slot(NamedTuple):
    """One torch tensor of a module: its torch name and our attribute paths (relative to
    the module), stacked along torch's first axis; `transpose`: each of ours is torch's
    block transposed; kind: parameter, buffer or torch_only (no counterpart here)."""
    torch: str
    ours: tuple
    transpose: bool = False
    kind: str = "parameter"


class TorchName(NamedTuple):
    """What torch_names gives for one torch name: our full names and the layout."""
    ours: tuple
    transpose: bool
    kind: str


class LoadReport(NamedTuple):
    """What load_torch_state_dict did: torch names loaded, ours left as they were
    (missing), torch's not used (unexpected), and notes (conversions, dropped tensors)."""
    loaded: list
    missing: list
    unexpected: list
    notes: list


# the table -----------------------------------------------------------------------------------
def _weight_bias(transpose=False):
    def slots(m):
        return [Slot("weight", ("weight",), transpose)] + _bias(m, "bias", "bias")
    return slots


def _bias(m, ours, torch, prefix=""):
    try:
        present = _get(m, prefix + ours) is not None
    except AttributeError:   # Embedding: no bias at all
        present = False
    return [Slot(torch, (prefix + ours,))] if present else []


def _batch_norm(m):
    return _weight_bias()(m) + [Slot("running_mean", ("running_mean",), kind="buffer"),
                                Slot("running_var", ("running_var",), kind="buffer"),
                                Slot("num_batches_tracked", (), kind="torch_only")]


def _cell(m, suffix="", prefix=""):
    return ([Slot("weight_ih" + suffix, (prefix + "W_ih",), True),
             Slot("weight_hh" + suffix, (prefix + "W_hh",), True)]
            + _bias(m, "bias_ih", "bias_ih" + suffix, prefix)
            + _bias(m, "bias_hh", "bias_hh" + suffix, prefix))


def _stack(m):
    return [s for k in range(len(m.cells)) for s in _cell(m, f"_l{k}", f"cells.{k}.")]


def _attention(m):
    slots = [Slot("in_proj_weight", ("W_q", "W_k", "W_v"), True)]
    if m.b_q is not None:
        slots.append(Slot("in_proj_bias", ("b_q", "b_k", "b_v")))
    return slots + [Slot("out_proj.weight", ("W_out",), True)] + _bias(m, "b_out", "out_proj.bias")


# mininet class name -> its tensors (such a module's children are not walked)
LAYOUTS = {"Linear": _weight_bias(True), "Conv": _weight_bias(), "LayerNorm1d": _weight_bias(),
           "BatchNorm1d": _batch_norm, "BatchNorm2d": _batch_norm, "Embedding": _weight_bias(),
           "RNNCell": _cell, "LSTMCell": _cell, "GRUCell": _cell,
           "RNN": _stack, "LSTM": _stack, "GRU": _stack, "MultiHeadAttention": _attention}
# mininet class name -> torch's name of a child (or of a parameter) named so here
_TRANSFORMER = {"attn": "self_attn", "drop1": "dropout1", "drop2": "dropout", "drop3": "dropout2"}
CHILD_NAMES = {"Sequential": lambda n: n[len("modules_list."):] if n.startswith("modules_list.") else n,
               "TransformerLayer": lambda n: _TRANSFORMER.get(n, n)}
# mininet class name -> its children in torch's order (state dicts list them so)
CHILD_ORDER = {"TransformerLayer": ("attn", "linear1", "drop2", "linear2", "norm1", "norm2")}


def _kind(module):
    """The mininet.nn class name module is (or derives from), if any is in the tables."""
    for c in type(module).__mro__:
        if c.__module__.startswith("mininet.nn") and (c.__name__ in LAYOUTS or
                                                      c.__name__ in TORCH_CLASSES):
            return c.__name__
    return None


def _same(name):
    return name


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _get(module, path):
    """The value at an attribute path ("cells.0.W_ih") under module."""
    value = module
    for part in path.split("."):
        if isinstance(value, (list, tuple)):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            value = getattr(value, part)
    return value


def _walk(module, tpath="", opath=""):
    """(torch path, our path, module) of module and the modules under it that torch names
    on their own (not those inside a module whose layout names its tensors)."""
    yield tpath, opath, module
    kind = _kind(module)
    if kind in LAYOUTS:
        return
    rename, order = CHILD_NAMES.get(kind, _same), CHILD_ORDER.get(kind, ())
    children = sorted(module.named_children(),
                      key=lambda c: order.index(c[0]) if c[0] in order else len(order))
    for name, child in children:
        yield from _walk(child, _join(tpath, rename(name)), _join(opath, name))


def _slots(module):
    kind = _kind(module)
    if kind in LAYOUTS:
        return LAYOUTS[kind](module)
    rename = CHILD_NAMES.get(kind, _same)
    children = [name + "." for name, _ in module.named_children()]
    own = [name for name, _ in module.named_parameters()
           if not any(name.startswith(c) for c in children)]
    return ([Slot(rename(name), (name,)) for name in own]
            + [Slot(rename(name), (name,), kind="buffer") for name in getattr(module, "_buffers", ())])


def _bindings(model):
    """{torch name: (module, slot, our full names)} for every tensor of the model."""
    out = OrderedDict()
    for tpath, opath, module in _walk(model):
        for slot in _slots(module):
            name = _join(tpath, slot.torch)
            if name in out:
                raise TorchWeightsError(f"two of the model's tensors map to torch's {name!r} "
                                        f"({', '.join(out[name][2])} and {_join(opath, slot.ours[0])})")
            out[name] = (module, slot, tuple(_join(opath, o) for o in slot.ours))
    return out


def torch_names(model: Any) -> "OrderedDict[str, TorchName]":
    """{torch name: TorchName(our full names, transpose, kind)} for every tensor of a
    mininet model, in the order of its parameters (torch's state_dict order for the
    modules in the table)."""
    return OrderedDict((name, TorchName(ours, slot.transpose, slot.kind))
                       for name, (_, slot, ours) in _bindings(model).items())


# export --------------------------------------------------------------------------------------
def torch_state_dict(model: Any) -> "OrderedDict[str, np.ndarray]":
    """{torch name: numpy array} of the model's weights in torch's layouts (copies)."""
    return OrderedDict((name, _export(module, slot))
                       for name, (module, slot, _) in _bindings(model).items())


def _export(module, slot):
    if slot.kind == "torch_only":
        return np.zeros((), np.int64)   # num_batches_tracked: no count kept here
    parts = [_get(module, o).numpy() for o in slot.ours]
    parts = [p.T if slot.transpose else p for p in parts]
    return np.array(parts[0], order="C") if len(parts) == 1 else np.concatenate(parts, 0)


def save_torch(model: Any, path: str | os.PathLike[str]) -> None:
    """The model's weights under torch's names: a .pt file as torch.save writes a state
    dict (torch.load reads it, weights_only=True too), or for a path ending .safetensors a
    safetensors file (safetensors.torch.load_file reads it)."""
    state = torch_state_dict(model)
    if os.fspath(path).endswith(".safetensors"):
        save_file(state, path)
    else:
        write_pt(state, path)


# loading -------------------------------------------------------------------------------------
def load_torch_state_dict(model, source, strict=True):
    """Load torch-named weights into a mininet model and return a LoadReport.

    source: a state dict ({name: torch tensor, numpy array or mininet Tensor}), a path to
    a .pt file (torch.save's format, read without torch by read_pt) or a .safetensors
    file, or a torch module (its state_dict(), and its configuration checked against
    the model's). Every tensor is checked (shape, a float dtype; num_batches_tracked an
    integer scalar) before any is loaded; a mismatch raises TorchWeightsError naming the
    key, the shape expected and the shape given. strict=True also refuses missing and
    unexpected keys; strict=False loads what matches and reports the rest. Values take
    the dtype of the model's tensors; float16 and bfloat16 are widened to float32."""
    notes = []
    state, where = _state_of(model, source, notes)
    bindings = _bindings(model)
    unexpected = [k for k in state if k not in bindings]
    missing = [k for k, (_, slot, _) in bindings.items()
               if k not in state and slot.kind != "torch_only"]
    plan, errors, casts = [], [], Counter()
    for name, (module, slot, ours) in bindings.items():
        if name in state:
            arr = _checked(name, state[name], module, slot, ours, errors, casts)
            plan.append((name, module, slot, arr))
    if errors:
        raise TorchWeightsError(f"load_torch_state_dict ({where}): " + "; ".join(errors))
    if strict and (missing or unexpected):
        raise TorchWeightsError(f"load_torch_state_dict ({where}): missing keys {_listed(missing)}, "
                                f"unexpected keys {_listed(unexpected)} (strict=False loads the rest)")
    for _, module, slot, arr in plan:
        _assign(module, slot, arr)
    notes += [f"{n} {why}" for why, n in casts.items()]
    return LoadReport([name for name, _, slot, _ in plan if slot.kind != "torch_only"],
                      missing, unexpected, notes)


def _listed(keys, most=20):
    shown = ", ".join(repr(k) for k in keys[:most])
    return f"[{shown}{f', ... ({len(keys) - most} more)' if len(keys) > most else ''}]"


def _is_torch_module(x):
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"
               for c in type(x).__mro__)


def _state_of(model, source, notes):
    """({name: value}, what to call the source in errors)."""
    if _is_torch_module(source):
        _check_config(model, source)
        return source.state_dict(), f"a torch {type(source).__name__}"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".safetensors"):
            return load_file(path), path
        return read_pt(path, notes), path
    if isinstance(source, Mapping):
        bad = [k for k in source if not isinstance(k, str)]
        if bad:
            raise TorchWeightsError(f"load_torch_state_dict: state dict keys are strings, got {bad[0]!r}")
        return source, "state dict"
    raise TypeError(f"load_torch_state_dict: the source is a {type(source).__name__}, not a "
                    "state dict, a path or a torch module")


def _as_numpy(value, casts):
    """(numpy array, None) of a torch tensor, mininet Tensor/NDArray or numpy array, or
    (None, why not)."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            casts[f"{str(t.dtype)[6:]} tensors widened to float32"] += 1
            t = t.float()
        if t.is_complex():
            return None, f"dtype {t.dtype} is complex"
        value = t.numpy()
    elif isinstance(value, Tensor):
        value = value.cached_data.numpy()
    elif isinstance(value, NDArray):
        value = value.numpy()
    elif not isinstance(value, (np.ndarray, np.generic)):
        return None, f"is a {type(value).__name__}, not an array"
    value = np.asarray(value)
    if value.dtype == np.float16 or value.dtype.name == "bfloat16":
        casts[f"{value.dtype.name} arrays widened to float32"] += 1
        value = value.astype(np.float32)
    return value, None


def _expected_shape(module, slot):
    if slot.kind == "torch_only":
        return ()
    shapes = [tuple(_get(module, o).shape) for o in slot.ours]
    shapes = [s[::-1] if slot.transpose else s for s in shapes]
    return (sum(s[0] for s in shapes),) + shapes[0][1:] if len(shapes) > 1 else shapes[0]


def _checked(name, value, module, slot, ours, errors, casts):
    """The value as a numpy array fit for the slot; else None and an error appended."""
    arr, why = _as_numpy(value, casts)
    expected = _expected_shape(module, slot)
    layout = f"mininet's {' + '.join(ours)}{' transposed' * slot.transpose}" if ours else \
        "torch's batch counter, which mininet checks and drops"
    if why is None and tuple(arr.shape) != expected:
        why = f"got shape {tuple(arr.shape)}"
    if why is None and slot.kind == "torch_only" and (arr.dtype.kind not in "iu" or arr < 0):
        why = f"got {arr.dtype} value {arr}, not an integer >= 0"
    if why is None and slot.kind != "torch_only" and arr.dtype.kind != "f":
        why = f"got dtype {arr.dtype}, not floating point"
    if why is not None:
        errors.append(f"{name}: expected shape {expected} ({layout}), {why}")
        return None
    if slot.kind != "torch_only":
        ours_dtype = np.dtype(_get(module, slot.ours[0]).dtype)
        if arr.dtype != ours_dtype:
            casts[f"{arr.dtype} tensors cast to the model's {ours_dtype}"] += 1
    return arr


def _assign(module, slot, arr):
    if slot.kind == "torch_only":
        return
    targets = [_get(module, o) for o in slot.ours]
    rows = np.cumsum([t.shape[-1] if slot.transpose else t.shape[0] for t in targets])[:-1]
    for o, t, part in zip(slot.ours, targets, np.split(arr, rows, axis=0)):
        data = NDArray(np.ascontiguousarray(part.T if slot.transpose else part), dtype=t.dtype,
                       device=t.device)
        if slot.kind == "buffer":
            setattr(module, o, Tensor.make_const(data))
        else:
            t.data = data


# a torch module's configuration ---------------------------------------------------------------
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _differ(what, ours, theirs):
    return [] if ours == theirs else [f"{what} is {theirs!r} in torch, {ours!r} here"]


def _unsupported(t, **settings):
    """Settings of t that mininet has no counterpart for (name=what it must be)."""
    return [f"{k}={getattr(t, k)!r} has no counterpart here (mininet's is {v!r})"
            for k, v in settings.items() if getattr(t, k, v) != v]


def _check_conv(m, t):
    padding = t.padding
    if isinstance(padding, str):
        if padding != "valid":
            return [f"padding={padding!r} has no counterpart here (give mininet's Conv numbers)"]
        padding = (0, 0)
    return (_differ("stride", _pair(m.stride), _pair(t.stride))
            + _differ("padding", _pair(m.padding), _pair(padding))
            + _differ("dilation", _pair(m.dilation), _pair(t.dilation))
            + _differ("groups", m.groups, t.groups) + _unsupported(t, padding_mode="zeros"))


def _check_batch_norm(m, t):
    return (_differ("eps", m.eps, t.eps) + _differ("momentum", m.momentum, t.momentum)
            + _unsupported(t, affine=True, track_running_stats=True))


def _check_layer_norm(m, t):
    return (_differ("normalized_shape", (m.dim,), tuple(t.normalized_shape))
            + _differ("eps", m.eps, t.eps) + _unsupported(t, elementwise_affine=True)
            + ([] if getattr(t, "bias", 0) is not None else ["bias=False has no counterpart here"]))


def _check_embedding(m, t):
    return _unsupported(t, padding_idx=None, max_norm=None, scale_grad_by_freq=False)


def _check_cell(m, t):
    return _differ("nonlinearity", getattr(m, "nonlinearity", None), getattr(t, "nonlinearity", None))


def _check_stack(m, t):
    return (_differ("num_layers", len(m.cells), t.num_layers)
            + _check_cell(m.cells[0], t)
            + ([] if getattr(m, "batch_first", False) == t.batch_first else
               [f"batch_first={t.batch_first!r} in torch, batch_first="
                f"{getattr(m, 'batch_first', False)!r} here (make them agree)"])
            + _unsupported(t, bidirectional=False, dropout=0, proj_size=0))


def _check_attention(m, t):
    return (_differ("num_heads", m.num_heads, t.num_heads)
            + _differ("batch_first", m.batch_first, t.batch_first)
            + _differ("dropout", m.dropout.p, t.dropout)
            + ([] if t._qkv_same_embed_dim else ["kdim/vdim other than embed_dim have no counterpart here"])
            + ([] if t.bias_k is None else ["add_bias_kv=True has no counterpart here"])
            + _unsupported(t, add_zero_attn=False))


def _check_transformer(m, t):
    act = t.activation
    name = getattr(act, "__name__", type(act).__name__).lower()
    return (_unsupported(t, norm_first=True)
            + ([] if name == "relu" else [f"activation {name} has no counterpart here "
                                          "(mininet's TransformerLayer uses relu)"]))


def _check_pool(m, t, dilation=True):
    kernel = _pair(m.kernel_size)
    problems = (_differ("kernel_size", kernel, _pair(t.kernel_size))
                + _differ("stride", _pair(m.stride) if m.stride is not None else kernel,
                          _pair(t.stride) if t.stride is not None else _pair(t.kernel_size))
                + _differ("padding", _pair(m.padding), _pair(t.padding))
                + _unsupported(t, ceil_mode=False))
    if dilation:
        return problems + _differ("dilation", _pair(m.dilation), _pair(t.dilation)) \
            + _unsupported(t, return_indices=False)
    return problems + _unsupported(t, count_include_pad=True, divisor_override=None)


# mininet class name -> (torch class names that match it, checker(ours, torch's) -> problems)
TORCH_CLASSES = {
    "Linear": (("Linear", "NonDynamicallyQuantizableLinear"), None),
    "Conv": (("Conv2d",), _check_conv),
    "BatchNorm1d": (("BatchNorm1d",), _check_batch_norm),
    "BatchNorm2d": (("BatchNorm2d",), _check_batch_norm),
    "LayerNorm1d": (("LayerNorm",), _check_layer_norm),
    "Embedding": (("Embedding",), _check_embedding),
    "RNNCell": (("RNNCell",), _check_cell), "LSTMCell": (("LSTMCell",), None),
    "GRUCell": (("GRUCell",), None),
    "RNN": (("RNN",), _check_stack), "LSTM": (("LSTM",), _check_stack), "GRU": (("GRU",), _check_stack),
    "MultiHeadAttention": (("MultiheadAttention",), _check_attention),
    "TransformerLayer": (("TransformerEncoderLayer",), _check_transformer),
    "Sequential": (("Sequential",), lambda m, t: _differ("length", len(m), len(t))),
    "Dropout": (("Dropout",), lambda m, t: _differ("p", m.p, t.p)),
    "Flatten": (("Flatten",), lambda m, t: _unsupported(t, start_dim=1, end_dim=-1)),
    "MaxPool2d": (("MaxPool2d",), _check_pool),
    "AvgPool2d": (("AvgPool2d",), lambda m, t: _check_pool(m, t, dilation=False)),
    "ReLU": (("ReLU",), None), "Tanh": (("Tanh",), None), "Sigmoid": (("Sigmoid",), None),
    "Identity": (("Identity",), None)}


def _check_config(model, tmod):
    """Refuse a torch module that computes differently from the model, naming each place."""
    problems = []
    for tpath, _, module in _walk(model):
        entry = TORCH_CLASSES.get(_kind(module))
        if entry is None:
            continue
        try:
            t = tmod.get_submodule(tpath)
        except AttributeError:
            continue   # its keys will be missing
        where = tpath or "the model"
        if type(t).__name__ not in entry[0]:
            problems.append(f"{where} is a torch {type(t).__name__}, a {type(module).__name__} here")
        elif entry[1] is not None:
            problems += [f"{where} ({type(t).__name__}): {why}" for why in entry[1](module, t)]
    if problems:
        raise TorchWeightsError("load_torch_state_dict: the torch module does not compute what "
                                "the mininet model does: " + "; ".join(problems)
                                + " (its state_dict() loads the weights alone)")
