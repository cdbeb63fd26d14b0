"""mininet.benchmark.plot: the plotted data are the measured numbers (read back from the
Figure's artists), files are real PNG / SVG written atomically, and bad input is named."""
import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import run_python
from mininet.benchmark import plot

pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -e '.[plot]'")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def matmul_case(size, impl, seconds, threads=1, dtype="float32"):
    return {"name": f"matmul {size}x{size}x{size} {dtype} {impl}", "impl": impl,
            "params": {"m": size, "k": size, "n": size, "dtype": dtype}, "threads": threads,
            "samples": [seconds * 1.1, seconds, seconds * 0.95], "flops": 2.0 * size ** 3,
            "nbytes": 3 * 4.0 * size * size}


# measured: seconds per call (the median of each case's samples)
SECONDS = {("mininet", 64): 2e-5, ("mininet", 256): 6e-4, ("mininet", 1024): 3e-2,
           ("numpy", 64): 1e-5, ("numpy", 256): 5e-4, ("numpy", 1024): 2.5e-2}
RUN = {"schema": "mininet-bench/1", "benchmark": "matmul", "machine": {"cpu_model": "Test CPU"},
       "software": {}, "cases": [matmul_case(s, impl, t) for (impl, s), t in SECONDS.items()]
       + [{"name": "no flops", "impl": "mininet", "samples": [1.0], "flops": None}]}


def xy(line):
    return [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_scaling_plots_gflops_against_size_per_impl(tmp_path):
    fig = plot.plot_scaling(RUN, tmp_path / "scaling.png", peak=150.0)
    ax, = fig.axes
    lines = lines_by_label(ax)
    assert set(lines) == {"mininet", "numpy", "peak 150 GFLOPS"}
    for impl in ("mininet", "numpy"):
        sizes = [64, 256, 1024]
        np.testing.assert_allclose(lines[impl].get_xdata(), sizes, rtol=1e-12)
        np.testing.assert_allclose(lines[impl].get_ydata(),
                                   [2 * s ** 3 / SECONDS[impl, s] / 1e9 for s in sizes], rtol=1e-12)
    assert list(lines["peak 150 GFLOPS"].get_ydata()) == [150.0, 150.0]
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_SIGNATURE)


def test_scaling_separates_dtypes_and_threads_and_orders_by_size():
    run = {"benchmark": "matmul", "cases": [
        matmul_case(256, "mininet", 1e-3, threads=2), matmul_case(64, "mininet", 1e-4, threads=2),
        matmul_case(64, "mininet", 2e-4, threads=1, dtype="float64")]}
    lines = lines_by_label(plot.plot_scaling(run).axes[0])
    assert set(lines) == {"mininet float32 2 threads", "mininet float64 1 threads"}
    np.testing.assert_allclose(lines["mininet float32 2 threads"].get_xdata(), [64, 256])
    np.testing.assert_allclose(lines["mininet float32 2 threads"].get_ydata(),
                               [2 * 64 ** 3 / 1e-4 / 1e9, 2 * 256 ** 3 / 1e-3 / 1e9])


def test_case_sizes_fall_back_to_flops():
    cases = [{"params": {"shape": [2, 8]}, "flops": 10.0}, {"params": {"shape": [4, 4, 4]}, "flops": 5.0}]
    sizes, label = plot.case_sizes(cases)
    assert sizes == pytest.approx([4.0, 4.0]) and "shape" in label
    assert plot.case_sizes([{"params": {}, "flops": 10.0}]) == ([10.0], "FLOPs per call")


