"""bench/gpu_check.py, the one command for a lent GPU: its dry run under the CUDA emulator
(marked gpu, so the emulated CI run proves the script before a GPU is ever lent), its
compute-sanitizer steps through a stand-in sanitizer, and its runner's timeouts, budget and
failure handling (no GPU needed)."""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load()
REAL_ONLY = {s.name for s in gpu_check.STEPS if s.real_only}


def run_check(*args, env=None, timeout=300):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return proc, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run for the tests below: (its report, its output, the $OUT folder)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    report = tmp / "report" / "gpu_check.json"
    proc, output = run_check("--dry-run", "--report", report, "--budget", 240,
                             env={"OUT": str(tmp / "out")})
    assert proc.returncode == 0, output
    return json.loads(report.read_text()), proc.stdout, tmp / "out"


@pytest.mark.gpu
def test_the_dry_run_passes_every_step_and_prints_where_the_report_is(dry_run):
    report, stdout, out = dry_run
    assert report["ok"] and report["dry_run"] and report["sizes"] == "small"
    assert [s["name"] for s in report["steps"]] == [s.name for s in gpu_check.STEPS]
    for step in report["steps"]:
        if step["name"] in REAL_ONLY:
            assert step["status"] == "skipped" and step["reason"].startswith("dry run"), step
        else:
            assert step["status"] == "ok", step
            assert step["returncode"] == 0 and step["seconds"] > 0 and step["command"], step
            assert isinstance(step["output_tail"], str) and step["output_tail"], step
    ok, skipped = len(gpu_check.STEPS) - len(REAL_ONLY), len(REAL_ONLY)
    assert f"gpu-check: {ok} ok, 0 failed, {skipped} skipped" in stdout and "report: " in stdout
    # $OUT gets a copy (the device tool brings back what is written there), with the log
    assert json.loads((out / "gpu_check.json").read_text())["steps"] == report["steps"]
    assert "=== tests: ok" in (out / "gpu_check.log").read_text()


@pytest.mark.gpu
def test_the_dry_run_reports_the_figures_of_every_benchmark(dry_run):
    report = dry_run[0]
    fig = {s["name"]: s.get("figures") for s in report["steps"]}
    assert fig["tests"]["tests"] >= 1 and fig["tests"]["skipped"] == 0
    assert fig["kernels"]["compile_seconds"] and fig["kernels"]["emulated"]
    mm = [r for r in fig["matmul"] if r["impl"] == "mininet"]
    assert len(mm) == len(gpu_check.SIZES["small"]["matmul"].split(","))
    assert all(r["gflops"] > 0 and r["max_abs_err"] < 1e-3 for r in mm)
    assert fig["torch"]["tf32"] is False and fig["torch"]["matmul"] and fig["torch"]["conv"]
    for step, device in (("conv", "cuda"), ("conv-cpu", "cpu")):
        assert {r["device"] for r in fig[step]} == {device}
        assert {r["mode"] for r in fig[step] if r["impl"] == "mininet"} == {"fwd", "fwd+bwd"}
    cuda, cpu = fig["cnn-cuda"], fig["cnn-cpu"]
    assert cuda["samples"] == cpu["samples"] and not cuda["partial"] and math.isfinite(cuda["loss"])
    assert cuda["loss"] == pytest.approx(cpu["loss"], rel=1e-3)   # same seed, same data
    summary = report["summary"]
    assert set(summary["matmul"]) == {f"{r['m']}x{r['k']}x{r['n']}" for r in mm}
    assert all("mininet_vs_torch" in row for row in summary["matmul"].values())
    assert all({"mininet_cuda_ms", "mininet_cpu_ms", "torch_cpu_ms"} <= set(row)
               for row in summary["conv"].values())
    assert summary["cnn"]["cuda_speedup"] > 0


FAKE_SANITIZER = """#!/bin/sh
# compute-sanitizer's stand-in: check the options the check passes, run the program
[ "$1" = --tool ] && [ "$3" = --error-exitcode ] && [ "$4" = 1 ] || { echo "bad options: $*"; exit 9; }
echo "$2" >> "$(dirname "$0")/tools"
shift 4
exec "$@"
"""


@pytest.mark.gpu
def test_the_sanitizer_steps_run_the_test_subset_under_compute_sanitizer(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "compute-sanitizer").write_text(FAKE_SANITIZER)
    (bin_dir / "compute-sanitizer").chmod(0o755)
    report = tmp_path / "report.json"
    proc, output = run_check("--sizes", "small", "--only", "memcheck,racecheck", "--report",
                             report, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                                          "MININET_CUDA_EMU": "fast"})
    assert proc.returncode == 0, output
    steps = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
    for tool in ("memcheck", "racecheck"):
        assert steps[tool]["status"] == "ok", steps[tool]
        assert steps[tool]["figures"]["tests"] >= 1
    assert (bin_dir / "tools").read_text().split() == ["memcheck", "racecheck"]
    assert steps["tests"]["reason"] == "not in --only"


