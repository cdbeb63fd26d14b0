"""The timing harness every `mininet bench` uses (mininet/benchmark/harness.py): batches
sized so a sample lasts ~1 ms, sync inside the timed region, the time budget and exact
repeats, the summary, the noise test, peak RSS and BLAS threads. Timing is checked
against a fake clock that each call advances, so nothing here depends on how fast or
busy the machine is."""
import weakref

import numpy as np
import pytest

from mininet.benchmark import harness
from mininet.benchmark.harness import (Case, PeakRSS, blas_threads, measure,
                                       measure_together, summarize, threads_label,
                                       within_noise)


class FakeClock:
    """perf_counter for the harness: advanced only by the calls it times."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(harness.time, "perf_counter", c)
    return c


def work(clock, seconds, calls=None):
    """A function that 'takes' `seconds` on the fake clock per call."""
    def fn():
        clock.now += seconds
        if calls is not None:
            calls.append(1)
        return object()
    return fn


def test_exact_repeat_and_batches_of_at_least_a_millisecond(clock):
    four, eight = [], []
    samples = measure(work(clock, 1e-5, four), repeat=4, warmup=2)
    assert samples == pytest.approx([1e-5] * 4)         # seconds per call, not per batch
    clock.now = 0.0                                      # the same calibration again
    measure(work(clock, 1e-5, eight), repeat=8, warmup=2)
    batch = (len(eight) - len(four)) / 4                 # 4 more samples: 4 more batches
    assert batch == int(batch) and batch * 1e-5 >= harness.SAMPLE_FLOOR * 0.999
    assert batch * 1e-5 < 1.5 * harness.SAMPLE_FLOOR     # not much more than needed


def test_a_slow_call_is_one_call_per_sample(clock):
    calls = []
    samples = measure(work(clock, 0.01, calls), repeat=3, warmup=0)
    assert samples == pytest.approx([0.01] * 3) and len(calls) == 1 + 3   # calibration: 1
    calls.clear()         # after a warm-up, the calibration call is the first sample
    assert measure(work(clock, 0.01, calls), repeat=3, warmup=1) == pytest.approx([0.01] * 3)
    assert len(calls) == 1 + 3


def test_the_budget_sets_the_number_of_samples(clock):
    samples = measure(work(clock, 2e-3), min_time=0.1, warmup=0)
    assert len(samples) == 50                 # 0.1 s of 2 ms samples
    assert len(measure(work(clock, 2e-3), min_time=1e-9, warmup=0)) == harness.MIN_SAMPLES
    assert len(measure(work(clock, 2e-3), min_time=10, warmup=0, max_samples=7)) == 7


def test_sync_is_inside_the_sample_and_the_result_lives_until_it(clock):
    alive = []

    def fn():
        clock.now += 1e-3
        out = np.zeros(1)
        alive.append(weakref.ref(out))
        return out

    def sync():                        # the queued work: 1 ms more per batch
        assert alive[-1]() is not None, "the last result was freed before sync"
        clock.now += 1e-3
    samples = measure(fn, repeat=3, warmup=1, sync=sync)
    assert samples == pytest.approx([2e-3] * 3)


def test_warmup_calls_are_not_timed(clock):
    first = []

    def fn():
        clock.now += 0.5 if not first else 2e-3     # a slow first call (compile, page faults)
        first.append(1)
    assert max(measure(fn, repeat=3, warmup=1)) == pytest.approx(2e-3)


@pytest.mark.parametrize("kw, words", [
    ({"min_time": 0}, ["min_time", "0"]),
    ({"min_time": -1.0}, ["min_time"]),
    ({"repeat": 0}, ["repeat", "0"]),
    ({"repeat": 2.5}, ["repeat"]),
    ({"warmup": -1}, ["warmup"]),
    ({"max_samples": 0}, ["max_samples"]),
])
def test_bad_arguments_name_the_problem(kw, words):
    with pytest.raises(ValueError) as e:
        measure(lambda: None, **kw)
    for w in words:
        assert w in str(e.value)


def phased(clock, seconds, slow_from, factor=1.4):
    """A function taking `seconds` per call on the fake clock, `factor` times that once
    the clock passes slow_from (a shared machine's slow phase)."""
    def fn():
        clock.now += seconds * (factor if clock.now >= slow_from else 1.0)
    return fn


def test_together_keeps_the_ratio_through_a_slow_phase(clock):
    # one sequential budget each: a in the fast phase, b in the slow one; the ratio lies
    a = measure(phased(clock, 2e-3, 0.3), min_time=0.3, warmup=0)
    b = measure(phased(clock, 1e-3, 0.3), min_time=0.3, warmup=0)
    assert np.median(a) / np.median(b) == pytest.approx(2 / 1.4, rel=0.02)
    clock.now = 0.0   # in turns the phase falls on both: the ratio holds
    got = measure_together({"a": phased(clock, 2e-3, 0.3), "b": phased(clock, 1e-3, 0.3)},
                           min_time=0.3, warmup=0)
    ratios = [x / y for x, y in zip(got["a"], got["b"])]
    assert np.median(ratios) == pytest.approx(2.0, rel=0.05)
    assert len(got["a"]) >= harness.MIN_SAMPLES and len(got["b"]) >= harness.MIN_SAMPLES


def test_together_takes_turns_abba(clock):
    calls = []

    def fn(name, seconds):   # a millisecond or more: one call per sample
        def run():
            clock.now += seconds
            calls.append(name)
        return run
    got = measure_together({"a": fn("a", 2e-3), "b": fn("b", 3e-3)}, repeat=4, warmup=1)
    assert got == {"a": pytest.approx([2e-3] * 4), "b": pytest.approx([3e-3] * 4)}
    # warm-up and calibration (a a b b), then the samples in turns, the order reversed
    # every other round
    assert calls == ["a", "b", "a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_together_batches_of_their_own(clock):
    got = measure_together({"fast": work(clock, 1e-5), "slow": work(clock, 0.01)}, repeat=3)
    assert got["fast"] == pytest.approx([1e-5] * 3) and got["slow"] == pytest.approx([0.01] * 3)


def test_together_budget_per_function_and_sync_per_name(clock):
    synced = []
    got = measure_together({"a": work(clock, 2e-3), "b": work(clock, 4e-3)}, min_time=0.1,
                           warmup=0, sync={"b": lambda: synced.append(1)})
    assert len(got["a"]) == 50 and len(got["b"]) == 25   # 0.1 s of samples each
    assert len(synced) == 25 + 1                          # b's calibration and samples only
    assert measure_together({}, repeat=3) == {}
    with pytest.raises(ValueError, match="repeat"):
        measure_together({"a": work(clock, 1e-3)}, repeat=0)


def test_summarize():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s == {"median": 2.5, "q1": 1.75, "q3": 3.25, "best": 1.0, "worst": 4.0, "n": 4}
    assert summarize([0.5]) == {"median": 0.5, "q1": 0.5, "q3": 0.5, "best": 0.5, "worst": 0.5,
                                "n": 1}
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_within_noise_is_overlap_of_the_middle_halves():
    a = summarize([1.0, 1.1, 1.2, 1.3, 1.4])        # q1 1.1, q3 1.3
    assert within_noise(a, summarize([1.25, 1.3, 1.35, 1.4, 1.5]))
    assert not within_noise(a, summarize([1.35, 1.4, 1.45, 1.5, 1.6]))
    assert within_noise(a, a)


def test_threads_label():
    assert threads_label(1) == "1 thread"
    assert threads_label(2) == "2 threads"
    assert threads_label(None) == "? threads"
    assert threads_label(None, "cuda") == "gpu"


def test_case_record_has_the_schema_fields_in_order():
    c = Case(name="matmul 8x8x8 float32 mininet", impl="mininet", params={"m": 8}, threads=1,
             samples=[3.0, 1.0, 2.0], flops=1024.0, nbytes=768.0)
    d = c.to_dict()
    assert list(d) == ["name", "impl", "params", "threads", "samples", "median", "q1", "q3",
                       "best", "flops", "nbytes", "peak_rss_mb"]
    assert (d["median"], d["q1"], d["q3"], d["best"]) == (2.0, 1.5, 2.5, 1.0)
    assert c.worst == 3.0 and c.rate() == 512.0 and c.rate(c.best) == 1024.0


def test_peak_rss_sees_a_block_that_allocates():
    with PeakRSS() as small:
        np.ones(10)
    if small.mb is None:
        pytest.skip("the peak RSS cannot be reset here (no /proc/self/clear_refs)")
    with PeakRSS() as big:
        a = np.ones(100 << 17)           # 100 MB, touched
        del a
    assert big.mb - big.start_mb > 90
    with PeakRSS() as after:             # reset again: the earlier peak is not counted
        np.ones(10)
    assert after.mb < big.mb - 50


def test_blas_threads_sets_and_restores():
    with blas_threads(1) as n:
        if n is None:
            pytest.skip("numpy's BLAS thread count cannot be read here")
        assert n == 1
        before = n
    with blas_threads(2) as n:
        assert n in (1, 2)           # OpenBLAS caps at the cores it was built for
    with blas_threads(1) as n:
        assert n == before


def test_best_times_for_bench_train_still_works():
    from mininet.cli.timing import best_time, best_times
    out = best_times({"a": lambda: sum(range(10)), "b": lambda: None}, repeat=2)
    assert set(out) == {"a", "b"} and all(0 < t < 1 for t in out.values())
    assert 0 < best_time(lambda: None, repeat=2, min_time=0.001) < 1


def test_bench_train_ratio_is_the_median_of_paired_rounds():
    from mininet.cli.bench_train import paired_ratio
    # rounds in turns: the third ran in a slow spell for both (x1.5); a 0.7 ratio per round
    mine, theirs = [1.4, 1.4, 2.1, 1.4], [2.0, 2.0, 3.0, 2.0]
    assert paired_ratio(mine, theirs) == pytest.approx(0.7)
    # a slow spell on one side of a round moves the median of the rounds but little
    assert paired_ratio([1.4, 2.1, 1.4, 1.4, 1.4], [2.0, 2.0, 2.0, 3.0, 2.0]) == pytest.approx(0.7)
    assert paired_ratio([1.0], [2.0]) == pytest.approx(0.5)
    assert paired_ratio([1.0, 3.0], [2.0]) == pytest.approx(1.0)   # unpaired: the medians
