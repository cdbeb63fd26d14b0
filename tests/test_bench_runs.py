"""Saved benchmark runs (mininet/benchmark/runs.py): the document's schema, the atomic
writer ('-' for stdout), and load_run's validation naming the file and the field."""
import json
from pathlib import Path

import pytest

from mininet.benchmark import runs
from mininet.benchmark.harness import Case

ROOT = Path(__file__).resolve().parents[1]


def _cases():
    return [Case(name=f"matmul 8x8x8 float32 {impl}", impl=impl,
                 params={"m": 8, "k": 8, "n": 8, "dtype": "float32", "device": "cpu"},
                 threads=1, samples=[2e-6, 1e-6, 3e-6], flops=1024.0, nbytes=768.0,
                 peak_rss_mb=50.0) for impl in ("mininet", "numpy")]


@pytest.fixture
def run():
    return runs.new_run("matmul", _cases(), command=["mininet", "bench", "matmul"])


def test_a_new_run_follows_the_schema(run):
    assert run["schema"] == "mininet-bench/1" and run["benchmark"] == "matmul"
    assert run["command"] == ["mininet", "bench", "matmul"]
    m, s = run["machine"], run["software"]
    assert set(m) == {"cpu_model", "cores", "isa_flags", "caches"}
    assert m["cpu_model"] and m["cores"] >= 1 and isinstance(m["isa_flags"], list)
    assert all(isinstance(v, int) and v > 0 for v in m["caches"].values())
    assert set(s) == {"mininet", "commit", "numpy", "blas", "torch", "python", "compiler_flags"}
    import mininet
    import numpy
    assert s["mininet"] == mininet.__version__ and s["numpy"] == numpy.__version__
    assert s["blas"] and s["compiler_flags"]
    c = run["cases"][0]
    assert c["samples"] == [2e-6, 1e-6, 3e-6] and c["median"] == 2e-6 and c["best"] == 1e-6
    assert (c["q1"], c["q3"]) == pytest.approx((1.5e-6, 2.5e-6))
    assert (c["threads"], c["peak_rss_mb"]) == (1, 50.0)
    runs.validate_run(run, "x")


def test_write_and_load_round_trip(tmp_path, run):
    path = tmp_path / "sub" / "run.json"
    runs.write_run(path, run)
    assert runs.load_run(path) == json.loads(json.dumps(run))
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]   # no temp file left
    run["cases"] = run["cases"][:1]
    runs.write_run(path, run)                     # replaced whole
    assert len(runs.load_run(path)["cases"]) == 1


def test_the_compare_reader_accepts_a_saved_run(tmp_path, run):
    compare = pytest.importorskip("mininet.benchmark.compare")
    path = tmp_path / "run.json"
    runs.write_run(path, run)
    base = runs.load_run(path)
    result = compare.compare(base, base)
    assert [c["verdict"] for c in result["cases"]] == ["same", "same"]
    assert result["geomean_ratio"] == 1.0
    assert not [w for w in result["warnings"] if "machine" in w or "software" in w]


def test_dash_writes_the_document_to_stdout(capsys, run):
    runs.write_run("-", run)
    out = capsys.readouterr().out
    assert json.loads(out)["cases"][0]["name"] == "matmul 8x8x8 float32 mininet"


def test_write_refuses_an_invalid_run_and_a_path_it_cannot_write(tmp_path, run):
    bad = dict(run, cases=[])
    with pytest.raises(ValueError, match="cases: no cases"):
        runs.write_run(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=str(blocker / "r.json")):
        runs.write_run(blocker / "r.json", run)


def _damage(run, what):
    case = run["cases"][0]
    if what == "schema":
        run["schema"] = "other/2"
    elif what == "missing samples":
        del case["samples"]
    elif what == "negative sample":
        case["samples"][1] = -1.0
    elif what == "bool threads":
        case["threads"] = True
    elif what == "zero threads":
        case["threads"] = 0
    elif what == "order":
        case["q1"] = case["q3"] * 2
    elif what == "duplicate":
        run["cases"][1]["name"] = case["name"]
    elif what == "cores":
        run["machine"]["cores"] = "two"
    elif what == "torch":
        run["software"]["torch"] = 2
    elif what == "created":
        run["created"] = "yesterday"
    elif what == "flops":
        case["flops"] = -5
    return run


@pytest.mark.parametrize("what, field", [
    ("schema", "schema"), ("missing samples", "cases[0].samples: missing"),
    ("negative sample", "cases[0].samples[1]"), ("bool threads", "cases[0].threads"),
    ("zero threads", "cases[0].threads"), ("order", "cases[0]: best <= q1"),
    ("duplicate", "cases[1].name"), ("cores", "machine.cores"), ("torch", "software.torch"),
    ("created", "created"), ("flops", "cases[0].flops"),
])
def test_load_names_the_file_and_the_field(tmp_path, run, what, field):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_damage(run, what)))
    with pytest.raises(ValueError) as e:
        runs.load_run(path)
    assert str(e.value).startswith(f"{path}: ") and field in str(e.value), str(e.value)


@pytest.mark.parametrize("text, words", [
    ("", ["not JSON"]), ("[1, 2]", ["JSON object"]), ('{"schema": NaN}', ["not JSON", "NaN"]),
    ("\xff", ["not JSON"]),
])
def test_load_rejects_what_is_not_a_run(tmp_path, text, words):
    path = tmp_path / "run.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as e:
        runs.load_run(path)
    assert str(path) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_load_is_bounded_and_names_a_missing_file(tmp_path, monkeypatch, run):
    with pytest.raises(ValueError, match=f"cannot read saved run {tmp_path / 'none.json'}"):
        runs.load_run(tmp_path / "none.json")
    path = tmp_path / "run.json"
    runs.write_run(path, run)
    monkeypatch.setattr(runs, "MAX_RUN_BYTES", 100)
    with pytest.raises(ValueError, match="too large"):
        runs.load_run(path)


def test_cache_sizes_from_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "2048K"), (3, "Unified", "32M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert runs.cache_sizes(str(tmp_path)) == {"L1d": 48 << 10, "L1i": 32 << 10, "L2": 2 << 20,
                                               "L3": 32 << 20}
    assert runs.cache_sizes(str(tmp_path / "none")) == {}


def test_the_committed_baselines_load():
    files = sorted((ROOT / "bench" / "baselines").glob("*.json"))
    assert files, "bench/baselines/ holds no saved run"
    for f in files:
        run = runs.load_run(f)
        assert run["cases"] and run["machine"]["cpu_model"]
    assert "machine" in (ROOT / "bench" / "baselines" / "README.md").read_text().lower()
