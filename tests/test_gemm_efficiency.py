"""bench/gemm_efficiency.py's measurement on tiny products: the rows it reports (no
timing is asserted: only that each sample's figures are consistent)."""
import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "gemm_efficiency.py")


def _module():
    spec = importlib.util.spec_from_file_location("gemm_efficiency", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_for_this_kernel_set():
    from mininet_ext import _isa
    mod = _module()
    # agree=1: every sample counts, so the phases split them and both are consistent
    rows = mod.measure_here([96, 130], [1], samples=3, agree=1.0)
    assert [(r["n"], r["threads"], r["path"]) for r in rows] == \
        [(96, 1, _isa.active()), (130, 1, _isa.active())]
    for r in rows:
        assert r["tried"] >= 3
        assert r["pct_best"] == pytest.approx(100 * r["best_gemm_gflops"] / r["best_peak_gflops"])
        alone = r["alone"]
        assert alone["samples"] >= 3 and alone["gemm_gflops"] > 0 and alone["peak_gflops"] > 0
        assert alone["pct_q1"] <= alone["pct_median"] <= alone["pct_q3"]
        assert alone["samples"] + r["shared"]["samples"] == r["tried"]


def test_quartiles_and_alone_count():
    mod = _module()
    assert mod._quartiles([5.0]) == (5.0, 5.0)
    lo, hi = mod._quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert lo == pytest.approx(1.5) and hi == pytest.approx(4.5)
    kept = [(1.0, 100.0), (1.0, 99.0), (1.0, 70.0)]
    assert mod._alone_count(kept, 0.03, 0.0) == 2
    assert mod._alone_count(kept, 0.03, 120.0) == 0   # the cached peak is above them all
