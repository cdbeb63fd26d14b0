"""Find, compile and cache the CUDA sources in cuda_src/.

`python -m mininet.backend.cuda_build --check` compiles every .cu file with
nvcc for the archs we support, so CI catches a kernel that does not compile
even on a machine without a GPU.

The host twin (MININET_CUDA=emulate, see mininet/backend/emulator): the same .cu files
compiled by the host C++ compiler against the emulation header into shared libraries,
cached like the cubins (key: source, common.cuh, the generated ops header, the emulator's
header and runtime, options, compiler version).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK_ARCHS = ("sm_80", "sm_90")
# no --use_fast_math: it flushes denormals and lets exp/log/division skip the NaN and
# infinity handling the CPU kernels are careful to keep (and tests check on both)
NVCC_OPTIONS = ("-O3", "-std=c++17")


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


# ---- the host twin -------------------------------------------------------------------------
HOST_OPTIONS = ("-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing",
                "-fno-fast-math", "-U_FORTIFY_SOURCE", "-w")
# GCC instruments every load and store with calls to __tsan_read4(addr) ...; the emulator's
# runtime defines those hooks (bounds and shared-memory race checks) instead of libtsan
CHECKED_OPTIONS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0")
KERNEL_RE = re.compile(r'extern\s*"C"\s*__global__\s+void\s+'
                       r'(?:__launch_bounds__\s*\(([^)]*)\)\s*)?(\w+)\s*\(')


def emulator_dir():
    return Path(__file__).resolve().parent / "emulator"


def host_compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("MININET_CUDA=emulate needs a host C++ compiler (g++): none found")
    return cxx


def host_compiler_version(cxx):
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def host_cache_dir():
    path = cache_dir().parent / "host"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts):
    key = hashlib.sha256()
    for part in parts:
        key.update(part if isinstance(part, bytes) else str(part).encode())
        key.update(b"\0")
    return key.hexdigest()[:16]


def _build_once(out, build):
    """out, built by build(tmp_path) into a temp file first unless it exists (atomic)."""
    if not out.exists():
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            tmp_out = Path(tmp) / out.name
            build(Path(tmp), tmp_out)
            os.replace(tmp_out, out)
    return out


def _run(cmd, what):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{' '.join(map(str, cmd))}\n{result.stderr}")
    return result.stdout


def compile_host_runtime(cxx=None):
    """The emulator runtime, libmnemu-<key>.so, that every host build links against."""
    cxx = cxx or host_compiler()
    emu = emulator_dir()
    key = _digest((emu / "runtime.cpp").read_bytes(), (emu / "cuda_emu.h").read_bytes(),
                  *HOST_OPTIONS, host_compiler_version(cxx))
    out = host_cache_dir() / f"libmnemu-{key}.so"
    return _build_once(out, lambda tmp, dst: _run(
        [cxx, *HOST_OPTIONS, "-shared", f"-Wl,-soname,{out.name}", "-I", emu, emu / "runtime.cpp",
         "-o", dst, "-lpthread"], "building the emulator runtime"))


def _host_key(name, cxx, src_dir, *options):
    gen, emu = generated_dir(), emulator_dir()
    return _digest((src_dir / f"{name}.cu").read_bytes(), (src_dir / "common.cuh").read_bytes(),
                   (gen / "ops_gen.cuh").read_bytes(), (emu / "cuda_emu.h").read_bytes(),
                   (emu / "runtime.cpp").read_bytes(), *HOST_OPTIONS, *options,
                   host_compiler_version(cxx), src_dir.resolve())   # the manifest names src_dir


def _matching_paren(text, i):
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return len(text)


def scan_kernels(name, cxx=None, src_dir=None):
    """The extern "C" __global__ entry points of cuda_src/<name>.cu (the source preprocessed,
    so kernels stamped out by macros count): [{name, params, max_threads}]."""
    cxx, src_dir = cxx or host_compiler(), Path(src_dir or source_dir())
    text = _run([cxx, "-E", "-P", "-x", "c++", "-D__CUDA_ARCH__=800", "-I", src_dir, "-I",
                 generated_dir(), src_dir / f"{name}.cu"], f"preprocessing {name}.cu")
    text = " ".join(text.split())
    kernels = []
    for m in KERNEL_RE.finditer(text):
        bounds = (m.group(1) or "").split(",")[0].strip(" ()")
        params = text[m.end():_matching_paren(text, m.end() - 1)]
        kernels.append({"name": m.group(2), "params": params.strip(),
                        "max_threads": int(bounds) if bounds.isdigit() else None})
    return kernels


def compile_host(name, cxx=None, src_dir=None):
    """The emulator's module file for cuda_src/<name>.cu (or src_dir/<name>.cu): a JSON
    manifest of its kernels; the fake driver builds the library variants it names
    (compile_host_library) when first used."""
    cxx, src_dir = cxx or host_compiler(), Path(src_dir or source_dir())
    out = host_cache_dir() / f"{name}-{_host_key(name, cxx, src_dir)}.json"
    return _build_once(out, lambda tmp, dst: dst.write_text(json.dumps(
        {"source": name, "source_dir": str(src_dir), "kernels": scan_kernels(name, cxx, src_dir)},
        indent=1)))


def compile_host_library(name, checked=False, cxx=None, src_dir=None):
    """cuda_src/<name>.cu built for the host: the kernels plus their table (MN_EMU_TABLE),
    linked against the runtime; `checked` instruments every memory access."""
    cxx, src_dir = cxx or host_compiler(), Path(src_dir or source_dir())
    options = CHECKED_OPTIONS if checked else ()
    kernels = json.loads(compile_host(name, cxx, src_dir).read_text())["kernels"]
    runtime = compile_host_runtime(cxx)
    variant = "checked" if checked else "fast"
    out = host_cache_dir() / f"{name}-{variant}-{_host_key(name, cxx, src_dir, *options)}.so"

    def build(tmp, dst):
        unit = tmp / f"{name}_host.cpp"
        table = " ".join(f"MN_EMU_KERNEL({k['name']})" for k in kernels)
        unit.write_text(f'#include "{src_dir / name}.cu"\nMN_EMU_TABLE({table})\n')
        emu = emulator_dir()
        _run([cxx, *HOST_OPTIONS, *options, "-include", emu / "cuda_emu.h", "-I", emu,
              "-I", src_dir, "-I", generated_dir(), "-c", unit, "-o", tmp / "unit.o"],
             f"the host build of {name}.cu")
        _run([cxx, "-shared", tmp / "unit.o", runtime, f"-Wl,-rpath,{runtime.parent}", "-o", dst],
             f"linking the host build of {name}.cu")
    return _build_once(out, build)


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
