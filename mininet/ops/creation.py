"""PyTorch's top-level functions: creation (mininet.tensor, zeros, arange, eye, ...,
*_like) with the default float dtype they use (float32, as torch), shapes as varargs or
one tuple; and cat, stack, flatten with torch's dim= (axis= too)."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..autograd import Tensor
from ..backend import cuda_available, get_device
from ..ndarray import NDArray, as_dtype, float32

if TYPE_CHECKING:
    from ..backend._typing import DeviceLike, DTypeLike
    from ..backend.device import Device

_default = {"dtype": float32}


def set_default_dtype(dtype: DTypeLike) -> None:
    """The dtype of float data and creation functions without dtype= (float32 or float64)."""
    d = as_dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"set_default_dtype: only float32 or float64 can be the default, got {d}")
    _default["dtype"] = d


def get_default_dtype() -> np.dtype[Any]:
    """The dtype float data and creation functions get without dtype= (float32 unless
    set_default_dtype changed it)."""
    return _default["dtype"]


def device(spec: DeviceLike) -> Device:
    """mininet.device("cpu") / ("cuda"): the Device object (x.device compares equal to it)."""
    return get_device(spec)


class _Accelerator:
    """mininet.accelerator.is_available(), as torch.accelerator."""

    @staticmethod
    def is_available() -> bool:
        return cuda_available()

    @staticmethod
    def current_accelerator() -> Device | None:
        return get_device("cuda") if cuda_available() else None


accelerator = _Accelerator()


def size_arg(size: Sequence[Any], what: str = "shape") -> tuple[int, ...]:
    """(2, 3) from f(2, 3), f((2, 3)) or f([2, 3])."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    if not all(isinstance(n, numbers.Integral) for n in size):
        raise TypeError(f"{what}: sizes must be integers, got {tuple(size)}")
    if any(n < 0 for n in size):
        raise ValueError(f"{what}: negative dimension in {tuple(size)}")
    return tuple(int(n) for n in size)


def _dtype(dtype):
    return get_default_dtype() if dtype is None else as_dtype(dtype)


def _leaf(nd, requires_grad):
    t = Tensor.make_const(nd)
    if requires_grad:
        if nd.dtype.kind != "f":
            raise TypeError(f"only float tensors can require grad, got {nd.dtype}")
        t.requires_grad = True
    return t


def _filled(shape, value, dtype, device, requires_grad):
    nd = NDArray.make(shape, device=get_device(device) if device is not None else None,
                      dtype=_dtype(dtype))
    return _leaf(nd.fill(value), requires_grad)


def tensor(data: Any, dtype: DTypeLike = None, device: DeviceLike = None,
           requires_grad: bool = False) -> Tensor:
    """A new leaf tensor with a copy of data (a number, nested lists, a numpy array, an
    NDArray or a Tensor), of data's shape (a number gives shape ()). As torch: Python floats
    become the default dtype (float32), ints int64; numpy arrays and tensors keep their
    dtype. Ragged lists or an unsupported dtype raise an error naming them."""
    if isinstance(data, Tensor):
        data = data.cached_data
    if dtype is None and not isinstance(data, (np.ndarray, NDArray)):
        kind = np.asarray(data).dtype.kind
        dtype = get_default_dtype() if kind == "f" else None
    return _leaf(NDArray(data, dtype=dtype, device=device), requires_grad)   # always a copy


def zeros(*size: Any, dtype: DTypeLike = None, device: DeviceLike = None,
          requires_grad: bool = False) -> Tensor:
    """A tensor of zeros of shape size (varargs or one tuple: zeros(2, 3), zeros((2, 3)));
    dtype defaults to the default float dtype."""
    return _filled(size_arg(size, "zeros"), 0.0, dtype, device, requires_grad)


