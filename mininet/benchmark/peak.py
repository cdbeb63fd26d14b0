"""This machine's peak: FMA GFLOPS (fp32, fp64) and STREAM bandwidth (copy, triad), on one
core and on all of them, measured with mininet's own kernels (mininet_ext/peak.pyx) and
cached per CPU model, core count and mininet version; and the roofline that places a
measured kernel against them.

Bandwidth follows the STREAM convention: bytes read plus bytes written (copy 16 bytes per
float64 element, triad 24), not counting the cache line a store first reads."""
import datetime
import glob
import json
import math
import os
import platform
import time
import warnings

import numpy as np

from mininet import __version__
from mininet_ext import peak as _kernels
from ..interop.atomic import write_atomically

CACHE_FILE = "peak.json"
CACHE_MAX_BYTES = 1 << 16    # a real cache file is ~1 KB; anything bigger is not ours
FMA_SECONDS = 0.06           # one timed FMA run; the best of FMA_REPEATS per figure
FMA_REPEATS = 5              # (short runs, so one of them may miss a busy moment)
STREAM_REPEATS = 8
STREAM_ARRAY_MIN = 64 << 20  # bytes per array: well past the L3 ...
STREAM_ARRAY_MAX = 256 << 20  # ... but the whole run stays short
QUICK = {"fma_seconds": 0.002, "array_bytes": 1 << 20, "repeats": 2}   # tests: not realistic
FIGURES = ("fp32_gflops_1", "fp32_gflops_all", "fp64_gflops_1", "fp64_gflops_all",
           "copy_gbs_1", "copy_gbs_all", "triad_gbs_1", "triad_gbs_all")
DTYPE_PREFIX = {"float32": "fp32", "float64": "fp64"}


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = " ".join(line.split(":", 1)[1].split())
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_key():
    """What a cached peak is valid for."""
    return {"cpu_model": cpu_model(), "cores": usable_cores(), "mininet": __version__}


def kernel_info():
    """How the peak kernels were compiled: ISA, vector width, fused multiply-add, chains."""
    return {"isa": _kernels.isa(), "vector_bits": _kernels.vector_bits(),
            "fused": _kernels.fused(), "chains": _kernels.chains()}


# measuring ---------------------------------------------------------------------------------

def _best_seconds(run, repeats):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def fma_gflops(dtype, threads, seconds=FMA_SECONDS, repeats=FMA_REPEATS):
    """GFLOPS of the FMA kernel on `threads` threads, each run lasting about `seconds`."""
    _kernels.fma(dtype, 1000, threads)   # wakes the thread team
    iterations = 1000
    while True:   # calibrate: double until a run takes a tenth of the target
        took = _best_seconds(lambda: _kernels.fma(dtype, iterations, threads), 2)
        if took >= seconds / 10:
            break
        iterations *= 2
    iterations = max(1, int(iterations * seconds / took))
    best = _best_seconds(lambda: _kernels.fma(dtype, iterations, threads), repeats)
    t = _kernels.max_threads(threads)
    return iterations * t * _kernels.flops_per_iteration(dtype) / best / 1e9


def last_cache_bytes():
    """The size of cpu0's largest cache (Linux sysfs; 0 where unknown)."""
    largest = 0
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(index) as f:
                text = f.read(32).strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            largest = max(largest, int(text.rstrip("KMG")) * scale)
        except (OSError, ValueError):
            continue
    return largest


def stream_array_bytes():
    """Bytes per STREAM array: twice the last-level cache (so no cache holds them), within
    bounds."""
    return int(min(max(STREAM_ARRAY_MIN, 2 * last_cache_bytes()), STREAM_ARRAY_MAX))


