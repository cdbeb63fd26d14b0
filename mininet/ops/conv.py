"""Convolution ops (PyTorch's NCHW layout at the user level).

A convolution is one atomic op. A device with the "conv2d" capability (the CPU:
implicit GEMM in mininet_ext/convgemm.pyx, no column matrix) runs it as one kernel
call per pass; any other device composes it from core kernels: im2col, one GEMM
(batched over groups) and a pass back to NCHW that adds the bias. The input and
weight gradients are ops of their own (ConvGradInput, ConvGradWeight), whose
gradients are again Conv / ConvGradInput / ConvGradWeight, so higher-order
gradients work and the graph stays small. A 1x1 output map whose kernel window holds
the whole image (a ResNet's last stages) is one GEMM on any device with a GEMM bias
epilogue (_dense_taps), in the forward and both gradients. Pooling lives in ops/pool.py;
pad, flip, dilate in ops/shape.py.
"""
import functools
import numbers

from ..autograd import Op
from ..ndarray import NDArray, compact_strides, float32
from .. import amp as _ac
from .math import require_float
from .shape import broadcast_to, reshape


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
    """stride, padding, dilation (pairs) and groups, checked once. Never changed after it is
    made: equal params hash equal, so a layer's geometry is cached by them (_layer)."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        if min(self.stride) < 1 or min(self.dilation) < 1 or self.groups < 1 or min(self.padding) < 0:
            raise ValueError(f"conv: stride {self.stride} and dilation {self.dilation} must be >= 1, "
                             f"padding {self.padding} >= 0, groups {self.groups} >= 1")
        self._geometry = (self.stride, self.padding, self.dilation, self.groups)
        self._hash = hash(self._geometry)

    def __eq__(self, other):
        return isinstance(other, ConvParams) and self._geometry == other._geometry

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return "ConvParams(stride={}, padding={}, dilation={}, groups={})".format(*self._geometry)

    def geometry(self):
        """What a device's conv kernels take: stride, padding, dilation, groups."""
        return self._geometry

    def out_hw(self, xshape, kernel, what="conv"):
        oh, ow = (out_size(xshape[2 + i], kernel[i], self.stride[i], self.padding[i], self.dilation[i])
                  for i in range(2))
        if oh < 1 or ow < 1:
            raise ValueError(f"{what}: kernel {tuple(kernel)} (dilation {self.dilation}) is larger than "
                             f"the padded input {tuple(xshape)} with padding {self.padding}")
        return oh, ow


# typed: 1, 1.0 and True are different keys (1.0 must fail as uncached, not hit 1's entry)
@functools.lru_cache(maxsize=256, typed=True)
def _cached_params(stride, padding, dilation, groups):
    return ConvParams(stride, padding, dilation, groups)


def conv_params(stride=1, padding=0, dilation=1, groups=1):
    """ConvParams for these arguments, made once per distinct arguments (checking and
    pairing them cost ~3 us a call); lists (unhashable) are made anew each time."""
    try:
        return _cached_params(stride, padding, dilation, groups)
    except TypeError:   # unhashable, or a bad value: ConvParams below gives the error
        pass
    return ConvParams(stride, padding, dilation, groups)


def _check_conv(xshape, wshape, bshape, p):
    """The output map (oh, ow) of a valid layer; ValueError naming the problem otherwise."""
    if len(xshape) != 4 or len(wshape) != 4:
        raise ValueError(f"conv: input {xshape} and weight {wshape} must both be 4-D "
                         "(N, C, H, W) and (K, C/groups, kh, kw)")
    n, c, _, _ = xshape
    k, cg = wshape[:2]
    if c % p.groups or k % p.groups:
        raise ValueError(f"conv: groups={p.groups} must divide the input channels ({c}) and the "
                         f"output channels ({k}); input {xshape}, weight {wshape}")
    if cg * p.groups != c:
        raise ValueError(f"conv: input {xshape} has {c} channels but weight {wshape} expects "
                         f"{cg * p.groups} ({cg} per group x {p.groups} groups)")
    if bshape is not None and bshape != (k,):
        raise ValueError(f"conv: bias of shape {bshape} does not match {k} output channels")
    return p.out_hw(xshape, wshape[2:])


