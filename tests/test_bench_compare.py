"""Comparing saved benchmark runs, gating on slowdowns, interleaved A/B runs, and the
`mininet bench compare` / `mininet bench ab` commands."""
import json
import re
import shlex
import sys

import numpy as np
import pytest

from conftest import cli
from mininet.benchmark import ab, compare as cmp

try:
    import scipy.stats as sps
except ModuleNotFoundError:
    sps = None
needs_scipy = pytest.mark.skipif(sps is None, reason="scipy is not installed (the test "
                                 "extra's reference): pip install -e '.[test]'")

MACHINE = {"cpu_model": "Test CPU 3000", "cores": 2, "isa_flags": ["avx2"], "caches": {}}
SOFTWARE = {"mininet": "0.1.0", "commit": "abc", "numpy": "2.0", "blas": "openblas",
            "torch": None, "python": "3.11", "compiler_flags": "-O3"}


def make_run(cases, machine=None, software=None, threads=1):
    """A saved run whose cases (name -> samples) carry the given samples."""
    return {"schema": "mininet-bench/1", "created": "2025-01-01T00:00:00+00:00",
            "command": ["mininet", "bench", "matmul"], "benchmark": "matmul",
            "machine": {**MACHINE, **(machine or {})}, "software": {**SOFTWARE, **(software or {})},
            "cases": [make_case(name, samples, threads) for name, samples in cases.items()]}


def make_case(name, samples, threads=1):
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"name": name, "impl": name.split()[-1], "params": {}, "threads": threads,
            "samples": [float(s) for s in samples], "median": float(median), "q1": float(q1),
            "q3": float(q3), "best": float(min(samples)), "flops": None, "nbytes": None,
            "peak_rss_mb": None}


def write(path, doc):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def times(center, n=12, seed=0, spread=0.02):
    """n distinct times around center."""
    return center * (1 + spread * np.random.default_rng(seed).random(n))


# reading and validation (runs.load_run, which compare and ab use) --------------------------
GOOD = make_run({"a mininet": [1.0, 2.0]})


def with_case(**fields):
    return {**GOOD, "cases": [{**GOOD["cases"][0], **fields}]}


@pytest.mark.parametrize("doc, problem", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object, not list"),
    ({**GOOD, "schema": "mininet-bench/2"}, "'mininet-bench/2' is not 'mininet-bench/1'"),
    ({k: v for k, v in GOOD.items() if k != "schema"}, "schema: None is not 'mininet-bench/1'"),
    ({k: v for k, v in GOOD.items() if k != "cases"}, "cases: missing"),
    ({k: v for k, v in GOOD.items() if k != "machine"}, "machine: missing"),
    ({**GOOD, "cases": []}, "cases: no cases"),
    (with_case(samples=[]), "cases[0].samples: no samples"),
    (with_case(samples=[1.0, 0.0]), "cases[0].samples[1]: must be a positive number of seconds"),
    (with_case(samples=[-1.0]), "cases[0].samples[0]: must be a positive number of seconds"),
    (with_case(samples=["1"]), "cases[0].samples[0]: must be a positive number of seconds"),
    ({**GOOD, "cases": GOOD["cases"] * 2}, "'a mininet' appears twice"),
])
def test_a_bad_run_file_is_named_with_its_problem(tmp_path, doc, problem):
    path = write(tmp_path / "run.json", doc)
    with pytest.raises(ValueError) as e:
        cmp.load_run(path)
    assert str(e.value).startswith(path) and problem in str(e.value)


def test_a_bad_run_on_stdout_is_named_by_its_source():
    with pytest.raises(ValueError, match="^stdout of x: not JSON"):
        cmp.parse_run("hello", "stdout of x")
    with pytest.raises(ValueError, match="^stdout of x: not JSON .*NaN"):
        cmp.parse_run(json.dumps(GOOD).replace("2.0", "NaN"), "stdout of x")
    assert cmp.parse_run(json.dumps(GOOD), "x") == GOOD


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}/nope.json"):
        cmp.load_run(str(tmp_path / "nope.json"))


