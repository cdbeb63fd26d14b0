"""`bench matmul|conv --plot/--roofline`: the figures hold the run's numbers; bad paths and a
missing peak are refused before anything is timed."""
import os
import subprocess
import sys

import pytest

from conftest import CLI_ENV, assert_one_line_error

pytest.importorskip("matplotlib")

WITH_FAKE_PEAK = """
import sys
import mininet.benchmark.peak as peak
peak.read_cache = lambda path=None: {
    "fp32_gflops_1": 100.0, "fp32_gflops_all": 180.0, "fp64_gflops_1": 50.0,
    "fp64_gflops_all": 90.0, "copy_gbs_1": 15.0, "copy_gbs_all": 20.0, "triad_gbs_1": 20.0,
    "triad_gbs_all": 25.0, "threads_all": 2, "cpu_model": "fake", "cores": 2, "isa": "fake",
    "measured_at": "2026-01-01T00:00:00+00:00"}
sys.argv = ["mininet", "bench", *sys.argv[1:]]
from mininet.cli import main
main()
"""


def bench(*args, peak=True, cache=None):
    env = {**os.environ, **CLI_ENV, "MININET_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-c", WITH_FAKE_PEAK] if peak else [sys.executable, "-m", "mininet.cli"]
    cmd = cmd + ([] if peak else ["bench"]) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_matmul_plot_and_roofline_hold_the_saved_numbers(tmp_path):
    from mininet.benchmark.plot import plot_roofline, plot_scaling
    from mininet.benchmark.runs import load_run
    run_file, scaling, roof = tmp_path / "run.json", tmp_path / "s.png", tmp_path / "r.svg"
    r = bench("matmul", "--sizes", "32,48", "--repeat", "3", "--save", run_file,
              "--plot", scaling, "--roofline", roof, cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert scaling.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in roof.read_bytes()[:400]
    run = load_run(run_file)
    # the CLI drew the same figures plot_* draw from the saved run: compare their data
    fig = plot_scaling(run, peak=180.0)
    by_label = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
    mine = sorted((c for c in run["cases"] if c["impl"] == "mininet"), key=lambda c: c["flops"])
    want = [c["flops"] / c["median"] / 1e9 for c in mine]
    assert list(by_label["mininet"]) == pytest.approx(want)
    rfig = plot_roofline(run, {"gflops": 180.0, "gbytes_per_s": 25.0})
    points = [p for coll in rfig.axes[0].collections for p in coll.get_offsets()]
    assert len(points) == len(run["cases"])


def test_conv_roofline(tmp_path):
    roof = tmp_path / "c.png"
    r = bench("conv", "--shapes", "2,3,8,8,4,3,1,1", "--repeat", "2", "--no-naive",
              "--roofline", roof, cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert roof.read_bytes()[:4] == b"\x89PNG"


def test_plot_errors_come_before_timing(tmp_path):
    r = bench("matmul", "--sizes", "32", "--plot", tmp_path / "x.jpg", cache=tmp_path)
    assert_one_line_error(r, "--plot", ".jpg")
    r = bench("matmul", "--sizes", "32", "--roofline", tmp_path / "r.png", peak=False,
              cache=tmp_path / "empty")
    assert_one_line_error(r, "--roofline", "peak")
    assert not (tmp_path / "r.png").exists()
