"""CPU backend: every kernel runs in mininet_ext (Cython + OpenMP)."""
import functools
import os

import numpy as np

from mininet_ext import _isa
from mininet_ext import buffer as _buffer
from mininet_ext import convgemm as _cg
from mininet_ext import elementwise as _ew
from mininet_ext import matmul as _mm
from mininet_ext import strided as _st

from .device import DTYPES, Device, check_lstm_gates
from .opcodes import signature

if _ew.SIGNATURE != signature():
    raise ImportError("mininet_ext was built from another op table than "
                      "mininet/backend/opcodes.py: rebuild it (make build, or pip install .)")
if not hasattr(_isa, "variant"):
    raise ImportError("mininet_ext is older than mininet/ (no per-set modules): rebuild it "
                      "(make build, or pip install .)")

# the modules with vector loops of their own (convolution, batch norm, pooling, fused
# reductions, optimizers, losses, LSTM gates), as built for this process's kernel set
# (mininet_ext._isa.variant: a portable build's default is the x86-64 baseline)
_conv = _isa.variant("conv")
_norm = _isa.variant("norm")
_red = _isa.variant("reduce")
_opt = _isa.variant("optim")
_loss = _isa.variant("losses")
_rnn = _isa.variant("rnn")
_direct = _isa.variant("conv_direct")
_nhwc = _isa.variant("conv_nhwc")
_wino = _isa.variant("winograd")
_rows = _isa.variant("rows")


_FLOATS = (np.dtype("float32"), np.dtype("float64"))
_BOOL = np.dtype("bool")


def _floats(what, *arrays):
    """The fused kernels read float32/float64 only: an int64 array would be misread as
    float64 bits."""
    for a in arrays:
        if a is not None and a.dtype not in _FLOATS:
            raise TypeError(f"{what}: needs float32 or float64 arrays, got {a.dtype}; convert "
                            "with .astype('float32')")


def _one_dtype_of(what, dtype, *arrays):
    """TypeError unless every array is of `dtype` (equal dtypes of other objects pass)."""
    for a in arrays:
        if a.dtype != dtype:
            raise TypeError(f"{what}: parameters, gradients and moments must share one dtype, "
                            f"got {dtype} and {a.dtype}")


def _rows_of(kernel, x, full=(), per_col=(), per_row=()):
    """(R, D) of the compact 2-D float array x; the other arrays (None: absent) must be
    compact, of x's dtype and of shape (R, D) (full), (D,) (per_col) or (R,) (per_row)."""
    _floats(kernel, x)
    if x.ndim != 2 or not x.is_compact():
        raise ValueError(f"{kernel}: needs a compact 2-D array, got shape {x.shape} strides "
                         f"{x.strides}")
    r, d = x.shape
    for shape, arrays in (((r, d), full), ((d,), per_col), ((r,), per_row)):
        for a in arrays:
            if a is not None and (a.dtype != x.dtype or a.shape != shape or not a.is_compact()):
                raise TypeError(f"{kernel}: {a.dtype} {a.shape} must be a compact {shape} "
                                f"array of {x.dtype}")
    return r, d


def _seq_dims(what, name, a, gates):
    """(S, B, n) of a recurrent layer's (S, B, gates * n) array, or an error naming it."""
    if getattr(a, "ndim", None) != 3 or a.shape[2] % gates:
        raise ValueError(f"{what}: {name} must be 3-D (seq, batch, {gates} * hidden), got "
                         f"{getattr(a, 'shape', a)!r}")
    S, B, k = a.shape
    return S, B, k // gates


def _check_seq(what, *named):
    """Each (name, array, shape) compact with that shape, all of one float dtype: the
    sequence kernels index every array from its first element by these sizes."""
    for name, a, _ in named:
        if not hasattr(a, "is_compact"):
            raise TypeError(f"{what}: {name} must be an array, got {type(a).__name__}")
    if len({a.dtype for _, a, _ in named}) > 1:
        raise TypeError(f"{what}: the arrays must share one float dtype, got "
                        + ", ".join(f"{name} {a.dtype}" for name, a, _ in named))
    _floats(what, named[0][1])
    for name, a, shape in named:
        if tuple(a.shape) != shape or not a.is_compact():
            raise ValueError(f"{what}: {name} must be compact of shape {shape}, got shape "
                             f"{a.shape} (strides {a.strides})")


def _opt_at(a):
    """(buffer, offset) of an optional array a (a bias, a weight), or (None, 0)."""
    return (None, 0) if a is None else (a.handle, a.offset)


def _at(a):
    """a's buffer from its first element, for kernels that take no offset argument: a
    compact view such as x[1:] starts past the buffer's start (DESIGN rule 1)."""
    if a is None or a.offset == 0:
        return None if a is None else a.handle
    return a.handle.at(a.offset * a.dtype.itemsize, a.size * a.dtype.itemsize)


# os.environ's own table (bytes names and values on POSIX): os.environ.get encodes the
# name and decodes the value on every call, 1.3 us measured, and a convolution read its
# switches several times a call. Writes through os.environ (monkeypatch.setenv in tests)
# land in this table too, so a flipped switch is seen at once, with no re-read to call.
_ENVIRON = getattr(os.environ, "_data", None) if os.name == "posix" else None


def _env(name, default=""):
    """os.environ.get(name, default) for the convolution switches, at a dict lookup's cost."""
    if _ENVIRON is None:
        return os.environ.get(name, default)
    value = _ENVIRON.get(_ENV_KEYS.get(name) or name.encode())
    return default if value is None else os.fsdecode(value)


_ENV_KEYS = {n: n.encode() for n in ("MININET_CONV_NHWC", "MININET_WINOGRAD",
                                     "MININET_CONV_DIRECT", "MININET_WINOGRAD_CL")}


