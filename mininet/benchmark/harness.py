"""The one timing harness behind every `mininet bench` (CPU and --device cuda).

A figure here is seconds per call, and one call is never timed on its own: a sample is
a batch of calls sized so that it lasts at least SAMPLE_FLOOR (~1 ms), so the timer's
resolution and the cost of reading it do not matter. `sync` (the CUDA device's
synchronize) runs before the clock stops, so asynchronous work is inside the sample it
belongs to. Samples are taken until a time budget is spent (`min_time`) or exactly
`repeat` times, and every one is kept: the median and quartiles say what a call costs
and how much that wobbled; the best says what the machine can do when nothing else runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .stats import quantile

SAMPLE_FLOOR = 1e-3     # seconds a sample lasts at least (perf_counter resolves ~100 ns)
MIN_SAMPLES = 3         # a budgeted measurement takes at least this many samples
MAX_SAMPLES = 1000
NOISE_NOTE = ("this machine's noise is 1.3-1.7x between processes on sub-10 ms figures; "
              "within one run, the spread shown")


def measure(fn, *, min_time=0.2, repeat=None, warmup=1, sync=None, max_samples=MAX_SAMPLES):
    """Seconds per call of fn(), one figure per sample. `warmup` untimed calls first;
    then samples until min_time seconds of them (and at least MIN_SAMPLES, at most
    max_samples), or exactly `repeat` samples when repeat is given. sync(), if given,
    runs after each batch inside the timed region; each call's result is held until
    then, so work it still owes (an asynchronous kernel) is finished before the clock
    stops."""
    _check_measure(min_time, repeat, warmup, max_samples)
    sync = sync or _nothing
    for _ in range(warmup):
        _batch(fn, sync, 1)
    batch, first = _batch_size(fn, sync)
    # a slow call (one per sample) after a warm-up: its calibration run is a sample already
    samples = [first] if batch == 1 and warmup else []
    gc.collect()            # start from a clean heap, not one the warm-up left garbage in
    start = time.perf_counter()
    while not _enough(samples, start, min_time, repeat, max_samples):
        samples.append(_batch(fn, sync, batch) / batch)
    return samples


def measure_together(fns, *, min_time=0.2, repeat=None, warmup=1, sync=None,
                     max_samples=MAX_SAMPLES):
    """{name: seconds per call, one figure per sample} for a dict of functions timed in
    turns: one sample of each per round (the order reversed every other round, abba), so
    that a slow spell of a shared machine (its cores' speed moved 1.4x between phases a
    few seconds long on session 27's VM) falls on every function alike and their ratio
    holds where back-to-back budgets put one in a fast phase and the other in a slow one.
    Each function gets its own batch size and about min_time seconds of samples (at
    least MIN_SAMPLES, at most max_samples), or exactly `repeat`; `sync` as in measure,
    or a dict of one per name (a GPU kernel's beside a CPU library's)."""
    _check_measure(min_time, repeat, warmup, max_samples)
    if not fns:
        return {}
    names = list(fns)
    syncs = {n: (sync.get(n) if isinstance(sync, dict) else sync) or _nothing for n in names}
    for name in names:
        for _ in range(warmup):
            _batch(fns[name], syncs[name], 1)
    batches = {name: _batch_size(fns[name], syncs[name])[0] for name in names}
    samples = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    gc.collect()
    rounds = 0
    while not all(_enough_spent(samples[n], spent[n], min_time, repeat, max_samples)
                  for n in names):
        order = names if rounds % 2 == 0 else names[::-1]
        for name in order:
            if _enough_spent(samples[name], spent[name], min_time, repeat, max_samples):
                continue
            took = _batch(fns[name], syncs[name], batches[name])
            spent[name] += took
            samples[name].append(took / batches[name])
        rounds += 1
    return samples


def _enough_spent(samples, spent, min_time, repeat, max_samples):
    if repeat is not None:
        return len(samples) >= repeat
    if len(samples) >= max_samples:
        return True
    return len(samples) >= MIN_SAMPLES and spent >= min_time


def _check_measure(min_time, repeat, warmup, max_samples):
    if repeat is None and not (isinstance(min_time, (int, float)) and min_time > 0):
        raise ValueError(f"measure: min_time must be a positive number of seconds, "
                         f"got {min_time!r}")
    if repeat is not None and (not isinstance(repeat, int) or repeat < 1):
        raise ValueError(f"measure: repeat must be a positive integer, got {repeat!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"measure: warmup must be an integer >= 0, got {warmup!r}")
    if not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"measure: max_samples must be a positive integer, got {max_samples!r}")


def _nothing():
    pass


def _batch(fn, sync, n):
    """Seconds for n calls of fn and one sync."""
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    sync()
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def _batch_size(fn, sync):
    """(calls per sample, seconds of the last batch): grown until a batch lasts
    SAMPLE_FLOOR (these batches warm up too)."""
    n = 1
    while True:
        t = _batch(fn, sync, n)
        if t >= SAMPLE_FLOOR:
            return n, t
        grow = math.ceil(n * 1.2 * SAMPLE_FLOOR / t) if t > 0 else n * 100
        n = min(max(grow, n + 1), n * 100)


def _enough(samples, start, min_time, repeat, max_samples):
    if repeat is not None:
        return len(samples) >= repeat
    if len(samples) >= max_samples:
        return True
    return len(samples) >= MIN_SAMPLES and time.perf_counter() - start >= min_time


def summarize(samples):
    """{"median", "q1", "q3", "best", "worst", "n"} of a list of seconds (quartiles
    interpolated linearly between order statistics, as numpy's default)."""
    if not samples:
        raise ValueError("summarize: no samples")
    return {"median": quantile(samples, 0.5), "q1": quantile(samples, 0.25),
            "q3": quantile(samples, 0.75), "best": min(samples), "worst": max(samples),
            "n": len(samples)}


def within_noise(a, b):
    """True when two summaries' interquartile ranges overlap: the ratio of their medians
    is then not resolved by this run (any ratio between q1a/q3b and q3a/q1b, 1 among
    them, fits the middle halves of the samples)."""
    return a["q1"] <= b["q3"] and b["q1"] <= a["q3"]


def threads_label(n, device="cpu"):
    """'1 thread', '2 threads'; 'gpu' for a case on a GPU; '? threads' when unknown."""
    if device != "cpu":
        return "gpu"
    if n is None:
        return "? threads"
    return f"{n} thread" if n == 1 else f"{n} threads"


# the record a benchmark keeps per case ----------------------------------------------------
@dataclass
class Case:
    """One timed case, as a saved run stores it (mininet.benchmark.runs). threads: the CPU
    threads the implementation was given (None: a GPU kernel, or a count that could not be
    read); flops and nbytes: work and compulsory memory traffic of one call, where they
    are defined; peak_rss_mb: see PeakRSS."""
    name: str
    impl: str
    params: dict
    threads: Optional[int]
    samples: list
    median: float = field(init=False)
    q1: float = field(init=False)
    q3: float = field(init=False)
    best: float = field(init=False)
    flops: Optional[float] = None
    nbytes: Optional[float] = None
    peak_rss_mb: Optional[float] = None

    def __post_init__(self):
        s = summarize(self.samples)
        self.median, self.q1, self.q3, self.best = s["median"], s["q1"], s["q3"], s["best"]

    @property
    def worst(self):
        return max(self.samples)

    def rate(self, seconds=None):
        """flops per second at `seconds` per call (default: the median); None without flops."""
        seconds = self.median if seconds is None else seconds
        return None if self.flops is None else self.flops / seconds

    def to_dict(self):
        """The case as a saved run lists it (runs.py's fields, in the schema's order)."""
        d = asdict(self)
        order = ("name", "impl", "params", "threads", "samples", "median", "q1", "q3", "best",
                 "flops", "nbytes", "peak_rss_mb")
        return {k: d[k] for k in order}


# memory -------------------------------------------------------------------------------------
class PeakRSS:
    """The process's peak resident set while a block ran, in MB (2^20 bytes).

    Linux keeps a high-water mark of resident memory (VmHWM in /proc/self/status, which
    getrusage's ru_maxrss also reports); writing 5 to /proc/self/clear_refs resets it to
    the current RSS. On entry the mark is reset, on exit it is read, so the figure is this
    process's largest RSS during the block: the interpreter, numpy, PyTorch and every
    array alive at the time are in it, not only what the block allocated (subtract the
    RSS on entry, `start_mb`, for that). Where the mark cannot be reset (not Linux, no
    /proc) `mb` stays None rather than report a figure an earlier, bigger case set."""

    def __init__(self):
        self.mb = None
        self.start_mb = None

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._reset = True
            self.start_mb = _status_mb("VmRSS")
        except OSError:
            self._reset = False
        return self

    def __exit__(self, *exc):
        if self._reset:
            self.mb = _status_mb("VmHWM")
        return False


def _status_mb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024     # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


# BLAS threads -------------------------------------------------------------------------------
@contextlib.contextmanager
def blas_threads(n):
    """Run numpy's BLAS on n threads inside the block (threadpoolctl when it is installed,
    else OpenBLAS's own setter found in the loaded library); yields the thread count BLAS
    reports inside the block, or None when it cannot be read (then it was not changed)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=n, user_api="blas"):
            counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
            yield counts[0] if counts else None
        return
    lib = _openblas()
    if lib is None:
        yield None
        return
    get, set_ = lib
    old = get()
    set_(n)
    try:
        yield get()
    finally:
        set_(old)


_OPENBLAS: list[Any] = []


def _openblas():
    """(get, set) of the OpenBLAS numpy loaded, from the symbols its builds export, or None."""
    if _OPENBLAS:
        return _OPENBLAS[0]
    import numpy  # noqa: F401  (its BLAS must be loaded to be found)
    found = None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({m for m in re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("openblas", ""), ("scipy_openblas", "64_"), ("openblas", "64_")):
            try:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}")
            except AttributeError:
                continue
            set_.argtypes = [ctypes.c_int]
            found = (get, set_)
            break
        if found:
            break
    _OPENBLAS.append(found)
    return found


def usable_cores():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
