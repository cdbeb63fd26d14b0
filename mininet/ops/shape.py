"""Shape ops (views in the forward pass), joins, pad/flip/dilate, with gradients."""
import numbers

from ..autograd import Op, TupleOp
from ..ndarray import NDArray, check_axis, concatenate as nd_concatenate, stack as nd_stack


class Reshape(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.reshape(self.shape)

    def gradient(self, g, node):
        return reshape(g, node.inputs[0].shape)


class Permute(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, axes):
        self.axes = tuple(axes)

    def compute(self, a):
        return a.permute(self.axes)

    def gradient(self, g, node):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return permute(g, inverse)


class BroadcastTo(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.broadcast_to(self.shape)

    def gradient(self, g, node):
        from .math import unbroadcast
        return unbroadcast(g, node.inputs[0].shape)


class GetItem(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, index):
        self.index = index

    def compute(self, a):
        return a[self.index]

    def gradient(self, g, node):
        return ScatterItem(self.index, node.inputs[0].shape)(g)


class ScatterItem(Op):
    """zeros(shape) with g written at index: the adjoint of GetItem."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def compute(self, g):
        out = NDArray.make(self.shape, device=g.device, dtype=g.dtype).fill(0.0)
        out[self.index] = g
        return out

    def gradient(self, g, node):
        return get_item(g, self.index)


class Stack(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, axis):
        self.axis = axis

    def compute(self, *arrays):
        return nd_stack(arrays, self.axis)

    def gradient(self, g, node):
        return tuple(split(g, self.axis))


class Concatenate(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, axis):
        self.axis = axis

    def compute(self, *arrays):
        return nd_concatenate(arrays, self.axis)

    def gradient(self, g, node):
        out, start = [], 0
        axis = self.axis % g.ndim
        for x in node.inputs:
            n = x.shape[axis]
            out.append(get_item(g, (slice(None),) * axis + (slice(start, start + n),)))
            start += n
        return tuple(out)


class Split(TupleOp):
    """The inverse of stack: a tuple of the slices along axis."""
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, axis):
        self.axis = axis

    def compute(self, a):
        axis = check_axis(self.axis, a.ndim, "split")
        return tuple(a[(slice(None),) * axis + (i,)].compact() for i in range(a.shape[axis]))

    def gradient(self, g, node):
        return stack(list(g), self.axis)


class MakeTuple(TupleOp):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def compute(self, *args):
        return tuple(args)

    def gradient(self, g, node):
        return tuple(g)


class TupleGetItem(Op):
    saves_output = False   # its gradient does not read its output (autograd._check_versions)

    def __init__(self, index):
        self.index = self.tuple_index = index   # backward routes g to this element alone

    def compute(self, t):
        return t[self.index]


def reshape(a, shape):
    shape = tuple(shape)
    if shape == a.shape:
        return a
    return Reshape(shape)(a)


def permute(a, axes):
    return Permute(axes)(a)


def transpose(a, axes=None):
    """needle's transpose: swap two axes, by default the last two."""
    order = list(range(a.ndim))
    x, y = (-2, -1) if axes is None else (check_axis(n, a.ndim, "transpose") for n in axes)
    order[x], order[y] = order[y], order[x]
    return Permute(order)(a)


def broadcast_to(a, shape):
    shape = tuple(shape)
    if shape == a.shape:
        return a
    return BroadcastTo(shape)(a)


def get_item(a, index):
    return GetItem(index)(a)


def stack(tensors, axis=0):
    return Stack(axis)(*tensors)


def concatenate(tensors, axis=0):
    return Concatenate(axis)(*tensors)


cat = concatenate


def split(a, axis=0):
    return Split(axis)(a)


def make_tuple(*args):
    return MakeTuple()(*args)


def tuple_get_item(t, index):
    return TupleGetItem(index)(t)


def flatten(a, start_dim=1):
    return reshape(a, a.shape[:start_dim] + (-1,) if a.ndim > start_dim else a.shape)


# pad, flip, dilate: views and one strided copy ----------------------------------------
def pad(a, axes):
    """Zero-pad: axes holds one (before, after) pair per dimension (needle's pad)."""
    axes = tuple(tuple(int(v) for v in pair) for pair in axes)
    if len(axes) != a.ndim or any(len(pair) != 2 or min(pair) < 0 for pair in axes):
        raise ValueError(f"pad: need one non-negative (before, after) pair per dimension of "
                         f"{a.shape}, got {axes}")
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(a.shape, axes))
    index = tuple(slice(lo, lo + n) for n, (lo, _) in zip(a.shape, axes))
    return ScatterItem(index, shape)(a)


def flip(a, axes):
    """Reverse the order of elements along `axes` (a negative-stride view)."""
    axes = (axes,) if isinstance(axes, numbers.Integral) else tuple(axes)
    for ax in axes:
        if not -a.ndim <= ax < a.ndim:
            raise ValueError(f"flip: axis {ax} is out of range for shape {a.shape}")
    axes = {ax % a.ndim for ax in axes}
    return GetItem(tuple(slice(None, None, -1) if i in axes else slice(None)
                         for i in range(a.ndim)))(a)


def _dilate_index(shape, axes, dilation):
    axes = (axes,) if isinstance(axes, numbers.Integral) else tuple(axes)
    if dilation < 0:
        raise ValueError(f"dilate: dilation must be >= 0, got {dilation}")
    axes = {ax % len(shape) for ax in axes}
    return tuple(slice(None, None, dilation + 1) if i in axes else slice(None)
                 for i in range(len(shape))), axes


def dilate(a, axes, dilation):
    """Insert `dilation` zeros after each element along `axes` (needle's dilate)."""
    index, axes = _dilate_index(a.shape, axes, dilation)
    shape = tuple(n * (dilation + 1) if i in axes else n for i, n in enumerate(a.shape))
    return ScatterItem(index, shape)(a)


def undilate(a, axes, dilation):
    """Keep every (dilation+1)-th element along `axes`: dilate's inverse and adjoint."""
    index, _ = _dilate_index(a.shape, axes, dilation)
    return GetItem(index)(a)
