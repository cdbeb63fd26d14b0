"""What `mininet info` reports: version, where it is installed from, build flags (and whether
the kernels match their sources), threads, SIMD, CUDA."""
import hashlib
import importlib.metadata
import json
import os
import platform
import runpy
from urllib.parse import unquote, urlparse

from .. import __version__, get_num_threads
from ..backend import cuda_status
import mininet_ext
from mininet_ext import _isa, _omp

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


def _distribution(path):
    """The installed distribution that provides the mininet package at path, or None (run
    from a source tree). Another project also ships a `mininet` package (the network
    emulator), hence the check that the distribution holds this very package."""
    names = importlib.metadata.packages_distributions().get("mininet", [])
    for name in sorted(set(names), key=lambda n: n.lower().replace("_", "-") != "mininet-dl"):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        direct = _direct_url(dist)
        if direct.get("dir_info", {}).get("editable"):
            url = urlparse(direct.get("url", ""))
            src = os.path.abspath(unquote(url.path)) if url.scheme == "file" else None
            if src and os.path.commonpath([src, path]) == src:
                return dist, direct
        elif os.path.abspath(str(dist.locate_file("mininet"))) == path:
            return dist, direct
    return None, {}


def _direct_url(dist):
    """PEP 610's direct_url.json of an installed distribution ({} when absent: from an index)."""
    try:
        return json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return {}


def install_info():
    """Where mininet is imported from: the package folder, the distribution that installed it
    (None when run from a source tree), whether that install is editable, and its source URL."""
    import mininet
    path = os.path.dirname(os.path.abspath(mininet.__file__))
    dist, direct = _distribution(path)
    if dist is None:
        return {"path": path, "distribution": None, "editable": None, "url": None}
    return {"path": path, "distribution": f"{dist.metadata['Name']} {dist.version}",
            "editable": bool(direct.get("dir_info", {}).get("editable")), "url": direct.get("url")}


def source_hash(root):
    """sha256 of the kernel sources under root (*.pyx, *.pxd, *.pxi, *.h, by relative path), as
    setup.py records it at build time; None where there are no .pyx files (an installed wheel)."""
    names = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                   for d, _, fs in os.walk(root) for f in fs
                   if f.endswith((".pyx", ".pxd", ".pxi", ".h")))
    if not any(name.endswith(".pyx") for name in names):
        return None
    h = hashlib.sha256()
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def extension_matches_source(root=None):
    """Whether the compiled kernels in root (default: mininet_ext's folder) were built from
    the sources now beside them: True, False (a source changed since the build: rebuild with
    `make build` or `pip install -e .`), or None when there is nothing to compare (no
    sources, as in an installed wheel, or a build that recorded no hash)."""
    root = root or os.path.dirname(os.path.abspath(mininet_ext.__file__))
    try:
        recorded = runpy.run_path(os.path.join(root, "_build_info.py")).get("SOURCE_HASH")
    except OSError:
        return None
    current = source_hash(root)
    if recorded is None or current is None:
        return None
    return current == recorded


def bf16_gemm():
    """How bf16 autocast products run here (CPUDevice.bf16_path), in words."""
    from ..backend.cpu import cpu
    try:
        path = cpu().bf16_path()
    except ValueError as e:   # a bad MININET_BF16_GEMM
        return str(e)
    if path == "amx":
        return "amx (bf16 panels on AMX tiles)"
    from mininet_ext import matmul
    ok, why = matmul.amx_available()
    why = "" if ok else f"; no AMX: {why}"
    if path == "native":
        return f"native (bf16 panels, vdpbf16ps where the CPU has AVX512_BF16{why})"
    return f"fp32 (inputs rounded to bf16, then the float32 GEMM: vdpbf16ps is slower here{why})"


def gather():
    ok, why = cuda_status()
    build = build_info()
    return {
        "version": __version__,
        "install": install_info(),
        "extension_matches_source": extension_matches_source(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "simd": cpu_features(),
        "openmp": build["openmp"],
        "threads": get_num_threads(),
        "threads_env": _omp.ENV_ERROR or "ok",
        "openmp_wait": (f"GOMP_SPINCOUNT={mininet_ext.WAIT_POLICY} (mininet's default: "
                        f"~{mininet_ext.spin_us():.0f} us of spinning on this CPU)"
                        if mininet_ext.WAIT_POLICY else "from OMP_WAIT_POLICY / GOMP_SPINCOUNT"),
        "cflags": build["cflags"],
        "kernel_isa": _isa.describe(),
        "vector_modules": _isa.describe_variants(),
        "gemm_blocking": build["blocking"],
        "bf16_gemm": bf16_gemm(),
        "cuda": "available" if ok else f"unavailable: {why}",
    }
