"""The CUDA device's fused kernels (cuda_src/nn.cu, conv2d.cu): the capabilities the
CPU backend declares (softmax_xent, batchnorm, rows, lstm, conv2d) with the same
contracts as mininet/backend/cpu.py, so ops take the same paths on both devices, and
dropout masks from a counter-based generator.
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


def _need(kernel, name, a, shape, dtype):
    """a must be a compact array of exactly this shape and dtype (any offset): the kernels
    trust the sizes they are given, so a buffer of another size would be read or written
    past its end on the GPU. A ValueError here, before any launch (the CPU's Cython
    wrappers check the same in mininet_ext/_check.pxd `need`)."""
    shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
    if a is None:
        raise ValueError(f"{kernel}: {name} (a {dtype} array of shape {shape}) is missing")
    if tuple(a.shape) != shape or a.dtype != dtype or not a.is_compact():
        layout = "" if a.is_compact() else f" with strides {a.strides} (not compact)"
        raise ValueError(f"{kernel}: {name} must be a compact {dtype} array of shape {shape}, "
                         f"got {a.dtype} of shape {tuple(a.shape)}{layout}")


def _check_index(what, idx, n):
    """idx: n int64 indices, compact (their values are the host's to check)."""
    _need(what, "indices", idx, (n,), np.int64)


def _conv_out_shape(kernel, xshape, wshape, stride, padding, dilation, groups):
    """The (N, K, OH, OW) output of x (N, C, H, W) convolved with w (K, C/groups, kh, kw),
    after checking that the two fit together (the kernels index x and w by these sizes)."""
    if len(xshape) != 4 or len(wshape) != 4:
        raise ValueError(f"{kernel}: input {tuple(xshape)} and weight {tuple(wshape)} must be 4-D")
    n, c, h, w = xshape
    k, cg, kh, kw = wshape
    if groups < 1 or c % groups or k % groups or cg * groups != c:
        raise ValueError(f"{kernel}: weight {tuple(wshape)} does not fit an input of {c} channels "
                         f"in {groups} groups")
    oh, ow = ((size + 2 * p - d * (t - 1) - 1) // s + 1 for size, t, s, p, d in
              zip((h, w), (kh, kw), stride, padding, dilation))
    if oh < 1 or ow < 1:
        raise ValueError(f"{kernel}: kernel {(kh, kw)} is larger than the padded input "
                         f"{tuple(xshape)}")
    return n, k, oh, ow


class FusedKernels:
    """softmax cross-entropy, batch norm, embedding rows, LSTM steps, implicit-GEMM conv."""
    fused_capabilities = frozenset({"softmax_xent", "batchnorm", "rows", "lstm", "conv2d",
                                    "dropout", "layernorm", "softmax"})
    conv2d_min_pixels = 0    # no im2col path beats the implicit GEMM here

    def _per_block(self, module, name, argtypes, blocks, *args):
        """One block per row/channel (a grid-stride loop covers more than the grid)."""
        if blocks:
            self._launch(module, name, argtypes, 0, *args, grid=(min(blocks, MAX_GRID_X), 1, 1))

    # softmax cross-entropy -------------------------------------------------------------
    def softmax_xent(self, z, labels, probs, loss):
        _check_floats("softmax cross-entropy (logits)", z)
        n, c = z.shape
        _need("softmax_xent", "logits", z, (n, c), z.dtype)
        _check_index("softmax_xent", labels, n)
        _need("softmax_xent", "probs", probs, (n, c), z.dtype)
        _need("softmax_xent", "loss", loss, (), z.dtype)
        if n == 0:
            self.fill(loss, float("nan"))
            return
        rows = self.alloc(n * z.dtype.itemsize)   # back to the pool after the queued kernels
        s = SUFFIX[z.dtype]
        args = (self._ptr(z), self._ptr(labels), self._ptr(probs), rows.ptr, n, c)
        if c <= WARP_ROW_MAX:
            per_block = THREADS // 32   # rows a block: one warp each
            self._per_block("nn", f"softmax_xent_rows_{s}", "PPPPqi", -(-n // per_block), *args)
        else:
            self._per_block("nn", f"softmax_xent_{s}", "PPPPqi", n, *args)
        self._launch("nn", f"mean_rows_{s}", "PPq", 0, rows.ptr, self._ptr(loss), n,
                     grid=(1, 1, 1))

    def softmax_xent_grad(self, probs, labels, g, scale, out):
        _check_floats("softmax_xent_grad", probs)
        n, c = probs.shape
        _need("softmax_xent_grad", "probs", probs, (n, c), probs.dtype)
        _check_index("softmax_xent_grad", labels, n)
        _need("softmax_xent_grad", "g", g, g.shape if g.size == 1 else (), probs.dtype)
        _need("softmax_xent_grad", "out", out, (n, c), probs.dtype)
        s = SUFFIX[probs.dtype]
        self._launch("nn", f"softmax_xent_grad_{s}", "PPPPqi" + _real(probs.dtype), n * c,
                     self._ptr(probs), self._ptr(labels), self._ptr(g), self._ptr(out), n, c,
                     scale)

    # batch norm over all axes but 1 ------------------------------------------------------
    @staticmethod
    def _bn_shape(a):
        outer, c = a.shape[:2]
        return outer, c, a.size // max(outer * c, 1)

    def batchnorm(self, x, w, b, xhat, y, mean, var, inv, eps, relu=False):
        if relu:   # no batchnorm_relu capability here: ops compose batch norm and ReLU
            raise NotImplementedError("batchnorm: the CUDA kernels have no ReLU epilogue")
        _check_floats("batch norm", x, w, b)
        outer, c, inner = self._bn_shape(x)
        if not x.dtype == w.dtype == b.dtype or w.shape != (c,) or b.shape != (c,):
            raise TypeError(f"batchnorm: weight {w.dtype} {w.shape} and bias {b.dtype} {b.shape} "
                            f"must be ({c},) arrays of the input's dtype {x.dtype}")
        if outer * inner == 0:
            raise ValueError("batch norm: no values to take statistics over")
        for name, a in (("x", x), ("xhat", xhat), ("y", y)):
            _need("batchnorm", name, a, x.shape, x.dtype)
        for name, a in (("weight", w), ("bias", b), ("mean", mean), ("var", var), ("inv", inv)):
            _need("batchnorm", name, a, (c,), x.dtype)
        self._per_block("nn", f"batchnorm_{SUFFIX[x.dtype]}", "P" * 8 + "qiqd", c,
                        *(self._ptr(a) for a in (x, w, b, xhat, y, mean, var, inv)),
                        outer, c, inner, float(eps))

    def batchnorm_backward(self, g, xhat, w, inv, dx, dw, db, y=None):
        if y is not None:
            raise NotImplementedError("batchnorm_backward: the CUDA kernels have no ReLU mask")
        _check_floats("batchnorm_backward", g)
        outer, c, inner = self._bn_shape(g)
        if not g.dtype == w.dtype == xhat.dtype or w.shape != (c,):
            raise TypeError(f"batchnorm_backward: grad {g.dtype}, xhat {xhat.dtype} and weight "
                            f"{w.dtype} {w.shape} must share a dtype, weight ({c},)")
        for name, a in (("g", g), ("xhat", xhat), ("dx", dx)):
            _need("batchnorm_backward", name, a, g.shape, g.dtype)
        for name, a in (("weight", w), ("inv", inv), ("dw", dw), ("db", db)):
            _need("batchnorm_backward", name, a, (c,), g.dtype)
        self._per_block("nn", f"batchnorm_backward_{SUFFIX[g.dtype]}", "P" * 7 + "qiq", c,
                        *(self._ptr(a) for a in (g, xhat, w, inv, dx, dw, db)), outer, c, inner)

    # row kernels over the last dim of (R, D) arrays: a warp per row -------------------
    def _warp_rows(self, name, argtypes, dtype, r, *args):
        if r:
            per_block = THREADS // 32
            self._launch("nn", f"{name}_{SUFFIX[dtype]}", argtypes, 0, *args,
                         grid=(min(-(-r // per_block), MAX_GRID_X), 1, 1))

    def _rows_shape(self, kernel, x):
        if x.ndim != 2:
            raise ValueError(f"{kernel}: needs a 2-D array, got shape {x.shape}")
        _check_floats(kernel, x)
        return x.shape

    def _opt_ptr(self, kernel, name, a, shape, dtype):
        if a is None:
            return 0
        _need(kernel, name, a, shape, dtype)
        return self._ptr(a)

    def layernorm(self, x, w, b, y, mean, rstd, eps):
        r, d = self._rows_shape("layernorm", x)
        dt = x.dtype
        _need("layernorm", "input", x, (r, d), dt)
        wp, bp = (self._opt_ptr("layernorm", n, a, (d,), dt)
                  for n, a in (("weight", w), ("bias", b)))
        _need("layernorm", "output", y, (r, d), dt)
        for name, a in (("mean", mean), ("rstd", rstd)):
            _need("layernorm", name, a, (r,), dt)
        self._warp_rows("layernorm", "PPPPPPqqd", dt, r, self._ptr(x), wp, bp, self._ptr(y),
                        self._ptr(mean), self._ptr(rstd), r, d, float(eps))

    def layernorm_backward(self, g, x, mean, rstd, w, dx, dw, db):
        r, d = self._rows_shape("layernorm_backward", x)
        dt = x.dtype
        for name, a in (("output gradient", g), ("input", x), ("input gradient", dx)):
            _need("layernorm_backward", name, a, (r, d), dt)
        for name, a in (("mean", mean), ("rstd", rstd)):
            _need("layernorm_backward", name, a, (r,), dt)
        wp, dwp, dbp = (self._opt_ptr("layernorm_backward", n, a, (d,), dt)
                        for n, a in (("weight", w), ("dw", dw), ("db", db)))
        stats = (self._ptr(mean), self._ptr(rstd))
        self._warp_rows("layernorm_backward", "PPPPPPqq", dt, r, self._ptr(g), self._ptr(x),
                        *stats, wp, self._ptr(dx), r, d)
        if dw is not None or db is not None:
            self._launch("nn", f"layernorm_param_grads_{SUFFIX[dt]}", "PPPPPPqq", d,
                         self._ptr(g), self._ptr(x), *stats, dwp, dbp, r, d)

    def softmax(self, x, y):
        r, d = self._rows_shape("softmax", x)
        _need("softmax", "input", x, (r, d), x.dtype)
        _need("softmax", "output", y, (r, d), x.dtype)
        self._warp_rows("softmax", "PPqq", x.dtype, r, self._ptr(x), self._ptr(y), r, d)

    def softmax_backward(self, y, g, dx):
        r, d = self._rows_shape("softmax_backward", y)
        for name, a in (("softmax output", y), ("output gradient", g), ("input gradient", dx)):
            _need("softmax_backward", name, a, (r, d), y.dtype)
        self._warp_rows("softmax_backward", "PPPqq", y.dtype, r, self._ptr(y), self._ptr(g),
                        self._ptr(dx), r, d)

    # embedding rows (the host checked the indices) --------------------------------------
    def take_rows(self, src, idx, out):
        _check_floats("take_rows", src)
        rows, d = src.shape
        n = out.shape[0] if out is not None and out.ndim else -1
        _need("take_rows", "table", src, (rows, d), src.dtype)
        _check_index("take_rows", idx, n)
        _need("take_rows", "out", out, (n, d), src.dtype)
        self._launch("nn", f"take_rows_{SUFFIX[src.dtype]}", "PPPqqq", idx.size * d,
                     self._ptr(src), self._ptr(idx), self._ptr(out), idx.size, rows, d)

    def add_rows(self, g, idx, out):
        _check_floats("add_rows", g)
        if g.ndim != 2:
            raise ValueError(f"add_rows: g must be (indices, row size), got shape {g.shape}")
        n, d = g.shape
        rows = out.shape[0] if out is not None and out.ndim else 0
        _need("add_rows", "g", g, (n, d), g.dtype)
        _check_index("add_rows", idx, n)
        _need("add_rows", "out", out, (rows, d), g.dtype)
        self._launch("nn", f"add_rows_{SUFFIX[g.dtype]}", "PPPqqq", idx.size * d,
                     self._ptr(g), self._ptr(idx), self._ptr(out), idx.size, rows, d)

    # LSTM steps ------------------------------------------------------------------------
    def lstm_gates(self, z, c, act, c_new, h_new):
        _check_floats("LSTM gates", z, c)
        b, n = check_lstm_gates(z, c)
        for name, a, shape in (("z", z, (b, 4 * n)), ("c", c, (b, n)), ("act", act, (b, 5 * n)),
                               ("c_new", c_new, (b, n)), ("h_new", h_new, (b, n))):
            _need("lstm_gates", name, a, shape, c.dtype)
        self._launch("nn", f"lstm_forward_{SUFFIX[c.dtype]}", "PPPPPqq", b * n,
                     *(self._ptr(a) for a in (z, c, act, c_new, h_new)), b, n)

    def lstm_gates_grad(self, act, c, dh, dc, dz, dc_prev):
        _check_floats("lstm_gates_grad", c)
        b, n = c.shape
        for name, a, shape in (("act", act, (b, 5 * n)), ("c", c, (b, n)), ("dh", dh, (b, n)),
                               ("dc", dc, (b, n)), ("dz", dz, (b, 4 * n)),
                               ("dc_prev", dc_prev, (b, n))):
            _need("lstm_gates_grad", name, a, shape, c.dtype)
        self._launch("nn", f"lstm_backward_{SUFFIX[c.dtype]}", "PPPPPPqq", b * n,
                     *(self._ptr(a) for a in (act, c, dh, dc, dz, dc_prev)), b, n)

    # dropout masks from a counter-based generator ----------------------------------------
    def dropout_mask(self, mask, keep, scale, seed, counter):
        _check_floats("dropout_mask", mask)
        _need("dropout_mask", "mask", mask, mask.shape, mask.dtype)
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

    def _conv_check(self, kernel, xshape, wshape, stride, padding, dilation, groups, dtype,
                    *arrays):
        """Every (name, array, shape) is a compact array of that shape and dtype; shapes
        None stand for the input (xshape), weight (wshape) or output shape (from those)."""
        _check_floats(kernel, *(a for _, a, _ in arrays))
        oshape = _conv_out_shape(kernel, xshape, wshape, stride, padding, dilation, groups)
        known = {"x": xshape, "w": wshape, "out": oshape}
        for name, a, shape in arrays:
            _need(kernel, name, a, known.get(shape, shape), dtype)
        return self._conv_geom(xshape, wshape, oshape, stride, padding, dilation, groups)

    def conv2d(self, x, w, bias, out, stride, padding, dilation, groups):
        _check_floats("conv", x, w, bias)
        g = self._conv_check("conv2d", x.shape, w.shape, stride, padding, dilation, groups,
                             x.dtype, ("x", x, "x"), ("weight", w, "w"), ("out", out, "out"),
                             *(() if bias is None else (("bias", bias, (w.shape[0],)),)))
        n, _, _, _, k, _ = g[:6]
        self._conv_gemm("conv2d_forward", x.dtype, g, k // groups, n * g[14] * g[15],
                        self._ptr(x), self._ptr(w), 0 if bias is None else self._ptr(bias),
                        self._ptr(out))

    def conv2d_grad_input(self, gout, w, dx, stride, padding, dilation, groups):
        _check_floats("conv2d_grad_input", gout)
        if dx.ndim == gout.ndim == w.ndim == 4 and groups > 0:   # what gout and w fix of dx
            _need("conv2d_grad_input", "dx", dx,
                  (gout.shape[0], w.shape[1] * groups, *dx.shape[2:]), gout.dtype)
        g = self._conv_check("conv2d_grad_input", dx.shape, w.shape, stride, padding, dilation,
                             groups, gout.dtype, ("gout", gout, "out"), ("weight", w, "w"),
                             ("dx", dx, "x"))
        n, c, h, wd = dx.shape
        self._conv_gemm("conv2d_grad_input", gout.dtype, g, c // groups, n * h * wd,
                        self._ptr(gout), self._ptr(w), self._ptr(dx))

    # split-K for the weight gradient: its reduction (N*OH*OW) is long and its output
    # (K x C/groups*kh*kw) often a single 64 x 64 tile, so slices of the reduction run in
    # blocks of their own and atomicAdd into dw (zeroed first): enough blocks to fill a
    # GPU (2 x 132 SMs of an H100/H200), no slice shorter than conv_split_chunk (1024 left
    # the MNIST CNN's first layer, 16 x 25 outputs over 78,400 terms, at 77 blocks: 0.26 ms
    # of its 1.7 ms step on an H200). The atomics add the slices in whatever order they
    # finish: such a gradient's last bits can change from run to run (the README says so)
    conv_split_chunk = 256
    conv_split_blocks = 264

    def _conv_splits(self, other_blocks, kd):
        """(splits, kk per split) of a weight-gradient reduction of kd terms."""
        splits = min(-(-kd // self.conv_split_chunk),
                     max(1, self.conv_split_blocks // other_blocks))
        if splits <= 1:
            return 1, kd
        chunk = -(-kd // splits)
        chunk = -(-chunk // 16) * 16          # whole TILE_K steps (cuda_src/conv2d.cu)
        return -(-kd // chunk), chunk         # no empty slice

    def conv2d_grad_weight(self, gout, x, dw, stride, padding, dilation, groups):
        _check_floats("conv2d_grad_weight", gout)
        if dw.ndim == gout.ndim == x.ndim == 4 and groups > 0:   # what gout and x fix of dw
            _need("conv2d_grad_weight", "dw", dw, (gout.shape[1], x.shape[1] // groups,
                                                   *dw.shape[2:]), gout.dtype)
        g = self._conv_check("conv2d_grad_weight", x.shape, dw.shape, stride, padding, dilation,
                             groups, gout.dtype, ("gout", gout, "out"), ("x", x, "x"),
                             ("dw", dw, "w"))
        k, cg, kh, kw = dw.shape
        m, ncols, kd = k // groups, cg * kh * kw, g[0] * g[14] * g[15]
        grid = [(ncols + 63) // 64, (m + 63) // 64, groups]
        if 0 in grid:
            return
        if kd == 0:
            self.fill(dw, 0.0)
            return
        splits, chunk = self._conv_splits(grid[0] * grid[1] * groups, kd)
        if grid[1] > 65535 or groups * splits > 65535:
            raise ValueError(f"conv2d_grad_weight: {m} rows x {groups} groups exceed the CUDA grid")
        if splits > 1:
            self.fill(dw, 0.0)     # the slices add into it
        grid[2] = groups * splits   # z = group * splits + split
        self._launch("conv2d", f"conv2d_grad_weight_{SUFFIX[gout.dtype]}", "PPP" + CONV_GEOM + "q",
                     0, self._ptr(gout), self._ptr(x), self._ptr(dw), *g, chunk,
                     grid=tuple(grid))

    def conv2d_grad_bias(self, gout, db):
        _check_floats("conv2d_grad_bias", gout)
        if gout.ndim != 4:
            raise ValueError(f"conv2d_grad_bias: gout must be 4-D (N, K, OH, OW), got {gout.shape}")
        n, k = gout.shape[:2]
        _need("conv2d_grad_bias", "gout", gout, gout.shape, gout.dtype)
        _need("conv2d_grad_bias", "db", db, (k,), gout.dtype)
        p = gout.size // max(n * k, 1)
        if n * p == 0:
            self.fill(db, 0.0)
            return
        # blocks (channel, slice of the images) write float64 partials, then one thread a
        # channel sums them in order: about 512 blocks in all, a fixed order of the sums
        kb = min(k, MAX_GRID_X)
        slices = max(1, min(n, 512 // kb))
        part = self.alloc(k * slices * 8)
        suffix = SUFFIX[gout.dtype]
        self._launch("conv2d", f"conv2d_grad_bias_{suffix}", "PPiiq", 0, self._ptr(gout),
                     part.ptr, n, k, p, grid=(kb, slices, 1))
        self._launch("conv2d", f"conv2d_grad_bias_sum_{suffix}", "PPii", k, part.ptr,
                     self._ptr(db), k, slices)
        del part   # back to the pool: whatever reuses it queues after these kernels
