"""The CUDA backend: the kernels of cuda_src/*.cu, compiled once (cubin cache,
cuda_build.py) and launched through PyCUDA. Imported only by mininet.cuda().

The primary context is retained on first use and released at exit. Memory
comes from PyCUDA's DeviceMemoryPool (size-binned, freed blocks are reused),
so a training step does not call cuMemAlloc per op.
"""
import atexit
import math

import numpy as np

from . import cuda_build
from .cuda_nn import FusedKernels
from .device import DTYPES, Device, DeviceUnavailable
from .opcodes import COMPARE, REDUCE

MAXDIM = 6          # cuda_src/common.cuh: MN_MAXDIM
THREADS = 256       # cuda_src/common.cuh: MN_THREADS
VIEW = "q" * (2 * MAXDIM)   # struct View passed by value
GEOM = "i" * 14             # struct Geom passed by value
SUFFIX = {np.dtype("float32"): "f32", np.dtype("float64"): "f64"}
BOOL = np.dtype("bool")
DTYPE_NAMES = {0: "f32", 1: "f64", 2: "i64", 3: "b8"}   # by device.DTYPES code


def _size(nbytes):
    """Bytes in words: 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "bytes" else f"{nbytes} bytes"
        nbytes /= 1024


def _vec_layout(a, ptr, batch):
    """The vector-load GEMM's reading of a float32 (..., M, K) view at device address ptr:
    ("r", row stride) where its rows are contiguous and 16-byte multiples apart, ("t",
    column stride) where its columns are (a transposed view), None otherwise or where the
    base or a batch matrix is not 16-byte aligned (the gemm_XY_f32 kernels read 4-float
    vectors). A dim of size 1 is never stepped along, so its stride does not count: a
    (K, 1) column cut from a vector, a row of a matrix 5 floats wide (4 is passed)."""
    if a.dtype != np.float32 or ptr % 16 or \
            (batch is not None and (np.asarray(batch) % 4).any()):
        return None
    (rows, cols), (rs, cs) = a.shape[-2:], a.strides[-2:]
    if (cs == 1 or cols == 1) and (rs % 4 == 0 or rows == 1):
        return "r", rs if rows > 1 else 4
    if (rs == 1 or rows == 1) and (cs % 4 == 0 or cols == 1):
        return "t", cs if cols > 1 else 4
    return None


class CudaBuffer:
    """A pooled device allocation; returns to the pool when garbage. version: bumped by
    each in-place write of a tensor over it (autograd's check of saved values)."""
    __slots__ = ("alloc", "ptr", "nbytes", "version")

    def __init__(self, alloc, nbytes):
        self.alloc, self.ptr, self.nbytes = alloc, int(alloc), nbytes
        self.version = 0


def _collapse(shape, *strides):
    """Drop size-1 dims and merge dims contiguous in every stride set."""
    dims = [(n, [s[i] for s in strides]) for i, n in enumerate(shape) if n != 1]
    out = []
    for n, st in dims:
        if out and all(ps == s * n for ps, s in zip(out[-1][1], st)):
            out[-1] = (out[-1][0] * n, st)
        else:
            out.append((n, st))
    return out or [(1, [0] * len(strides))]


def _comparison(kind, op):
    """A bool output is a comparison's mask (eq..ge), as on the CPU: another op is refused
    by name rather than run as op(a, b) != 0."""
    if kind.startswith("compare") and op not in COMPARE:
        raise ValueError(f"{kind}: op {op} is not a comparison (eq, ne, lt, le, gt, ge)")


def _views(shape, *strides):
    """(element count, one View tuple per stride set), padded to MAXDIM dims."""
    dims = _collapse(shape, *strides)
    if len(dims) > MAXDIM:
        raise ValueError(f"CUDA kernels take views of at most {MAXDIM} non-mergeable dimensions; "
                         f"shape {tuple(shape)} with strides {strides} has {len(dims)}")
    pad = MAXDIM - len(dims)
    sizes = [1] * pad + [n for n, _ in dims]
    views = []
    for k in range(len(strides)):
        views.append(tuple(sizes) + tuple([0] * pad + [st[k] for _, st in dims]))
    return math.prod(shape), views


# the driver's limits on a grid: x < 2^31, y and z <= 65535
GRID_LIMITS = ((1 << 31) - 1, 65535, 65535)


def _check_grid(name, grid):
    """A grid the driver would refuse (or a kernel indexing by blockIdx would miss) is a
    clear error before the launch."""
    for n, limit, axis in zip(grid, GRID_LIMITS, "xyz"):
        if n > limit:
            raise ValueError(f"{name}: a grid of {grid} blocks exceeds CUDA's limit of {limit} "
                             f"in {axis}: the array is too large for this kernel")


class CUDADevice(FusedKernels, Device):
    name = "cuda"
    capabilities = FusedKernels.fused_capabilities
    synchronous = False     # launches queue on the stream; a read waits for them
    _instance = None

    @classmethod
    def instance(cls, index=None):
        """The process's GPU: one per process (its primary context is current on the
        threads that use it); another index than the one in use is refused."""
        if cls._instance is None:
            cls._instance = cls(index or 0)
        elif index is not None and index != cls._instance.index:
            raise ValueError(f"cuda:{index} was asked for, but this process already uses "
                             f"cuda:{cls._instance.index}: mininet runs on one GPU per process "
                             "(choose it with CUDA_VISIBLE_DEVICES or the first cuda:N used)")
        return cls._instance

    def __init__(self, index=0):
        from .cuda import load_pycuda
        drv, tools = load_pycuda()
        self.drv = drv
        drv.init()
        count = drv.Device.count()
        if not 0 <= index < count:
            raise ValueError(f"cuda:{index} does not exist: this machine has {count} CUDA "
                             f"device{'s' if count != 1 else ''} (cuda:0 .. cuda:{count - 1})")
        self.index = index
        self.dev = drv.Device(index)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        major, minor = self.dev.compute_capability()
        if major < 6:   # the kernels' float64 atomicAdd (embedding, pooling gradients)
            raise DeviceUnavailable(f"cuda:{index} is sm_{major}{minor}: mininet's kernels need "
                                    "compute capability 6.0 or newer")
        self.arch = f"sm_{major}{minor}"
        self.pool = tools.DeviceMemoryPool()
        self._modules, self._funcs = {}, {}
        atexit.register(self._release)

    def _release(self):
        try:
            self.pool.free_held()
            self.ctx.pop()
        except Exception:  # the driver may already be shutting down
            pass

    def __repr__(self):
        return f"cuda({self.dev.name()}, {self.arch})"

    # kernels ----------------------------------------------------------------
    def _fn(self, module, name, argtypes):
        key = (module, name)
        fn = self._funcs.get(key)
        if fn is None:
            mod = self._modules.get(module)
            if mod is None:
                emulated = getattr(self.drv, "EMULATED", False)   # the host build instead
                path = cuda_build.compile_host(module) if emulated else \
                    cuda_build.compile_cubin(module, self.arch)
                mod = self.drv.module_from_file(str(path))
                self._modules[module] = mod
            fn = mod.get_function(name)
            fn.prepare(argtypes)
            self._funcs[key] = fn
        return fn

    def _launch(self, module, name, argtypes, n, *args, block=THREADS, grid=None):
        if grid is None:
            if n == 0:
                return
            grid = (min((n + block - 1) // block, 1 << 16), 1, 1)
        if block % 32 or block > THREADS:   # block_sum and friends reduce whole warps
            raise ValueError(f"{name}: a block of {block} threads; the kernels take a multiple "
                             f"of 32 up to {THREADS}")
        _check_grid(name, grid)
        self._fn(module, name, argtypes).prepared_call(grid, (block, 1, 1), *args)

    def synchronize(self):
        self.drv.Context.synchronize()

    @staticmethod
    def _ptr(a):
        return a.handle.ptr + a.offset * a.dtype.itemsize

    # memory ---------------------------------------------------------------------
    def alloc(self, nbytes):
        try:
            return CudaBuffer(self.pool.allocate(max(int(nbytes), 256)), nbytes)
        except self.drv.MemoryError as e:
            raise MemoryError(f"CUDA out of memory: asked for {_size(nbytes)} on {self!r} with "
                              f"{_size(self.pool.active_bytes)} in use by mininet ({e})") from None

    def memory_stats(self):
        return {"active_blocks": self.pool.active_blocks, "held_blocks": self.pool.held_blocks,
                "managed_bytes": self.pool.managed_bytes, "active_bytes": self.pool.active_bytes}

    def from_numpy(self, arr, out):
        arr = np.ascontiguousarray(arr, dtype=out.dtype)
        if arr.size:
            self.drv.memcpy_htod(self._ptr(out), arr)

    def to_numpy(self, a):
        host = np.empty(a.shape, dtype=a.dtype)
        if a.size:
            c = a.compact()
            self.drv.memcpy_dtoh(host, self._ptr(c))
        return host

    # strided ------------------------------------------------------------------------
    def copy(self, src, dst):
        n, (vd, vs) = _views(dst.shape, dst.strides, src.strides)
        word = f"copy_{dst.dtype.itemsize}"
        self._launch("strided", word, "P" + VIEW + "P" + VIEW + "q", n,
                     self._ptr(dst), *vd, self._ptr(src), *vs, n)

    def cast(self, src, dst):
        n, (vd, vs) = _views(dst.shape, dst.strides, src.strides)
        names = DTYPE_NAMES
        self._launch("strided", f"cast_{names[DTYPES[src.dtype]]}_{names[DTYPES[dst.dtype]]}",
                     "P" + VIEW + "P" + VIEW + "q", n, self._ptr(dst), *vd, self._ptr(src), *vs, n)

    def fill(self, dst, value):
        n, (vd,) = _views(dst.shape, dst.strides)
        kind = "fill_" + DTYPE_NAMES[DTYPES[dst.dtype]]
        vtype = "f" if kind == "fill_f32" else "d"
        self._launch("strided", kind, "P" + VIEW + vtype + "q", n, self._ptr(dst), *vd,
                     float(value), n)

    # elementwise ------------------------------------------------------------------------
    def binary(self, op, a, b, out):
        n, (va, vb) = _views(out.shape, a.strides, b.strides)
        s = SUFFIX[a.dtype]
        kind = "compare" if out.dtype == BOOL else "binary"   # a bool out: the mask directly
        _comparison(kind, op)
        self._launch("elementwise", f"{kind}_{s}", "iP" + VIEW + "P" + VIEW + "Pq", n, op,
                     self._ptr(a), *va, self._ptr(b), *vb, self._ptr(out), n)

    def binary_scalar(self, op, a, value, reverse, out):
        n, (va,) = _views(out.shape, a.strides)
        s = SUFFIX[a.dtype]
        kind = "compare_scalar" if out.dtype == BOOL else "binary_scalar"
        _comparison(kind, op)
        self._launch("elementwise", f"{kind}_{s}", "iP" + VIEW + ("f" if s == "f32" else "d")
                     + "iPq", n, op, self._ptr(a), *va, value, int(reverse), self._ptr(out), n)

    def logical(self, op, a, b, out):
        for x in (a, b, out):
            if x.dtype != BOOL:
                raise TypeError(f"logical op: needs bool arrays, got {x.dtype}")
        n, (va, vb) = _views(out.shape, a.strides, b.strides)
        self._launch("elementwise", "logical_b8", "iP" + VIEW + "P" + VIEW + "Pq", n, op,
                     self._ptr(a), *va, self._ptr(b), *vb, self._ptr(out), n)

    def unary(self, op, a, out):
        n, (va,) = _views(out.shape, a.strides)
        self._launch("elementwise", f"unary_{SUFFIX[out.dtype]}", "iP" + VIEW + "Pq", n, op,
                     self._ptr(a), *va, self._ptr(out), n)

    # reductions and products -------------------------------------------------------------
    def reduce(self, op, a, outer, red, inner, out):
        n = outer * inner
        if n == 0:
            return
        if red == 0:  # an empty sum
            self.fill(out, 0.0)
            return
        arg = op in (REDUCE["argmax"], REDUCE["argmin"])
        # one block per output, no wider than the run it reduces (a warp for 10 logits)
        block = min(THREADS, max(32, 1 << (red - 1).bit_length()))
        self._launch("reduce", f"reduce_{SUFFIX[a.dtype]}", "iPqqPP", n, op, self._ptr(a), red,
                     inner, 0 if arg else self._ptr(out), self._ptr(out) if arg else 0,
                     grid=(n, 1, 1), block=block)

    def _offsets(self, offsets):
        if offsets is None:
            return None, 0
        buf = self.alloc(offsets.nbytes)
        self.drv.memcpy_htod(buf.ptr, np.ascontiguousarray(offsets, dtype=np.int64))
        return buf, buf.ptr

    def matmul(self, a, b, out, m, n, k, a_batch=None, b_batch=None):
        batch = 1 if a_batch is None else len(a_batch)
        if m == 0 or n == 0 or batch == 0:
            return
        if k == 0:
            self.fill(out, 0.0)
            return
        keep_a, pa = self._offsets(a_batch)
        keep_b, pb = self._offsets(b_batch)
        ptr_a, ptr_b, ptr_c = self._ptr(a), self._ptr(b), self._ptr(out)
        la, lb = _vec_layout(a, ptr_a, a_batch), _vec_layout(b, ptr_b, b_batch)
        if out.dtype == np.float32 and la and lb:
            # float32 rows or columns in 16-byte steps: the vector-load kernels
            (la, lda), (lb, ldb) = la, lb
            name, ldims = f"gemm_{la}{lb}_f32", (lda, ldb)
        else:
            name, ldims = f"gemm_{SUFFIX[out.dtype]}", None
        # a block is 128 rows of C and a grid holds at most GRID_LIMITS[1] blocks in y and
        # [2] in z: beyond them, slices of rows (one matrix a launch) and of the batch
        rows_cap = GRID_LIMITS[1] * 128
        zcap = GRID_LIMITS[2] if m <= rows_cap else 1
        isz, rstep = out.dtype.itemsize, a.strides[-2] * a.dtype.itemsize
        for z0 in range(0, batch, zcap):
            nz = min(zcap, batch - z0)
            for r0 in range(0, m, rows_cap):
                mr = min(rows_cap, m - r0)
                args = (ptr_a + r0 * rstep, pa + 8 * z0 if pa else 0, ptr_b,
                        pb + 8 * z0 if pb else 0, ptr_c + (z0 * m + r0) * n * isz)
                self._gemm(name, ldims, a, b, args, mr, n, k, nz)
        # keep_a/keep_b may go back to the pool now: whatever reuses them is queued on the
        # same (default) stream, so it runs after this kernel has read them
        del keep_a, keep_b

    def _gemm(self, name, ldims, a, b, args, m, n, k, nz):
        """One launch of a GEMM kernel: args are the A, A-batch, B, B-batch and C device
        pointers; ldims the vector kernels' (lda, ldb), None for the generic kernel's
        strides."""
        (pa, pab, pb, pbb, pc), grid = args, ((n + 127) // 128, (m + 127) // 128, nz)
        if ldims is not None:
            self._launch("matmul", name, "PqPPqPPiii", 0, pa, ldims[0], pab, pb, ldims[1],
                         pbb, pc, m, n, k, grid=grid)
        else:
            self._launch("matmul", name, "PqqPPqqPPiii", 0, pa, a.strides[-2], a.strides[-1],
                         pab, pb, b.strides[-2], b.strides[-1], pbb, pc, m, n, k, grid=grid)

    # convolution and pooling ----------------------------------------------------------
    @staticmethod
    def _geom(xshape, kernel, stride, pad, dil, oh, ow):
        return tuple(int(v) for v in (*xshape, *kernel, *stride, *pad, *dil, oh, ow))

    def im2col(self, x, col, kernel, stride, pad, dil, oh, ow):
        g = self._geom(x.shape, kernel, stride, pad, dil, oh, ow)
        self._launch("conv", f"im2col_{SUFFIX[x.dtype]}", "PqqqqP" + GEOM, col.size,
                     self._ptr(x), *x.strides, self._ptr(col), *g)

    def col2im(self, col, dx, kernel, stride, pad, dil, oh, ow):
        g = self._geom(dx.shape, kernel, stride, pad, dil, oh, ow)
        self._launch("conv", f"col2im_{SUFFIX[dx.dtype]}", "PP" + GEOM, dx.size,
                     self._ptr(col), self._ptr(dx), *g)

    def to_nchw(self, y, bias, out):
        n, k = out.shape[:2]
        p = out.size // max(n * k, 1)
        self._launch("conv", f"to_nchw_{SUFFIX[out.dtype]}", "PPPiiq", out.size, self._ptr(y),
                     0 if bias is None else self._ptr(bias), self._ptr(out), k, n, p)

    def from_nchw(self, g, out, db):
        n, k = g.shape[:2]
        p = g.size // max(n * k, 1)
        s = SUFFIX[g.dtype]
        self._launch("conv", f"from_nchw_{s}", "PPiiq", g.size, self._ptr(g), self._ptr(out), k, n, p)
        if db is not None and k:
            self._launch("conv", f"row_sums_{s}", "PPq", 0, self._ptr(out), self._ptr(db), n * p,
                         grid=(k, 1, 1))

    def maxpool(self, x, out, idx, kernel, stride, pad, dil):
        g = self._geom(x.shape, kernel, stride, pad, dil, *out.shape[2:])
        self._launch("conv", f"maxpool_{SUFFIX[x.dtype]}", "PPP" + GEOM, out.size,
                     self._ptr(x), self._ptr(out), self._ptr(idx), *g)

    def maxpool_backward(self, g, idx, dx):
        self.fill(dx, 0.0)
        geom = self._geom(dx.shape, (1, 1), (1, 1), (0, 0), (1, 1), *g.shape[2:])
        self._launch("conv", f"maxpool_backward_{SUFFIX[dx.dtype]}", "PPP" + GEOM, g.size,
                     self._ptr(g), self._ptr(idx), self._ptr(dx), *geom)

    def maxpool_gather(self, h, idx, out):
        geom = self._geom(h.shape, (1, 1), (1, 1), (0, 0), (1, 1), *out.shape[2:])
        self._launch("conv", f"maxpool_gather_{SUFFIX[h.dtype]}", "PPP" + GEOM, out.size,
                     self._ptr(h), self._ptr(idx), self._ptr(out), *geom)

    def avgpool(self, src, dst, x_shape, kernel, stride, pad, backward):
        oh, ow = (src.shape if backward else dst.shape)[2:]
        g = self._geom(x_shape, kernel, stride, pad, (1, 1), oh, ow)
        name = "avgpool_backward" if backward else "avgpool"
        self._launch("conv", f"{name}_{SUFFIX[dst.dtype]}", "PP" + GEOM, dst.size,
                     self._ptr(src), self._ptr(dst), *g)

    # fused optimizer updates ------------------------------------------------------------
    def sgd_step(self, p, g, v, lr, momentum, dampening, wd, nesterov, first):
        s = SUFFIX[p.dtype]
        f = "f" if s == "f32" else "d"
        self._launch("optim", f"sgd_{s}", "PPPq" + f * 4 + "ii", p.size, self._ptr(p), self._ptr(g),
                     self._ptr(v), p.size, lr, momentum, dampening, wd, int(nesterov), int(first))

    def adam_step(self, p, g, m, v, lr, b1, b2, eps, wd, decoupled, t):
        s = SUFFIX[p.dtype]
        f = "f" if s == "f32" else "d"
        self._launch("optim", f"adam_{s}", "PPPPq" + f * 5 + "i" + f * 2, p.size, self._ptr(p),
                     self._ptr(g), self._ptr(m), self._ptr(v), p.size, lr, b1, b2, eps, wd,
                     int(decoupled), 1 - b1 ** t, 1 - b2 ** t)
