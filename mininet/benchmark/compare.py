"""Compare two saved benchmark runs (schema mininet-bench/1) case by case, and gate on
significant slowdowns.

A case's verdict comes from the Mann-Whitney U test on the two runs' samples: "slower"
or "faster" only when p < alpha, else "same", however far apart the medians look. Two
runs from separate processes on a shared VM differ by 1.3-1.7x with no code change, so a
gate should use interleaved A/B runs (ab.py) or a generous fail_above."""
import json

from .runs import SCHEMA, load_run, validate_run  # noqa: F401 (load_run, SCHEMA: re-exported)
from .stats import geometric_mean, mann_whitney_u, median, min_p_value, ratio_ci

MACHINE_FIELDS = ("cpu_model", "cores")
SOFTWARE_FIELDS = ("mininet", "commit", "numpy", "blas", "torch", "python", "compiler_flags")


# reading: runs.load_run for files (ValueError naming the file and the field) -----------------
def parse_run(data, source):
    """The validated run in data (JSON text or bytes, e.g. a command's stdout); ValueError
    naming `source` otherwise."""
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{source}: not JSON ({e})") from None
    return validate_run(doc, source)


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


# comparing ---------------------------------------------------------------------------------
def compare(base_run, new_run, alpha=0.01, confidence=0.95):
    """Case-by-case comparison of two validated runs (matched by case name):
    {"alpha", "confidence", "cases": [{name, base_median, new_median, ratio (new / base),
    ci_low, ci_high, p_value, method, significant, verdict, base_n, new_n}],
    "only_base", "only_new", "geomean_ratio" (over the common cases, None without any),
    "warnings": [str]}."""
    if not 0 < alpha < 1:
        raise ValueError(f"compare: alpha must be in (0, 1), got {alpha}")
    base_cases = {c["name"]: c for c in base_run["cases"]}
    new_cases = {c["name"]: c for c in new_run["cases"]}
    common = [n for n in base_cases if n in new_cases]
    rows = [_compare_case(base_cases[n], new_cases[n], alpha, confidence) for n in common]
    return {
        "alpha": alpha, "confidence": confidence, "cases": rows,
        "only_base": [n for n in base_cases if n not in new_cases],
        "only_new": [n for n in new_cases if n not in base_cases],
        "geomean_ratio": geometric_mean([r["ratio"] for r in rows]) if rows else None,
        "warnings": environment_warnings(base_run, new_run)
        + _case_warnings(base_cases, new_cases, common, alpha),
    }


def _compare_case(base, new, alpha, confidence):
    b, n = base["samples"], new["samples"]
    test = mann_whitney_u(b, n)
    ratio = median(n) / median(b)
    low, high = ratio_ci(b, n, confidence)
    significant = test.p_value < alpha
    verdict = "same" if not significant or ratio == 1 else "slower" if ratio > 1 else "faster"
    return {"name": base["name"], "base_median": median(b), "new_median": median(n),
            "ratio": ratio, "ci_low": low, "ci_high": high, "p_value": test.p_value,
            "method": test.method, "significant": significant, "verdict": verdict,
            "base_n": len(b), "new_n": len(n)}


def environment_warnings(base_run, new_run):
    """One line for differing machines, one for differing software, naming the fields."""
    warnings = []
    if base_run.get("benchmark") != new_run.get("benchmark"):
        warnings.append(f"the runs are of different benchmarks: {base_run.get('benchmark')!r} "
                        f"and {new_run.get('benchmark')!r}")
    machine = _differences(base_run.get("machine", {}), new_run.get("machine", {}), MACHINE_FIELDS)
    if machine:
        warnings.append(f"the machines differ: {machine}; their timings are not comparable")
    software = _differences(base_run.get("software", {}), new_run.get("software", {}),
                            SOFTWARE_FIELDS)
    if software:
        warnings.append(f"the software differs: {software}")
    return warnings


def _differences(base, new, fields):
    return ", ".join(f"{f} ({base.get(f)!r} -> {new.get(f)!r})" for f in fields
                     if base.get(f) != new.get(f))


def _case_warnings(base_cases, new_cases, common, alpha):
    warnings = []
    for name in common:
        b, n = base_cases[name], new_cases[name]
        if b.get("threads") != n.get("threads"):
            warnings.append(f"case {name!r}: threads differ ({b.get('threads')} -> "
                            f"{n.get('threads')})")
        n1, n2 = len(b["samples"]), len(n["samples"])
        if min_p_value(n1, n2) >= alpha:
            warnings.append(f"case {name!r}: {n1} and {n2} samples can never give p < {alpha}; "
                            f"take more samples")
    return warnings


# gating ------------------------------------------------------------------------------------
def slowdowns(result, fail_above):
    """The cases significantly slower than base by a ratio above fail_above."""
    if not fail_above > 0:
        raise ValueError(f"gate: fail_above must be a positive ratio, got {fail_above}")
    return [r for r in result["cases"] if r["verdict"] == "slower" and r["ratio"] > fail_above]


def gate(result, fail_above):
    """Exit status: 1 when any case is significantly slower with ratio > fail_above, else 0."""
    return 1 if slowdowns(result, fail_above) else 0
