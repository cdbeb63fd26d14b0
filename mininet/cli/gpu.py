"""GPU benchmarks: mininet's CUDA matmul vs cuBLAS SGEMM/DGEMM, timed with CUDA events.

cuBLAS is reached through ctypes on the CUDA toolkit's libcublas (CuPy is not on the
lent GPU machine): cublasSgemm_v2 / cublasDgemm_v2 with pedantic math, so TF32 is off
for a like-for-like comparison.
"""
import ctypes
import ctypes.util

import numpy as np

from ..backend import cuda
from ..ndarray import NDArray


def _events_time(device, fn, repeat):
    """Best per-call milliseconds of fn over `repeat` timed batches, after a warm-up."""
    drv = device.drv
    fn()
    device.synchronize()
    start, end = drv.Event(), drv.Event()
    best = float("inf")
    for _ in range(repeat):
        start.record()
        for _ in range(5):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.time_till(end) / 5)
    return best / 1e3


class _CtypesCublas:
    """Row-major C = A @ B through column-major cuBLAS: C^T = B^T A^T."""
    name = "cuBLAS (ctypes, pedantic math: no TF32)"

    def __init__(self):
        path = ctypes.util.find_library("cublas")
        candidates = [path] if path else []
        candidates += ["libcublas.so", "libcublas.so.13", "libcublas.so.12",
                       "/usr/local/cuda/lib64/libcublas.so"]
        for c in candidates:
            try:
                self.lib = ctypes.CDLL(c)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("libcublas not found (looked for " + ", ".join(candidates) + ")")
        self.handle = ctypes.c_void_p()
        if self.lib.cublasCreate_v2(ctypes.byref(self.handle)) != 0:
            raise RuntimeError("cublasCreate failed")
        self.lib.cublasSetMathMode(self.handle, 2)  # CUBLAS_PEDANTIC_MATH

    def gemm(self, a, b, c, m, n, k, dtype):
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        fn = self.lib.cublasSgemm_v2 if dtype == np.float32 else self.lib.cublasDgemm_v2
        one, zero = scalar(1), scalar(0)
        return lambda: fn(self.handle, 0, 0, n, m, k, ctypes.byref(one), ctypes.c_void_p(b), n,
                          ctypes.c_void_p(a), k, ctypes.byref(zero), ctypes.c_void_p(c), n)


def bench_matmul_gpu(shapes, dtype="float32", repeat=5):
    dev = cuda()
    rows = []
    blas = None
    try:
        blas = _CtypesCublas()
    except (RuntimeError, AttributeError) as e:
        print(f"cuBLAS unavailable: {e}; timing mininet only")
    for m, k, n in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((m, k)).astype(dtype)
        y = rng.standard_normal((k, n)).astype(dtype)
        a, b = NDArray(x, device=dev), NDArray(y, device=dev)
        c = a @ b
        err = float(np.abs(c.numpy() - x.astype(np.float64) @ y).max())
        flops = 2.0 * m * n * k
        impls = {"mininet": lambda: a @ b}
        if blas is not None:
            out = NDArray.make((m, n), device=dev, dtype=c.dtype)
            impls["cublas"] = blas.gemm(a.handle.ptr, b.handle.ptr, out.handle.ptr, m, n, k,
                                        np.dtype(dtype))
        for impl, fn in impls.items():
            t = _events_time(dev, fn, repeat)
            rows.append({"impl": impl, "m": m, "k": k, "n": n, "dtype": dtype, "threads": "gpu",
                         "device": repr(dev), "seconds": t, "gflops": flops / t / 1e9,
                         "max_abs_err": err if impl == "mininet" else None,
                         "reference": blas.name if blas else None})
    return rows
