"""Reductions and the softmax family, numerically stable."""
import math

import numpy as np

from ..autograd import Op, Tensor, grad_enabled
from ..ndarray import NDArray, _normalize_axes


def _keep_shape(shape, axes):
    """Shape with the reduced axes kept as 1 (for broadcasting a gradient back)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Summation(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        return a.sum(self.axes, self.keepdims)

    def gradient(self, g, node):
        from .shape import broadcast_to, reshape
        shape = node.inputs[0].shape
        axes = _normalize_axes(self.axes, len(shape))
        return broadcast_to(reshape(g, _keep_shape(shape, axes)), shape)


class Norm2(Op):
    """sqrt(sum(x * x)) over axes; gradient g * x / norm, 0 where the norm is 0 (torch's,
    where sqrt's chain rule gives 0 * inf = NaN). The gradient is built from ops (the norm
    with 0 replaced by 1, then masked), so second order stays finite and consistent."""

    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        return (a * a).sum(self.axes, self.keepdims).sqrt()

    def gradient(self, g, node):
        from .index import MaskPass
        from .shape import broadcast_to, reshape
        x = node.inputs[0]
        keep = _keep_shape(x.shape, _normalize_axes(self.axes, x.ndim))
        n = reshape(node, keep)
        zero = (n.cached_data == 0.0)
        zero = zero if zero.dtype == n.dtype else zero.astype(n.dtype)
        q = MaskPass(1.0 - zero)(reshape(g, keep) / (n + Tensor.make_const(zero)))
        return x * broadcast_to(q, x.shape)


class Max(Op):
    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a):
        return a.max(self.axes, self.keepdims)

    def gradient(self, g, node):
        """Split evenly between tied maxima, as torch.amax."""
        from .shape import broadcast_to, reshape
        a = node.inputs[0].cached_data
        axes = _normalize_axes(self.axes, a.ndim)
        keep = _keep_shape(a.shape, axes)
        mask = (a == node.cached_data.reshape(keep).broadcast_to(a.shape)).astype(a.dtype)
        mask = mask / mask.sum(axes, keepdims=True).broadcast_to(a.shape)
        return broadcast_to(reshape(g, keep), a.shape) * Tensor.make_const(mask)


class LogSumExp(Op):
    def __init__(self, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, z):
        axes = _normalize_axes(self.axes, z.ndim)
        # an infinite max would make z - m NaN (inf - inf); clamped to a finite shift the
        # result is still exact: inf for a +inf entry, -inf for an all -inf row (as torch)
        m = z.max(axes, keepdims=True)
        big = float(np.finfo(m.dtype).max)
        m = m.clip(-big, big)
        out = (z - m.broadcast_to(z.shape)).exp().sum(axes, keepdims=True).log() + m
        return out if self.keepdims else out.reshape(tuple(n for i, n in enumerate(z.shape) if i not in axes))

    def gradient(self, g, node):
        from .shape import broadcast_to, reshape
        from .math import exp
        z = node.inputs[0]
        axes = _normalize_axes(self.axes, z.ndim)
        keep = _keep_shape(z.shape, axes)
        return broadcast_to(reshape(g, keep), z.shape) * exp(z - broadcast_to(reshape(node, keep), z.shape))


def _row_kernels(z, axis, capability):
    """Whether a device's row kernels take z along axis: the last axis, a float dtype, a
    device with the capability."""
    return (z.ndim > 0 and axis in (-1, z.ndim - 1) and z.device.has(capability)
            and z.dtype in (np.float32, np.float64))


def _by_rows(kernel, *arrays):
    """kernel(*rows, out) over the arrays as compact (R, D) rows of the last axis; the
    result in the first array's shape."""
    first = arrays[0]
    d = first.shape[-1]
    rows = (first.size // d if d else 0, d)
    out = NDArray.make(rows, device=first.device, dtype=first.dtype)
    kernel(*[a.compact().reshape(rows) for a in arrays], out)
    return out.reshape(first.shape)


class LogSoftmax(Op):
    """z - logsumexp over `axis`. Over the last axis on a device with the row kernels
    ("log_softmax"), forward and backward are one call each; the backward is built from
    ops when its own graph is recorded (create_graph)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def compute(self, z):
        if _row_kernels(z, self.axis, "log_softmax"):
            return _by_rows(z.device.log_softmax, z)
        m = z.max(self.axis, keepdims=True).broadcast_to(z.shape)
        shifted = z - m
        return shifted - shifted.exp().sum(self.axis, keepdims=True).log().broadcast_to(z.shape)

    def gradient(self, g, node):
        from .math import exp
        y = node.cached_data
        if not grad_enabled() and _row_kernels(y, self.axis, "log_softmax") and \
                g.dtype == y.dtype:
            return Tensor.make_const(_by_rows(y.device.log_softmax_backward, y,
                                              g.cached_data))
        soft = exp(node)
        return g - soft * summation(g, self.axis, keepdims=True).broadcast_to(g.shape)


class Softmax(Op):
    """exp(z - max) / sum over `axis`. Over the last axis on a device with the row kernels
    ("softmax"), forward and backward are one call each; the backward is built from ops
    when its own graph is recorded (create_graph)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def compute(self, z):
        if _row_kernels(z, self.axis, "softmax"):
            return _by_rows(z.device.softmax, z)
        e = (z - z.max(self.axis, keepdims=True).broadcast_to(z.shape)).exp()
        return e / e.sum(self.axis, keepdims=True).broadcast_to(z.shape)

    def gradient(self, g, node):
        y = node.cached_data
        if not grad_enabled() and _row_kernels(y, self.axis, "softmax") and g.dtype == y.dtype:
            return Tensor.make_const(_by_rows(y.device.softmax_backward, y, g.cached_data))
        gs = summation(g * node, self.axis, keepdims=True).broadcast_to(g.shape)
        return node * (g - gs)


def summation(a, axes=None, keepdims=False):
    return Summation(axes, keepdims)(a)


def mean(a, axes=None, keepdims=False):
    """The mean over an empty axis is NaN (0 / 0), as numpy and torch."""
    n = 1
    for i in _normalize_axes(axes, a.ndim):
        n *= a.shape[i]
    return summation(a, axes, keepdims) * (1.0 / n if n else math.nan)


def norm2(a, axes=None, keepdims=False):
    return Norm2(axes, keepdims)(a)


def max(a, axes=None, keepdims=False):  # noqa: A001 (needle's name)
    return Max(axes, keepdims)(a)


def logsumexp(a, axes=None, keepdims=False):
    return LogSumExp(axes, keepdims)(a)


def logsoftmax(a, axis=-1):
    return LogSoftmax(axis)(a)


def softmax(a, axis=-1):
    return Softmax(axis)(a)