# comparing -----------------------------------------------------------------------------------
@needs_scipy
def test_compare_finds_a_slowdown_a_speedup_and_no_change():
    base = make_run({"slow mininet": times(1e-3, seed=1), "fast mininet": times(2e-3, seed=2),
                     "same mininet": times(3e-3, seed=3), "gone numpy": [1.0, 2.0]})
    new = make_run({"slow mininet": times(1.2e-3, seed=4), "fast mininet": times(1e-3, seed=5),
                    "same mininet": times(3e-3, seed=6), "added numpy": [1.0]})
    result = cmp.compare(base, new, alpha=0.01)
    rows = {r["name"]: r for r in result["cases"]}
    assert [r["name"] for r in result["cases"]] == ["slow mininet", "fast mininet", "same mininet"]
    assert result["only_base"] == ["gone numpy"] and result["only_new"] == ["added numpy"]
    assert {n: r["verdict"] for n, r in rows.items()} == {
        "slow mininet": "slower", "fast mininet": "faster", "same mininet": "same"}
    b = {c["name"]: c["samples"] for c in base["cases"]}
    n = {c["name"]: c["samples"] for c in new["cases"]}
    for name, row in rows.items():
        assert row["base_median"] == pytest.approx(np.median(b[name]), rel=1e-14)
        assert row["new_median"] == pytest.approx(np.median(n[name]), rel=1e-14)
        assert row["ratio"] == pytest.approx(np.median(n[name]) / np.median(b[name]), rel=1e-14)
        ref = sps.mannwhitneyu(b[name], n[name], method="exact")
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert row["significant"] == (ref.pvalue < 0.01)
        assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
        assert (row["base_n"], row["new_n"]) == (12, 12)
    assert result["geomean_ratio"] == pytest.approx(sps.gmean([r["ratio"] for r in rows.values()]))
    assert result["warnings"] == []


def test_a_big_but_noisy_difference_is_not_significant():
    # 3 samples a side can never reach p < 0.01, however far apart: "same", and a warning says so
    base, new = make_run({"a x": [1.0, 1.1, 1.2]}), make_run({"a x": [2.0, 2.1, 2.2]})
    result = cmp.compare(base, new)
    row, = result["cases"]
    assert row["ratio"] == pytest.approx(2.1 / 1.1) and row["p_value"] == pytest.approx(0.1)
    assert row["verdict"] == "same" and not row["significant"]
    assert result["warnings"] == ["case 'a x': 3 and 3 samples can never give p < 0.01; "
                                  "take more samples"]
    assert cmp.gate(result, 1.05) == 0
    assert cmp.compare(base, new, alpha=0.2)["cases"][0]["verdict"] == "slower"


def test_differing_machines_and_software_are_named():
    base = make_run({"a x": [1.0]})
    new = make_run({"a x": [1.0]}, machine={"cores": 4, "isa_flags": ["avx512f"]},
                   software={"commit": "def", "numpy": "2.1"}, threads=2)
    new["benchmark"] = "conv"
    warnings = cmp.compare(base, new)["warnings"]
    assert warnings[0] == "the runs are of different benchmarks: 'matmul' and 'conv'"
    assert warnings[1] == "the machines differ: cores (2 -> 4); their timings are not comparable"
    assert warnings[2] == "the software differs: commit ('abc' -> 'def'), numpy ('2.0' -> '2.1')"
    assert warnings[3] == "case 'a x': threads differ (1 -> 2)"


def test_gate_fails_only_on_a_significant_slowdown_above_the_threshold():
    base = make_run({"a x": times(1.0, seed=1), "b x": times(1.0, seed=2)})
    new = make_run({"a x": times(1.1, seed=3), "b x": times(0.5, seed=4)})
    result = cmp.compare(base, new)
    assert [r["verdict"] for r in result["cases"]] == ["slower", "faster"]
    ratio = result["cases"][0]["ratio"]
    assert 1.05 < ratio < 1.15
    assert cmp.gate(result, 1.05) == 1 and cmp.slowdowns(result, 1.05) == [result["cases"][0]]
    assert cmp.gate(result, 1.15) == 0
    with pytest.raises(ValueError, match="fail_above"):
        cmp.gate(result, 0)


def test_no_common_case():
    result = cmp.compare(make_run({"a x": [1.0]}), make_run({"b x": [1.0]}))
    assert result["cases"] == [] and result["geomean_ratio"] is None
    assert result["only_base"] == ["a x"] and result["only_new"] == ["b x"]


# A/B -----------------------------------------------------------------------------------------
def test_schedules():
    assert ab.schedule(3, "abab") == ["base", "new"] * 3
    assert ab.schedule(3, "abba") == ["base", "new", "new", "base", "base", "new"]
    with pytest.raises(ValueError, match="order"):
        ab.schedule(2, "aabb")
    with pytest.raises(ValueError, match="rounds"):
        ab.schedule(0)


