"""GPU benchmarks: mininet's CUDA matmul vs cuBLAS SGEMM/DGEMM, timed by the harness
(mininet.benchmark.harness) with the device's synchronize inside each timed batch.

cuBLAS is reached through ctypes on the CUDA toolkit's libcublas (CuPy is not on the
lent GPU machine): cublasSgemm_v2 / cublasDgemm_v2 with pedantic math, so TF32 is off
for a like-for-like comparison.
"""
import ctypes
import ctypes.util
import sys

import numpy as np

from ..backend import cuda
from ..ndarray import NDArray
from .bench import CaseTimer, matmul_work, shape_name


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


def bench_matmul_gpu(shapes, dtype="float32", min_time=0.2, repeat=None, progress=None):
    """mininet's CUDA matmul and cuBLAS per shape; each case's params hold mininet's
    largest error against numpy's float64 product and the reference's name."""
    dev = cuda()
    blas = None
    try:
        blas = _CtypesCublas()
    except (RuntimeError, AttributeError) as e:
        print(f"cuBLAS unavailable: {e}; timing mininet only", file=sys.stderr)
    impls = ["mininet"] + (["cublas"] if blas is not None else [])
    timer = CaseTimer(len(shapes) * len(impls), min_time, repeat, progress)
    cases = []
    for m, k, n in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((m, k)).astype(dtype)
        y = rng.standard_normal((k, n)).astype(dtype)
        a, b = NDArray(x, device=dev), NDArray(y, device=dev)
        c = a @ b
        err = float(np.abs(c.numpy() - x.astype(np.float64) @ y).max())
        flops, nbytes = matmul_work(m, k, n, dtype)
        fns = {"mininet": lambda: a @ b}
        if blas is not None:
            out = NDArray.make((m, n), device=dev, dtype=c.dtype)
            fns["cublas"] = blas.gemm(a.handle.ptr, b.handle.ptr, out.handle.ptr, m, n, k,
                                      np.dtype(dtype))
        for impl in impls:
            params = {"m": m, "k": k, "n": n, "dtype": dtype, "device": "cuda", "gpu": repr(dev),
                      "max_abs_err": err if impl == "mininet" else None,
                      "reference": blas.name if blas else None}
            cases.append(timer.time(f"matmul {shape_name(m, k, n)} {dtype} {impl} cuda", impl,
                                    params, fns[impl], threads=None, flops=flops, nbytes=nbytes,
                                    sync=dev.synchronize))
    return cases
