"""`mininet bench latency`: batch-1 inference of a registry model against its PyTorch twin.
No timing is asserted (a shared machine); what is checked is that it runs, what it
reports, and that the two sides compute the same thing from the same weights."""
import json

import numpy as np
import pytest

from mininet.benchmark.runs import load_run
from mininet.cli import bench_latency as bl

from conftest import assert_one_line_error, cli

torch = pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_twins_agree_with_the_same_weights(name, batch):
    fns = bl.latency_case(name, batch, np.random.default_rng(4), graph=True)[0]
    ours, theirs = fns["mininet"](), fns["torch"]()
    assert ours.shape == tuple(theirs.shape) == (batch, 10)
    assert not ours.requires_grad                       # eval under no_grad: no graph
    assert np.abs(theirs.numpy()).max() > 1e-3          # not trivially zero
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(fns["graph"]().numpy(), ours.numpy())   # the replay


@pytest.mark.torch
def test_a_different_weight_is_noticed():
    """The check above can fail: a twin parameter changed changes its output."""
    fns, _, _, twin = bl.latency_case("mlp", 2)
    with torch.no_grad():
        twin[2].bias[3] += 0.5
    assert not np.allclose(fns["mininet"]().numpy(), fns["torch"]().numpy(), rtol=2e-4, atol=2e-5)


@pytest.mark.torch
def test_bench_latency_gives_one_case_per_model_and_impl():
    cases = bl.bench_latency(("mlp",), batch=1, threads=1, min_time=0.02)
    assert [(c.params, c.impl) for c in cases] == [({"model": "mlp", "batch": 1}, "mininet"),
                                                   ({"model": "mlp", "batch": 1}, "torch")]
    for c in cases:
        assert c.threads == 1 and len(c.samples) >= bl.ROUNDS
        assert 0 < c.q1 <= c.median <= c.q3


def test_a_language_model_is_refused():
    with pytest.raises(ValueError, match="language model"):
        bl.latency_case("lstm", 1)


@pytest.mark.torch
def test_cli_json_shape(tmp_path):
    path = tmp_path / "run.json"
    r = cli("bench", "latency", "--models", "mlp", "--batch", "2", "--min-time", "0.02",
            "--json", "--save", str(path), timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["model"], row["batch"], row["impl"]) for row in rows] == [
        ("mlp", 2, "mininet"), ("mlp", 2, "torch")]
    for row in rows:
        assert set(row) == {"model", "batch", "impl", "threads", "median_us", "q1_us", "q3_us",
                            "best_us", "samples"}
        assert row["threads"] == 1 and 0 < row["q1_us"] <= row["median_us"] <= row["q3_us"]
    run = load_run(str(path))
    assert run["benchmark"] == "latency"
    assert [c["name"] for c in run["cases"]] == ["latency mlp batch 2 mininet",
                                                 "latency mlp batch 2 torch"]


@pytest.mark.torch
def test_cli_table():
    r = cli("bench", "latency", "--models", "mlp", "--min-time", "0.02", "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "inference latency, batch 1" in r.stdout and "mlp" in r.stdout


@pytest.mark.torch
def test_cli_graph_adds_the_replay():
    r = cli("bench", "latency", "--models", "mlp", "--min-time", "0.02", "--graph", "--json",
            timeout=300)
    assert r.returncode == 0, r.stderr
    assert [row["impl"] for row in json.loads(r.stdout)] == ["mininet", "graph", "torch"]
    r = cli("bench", "latency", "--models", "mlp", "--min-time", "0.02", "--graph", "-q",
            timeout=300)
    assert r.returncode == 0, r.stderr
    assert "KernelGraph" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--models", "nope"], ["--models", "nope"]),
    (["--models", "lstm"], ["--models", "lstm", "language model"]),
    (["--min-time", "0"], ["--min-time"]),
])
def test_cli_bad_arguments_name_the_problem(args, words):
    assert_one_line_error(cli("bench", "latency", *args), *words)
