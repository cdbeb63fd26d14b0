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