class FakeClock:
    """perf_counter for ab: time moves only when a timed function runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_ab_callables_interleaves_and_times_each_call(monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(ab, "time", clock)

    def base():
        calls.append("a")
        clock.now += 0.003

    def new():
        calls.append("b")
        clock.now += 0.002

    # min_time 0.005: a base turn is 2 calls (0.006 s), a new turn 3 (0.006 s)
    b, n = ab.ab_callables(base, new, rounds=3, min_time=0.005, warmup=1, order="abba")
    assert "".join(calls) == "ab" + "aa" "bbb" "bbb" "aa" "aa" "bbb"
    assert b == pytest.approx([0.003] * 3) and n == pytest.approx([0.002] * 3)
    with pytest.raises(ValueError, match="min_time"):
        ab.ab_callables(base, new, min_time=0)


def fake_command(tmp_path, tag, samples_by_round, log):
    """A shell command printing a saved run whose case 'k x' has the next round's samples
    (a counter file counts the rounds), appending tag to log when it runs."""
    docs = [json.dumps(make_run({"k x": samples}, software={"commit": tag}))
            for samples in samples_by_round]
    script = tmp_path / f"{tag}.py"
    script.write_text(f"""
import os
counter = {str(tmp_path / (tag + '.count'))!r}
i = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, 'w').write(str(i + 1))
open({str(log)!r}, 'a').write({tag!r})
print({docs!r}[i])
""")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def test_run_ab_alternates_and_pools_the_samples(tmp_path):
    log = tmp_path / "log"
    base_rounds = [list(times(1.0, 5, seed=i)) for i in range(3)]
    new_rounds = [list(times(2.0, 5, seed=10 + i)) for i in range(3)]
    base_run, new_run = ab.run_ab(fake_command(tmp_path, "A", base_rounds, log),
                                  fake_command(tmp_path, "B", new_rounds, log), rounds=3)
    assert log.read_text() == "ABBAAB"
    case, = base_run["cases"]
    assert case["samples"] == sum(base_rounds, [])
    assert case["median"] == pytest.approx(np.median(sum(base_rounds, [])))
    assert new_run["cases"][0]["samples"] == sum(new_rounds, [])
    assert base_run["software"]["commit"] == "A" and new_run["software"]["commit"] == "B"
    result = cmp.compare(base_run, new_run)
    assert result["cases"][0]["verdict"] == "slower" and cmp.gate(result, 1.5) == 1


def test_a_failing_or_silent_command_is_named(tmp_path):
    good = fake_command(tmp_path, "A", [[1.0]] * 2, tmp_path / "log")
    fail = f"{shlex.quote(sys.executable)} -c \"import sys; sys.exit('no such size')\""
    with pytest.raises(ab.ABError, match=r"the new command \(round 1\) exited with status 1: "
                                         r"no such size"):
        ab.run_ab(good, fail, rounds=1)
    with pytest.raises(ab.ABError, match=r"the base command \(round 1\) printed nothing"):
        ab.run_ab("true", good, rounds=1)
    with pytest.raises(ab.ABError, match=r"stdout of the base command \(round 1\): not JSON"):
        ab.run_ab("echo hello", good, rounds=1)
    with pytest.raises(ab.ABError, match=r"ran past 0.5 s"):
        ab.run_ab("sleep 5", good, rounds=1, timeout=0.5)


# the commands --------------------------------------------------------------------------------
LONG = "matmul 100000x784x100 float32 mininet-with-a-long-implementation-name"


@pytest.fixture
def run_files(tmp_path):
    base = make_run({"matmul 64x64x64 float32 mininet": times(1e-4, seed=1),
                     LONG: times(2.5, seed=2), "matmul 256x256x256 float32 numpy": times(3e-3, seed=3)})
    new = make_run({"matmul 64x64x64 float32 mininet": times(1.3e-4, seed=4),
                    LONG: times(1.5, seed=5), "matmul 256x256x256 float32 numpy": times(3e-3, seed=6)})
    return write(tmp_path / "base.json", base), write(tmp_path / "new.json", new)


def test_compare_command_table_fits_80_columns(run_files):
    r = cli("bench", "compare", *run_files, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    # the words all cases share moved to the title; the long word shortened, the size whole
    assert "(matmul float32)" in r.stdout
    row = next(line for line in lines if line.startswith("100000x784x100"))
    assert row.startswith("100000x784x100 mininet-with…  ")
    assert re.search(r"2\.5\d s +1\.5\d s +0\.6\d\d +\S+ +faster", row)
    assert re.search(r"64x64x64 mininet +10\d µs +13\d µs +1\.3\d\d +\S+ +slower", r.stdout)
    assert "geometric mean of ratios (new / base):" in r.stdout


def test_compare_command_gates_with_exit_1(run_files):
    r = cli("bench", "compare", *run_files, "--fail-above", "1.2")
    assert r.returncode == 1
    assert "gate failed: 1 case(s) significantly slower than 1.2x: matmul 64x64x64 float32 " \
           "mininet (1.3" in r.stderr
    r = cli("bench", "compare", *run_files, "--fail-above", "1.4")
    assert r.returncode == 0, r.stderr
    assert "gate passed" in r.stdout


def test_compare_command_json_and_plot(run_files, tmp_path):
    plot = tmp_path / "ratios.png"
    r = cli("bench", "compare", *run_files, "--json", "--plot", plot)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert [c["verdict"] for c in result["cases"]] == ["slower", "faster", "same"]
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_compare_command_errors_exit_2_on_one_line(run_files, tmp_path):
    bad = write(tmp_path / "bad.json", {"schema": "other"})
    r = cli("bench", "compare", run_files[0], bad)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {bad}: schema: 'other' is not 'mininet-bench/1'")
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("bench", "compare", *run_files, "--plot", tmp_path / "out.jpg")
    assert r.returncode == 2 and "--plot" in r.stderr and "use .png or .svg" in r.stderr
    r = cli("bench", "compare", *run_files, "--alpha", "2")
    assert r.returncode == 2 and "--alpha must be between 0 and 1" in r.stderr


def test_ab_command_reports_gates_and_saves(tmp_path):
    log, out = tmp_path / "log", tmp_path / "ab.json"
    base = fake_command(tmp_path, "A", [list(times(1.0, 6, seed=i)) for i in range(2)], log)
    new = fake_command(tmp_path, "B", [list(times(1.3, 6, seed=9 + i)) for i in range(2)], log)
    r = cli("bench", "ab", "--base-cmd", base, "--new-cmd", new, "--rounds", "2",
            "--fail-above", "1.1", "--save", out)
    assert r.returncode == 1, r.stderr
    assert log.read_text() == "ABBA"
    assert "gate failed" in r.stderr and re.search(r"k x +1\.0\d s +1\.3\d s +1\.3\d\d", r.stdout)
    saved = json.loads(out.read_text())
    assert saved["schema"] == "mininet-ab/1" and saved["rounds"] == 2
    assert len(saved["base"]["cases"][0]["samples"]) == 12
    assert saved["comparison"]["cases"][0]["verdict"] == "slower"
    cmp.validate_run(saved["new"], "saved new run")   # each merged run is a valid run
    cmp.validate_run(saved["base"], "saved base run")


def test_ab_command_passes_when_nothing_changed_and_names_a_failing_command(tmp_path):
    log = tmp_path / "log"
    base = fake_command(tmp_path, "A", [list(times(1.0, 6, seed=i)) for i in range(3)], log)
    new = fake_command(tmp_path, "B", [list(times(1.0, 6, seed=5 + i)) for i in range(2)], log)
    r = cli("bench", "ab", "--base-cmd", base, "--new-cmd", new, "--rounds", "2", "--json",
            "--fail-above", "1.05")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cases"][0]["verdict"] == "same"
    r = cli("bench", "ab", "--base-cmd", base, "--new-cmd", "exit 3")
    assert r.returncode == 2
    assert "error: the new command (round 1) exited with status 3" in r.stderr


def test_names_are_abbreviated_sensibly_and_times_keep_their_digits():
    from mininet.cli.bench_compare import abbreviate, format_seconds, short_names
    names = ["matmul 1024x1024x1024 float32 mininet", "matmul 64x64x64 float32 numpy"]
    assert short_names(names, 40) == (names, [])          # they fit: left alone
    assert short_names(names, 24) == (["1024x1024x1024 mininet", "64x64x64 numpy"],
                                      ["matmul", "float32"])
    assert abbreviate("conv 64x3x224x224 implementation", 26) == "conv 64x3x224x224 impleme…"
    assert abbreviate("a" * 30, 10) == "a" * 9 + "…"
    assert [format_seconds(s) for s in (2.5, 0.0123456, 999.96e-6, 4.56e-7, 1.5e-9, 1234.5)] == \
        ["2.5 s", "12.3 ms", "1 ms", "456 ns", "1.5 ns", "1234 s"]
