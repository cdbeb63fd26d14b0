"""Tensors over other libraries' memory, without a copy (the export side is
Tensor.__dlpack__ and Tensor.__array_interface__)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import ndarray
from ..autograd import Tensor
from ..backend.device import DTYPES


def from_dlpack(obj: Any, copy: bool | None = None) -> Tensor:
    """A Tensor sharing the memory of obj: a numpy array, a PyTorch CPU tensor, anything
    with __dlpack__, or a DLPack capsule. Strides are kept (transposes, steps, offsets).
    copy=True copies; memory marked read-only is copied unless copy=False refuses it.
    float32, float64 and int64 only; other dtypes and non-CPU devices are errors."""
    return Tensor.make_const(ndarray.from_dlpack(obj, copy))


def from_numpy(arr: np.ndarray) -> Tensor:
    """A Tensor sharing arr's memory, as torch.from_numpy: same shape, strides and dtype,
    and writes through either side show in the other. arr must be writable and float32, float64 or int64 (mininet.Tensor(arr)
    copies and converts instead)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(arr).__name__}")
    if arr.dtype not in DTYPES:
        raise TypeError(f"from_numpy: unsupported dtype {arr.dtype}: mininet holds float32, "
                        "float64 and int64 (mininet.Tensor(arr, dtype=...) converts a copy)")
    if not arr.flags.writeable:
        raise ValueError("from_numpy: the array is read-only and mininet arrays are writable; "
                         "pass arr.copy() or use mininet.Tensor(arr), which copies")
    return Tensor.make_const(ndarray.from_dlpack(arr, copy=False))
