"""The CUDA device's fused kernels (cuda_src/nn.cu, conv2d.cu): the capabilities the
CPU backend declares (softmax_xent, batchnorm, rows, lstm, conv2d) with the same
contracts as mininet/backend/cpu.py, so ops take the same paths on both devices.
A mixin of CUDADevice: it uses its _launch, _ptr, alloc and drv."""
import numpy as np

from .device import check_lstm_gates

THREADS = 256       # cuda_src/common.cuh: MN_THREADS (the block of every launch here)

MAX_GRID_X = 1 << 16
SUFFIX = {np.dtype("float32"): "f32", np.dtype("float64"): "f64"}
CONV_GEOM = "i" * 16   # struct ConvGeom passed by value
WARP_ROW_MAX = 1024    # cuda_src/nn.cu: rows up to this many classes take a warp each


def _real(dtype):
    """The struct-module letter of a kernel's T scalar argument."""
    return "f" if SUFFIX[dtype] == "f32" else "d"


def _check_floats(what, *arrays):
    for a in arrays:
        if a is not None and a.dtype not in SUFFIX:
            raise TypeError(f"{what}: needs float32 or float64 arrays, got {a.dtype}")


def _check_index(what, idx, n):
    if idx.dtype != np.int64 or idx.size != n:
        raise TypeError(f"{what}: indices must be {n} int64 values, got {idx.dtype} of shape "
                        f"{idx.shape}")


