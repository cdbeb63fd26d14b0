"""In-place initialisers with torch.nn.init's names: each fills an existing Tensor or
Parameter from mininet's generator (mininet.manual_seed repeats it, or pass generator=, a
numpy Generator), records no graph (as torch under no_grad), and returns the same object,
still trainable. needle's functions that make new tensors (xavier_uniform(fan_in,
fan_out), ...) stay in mininet.init.

Modules keep needle's weight layout, and fans are read in it: a 2-D weight is
(in_features, out_features) as nn.Linear's, so fan_in = shape[0] and fan_out = shape[1]
(torch's (out, in) matrices are the transpose: for one of those, such as F.linear's
weight, swap mode='fan_in' and 'fan_out'); a conv weight (out, in / groups, kh, kw) is
torch's, fan_in = shape[1] * kh * kw and fan_out = shape[0] * kh * kw.
"""
import math
from numbers import Real
from typing import Optional

import numpy as np

from .. import init as _init
from ..autograd import Tensor
from ..init import calculate_gain  # noqa: F401 (torch.nn.init's name, defined once)
from ..ndarray import NDArray

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_"]


def _check(what, tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: tensor must be a mininet Tensor or Parameter, got "
                        f"{type(tensor).__name__}")


def _rng(generator):
    return _init.generator() if generator is None else generator


def _fill(tensor, values):
    """Write values into tensor's own memory (views of it see them); no graph recorded."""
    tensor.cached_data[()] = NDArray(np.asarray(values).reshape(tensor.shape),
                                     dtype=tensor.dtype, device=tensor.device)
    return tensor


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) in needle's layout: (in, out) matrices; `(out, in, *kernel)` convs."""
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor of 2 or more dims, got shape {shape}")
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(what, tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{what}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0,
             generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (any shape `(*)`, a Tensor or Parameter) with draws from U[a, b), in
    place; returns the same tensor, shape and dtype unchanged. Raises ValueError for a > b,
    TypeError for a non-Tensor."""
    _check("uniform_", tensor)
    if not a <= b:
        raise ValueError(f"uniform_: a must be <= b, got a={a}, b={b}")
    return _fill(tensor, _rng(generator).uniform(a, b, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0,
            generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (any shape `(*)`) with draws from N(mean, std^2), in place; returns the
    same tensor, shape and dtype unchanged. Raises ValueError for std < 0, TypeError for a
    non-Tensor."""
    _check("normal_", tensor)
    if not std >= 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill(tensor, _rng(generator).normal(mean, std, size=tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill `tensor` (any shape `(*)`) with the number `val`, in place; returns the same
    tensor. Raises TypeError for a non-number val (a bool included) or a non-Tensor."""
    _check("constant_", tensor)
    if isinstance(val, bool) or not isinstance(val, Real):
        raise TypeError(f"constant_: val must be a number, got {val!r}")
    return _fill(tensor, np.full(tensor.shape, val))


def ones_(tensor: Tensor) -> Tensor:
    """Fill `tensor` (any shape `(*)`) with ones, in place; returns the same tensor."""
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill `tensor` (any shape `(*)`) with zeros, in place; returns the same tensor."""
    return constant_(tensor, 0.0)


def eye_(tensor: Tensor) -> Tensor:
    """The identity in a 2-D tensor of shape (n, m) (ones on the diagonal of the rectangle,
    zeros elsewhere), in place; returns the same tensor. Other ranks raise ValueError."""
    _check("eye_", tensor)
    if tensor.ndim != 2:
        raise ValueError(f"eye_: tensor must be 2-D, got shape {tensor.shape}")
    return _fill(tensor, np.eye(*tensor.shape))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (2 or more dims, shape (in, out) or (out, in / groups, kh, kw): fans
    read in needle's layout, see the module) from U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), in place; returns the same
    tensor. Fewer than 2 dims raise ValueError."""
    _check("xavier_uniform_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (2 or more dims, shape (in, out) or (out, in / groups, kh,
    kw)) from N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)), in place; returns the
    same tensor. Fewer than 2 dims raise ValueError."""
    _check("xavier_normal_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(what, tensor, a, mode, nonlinearity):
    _check(what, tensor)
    fan = _fan(what, tensor, mode)
    if fan == 0:
        raise ValueError(f"{what}: tensor of shape {tensor.shape} has a zero {mode}")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (2 or more dims, shape (in, out) or (out, in / groups, kh,
    kw)) from U(-b, b), b = gain * sqrt(3 / fan) (He et al.), in place: `mode` 'fan_in' or
    'fan_out' picks the fan, `a` is leaky_relu's negative slope for the gain of
    `nonlinearity`. Returns the same tensor. A bad mode raises ValueError."""
    bound = math.sqrt(3.0) * _kaiming_std("kaiming_uniform_", tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: Optional[np.random.Generator] = None) -> Tensor:
    """Fill `tensor` (2 or more dims, shape (in, out) or (out, in / groups, kh,
    kw)) from N(0, std^2), std = gain / sqrt(fan), in place (`a`, `mode`, `nonlinearity` as
    kaiming_uniform_). Returns the same tensor."""
    std = _kaiming_std("kaiming_normal_", tensor, a, mode, nonlinearity)
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    """A (semi-)orthogonal matrix of shape (shape[0], rest), times gain: orthonormal rows
    or columns, whichever there are fewer of (QR of a normal draw, signs fixed so that the
    result is uniform over such matrices)."""
    _check("orthogonal_", tensor)
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: tensor must have 2 or more dims, got shape {tensor.shape}")
    rows = tensor.shape[0]
    cols = tensor.numel() // rows if rows else 0
    if rows == 0 or cols == 0:
        return tensor
    flat = _rng(generator).normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, q * gain)
