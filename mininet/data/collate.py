"""Batching samples (PyTorch's default_collate) in two steps: `stack` builds the batch
with numpy leaves (picklable: a worker process runs it), `to_tensors` turns those leaves
into Tensors in the process that uses them.

The leaves' dtypes are mininet's: integers and bools give int64 (labels, as the MNIST
and CIFAR loaders return them); floats (numpy arrays of any float width, numpy float
scalars, Python floats, float Tensors) give the loader's `dtype`, by default mininet's
default dtype (float32) -- where PyTorch would keep numpy's float64."""
import collections.abc
import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend._typing import DeviceLike, DTypeLike
from ..ndarray import as_dtype, share_numpy
from ..ops.creation import get_default_dtype

_NUMBER_KINDS = "biuf"


def _where(path):
    return "".join(f"[{p!r}]" for p in path) or "the sample"


def _unsupported(elem, path):
    return TypeError(f"default_collate: cannot batch {type(elem).__name__} at {_where(path)}; "
                     f"samples may hold numpy arrays, Tensors, numbers, strings, and dicts, "
                     f"lists or tuples of them (else pass collate_fn=)")


def _check_kind(array, elem, path):
    if array.dtype.kind not in _NUMBER_KINDS:
        raise _unsupported(elem, path) if array.dtype.kind == "O" else TypeError(
            f"default_collate: arrays of dtype {array.dtype} at {_where(path)} cannot become "
            f"a Tensor (mininet holds float32, float64 and int64)")
    return array


def _stack_arrays(arrays, path):
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        k = next(i for i, a in enumerate(arrays) if a.shape != first)
        raise RuntimeError(f"default_collate: samples differ in shape at {_where(path)}: "
                           f"{first} in sample 0, {arrays[k].shape} in sample {k}")
    return np.stack(arrays)


def _stack_mapping(batch, path):
    elem = batch[0]
    for k, sample in enumerate(batch):
        missing = [key for key in elem if key not in sample] \
            if isinstance(sample, collections.abc.Mapping) else list(elem)
        if missing:
            raise RuntimeError(f"default_collate: sample {k} at {_where(path)} lacks the "
                               f"key(s) {missing} that sample 0 has")
    out = {key: _stack([d[key] for d in batch], path + (key,)) for key in elem}
    if isinstance(elem, collections.abc.MutableMapping):
        try:   # keep the mapping's own type (an OrderedDict, a subclass with extras)
            clone = copy.copy(elem)
            clone.update(out)
            return clone
        except TypeError:
            pass
    return out


def _stack_sequence(batch, path):
    elem = batch[0]
    sizes = [len(s) for s in batch]
    k = next((k for k, size in enumerate(sizes) if size != sizes[0]), None)
    if k is not None:
        raise RuntimeError(f"default_collate: samples differ in length at {_where(path)}: "
                           f"{sizes[0]} in sample 0, {sizes[k]} in sample {k}")
    columns = [_stack(col, path + (i,)) for i, col in enumerate(zip(*batch))]
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):   # a namedtuple stays one
        return type(elem)(*columns)
    return columns   # tuples and lists become lists, as in PyTorch


def _stack(batch, path=()):
    elem = batch[0]
    if isinstance(elem, (Tensor, np.ndarray)):
        arrays = [np.asarray(a.numpy() if isinstance(a, Tensor) else a) for a in batch]
        return _stack_arrays([_check_kind(a, elem, path) for a in arrays], path)
    if isinstance(elem, (str, bytes)):
        return batch   # as PyTorch: the list given, or a tuple inside a tuple or list sample
    if isinstance(elem, (bool, int, float, np.generic)):
        return _check_kind(np.array(batch), elem, path)
    if isinstance(elem, collections.abc.Mapping):
        return _stack_mapping(batch, path)
    if isinstance(elem, collections.abc.Sequence):
        return _stack_sequence(batch, path)
    raise _unsupported(elem, path)


def stack(batch):
    """The batch (a list of samples) with numpy leaves: arrays and Tensors stacked along a
    new first axis, numbers as 1-d arrays, strings as they come (the list, or a tuple
    within tuple samples), dicts per key, tuples and lists per position (as lists; a
    namedtuple stays one)."""
    if not isinstance(batch, collections.abc.Sequence) or isinstance(batch, (str, bytes)):
        raise TypeError(f"default_collate: expects a list of samples, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("default_collate: the batch holds no samples")
    return _stack(batch)


def _leaf_tensor(x, dtype, device, fresh):
    """x as a Tensor of mininet's dtypes; a fresh array is shared, not copied again."""
    if x.dtype.kind in "iub":   # labels stay integers
        y = x.astype(np.int64, copy=False)
    else:
        y = x.astype(dtype, copy=False)
    if fresh or y is not x:
        return Tensor.make_const(share_numpy(np.ascontiguousarray(y), device))
    return Tensor(y, dtype=y.dtype, device=device)


def to_tensors(tree, dtype=None, device=None, fresh=True):
    """The batch `stack` made, its numpy leaves as Tensors (dtype: floats' dtype, default
    mininet's; fresh=False copies leaves that other code may still hold)."""
    dtype = get_default_dtype() if dtype is None else as_dtype(dtype)
    return _convert(tree, lambda x: _leaf_tensor(x, dtype, device, fresh))


def _convert(tree, leaf, batch=True):
    if isinstance(tree, (np.ndarray, np.generic)):
        return leaf(tree)
    if isinstance(tree, collections.abc.Mapping):
        out = {k: _convert(v, leaf, batch) for k, v in tree.items()}
        if isinstance(tree, collections.abc.MutableMapping):
            try:
                clone = copy.copy(tree)
                clone.update(out)
                return clone
            except TypeError:
                pass
        return out
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_convert(v, leaf, batch) for v in tree))
    if isinstance(tree, list):
        return [_convert(v, leaf, batch) for v in tree]
    if isinstance(tree, tuple):   # a batch's tuples hold strings; a sample's become lists
        return tuple(tree) if batch else [_convert(v, leaf, batch) for v in tree]
    return tree


def default_collate(batch: Sequence[Any]) -> Any:
    """A list of samples as one batch of Tensors (PyTorch's default_collate): arrays and
    Tensors stacked along a new first axis, numbers as 1-d Tensors, strings kept (a list
    of them, a tuple within tuple samples, as PyTorch), dicts collated per key, tuples and
    lists per position (returned as lists): samples of shape `(*)` give a Tensor of shape
    `(B, *)`, B = len(batch). Integers and bools give int64, floats mininet's default dtype
    (float32)."""
    return to_tensors(stack(batch))


def default_convert(sample: Any, dtype: DTypeLike = None, device: DeviceLike = None) -> Any:
    """One sample with its numpy arrays and numpy numbers as Tensors, nothing stacked
    (PyTorch's default_convert: what DataLoader(batch_size=None) yields); Python numbers,
    strings and Tensors stay as they are."""
    dtype = get_default_dtype() if dtype is None else as_dtype(dtype)

    def leaf(x):
        if x.dtype.kind not in _NUMBER_KINDS:
            return x
        return _leaf_tensor(np.asarray(x), dtype, device, fresh=False)
    return _convert(sample, leaf, batch=False)