class CPUDevice(Device):
    name = "cpu"
    capabilities = frozenset({"conv2d", "conv2d_relu", "softmax_xent", "xent_checks_labels",
                              "batchnorm", "batchnorm_relu", "rows", "share_host", "lstm",
                              "lstm_seq", "gru_seq", "rnn_seq", "layernorm", "softmax",
                              "log_softmax", "bias_act", "relu_grad_bias", "conv2d_bf16"})
    # Output pixels per image below which im2col + one GEMM beats the implicit GEMM: the
    # fused kernels cut each image into panels of 32 pixels, so 4x4 or 1x1 outputs (a
    # ResNet9's late layers) fill a panel by a fraction, where im2col's GEMM runs over the
    # whole batch's pixels (ResNet9 step: 71 -> 32 ms).
    conv2d_min_pixels = 196

    # memory ---------------------------------------------------------------
    # the Buffer class itself, not a method calling it: every array allocates (a call less)
    alloc = staticmethod(_buffer.Buffer)

    def share(self, arr):
        """A handle over a C-contiguous numpy array's memory (no copy)."""
        return _buffer.Buffer.wrap(arr)

    def array_view(self, a):
        """A numpy array over compact NDArray a's memory, no copy (writes go through)."""
        flat = np.frombuffer(a.handle, dtype=a.dtype, count=a.offset + a.size)
        return flat[a.offset:].reshape(a.shape)

    def from_numpy(self, arr, out):
        np.copyto(self.array_view(out), arr, casting="unsafe")

    def to_numpy(self, a):
        """A numpy copy of NDArray a (any strides)."""
        if a.size == 0:
            return np.empty(a.shape, dtype=a.dtype)
        return self.array_view(a.compact()).copy()

    # strided --------------------------------------------------------------
    def copy(self, src, dst):
        _st.copy(src.handle, src.offset, src.strides, dst.handle, dst.offset, dst.strides,
                 dst.shape, dst.dtype.itemsize)

    def cast(self, src, dst):
        if src.size:
            np.copyto(self.array_view(dst), self.to_numpy(src), casting="unsafe")

    def fill(self, dst, value):
        _st.fill(dst.handle, dst.offset, dst.strides, dst.shape, float(value), DTYPES[dst.dtype])

    # row gather / scatter-add (src, g compact; idx int64 compact) -----------
    def take_rows(self, src, idx, out):
        _floats("take_rows", src)
        rows, d = src.shape
        _st.take_rows(src.handle, src.offset, idx.handle, idx.offset, _at(out), idx.size,
                      rows, d, src.dtype.itemsize)

    def add_rows(self, g, idx, out):
        _floats("add_rows", g)
        rows, d = out.shape
        _st.add_rows(g.handle, g.offset, idx.handle, idx.offset, _at(out), idx.size, rows,
                     d, g.dtype.itemsize)

    # elementwise ----------------------------------------------------------
    def binary(self, op, a, b, out):
        _floats("elementwise op", a, b)
        if out.dtype == _BOOL:   # a comparison's mask, written directly
            _ew.compare(op, a.handle, a.offset, a.strides, b.handle, b.offset, b.strides,
                        _at(out), out.shape, a.dtype.itemsize)
            return
        _ew.binary(op, a.handle, a.offset, a.strides, b.handle, b.offset, b.strides,
                   _at(out), out.shape, out.dtype.itemsize)

    def binary_scalar(self, op, a, value, reverse, out):
        _floats("elementwise op", a)
        if out.dtype == _BOOL:
            _ew.compare_scalar(op, a.handle, a.offset, a.strides, value, reverse, _at(out),
                               out.shape, a.dtype.itemsize)
            return
        _ew.binary_scalar(op, a.handle, a.offset, a.strides, value, reverse, _at(out),
                          out.shape, out.dtype.itemsize)

    def logical(self, op, a, b, out):
        for x in (a, b, out):
            if x.dtype != _BOOL:
                raise TypeError(f"logical op: needs bool arrays, got {x.dtype}")
        _ew.logical(op, a.handle, a.offset, a.strides, b.handle, b.offset, b.strides,
                    _at(out), out.shape)

    def unary(self, op, a, out):
        _floats("elementwise op", a)
        _ew.unary(op, a.handle, a.offset, a.strides, _at(out), out.shape, out.dtype.itemsize)

    # reductions and products ---------------------------------------------
    def reduce(self, op, a, outer, red, inner, out):
        _floats("reduction", a)
        _red.reduce(op, a.handle, a.offset, outer, red, inner, _at(out), a.dtype.itemsize)

    def matmul(self, a, b, out, m, n, k, a_batch=None, b_batch=None, precision=None):
        """out[i] = a[i] @ b[i]: a, b are the last-two-dims views (any strides).
        precision "bf16": float32 inputs rounded to bfloat16, float32 sums (autocast)."""
        if a.dtype not in _FLOATS or b.dtype not in _FLOATS:
            _floats("matmul", a, b)
        sa, sb = a.strides, b.strides
        if precision is not None:
            self._matmul_bf16(a, b, out, m, n, k, a_batch, b_batch, precision)
            return
        _mm.gemm(a.handle, a.offset, sa[-2], sa[-1], b.handle, b.offset, sb[-2], sb[-1],
                 out.handle, out.offset, m, n, k, out.dtype.itemsize, a_batch, b_batch)

    def matmul_new(self, a, b, m, n, k):
        """A new compact (m, n) buffer holding a @ b, for two 2-D float arrays of one dtype
        (ndarray.matmul's common case, checked there): the allocation and the product in
        one call (a 64^3 product takes ~4.5 us; a separate alloc call ~0.2 of them)."""
        sa, sb = a.strides, b.strides
        return _mm.gemm_new(a.handle, a.offset, sa[0], sa[1], b.handle, b.offset, sb[0],
                            sb[1], m, n, k, a.dtype.itemsize)

    def _matmul_bf16(self, a, b, out, m, n, k, a_batch, b_batch, precision):
        if precision != "bf16":
            raise ValueError(f"matmul: unknown precision {precision!r} (only 'bf16')")
        if a.dtype != _FLOATS[0] or b.dtype != _FLOATS[0] or out.dtype != _FLOATS[0]:
            raise TypeError(f"matmul: bf16 precision takes float32 arrays, got {a.dtype}, "
                            f"{b.dtype} -> {out.dtype}")
        sa, sb = a.strides, b.strides
        kernels = "amx" if self.bf16_path() == "amx" else "table"
        _mm.gemm_bf16(a.handle, a.offset, sa[-2], sa[-1], b.handle, b.offset, sb[-2], sb[-1],
                      out.handle, out.offset, m, n, k, a_batch, b_batch, kernels)

    BF16_PATHS = ("amx", "native", "fp32")

    def bf16_path(self):
        """How bf16 products run on this CPU: "amx" (gemm_bf16 on AMX tiles: Sapphire
        Rapids and later, where Linux grants the tile state), "native" (gemm_bf16:
        vdpbf16ps on bf16 panels where the CPU has AVX512_BF16, else the fp32 kernel on
        panels rounded as they are packed), or "fp32": the inputs rounded to bf16 first,
        then the float32 GEMM, the same values and float32 sums. vdpbf16ps is slower than
        float32 FMAs on a Sapphire Rapids core (a quarter of the FMA rate: half the flops,
        bf16 GEMM 0.57-0.68x our fp32), as fast on a Zen 4 core (twice the flops); AMX
        runs 5-6x our float32 GFLOPS at 1024^3 and 2048^3 (a Xeon with AMX). Decided
        once, by timing the candidates on a 256^3 product (a few ms);
        MININET_BF16_GEMM=amx|native|fp32 forces one (ValueError for anything else, or
        for amx where AMX cannot run)."""
        forced = _env("MININET_BF16_GEMM", "")
        if forced:
            if forced not in self.BF16_PATHS:
                raise ValueError(f"MININET_BF16_GEMM must be amx, native or fp32, got "
                                 f"{forced!r}")
            if forced == "amx":
                ok, why = _mm.amx_available()
                if not ok:
                    raise ValueError(f"MININET_BF16_GEMM=amx: AMX cannot run here: {why}")
            return forced
        if CPUDevice._bf16_choice is None:
            CPUDevice._bf16_choice = self._time_bf16_paths()
        return CPUDevice._bf16_choice

    _bf16_choice = None

    def _time_bf16_paths(self):
        amx = _mm.amx_available()[0]
        if not _mm.bf16_info()["native"] and not amx:
            return "native"   # rounding while packing beats separate rounding passes
        import time
        a = _buffer.Buffer(256 * 256 * 4)
        np.frombuffer(a, np.float32)[:] = 0.5
        out = _buffer.Buffer(256 * 256 * 4)
        r = _buffer.Buffer(2 * 256 * 256 * 4)
        st = (256, 1)

        def native():
            _mm.gemm_bf16(a, 0, *st, a, 0, *st, out, 0, 256, 256, 256)

        def tiles():
            _mm.gemm_bf16(a, 0, *st, a, 0, *st, out, 0, 256, 256, 256, None, None, "amx")

        def fp32():
            _mm.round_bf16(a, 0, r, 0, 256 * 256)
            _mm.round_bf16(a, 0, r, 256 * 256, 256 * 256)
            _mm.gemm(r, 0, *st, r, 256 * 256, *st, out, 0, 256, 256, 256, 4, None, None)

        best = {}
        paths = (("amx", tiles),) * amx + (("native", native), ("fp32", fp32))
        for name, fn in paths * 3:
            start = time.perf_counter()
            fn()
            best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
        return min(best, key=best.get)

    def conv2d_bf16_fits(self, xshape, wshape, stride, padding, dilation, groups):
        """Whether conv2d_bf16 runs this layer (and its input and weight gradients):
        the bf16 path is AMX, stride 1, no dilation, one group, at least 16 input and
        output channels (a tile's rows, the channels of the input gradient's product too)
        and padding within the kernel (pad <= k - 1: the input gradient's own padding,
        k - 1 - pad, is then >= 0)."""
        k, c, kh, kw = wshape
        if stride != (1, 1) or dilation != (1, 1) or groups != 1 or min(k, c) < 16:
            return False
        if not (0 <= padding[0] <= kh - 1 and 0 <= padding[1] <= kw - 1):
            return False
        if self.bf16_path() != "amx":
            return False
        return _mm.amx_conv_fits(c, k, xshape[2], xshape[3], kh, kw, *padding)

    def conv2d_bf16(self, x, w, bias, out, padding, relu=False):
        """out = conv(x, w) (+ bias, max(0, .) with relu) with x and w read as bf16 values
        and float32 sums, on AMX tiles without im2col (x, w, bias, out compact float32;
        a layer conv2d_bf16_fits takes)."""
        n, c, h, wd = x.shape
        k, _, kh, kw = w.shape
        _mm.conv_bf16_amx(x.handle, x.offset, w.handle, w.offset, out.handle, out.offset,
                          n, c, h, wd, k, kh, kw, *padding)
        if bias is not None or relu:
            _conv.bias_planes(out.handle, out.offset, *_opt_at(bias), n, k,
                              out.shape[2] * out.shape[3], 4, relu)

    def conv2d_bf16_grad_input(self, g, w, dx, padding):
        """dx of conv2d_bf16 from the output gradient g: the convolution of g with w's
        taps flipped and channels swapped, padded k - 1 - pad (g, w, dx compact)."""
        n, k, oh, ow = g.shape
        _, c, kh, kw = w.shape
        _mm.conv_bf16_amx(g.handle, g.offset, w.handle, w.offset, dx.handle, dx.offset,
                          n, k, oh, ow, c, kh, kw, kh - 1 - padding[0], kw - 1 - padding[1],
                          flip=True)

    def conv2d_bf16_grad_weight(self, g, x, dw, padding):
        """dw of conv2d_bf16 from the output gradient g and the input x, both read as bf16
        values, float32 sums (g, x, dw compact)."""
        n, c, h, wd = x.shape
        k, _, kh, kw = dw.shape
        _mm.conv_bf16_amx_wgrad(g.handle, g.offset, x.handle, x.offset, dw.handle, dw.offset,
                                n, c, h, wd, k, kh, kw, *padding)

    def round_bf16(self, a, out):
        """out = compact float32 a rounded to bfloat16 values (nearest even), float32."""
        if a.dtype != _FLOATS[0] or out.dtype != _FLOATS[0] or a.size != out.size:
            raise TypeError(f"round_bf16: needs float32 arrays of one size, got {a.dtype} "
                            f"{a.shape} -> {out.dtype} {out.shape}")
        _mm.round_bf16(a.handle, a.offset, out.handle, out.offset, a.size)

    # convolution and pooling (x, col, dx, pooled arrays compact) ----------
    def im2col(self, x, col, kernel, stride, pad, dil, oh, ow):
        _floats("im2col", x)
        _conv.im2col(x.handle, x.offset, x.strides, x.shape, _at(col), kernel, stride, pad,
                     dil, oh, ow, x.dtype.itemsize)

    def col2im(self, col, dx, kernel, stride, pad, dil, oh, ow):
        _conv.col2im(_at(col), _at(dx), dx.shape, kernel, stride, pad, dil, oh, ow,
                     dx.dtype.itemsize)

    # fused LSTM gates (every array compact, one float dtype)
    def lstm_gates(self, z, c, act, c_new, h_new):
        _floats("LSTM gates", z, c)
        b, n = check_lstm_gates(z, c)
        _rnn.lstm_forward(_at(z), _at(c), _at(act), _at(c_new), _at(h_new), b, n,
                          z.dtype.itemsize)

    def lstm_gates_grad(self, act, c, dh, dc, dz, dc_prev):
        b, n = c.shape
        _rnn.lstm_backward(_at(act), _at(c), _at(dh), _at(dc), _at(dz), _at(dc_prev), b, n,
                           c.dtype.itemsize)

    # a whole LSTM layer's steps (every array compact, one float dtype)
    def lstm_sequence(self, xp, w, hs, cs, act):
        S, B, n = _seq_dims("lstm_sequence", "xp", xp, 4)
        _check_seq("lstm_sequence", ("xp", xp, (S, B, 4 * n)), ("w", w, (n, 4 * n)),
                   ("hs", hs, (S + 1, B, n)), ("cs", cs, (S + 1, B, n)),
                   ("act", act, (S, B, 5 * n)))
        _rnn.lstm_seq_forward(_at(xp), _at(w), _at(hs), _at(cs), _at(act), S, B, n,
                              xp.dtype.itemsize)

    def lstm_sequence_grad(self, act, cs, w, dhs, dhn, dcn, dz, dh0, dc0):
        S, B, n = _seq_dims("lstm_sequence_grad", "dhs", dhs, 1)
        _check_seq("lstm_sequence_grad", ("act", act, (S, B, 5 * n)), ("cs", cs, (S + 1, B, n)),
                   ("w", w, (n, 4 * n)), ("dhs", dhs, (S, B, n)), ("dhn", dhn, (B, n)),
                   ("dcn", dcn, (B, n)), ("dz", dz, (S, B, 4 * n)), ("dh0", dh0, (B, n)),
                   ("dc0", dc0, (B, n)))
        _rnn.lstm_seq_backward(_at(act), _at(cs), _at(w), _at(dhs), _at(dhn), _at(dcn), _at(dz),
                               _at(dh0), _at(dc0), S, B, n, dhs.dtype.itemsize)

    def rnn_sequence(self, xp, w, hs, relu):
        S, B, n = _seq_dims("rnn_sequence", "xp", xp, 1)
        _check_seq("rnn_sequence", ("xp", xp, (S, B, n)), ("w", w, (n, n)),
                   ("hs", hs, (S + 1, B, n)))
        _rnn.elman_seq_forward(_at(xp), _at(w), _at(hs), S, B, n, bool(relu), xp.dtype.itemsize)

    def rnn_sequence_grad(self, hs, w, dhs, dhn, dz, dh0, relu):
        S, B, n = _seq_dims("rnn_sequence_grad", "dhs", dhs, 1)
        _check_seq("rnn_sequence_grad", ("hs", hs, (S + 1, B, n)), ("w", w, (n, n)),
                   ("dhs", dhs, (S, B, n)), ("dhn", dhn, (B, n)), ("dz", dz, (S, B, n)),
                   ("dh0", dh0, (B, n)))
        _rnn.elman_seq_backward(_at(hs), _at(w), _at(dhs), _at(dhn), _at(dz), _at(dh0), S, B, n,
                                bool(relu), dhs.dtype.itemsize)

    def gru_sequence(self, xp, w, b, hs, act):
        S, B, n = _seq_dims("gru_sequence", "xp", xp, 3)
        bias = [] if b is None else [("b", b, (3 * n,))]
        _check_seq("gru_sequence", ("xp", xp, (S, B, 3 * n)), ("w", w, (n, 3 * n)), *bias,
                   ("hs", hs, (S + 1, B, n)), ("act", act, (S, B, 4 * n)))
        _rnn.gru_seq_forward(_at(xp), _at(w), _at(b), _at(hs), _at(act), S, B, n,
                             xp.dtype.itemsize)

    def gru_sequence_grad(self, act, hs, w, dhs, dhn, dxp, dhp, dh0):
        S, B, n = _seq_dims("gru_sequence_grad", "dhs", dhs, 1)
        _check_seq("gru_sequence_grad", ("act", act, (S, B, 4 * n)), ("hs", hs, (S + 1, B, n)),
                   ("w", w, (n, 3 * n)), ("dhs", dhs, (S, B, n)), ("dhn", dhn, (B, n)),
                   ("dxp", dxp, (S, B, 3 * n)), ("dhp", dhp, (S, B, 3 * n)),
                   ("dh0", dh0, (B, n)))
        _rnn.gru_seq_backward(_at(act), _at(hs), _at(w), _at(dhs), _at(dhn), _at(dxp), _at(dhp),
                              _at(dh0), S, B, n, dhs.dtype.itemsize)

    # Linear's epilogue: y (compact) += bias, max(0, .) with relu, in one pass
    def bias_act(self, y, bias, relu):
        c = y.shape[-1] if y.shape else 1
        if bias is not None and ((bias.dtype is not y.dtype and bias.dtype != y.dtype)
                                 or bias.shape != (c,)):
            raise TypeError(f"bias_act: bias {bias.dtype} {bias.shape} must be ({c},) of the "
                            f"output's dtype {y.dtype}")
        if y.dtype not in _FLOATS:
            _floats("bias_act", y)
        if not y.is_compact():   # the kernel walks y's buffer row by row from its offset
            raise ValueError(f"bias_act: the output must be compact, got shape {y.shape} "
                             f"strides {y.strides}")
        if bias is not None and not bias.is_compact():
            bias = bias.compact()
        _ew.bias_act(y.handle, y.offset, *_opt_at(bias), y.size // max(c, 1), c, relu,
                     y.dtype.itemsize)

    # fused softmax cross-entropy (z, probs compact; labels int64 in [0, C))
    def softmax_xent(self, z, labels, probs, loss):
        _floats("softmax cross-entropy (logits)", z)
        n, c = z.shape
        if labels.dtype != np.int64 or labels.shape != (n,):
            raise TypeError(f"softmax_xent: labels must be int64 of shape ({n},), got "
                            f"{labels.dtype} {labels.shape}")
        if loss.dtype != z.dtype:
            self.fill(loss, _loss.forward(z.handle, z.offset, _at(labels), _at(probs), n, c,
                                          z.dtype.itemsize))
            return
        _loss.forward(z.handle, z.offset, _at(labels), _at(probs), n, c, z.dtype.itemsize,
                      _at(loss))   # the kernel writes the loss (a fill call cost more)

    def softmax_xent_grad(self, probs, labels, g, scale, out):
        n, c = probs.shape
        if g.dtype != probs.dtype:
            scale *= float(self.to_numpy(g))   # host memory: reading it costs nothing
            _loss.backward(_at(probs), _at(labels), _at(out), n, c, scale, probs.dtype.itemsize)
            return
        _loss.backward(_at(probs), _at(labels), _at(out), n, c, scale, probs.dtype.itemsize,
                       g.handle, g.offset)   # g read by the kernel: no copy to numpy

    # fused batch norm over all axes but 1 (x, g, xhat compact; w, b, stats (C,) compact)
    def batchnorm(self, x, w, b, xhat, y, mean, var, inv, eps, relu=False):
        _floats("batch norm", x, w, b)
        outer, c = x.shape[:2]
        if not x.dtype == w.dtype == b.dtype or w.shape != (c,) or b.shape != (c,):
            raise TypeError(f"batchnorm: weight {w.dtype} {w.shape} and bias {b.dtype} {b.shape} "
                            f"must be ({c},) arrays of the input's dtype {x.dtype}")
        if x.ndim == 2:
            _norm.forward_2d(x.handle, x.offset, w.handle, w.offset, b.handle, b.offset,
                             _at(xhat), _at(y), _at(mean), _at(var), _at(inv),
                             outer, c, eps, x.dtype.itemsize, relu)
            return
        _norm.forward(x.handle, x.offset, w.handle, w.offset, b.handle, b.offset,
                      _at(xhat), _at(y), _at(mean), _at(var), _at(inv), outer, c,
                      x.size // max(outer * c, 1), eps, x.dtype.itemsize, relu)

    def batchnorm_backward(self, g, xhat, w, inv, dx, dw, db, y=None):   # y: ReLU-fused output
        outer, c = g.shape[:2]
        if not g.dtype == w.dtype == xhat.dtype or w.shape != (c,):
            raise TypeError(f"batchnorm_backward: grad {g.dtype}, xhat {xhat.dtype} and weight "
                            f"{w.dtype} {w.shape} must share a dtype, weight ({c},)")
        if g.ndim == 2:
            _norm.backward_2d(g.handle, g.offset, _at(xhat), w.handle, w.offset,
                              _at(inv), _at(dx), _at(dw), _at(db), outer, c,
                              g.dtype.itemsize, _at(y))
            return
        _norm.backward(g.handle, g.offset, _at(xhat), w.handle, w.offset, _at(inv),
                       _at(dx), _at(dw), _at(db), outer, c, g.size // max(outer * c, 1),
                       g.dtype.itemsize, _at(y))

    # row kernels over the last dim of (R, D) arrays: x, g, y compact (any offset), the
    # outputs compact; w, b (D,) or None, mean and rstd (R,)
    def layernorm(self, x, w, b, y, mean, rstd, eps):
        r, d = _rows_of("layernorm", x, (y,), (w, b), (mean, rstd))
        _rows.layernorm(x.handle, x.offset, *_opt_at(w), *_opt_at(b), _at(y), _at(mean),
                        _at(rstd), r, d, eps, x.dtype.itemsize)

    def layernorm_backward(self, g, x, mean, rstd, w, dx, dw, db):
        r, d = _rows_of("layernorm_backward", x, (g, dx), (w, dw, db), (mean, rstd))
        _rows.layernorm_backward(g.handle, g.offset, x.handle, x.offset, _at(mean), _at(rstd),
                                 *_opt_at(w), _at(dx), _at(dw), _at(db), r, d,
                                 x.dtype.itemsize)

    def softmax(self, x, y):
        r, d = _rows_of("softmax", x, (y,))
        _rows.softmax(x.handle, x.offset, _at(y), r, d, x.dtype.itemsize)

    def softmax_backward(self, y, g, dx):
        r, d = _rows_of("softmax_backward", y, (g, dx))
        _rows.softmax_backward(y.handle, y.offset, g.handle, g.offset, _at(dx), r, d,
                               y.dtype.itemsize)

    def log_softmax(self, x, y):
        r, d = _rows_of("log_softmax", x, (y,))
        _rows.log_softmax(x.handle, x.offset, _at(y), r, d, x.dtype.itemsize)

    def log_softmax_backward(self, y, g, dx):
        r, d = _rows_of("log_softmax_backward", y, (g, dx))
        _rows.log_softmax_backward(y.handle, y.offset, g.handle, g.offset, _at(dx), r, d,
                                   y.dtype.itemsize)

    # fused implicit-GEMM convolution (all arrays compact); geometry: (stride, padding,
    # dilation) pairs and groups
    def conv2d(self, x, w, bias, out, stride, padding, dilation, groups, relu=False):
        """out = conv(x, w) + bias; with relu, max(0, .) of it, taken as the kernels write
        the output (no second pass)."""
        if self._conv2d_by_nhwc(x, w, bias, out, stride, padding, dilation, groups, relu):
            return
        if self._conv2d_direct(x, w, bias, out, stride, padding, dilation, groups, relu):
            return
        _floats("conv", x, w, bias)
        n, k, oh, ow = out.shape
        # Winograd is float32 only (float64 takes the implicit GEMM: exact to its rounding)
        wino = _one_dtype(x, w, bias, out) and x.dtype == _FLOATS[0]
        if wino and _wcl_fits(w.shape, stride, padding, dilation, groups, x.shape):
            _wino.forward_cl(x.handle, x.offset, w.handle, w.offset, *_opt_at(bias), _at(out),
                             x.shape, k, padding, 4, relu=relu)
            return
        if wino and _wrows_fits(w.shape, stride, padding, dilation, groups, x.shape, 4):
            _wino.forward_rows(x.handle, x.offset, w.handle, w.offset, *_opt_at(bias), _at(out),
                               x.shape, k, padding, x.dtype.itemsize, relu=relu)
            return
        if wino and _winograd_fits(w.shape, stride, padding, dilation, groups):
            _wino.forward(x.handle, x.offset, w.handle, w.offset, *_opt_at(bias), _at(out),
                          x.shape, k, padding, x.dtype.itemsize, relu=relu, ksize=w.shape[2])
            return
        _cg.forward(x.handle, x.offset, w.handle, w.offset, *_opt_at(bias), _at(out), x.shape,
                    k, groups, tuple(w.shape[2:]), stride, padding, dilation, oh, ow,
                    x.dtype.itemsize, relu)

    def _conv2d_direct(self, x, w, bias, out, stride, padding, dilation, groups, relu):
        """Few input channels (a first layer) on a direct kernel where it wins
        (_cm_wins, _direct_wins); False where the kernel does not apply (it checks the
        strides)."""
        cm = _cm_wins(x.shape, w.shape, stride, padding, dilation, groups, x.dtype.itemsize)
        if not (cm or _direct_wins(x.shape, w.shape, stride, groups)) or \
                not (_one_dtype(x, w, bias, out) and out.is_compact()):
            return False
        if cm:
            return _direct.forward_cm(x.handle, x.offset, w.handle, w.offset,
                                      *_opt_at(bias), out.handle,
                                      out.offset, tuple(x.shape), w.shape[0],
                                      tuple(w.shape[2:]), tuple(padding), x.dtype.itemsize,
                                      relu)
        return _direct.forward(x.handle, x.offset, w.handle, w.offset,
                               *_opt_at(bias), out.handle, out.offset,
                               tuple(x.shape), w.shape[0], tuple(w.shape[2:]), tuple(stride),
                               tuple(padding), tuple(dilation), x.dtype.itemsize, relu)

    def _grad_weight_direct(self, g, x, dw, stride, padding, dilation, groups):
        """The weight gradient of the direct kernel's layers with filters at least
        DIRECT_DW_MIN_KW wide (_direct_wins); False where the kernel does not apply."""
        if not (_direct_wins(x.shape, dw.shape, stride, groups)
                and dw.shape[3] >= DIRECT_DW_MIN_KW and _one_dtype(g, x, dw)
                and dw.is_compact()):
            return False
        return _direct.weight_grad(g.handle, g.offset, x.handle, x.offset, dw.handle,
                                   dw.offset, tuple(x.shape), dw.shape[0], tuple(dw.shape[2:]),
                                   tuple(stride), tuple(padding), tuple(dilation),
                                   g.dtype.itemsize)

    def conv2d_small(self, wshape, geometry, pixels, transposed=False, out_hw=None):
        """Winograd wins on small maps too (the 64 -> 128 layer at 8x8, batch 64: 0.53x
        PyTorch's forward time against 1.64x by im2col), down to one 4x4 tile an image
        (below it computes padding: 36 products a tile against 9 taps a pixel). So do the
        implicit GEMM's stride phases where an image's panels are at least half real
        output pixels (_phases_fit). Asked on every conv call (forward and both
        gradients): the answer is cached per layer geometry and routing state (13 us ->
        under 1 us a call); the state holds the switches and the rule functions and
        bounds that tests patch, so a patched rule or a flipped switch is asked anew."""
        state = (_env("MININET_CONV_NHWC"), _env("MININET_WINOGRAD", "1"), _nhwc_wins,
                 _NHWC_RULE, _phases_fit, _winograd_fits, WINOGRAD_MIN_CHANNELS,
                 WINOGRAD5_MIN_CHANNELS)
        return _small_route(tuple(wshape), tuple(geometry), pixels, transposed,
                            None if out_hw is None else tuple(out_hw), state)

    def conv2d_grad_input(self, g, w, dx, stride, padding, dilation, groups):
        if self._grad_input_by_nhwc(g, w, dx, stride, padding, dilation, groups):
            return
        if self._grad_input_by_rows(g, w, dx, stride, padding, dilation, groups):
            return
        n, k, oh, ow = g.shape
        _cg.input_grad(g.handle, g.offset, w.handle, w.offset, _at(dx), dx.shape, k,
                       groups, tuple(w.shape[2:]), stride, padding, dilation, oh, ow,
                       g.dtype.itemsize)

    def _grad_input_by_rows(self, g, w, dx, stride, padding, dilation, groups):
        """Stride 1, one group: dx is the convolution of g, padded by dil*(k-1) - pad, with
        the flipped weights, channels swapped; run it on the pixel-major forward when that
        path takes dx's rows (the scatter of the general input gradient is slower)."""
        kh, kw = w.shape[2:]
        pad = tuple(d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding))
        if stride != (1, 1) or groups != 1 or min(pad) < 0:
            return False
        if _wcl_fits(w.shape[1::-1] + w.shape[2:], stride, pad, dilation, groups, g.shape,
                     grad_input=True) and g.dtype == w.dtype == _FLOATS[0]:
            # F(2x2, 5x5) with channels in the vectors, flipping and swapping the filters
            # as it transforms them
            _wino.forward_cl(g.handle, g.offset, w.handle, w.offset, None, 0, _at(dx),
                             g.shape, dx.shape[1], pad, 4, True)
            return True
        wino = g.dtype == w.dtype == dx.dtype == _FLOATS[0]   # Winograd: float32 only
        if wino and _wrows_fits(w.shape[1::-1] + w.shape[2:], stride, pad, dilation, groups,
                                g.shape, 4):
            # the same 5x5 convolution by F(4, 5) along the rows (the flip and swap of the
            # filters, as Winograd's, happen as they are transformed)
            _wino.forward_rows(g.handle, g.offset, w.handle, w.offset, None, 0, _at(dx),
                               g.shape, dx.shape[1], pad, g.dtype.itemsize, True)
            return True
        if wino and _winograd_fits(w.shape[1::-1] + w.shape[2:], stride, pad, dilation,
                                   groups):
            # the same 3x3 convolution by Winograd, which flips and swaps the filters
            # while it transforms them
            _wino.forward(g.handle, g.offset, w.handle, w.offset, None, 0, _at(dx), g.shape,
                          dx.shape[1], pad, g.dtype.itemsize, True, ksize=w.shape[2])
            return True
        if not _cg.row_tiles(g.shape, dx.shape[1], 1, (kh, kw), (1, 1), pad, dilation,
                             dx.shape[2], dx.shape[3], g.dtype.itemsize):
            return False
        wt = w.permute(1, 0, 2, 3)[:, :, ::-1, ::-1].compact()
        _cg.forward(g.handle, g.offset, wt.handle, wt.offset, None, 0, _at(dx), g.shape,
                    dx.shape[1], 1, (kh, kw), (1, 1), pad, dilation, dx.shape[2], dx.shape[3],
                    g.dtype.itemsize)
        return True

    def conv2d_grad_weight(self, g, x, dw, stride, padding, dilation, groups):
        if self._grad_weight_by_nhwc(g, x, dw, stride, padding, dilation, groups):
            return
        if self._grad_weight_direct(g, x, dw, stride, padding, dilation, groups):
            return
        n, k, oh, ow = g.shape
        if _wcl_fits(dw.shape, stride, padding, dilation, groups, x.shape, grad_weight=True) \
                and g.dtype == x.dtype == dw.dtype == _FLOATS[0]:
            _wino.weight_grad_cl(g.handle, g.offset, x.handle, x.offset, _at(dw), x.shape, k,
                                 padding, 4)
            return
        if _winograd_fits(dw.shape, stride, padding, dilation, groups) and \
                g.dtype == x.dtype == dw.dtype == _FLOATS[0]:   # Winograd: float32 only
            # dW = G^T [sum over tiles (A dY A^T) .* (B^T x B)] G: 36 GEMMs over the tiles
            _wino.weight_grad(g.handle, g.offset, x.handle, x.offset, _at(dw), x.shape, k,
                              padding, g.dtype.itemsize, ksize=dw.shape[2])
            return
        _cg.weight_grad(g.handle, g.offset, x.handle, x.offset, _at(dw), x.shape, k,
                        groups, tuple(dw.shape[2:]), stride, padding, dilation, oh, ow,
                        g.dtype.itemsize)

    def relu_grad_bias(self, g, y, out, db):
        """out = g where y > 0, else 0, and db = out summed over all axes but 1, in one pass
        (a fused conv + ReLU's backward: the masked grad and its bias gradient); g, y and out
        compact, of one shape (N, K, ...) and dtype, db (K,)."""
        _floats("relu_grad_bias", g, y)
        if not (g.shape == y.shape == out.shape and len(g.shape) >= 2
                and db.shape == (g.shape[1],)
                and g.dtype == y.dtype == out.dtype == db.dtype
                and g.is_compact() and y.is_compact() and out.is_compact()):
            raise ValueError(f"relu_grad_bias: needs compact g, y, out of one shape (N, K, ...) "
                             f"and dtype and db (K,), got {g.shape} {g.dtype}, {y.shape} "
                             f"{y.dtype}, {out.shape} {out.dtype}, {db.shape} {db.dtype}")
        n, k = g.shape[:2]
        _red.relu_grad_bias(g.handle, g.offset, y.handle, y.offset, out.handle, out.offset,
                            db.handle, db.offset, n, k, g.size // max(n * k, 1),
                            g.dtype.itemsize)

    def conv2d_grad_bias(self, g, db):
        n, k = g.shape[:2]
        _cg.bias_grad(g.handle, g.offset, _at(db), n, k, g.size // max(n * k, 1),
                      g.dtype.itemsize)

    def to_nchw(self, y, bias, out, relu=False):
        """out (N, K, ...) = y (K, N, ...) + bias, max(0, .) of it with relu."""
        n, k = out.shape[:2]
        _conv.to_nchw(_at(y), *_opt_at(bias), _at(out), k, n,
                      out.size // max(n * k, 1), out.dtype.itemsize, relu)

    def from_nchw(self, g, out, db):
        n, k = g.shape[:2]
        _conv.from_nchw(g.handle, g.offset, _at(out), _at(db),
                        k, n, g.size // max(n * k, 1), g.dtype.itemsize)

    def maxpool(self, x, out, idx, kernel, stride, pad, dil):
        _floats("max_pool2d", x)
        _conv.maxpool(_at(x), _at(out), _at(idx), x.shape, kernel, stride, pad, dil,
                      out.shape[2], out.shape[3], x.dtype.itemsize)

    def maxpool_backward(self, g, idx, dx):
        _conv.maxpool_backward(_at(g), _at(idx), _at(dx), dx.shape, g.shape[2],
                               g.shape[3], dx.dtype.itemsize)

    def maxpool_gather(self, h, idx, out):
        _conv.maxpool_gather(_at(h), _at(idx), _at(out), h.shape, out.shape[2],
                             out.shape[3], h.dtype.itemsize)

    def avgpool(self, src, dst, x_shape, kernel, stride, pad, backward):
        _floats("avg_pool2d", src)
        oh, ow = (src.shape if backward else dst.shape)[2:]
        _conv.avgpool(_at(src), _at(dst), x_shape, kernel, stride, pad, oh, ow, backward,
                      dst.dtype.itemsize)

    # fused optimizer updates (in place on p; p, m, v compact) --------------
    def sgd_step(self, p, g, v, lr, momentum, dampening, wd, nesterov, first):
        _floats("SGD step", p, g)
        _opt.sgd_step(_at(p), g.handle, g.offset, _at(v), p.size, lr, momentum, dampening,
                      wd, nesterov, first, p.dtype.itemsize)

    def adam_step(self, p, g, m, v, lr, b1, b2, eps, wd, decoupled, t):
        _floats("Adam step", p, g)
        _opt.adam_step(_at(p), g.handle, g.offset, _at(m), _at(v), p.size, lr, b1, b2,
                       eps, wd, decoupled, t, p.dtype.itemsize)

    def adam_steps(self, ps, gs, ms, vs, steps, lr, b1, b2, eps, wd, decoupled):
        """Every parameter in one kernel call (one parallel region)."""
        dtype = ps[0].dtype
        if dtype not in _FLOATS:
            _floats("Adam step", *ps)
        if not len(ps) == len(gs) == len(ms) == len(vs) == len(steps):
            raise ValueError(f"adam_steps: {len(ps)} parameters, {len(gs)} gradients, "
                             f"{len(ms)} and {len(vs)} moments, {len(steps)} steps")
        hp, hg, og, hm, hv, sizes = [], [], [], [], [], []
        # one loop, not six comprehensions (each a function call): this runs every step
        for p, g, m, v in zip(ps, gs, ms, vs):
            if not (p.dtype is dtype and g.dtype is dtype and m.dtype is dtype
                    and v.dtype is dtype):
                _one_dtype_of("adam_steps", dtype, p, g, m, v)
            hp.append(_at(p) if p.offset else p.handle)
            hg.append(g.handle)
            og.append(g.offset)
            hm.append(_at(m) if m.offset else m.handle)
            hv.append(_at(v) if v.offset else v.handle)
            sizes.append(p.size)
        _opt.adam_steps(hp, hg, og, hm, hv, sizes, list(steps), lr, b1, b2, eps, wd, decoupled,
                        dtype.itemsize)

    # channels-last (NHWC) convolution, mininet_ext/conv_nhwc.pyx: x (N, H, W, C), weight
    # (kh, kw, C, K), output (N, OH, OW, K); one group. The NCHW methods above hand it
    # the layers where it measured faster (_nhwc_wins); bench/conv_nhwc.py compares it.
    def conv2d_nhwc_shape(self, xshape, wshape, stride=(1, 1), padding=(0, 0),
                          dilation=(1, 1)):
        """(N, OH, OW, K) of conv2d_nhwc, or a ValueError naming the bad shape."""
        _nhwc_ranks("conv2d_nhwc", x=xshape, weight=wshape)
        return _nhwc.out_shape(tuple(xshape), tuple(wshape), _pair2(stride), _pair2(padding),
                               _pair2(dilation))

    def conv2d_nhwc(self, x, w, bias, out, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                    relu=False):
        """out = conv(x, w) + bias (max(0, .) of it with relu); x, w, bias any strides."""
        x, w, bias = _nhwc_inputs("conv2d_nhwc", out, x=x, weight=w, bias=bias)
        _nhwc_fits("conv2d_nhwc", "output (N, OH, OW, K)", out.shape,
                   self.conv2d_nhwc_shape(x.shape, w.shape, stride, padding, dilation))
        if bias is not None:
            _nhwc_fits("conv2d_nhwc", "bias (K,)", bias.shape, (w.shape[3],))
        _nhwc.forward(x.handle, x.offset, w.handle, w.offset, *_opt_at(bias), out.handle,
                      out.offset, x.shape, w.shape, _pair2(stride), _pair2(padding),
                      _pair2(dilation), x.dtype.itemsize, relu)

    def conv2d_nhwc_grad_input(self, g, w, dx, stride=(1, 1), padding=(0, 0),
                               dilation=(1, 1)):
        """dx (N, H, W, C) from the output grad g (N, OH, OW, K) and w (kh, kw, C, K)."""
        g, w = _nhwc_inputs("conv2d_nhwc input gradient", dx, grad=g, weight=w)
        _nhwc_fits("conv2d_nhwc input gradient", "output gradient (N, OH, OW, K)", g.shape,
                   self.conv2d_nhwc_shape(dx.shape, w.shape, stride, padding, dilation))
        _nhwc.input_grad(g.handle, g.offset, w.handle, w.offset, dx.handle, dx.offset,
                         dx.shape, w.shape, _pair2(stride), _pair2(padding), _pair2(dilation),
                         g.dtype.itemsize)

    def conv2d_nhwc_grad_weight(self, g, x, dw, stride=(1, 1), padding=(0, 0),
                                dilation=(1, 1)):
        """dw (kh, kw, C, K) from the output grad g (N, OH, OW, K) and x (N, H, W, C)."""
        g, x = _nhwc_inputs("conv2d_nhwc weight gradient", dw, grad=g, x=x)
        _nhwc_fits("conv2d_nhwc weight gradient", "output gradient (N, OH, OW, K)", g.shape,
                   self.conv2d_nhwc_shape(x.shape, dw.shape, stride, padding, dilation))
        _nhwc.weight_grad(g.handle, g.offset, x.handle, x.offset, dw.handle, dw.offset,
                          x.shape, dw.shape, _pair2(stride), _pair2(padding), _pair2(dilation),
                          g.dtype.itemsize)

    def conv2d_nhwc_grad_bias(self, g, db):
        """db (K,) = g (N, OH, OW, K) summed over its pixels."""
        (g,) = _nhwc_inputs("conv2d_nhwc bias gradient", db, grad=g)
        k = g.shape[-1]
        _nhwc_fits("conv2d_nhwc bias gradient", "bias gradient (K,)", db.shape, (k,))
        _nhwc.bias_grad(g.handle, g.offset, db.handle, db.offset, g.size // max(k, 1), k,
                        g.dtype.itemsize)

    # NCHW convolutions that run channels-last where that measured faster (_nhwc_wins):
    # the arrays are relaid out around the NHWC kernels (no copy of a 1x1 map)
    def _conv2d_by_nhwc(self, x, w, bias, out, stride, padding, dilation, groups, relu):
        if not (_nhwc_wins(x.shape, w.shape, stride, padding, dilation, groups, "fwd")
                and _one_dtype(x, w, bias, out)):
            return False
        _nchw_fits("conv", "output", out.shape, x.shape, w.shape, stride, padding, dilation)
        isz, (n, k, oh, ow) = x.dtype.itemsize, out.shape
        # float32 reads x as it stands (x_nchw: the rule's maps are small, a channel's
        # values a few lines apart). Its relayout wrote lines the other thread had read
        # in the last call: 64x16x8x8 -> 32 /2, 2 threads, Zen 4: 28 us a call against
        # 8-10 us into lines of this core, the kernel 50 us either way
        nchw = x.dtype == _FLOATS[0] and x.is_compact()
        xh, xo = (x.handle, x.offset) if nchw else _relaid(x, (0, 2, 3, 1))
        yh, yo = _nhwc_target(out)
        # the kernel packs the (K, C, kh, kw) weight as it stands (w_kcrs): a relayout
        # pass cost 6-18 us a call at ResNet9's sizes
        _nhwc.forward(xh, xo, w.handle, w.offset, *_opt_at(bias), yh, yo, _nhwc_dims(x.shape),
                      _nhwc_dims(w.shape, True), stride, padding, dilation, isz, relu,
                      w_kcrs=True, x_nchw=nchw)
        _nchw_back(yh, (n, oh, ow, k), out)
        return True

    def _grad_input_by_nhwc(self, g, w, dx, stride, padding, dilation, groups):
        if not (_nhwc_wins(dx.shape, w.shape, stride, padding, dilation, groups, "dx")
                and _one_dtype(g, w, dx)):
            return False
        _nchw_fits("conv input gradient", "output gradient", g.shape, dx.shape, w.shape,
                   stride, padding, dilation)
        n, c, h, wd = dx.shape
        gh, go = _relaid(g, (0, 2, 3, 1))
        dh, do = _nhwc_target(dx)
        _nhwc.input_grad(gh, go, w.handle, w.offset, dh, do, (n, h, wd, c),
                         _nhwc_dims(w.shape, True), stride, padding, dilation,
                         g.dtype.itemsize, w_kcrs=True)
        _nchw_back(dh, (n, h, wd, c), dx)
        return True

    def _grad_weight_by_nhwc(self, g, x, dw, stride, padding, dilation, groups):
        if not (_nhwc_wins(x.shape, dw.shape, stride, padding, dilation, groups, "dw")
                and _one_dtype(g, x, dw)):
            return False
        _nchw_fits("conv weight gradient", "output gradient", g.shape, x.shape, dw.shape,
                   stride, padding, dilation)
        isz, (k, c, kh, kw) = g.dtype.itemsize, dw.shape
        gh, go = _relaid(g, (0, 2, 3, 1))
        xh, xo = _relaid(x, (0, 2, 3, 1))
        wt = _buffer.Buffer(max(dw.size, 1) * isz)
        _nhwc.weight_grad(gh, go, xh, xo, wt, 0, _nhwc_dims(x.shape), (kh, kw, c, k),
                          stride, padding, dilation, isz)
        _transpose(wt, 0, (kh, kw, c, k), (3, 2, 0, 1), dw.handle, dw.offset, isz)
        return True


def _pair2(v):
    return (v, v) if isinstance(v, int) else tuple(v)


_NHWC_LAYOUTS = {"x": "input (N, H, W, C)", "weight": "weight (kh, kw, C, K)",
                 "grad": "output gradient (N, OH, OW, K)", "bias": "bias (K,)"}


def _nhwc_ranks(what, **shapes):
    for name, shape in shapes.items():
        rank = 1 if name == "bias" else 4
        if len(shape) != rank:
            raise ValueError(f"{what}: {_NHWC_LAYOUTS[name]} must have {rank} dimensions, "
                             f"got shape {tuple(shape)}")


def _nhwc_fits(what, name, shape, want):
    if tuple(shape) != tuple(want):
        raise ValueError(f"{what}: {name} has shape {tuple(shape)}, the convolution needs "
                         f"{tuple(want)}")


def _nhwc_inputs(what, out, **arrays):
    """The arrays compacted (a channels-last view of an NCHW array is copied once), after
    checking ranks and that every array, out included, is one float dtype."""
    given = {name: a for name, a in arrays.items() if a is not None}
    _nhwc_ranks(what, **{name: a.shape for name, a in given.items()})
    _floats(what, out, *given.values())
    dtypes = {a.dtype for a in (out, *given.values())}
    if len(dtypes) > 1:
        raise TypeError(f"{what}: arrays must share one dtype, got "
                        f"{', '.join(f'{n} {a.dtype}' for n, a in given.items())}, "
                        f"output {out.dtype}")
    if not out.is_compact():
        raise ValueError(f"{what}: the output array must be compact")
    return tuple(None if a is None else a.compact() for a in arrays.values())


def _nhwc_wins(xshape, wshape, stride, padding, dilation, groups, mode):
    """Whether the CPU runs this NCHW convolution pass (mode "fwd", "dx": input grad, or
    "dw": weight grad; xshape (N, C, H, W), wshape (K, C, kh, kw)) on the channels-last
    kernels, with x, dy, y, dx relaid out around them (mininet_ext/conv_nhwc.pyx).
    MININET_CONV_NHWC=0 turns the switch off (A/B runs), =1 forces it for every
    one-group layer (tests).

    The rule is measured (AMD EPYC Zen 4, 2 threads, op-level time with the copies,
    against the NCHW path the layer took before): see _NHWC_RULE."""
    force = _env("MININET_CONV_NHWC")
    if force == "0" or groups != 1 or len(xshape) != 4 or len(wshape) != 4 or \
            xshape[1] != wshape[1]:
        return False
    if force == "1":
        return True
    return _NHWC_RULE(xshape, wshape, stride, padding, dilation, mode)


@functools.lru_cache(maxsize=1024)   # a model asks the same few layers every step
def _small_route(wshape, geometry, pixels, transposed, out_hw, state):
    """CPUDevice.conv2d_small's answer for one layer; state only keys the cache."""
    return _small_route_now(wshape, geometry, pixels, transposed, out_hw)


def _small_route_now(wshape, geometry, pixels, transposed, out_hw):
    """The NHWC rule, the stride phases, then Winograd (see CPUDevice.conv2d_small)."""
    if _nhwc_small(wshape, geometry, pixels, transposed, out_hw):
        return True
    stride, padding, dilation, groups = geometry
    if not transposed and out_hw is not None and _phases_fit(wshape, stride, dilation,
                                                             out_hw):
        return True
    if pixels < 16:
        return False
    if transposed:   # dx: the flipped filters, channels swapped, padding dil*(k-1) - pad
        padding = tuple(d * (k - 1) - p for d, k, p in zip(dilation, wshape[2:], padding))
        wshape = (wshape[1], wshape[0]) + tuple(wshape[2:])
    return _winograd_fits(tuple(wshape), stride, padding, dilation, groups)


def _nhwc_small(wshape, geometry, pixels, transposed, out_hw):
    """conv2d_small's answer for the layers _nhwc_wins sends to the NHWC kernels: the
    forward query stands for the forward and the weight grad, the transposed one for the
    input grad (the op asks both with the output map out_hw)."""
    stride, padding, dilation, groups = geometry
    if out_hw is None:
        return False
    k, c, kh, kw = wshape
    hw = tuple(max(1, (o - 1) * s + d * (kk - 1) + 1 - 2 * p)
               for o, s, d, kk, p in zip(out_hw, stride, dilation, (kh, kw), padding))
    xshape = (1, c) + hw
    modes = ("dx",) if transposed else ("fwd", "dw")
    return any(_nhwc_wins(xshape, wshape, stride, padding, dilation, groups, m) for m in modes)


def _nhwc_rule(xshape, wshape, stride, padding, dilation, mode):
    """Strided layers from 16+ channels onto a 2x2 .. 4x4 output map, forward and weight
    grad (they go together: the op sends a small map's both or neither to the device).
    There im2col's GEMM and the NCHW implicit GEMM fill their 32-pixel panels badly,
    while the NHWC tiles span images. 1 thread, CPU time, torch's time / ours, off -> on
    (forward; forward + backward): 64x16x8x8 -> 32 /2: 0.70 -> 0.80, 0.85 -> 0.99;
    64x32x4x4 -> 64 /2: 0.81 -> 0.93, 1.28 -> 1.35. Device calls alone, 2 threads, us,
    NCHW -> NHWC with copies: 64x16x8x8 -> 32 /2 forward 363-385 -> 318-332, weight grad
    418-545 -> 254-290, but input grad 428-505 -> 518-712 (its phases hold 1-4 taps of
    dy's K = 32 values): the input grad stays NCHW there. Onto a 2x2 map it runs NHWC
    too (1 thread, forward + backward: 64x32x4x4 -> 64 /2 1.06 with the forward and
    weight grad switched, 1.22 with all three; 1.08 unswitched).
    Measured and left out (AMD EPYC Zen 4): a 1x1 output (64x64x2x2 -> 128 /2 and the
    cropped 1x1 map 64x128 -> 128) won the forward (0.99 -> 1.09, 1.37 -> 1.61) but lost
    the backward (f+b 1.84 -> 1.61, 2.27 -> 2.06): im2col's GEMM is a plain GEMM there;
    stride 1 (4x4 and 16x16 maps, 32-64 channels) lost to Winograd (16x16: 2.56 -> 1.43);
    1-3 input channels lose (N's bench/conv_nhwc.py: the NHWC runs are 1-3 values long).
    Measured again after the relayouts became vector-block transposes (session 13, 1
    thread, CPU time, device calls with their copies, us, NCHW -> NHWC): 64x16x8x8 -> 32
    /2 input grad 318 -> 359 (still NCHW), weight grad 299 -> 231; 64x32x4x4 -> 64 /2
    input grad 850 -> 211, weight grad 916 -> 217; stride 1 64x32x4x4 -> 32 (Winograd)
    input grad 261 -> 322, weight grad 327 -> 386 (stays off). 1x1 output maps no longer
    reach this rule: ops/conv.py runs them as one GEMM (_dense_taps)."""
    n, c, h, w = xshape
    k, _, kh, kw = wshape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    small = min(stride) >= 2 and 4 <= oh * ow <= 16 and c >= 16
    return small and (mode != "dx" or oh * ow <= 4)


_NHWC_RULE = _nhwc_rule


def _nchw_fits(what, name, shape, xshape, wshape, stride, padding, dilation):
    """shape is the (N, K, OH, OW) of x (N, C, H, W) by w (K, C, kh, kw), or a ValueError."""
    n, oh, ow, k = _nhwc.out_shape(_nhwc_dims(xshape), _nhwc_dims(wshape, True),
                                   tuple(stride), tuple(padding), tuple(dilation))
    if tuple(shape) != (n, k, oh, ow):
        raise ValueError(f"{what}: {name} has shape {tuple(shape)}, input {tuple(xshape)} "
                         f"and weight {tuple(wshape)} give {(n, k, oh, ow)}")


def _one_dtype(*arrays):
    """One float dtype (else the NCHW path runs, and its checks name the problem)."""
    dtypes = {a.dtype for a in arrays if a is not None}
    return len(dtypes) == 1 and dtypes <= set(_FLOATS)


def _nhwc_dims(shape, weight=False):
    """(N, C, H, W) -> (N, H, W, C); a weight (K, C, kh, kw) -> (kh, kw, C, K)."""
    a, b, c, d = shape
    return (c, d, b, a) if weight else (a, c, d, b)


def _permuted_strides(shape, perm):
    """Strides into a compact array of `shape` for the axes in the order perm."""
    st, s = [0] * len(shape), 1
    for i in reversed(range(len(shape))):
        st[i], s = s, s * shape[i]
    return tuple(st[p] for p in perm)


def _plain(shape, perm):
    """A relayout that moves no data: every axis but one of size 1 keeps its order."""
    return [p for p in perm if shape[p] != 1] == [i for i in range(len(shape)) if shape[i] != 1]


def _relaid(a, perm):
    """(buffer, offset) of compact a with its axes in the order perm (a copy unless the
    order moves no data, as an (N, C, 1, 1) map's): the last axis of the result is
    gathered by blocks (_nhwc.relayout), the others merged as far as they run in order."""
    if _plain(a.shape, perm):
        return a.handle, a.offset
    buf = _buffer.Buffer(max(a.size, 1) * a.dtype.itemsize)
    _transpose(a.handle, a.offset, a.shape, perm, buf, 0, a.dtype.itemsize)
    return buf, 0


def _transpose(src, off, shape, perm, dst, doff, itemsize):
    """dst (compact, axes of src's compact `shape` in the order perm) = src; perm is one
    of the four relayouts: NCHW <-> NHWC, (K, C, kh, kw) <-> (kh, kw, C, K)."""
    st = _permuted_strides(shape, range(4))
    n = [shape[p] for p in perm]
    if perm == (0, 2, 3, 1):     # (N, C, H, W) -> (N, H, W, C): batch, pixels, channels
        args = (n[0], n[1] * n[2], n[3], st[0], 1, st[1])
    elif perm == (0, 3, 1, 2):   # (N, H, W, C) -> (N, C, H, W)
        args = (n[0], n[1], n[2] * n[3], st[0], 1, st[2])
    else:                        # (A, B, C, D) -> (C, D, B, A) or its inverse (D, C, A, B)
        if perm == (2, 3, 1, 0):
            args = (n[0] * n[1], n[2], n[3], 1, st[1], st[0])
        else:                    # (3, 2, 0, 1): taps (kh*kw) are the source's last axes
            args = (n[0], n[1], n[2] * n[3], st[3], st[2], st[1])
    _nhwc.relayout(src, off, dst, doff, *args, itemsize)


def _nhwc_target(out):
    """Where the NHWC kernel writes for the NCHW array out: out itself for a 1x1 map."""
    if out.shape[2] * out.shape[3] == 1:
        return out.handle, out.offset
    return _buffer.Buffer(max(out.size, 1) * out.dtype.itemsize), 0


def _nchw_back(buf, nhwc_shape, out):
    """out (N, C, H, W) = the NHWC array in buf (nothing to do for a 1x1 map)."""
    if out.shape[2] * out.shape[3] == 1:
        return
    _transpose(buf, 0, nhwc_shape, (0, 3, 1, 2), out.handle, out.offset, out.dtype.itemsize)


def _direct_wins(xshape, wshape, stride, groups):
    """Whether the CPU's forward runs this layer on the direct kernel
    (mininet_ext/conv_direct.pyx, column strides 1..4): one group, at most
    DIRECT_MAX_CHANNELS input channels (a network's first layer) and strides of 2 or
    more. MININET_CONV_DIRECT=0 turns it off (A/B runs), =1 forces it for every
    one-group layer (tests).

    The weight gradient takes its direct kernel too where the filter is at least
    DIRECT_DW_MIN_KW wide: its blocks are 8 taps wide (AVX-512), a 3x3 filter fills them
    to 3/8. Measured (AMD EPYC Zen 4, 1 thread, CPU time, device call, before -> after):
    64x3x32x32 -> 16 7x7/4 500 -> 270 us (0.54x; PyTorch's forward + weight gradient
    ~520-790 us), 64x3x64x64 -> 32 7x7/2 0.54x, but 64x3x32x32 -> 16 3x3/2 1.53x (before
    the last row of a 7-row filter ran alone: 7x7 0.71-0.84x). The forward, op-level
    against PyTorch's, before -> after: 64x3x32x32 -> 16 7x7/4 1.76 -> 1.02, 64x3x32x32 -> 16 3x3/2
    1.32 -> 0.80, 64x3x64x64 -> 32 7x7/2 1.23 -> 0.98, 16x3x128x128 -> 64 7x7/2 0.56 ->
    0.44. Left out, stride 1: 64x3x32x32 -> 32 3x3 (1.00 -> 0.97, a tie: the 8 MB output
    bounds both) and MNIST's 100x1x28x28 -> 16 5x5 (1.26 -> 1.33: 25 taps amortise a
    tile's store less, and 28 columns fill 8-pixel tiles to 88%)."""
    force = _env("MININET_CONV_DIRECT")
    if force == "0" or groups != 1 or len(xshape) != 4 or len(wshape) != 4 or \
            xshape[1] != wshape[1]:
        return False
    return force == "1" or (wshape[1] <= DIRECT_MAX_CHANNELS and min(stride) >= 2)


DIRECT_MAX_CHANNELS = 3
DIRECT_DW_MIN_KW = 7


def _cm_wins(xshape, wshape, stride, padding, dilation, groups, itemsize):
    """Whether the CPU's forward runs this layer on the channel-major direct kernel
    (mininet_ext/conv_direct.pyx forward_cm; builds with AVX-512): stride 1, no
    dilation, one group, at most CM_MAX_CHANNELS input channels, and an output row of at
    most CM_MAX_WIDTH pixels that fills its one or two vectors of pixels to 15/16.
    MININET_CONV_DIRECT=0 turns it off, =1 sends the layer to the other direct kernel
    (forward) instead (tests).

    Its tiles come out in NCHW order, where the pixel-major implicit GEMM's are
    transposed after (37% of the RGB 3x3 layer's forward). Measured (Xeon model 207,
    device call, 1 / 2 threads, before -> after, ms): 64x3x32x32 -> 32 3x3 1.72 -> 1.27 /
    1.18 -> 0.86; -> 64 3.17 -> 2.69 / 2.14 -> 1.41; 64x1x32x32 -> 32 1.00 -> 0.56 /
    0.71 -> 0.37; 64x3x32x32 -> 32 5x5 3.28 -> 2.49 / 1.76 -> 1.61; 64x3x64x64 -> 32
    6.17 -> 4.72 / 3.52 -> 2.89; 64x4x32x32 -> 32 0.93 / 0.84 of the time. Left out:
    MNIST's 100x1x28x28 -> 16 5x5 (28 of 32 lanes: 1.06 / 0.98), 8x3x224x224 -> 64 (1.04
    / 1.30), 8 channels (0.99 / 0.88)."""
    force = _env("MININET_CONV_DIRECT")
    if force in ("0", "1") or groups != 1 or len(xshape) != 4 or len(wshape) != 4 or \
            xshape[1] != wshape[1] or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) \
            or xshape[1] > CM_MAX_CHANNELS or not _direct.cm_available():
        return False
    return _cm_row_fits(xshape[3] + 2 * padding[1] - wshape[3] + 1, 64 // itemsize)


def _cm_row_fits(ow, lanes):
    """An output row of ow pixels fits the kernel's vectors (see _cm_wins)."""
    if ow < 1 or ow > CM_MAX_WIDTH:
        return False
    px = lanes * (2 if ow > lanes else 1)
    padded = -(-ow // px) * px
    return (padded - ow) * 16 <= padded


CM_MAX_CHANNELS = 4
CM_MAX_WIDTH = 64


def _phases_fit(wshape, stride, dilation, out_hw):
    """Whether the implicit GEMM's phased path (mininet_ext/convgemm.pyx, plan_phases)
    runs a strided layer with a small output map: an image's pixels, numbered in rows of
    OW + (kw-1)*dw // sw, are cut into panels of 32; at least half the panel columns must
    be output pixels. ResNet9's 7x7 stride-4 layer (8x8 out: 64 of 96) and its 3x3
    stride-2 one at 8x8 (4x4 out: 16 of 32) ran 1.5-2.5x faster than im2col + GEMM;
    4x4 -> 2x2 (4 of 32) and 2x2 -> 1x1 (1 of 32) 3-40x slower (AMD EPYC Zen 4)."""
    (oh, ow), kh, kw = out_hw, wshape[2], wshape[3]
    if stride == (1, 1):
        return False
    pixels = oh * (ow + (kw - 1) * dilation[1] // stride[1])
    return 2 * oh * ow >= -(-pixels // 32) * 32


def _winograd_fits(wshape, stride, padding, dilation, groups):
    """Whether the Winograd kernels (mininet_ext/winograd.pyx) run this convolution:
    stride 1, no dilation, one group, and 3x3 filters (F(4x4, 3x3)) with at least
    WINOGRAD_MIN_CHANNELS input and output channels, or 5x5 ones (F(2x2, 5x5)) with at
    least WINOGRAD5_MIN_CHANNELS (wshape: (K, C, kh, kw)).
    MININET_WINOGRAD=0 turns them off (the implicit GEMM runs everything then).

    Why these bounds (AMD EPYC Zen 4, 1 and 2 threads): Winograd does 4x fewer
    multiplications than the implicit GEMM, but transforming the tiles in and out costs
    about as much per channel as a GEMM over 16-32 channels: at 16 channels the implicit
    GEMM was 1.2x faster (64x16x32x32 -> 16), at 32-64 Winograd 1.5x (64x32x16x16 -> 64),
    at 128-256 2x (64x128x16x16 -> 128). F(2x2, 5x5) saves 2.78x of the multiplications
    but transforms 4x as many tiles per output pixel: against the implicit GEMM (2 threads,
    forward + backward, batch 64, 16x16) it was 2.8x slower at 16 channels (MNIST's
    100x16x14x14 -> 32), 1.0-1.6x slower at 32-64, 0.78x the time at 96, 0.65x at 128,
    0.56x at 256. Small maps run here only where ops/conv.py sends them to the fused
    kernels (conv2d_min_pixels)."""
    k, c, kh, kw = wshape
    least = {(3, 3): WINOGRAD_MIN_CHANNELS, (5, 5): WINOGRAD5_MIN_CHANNELS}.get((kh, kw))
    return (least is not None and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and min(k, c) >= least and min(padding) >= 0
            and _env("MININET_WINOGRAD", "1") != "0")


WINOGRAD_MIN_CHANNELS = 32
WINOGRAD5_MIN_CHANNELS = 96


def _wrows_fits(wshape, stride, padding, dilation, groups, xshape, itemsize):
    """Whether the row-wise Winograd F(4, 5) (winograd.forward_rows) runs this 5x5
    stride-1 convolution (wshape (K, C, 5, 5), xshape (N, C, H, W)): 2.5x fewer
    multiply-adds than the direct sum along the rows, the sum across rows direct, each
    input row transformed once per image. It computes 4 rows of every OH + 4 and whole
    4-pixel segments, and its transforms cost per channel: it wins from 24 channels in
    and out. Against the path these layers took before (the implicit GEMM; F(2x2, 5x5)
    from 96 channels), forward device calls, 2 threads, Xeon model 207, time ratio:
    64x24x16x16 -> 48 0.83, 64x32x16x16 -> 64 0.78, 32x64x28x28 -> 64 0.57,
    8x32x56x56 -> 32 0.65, 4x32x112x112 -> 32 0.64, 64x96x16x16 -> 96 0.76 (F(2x2, 5x5)),
    64x128x16x16 -> 128 0.89; left out: 100x16x14x14 -> 32 (MNIST's conv2) 1.02,
    its input gradient 32 -> 16 1.16, 64x16x16x16 -> 32 0.90 (a tie on other maps),
    100x8x14x14 -> 16 1.46, 3 or 1 input channels 1.4-2.7, and 32x256x16x16 -> 256 1.09
    (F(2x2, 5x5)). The workspace (a block of images' transformed rows and 8 products per
    thread) is kept under WROWS_MAX_BYTES. MININET_WINOGRAD_ROWS=0 (or
    MININET_WINOGRAD=0) turns it off."""
    k, c, kh, kw = wshape
    if (kh, kw) != (5, 5) or stride != (1, 1) or dilation != (1, 1) or groups != 1 or \
            min(padding) < 0 or len(xshape) != 4 or xshape[1] != c or \
            not WROWS_MIN_CHANNELS <= min(k, c) <= max(k, c) <= WROWS_MAX_CHANNELS or \
            _env("MININET_WINOGRAD_ROWS", "1") == "0" or _env("MININET_WINOGRAD", "1") == "0":
        return False
    oh = xshape[2] + 2 * padding[0] - 4
    ow = xshape[3] + 2 * padding[1] - 4
    if oh < 1 or ow < 1:
        return False
    tiles = (ow + 3) // 4 * (oh + 4)   # an image's: a block holds one at least
    return 8 * (c + k + 12) * tiles * itemsize <= WROWS_MAX_BYTES


def _wcl_fits(wshape, stride, padding, dilation, groups, xshape, grad_input=False,
              grad_weight=False):
    """Whether F(2x2, 5x5) with channels in the vectors (winograd.forward_cl and
    weight_grad_cl, float32 only) runs this 5x5 stride-1 layer's forward (wshape
    (K, C, 5, 5), xshape (N, C, H, W)), or with grad_input / grad_weight its input or
    weight gradient.
    Its transforms move whole vectors of channels (the tile-major F(2x2, 5x5) gathers
    each 6x6 patch value by value, 2 pixels apart), and the 36 products of a chunk of 7
    tiles are folded into the output transform's 12 sums in L1. Forward device calls, 2
    threads, Xeon model 207, time against the path each layer took before (implicit
    GEMM; F(4, 5) rows from 24 channels; F(2x2, 5x5) from 96): MNIST's 100x16x14x14 -> 32
    0.75, 64x16x16x16 -> 32 0.79, 16x16x64x64 -> 32 0.69, 64x12x16x16 -> 32 0.89,
    64x32x16x16 -> 64 0.78, 64x64x16x16 -> 64 0.79, 32x64x28x28 -> 64 0.89,
    8x32x56x56 -> 32 0.90, 64x96x16x16 -> 96 0.83, 64x32x16x16 -> 128 0.79,
    64x96x16x16 -> 128 0.89; left out: fewer than 32 filters (one vector of them: each
    broadcast feeds one FMA) 64x32x16x16 -> 16 0.99, -> 24 1.08, 100x8x14x14 -> 16 1.28;
    128 or more channels (the filters of one product outgrow L1) 64x128x16x16 -> 128
    1.19, 32x256x16x16 -> 256 1.47. An input gradient (grad_input: wshape the swapped
    filters, xshape the output gradient's) takes the same bounds, and also 8-16 filters
    from exactly 32 channels, where a kernel with the 32-channel stride built in runs two
    vectors of tiles: against the path before (the implicit GEMM, F(4, 5) rows), MNIST's
    conv2 (32 -> 16) 0.92, 32 -> 8 0.89, 64x32 -> 48 0.90, 96 -> 32 0.91, 96 -> 96 0.94,
    64 -> 128 0.86; left out 32 -> 24 1.09, 64 -> 16 1.11, 16 -> 16 1.14. The weight
    gradient (grad_weight; winograd.weight_grad_cl: all of a band's tiles transformed,
    then 36 products summed over them in registers, each thread its own 36 x C x K sums)
    takes 12-128 channels and filters while C K <= 96 x 128 (the sums in L2): against
    the path before (the implicit GEMM; F(2x2, 5x5) tile-major from 96), 100x16x14x14 ->
    32 0.66, 64x16x16x16 -> 32 0.67, 16x16x64x64 -> 32 0.66, 64x32 -> 64 0.60, 64x64 ->
    128 0.59, 64x128 -> 64 0.64, 64x96 -> 96 0.69, 64x96 -> 128 0.87, 64x128 -> 96 0.91,
    64x24 -> 32 0.91, 64x12 -> 32 0.95, 100x12x14x14 -> 32 0.92, 64x32 -> 16 0.93; left
    out 64x128 -> 128 1.37 (2.4 MB of sums a thread), 100x8x14x14 -> 32 1.22.
    MININET_WINOGRAD_CL=0 (or MININET_WINOGRAD=0) turns it off."""
    if _env("MININET_WINOGRAD_CL", "1") == "0" or _env("MININET_WINOGRAD", "1") == "0":
        return False
    bounds = (WCL_MIN_CHANNELS, WCL_MAX_CHANNELS, WCL_MIN_FILTERS, WCL_MAX_FILTERS,
              WCL_WGRAD_MIN, WCL_WGRAD_MAX, WCL_WGRAD_MAX_SUMS, WROWS_MAX_BYTES)
    return _wcl_rule(tuple(wshape), tuple(stride), tuple(padding), tuple(dilation), groups,
                     tuple(xshape), grad_input, grad_weight, bounds)


@functools.lru_cache(maxsize=1024)   # a model asks the same few layers every step
def _wcl_rule(wshape, stride, padding, dilation, groups, xshape, grad_input, grad_weight,
              bounds):
    """_wcl_fits's answer from the shapes and the bounds (in the key, so a bound a test
    patches is asked anew): the workspace's size is a Cython geometry, ~1 us a call."""
    (WCL_MIN_CHANNELS, WCL_MAX_CHANNELS, WCL_MIN_FILTERS, WCL_MAX_FILTERS, WCL_WGRAD_MIN,
     WCL_WGRAD_MAX, WCL_WGRAD_MAX_SUMS, WROWS_MAX_BYTES) = bounds
    k, c, kh, kw = wshape
    if (kh, kw) != (5, 5) or stride != (1, 1) or dilation != (1, 1) or groups != 1 or \
            min(padding) < 0 or len(xshape) != 4 or xshape[1] != c or \
            not (grad_weight and WCL_WGRAD_MIN <= min(c, k) <= max(c, k) <= WCL_WGRAD_MAX
                 and c * k <= WCL_WGRAD_MAX_SUMS
                 or not grad_weight and WCL_MIN_CHANNELS <= c <= WCL_MAX_CHANNELS
                 and (WCL_MIN_FILTERS <= k <= WCL_MAX_FILTERS
                      or grad_input and c == 32 and 8 <= k <= 16)):
        return False
    if xshape[2] + 2 * padding[0] < 5 or xshape[3] + 2 * padding[1] < 5:
        return False
    if grad_weight:
        return _wino.cl_weight_grad_workspace_bytes(xshape, k, padding) <= WROWS_MAX_BYTES
    return _wino.cl_workspace_bytes(xshape, k, padding) <= WROWS_MAX_BYTES


WCL_MIN_CHANNELS = 12
WCL_MAX_CHANNELS = 96
WCL_MIN_FILTERS = 32
WCL_MAX_FILTERS = 128
WCL_WGRAD_MIN = 12
WCL_WGRAD_MAX = 128
WCL_WGRAD_MAX_SUMS = 96 * 128
WROWS_MIN_CHANNELS = 24
WROWS_MAX_CHANNELS = 128
WROWS_MAX_BYTES = 32 << 20

_cpu = CPUDevice()


def cpu(index=0):
    """The CPU device (there is one: "cpu:0" names it too, as in PyTorch)."""
    if index != 0:
        raise ValueError(f"device 'cpu:{index}' does not exist: the CPU is one device, cpu:0")
    return _cpu