def stream_gbs(thread_counts, array_bytes, repeats, threads_all):
    """{threads: {"copy": GB/s, "triad": GB/s}} for each of thread_counts (bytes read +
    written), on float64 arrays of array_bytes each."""
    n = max(1, array_bytes // 8)
    a, b, c = np.empty(n), np.empty(n), np.empty(n)
    for x, v in ((a, 0.0), (b, 1.0), (c, 2.0)):
        _kernels.fill(x, v, threads_all)   # first touch by the threads that stream them
    figures = {}
    for threads in thread_counts:
        _kernels.copy(a, b, threads)       # warm-up
        copy = _best_seconds(lambda: _kernels.copy(a, b, threads), repeats)
        triad = _best_seconds(lambda: _kernels.triad(a, b, c, 3.0, threads), repeats)
        figures[threads] = {"copy": 16 * n / copy / 1e9, "triad": 24 * n / triad / 1e9}
    return figures


def measure(quick=False):
    """Measure this machine's peak now (a few seconds; quick=True: a tiny, unrealistic run
    for tests)."""
    key = machine_key()
    threads_all = _kernels.max_threads(key["cores"])
    fma_seconds = QUICK["fma_seconds"] if quick else FMA_SECONDS
    array_bytes = QUICK["array_bytes"] if quick else stream_array_bytes()
    repeats = QUICK["repeats"] if quick else STREAM_REPEATS
    result = {"cpu_model": key["cpu_model"], "cores": key["cores"], "isa": _kernels.isa()}
    for dtype, prefix in DTYPE_PREFIX.items():
        result[f"{prefix}_gflops_1"] = fma_gflops(dtype, 1, fma_seconds)
        result[f"{prefix}_gflops_all"] = fma_gflops(dtype, threads_all, fma_seconds)
    gbs = stream_gbs([1, threads_all], array_bytes, repeats, threads_all)
    for kernel in ("copy", "triad"):
        for suffix, threads in (("1", 1), ("all", threads_all)):
            result[f"{kernel}_gbs_{suffix}"] = gbs[threads][kernel]
    result["threads_all"] = threads_all
    result["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return result


# the cache ---------------------------------------------------------------------------------

def cache_dir():
    """MININET_CACHE_DIR, else MININET_CACHE, else $XDG_CACHE_HOME/mininet, else ~/.cache/mininet."""
    for var in ("MININET_CACHE_DIR", "MININET_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mininet")


def cache_path():
    return os.path.join(cache_dir(), CACHE_FILE)


def _valid(result):
    """A cached result has every figure, positive and finite, and was measured with the
    kernels built now (a MININET_PORTABLE rebuild changes the ISA, so the peak)."""
    if not isinstance(result, dict):
        return False
    for name in FIGURES:
        value = result.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            return False
    threads = result.get("threads_all")
    return (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
            and all(isinstance(result.get(k), str) for k in ("cpu_model", "isa", "measured_at"))
            and result["isa"] == _kernels.isa())


def read_cache(path=None):
    """The cached peak for this machine, or None (missing, unreadable, corrupt, another
    machine's or another version's)."""
    path = path or cache_path()
    try:
        with open(path, "rb") as f:
            data = f.read(CACHE_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > CACHE_MAX_BYTES:
        return None
    try:
        entry = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != machine_key() or not _valid(entry.get("peak")):
        return None
    return entry["peak"]


def write_cache(result, path=None):
    path = path or cache_path()
    text = json.dumps({"key": machine_key(), "peak": result}, indent=2) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()), "peak cache")


def load_or_measure(refresh=False):
    """The cached peak for this machine, else (or with refresh) a new measurement, cached.
    A cache that cannot be written is a warning: the figures are still returned."""
    if not refresh:
        cached = read_cache()
        if cached is not None:
            return cached
    result = measure()
    try:
        write_cache(result)
    except OSError as e:
        warnings.warn(f"mininet: peak not cached: {e}", stacklevel=2)
    return result


# the roofline ------------------------------------------------------------------------------

def at_threads(peak, figure, threads=None):
    """peak's `figure` (e.g. "fp32_gflops", "triad_gbs") on `threads` threads: the _1 figure
    for one, the _all figure from threads_all up, linear in between; None means all."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise ValueError(f"roofline: threads must be a positive integer, got {threads!r}")
    one, full, top = peak[f"{figure}_1"], peak[f"{figure}_all"], peak["threads_all"]
    if threads is None or threads >= top:
        return full
    return one + (full - one) * (threads - 1) / (top - 1)


def _nonnegative(name, value, positive=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"roofline: {name} must be a finite number "
                         f"{'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def roofline(flops, nbytes, seconds, peak, dtype="float32", threads=None):
    """Where a kernel that did `flops` and moved `nbytes` in `seconds` sits against `peak`
    (load_or_measure's dict) at `threads` threads (None: all cores)."""
    if dtype not in DTYPE_PREFIX:
        raise ValueError(f"roofline: dtype must be float32 or float64, got {dtype!r}")
    flops = _nonnegative("flops", flops)
    nbytes = _nonnegative("nbytes", nbytes, positive=True)
    seconds = _nonnegative("seconds", seconds, positive=True)
    compute = at_threads(peak, f"{DTYPE_PREFIX[dtype]}_gflops", threads)
    bandwidth = at_threads(peak, "triad_gbs", threads)
    gflops = flops / seconds / 1e9
    intensity = flops / nbytes
    ridge = compute / bandwidth
    return {"gflops": gflops, "pct_peak": 100.0 * gflops / compute, "intensity": intensity,
            "ridge": ridge, "bound": "compute" if intensity >= ridge else "memory",
            "attainable_gflops": min(compute, intensity * bandwidth)}
