"""Shape ops (views in the forward pass) and joins, with gradients."""
from ..autograd import Op, Tensor, TupleOp
from ..ndarray import NDArray, concatenate as nd_concatenate, stack as nd_stack


class Reshape(Op):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.reshape(self.shape)

    def gradient(self, g, node):
        return reshape(g, node.inputs[0].shape)


class Permute(Op):
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
    def __init__(self, shape):
        self.shape = tuple(shape)

    def compute(self, a):
        return a.broadcast_to(self.shape)

    def gradient(self, g, node):
        from .math import unbroadcast
        return unbroadcast(g, node.inputs[0].shape)


class GetItem(Op):
    def __init__(self, index):
        self.index = index

    def compute(self, a):
        return a[self.index]

    def gradient(self, g, node):
        return ScatterItem(self.index, node.inputs[0].shape)(g)


class ScatterItem(Op):
    """zeros(shape) with g written at index: the adjoint of GetItem."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def compute(self, g):
        out = NDArray.make(self.shape, device=g.device, dtype=g.dtype).fill(0.0)
        out[self.index] = g
        return out

    def gradient(self, g, node):
        return get_item(g, self.index)


class Stack(Op):
    def __init__(self, axis):
        self.axis = axis

    def compute(self, *arrays):
        return nd_stack(arrays, self.axis)

    def gradient(self, g, node):
        return tuple(split(g, self.axis))


class Concatenate(Op):
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

    def __init__(self, axis):
        self.axis = axis

    def compute(self, a):
        axis = self.axis % a.ndim
        return tuple(a[(slice(None),) * axis + (i,)].compact() for i in range(a.shape[axis]))

    def gradient(self, g, node):
        return stack(list(g), self.axis)


class MakeTuple(TupleOp):
    def compute(self, *args):
        return tuple(args)

    def gradient(self, g, node):
        return tuple(g)


class TupleGetItem(Op):
    def __init__(self, index):
        self.index = index

    def compute(self, t):
        return t[self.index]

    def gradient(self, g, node):
        t = node.inputs[0]
        parts = []
        for i, x in enumerate(t.cached_data):
            parts.append(g if i == self.index else
                         Tensor.make_const(NDArray.make(x.shape, device=x.device, dtype=x.dtype).fill(0.0)))
        return MakeTuple()(*parts)


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
    x, y = (-2, -1) if axes is None else axes
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