class FusedKernels:
    """softmax cross-entropy, batch norm, embedding rows, LSTM steps, implicit-GEMM conv."""
    fused_capabilities = frozenset({"softmax_xent", "batchnorm", "rows", "lstm", "conv2d",
                                    "dropout"})
    conv2d_min_pixels = 0    # no im2col path beats the implicit GEMM here

    def _per_block(self, module, name, argtypes, blocks, *args):
        """One block per row/channel (a grid-stride loop covers more than the grid)."""
        if blocks:
            self._launch(module, name, argtypes, 0, *args, grid=(min(blocks, MAX_GRID_X), 1, 1))

    # softmax cross-entropy -------------------------------------------------------------
    def softmax_xent(self, z, labels, probs, loss):
        _check_floats("softmax cross-entropy (logits)", z)
        n, c = z.shape
        _check_index("softmax_xent", labels, n)
        if n == 0:
            self.fill(loss, float("nan"))
            return
        rows = self.alloc(n * z.dtype.itemsize)   # back to the pool after the queued kernels
        s = SUFFIX[z.dtype]
        args = (self._ptr(z), self._ptr(labels), self._ptr(probs), rows.ptr, n, c)
        if c <= WARP_ROW_MAX:   # a warp per row, 8 rows a block
            per_block = THREADS // 32   # rows a block: one warp each
            self._per_block("nn", f"softmax_xent_rows_{s}", "PPPPqi", -(-n // per_block), *args)
        else:
            self._per_block("nn", f"softmax_xent_{s}", "PPPPqi", n, *args)
        self._launch("nn", f"mean_rows_{s}", "PPq", 0, rows.ptr, self._ptr(loss), n,
                     grid=(1, 1, 1))

    def softmax_xent_grad(self, probs, labels, g, scale, out):
        n, c = probs.shape
        s = SUFFIX[probs.dtype]
        self._launch("nn", f"softmax_xent_grad_{s}", "PPPPqi" + _real(probs.dtype), n * c,
                     self._ptr(probs), self._ptr(labels), self._ptr(g), self._ptr(out), n, c,
                     scale)

    # batch norm over all axes but 1 ------------------------------------------------------
    @staticmethod
    def _bn_shape(a):
        outer, c = a.shape[:2]
        return outer, c, a.size // max(outer * c, 1)

    def batchnorm(self, x, w, b, xhat, y, mean, var, inv, eps):
        _check_floats("batch norm", x, w, b)
        outer, c, inner = self._bn_shape(x)
        if not x.dtype == w.dtype == b.dtype or w.shape != (c,) or b.shape != (c,):
            raise TypeError(f"batchnorm: weight {w.dtype} {w.shape} and bias {b.dtype} {b.shape} "
                            f"must be ({c},) arrays of the input's dtype {x.dtype}")
        if outer * inner == 0:
            raise ValueError("batch norm: no values to take statistics over")
        self._per_block("nn", f"batchnorm_{SUFFIX[x.dtype]}", "P" * 8 + "qiqd", c,
                        *(self._ptr(a) for a in (x, w, b, xhat, y, mean, var, inv)),
                        outer, c, inner, float(eps))

    def batchnorm_backward(self, g, xhat, w, inv, dx, dw, db):
        outer, c, inner = self._bn_shape(g)
        if not g.dtype == w.dtype == xhat.dtype or w.shape != (c,):
            raise TypeError(f"batchnorm_backward: grad {g.dtype}, xhat {xhat.dtype} and weight "
                            f"{w.dtype} {w.shape} must share a dtype, weight ({c},)")
        self._per_block("nn", f"batchnorm_backward_{SUFFIX[g.dtype]}", "P" * 7 + "qiq", c,
                        *(self._ptr(a) for a in (g, xhat, w, inv, dx, dw, db)), outer, c, inner)

    # embedding rows (the host checked the indices) --------------------------------------
    def take_rows(self, src, idx, out):
        _check_floats("take_rows", src)
        rows, d = src.shape
        _check_index("take_rows", idx, idx.size)
        self._launch("nn", f"take_rows_{SUFFIX[src.dtype]}", "PPPqqq", idx.size * d,
                     self._ptr(src), self._ptr(idx), self._ptr(out), idx.size, rows, d)

    def add_rows(self, g, idx, out):
        _check_floats("add_rows", g)
        rows, d = out.shape
        self._launch("nn", f"add_rows_{SUFFIX[g.dtype]}", "PPPqqq", idx.size * d,
                     self._ptr(g), self._ptr(idx), self._ptr(out), idx.size, rows, d)

    # LSTM steps ------------------------------------------------------------------------
    def lstm_gates(self, z, c, act, c_new, h_new):
        _check_floats("LSTM gates", z, c)
        b, n = check_lstm_gates(z, c)
        self._launch("nn", f"lstm_forward_{SUFFIX[c.dtype]}", "PPPPPqq", b * n,
                     *(self._ptr(a) for a in (z, c, act, c_new, h_new)), b, n)

    def lstm_gates_grad(self, act, c, dh, dc, dz, dc_prev):
        b, n = c.shape
        self._launch("nn", f"lstm_backward_{SUFFIX[c.dtype]}", "PPPPPPqq", b * n,
                     *(self._ptr(a) for a in (act, c, dh, dc, dz, dc_prev)), b, n)

    # dropout masks from a counter-based generator ----------------------------------------
    def dropout_mask(self, mask, keep, scale, seed, counter):
        _check_floats("dropout_mask", mask)
        n = mask.size
        self._launch("nn", f"dropout_mask_{SUFFIX[mask.dtype]}", "Pqd" + _real(mask.dtype) + "QQ",
                     n, self._ptr(mask), n, float(keep), scale, int(seed) & (2 ** 64 - 1),
                     int(counter) & (2 ** 64 - 1))

    # implicit-GEMM convolution -----------------------------------------------------------
    @staticmethod
    def _conv_geom(xshape, wshape, oshape, stride, padding, dilation, groups):
        n, c, h, w = xshape
        k, _, kh, kw = wshape
        return tuple(int(v) for v in (n, c, h, w, k, groups, kh, kw, *stride, *padding,
                                      *dilation, *oshape[2:]))

    def _conv_gemm(self, name, dtype, geom, m, ncols, *ptrs):
        grid = ((ncols + 63) // 64, (m + 63) // 64, geom[5])
        if 0 in grid:
            return
        if grid[1] > 65535 or geom[5] > 65535:
            raise ValueError(f"{name}: {m} rows x {geom[5]} groups exceed the CUDA grid")
        self._launch("conv2d", f"{name}_{SUFFIX[dtype]}", "P" * len(ptrs) + CONV_GEOM, 0,
                     *ptrs, *geom, grid=grid)

    def conv2d(self, x, w, bias, out, stride, padding, dilation, groups):
        _check_floats("conv", x, w, bias)
        g = self._conv_geom(x.shape, w.shape, out.shape, stride, padding, dilation, groups)
        n, _, _, _, k, _ = g[:6]
        self._conv_gemm("conv2d_forward", x.dtype, g, k // groups, n * g[14] * g[15],
                        self._ptr(x), self._ptr(w), 0 if bias is None else self._ptr(bias),
                        self._ptr(out))

    def conv2d_grad_input(self, gout, w, dx, stride, padding, dilation, groups):
        g = self._conv_geom(dx.shape, w.shape, gout.shape, stride, padding, dilation, groups)
        n, c, h, wd = dx.shape
        self._conv_gemm("conv2d_grad_input", gout.dtype, g, c // groups, n * h * wd,
                        self._ptr(gout), self._ptr(w), self._ptr(dx))

    def conv2d_grad_weight(self, gout, x, dw, stride, padding, dilation, groups):
        g = self._conv_geom(x.shape, dw.shape, gout.shape, stride, padding, dilation, groups)
        k, cg, kh, kw = dw.shape
        self._conv_gemm("conv2d_grad_weight", gout.dtype, g, k // groups, cg * kh * kw,
                        self._ptr(gout), self._ptr(x), self._ptr(dw))

    def conv2d_grad_bias(self, gout, db):
        n, k = gout.shape[:2]
        p = gout.size // max(n * k, 1)
        if n * p == 0:
            self.fill(db, 0.0)
            return
        self._per_block("conv2d", f"conv2d_grad_bias_{SUFFIX[gout.dtype]}", "PPiiq", k,
                        self._ptr(gout), self._ptr(db), n, k, p)
