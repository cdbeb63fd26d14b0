"""Convolution and pooling ops (PyTorch's NCHW layout at the user level).

A convolution is one atomic op: im2col, one GEMM (batched over groups) and a
pass back to NCHW that adds the bias (kernel notes in mininet_ext/conv.pyx).
Its input and weight gradients are ops of their own (ConvGradInput,
ConvGradWeight), whose gradients are again conv / ConvGradInput /
ConvGradWeight, so higher-order gradients work and the graph stays small.
pad, flip, dilate and undilate are views plus one strided copy.
"""
import numbers

from ..autograd import Op
from ..ndarray import NDArray, int64, matmul as nd_matmul
from .math import require_float
from .shape import GetItem, ScatterItem, broadcast_to, reshape


def _pair(v, name):
    if isinstance(v, numbers.Integral):
        return (int(v), int(v))
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


def out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


class ConvParams:
    """stride, padding, dilation (pairs) and groups, checked once."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        if min(self.stride) < 1 or min(self.dilation) < 1 or self.groups < 1 or min(self.padding) < 0:
            raise ValueError(f"conv: stride {self.stride} and dilation {self.dilation} must be >= 1, "
                             f"padding {self.padding} >= 0, groups {self.groups} >= 1")

    def out_hw(self, xshape, kernel, what="conv"):
        oh, ow = (out_size(xshape[2 + i], kernel[i], self.stride[i], self.padding[i], self.dilation[i])
                  for i in range(2))
        if oh < 1 or ow < 1:
            raise ValueError(f"{what}: kernel {tuple(kernel)} (dilation {self.dilation}) is larger than "
                             f"the padded input {tuple(xshape)} with padding {self.padding}")
        return oh, ow


def _check_conv(x, w, b, p):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv: input {x.shape} and weight {w.shape} must both be 4-D "
                         "(N, C, H, W) and (K, C/groups, kh, kw)")
    n, c, _, _ = x.shape
    k, cg = w.shape[:2]
    if c % p.groups or k % p.groups:
        raise ValueError(f"conv: groups={p.groups} must divide the input channels ({c}) and the "
                         f"output channels ({k}); input {x.shape}, weight {w.shape}")
    if cg * p.groups != c:
        raise ValueError(f"conv: input {x.shape} has {c} channels but weight {w.shape} expects "
                         f"{cg * p.groups} ({cg} per group x {p.groups} groups)")
    if b is not None and tuple(b.shape) != (k,):
        raise ValueError(f"conv: bias of shape {b.shape} does not match {k} output channels")
    return p.out_hw(x.shape, w.shape[2:])


# NDArray-level pieces --------------------------------------------------------------
def _im2col(x, kernel, p, oh, ow):
    n, c = x.shape[:2]
    col = NDArray.make((c * kernel[0] * kernel[1], n, oh, ow), device=x.device, dtype=x.dtype)
    x.device.im2col(x, col, tuple(kernel), p.stride, p.padding, p.dilation, oh, ow)
    return col


def _grouped(a, groups):
    """(rows, cols) -> (groups, rows/groups, cols) view; 2-D when groups == 1."""
    rows, cols = a.shape[0], 1
    for n in a.shape[1:]:
        cols *= n          # not reshape(rows, -1): ambiguous when rows == 0
    a = a.reshape(rows, cols)
    return a if groups == 1 else a.reshape(groups, rows // groups, a.shape[1])


def _swap_last(a):
    return a.swapaxes(-1, -2)


def _rows_of(g, db=None):
    """(N, K, OH, OW) output grad -> compact (K, N*OH*OW); db[k] = its row sums."""
    g = g.compact()
    out = NDArray.make((g.shape[1], g.shape[0] * g.shape[2] * g.shape[3]), device=g.device,
                       dtype=g.dtype)
    g.device.from_nchw(g, out, db)
    return out


def _fused(dev):
    """CPU: implicit-GEMM kernels (mininet_ext/convgemm.pyx) that never build the column
    matrix; other devices: im2col + one GEMM + to_nchw."""
    return getattr(dev, "fused_conv", False)


def conv_forward(x, w, b, p):
    """(output, col) for input x, weight w, bias b (or None); col is None when fused."""
    oh, ow = p.out_hw(x.shape, w.shape[2:])
    out = NDArray.make((x.shape[0], w.shape[0], oh, ow), device=x.device, dtype=x.dtype)
    if _fused(x.device):
        x.device.conv2d(x.compact(), w.compact(), None if b is None else b.compact(), out, p)
        return out, None
    col = _im2col(x, w.shape[2:], p, oh, ow)
    y = nd_matmul(_grouped(w.compact(), p.groups), _grouped(col, p.groups))
    x.device.to_nchw(y, b, out)
    return out, col


def conv_grad_input(g, w, xshape, p, rows=_rows_of):
    """dx from the output grad g; rows(g) gives g as (K, N*P) rows (im2col path only)."""
    dx = NDArray.make(xshape, device=g.device, dtype=g.dtype)
    if _fused(g.device):
        g.device.conv2d_grad_input(g.compact(), w.compact(), dx, p)
        return dx
    oh, ow = p.out_hw(xshape, w.shape[2:])
    dcol = nd_matmul(_swap_last(_grouped(w.compact(), p.groups)), _grouped(rows(g), p.groups))
    g.device.col2im(dcol, dx, tuple(w.shape[2:]), p.stride, p.padding, p.dilation, oh, ow)
    return dx


def conv_grad_weight(g, x, wshape, p, rows=_rows_of, col=None):
    """dW from the output grad g and the input x (or its columns col, im2col path only)."""
    if _fused(g.device):
        dw = NDArray.make(wshape, device=g.device, dtype=g.dtype)
        g.device.conv2d_grad_weight(g.compact(), x.compact(), dw, p)
        return dw
    if col is None:
        col = _im2col(x, wshape[2:], p, g.shape[2], g.shape[3])
    dw = nd_matmul(_grouped(rows(g), p.groups), _swap_last(_grouped(col, p.groups)))
    return dw.reshape(wshape)


def conv_grad_bias(g, rows=None):
    """db[k]: the sum of g over batch and positions; rows(g) -> (rows, db) if already known."""
    if rows is not None and not _fused(g.device):
        return rows(g)[1]
    db = NDArray.make((g.shape[1],), device=g.device, dtype=g.dtype)
    if _fused(g.device):
        g.device.conv2d_grad_bias(g.compact(), db)
    else:
        _rows_of(g, db)
    return db


# ops --------------------------------------------------------------------------------
class Conv(Op):
    def __init__(self, params):
        self.p = params
        self.col = None      # the input's columns, kept for the weight gradient (im2col path)
        self._rows = None    # (grad NDArray, its (K, N*P) rows, bias grad), computed once

    def compute(self, x, w, b=None):
        out, self.col = conv_forward(x, w, b, self.p)
        return out

    def rows(self, g):
        """The output grad as (K, N*P) rows and the bias grad, computed once per g."""
        if self._rows is None or self._rows[0] is not g:
            db = NDArray.make((g.shape[1],), device=g.device, dtype=g.dtype)
            self._rows = (g, _rows_of(g, db), db)
        return self._rows[1], self._rows[2]

    def gradient(self, g, node):
        x, w = node.inputs[:2]
        has_b = len(node.inputs) == 3
        grads = [ConvGradInput(self.p, x.shape, self)(g, w) if x.requires_grad else None,
                 ConvGradWeight(self.p, w.shape, self)(g, x) if w.requires_grad else None]
        if has_b:
            grads.append(ConvGradBias(self)(g) if node.inputs[2].requires_grad else None)
        return tuple(grads)


class ConvGradInput(Op):
    """dx = conv^T(g, w): linear in g and in w."""

    def __init__(self, params, xshape, conv=None):
        self.p, self.xshape, self.conv = params, tuple(xshape), conv

    def compute(self, g, w):
        rows = (lambda a: self.conv.rows(a)[0]) if self.conv is not None else _rows_of
        return conv_grad_input(g, w, self.xshape, self.p, rows)

    def gradient(self, h, node):
        g, w = node.inputs
        return (Conv(self.p)(h, w) if g.requires_grad else None,
                ConvGradWeight(self.p, w.shape)(g, h) if w.requires_grad else None)


class ConvGradWeight(Op):
    """dW = g (x) x, contracted over batch and positions: linear in g and in x."""

    def __init__(self, params, wshape, conv=None):
        self.p, self.wshape, self.conv = params, tuple(wshape), conv

    def compute(self, g, x):
        if self.conv is not None:
            return conv_grad_weight(g, x, self.wshape, self.p, lambda a: self.conv.rows(a)[0],
                                    self.conv.col)
        return conv_grad_weight(g, x, self.wshape, self.p)

    def gradient(self, h, node):
        g, x = node.inputs
        return (Conv(self.p)(x, h) if g.requires_grad else None,
                ConvGradInput(self.p, x.shape)(g, h) if x.requires_grad else None)


class ConvGradBias(Op):
    """db[k] = sum of g over batch and positions."""

    def __init__(self, conv):
        self.conv = conv

    def compute(self, g):
        return conv_grad_bias(g, self.conv.rows)

    def gradient(self, h, node):
        g = node.inputs[0]
        return broadcast_to(reshape(h, (1, g.shape[1], 1, 1)), g.shape)


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch's conv2d) of x (N, C, H, W) with
    weight (K, C/groups, kh, kw) and an optional bias (K,)."""
    p = ConvParams(stride, padding, dilation, groups)
    require_float("conv", x, weight, bias)
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"conv: input, weight and bias dtypes differ ({x.dtype}, {weight.dtype}"
                         f"{', ' + str(bias.dtype) if bias is not None else ''})")
    _check_conv(x, weight, bias, p)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv(p)(*inputs)


conv2d = conv


# pooling ----------------------------------------------------------------------------
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