def test_roofline_places_each_case_under_the_roof(tmp_path):
    fig = plot.plot_roofline(RUN, {"gflops": 100.0, "gbytes_per_s": 20.0}, tmp_path / "roof.svg")
    ax, = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    points = {c.get_label(): c.get_offsets() for c in ax.collections}
    for impl in ("mininet", "numpy"):
        sizes = [64, 256, 1024]
        expected = [(2 * s ** 3 / (12.0 * s * s), 2 * s ** 3 / SECONDS[impl, s] / 1e9) for s in sizes]
        np.testing.assert_allclose(points[impl], expected, rtol=1e-12)
    roof = next(line for label, line in lines_by_label(ax).items() if label.startswith("roof"))
    xs, ys = np.asarray(roof.get_xdata()), np.asarray(roof.get_ydata())
    np.testing.assert_allclose(ys, np.minimum(100.0, 20.0 * xs), rtol=1e-12)
    assert 5.0 in xs   # the ridge: 100 GFLOPS / 20 GB/s
    assert xs.min() <= 64 * 2 / 12 and xs.max() >= 1024 * 2 / 12
    root = ET.parse(tmp_path / "roof.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_roofline_takes_the_measured_peak():
    peak = {"fp32_gflops_1": 40.0, "fp32_gflops_all": 70.0, "fp64_gflops_1": 20.0,
            "fp64_gflops_all": 35.0, "triad_gbs_1": 10.0, "triad_gbs_all": 14.0, "threads_all": 2}
    pytest.importorskip("mininet_ext.peak", reason="the peak kernels are not built")
    ax = plot.plot_roofline(RUN, peak).axes[0]
    roof = next(line for label, line in lines_by_label(ax).items() if label.startswith("roof"))
    assert max(roof.get_ydata()) == 40.0   # one thread (the run's), float32
    assert plot.plot_roofline(RUN, (50.0, 10.0)).axes[0] is not None
    with pytest.raises(ValueError, match="plot_roofline: peak must be two positive numbers"):
        plot.plot_roofline(RUN, (50.0, -1.0))
    with pytest.raises(ValueError, match="'gflops' and 'gbytes_per_s'"):
        plot.plot_roofline(RUN, {"gflops": 1.0})


def test_compare_plot_shows_each_ratio_and_interval(tmp_path):
    rows = [{"name": "a", "ratio": 1.3, "ci_low": 1.2, "ci_high": 1.4, "verdict": "slower"},
            {"name": "b", "ratio": 0.8, "ci_low": 0.7, "ci_high": 0.85, "verdict": "faster"},
            {"name": "c", "ratio": 1.01, "ci_low": 0.9, "ci_high": 1.1, "verdict": "same"},
            {"name": "d", "ratio": 1.5, "ci_low": 1.1, "ci_high": 1.9, "verdict": "slower"}]
    result = {"cases": rows, "geomean_ratio": 1.1, "confidence": 0.95}
    fig = plot.plot_compare(result, tmp_path / "cmp.png")
    ax, = fig.axes
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}   # each errorbar's points
    # the first case is the top row
    assert xy(lines["slower"]) == ([1.3, 1.5], [3, 0])
    assert xy(lines["faster"]) == ([0.8], [2]) and xy(lines["same"]) == ([1.01], [1])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["d", "c", "b", "a"]
    # the error bars span each interval
    spans = sorted(tuple(np.round(seg[:, 0], 12)) for c in ax.collections for seg in c.get_segments())
    assert spans == sorted([(1.2, 1.4), (0.7, 0.85), (0.9, 1.1), (1.1, 1.9)])
    one = [line for line in ax.get_lines() if list(line.get_xdata()) == [1.0, 1.0]]
    assert one, "no line at 1.0"
    assert (tmp_path / "cmp.png").read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="no case common"):
        plot.plot_compare({"cases": []})


def history(acc=True, test=True):
    return [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 1 - 0.5 / e if acc else None,
             "test_loss": 2.5 / e if test else None, "test_acc": 0.9 - 0.5 / e if acc and test else None}
            for e in (1, 2, 3)]


def test_training_plot_shows_loss_and_accuracy(tmp_path):
    fig = plot.plot_training(history(), tmp_path / "train.svg")
    loss_ax, acc_ax = fig.axes
    loss, acc = lines_by_label(loss_ax), lines_by_label(acc_ax)
    np.testing.assert_allclose(loss["train"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(loss["train"].get_ydata(), [2.0, 1.0, 2 / 3])
    np.testing.assert_allclose(loss["test"].get_ydata(), [2.5, 1.25, 2.5 / 3])
    np.testing.assert_allclose(acc["train"].get_ydata(), [0.5, 0.75, 1 - 0.5 / 3])
    np.testing.assert_allclose(acc["test"].get_ydata(), [0.4, 0.65, 0.9 - 0.5 / 3])
    assert acc_ax.get_ylabel() == "accuracy"
    assert ET.parse(tmp_path / "train.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"


def test_training_plot_without_accuracy_shows_perplexity():
    loss_ax, ppl_ax = plot.plot_training(history(acc=False, test=False)).axes
    assert ppl_ax.get_ylabel() == "perplexity" and set(lines_by_label(loss_ax)) == {"train"}
    np.testing.assert_allclose(lines_by_label(ppl_ax)["train"].get_ydata(),
                               [math.exp(2.0), math.e, math.exp(2 / 3)], rtol=1e-12)


def test_training_plot_metric_is_chosen_explicitly():
    _, right = plot.plot_training(history(), metric="perplexity").axes
    assert right.get_ylabel() == "perplexity"
    np.testing.assert_allclose(lines_by_label(right)["test"].get_ydata(),
                               [math.exp(2.5), math.exp(1.25), math.exp(2.5 / 3)], rtol=1e-12)
    _, right = plot.plot_training(history(acc=False), metric="accuracy").axes
    assert right.get_ylabel() == "accuracy" and right.get_lines() == []
    with pytest.raises(ValueError, match="metric must be accuracy or perplexity"):
        plot.plot_training(history(), metric="bleu")


@pytest.mark.parametrize("bad, problem", [
    ([], "non-empty list"),
    ([{"epoch": 1}], "history[0] has no number 'train_loss'"),
    ([{"epoch": 1, "train_loss": 1.0, "test_acc": "90%"}], "history[0]['test_acc'] is '90%'"),
])
def test_training_plot_names_bad_history(bad, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        plot.plot_training(bad)


def test_an_unknown_suffix_is_refused_before_anything_is_written(tmp_path):
    for name in ("out.jpg", "out"):
        with pytest.raises(ValueError, match=f"{tmp_path}/{name}: cannot write a plot as .*"
                                             "use .png or .svg"):
            plot.plot_training(history(), tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_writing_is_atomic_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "train.png"
    path.write_bytes(b"old")
    plot.plot_training(history(), path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert os.listdir(tmp_path) == ["train.png"]   # no temp file left behind


def test_without_matplotlib_the_error_says_what_to_install():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from mininet.benchmark import plot\n"
            "try:\n    plot.plot_training([{'epoch': 1, 'train_loss': 1.0}])\n"
            "except ImportError as e:\n    print(e)\n")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "plotting needs matplotlib: pip install 'mininet-dl[plot]'"
