"""Best-of timing for `bench train` and `bench dist` (whole epochs, run in turns); the
kernel benchmarks use mininet.benchmark.harness (samples, medians and spread)."""
import time


def best_time(fn, repeat=5, warmup=1, min_time=0.05):
    """Best wall time of fn() over `repeat` runs, each looping until min_time has passed."""
    return best_times({"fn": fn}, repeat, warmup, min_time)["fn"]


def best_times(fns, repeat=3, warmup=1, min_time=0.0):
    """Best wall time of each of fns (a dict name -> fn), run in turns: one turn of each
    per round (a turn loops until min_time has passed), so a slow spell of a shared
    machine hits every implementation alike rather than whichever ran during it. Used
    for training epochs; the kernel benchmarks time each implementation's runs back to
    back (interleaved with ours, PyTorch's 1-channel conv forward fell into a much slower
    state of its own)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], _turn(fn, min_time))
    return best


def _turn(fn, min_time):
    """Seconds per call of fn, called until min_time has passed (at least once)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n
