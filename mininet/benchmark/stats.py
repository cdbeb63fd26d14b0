"""Statistics for benchmark samples: the Mann-Whitney U test, medians and quartiles, the
geometric mean, and a confidence interval for a ratio of medians. Pure Python and numpy:
scipy is only the tests' reference.

Timings are skewed (a slow spell, a page fault, another process) and a few outliers are
normal, so every comparison here is rank-based or median-based, never a mean and a t-test."""
import math
from collections import namedtuple

import numpy as np

# Both samples at most this long and no ties: the exact distribution of U (at 30 x 30 it
# has 901 counts, a few ms to build); else the normal approximation, which is within
# ~1e-3 of the exact p-value there.
EXACT_MAX = 30

MannWhitney = namedtuple("MannWhitney", "u p_value method")
MannWhitney.__doc__ = """u: the statistic of the first sample (pairs where it is larger,
ties counting 1/2), p_value: two-sided, method: "exact" or "asymptotic"."""


def mann_whitney_u(x, y, method="auto"):
    """Two-sided Mann-Whitney U test of x against y. method: "exact" (no ties allowed),
    "asymptotic" (normal approximation with tie and continuity corrections) or "auto"
    (exact when neither sample is longer than EXACT_MAX and there are no ties)."""
    x, y = _sample(x, "x"), _sample(y, "y")
    ranks, tie_sizes = _ranks(x + y)
    n1, n2 = len(x), len(y)
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    ties = any(t > 1 for t in tie_sizes)
    if method == "auto":
        method = "exact" if max(n1, n2) <= EXACT_MAX and not ties else "asymptotic"
    if method == "exact":
        if ties:
            raise ValueError("mann_whitney_u: the exact method needs samples without ties")
        return MannWhitney(u, _exact_p(u, n1, n2), "exact")
    if method == "asymptotic":
        return MannWhitney(u, _asymptotic_p(u, n1, n2, tie_sizes), "asymptotic")
    raise ValueError(f"mann_whitney_u: method must be auto, exact or asymptotic, got {method!r}")


def _sample(values, name):
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"mann_whitney_u: sample {name} is empty")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"mann_whitney_u: sample {name} holds a NaN or infinity")
    return values


def _ranks(values):
    """Ranks from 1, tied values sharing their average rank; and the size of each run of
    ties (1 for a value that is not tied)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks, sizes = [0.0] * len(values), []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        sizes.append(end - start + 1)
        start = end + 1
    return ranks, sizes


def u_counts(n1, n2):
    """counts[u] = how many of the C(n1+n2, n1) orderings of two samples without ties give
    U = u, as exact integers. The counts are the coefficients of the Gaussian binomial
    `[n1+n2 choose n1](q) = prod_{i=1..n1} (1 - q^(n2+i)) / (1 - q^i)`; each step of the
    product is again a polynomial, built from the previous one in place."""
    counts = [1] + [0] * (n1 * n2 + n1)
    for i in range(1, n1 + 1):
        shift = n2 + i
        for k in range(len(counts) - 1, shift - 1, -1):   # times (1 - q^shift)
            counts[k] -= counts[k - shift]
        for k in range(i, len(counts)):                    # divided by (1 - q^i)
            counts[k] += counts[k - i]
    return counts[:n1 * n2 + 1]


def _exact_p(u, n1, n2):
    counts = u_counts(n1, n2)
    tail = min(u, n1 * n2 - u)          # the distribution is symmetric about n1*n2/2
    below = sum(counts[:int(tail) + 1])
    return min(1.0, 2 * below / math.comb(n1 + n2, n1))


def _asymptotic_p(u, n1, n2, tie_sizes):
    n = n1 + n2
    ties = sum(t ** 3 - t for t in tie_sizes)
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:                   # every value tied: no evidence of a difference
        return 1.0
    z = (max(u, n1 * n2 - u) - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))   # 2 * P(Z > z)


def min_p_value(n1, n2):
    """The smallest two-sided p-value samples of these sizes can reach (no ties): with
    3 and 3 samples it is 0.1, so no difference is ever significant at 0.01."""
    return min(1.0, 2 / math.comb(n1 + n2, n1))


# summaries ------------------------------------------------------------------------------
def quantile(values, q):
    """The q-quantile, linearly interpolated between order statistics (numpy's default)."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile: q must be in [0, 1], got {q}")
    values = sorted(_values(values, "quantile"))
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def median(values):
    """quantile(values, 0.5)."""
    return quantile(values, 0.5)


def iqr(values):
    """Interquartile range: q3 - q1."""
    return quantile(values, 0.75) - quantile(values, 0.25)


def summary(samples):
    """median, q1, q3 and best (the minimum) of a list of times."""
    return {"median": median(samples), "q1": quantile(samples, 0.25),
            "q3": quantile(samples, 0.75), "best": min(samples)}


def geometric_mean(values):
    """exp(mean(log v)) of positive values: the mean of ratios that treats 2x and 0.5x
    as opposites."""
    values = _values(values, "geometric_mean")
    if any(not v > 0 or not math.isfinite(v) for v in values):
        raise ValueError("geometric_mean: values must be positive and finite")
    return math.exp(math.fsum(math.log(v) for v in values) / len(values))


def _values(values, what):
    """values as a list of floats; none is an error."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{what}: no values")
    return values


def ratio_ci(base, new, confidence=0.95, resamples=4000, seed=0):
    """(low, high): a percentile-bootstrap confidence interval for
    median(new) / median(base). Each sample is resampled on its own (they are
    independent runs); the seed is fixed, so a report is reproducible."""
    base = np.asarray(_values(base, "ratio_ci"))
    new = np.asarray(_values(new, "ratio_ci"))
    if not 0 < confidence < 1:
        raise ValueError(f"ratio_ci: confidence must be in (0, 1), got {confidence}")
    if (base <= 0).any() or (new <= 0).any():
        raise ValueError("ratio_ci: times must be positive")
    rng = np.random.default_rng(seed)
    b = np.median(rng.choice(base, size=(resamples, base.size)), axis=1)
    n = np.median(rng.choice(new, size=(resamples, new.size)), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(n / b, [tail, 100 - tail])
    return float(low), float(high)
