"""Initialisers (needle's names), all drawn from one generator that
mininet.manual_seed seeds."""
from __future__ import annotations

import math
import numbers
from typing import Any, TYPE_CHECKING

import numpy as np

from .autograd import Tensor
from .backend import capture as _capture
from .backend import default_device, get_device
from .ndarray import NDArray, as_dtype
from .ops.creation import get_default_dtype, size_arg

if TYPE_CHECKING:
    from .backend._typing import DeviceLike, DTypeLike

_rng = np.random.default_rng()


def manual_seed(seed: int | None) -> None:
    """Seed every random draw of mininet (init, dropout, data shuffling)."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng


def _tensor(array, dtype, device, requires_grad):
    dtype = dtype or get_default_dtype()
    return Tensor(array.astype(dtype), dtype=dtype, device=device, requires_grad=requires_grad)


def _random(draw, dtype, device, requires_grad):
    """The tensor of draw()'s numbers (from the generator). In a kernel graph's capture the
    draw is a host call: each replay draws again, in the eager order, into the same
    buffer, so a replayed step gets new numbers (dropout masks) as an eager one would."""
    if not _capture.capturing():
        return _tensor(draw(), dtype, device, requires_grad)
    made: list[Tensor] = []

    def refill():
        array = draw()
        if made:
            out = made[0].cached_data
            out.device.from_numpy(array.astype(out.dtype), out)
        else:
            made.append(_tensor(array, dtype, device, requires_grad))
    _capture.host_call(refill)
    return made[0]


def rand(*shape: Any, low: float = 0.0, high: float = 1.0, dtype: DTypeLike = None,
         device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Uniform in [low, high); shape as varargs or one tuple (as torch.rand)."""
    size = size_arg(shape, "rand")
    return _random(lambda: _rng.uniform(low, high, size=size), dtype, device, requires_grad)


uniform = rand


def randn(*shape: Any, mean: float = 0.0, std: float = 1.0, dtype: DTypeLike = None,
          device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """A tensor of shape `shape` (varargs or one tuple) from N(mean, std^2), drawn from
    mininet's generator (mininet.manual_seed repeats it); the default float dtype unless
    given."""
    size = size_arg(shape, "randn")
    return _random(lambda: _rng.normal(mean, std, size=size), dtype, device, requires_grad)


def randint(low: int, high: Any = None, size: Any = (), dtype: DTypeLike = "int64",
            device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Integers in [low, high) (torch.randint(high, size) or (low, high, size)); int64."""
    if high is None or isinstance(high, (tuple, list)):   # randint(high, size)
        low, high, size = 0, low, size if high is None else high
    shape = size_arg((size,), "randint")
    return _random(lambda: _rng.integers(low, high, size=shape), dtype, device, requires_grad)


def rand_like(x: Tensor, dtype: DTypeLike = None, device: DeviceLike = None,
              requires_grad: bool = False) -> Tensor:
    """A tensor of x's shape from U[0, 1), with x's dtype and device unless given."""
    return rand(x.shape, dtype=dtype or x.dtype, device=device or x.device, requires_grad=requires_grad)


def randn_like(x: Tensor, dtype: DTypeLike = None, device: DeviceLike = None,
               requires_grad: bool = False) -> Tensor:
    """A tensor of x's shape from N(0, 1), with x's dtype and device unless given."""
    return randn(x.shape, dtype=dtype or x.dtype, device=device or x.device, requires_grad=requires_grad)


normal = randn


def constant(*shape, c=1.0, dtype="float32", device=None, requires_grad=False):
    """A tensor of shape `shape` (varargs) holding c. A float one is filled on the device
    (one kernel: a kernel graph's capture records it, as mininet.full); others, and any
    shape or c numpy would refuse or broadcast, go through numpy."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):   # constant((2, 3)), as rand
        shape = tuple(shape[0])
    dt = as_dtype(dtype or get_default_dtype())
    if dt.kind == "f" and isinstance(c, numbers.Real) and \
            all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0
                for n in shape):
        dev = get_device(device) if device is not None else default_device()
        data = NDArray.make(tuple(int(n) for n in shape), device=dev, dtype=dt).fill(c)
        return Tensor.make_const(data, requires_grad)
    return _tensor(np.full(shape, c, dtype=dt), dtype, device, requires_grad)


def zeros(*shape, **kw):
    return constant(*shape, c=0.0, **kw)


def ones(*shape, **kw):
    return constant(*shape, c=1.0, **kw)


def randb(*shape, p=0.5, dtype="float32", device=None, requires_grad=False):
    """1 with probability p, else 0."""
    return _random(lambda: _rng.random(size=shape) < p, dtype, device, requires_grad)


def philox_key():
    """(seed, counter): two 64-bit words from mininet's generator for a counter-based
    generator (the CUDA dropout mask is Philox-4x32-10 of (seed, counter + e // 4)). Drawn
    like any other number, so manual_seed, a saved generator state and nn.checkpoint's
    replay repeat the masks; a fresh key per mask keeps masks independent."""
    _capture.refuse("a random draw")
    seed, counter = _rng.integers(0, 2 ** 64, size=2, dtype=np.uint64)
    return int(seed), int(counter)


def dropout_mask(*shape, keep, dtype="float32", device=None):
    """A constant mask: 1 / keep with probability keep, else 0. On a device with the
    "dropout" capability, one Philox kernel fills it from philox_key(); elsewhere randb's
    uniforms (the CPU's masks)."""
    dev = get_device(device) if device is not None else default_device()
    dt = as_dtype(dtype or "float32")
    if dev.has("dropout") and dt.kind == "f":
        mask = NDArray.make(shape, device=dev, dtype=dt)
        dev.dropout_mask(mask, keep, 1.0 / keep, *philox_key())
        return Tensor.make_const(mask)
    return randb(*shape, p=keep, dtype=dtype, device=device) * (1.0 / keep)


_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain: the std gain that keeps activations' scale through
    nonlinearity (param: leaky_relu's negative slope, 0.01 when None)."""
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity == "leaky_relu":
        if param is None:
            param = 0.01
        if isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + param ** 2))
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _gain(nonlinearity):
    return calculate_gain(nonlinearity)


def xavier_uniform(fan_in, fan_out, gain=1.0, shape=None, **kw):
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rand(*(shape or (fan_in, fan_out)), low=-a, high=a, **kw)


def xavier_normal(fan_in, fan_out, gain=1.0, shape=None, **kw):
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return randn(*(shape or (fan_in, fan_out)), std=std, **kw)


def kaiming_uniform(fan_in, fan_out, nonlinearity="relu", shape=None, **kw):
    bound = _gain(nonlinearity) * math.sqrt(3.0 / fan_in)
    return rand(*(shape or (fan_in, fan_out)), low=-bound, high=bound, **kw)


def kaiming_normal(fan_in, fan_out, nonlinearity="relu", shape=None, **kw):
    std = _gain(nonlinearity) / math.sqrt(fan_in)
    return randn(*(shape or (fan_in, fan_out)), std=std, **kw)
