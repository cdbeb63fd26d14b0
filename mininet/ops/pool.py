"""Max and average pooling (NCHW), with their gradients as ops (second order works)."""
from ..autograd import Op
from ..ndarray import NDArray, int64
from .conv import ConvParams, _pair
from .math import require_float


def _pool_params(kernel_size, stride, padding, dilation=1):
    kernel = _pair(kernel_size, "kernel_size")
    p = ConvParams(kernel if stride is None else stride, padding, dilation)
    if min(kernel) < 1:
        raise ValueError(f"pool: kernel_size {kernel} must be >= 1")
    if any(p.padding[i] * 2 > kernel[i] for i in range(2)):
        raise ValueError(f"pool: padding {p.padding} must be at most half the kernel {kernel}")
    return kernel, p


def _check_pool(x, kernel, p, what):
    require_float(what, x)
    if x.ndim != 4:
        raise ValueError(f"{what}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    return p.out_hw(x.shape, kernel, what)


class MaxPool2d(Op):
    def __init__(self, kernel, params):
        self.kernel, self.p = kernel, params
        self.idx = None

    def compute(self, x):
        oh, ow = self.p.out_hw(x.shape, self.kernel, "max_pool2d")
        x = x.compact()
        out = NDArray.make(x.shape[:2] + (oh, ow), device=x.device, dtype=x.dtype)
        self.idx = NDArray.make(out.shape, device=x.device, dtype=int64)
        x.device.maxpool(x, out, self.idx, self.kernel, self.p.stride, self.p.padding,
                         self.p.dilation)
        return out

    def gradient(self, g, node):
        return MaxPoolScatter(self.idx, node.inputs[0].shape)(g)


class MaxPoolScatter(Op):
    """Each output grad added at its window's argmax."""

    def __init__(self, idx, xshape):
        self.idx, self.xshape = idx, tuple(xshape)

    def compute(self, g):
        dx = NDArray.make(self.xshape, device=g.device, dtype=g.dtype)
        g.device.maxpool_backward(g.compact(), self.idx, dx)
        return dx

    def gradient(self, h, node):
        return MaxPoolGather(self.idx)(h)


class MaxPoolGather(Op):
    """out = h at each window's argmax: the adjoint of MaxPoolScatter."""

    def __init__(self, idx):
        self.idx = idx

    def compute(self, h):
        out = NDArray.make(self.idx.shape, device=h.device, dtype=h.dtype)
        h.device.maxpool_gather(h.compact(), self.idx, out)
        return out

    def gradient(self, g, node):
        return MaxPoolScatter(self.idx, node.inputs[0].shape)(g)


class AvgPool2d(Op):
    """Window mean with zero padding counted (PyTorch's count_include_pad=True);
    backward=True is its adjoint, mapping an output grad to the input's shape."""

    def __init__(self, kernel, params, xshape=None, backward=False):
        self.kernel, self.p, self.xshape, self.backward = kernel, params, xshape, backward

    def compute(self, a):
        a = a.compact()
        xshape = self.xshape if self.backward else a.shape
        oh, ow = self.p.out_hw(xshape, self.kernel, "avg_pool2d")
        shape = xshape if self.backward else a.shape[:2] + (oh, ow)
        out = NDArray.make(shape, device=a.device, dtype=a.dtype)
        a.device.avgpool(a, out, xshape, self.kernel, self.p.stride, self.p.padding, self.backward)
        return out

    def gradient(self, g, node):
        a = node.inputs[0]
        if self.backward:
            return AvgPool2d(self.kernel, self.p)(g)
        return AvgPool2d(self.kernel, self.p, a.shape, backward=True)(g)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    kernel, p = _pool_params(kernel_size, stride, padding, dilation)
    _check_pool(x, kernel, p, "max_pool2d")
    return MaxPool2d(kernel, p)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    kernel, p = _pool_params(kernel_size, stride, padding)
    _check_pool(x, kernel, p, "avg_pool2d")
    return AvgPool2d(kernel, p)(x)