def ones(*size: Any, dtype: DTypeLike = None, device: DeviceLike = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones of shape size (varargs or one tuple); dtype defaults to the
    default float dtype."""
    return _filled(size_arg(size, "ones"), 1.0, dtype, device, requires_grad)


def empty(*size: Any, dtype: DTypeLike = None, device: DeviceLike = None,
          requires_grad: bool = False) -> Tensor:
    """torch.empty: a tensor of shape size (varargs or one tuple), zero-filled here
    (uninitialised memory buys nothing at this size); the default float dtype unless
    given."""
    return _filled(size_arg(size, "empty"), 0.0, dtype, device, requires_grad)


def full(size: Any, fill_value: float, dtype: DTypeLike = None, device: DeviceLike = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of shape size (a tuple) filled with fill_value: bool for a bool fill_value,
    int64 for an integer one, else the default float dtype, unless dtype= says otherwise
    (as torch)."""
    if dtype is None and isinstance(fill_value, bool):   # not np.bool_: float, as torch
        dtype = "bool"    # as torch.full(..., True)
    elif dtype is None and isinstance(fill_value, numbers.Integral):
        dtype = "int64"   # as torch.full(..., 3)
    return _filled(size_arg((size,), "full"), fill_value, dtype, device, requires_grad)


def _like(x, dtype, device):
    return x.dtype if dtype is None else dtype, x.device if device is None else device


def zeros_like(x: Tensor, dtype: DTypeLike = None, device: DeviceLike = None,
               requires_grad: bool = False) -> Tensor:
    """Zeros of x's shape, with x's dtype and device unless given."""
    d, dev = _like(x, dtype, device)
    return zeros(x.shape, dtype=d, device=dev, requires_grad=requires_grad)


def ones_like(x: Tensor, dtype: DTypeLike = None, device: DeviceLike = None,
              requires_grad: bool = False) -> Tensor:
    """Ones of x's shape, with x's dtype and device unless given."""
    d, dev = _like(x, dtype, device)
    return ones(x.shape, dtype=d, device=dev, requires_grad=requires_grad)


def empty_like(x: Tensor, dtype: DTypeLike = None, device: DeviceLike = None,
               requires_grad: bool = False) -> Tensor:
    """A tensor of x's shape, with x's dtype and device unless given: zeros_like (empty
    memory is zero-filled here)."""
    return zeros_like(x, dtype, device, requires_grad)


def full_like(x: Tensor, fill_value: float, dtype: DTypeLike = None, device: DeviceLike = None,
              requires_grad: bool = False) -> Tensor:
    """x's shape filled with fill_value, with x's dtype and device unless given."""
    d, dev = _like(x, dtype, device)
    return full(x.shape, fill_value, dtype=d, device=dev, requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, dtype: DTypeLike = None,
           device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """torch.arange: values start, start + step, ... below end (arange(n) is 0 .. n - 1),
    shape (ceil((end - start) / step),) (empty if that is negative). int64 when start, end
    and step are all integers, else the default dtype (torch). step=0 raises ValueError."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    dtype = ("int64" if ints else get_default_dtype()) if dtype is None else dtype
    n = max(0, int(np.ceil((end - start) / step)))
    data = start + step * np.arange(n, dtype=np.float64 if not ints else np.int64)  # type: ignore[operator]  # numpy stubs: arange with a conditional dtype
    return _leaf(NDArray(data, dtype=dtype, device=device), requires_grad)


def linspace(start: float, end: float, steps: int, dtype: DTypeLike = None,
             device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """(steps,): evenly spaced values from start to end, both included; the default float
    dtype unless given."""
    data = np.linspace(start, end, int(steps))
    return _leaf(NDArray(data, dtype=_dtype(dtype), device=device), requires_grad)


def eye(n: int, m: int | None = None, dtype: DTypeLike = None, device: DeviceLike = None,
        requires_grad: bool = False) -> Tensor:
    """(n, m) (m defaults to n): ones on the diagonal, zeros elsewhere."""
    return _leaf(NDArray(np.eye(n, m), dtype=_dtype(dtype), device=device), requires_grad)


def _axis(what, dim, axis):
    if dim is not None and axis is not None:
        raise TypeError(f"{what}: give dim= or axis=, not both")
    return dim if axis is None else axis


def cat(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """torch.cat: the tensors joined along the existing axis dim (axis= too); their other
    axes must agree: shapes `(a, *rest)` and `(b, *rest)` along dim 0 give shape
    `(a + b, *rest)`. Also named concat and concatenate. Differentiable."""
    from .shape import concatenate
    return concatenate(list(tensors), _axis("cat", dim, axis))


concat = concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """torch.stack: tensors of one shape joined along a new axis dim (axis= too), so the
    result has one more dimension. Differentiable."""
    from .shape import stack as stack_op
    return stack_op(list(tensors), _axis("stack", dim, axis))


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """torch.flatten: dims start_dim .. end_dim (inclusive, negative from the end) merged
    into one, e.g. (N, C, H, W) -> `(N * C * H * W,)` by default, or `(N, C * H * W)` with
    start_dim=1. (ops.flatten is needle's, from dim 1.)"""
    return x.flatten(start_dim, end_dim)
