"""Module and Parameter: parameters are found by walking attributes.

A Module owns what its attributes hold: Parameters, Modules, and lists, tuples or dicts
of them (needle's way: no registration). Buffers (state that is not trained, such as
BatchNorm's running statistics) are named by register_buffer. Printing, state_dict and
the tree walks follow PyTorch's nn.Module; containers (Sequential, ModuleList, ModuleDict)
are in container.py.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..autograd import Tensor, _bump, _observers
from ..backend import capture as _capture
from ..ndarray import NDArray


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates."""

    def __init__(self, data, dtype=None, device=None, requires_grad=True):
        super().__init__(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _children(value, prefix):
    """(name, Parameter | Module) pairs inside value, recursing into lists/tuples/dicts."""
    if isinstance(value, (Parameter, Module)):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _children(v, f"{prefix}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _children(v, f"{prefix}.{i}")


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def positive_int(what, name, value):
    """value if it is an int > 0, else ValueError naming the argument (constructors)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_probability(what, p):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"{what}: p must be a probability in [0, 1], got {p!r}")
    return p


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
SummaryRow = namedtuple("SummaryRow", ["name", "type", "params", "trainable"])


class StateDictError(RuntimeError, KeyError, ValueError):
    """load_state_dict's refusal: a RuntimeError as torch's, and the KeyError (keys) or
    ValueError (shapes) that mininet raised before. Holds missing_keys, unexpected_keys
    and mismatched [(name, shape given, shape expected)]."""

    def __init__(self, message, missing_keys=(), unexpected_keys=(), mismatched=()):
        super().__init__(message)
        self.missing_keys, self.unexpected_keys = list(missing_keys), list(unexpected_keys)
        self.mismatched = list(mismatched)

    def __str__(self):
        return self.args[0]


def _as_array(value):
    """A state-dict value (numpy array, Tensor, NDArray, torch tensor) as numpy."""
    if isinstance(value, (Tensor, NDArray)):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _indent_after_first(text):
    first, *rest = text.split("\n")
    return "\n".join([first] + ["  " + line for line in rest])



def _copy_into(old, data):
    """Write data's values into the tensor old's own buffer, as torch's load_state_dict
    does (references to the tensor, and kernel graphs that captured its buffer, see the
    new values; a graph that saved it for backward is told by its version). False where
    the buffer cannot take them (another dtype or device, a broadcast view)."""
    buf = old.cached_data
    if buf.dtype != data.dtype or buf.device != data.device or buf.shape != data.shape:
        return False
    try:
        buf[...] = data
    except ValueError:
        return False
    _bump(buf)
    return True

class Module:
    """The base of every layer and model (needle's and torch's nn.Module): attributes that are
    Parameters, Modules, or lists / tuples / dicts of them form the tree that parameters(),
    state_dict(), to(), train() / eval() walk. A subclass sets them in `__init__` (after
    `super().__init__()`) and gives forward(); calling the module runs forward (and the
    profiler's and tracer's hooks). Each class's docstring gives its input and output
    shapes."""

    def __init__(self):
        self.training = True

    # the tree ---------------------------------------------------------------------------
    def _attributes(self):
        """(name, value) pairs the tree walks: the attributes, in the order they were set
        (containers name their items instead)."""
        return vars(self).items()

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for each direct child (attributes, and the items of lists / tuples /
        dicts of modules, named attr.0, attr.key, ...), in the order they were set."""
        for name, value in self._attributes():
            for child_name, child in _children(value, name):
                if isinstance(child, Module):
                    yield child_name, child

    def children(self) -> Iterator[Module]:
        """The direct child modules, in the order they were set (no names)."""
        for _, child in self.named_children():
            yield child

    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for self and every module under it, each module once
        (as torch's) unless remove_duplicate=False."""
        if remove_duplicate:
            memo = set() if memo is None else memo
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self) -> list[Module]:
        """This module and every module below it, depth first, each once (a shared
        module is not repeated), as a list."""
        return [m for _, m in self.named_modules()]

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """fn(module) for every child (depth first), then for self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for each parameter of this module (and of
        the modules below it when recurse), each once, in the order they were set; names are
        prefixed by `prefix`."""
        for name, value in self._attributes():
            for child_name, child in _children(value, name):
                full = _join(prefix, child_name)
                if isinstance(child, Parameter):
                    yield full, child
                elif recurse:
                    yield from child.named_parameters(full)

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        """The Parameters of this module (and of the modules below it when
        recurse), each once, in the order they were set: what an optimizer takes."""
        seen, out = set(), []
        for _, p in self.named_parameters(recurse=recurse):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    # buffers ----------------------------------------------------------------------------
    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Keep `tensor` (any shape, or None) as self.<name>, state that is not a parameter: it
        moves with to(), and, when persistent, is saved by state_dict. A bad or taken name
        raises KeyError, a non-Tensor TypeError; a Parameter is kept as a plain tensor of
        the same shape."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_buffer: name must be a non-empty str without '.', "
                           f"got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a mininet Tensor or None, got "
                            f"{type(tensor).__name__}")
        buffers = tuple(getattr(self, "_buffers", ()))
        if name not in buffers:
            if name in vars(self) or isinstance(getattr(type(self), name, None), (Tensor, Module)):
                raise KeyError(f"register_buffer: attribute {name!r} already exists")
            self._buffers = buffers + (name,)
        skip = set(getattr(self, "_non_persistent", ()))
        self._non_persistent = skip - {name} if persistent else skip | {name}
        if isinstance(tensor, Parameter):   # a buffer is state, not a trained parameter
            tensor = Tensor.make_const(tensor.cached_data)
        setattr(self, name, tensor)

    def _buffer_slots(self, prefix="", recurse=True, persistent_only=False):
        """(dotted name, attribute name, owner) of every buffer that is not None."""
        skip = getattr(self, "_non_persistent", ()) if persistent_only else ()
        for name in getattr(self, "_buffers", ()):
            if name not in skip and getattr(self, name, None) is not None:
                yield _join(prefix, name), name, self
        if recurse:
            for name, child in self.named_children():
                yield from child._buffer_slots(_join(prefix, name), True, persistent_only)

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, tensor) for every buffer that is not None, each of the
        shape it was registered with, as torch's."""
        for full, name, owner in self._buffer_slots(prefix, recurse):
            yield full, getattr(owner, name)

    def buffers(self, recurse: bool = True) -> list[Tensor]:
        """The buffers (running statistics and other state tensors registered with
        register_buffer, each of the shape it was registered with) of this module and, when
        recurse, of the modules below it, as a list."""
        return [b for _, b in self.named_buffers(recurse=recurse)]

    # modes and gradients ----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (mode=True) or eval mode on this module and every module
        below it (Dropout and BatchNorm read it); returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Set eval mode on this module and every module below it (train(False)); returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's gradient (torch's default), or set it to zeros."""
        params = self.parameters()
        _capture.note_zeroed(params)
        for p in params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor.make_const(
                    NDArray.make(p.grad.shape, device=p.grad.device, dtype=p.grad.dtype).fill(0.0))

    # state -------------------------------------------------------------------------------
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Any]:
        """name -> numpy copy of every parameter, then every persistent buffer (keep_vars:
        the Tensors themselves)."""
        def value(t):
            return t if keep_vars else t.numpy()
        state = OrderedDict((name, value(p)) for name, p in self.named_parameters(prefix))
        for full, name, owner in self._buffer_slots(prefix, persistent_only=True):
            state[full] = value(getattr(owner, name))
        return state

    def _state_slots(self):
        """{name: (owner, attribute) or Parameter} that load_state_dict fills."""
        slots = OrderedDict(self.named_parameters())
        for full, name, owner in self._buffer_slots(persistent_only=True):
            slots[full] = (owner, name)
        return slots

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy state_dict's arrays in; checks every key and shape before changing anything.
        Returns (missing_keys, unexpected_keys); strict (the default) refuses either, and any
        shape mismatch is refused (StateDictError, a RuntimeError, KeyError and ValueError)."""
        slots = self._state_slots()
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        arrays, mismatched = {}, []
        for key, slot in slots.items():
            if key in state_dict:
                arrays[key] = _as_array(state_dict[key])
                old = slot if isinstance(slot, Tensor) else getattr(*slot)
                if tuple(arrays[key].shape) != tuple(old.shape):
                    mismatched.append((key, tuple(arrays[key].shape), tuple(old.shape)))
        if mismatched or (strict and (missing or unexpected)):
            self._refuse(missing if strict else [], unexpected if strict else [], mismatched)
        new = {}   # every array converted before any is assigned: nothing half-loaded
        for key, array in arrays.items():
            old = slots[key] if isinstance(slots[key], Tensor) else getattr(*slots[key])
            new[key] = NDArray(array, dtype=old.dtype, device=old.device)
        for key, data in new.items():
            old = slots[key] if isinstance(slots[key], Tensor) else getattr(*slots[key])
            if _copy_into(old, data):
                continue
            if isinstance(slots[key], Tensor):
                slots[key].data = data
            else:
                setattr(*slots[key], Tensor(data))  # type: ignore[call-arg]  # here slots[key] is (module, name)
        return IncompatibleKeys(missing, unexpected)

    def _refuse(self, missing, unexpected, mismatched):
        parts = []
        if missing or unexpected:
            parts.append(f"missing keys {missing}, unexpected keys {unexpected}")
        parts += [f"{k} has shape {given}, the model expects {want}"
                  for k, given, want in mismatched]
        raise StateDictError(f"load_state_dict for {self._get_name()}: " + "; ".join(parts),
                             missing, unexpected, mismatched)

    def to(self, *args: Any, device: Any = None, dtype: Any = None, non_blocking: bool = False) -> Module:
        """to(device), to(dtype), to(device, dtype), in place, returning self (as torch's):
        a dtype converts the floating-point parameters (and their .grad) and buffers only
        (an int64 buffer such as num_batches_tracked keeps its dtype)."""
        from ..autograd import _is_dtype
        for a in args:
            if _is_dtype(a):
                dtype = a
            elif isinstance(a, Tensor):   # to(other): its device and dtype
                device, dtype = a.device, a.dtype
            else:
                device = a
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError("nn.Module.to only accepts floating point dtypes, but got "
                                f"desired dtype={dtype}")

        def convert(data):
            if dtype is not None and np.dtype(data.dtype).kind == "f":
                data = data.astype(dtype)
            return data if device is None else data.to(device)

        for _, p in self.named_parameters():
            p.cached_data = convert(p.cached_data)
            if p.grad is not None:
                p.grad.cached_data = convert(p.grad.cached_data)
        for _, name, owner in self._buffer_slots():
            b = getattr(owner, name)
            if dtype is not None and np.dtype(b.dtype).kind == "f":
                b = b.to(dtype).detach()
            setattr(owner, name, b if device is None else b.to(device))
        return self

    def float(self) -> Module:
        """Floating-point parameters and buffers to float32, in place (as torch's)."""
        return self.to(dtype="float32")

    def double(self) -> Module:
        """Floating-point parameters and buffers to float64, in place (as torch's)."""
        return self.to(dtype="float64")

    # printing ----------------------------------------------------------------------------
    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        """The text inside Name(...) besides the children (a layer's settings)."""
        return ""

    def _repr_children(self):
        """(label, text) of each child as printed: (label): text."""
        return [(name, repr(child)) for name, child in self.named_children()]

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({label}): {_indent_after_first(text)}"
                    for label, text in self._repr_children()]
        if not children and len(lines) <= 1:
            return f"{self._get_name()}({''.join(lines)})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines + children) + "\n)"

    def summary(self):
        """A table of every module (dotted name as in state_dict, type, its own parameter
        count and how many of those are trainable) and the totals; print() it. The counts
        need no input (each shared parameter is counted once, at its first owner)."""
        seen, rows = set(), []
        for name, m in self.named_modules():
            own = [p for p in m.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            rows.append(SummaryRow(name, m._get_name(), sum(p.numel() for p in own),
                                   sum(p.numel() for p in own if p.requires_grad)))
        return ModelSummary(rows)

    # running -----------------------------------------------------------------------------
    def forward(self, *args: Any) -> Any:
        """The module's computation, given by each subclass: module(*args) calls it. The input
        and output shapes are the ones the class's docstring gives; the base raises
        NotImplementedError."""
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        if not _observers:
            return self.forward(*args, **kwargs)
        # the profiler and the ONNX tracer see which module each op runs in
        scopes = [(o, o.module_begin(self, args)) for o in _observers if hasattr(o, "module_begin")]
        out = self.forward(*args, **kwargs)
        for o, token in reversed(scopes):
            o.module_end(token, out)
        return out


class ModelSummary:
    """Module.summary()'s result: rows (SummaryRow: name, type, params, trainable),
    total_params, trainable_params; str() is the table."""

    HEADER = SummaryRow("name", "type", "params", "trainable")

    def __init__(self, rows):
        self.rows = list(rows)
        self.total_params = sum(r.params for r in self.rows)
        self.trainable_params = sum(r.trainable for r in self.rows)

    def __str__(self):
        cells = [self.HEADER] + [SummaryRow(r.name or "(model)", r.type, f"{r.params:,}",
                                            f"{r.trainable:,}") for r in self.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(4)]
        def line(row):
            return "  ".join([str(row[0]).ljust(widths[0]), str(row[1]).ljust(widths[1])]
                             + [str(row[i]).rjust(widths[i]) for i in (2, 3)]).rstrip()
        rule = "-" * (sum(widths) + 6)
        return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]] + [
            rule, f"total params: {self.total_params:,}",
            f"trainable params: {self.trainable_params:,}",
            f"non-trainable params: {self.total_params - self.trainable_params:,}"])

    __repr__ = __str__


class Identity(Module):
    """Returns its input unchanged: any shape `(*)` in, the same Tensor out. Constructor
    arguments are accepted and ignored, as torch's."""

    def __init__(self, *args, **kwargs):   # arguments ignored, as torch's
        super().__init__()

    def forward(self, x: Any) -> Any:
        """x itself (any shape `(*)`), unchanged."""
        return x


class Residual(Module):
    """fn(x) + x: the module `fn` must give its input's shape `(*)`, which the output
    has too (needle's Residual)."""

    def __init__(self, fn: Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """fn(x) + x, of x's shape `(*)` (fn must keep the shape)."""
        return self.fn(x) + x