class _Layer:
    """What a layer's input shape, weight shape and params fix, worked out once (_layer):
    the output map, the 1x1-map GEMM taps, the shapes and strides of the arrays made."""
    __slots__ = ("oh", "ow", "kernel", "spans", "out_shape", "out_strides",
                 "col_shape", "col_strides", "pixels", "xhw")

    def __init__(self, xshape, wshape, p):
        self.oh, self.ow = oh, ow = p.out_hw(xshape, wshape[2:])
        self.kernel = tuple(wshape[2:])
        self.spans = _dense_spans(xshape, wshape, p, oh, ow)
        n, c = xshape[:2]
        self.out_shape = (n, wshape[0], oh, ow)
        self.out_strides = compact_strides(self.out_shape)
        self.col_shape = (c * self.kernel[0] * self.kernel[1], n, oh, ow)
        self.col_strides = compact_strides(self.col_shape)
        self.pixels = oh * ow
        self.xhw = tuple(xshape[2:])


@functools.lru_cache(maxsize=1024)   # a model asks the same few layers every step
def _layer(xshape, wshape, p):
    return _Layer(xshape, wshape, p)


# NDArray-level pieces --------------------------------------------------------------
def _im2col(x, kernel, p, oh, ow, layer=None):
    n, c = x.shape[:2]
    if layer is None:
        col = NDArray.make((c * kernel[0] * kernel[1], n, oh, ow), device=x.device, dtype=x.dtype)
    else:
        col = NDArray.make(layer.col_shape, layer.col_strides, x.device, dtype=x.dtype)
    x.device.im2col(x, col, tuple(kernel), p.stride, p.padding, p.dilation, oh, ow)
    return col