# the runner, without a GPU ---------------------------------------------------------------------
def config(tmp_path, budget=60):
    return gpu_check.Config("small", False, budget, tmp_path, dict(os.environ))


def python_step(name, code, timeout=30, figures=None):
    return gpu_check.Step(name, timeout, lambda cfg: [sys.executable, "-c", code], figures)


def test_a_hung_step_is_killed_at_its_timeout_with_its_children(tmp_path):
    hang = python_step("hang", "import subprocess, time; subprocess.Popen(['sleep', '60']); "
                               "time.sleep(60)", timeout=1)
    start = time.monotonic()
    result = gpu_check.run_step(hang, config(tmp_path), time.monotonic() + 60)
    assert time.monotonic() - start < 10
    assert result["status"] == "failed" and result["returncode"] is None
    assert "timed out after 1 s" in result["reason"]


def test_a_failing_step_is_reported_and_the_next_one_still_runs(tmp_path):
    cfg, deadline = config(tmp_path), time.monotonic() + 60
    fail = python_step("fail", "import sys; print('partial'); sys.exit(3)")
    ok = python_step("ok", "print('note'); print('[1, 2]')", figures=gpu_check.from_json)
    first, second = (gpu_check.run_step(s, cfg, deadline) for s in (fail, ok))
    assert first["status"] == "failed" and first["reason"] == "exit status 3"
    assert "partial" in first["output_tail"]
    assert second["status"] == "ok" and second["figures"] == [1, 2]


def test_figures_that_cannot_be_read_fail_the_step(tmp_path):
    step = python_step("silent", "print('no json here')", figures=gpu_check.from_json)
    result = gpu_check.run_step(step, config(tmp_path), time.monotonic() + 60)
    assert result["status"] == "failed" and "printed no JSON" in result["reason"]


def test_each_timeout_is_cut_to_the_budget_left_and_a_spent_budget_skips(tmp_path):
    cfg = config(tmp_path)
    step = python_step("quick", "pass", timeout=500)
    assert gpu_check.run_step(step, cfg, time.monotonic() + 30)["timeout"] <= 30
    late = gpu_check.run_step(step, cfg, time.monotonic() + 2)
    assert late["status"] == "skipped" and late["reason"].startswith("out of time")


def test_a_wrong_product_at_a_size_the_tests_do_not_reach_fails_the_matmul_step(tmp_path):
    def row(n, err):
        return {"impl": "mininet", "m": n, "k": n, "n": n, "gflops": 1.0, "max_abs_err": err}
    good = json.dumps([row(64, 1e-5), row(8192, 4e-3)])
    assert len(gpu_check.matmul_figures("note\n" + good, None, "matmul")) == 2
    with pytest.raises(gpu_check.Failed, match="8192x8192x8192: max error 57"):
        gpu_check.matmul_figures(json.dumps([row(64, 1e-5), row(8192, 57.0)]), None, "matmul")


def test_figures_of_an_unexpected_shape_fail_the_step_not_the_check(tmp_path):
    step = python_step("odd", "print('{}')", figures=lambda out, cfg, name: {}["missing"])
    result = gpu_check.run_step(step, config(tmp_path), time.monotonic() + 60)
    assert result["status"] == "failed" and result["reason"] == "KeyError: 'missing'"
    assert "error" in gpu_check.summarize([{"name": "matmul", "figures": [{"impl": "x"}]}])


def test_a_skipped_gpu_test_fails_the_tests_step(tmp_path):
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="2" failures="0" errors="0" skipped="1">'
        '<testcase name="a"/><testcase name="b"><skipped message="no CUDA: no driver"/>'
        '</testcase></testsuite></testsuites>')
    with pytest.raises(ValueError, match="1 GPU tests skipped: no CUDA: no driver"):
        gpu_check.junit("", config(tmp_path), "tests")
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "junit_no_skips.py"),
                           str(tmp_path / "tests.xml")], capture_output=True, text=True)
    assert proc.returncode == 1 and "1 skipped" in proc.stdout


def test_the_report_goes_under_OUT_too(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    assert gpu_check.report_paths(str(tmp_path / "r.json")) == [
        (tmp_path / "r.json").resolve(), (tmp_path / "out" / "gpu_check.json").resolve()]
    assert gpu_check.report_paths(None) == [(tmp_path / "out" / "gpu_check.json").resolve()]


def test_step_names_are_unique_and_every_step_has_a_timeout():
    names = [s.name for s in gpu_check.STEPS]
    assert len(names) == len(set(names))
    assert all(0 < s.timeout <= gpu_check.BUDGET_S for s in gpu_check.STEPS)
