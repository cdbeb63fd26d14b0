"""`bench train --save`: every timed epoch of each model and implementation in a saved run."""
import json

from conftest import assert_one_line_error, cli


def test_bench_train_saves_each_epoch(tmp_path):
    path = tmp_path / "train.json"
    r = cli("bench", "train", "--models", "softmax", "--samples", "200", "--repeat", "3",
            "--save", path)
    assert r.returncode == 0, r.stderr
    from mininet.benchmark.runs import load_run
    run = load_run(path)
    assert run["benchmark"] == "train"
    mine = next(c for c in run["cases"] if c["impl"] == "mininet")
    assert mine["name"] == "train softmax batch 100 mininet"
    assert len(mine["samples"]) == 3 and mine["params"]["samples"] == 200
    assert mine["median"] == sorted(mine["samples"])[1]
    r = cli("bench", "train", "--models", "softmax", "--samples", "200", "--json")
    rows = json.loads(r.stdout)
    assert {"seconds", "best_seconds", "epoch_seconds"} <= set(rows[0])


def test_bench_train_save_refusals(tmp_path):
    assert_one_line_error(cli("bench", "train", "--models", "mlp", "--ranks", "1",
                              "--save", tmp_path / "x.json"), "--save", "--ranks")
    assert_one_line_error(cli("bench", "train", "--models", "mlp", "--json", "--save", "-"),
                          "--save -", "--json")
