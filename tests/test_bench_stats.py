"""mininet.benchmark.stats against hand-worked values and scipy (the reference where it is
installed; the module itself never needs it)."""
import math

import numpy as np
import pytest

from mininet.benchmark import stats

try:
    import scipy.stats as sps
except ModuleNotFoundError:
    sps = None
needs_scipy = pytest.mark.skipif(sps is None, reason="scipy is not installed (the test "
                                 "extra's reference): pip install -e '.[test]'")


# hand-worked values --------------------------------------------------------------------------
def test_u_distribution_of_five_and_five_by_hand():
    # counts[u] = partitions of u into at most 5 parts, each at most 5; for u <= 5 that is
    # every partition: u=0: {}; 1: {1}; 2: {2},{1,1}; 3: {3},{2,1},{1,1,1};
    # 4: {4},{3,1},{2,2},{2,1,1},{1,1,1,1}; 5: the 7 partitions of 5
    counts = stats.u_counts(5, 5)
    assert counts[:6] == [1, 1, 2, 3, 5, 7]
    assert sum(counts) == math.comb(10, 5) == 252
    assert counts == counts[::-1]          # symmetric about n1 n2 / 2
    assert stats.u_counts(1, 3) == [1, 1, 1, 1]
    assert stats.u_counts(2, 2) == [1, 1, 2, 1, 1]


def test_exact_p_values_by_hand():
    # completely separated samples: only 2 of the C(n1+n2, n1) orderings are as extreme
    assert stats.mann_whitney_u([1, 2, 3], [4, 5, 6]) == (0.0, 0.1, "exact")
    r = stats.mann_whitney_u([1, 2, 3, 4], [5, 6, 7, 8])
    assert r.p_value == pytest.approx(2 / 70, abs=1e-15)
    # the textbook critical value for n1 = n2 = 5, two-sided alpha 0.05, is U = 2:
    # P(U <= 2) = (1+1+2)/252, doubled 0.0317; P(U <= 3) = 7/252, doubled 0.0556
    r = stats.mann_whitney_u([1, 2, 3, 5, 6], [4, 7, 8, 9, 10])
    assert r.u == 2 and r.p_value == pytest.approx(8 / 252, abs=1e-15) and r.p_value < 0.05
    r = stats.mann_whitney_u([1, 2, 4, 5, 6], [3, 7, 8, 9, 10])
    assert r.u == 3 and r.p_value == pytest.approx(14 / 252, abs=1e-15) and r.p_value > 0.05
    # the U of the second sample is the other tail: same p-value
    assert stats.mann_whitney_u([4, 7, 8, 9, 10], [1, 2, 3, 5, 6]) == (23.0, pytest.approx(8 / 252), "exact")


def test_asymptotic_p_value_with_ties_by_hand():
    # x = 1 2 2 3, y = 2 3 4 5: ranks 1 | 3 3 3 (three 2s) | 5.5 5.5 (two 3s) | 7 | 8
    # R1 = 1 + 3 + 3 + 5.5 = 12.5, U1 = 12.5 - 4*5/2 = 2.5, mean 8, U = max(2.5, 13.5)
    # var = 4*4/12 * (9 - ((27-3) + (8-2)) / (8*7)) = 11.2857..., z = (13.5 - 8 - 0.5) / 3.35942
    # = 1.48835, two-sided p = 0.13666 (normal table: Phi(1.488) = 0.9316)
    r = stats.mann_whitney_u([1, 2, 2, 3], [2, 3, 4, 5])
    assert r.method == "asymptotic" and r.u == 2.5
    assert r.p_value == pytest.approx(0.13666, abs=2e-5)


def test_everything_tied_is_no_evidence():
    assert stats.mann_whitney_u([1.0] * 4, [1.0] * 5).p_value == 1.0


