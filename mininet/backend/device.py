"""The Device protocol and the registry of backends.

A backend is a Device subclass: it owns memory handles and runs the same
named kernels (copy, fill, binary, binary_scalar, unary, reduce, matmul, ...)
on NDArrays. NDArray holds the metadata (shape, strides, offset) and calls
these; the kernels see raw handles plus offsets and strides in items.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

DTYPES = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("int64"): 2,
          np.dtype("bool"): 3}
# the logical kernel's ops (its C and CUDA switches use these numbers; others trap)
LOGICAL = {"and": 0, "or": 1, "xor": 2}


class DeviceUnavailable(RuntimeError):
    """Raised when a backend cannot be used on this machine; says why."""


class Device:
    """A backend. `capabilities` names the fused kernels it has beyond the core protocol
    (ops ask dev.has("conv2d") and otherwise compose the op from core kernels):
    conv2d (implicit-GEMM convolution), softmax_xent (fused cross-entropy), batchnorm,
    rows (take_rows / add_rows: embedding lookups), lstm (lstm_gates / lstm_gates_grad),
    lstm_seq, gru_seq and rnn_seq (lstm_sequence / gru_sequence / rnn_sequence and their
    _grad: a recurrent layer's steps in one call),
    dropout (dropout_mask: masks from a counter-based generator on the device),
    share_host (share(numpy array): a handle over host memory, and array_view(NDArray): a
    numpy array over a compact array's memory, both without a copy), xent_checks_labels
    (softmax_xent and its gradient raise ValueError for a label outside [0, C): the loss
    then needs no host pass over the labels)."""
    name = "device"
    capabilities: frozenset[str] = frozenset()
    conv2d_min_pixels = 0   # with conv2d: the smallest output map (pixels) it is used for
    synchronous = True      # kernels have finished when they return (reading a value is free)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        from . import capture   # a class made during a kernel graph capture is wrapped too
        capture.new_device_class(cls)

    def has(self, capability):
        return capability in self.capabilities

    def conv2d_small(self, wshape, geometry, pixels, transposed=False, out_hw=None):
        """Whether conv2d's kernels should also run a layer whose output map is smaller
        than conv2d_min_pixels: weight shape (K, C, kh, kw), geometry (stride, padding,
        dilation, groups), pixels of the map computed (the output, or the input gradient
        when transposed: that layer's input-gradient convolution), out_hw its (height,
        width) where known."""
        return False

    def __repr__(self):
        return f"{self.name}()"

    def __eq__(self, other):
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def enabled(self):
        return True

    def synchronize(self):
        """Wait until every queued kernel has finished (a no-op where kernels are synchronous)."""

    # The kernel protocol. Arrays are NDArrays: a kernel reads a.handle (the device buffer),
    # a.offset (the first element, in items), a.shape and a.strides (in items), and writes
    # outputs it is handed, compact and preallocated; "compact" below means C-contiguous
    # from a.offset. Every backend implements the core kernels; a capability's kernels
    # only where it declares that capability (KERNELS below; test_device_protocol.py
    # checks every device against it).
    def alloc(self, nbytes):
        """A buffer of nbytes bytes (contents undefined) for NDArray handles."""
        raise NotImplementedError

    def from_numpy(self, arr, out):
        """Copy numpy array arr (any layout, cast to out's dtype) into compact out."""
        raise NotImplementedError

    def to_numpy(self, a):
        """A new numpy array holding a's values (a may be any view)."""
        raise NotImplementedError

    def copy(self, src, dst):
        """dst[...] = src[...]: same shape, any strides on both sides."""
        raise NotImplementedError

    def cast(self, src, dst):
        """dst (compact) = src (any view, same shape) converted to dst's dtype, as numpy's
        astype (float to int64 truncates toward zero; to bool: x != 0, so NaN is true)."""
        raise NotImplementedError

    def fill(self, dst, value):
        """Every element of dst (any strides, float, int64 or bool) set to value (a bool
        takes value != 0)."""
        raise NotImplementedError

    def binary(self, op, a, b, out):
        """out = BINARY_OPS[op](a, b) elementwise: a and b float views of out's shape
        (stride 0 where broadcast), out compact, of their dtype, or bool: then out = op(a, b)
        != 0 (comparisons write their masks directly)."""
        raise NotImplementedError

    def binary_scalar(self, op, a, value, reverse, out):
        """out = op(a, value), or op(value, a) when reverse; a any view, out compact (bool
        as in binary)."""
        raise NotImplementedError

    def logical(self, op, a, b, out):
        """out = a and/or/xor b (LOGICAL[op]) elementwise: a, b bool views of out's shape
        (stride 0 where broadcast), out bool compact; any nonzero byte reads as true."""
        raise NotImplementedError

    def unary(self, op, a, out):
        """out = UNARY_OPS[op](a): a any view of out's shape, out compact."""
        raise NotImplementedError

    def reduce(self, op, a, outer, red, inner, out):
        """REDUCE_OPS[op] over the middle axis of compact a seen as (outer, red, inner); out
        (outer * inner) compact, int64 for argmax/argmin. red == 0: sums are 0."""
        raise NotImplementedError

    # A device may give matmul_new(a, b, m, n, k) -> a new buffer holding the 2-D product
    # (the CPU's, to save a 64^3 product's separate allocation call); None: alloc + matmul.
    # Not used while a kernel graph captures (a replay must write the captured buffer).
    matmul_new = None

    def matmul(self, a, b, out, m, n, k, a_batch=None, b_batch=None):
        """out[i] (m, n) = a[i] (m, k) @ b[i] (k, n): a, b any strides in their last two
        axes; a_batch/b_batch: int64 numpy arrays of each batch's item offset (or None)."""
        raise NotImplementedError

    def im2col(self, x, col, kernel, stride, pad, dil, oh, ow):
        """col (C*kh*kw, N, oh, ow) compact from x (N, C, H, W) any strides; 0 in padding."""
        raise NotImplementedError

    def col2im(self, col, dx, kernel, stride, pad, dil, oh, ow):
        """dx (N, C, H, W) = the sum of col's taps at their input positions (im2col's adjoint)."""
        raise NotImplementedError

    def to_nchw(self, y, bias, out):
        """out (N, K, P) = y (K, N, P) transposed, plus bias[k] (or None)."""
        raise NotImplementedError

    def from_nchw(self, g, out, db):
        """out (K, N*P) = g (N, K, P) transposed; db[k] = its row sums (db may be None)."""
        raise NotImplementedError

    def maxpool(self, x, out, idx, kernel, stride, pad, dil):
        """out (N, C, oh, ow) = window maxima of compact x (padding never wins), idx the
        int64 flat position of each maximum within its image plane."""
        raise NotImplementedError

    def maxpool_backward(self, g, idx, dx):
        """dx = 0, then g added at idx (overlapping windows add up)."""
        raise NotImplementedError

    def maxpool_gather(self, h, idx, out):
        """out = h at idx: the max pool's gradient's own gradient."""
        raise NotImplementedError

    def avgpool(self, src, dst, x_shape, kernel, stride, pad, backward):
        """Window means (padding counted, as PyTorch's default), or with backward their
        adjoint: src the output grad, dst the input grad of shape x_shape."""
        raise NotImplementedError

    def sgd_step(self, p, g, v, lr, momentum, dampening, wd, nesterov, first):
        """p updated in place by PyTorch's SGD (momentum buffer v, first step when first)."""
        raise NotImplementedError

    def adam_step(self, p, g, m, v, lr, b1, b2, eps, wd, decoupled, t):
        """p, m, v updated in place by Adam (AdamW when decoupled) at step t (1-based)."""
        raise NotImplementedError

    def adam_steps(self, ps, gs, ms, vs, steps, lr, b1, b2, eps, wd, decoupled):
        """adam_step for each parameter (lists of one dtype; steps[k] is ps[k]'s t). A
        backend may fuse them into one kernel; by default, one adam_step each."""
        for p, g, m, v, t in zip(ps, gs, ms, vs, steps):
            self.adam_step(p, g, m, v, lr, b1, b2, eps, wd, decoupled, t)

    # capability conv2d
    def conv2d(self, x, w, bias, out, stride, padding, dilation, groups):
        """out (N, K, oh, ow) = conv(x, w) + bias (or None); x, w compact, no im2col buffer."""
        raise NotImplementedError

    def conv2d_grad_input(self, g, w, dx, stride, padding, dilation, groups):
        """dx (N, C, H, W) from the output grad g and the weights w (compact)."""
        raise NotImplementedError

    def conv2d_grad_weight(self, g, x, dw, stride, padding, dilation, groups):
        """dw (K, C/groups, kh, kw) from the output grad g and the input x (compact)."""
        raise NotImplementedError

    def conv2d_grad_bias(self, g, db):
        """db[k] = the sum of g[:, k] (g compact (N, K, ...))."""
        raise NotImplementedError

    # capability conv2d_bf16 (a device with its own bf16 convolution: stride 1, one group)
    def conv2d_bf16_fits(self, xshape, wshape, stride, padding, dilation, groups):
        """Whether conv2d_bf16 and its gradients run this layer under bf16 autocast."""
        raise NotImplementedError

    def conv2d_bf16(self, x, w, bias, out, padding, relu=False):
        """out = conv(x, w) (+ bias, ReLU) with x and w read as bf16 values, float32 sums."""
        raise NotImplementedError

    def conv2d_bf16_grad_input(self, g, w, dx, padding):
        """dx of conv2d_bf16 from the output gradient g (g and w read as bf16 values)."""
        raise NotImplementedError

    def conv2d_bf16_grad_weight(self, g, x, dw, padding):
        """dw of conv2d_bf16 from the output gradient g and the input x (bf16 values)."""
        raise NotImplementedError

    # capability bias_act
    def bias_act(self, y, bias, relu):
        """In place on compact y (..., C): y += bias (a (C,) array, or None), then
        max(y, 0) with relu (NaN kept): a Linear layer's epilogue in one pass."""
        raise NotImplementedError

    # capability relu_grad_bias
    def relu_grad_bias(self, g, y, out, db):
        """out = g where y > 0, else 0, and db (K,) = out summed over every axis but 1, in
        one pass (g, y, out compact, one shape (N, K, ...) and dtype): a fused conv +
        ReLU's backward up to the convolution."""
        raise NotImplementedError

    # capability softmax_xent
    def softmax_xent(self, z, labels, probs, loss):
        """probs = softmax of each row of compact z (N, C); loss (a 0-d array, on the
        device: no host round trip) = the mean over rows of log(sum(exp(z - m))) - (z[y] - m)
        (NaN for N == 0). labels: int64 (N,) in [0, C)."""
        raise NotImplementedError

    def softmax_xent_grad(self, probs, labels, g, scale, out):
        """out = (probs - onehot(labels)) * g * scale: g the 0-d output grad (on the device),
        scale a Python float."""
        raise NotImplementedError

    # capability batchnorm (batchnorm_relu: the relu and y arguments are honoured)
    def batchnorm(self, x, w, b, xhat, y, mean, var, inv, eps, relu=False):
        """Training-mode batch norm over every axis of compact x but axis 1: writes xhat,
        y = xhat * w + b (relu: max(that, 0)), and per channel the mean, biased var and
        inv = 1/sqrt(var + eps). An empty batch is a ValueError."""
        raise NotImplementedError

    def batchnorm_backward(self, g, xhat, w, inv, dx, dw, db, y=None):
        """dx, dw = sum(g * xhat), db = sum(g) from the output grad and forward's xhat, inv;
        with y (the relu forward's output) g is first masked by y > 0."""
        raise NotImplementedError

    # capability layernorm: row kernels over the last dim of compact (R, D) arrays
    def layernorm(self, x, w, b, y, mean, rstd, eps):
        """y = (x - mean) * rstd * w + b row by row (w, b (D,) or None); writes each row's
        mean and rstd = 1/sqrt(biased var + eps) (R,) for the backward."""
        raise NotImplementedError

    def layernorm_backward(self, g, x, mean, rstd, w, dx, dw, db):
        """dx from the output grad g, the input x and the forward's mean and rstd; where
        dw / db are given, dw = sum over rows of g * xhat and db = sum of g."""
        raise NotImplementedError

    # capability softmax: over the last dim of compact (R, D) arrays
    def softmax(self, x, y):
        """y = exp(x - rowmax) / rowsum of that; a row with a NaN is all NaN."""
        raise NotImplementedError

    def softmax_backward(self, y, g, dx):
        """dx = y * (g - rowsum(g * y)) from the softmax output y and its gradient g."""
        raise NotImplementedError

    # capability log_softmax: over the last dim of compact (R, D) arrays
    def log_softmax(self, x, y):
        """y = x - (rowmax + log(rowsum(exp(x - rowmax)))); a row with a NaN is all NaN."""
        raise NotImplementedError

    def log_softmax_backward(self, y, g, dx):
        """dx = g - exp(y) * rowsum(g) from the log-softmax output y and its gradient g."""
        raise NotImplementedError

    # capability rows
    def take_rows(self, src, idx, out):
        """out[i] = src[idx[i]]: src (rows, d), idx int64 (n,) checked by the caller."""
        raise NotImplementedError

    def add_rows(self, g, idx, out):
        """out[idx[i]] += g[i]; repeated indices add up."""
        raise NotImplementedError

    # capability lstm
    def lstm_gates(self, z, c, act, c_new, h_new):
        """One LSTM step from gates z (B, 4n: i, f, g, o) and cell c (B, n): c_new, h_new,
        and act (B, 5n) = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o), tanh(c_new)."""
        raise NotImplementedError

    def lstm_gates_grad(self, act, c, dh, dc, dz, dc_prev):
        """dz (B, 4n) and dc_prev (B, n) from dh, dc and forward's act and c."""
        raise NotImplementedError

    # capability lstm_seq
    def lstm_sequence(self, xp, w, hs, cs, act):
        """An LSTM layer's steps: from xp (S, B, 4n: x W_ih + biases), w (n, 4n) and
        hs[0], cs[0], the states hs[1..S], cs[1..S] ((S + 1, B, n) each) and act (S, B, 5n:
        each step's lstm_gates act), step t's gates from xp[t] + hs[t] @ w."""
        raise NotImplementedError

    def lstm_sequence_grad(self, act, cs, w, dhs, dhn, dcn, dz, dh0, dc0):
        """lstm_sequence's steps in reverse: dz (S, B, 4n: the gradient of xp) and those of
        h_0 and c_0 (dh0, dc0) from the outputs' gradient dhs (S, B, n) and h_S's and
        c_S's (dhn, dcn (B, n))."""
        raise NotImplementedError

    # capability rnn_seq
    def rnn_sequence(self, xp, w, hs, relu):
        """An Elman RNN layer's steps: from xp (S, B, n: x W_ih + b_ih + b_hh), w (n, n) and
        hs[0], the states hs[1..S] ((S + 1, B, n)), h_{t+1} = tanh(xp[t] + h_t w) (max(0, .)
        with relu)."""
        raise NotImplementedError

    def rnn_sequence_grad(self, hs, w, dhs, dhn, dz, dh0, relu):
        """rnn_sequence's steps in reverse: dz (S, B, n: the gradient of xp) and dh0 (h_0's)
        from the outputs' gradient dhs (S, B, n) and h_S's (dhn (B, n))."""
        raise NotImplementedError

    # capability gru_seq
    def gru_sequence(self, xp, w, b, hs, act):
        """A GRU layer's steps (PyTorch's gates r, z, n): from xp (S, B, 3n: x W_ih + b_ih),
        w (n, 3n), b (3n,: b_hh) or None and hs[0], the states hs[1..S] ((S + 1, B, n)) and
        act (S, B, 4n: r, z, n and h W_hn + b_hn of each step)."""
        raise NotImplementedError

    def gru_sequence_grad(self, act, hs, w, dhs, dhn, dxp, dhp, dh0):
        """gru_sequence's steps in reverse: dxp (S, B, 3n: the gradient of xp), dhp (the
        same shape: that of each step's h W_hh + b_hh) and dh0 (h_0's) from the outputs'
        gradient dhs (S, B, n) and h_S's (dhn (B, n))."""
        raise NotImplementedError

    # capability dropout
    def dropout_mask(self, mask, keep, scale, seed, counter):
        """Compact mask = scale where u < keep, else 0; u = (w >> 8) / 2^24 for w the word
        e % 4 of Philox-4x32-10 at counter + e // 4 (mod 2^64) with key seed: a mask is a
        pure function of (seed, counter), whatever the launch shape."""
        raise NotImplementedError

    # capability share_host
    def share(self, arr):
        """A buffer over a C-contiguous numpy array's memory (no copy)."""
        raise NotImplementedError

    def array_view(self, a):
        """A numpy array over compact a's memory (no copy; writes go through)."""
        raise NotImplementedError


# The kernels every device provides, and those each capability adds.
CORE_KERNELS = ("alloc", "from_numpy", "to_numpy", "copy", "cast", "fill", "binary", "binary_scalar",
                "logical", "unary", "reduce", "matmul", "im2col", "col2im", "to_nchw", "from_nchw",
                "maxpool", "maxpool_backward", "maxpool_gather", "avgpool", "sgd_step",
                "adam_step")
KERNELS = {
    "conv2d": ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias"),
    "softmax_xent": ("softmax_xent", "softmax_xent_grad"),
    "xent_checks_labels": ("softmax_xent", "softmax_xent_grad"),
    "batchnorm": ("batchnorm", "batchnorm_backward"),
    "batchnorm_relu": ("batchnorm", "batchnorm_backward"),
    "layernorm": ("layernorm", "layernorm_backward"),
    "softmax": ("softmax", "softmax_backward"),
    "log_softmax": ("log_softmax", "log_softmax_backward"),
    "conv2d_relu": ("conv2d", "to_nchw"),   # both take relu=True (the op's ReLU epilogue)
    "rows": ("take_rows", "add_rows"),
    "lstm": ("lstm_gates", "lstm_gates_grad"),
    "lstm_seq": ("lstm_sequence", "lstm_sequence_grad"),
    "gru_seq": ("gru_sequence", "gru_sequence_grad"),
    "rnn_seq": ("rnn_sequence", "rnn_sequence_grad"),
    "dropout": ("dropout_mask",),
    "share_host": ("share", "array_view"),
    "bias_act": ("bias_act",),
    "relu_grad_bias": ("relu_grad_bias",),
    "conv2d_bf16": ("conv2d_bf16_fits", "conv2d_bf16", "conv2d_bf16_grad_input",
                    "conv2d_bf16_grad_weight"),
}


def check_lstm_gates(z, c):
    """The shapes an LSTM step's kernels assume: gates (B, 4n) and cell (B, n), one dtype
    (a kernel would read past a smaller buffer)."""
    b, n = c.shape
    if z.shape != (b, 4 * n) or z.dtype != c.dtype:
        raise TypeError(f"lstm_gates: gates {z.dtype} {z.shape} must be ({b}, {4 * n}) of the "
                        f"cell's dtype {c.dtype}")
    return b, n


def missing_kernels(cls):
    """The protocol kernels a Device class leaves unimplemented, given its capabilities."""
    names = list(CORE_KERNELS)
    for cap in cls.capabilities:
        if cap not in KERNELS:
            raise ValueError(f"{cls.__name__} declares an unknown capability {cap!r}")
        names += KERNELS[cap]
    return [n for n in names if getattr(cls, n) is getattr(Device, n)]


_devices: dict[str, Callable[..., Device]] = {}   # name -> factory([index])


def register(name, factory):
    """Register a factory returning the Device called `name`: factory() for the default
    device of that kind, factory(index) for "name:index"."""
    _devices[name] = factory


def get_device(name):
    """A device from a Device or a name: "cpu", "cuda", "cuda:1"."""
    if isinstance(name, Device):
        return name
    key, sep, index = str(name).partition(":")
    if key not in _devices:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(sorted(_devices))}")
    if not sep:
        return _devices[key]()
    if not index.isdigit():
        raise ValueError(f"device {name!r}: the index after ':' must be a whole number")
    return _devices[key](int(index))