def _grouped(a, groups):
    """(rows, cols) -> (groups, rows/groups, cols) view; 2-D when groups == 1. A view
    made directly (a general reshape costs ~5 us a call, three to four a pass)."""
    a = a.compact()
    rows, cols = a.shape[0], 1
    for n in a.shape[1:]:
        cols *= n          # not size // rows: rows may be 0
    if groups == 1:
        shape, strides = (rows, cols), (cols, 1)
    else:
        shape, strides = (groups, rows // groups, cols), (rows // groups * cols, cols, 1)
    return NDArray.make(shape, strides, a.device, a.handle, a.offset, a.dtype)


def _swap_last(a):
    """The last two axes swapped, a view (made directly: swapaxes' checks cost more)."""
    shape, strides = a.shape, a.strides
    return NDArray.make(shape[:-2] + (shape[-1], shape[-2]),
                        strides[:-2] + (strides[-1], strides[-2]), a.device, a.handle, a.offset,
                        a.dtype)


def _view(a, shape):
    """A compact view of compact array a with the same size."""
    return NDArray.make(shape, compact_strides(shape), a.device, a.handle, a.offset, a.dtype)


def _rows_of(g, db=None):
    """(N, K, OH, OW) output grad -> compact (K, N*OH*OW); db[k] = its row sums."""
    g = g.compact()
    out = NDArray.make((g.shape[1], g.shape[0] * g.shape[2] * g.shape[3]), device=g.device,
                       dtype=g.dtype)
    g.device.from_nchw(g, out, db)
    return out


def _fused(dev, oh, ow, wshape=None, p=None, xhw=None):
    """The device's implicit-GEMM kernels (its conv2d capability) for outputs of at least
    dev.conv2d_min_pixels pixels an image (a backend tuning), or smaller ones where the
    device says its kernels win for this layer (wshape, p given: forward; with the input
    map xhw: the input gradient); im2col + one GEMM + to_nchw otherwise. Asked anew every
    call: tests and tunings change the device's answers (its own cache keys them)."""
    if not dev.has("conv2d"):
        return False
    if oh * ow >= dev.conv2d_min_pixels:
        return True
    if wshape is None:
        return False
    if xhw is None:
        return dev.conv2d_small(wshape, p.geometry(), oh * ow, out_hw=(oh, ow))
    return dev.conv2d_small(wshape, p.geometry(), xhw[0] * xhw[1], transposed=True,
                            out_hw=(oh, ow))


# Under bf16 autocast, strided layers with at least this many input channels a group and
# a kernel of at most 3x3 run im2col + the bf16 GEMM rather than the fused fp32 kernels on
# rounded operands. Measured (forward / input grad / weight grad, bf16 GEMM path vs fused):
# 3x3/2 from 64-128 channels 1.35-2.2x / 1.3-1.5x / 1.0-1.5x, from 32 channels 1.3x /
# 0.95x / 1.1x, 1x1/2 from 128 channels 2.0x / 1.3x / 1.3x; but 5x5/2 from 16 or 64
# channels 0.6-0.9x / 0.6-1.3x / 0.6-0.7x, 7x7/2-4 from 3 channels 0.5-0.9x. Stride-1 fused
# layers (implicit GEMM, Winograd) stayed 1.2-3x faster than im2col + the bf16 GEMM at
# every shape measured (MNIST CNN, cifar-cnn, 64-128 channels at 56x56..4x4, groups,
# dilation), so they keep the fused kernels.
BF16_STRIDED_MIN_CHANNELS = 32
BF16_STRIDED_MAX_TAPS = 9


def _amx_at(precision, dev, xshape, wshape, p):
    """Under bf16, the device's direct bf16 convolution (AMX tiles, no im2col) for this
    layer and its gradients, where it has one and takes the layer."""
    return (precision is not None and dev.has("conv2d_bf16")
            and dev.conv2d_bf16_fits(xshape, wshape, *p.geometry()))


def _lowp(precision, dtype):
    """The product precision an array of dtype gets: bf16 only for float32 arrays."""
    return precision if dtype is float32 else None


def _fused_at(precision, dev, oh, ow, wshape, p, xhw=None):
    """_fused, knowing the products' precision: under bf16 some fused layers run faster
    as im2col + the bf16 GEMM (BF16_STRIDED_MIN_CHANNELS)."""
    fused = _fused(dev, oh, ow, wshape, p, xhw)
    if not fused or precision is None:
        return fused
    gemm_wins = (p.stride != (1, 1) and wshape[1] >= BF16_STRIDED_MIN_CHANNELS
                 and wshape[2] * wshape[3] <= BF16_STRIDED_MAX_TAPS)
    return not gemm_wins


# 1x1 output maps: one GEMM ----------------------------------------------------------
def _dense_taps(dev, xshape, wshape, p, oh, ow):
    """((i0, i1), (j0, j1)), the kernel taps that read the image, when the convolution is
    a GEMM over whole images: a 1x1 output map whose window, past the padding, holds the
    image once (a ResNet's 2x2 -> 1x1 and 1x1 -> 1x1 layers, a kernel the image's size):
    y (N, K) = x (N, C*H*W) @ W[:, :, i0:i1, j0:j1] (K, C*H*W)^T, no im2col, no pass
    back to NCHW ((N, K, 1, 1) is (N, K)). None otherwise, or where the device has no
    GEMM epilogue for the bias (its fused kernels run those layers)."""
    spans = _dense_spans(xshape, wshape, p, oh, ow)
    if spans is None or not dev.has("bias_act"):
        return None
    return spans


def _dense_spans(xshape, wshape, p, oh, ow):
    """_dense_taps' answer on a device with the bias epilogue (shapes only)."""
    if oh != 1 or ow != 1 or p.groups != 1 or p.dilation != (1, 1):
        return None
    spans = tuple((p.padding[a], p.padding[a] + xshape[2 + a]) for a in range(2))
    if spans[0][1] > wshape[2] or spans[1][1] > wshape[3]:
        return None
    return spans


def _layer_taps(dev, layer):
    """The layer's dense taps (_dense_taps) on device dev, from its cached geometry."""
    return layer.spans if layer.spans is not None and dev.has("bias_act") else None


def _dense_weight(w, spans):
    """W's live taps as a (K, C*T) array: a view of the whole kernel of a compact W or of
    one tap (i0, j0) of any W (strided over K and C); else a compact copy of the window
    w[:, :, i0:i1, j0:j1] (K * C * T values, as small as the image). The live taps are
    the image's pixels one to one, in its (h, w) order, so x (N, C, H, W) flattened is
    the GEMM's other operand as it stands."""
    k, c, kh, kw = w.shape
    (i0, i1), (j0, j1) = spans
    taps = (i1 - i0) * (j1 - j0)
    if taps == kh * kw:
        w = w.compact()
        return NDArray.make((k, c * taps), (c * taps, 1), w.device, w.handle, w.offset,
                            w.dtype)
    if taps == 1:
        s = w.strides
        return NDArray.make((k, c), (s[0], s[1]), w.device, w.handle,
                            w.offset + i0 * s[2] + j0 * s[3], w.dtype)
    return _view(w[:, :, i0:i1, j0:j1].compact(), (k, c * taps))


def _flat(a):
    """(N, ...) -> (N, rest), a view of a compact array."""
    rest = 1
    for d in a.shape[1:]:
        rest *= d          # not size // N: N may be 0
    return _view(a.compact(), (a.shape[0], rest))


def _dense_forward(x, w, b, spans, relu, precision):
    """y (N, K, 1, 1) = x (N, C*H*W) @ W's live taps^T, + bias (max(0, .) of it with relu)."""
    n, k = x.shape[0], w.shape[0]
    y = _ac.matmul(_flat(x), _swap_last(_dense_weight(w, spans)), precision)
    if b is not None or relu:
        x.device.bias_act(y, None if b is None else b.compact(), relu)
    return _view(y, (n, k, 1, 1))


_RELU = {"relu": True}   # to_nchw's and conv2d's keyword for the ReLU epilogue
_NO_RELU: dict = {}      # (not relu=False: a device without the epilogue takes no keyword)


def conv_forward(x, w, b, p, relu=False, precision=None):
    """(output, col) for input x, weight w, bias b (or None); col is None when fused.
    relu: max(0, .) of the output, taken as it is written (a device whose conv2d and
    to_nchw take relu: the CPU). precision "bf16": x and w read as bf16 values, float32
    sums (the fused kernels on rounded copies, or the bf16 GEMM, which rounds as it packs:
    then col holds x's unrounded columns)."""
    if precision is not None:
        precision = _lowp(precision, x.dtype)
    dev = x.device
    layer = _layer(x.shape, w.shape, p)
    spans = _layer_taps(dev, layer)
    if spans is not None:
        return _dense_forward(x, w, b, spans, relu, precision), None
    oh, ow = layer.oh, layer.ow
    out = NDArray.make(layer.out_shape, layer.out_strides, dev, dtype=x.dtype)
    fuse = _RELU if relu else _NO_RELU
    if _amx_at(precision, dev, x.shape, w.shape, p):
        dev.conv2d_bf16(x.compact(), w.compact(), None if b is None else b.compact(), out,
                        p.padding, relu=relu)
        return out, None
    if _fused_at(precision, dev, oh, ow, w.shape, p):
        if precision is not None:
            x, w = _ac.round_to(x, precision), _ac.round_to(w, precision)
        dev.conv2d(x.compact(), w.compact(), None if b is None else b.compact(), out,
                   *p.geometry(), **fuse)
        return out, None
    col = _im2col(x, layer.kernel, p, oh, ow, layer)
    y = _ac.matmul(_grouped(w, p.groups), _grouped(col, p.groups), precision)
    dev.to_nchw(y, b, out, **fuse)
    return out, col


def _rounder(precision, rounded):
    """rounded, or a function rounding an array to `precision` (identity for None)."""
    return rounded or (lambda a: _ac.round_to(a, precision))


def conv_grad_input(g, w, xshape, p, rows=_rows_of, precision=None, rounded=None):
    """dx from the output grad g; rows(g) gives g as (K, N*P) rows (im2col path only).
    precision "bf16": g and w read as bf16 values (rounded(g): g rounded, if cached)."""
    if precision is not None:
        precision = _lowp(precision, g.dtype)
    dev = g.device
    layer = _layer(tuple(xshape), w.shape, p)
    spans = _layer_taps(dev, layer)
    if spans is not None:   # dx (N, C*T) = g (N, K) @ W's live taps
        return _view(_ac.matmul(_flat(g), _dense_weight(w, spans), precision), tuple(xshape))
    dx = NDArray.make(xshape, device=dev, dtype=g.dtype)
    if _amx_at(precision, dev, tuple(xshape), w.shape, p):
        dev.conv2d_bf16_grad_input(g.compact(), w.compact(), dx, p.padding)
        return dx
    if _fused_at(precision, dev, layer.oh, layer.ow, w.shape, p, xhw=layer.xhw):
        if precision is not None:
            g, w = _rounder(precision, rounded)(g), _ac.round_to(w, precision)
        dev.conv2d_grad_input(g.compact(), w.compact(), dx, *p.geometry())
        return dx
    dcol = _ac.matmul(_swap_last(_grouped(w, p.groups)), _grouped(rows(g), p.groups),
                      precision)
    dev.col2im(dcol, dx, layer.kernel, p.stride, p.padding, p.dilation, layer.oh, layer.ow)
    return dx


def conv_grad_weight(g, x, wshape, p, rows=_rows_of, col=None, precision=None, rounded=None):
    """dW from the output grad g and the input x (or its columns col, im2col path only).
    Small maps take the fused kernels where the forward does (the layer's shape decides:
    Winograd's weight gradient wins there too). precision as conv_grad_input's."""
    if precision is not None:
        precision = _lowp(precision, g.dtype)
    dev = g.device
    wshape = tuple(wshape)
    layer = _layer(x.shape, wshape, p)
    spans = _layer_taps(dev, layer)
    if spans is not None:
        return _dense_grad_weight(g, x, wshape, spans, precision)
    if _amx_at(precision, dev, x.shape, wshape, p):
        dw = NDArray.make(wshape, device=dev, dtype=g.dtype)
        dev.conv2d_bf16_grad_weight(g.compact(), x.compact(), dw, p.padding)
        return dw
    if _fused_at(precision, dev, layer.oh, layer.ow, wshape, p):
        if precision is not None:
            g, x = _rounder(precision, rounded)(g), _ac.round_to(x, precision)
        dw = NDArray.make(wshape, device=dev, dtype=g.dtype)
        dev.conv2d_grad_weight(g.compact(), x.compact(), dw, *p.geometry())
        return dw
    if col is None:
        col = _im2col(x, layer.kernel, p, layer.oh, layer.ow, layer)
    # dW^T = col @ rows^T, then transposed: a long-K product runs faster with the wide
    # operand as A than rows @ col^T does
    dwt = _ac.matmul(_grouped(col, p.groups), _swap_last(_grouped(rows(g), p.groups)), precision)
    return _view(_swap_last(dwt).compact(), wshape)


def _dense_grad_weight(g, x, wshape, spans, precision):
    """dW's live taps (K, C*T) = g (N, K)^T @ x (N, C*T); zeros at the taps that read
    only padding."""
    dwt = _ac.matmul(_swap_last(_flat(g)), _flat(x), precision)
    if spans == ((0, wshape[2]), (0, wshape[3])):
        return _view(dwt, wshape)
    dw = NDArray.make(wshape, device=g.device, dtype=g.dtype)
    dw.fill(0)
    (i0, i1), (j0, j1) = spans
    dw[:, :, i0:i1, j0:j1] = dwt.reshape(wshape[:2] + (i1 - i0, j1 - j0))
    return dw


def conv_grad_bias(g, known=None):
    """db[k]: the sum of g over batch and positions; known: db if already summed (with
    g's (K, N*P) rows, for the im2col gradients), else None."""
    dev, (n, k, oh, ow) = g.device, g.shape
    if known is not None:
        return known
    if oh * ow == 1 and dev.has("bias_act"):   # 1x1 map: (N, K) rows
        return _flat(g).sum(axis=0)
    db = NDArray.make((k,), device=dev, dtype=g.dtype)
    if dev.has("conv2d"):   # channel sums in place: no transposed copy of g
        dev.conv2d_grad_bias(g.compact(), db)
    else:
        _rows_of(g, db)
    return db


# ops --------------------------------------------------------------------------------
class Conv(Op):
    def __init__(self, params):
        self.p = params
        self.col = None      # the input's columns, kept for the weight gradient (im2col path)
        self._rows = None    # (grad NDArray, its (K, N*P) rows, bias grad), computed once

    precision = None   # "bf16" under mininet.autocast (at forward): x, w, grads as bf16
    _g16 = None        # (grad, grad rounded to bf16), shared by the two gradients
    bias_grad = None   # (grad, its bias gradient) where already summed (ops/conv_fused.py)

    def compute(self, x, w, b=None):
        # bf16 inputs, float32 sums: the bf16 GEMM, or the fp32 kernels on rounded values
        self.precision = self.precision or _ac._state.precision
        out, self.col = conv_forward(x, w, b, self.p, precision=self.precision)
        return out

    def round_grad(self, g):
        """The output grad rounded to bf16 (bf16 autocast), once per g."""
        if self._g16 is None or self._g16[0] is not g:
            self._g16 = (g, _ac.round_to(g, self.precision))
        return self._g16[1]

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
        if self.conv is None:
            return conv_grad_input(g, w, self.xshape, self.p)
        return conv_grad_input(g, w, self.xshape, self.p, lambda a: self.conv.rows(a)[0],
                               self.conv.precision, self.conv.round_grad)

    def gradient(self, h, node):
        g, w = node.inputs
        return (Conv(self.p)(h, w) if g.requires_grad else None,
                ConvGradWeight(self.p, w.shape)(g, h) if w.requires_grad else None)


class ConvGradWeight(Op):
    """dW = g (x) x, contracted over batch and positions: linear in g and in x."""

    def __init__(self, params, wshape, conv=None):
        self.p, self.wshape, self.conv = params, tuple(wshape), conv

    def compute(self, g, x):
        if self.conv is None:
            return conv_grad_weight(g, x, self.wshape, self.p)
        return conv_grad_weight(g, x, self.wshape, self.p, lambda a: self.conv.rows(a)[0],
                                self.conv.col, self.conv.precision, self.conv.round_grad)

    def gradient(self, h, node):
        g, x = node.inputs
        return (Conv(self.p)(x, h) if g.requires_grad else None,
                ConvGradInput(self.p, x.shape)(g, h) if x.requires_grad else None)


class ConvGradBias(Op):
    """db[k] = sum of g over batch and positions."""

    def __init__(self, conv):
        self.conv = conv

    def compute(self, g):
        conv = self.conv
        done = conv.bias_grad   # (g, db) from a fused ReLU's backward pass
        if done is not None:
            conv.bias_grad = None   # (holds a whole map: not past this step)
            if done[0] is g:
                return done[1]
        # the im2col gradients transposed g to rows and summed them on the way
        rows = conv._rows
        return conv_grad_bias(g, rows[2] if rows is not None and rows[0] is g else None)

    def gradient(self, h, node):
        g = node.inputs[0]
        return broadcast_to(reshape(h, (1, g.shape[1], 1, 1)), g.shape)


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch's conv2d) of x (N, C, H, W) with
    weight (K, C/groups, kh, kw) and an optional bias (K,)."""
    return conv_call(Conv, "conv", x, weight, bias, stride, padding, dilation, groups)


def conv_call(op_class, name, x, weight, bias, stride, padding, dilation, groups):
    """op_class(params)(x, weight[, bias]) after the checks (errors name `name`), with
    the weight cropped to its one live tap where the others read only padding. The shape
    checks and the crop are worked out once per layer (_call_plan): ~25 us of Python a
    call before, on a layer whose kernels may take less."""
    p = conv_params(stride, padding, dilation, groups)
    dtype = x.dtype
    if dtype.kind != "f" or weight.dtype is not dtype or \
            (bias is not None and bias.dtype is not dtype):
        _check_dtypes(name, x, weight, bias)
    crop = _call_plan(tuple(x.shape), tuple(weight.shape),
                      None if bias is None else tuple(bias.shape), p)
    if crop is not None:
        dense, taps, cropped = crop
        if dense is None or not x.device.has("bias_act"):   # (not a _dense_taps layer)
            # a slice op: its gradient puts dW back in place (the dense path reads the
            # tap as a view of the whole weight, and its dW gradient is whole)
            weight, p = weight[taps], cropped
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return op_class(p)(*inputs)


def _check_dtypes(name, x, weight, bias):
    """TypeError for an integer input, ValueError for mixed float dtypes."""
    require_float(name, x, weight, bias)
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"{name}: input, weight and bias dtypes differ ({x.dtype}, "
                         f"{weight.dtype}{', ' + str(bias.dtype) if bias is not None else ''})")


@functools.lru_cache(maxsize=1024)   # a model asks the same few layers every step
def _call_plan(xshape, wshape, bshape, p):
    """conv_call's checks (ValueError naming the problem; not cached), then the crop
    where one tap alone reads the image: (the layer's dense taps on a device with the
    bias epilogue, which keep the whole weight, the weight index keeping the live tap,
    the cropped layer's params), else None."""
    oh, ow = _check_conv(xshape, wshape, bshape, p)
    live = _live_taps(xshape[2:], wshape[2:], p.stride, p.padding, p.dilation, (oh, ow))
    if live is None or not _one_tap(live):
        return None
    (i0, i1), (j0, j1) = live
    taps = (slice(None), slice(None), slice(i0, i1), slice(j0, j1))
    cropped = conv_params(p.stride, (p.padding[0] - i0, p.padding[1] - j0), p.dilation, p.groups)
    return _dense_spans(xshape, wshape, p, oh, ow), taps, cropped


@functools.lru_cache(maxsize=256)   # a model asks the same few geometries every step
def _live_taps(hw, kernel, stride, padding, dilation, out):
    """((i0, i1), (j0, j1)): the kernel rows and columns that read the image for some
    output, when others read only padding, else None. A 3x3 kernel with padding 1 on a
    1x1 map (a ResNet's last stage) has one live tap: the GEMM would be 8/9 zeros.
    Cropped, the kernel takes padding - i0 and must give the same output size."""
    if dilation != (1, 1):
        return None
    spans = []
    for axis in range(2):
        live = [i for i in range(kernel[axis])
                if _reads_image(i, stride[axis], padding[axis], hw[axis], out[axis])]
        if not live or live != list(range(live[0], live[-1] + 1)):
            return None
        spans.append((live[0], live[-1] + 1))
    if spans == [(0, kernel[0]), (0, kernel[1])]:
        return None
    new = ConvParams(stride, tuple(padding[a] - spans[a][0] for a in range(2)))
    if min(new.padding) < 0 or new.out_hw((1, 1) + hw, [b - a for a, b in spans]) != tuple(out):
        return None
    return tuple(spans)


def _one_tap(spans):
    """Crop only to a single live tap: a cropped weight of runs of 2-3 values (ResNet9's
    64 -> 128 layer on a 2x2 map keeps 2x2 of 3x3) cost 0.1-0.7 ms to copy, 4-25x what
    the skipped taps save in the GEMM; one value a run (a 1x1 map) copies fast."""
    return all(hi - lo == 1 for lo, hi in spans)


def _reads_image(tap, stride, pad, size, n_out):
    """Some output o < n_out reads input o*stride - pad + tap inside [0, size)."""
    lo = max(0, -((tap - pad) // stride))              # ceil((pad - tap) / stride)
    hi = min(n_out, -((tap - pad - size) // stride))   # ceil((size + pad - tap) / stride)
    return lo < hi

conv2d = conv
