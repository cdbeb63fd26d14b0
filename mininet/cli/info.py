"""What `mininet info` reports: version, build flags, threads, SIMD, CUDA."""
import platform

from .. import __version__, get_num_threads
from ..backend import cuda_status
import mininet_ext
from mininet_ext import _omp

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "amx_tile", "neon", "asimd", "sve")


def cpu_features():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [s for s in SIMD_FLAGS if s in have]
    except OSError:
        pass
    return []


def build_info():
    from mininet_ext import _omp
    from mininet_ext import matmul
    try:
        from mininet_ext import _build_info as b
        flags, portable = b.CFLAGS, b.PORTABLE
    except ImportError:
        flags, portable = "unknown (no build record)", None
    return {"cflags": flags, "portable": portable, "openmp": _omp.openmp_enabled(),
            "blocking": matmul.blocking()}


def gather():
    ok, why = cuda_status()
    build = build_info()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "simd": cpu_features(),
        "openmp": build["openmp"],
        "threads": get_num_threads(),
        "threads_env": _omp.ENV_ERROR or "ok",
        "openmp_wait": (f"GOMP_SPINCOUNT={mininet_ext.WAIT_POLICY} (mininet's default)"
                        if mininet_ext.WAIT_POLICY else "from OMP_WAIT_POLICY / GOMP_SPINCOUNT"),
        "cflags": build["cflags"],
        "gemm_blocking": build["blocking"],
        "cuda": "available" if ok else f"unavailable: {why}",
    }
