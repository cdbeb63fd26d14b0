"""Find, compile and cache the CUDA sources in cuda_src/.

`python -m mininet.backend.cuda_build --check` compiles every .cu file with
nvcc for the archs we support, so CI catches a kernel that does not compile
even on a machine without a GPU.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK_ARCHS = ("sm_80", "sm_90")
NVCC_OPTIONS = ("-O3", "--use_fast_math", "-std=c++17")


def source_dir():
    """cuda_src/ through the package path: installed as mininet/cuda_src, else the source tree."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "cuda_src", here.parent / "cuda_src"):
        if candidate.is_dir() and any(candidate.glob("*.cu")):
            return candidate
    raise FileNotFoundError(f"cuda_src/*.cu not found next to {here}: the install is incomplete")


def sources():
    return sorted(source_dir().glob("*.cu"))


def nvcc_path():
    path = shutil.which("nvcc")
    if path is None and Path("/usr/local/cuda/bin/nvcc").exists():
        path = "/usr/local/cuda/bin/nvcc"
    return path


def nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out else "unknown"


def cache_dir():
    root = os.environ.get("MININET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mininet")
    path = Path(root) / "cubin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def generated_dir():
    """A folder holding ops_gen.cuh, written from the op table (opcodes.py), so the CUDA
    kernels always compute the ops the Python side numbers."""
    from .opcodes import cuda_header
    text = cuda_header()
    folder = cache_dir().parent / "gen" / hashlib.sha256(text.encode()).hexdigest()[:16]
    path = folder / "ops_gen.cuh"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return folder


def compile_cubin(name, arch, nvcc=None, options=NVCC_OPTIONS):
    """Path of the cubin for cuda_src/<name>.cu, compiled on first use and cached.
    The cache key covers the source (and common.cuh), options, arch and nvcc version."""
    nvcc = nvcc or nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc not found: install the CUDA toolkit or put nvcc on PATH")
    src_dir = source_dir()
    src = src_dir / f"{name}.cu"
    key = hashlib.sha256()
    gen = generated_dir()
    for part in (src.read_bytes(), (src_dir / "common.cuh").read_bytes(),
                 (gen / "ops_gen.cuh").read_bytes(), " ".join(options).encode(),
                 arch.encode(), nvcc_version(nvcc).encode()):
        key.update(part)
    out = cache_dir() / f"{name}-{arch}-{key.hexdigest()[:16]}.cubin"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [nvcc, "-cubin", f"-arch={arch}", *options, "-I", str(src_dir), "-I", str(gen),
               "-o", str(tmp_out), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed on {src.name} for {arch}:\n{result.stderr}")
        os.replace(tmp_out, out)  # atomic: a concurrent reader never sees half a file
    return out


def check(archs=CHECK_ARCHS):
    """Compile every .cu for every arch into a temp dir; returns the number of failures."""
    nvcc = nvcc_path()
    if nvcc is None:
        print("cuda-check: nvcc not found; skipping the CUDA compile check")
        return 0
    try:
        files = sources()
    except FileNotFoundError:
        print("cuda-check: cuda_src/ has no .cu files yet; nothing to compile")
        return 0
    failures = 0
    gen = generated_dir()
    with tempfile.TemporaryDirectory() as tmp:
        for src in files:
            for arch in archs:
                cmd = [nvcc, "-cubin", f"-arch={arch}", *NVCC_OPTIONS, "-I", str(src.parent),
                       "-I", str(gen), "-o", os.path.join(tmp, f"{src.stem}-{arch}.cubin"), str(src)]
                result = subprocess.run(cmd, capture_output=True, text=True)
                status = "ok" if result.returncode == 0 else "FAILED"
                print(f"cuda-check: {src.name} {arch}: {status}")
                if result.returncode != 0:
                    print(result.stderr)
                    failures += 1
    return failures


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(1 if check() else 0)
    print(__doc__)
