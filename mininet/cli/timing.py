"""Timing helpers shared by the benchmarks."""
import time


def best_time(fn, repeat=5, warmup=1, min_time=0.05):
    """Best wall time of fn() over `repeat` runs, each looping until min_time has passed."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def best_times(fns, repeat=3, warmup=1):
    """Best wall time of each of fns (a dict name -> fn), run in turns: one run of each per
    round, so a slow spell of a shared machine hits every implementation alike rather
    than whichever ran during it."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