def test_min_p_value():
    assert stats.min_p_value(3, 3) == pytest.approx(0.1)
    assert stats.min_p_value(5, 5) == pytest.approx(2 / 252)
    assert stats.mann_whitney_u(range(5), range(10, 15)).p_value == stats.min_p_value(5, 5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sample y is empty"):
        stats.mann_whitney_u([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        stats.mann_whitney_u([1.0, float("nan")], [2.0])
    with pytest.raises(ValueError, match="without ties"):
        stats.mann_whitney_u([1.0, 2.0], [2.0, 3.0], method="exact")
    with pytest.raises(ValueError, match="method"):
        stats.mann_whitney_u([1.0], [2.0], method="fast")


def test_auto_picks_exact_only_for_small_samples_without_ties():
    rng = np.random.default_rng(0)
    assert stats.mann_whitney_u(rng.random(30), rng.random(30)).method == "exact"
    assert stats.mann_whitney_u(rng.random(31), rng.random(5)).method == "asymptotic"
    assert stats.mann_whitney_u([1, 2, 2], [3, 4]).method == "asymptotic"


# against scipy -------------------------------------------------------------------------------
@needs_scipy
def test_exact_matches_scipy_on_random_samples():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n1, n2 = rng.integers(1, 31, size=2)
        x = rng.normal(size=n1)
        y = rng.normal(rng.uniform(-1, 1), size=n2)
        ours = stats.mann_whitney_u(x, y, method="exact")
        ref = sps.mannwhitneyu(x, y, alternative="two-sided", method="exact")
        assert ours.u == ref.statistic
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


@needs_scipy
def test_asymptotic_matches_scipy_with_ties_and_large_samples():
    rng = np.random.default_rng(2)
    for i in range(150):
        n1, n2 = rng.integers(2, 80, size=2)
        if i % 2:   # heavy ties: few distinct values, as coarse timers give
            x, y = rng.integers(0, 6, size=n1), rng.integers(1, 7, size=n2)
        else:
            x, y = rng.lognormal(0, 0.3, size=n1), rng.lognormal(0.1, 0.3, size=n2)
        ours = stats.mann_whitney_u(x, y, method="asymptotic")
        ref = sps.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic",
                               use_continuity=True)
        assert ours.u == ref.statistic
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


@needs_scipy
def test_summaries_match_numpy_and_scipy():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 10, 33):
        x = rng.lognormal(size=n)
        assert stats.median(x) == pytest.approx(np.median(x), rel=1e-14)
        q1, q3 = np.percentile(x, [25, 75])
        assert stats.iqr(x) == pytest.approx(q3 - q1, rel=1e-12, abs=1e-15)
        assert stats.summary(x) == pytest.approx({"median": np.median(x), "q1": q1, "q3": q3,
                                                  "best": x.min()}, rel=1e-12)
        assert stats.geometric_mean(x) == pytest.approx(sps.gmean(x), rel=1e-12)
    assert stats.geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        stats.geometric_mean([1.0, 0.0])
    with pytest.raises(ValueError, match="no values"):
        stats.median([])


@needs_scipy
def test_ratio_ci_matches_scipy_bootstrap():
    rng = np.random.default_rng(4)
    base = rng.lognormal(np.log(1e-3), 0.1, size=41)
    new = rng.lognormal(np.log(1.2e-3), 0.1, size=37)
    low, high = stats.ratio_ci(base, new, confidence=0.9, resamples=20000)
    ref = sps.bootstrap((base, new), lambda b, n, axis: np.median(n, axis) / np.median(b, axis),
                        confidence_level=0.9, n_resamples=20000, method="percentile",
                        vectorized=True, paired=False, rng=np.random.default_rng(5))
    # two Monte Carlo estimates of the same percentiles
    assert low == pytest.approx(ref.confidence_interval.low, rel=0.01)
    assert high == pytest.approx(ref.confidence_interval.high, rel=0.01)
    assert low < np.median(new) / np.median(base) < high


def test_ratio_ci_degenerate_and_reproducible():
    assert stats.ratio_ci([2.0] * 5, [3.0] * 6) == pytest.approx((1.5, 1.5))
    x, y = [1.0, 1.1, 0.9, 1.3], [2.0, 2.2, 1.9, 2.5]
    assert stats.ratio_ci(x, y) == stats.ratio_ci(x, y)
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_ci([1.0, -1.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        stats.ratio_ci([1.0], [1.0], confidence=95)
