"""The FMA peak of each kernel set (path: generic, avx2, avx512, avx512bf16), measured with
the vector width and instructions that path's GEMM runs on (mininet_ext.peak.fma_path:
generic is SSE2 multiply + add, avx2 256-bit FMA, avx512 512-bit FMA), on one core and on
all of them; cached beside the machine peak (peak_isa.json), per machine and mininet
version. A GEMM's efficiency is judged against the peak of the path it ran on."""
import datetime
import json
import math
import os
import warnings

from mininet_ext import _isa
from mininet_ext import peak as _kernels
from ..interop.atomic import write_atomically
from . import peak as _peak

CACHE_FILE = "peak_isa.json"
FIGURES = ("fp32_gflops_1", "fp32_gflops_all", "fp64_gflops_1", "fp64_gflops_all")


def paths():
    """The kernel sets this build holds and this CPU runs, worst to best."""
    return tuple(_isa.supported())


def choose(spec):
    """The paths that `spec` names: "all", one path, or a comma-separated list."""
    have = paths()
    if spec.strip().lower() in ("all", ""):
        return have
    want = [s.strip().lower() for s in spec.split(",") if s.strip()]
    bad = [w for w in want if w not in have]
    if bad:
        raise ValueError(f"--isa {', '.join(bad)}: not a kernel set this CPU and build run; "
                         f"choose from {', '.join(have)} or all")
    return tuple(want)


def fma_gflops(isa, dtype, threads, seconds=_peak.FMA_SECONDS, repeats=_peak.FMA_REPEATS):
    """GFLOPS of path `isa`'s FMA kernel on `threads` threads (runs of about `seconds`)."""
    run = lambda n: _kernels.fma_path(isa, dtype, n, threads)   # noqa: E731
    run(1000)   # wakes the thread team
    iterations = 1000
    while True:   # calibrate: double until a run takes a tenth of the target
        took = _peak._best_seconds(lambda: run(iterations), 2)
        if took >= seconds / 10:
            break
        iterations *= 2
    iterations = max(1, int(iterations * seconds / took))
    best = _peak._best_seconds(lambda: run(iterations), repeats)
    flops = iterations * _kernels.max_threads(threads) * _kernels.path_flops_per_iteration(isa, dtype)
    return flops / best / 1e9


def measure_path(isa, quick=False):
    """{figure: GFLOPS} and the kernel's vector width for one path."""
    threads_all = _kernels.max_threads(_peak.usable_cores())
    seconds = _peak.QUICK["fma_seconds"] if quick else _peak.FMA_SECONDS
    result = dict(_kernels.path_info(isa))
    for dtype, prefix in _peak.DTYPE_PREFIX.items():
        result[f"{prefix}_gflops_1"] = fma_gflops(isa, dtype, 1, seconds)
        result[f"{prefix}_gflops_all"] = fma_gflops(isa, dtype, threads_all, seconds)
    result["threads_all"] = threads_all
    return result


def measure(isas=None, quick=False):
    """{"paths": {isa: figures}, "measured_at"} for `isas` (default: every path)."""
    isas = paths() if isas is None else isas
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"paths": {isa: measure_path(isa, quick) for isa in isas}, "measured_at": stamp}


def cache_path():
    return os.path.join(_peak.cache_dir(), CACHE_FILE)


def _valid_path(isa, entry):
    if not isinstance(entry, dict) or entry.get("isa") != isa:
        return False
    for name in FIGURES:
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            return False
    threads = entry.get("threads_all")
    return isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1


def read_cache(path=None):
    """{isa: figures} of the valid cached paths for this machine ({} when none)."""
    try:
        with open(path or cache_path(), "rb") as f:
            data = f.read(_peak.CACHE_MAX_BYTES + 1)
        entry = json.loads(data) if len(data) <= _peak.CACHE_MAX_BYTES else None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(entry, dict) or entry.get("key") != _peak.machine_key() \
            or not isinstance(entry.get("paths"), dict):
        return {}
    return {isa: v for isa, v in entry["paths"].items() if isa in paths() and _valid_path(isa, v)}


def load_or_measure(isas=None, refresh=False, quick=False):
    """{isa: figures} for `isas` (default: every path): cached ones unless refresh, the
    others measured now and added to the cache (a cache that cannot be written warns)."""
    isas = paths() if isas is None else tuple(isas)
    cached = {} if refresh else read_cache()
    todo = tuple(isa for isa in isas if isa not in cached)
    if todo:
        fresh = measure(todo, quick)["paths"]
        cached = {**read_cache(), **fresh}
        text = json.dumps({"key": _peak.machine_key(), "paths": cached}, indent=2) + "\n"
        try:
            write_atomically(cache_path(), lambda f: f.write(text.encode()), "path peak cache")
        except OSError as e:
            warnings.warn(f"mininet: path peak not cached: {e}", stacklevel=2)
    return {isa: cached[isa] for isa in isas}


def pct_of_path(gflops, figures, dtype="float32", threads=None):
    """gflops as a % of a path's FMA peak (its figures) at `threads` threads."""
    peak = _peak.at_threads(figures, f"{_peak.DTYPE_PREFIX[dtype]}_gflops", threads)
    return 100.0 * gflops / peak
