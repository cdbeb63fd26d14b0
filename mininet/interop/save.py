"""mininet.save / mininet.load as torch.save / torch.load are used, without pickle.

Format, chosen by what is saved:
- a flat {name: tensor} dict to a path ending .pt, .pth or .bin: PyTorch's zip format
  (torch.load(path, weights_only=True) reads it; write_pt);
- anything else (a state dict to another path, or nested dicts, lists and tuples of
  tensors, numbers, strings, bools and None, such as {"model": sd, "optim": osd,
  "epoch": 3}): a safetensors file whose tensors are named by their path in the structure
  ("model.fc.weight", "optim.state.0.m", "items.1") and whose metadata entry
  "mininet.structure" holds the structure as JSON with each tensor replaced by
  {"__tensor__": name}. safetensors readers see the tensors; mininet.load rebuilds the
  structure.
Both are written to a temp file and renamed. load tells the two apart by their first bytes
(a zip starts with PK), so the suffix never decides how a file is read."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .pt_reader import read_pt, write_pt
from .safetensors import load_file, load_metadata, save_file

STRUCTURE = "mininet.structure"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write obj (a state dict, or nested dicts/lists/tuples of tensors and plain values)
    to path; see the module docstring for the format."""
    path = os.fspath(path)
    if _is_flat_tensor_dict(obj) and path.endswith(TORCH_SUFFIXES):
        write_pt(obj, path)
        return
    tensors: dict[str, Any] = {}
    tree = _flatten(obj, "", tensors)
    save_file(tensors, path, metadata={STRUCTURE: json.dumps(tree)})


def load(path: str | os.PathLike[str], map_location: Any = None, weights_only: bool = True) -> Any:
    """What save wrote (also any torch.save state dict, and any safetensors file: a flat
    {name: Tensor}). map_location: None or "cpu" (tensors load on the CPU); weights_only
    is accepted for torch's spelling and is always true: nothing but tensors and plain
    values is ever read."""
    from ..autograd import Tensor
    if map_location not in (None, "cpu") and str(map_location) != "cpu":
        raise ValueError(f"load: map_location must be None or 'cpu', got {map_location!r}; "
                         f"move tensors with .to(device) after loading")
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"PK":
        return {k: Tensor(v) for k, v in read_pt(path).items()}
    tensors = load_file(path)
    meta = load_metadata(path) or {}
    if STRUCTURE not in meta:
        return tensors
    try:
        tree = json.loads(meta[STRUCTURE])
        return _unflatten(tree, tensors, path)
    except RecursionError:
        raise ValueError(f"{path}: its {STRUCTURE} metadata is nested too deeply") from None
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: its {STRUCTURE} metadata is not JSON ({e})") from None


def _is_tensor(v):
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, (np.generic,))


def _is_flat_tensor_dict(obj):
    return isinstance(obj, dict) and obj and all(
        isinstance(k, str) and _is_tensor(v) for k, v in obj.items())


def _flatten(obj, prefix, tensors):
    """obj as JSON with each tensor moved into tensors under its dotted path."""
    if _is_tensor(obj):
        name = prefix or "tensor"
        if name in tensors:   # {"a.b": t, "a": {"b": u}}: the dotted paths meet
            raise ValueError(f"save: two tensors would both be named {name!r} (keys with dots "
                             f"that meet nested keys); rename one")
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"save: dict keys must be strings or ints, got "
                            f"{[type(k).__name__ for k in obj]}")
        return {"__dict__": [[k, _flatten(v, _join(prefix, k), tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, _join(prefix, i), tensors) for i, v in enumerate(obj)]
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": items}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"__value__": obj}
    raise TypeError(f"save: cannot save a {type(obj).__name__} at {prefix or 'the top'}: only "
                    f"tensors, dicts, lists, tuples, numbers, strings, bools and None "
                    f"(no pickle)")


def _join(prefix, key):
    return f"{prefix}.{key}" if prefix else str(key)


def _unflatten(tree, tensors, path):
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ValueError(f"{path}: malformed {STRUCTURE} entry {str(tree)[:80]!r}")
    (kind, body), = tree.items()
    if kind == "__tensor__":
        if body not in tensors:
            raise ValueError(f"{path}: {STRUCTURE} names a tensor {body!r} the file lacks")
        return tensors[body]
    if kind == "__dict__":
        return {k: _unflatten(v, tensors, path) for k, v in body}
    if kind in ("__list__", "__tuple__"):
        items = [_unflatten(v, tensors, path) for v in body]
        return tuple(items) if kind == "__tuple__" else items
    if kind == "__value__":
        return body
    raise ValueError(f"{path}: malformed {STRUCTURE} entry of kind {kind!r}")

