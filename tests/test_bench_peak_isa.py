"""`mininet bench peak --isa`: the FMA peak kernel of each kernel set (mininet_ext._kern_<isa>'s
"peak" capsule, through peak.fma_path) against closed forms, its vector width per path, bad
names refused, the per-path cache, and the command line; `bench matmul`'s % of the running
path's peak."""
import json
from fractions import Fraction

import pytest

from mininet.benchmark import peak, peak_isa
from mininet_ext import _isa
from mininet_ext import peak as kernels

from conftest import cli

PATHS = _isa.supported()
BITS = {"generic": 128, "avx2": 256, "avx512": 512, "avx512bf16": 512}
ITEMSIZE = {"float32": 4, "float64": 8}


def chain_sum(isa, dtype, threads, step, x0):
    """sum over threads, chains j and lanes of step(x0 + j): fma_path's checksum."""
    info = kernels.path_info(isa)
    lanes = info["vector_bits"] // (8 * ITEMSIZE[dtype])
    t = kernels.max_threads(threads)
    return t * lanes * sum(step(Fraction(x0) + j) for j in range(info["chains"]))


@pytest.mark.parametrize("isa", PATHS)
def test_each_path_has_its_own_vector_width(isa):
    info = kernels.path_info(isa)
    assert info["isa"] == isa and info["vector_bits"] == BITS[isa]
    assert info["fused"] == (isa != "generic")   # SSE2 has no FMA: a multiply and an add
    assert info["chains"] >= 8
    for dtype, size in ITEMSIZE.items():
        lanes = BITS[isa] // (8 * size)
        assert kernels.path_flops_per_iteration(isa, dtype) == info["chains"] * lanes * 2


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_path_fma_counts_every_iteration(isa, dtype, threads, n):
    got = kernels.fma_path(isa, dtype, n, threads, a=1.0, b=1.0, x0=0.5)
    assert got == chain_sum(isa, dtype, threads, lambda x: x + n, 0.5)


@pytest.mark.parametrize("isa", PATHS)
def test_path_fma_halves_exactly(isa):
    got = kernels.fma_path(isa, "float64", 40, 1, a=0.5, b=1.0, x0=0.25)
    assert got == chain_sum(isa, "float64", 1, lambda x: 2 + (x - 2) / Fraction(2) ** 40, 0.25)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: kernels.fma_path("sse9", "float32", 10), ValueError, ["sse9", "generic"]),
    (lambda: kernels.fma_path(PATHS[0], "int8", 10), ValueError, ["dtype", "int8"]),
    (lambda: kernels.fma_path(PATHS[0], "float32", -2), ValueError, ["iterations", "-2"]),
    (lambda: kernels.fma_path(PATHS[0], "float32", 5, 0), ValueError, ["threads", "0"]),
    (lambda: kernels.path_info("avx9"), ValueError, ["avx9"]),
])
def test_bad_arguments_name_the_problem(call, exc, words):
    with pytest.raises(exc) as e:
        call()
    for w in words:
        assert w in str(e.value)


def test_a_path_the_cpu_lacks_is_refused(monkeypatch):
    monkeypatch.setenv("MININET_ISA_PRETEND_MISSING", "avx2")
    with pytest.raises(RuntimeError, match="lacks avx2"):
        kernels.fma_path("avx2", "float32", 10)


def test_choose_names_the_paths():
    assert peak_isa.choose("all") == PATHS
    assert peak_isa.choose(f" {PATHS[0]} ") == (PATHS[0],)
    assert peak_isa.choose(",".join(reversed(PATHS))) == tuple(reversed(PATHS))
    with pytest.raises(ValueError, match="mmx"):
        peak_isa.choose("generic,mmx")


def test_quick_measure_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path))
    first = peak_isa.load_or_measure((PATHS[0],), quick=True)
    assert list(first) == [PATHS[0]]
    figures = first[PATHS[0]]
    assert all(figures[k] > 0 for k in peak_isa.FIGURES)
    assert figures["vector_bits"] == BITS[PATHS[0]]
    saved = json.loads((tmp_path / "peak_isa.json").read_text())
    assert saved["key"] == peak.machine_key() and saved["paths"] == first

    def must_not_measure(*a, **k):
        raise AssertionError("measured although the cache held the path")
    monkeypatch.setattr(peak_isa, "measure", must_not_measure)
    assert peak_isa.load_or_measure((PATHS[0],)) == first


@pytest.mark.parametrize("bad", [b"not json", b"[]", b'{"key": 1, "paths": {}}'])
def test_a_corrupt_cache_is_remeasured(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path))
    (tmp_path / "peak_isa.json").write_bytes(bad)
    assert peak_isa.read_cache() == {}
    got = peak_isa.load_or_measure((PATHS[0],), quick=True)
    assert peak_isa.read_cache() == got


def test_a_cached_path_with_a_bad_figure_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path))
    good = {"isa": PATHS[0], "vector_bits": 128, "chains": 12, "fused": False, "threads_all": 2,
            **{k: 10.0 for k in peak_isa.FIGURES}}
    bad = {**good, "fp32_gflops_1": -1.0}
    entry = {"key": peak.machine_key(), "paths": {PATHS[0]: good}}
    (tmp_path / "peak_isa.json").write_text(json.dumps(entry))
    assert peak_isa.read_cache() == {PATHS[0]: good}
    entry["paths"][PATHS[0]] = bad
    (tmp_path / "peak_isa.json").write_text(json.dumps(entry))
    assert peak_isa.read_cache() == {}


def test_pct_of_path():
    figures = {"fp32_gflops_1": 50.0, "fp32_gflops_all": 100.0, "fp64_gflops_1": 25.0,
               "fp64_gflops_all": 50.0, "threads_all": 2}
    assert peak_isa.pct_of_path(40.0, figures, "float32", 1) == pytest.approx(80.0)
    assert peak_isa.pct_of_path(40.0, figures, "float32", 2) == pytest.approx(40.0)
    assert peak_isa.pct_of_path(20.0, figures, "float64", 1) == pytest.approx(80.0)


def _cache_all(tmp_path, value=10.0):
    paths = {isa: {"isa": isa, "vector_bits": BITS[isa], "chains": 12, "fused": isa != "generic",
                   "threads_all": 2, **{k: value * (i + 1) for i, k in enumerate(peak_isa.FIGURES)}}
             for isa in PATHS}
    (tmp_path / "peak_isa.json").write_text(json.dumps({"key": peak.machine_key(), "paths": paths}))
    return paths


def test_cli_isa_all_json_and_table(tmp_path):
    paths = _cache_all(tmp_path)
    env = {"MININET_CACHE_DIR": str(tmp_path)}
    r = cli("bench", "peak", "--isa", "all", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == paths
    r = cli("bench", "peak", "--isa", "all", env={**env, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    for isa in PATHS:
        assert isa in r.stdout and f"{BITS[isa]}-bit" in r.stdout
    assert "mul+add" in r.stdout or "generic" not in PATHS


def test_cli_unknown_isa_is_one_error_line(tmp_path):
    r = cli("bench", "peak", "--isa", "mmx", env={"MININET_CACHE_DIR": str(tmp_path)})
    assert r.returncode != 0 and "mmx" in r.stderr and r.stdout == ""


def test_cli_matmul_shows_the_running_paths_peak(tmp_path):
    _cache_all(tmp_path, value=1000.0)   # a huge peak: a small %, whatever the machine does
    isa = PATHS[0]
    r = cli("bench", "matmul", "--sizes", "64", "--min-time", "0.01", "--repeat", "2", "--json",
            env={"MININET_CACHE_DIR": str(tmp_path), "MININET_ISA": isa})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")] \
        if not r.stdout.lstrip().startswith("[") else json.loads(r.stdout)
    text = json.dumps(rows)
    assert "pct_path_peak" in text and f'"path": "{isa}"' in text
    r = cli("bench", "matmul", "--sizes", "64", "--min-time", "0.01", "--repeat", "2",
            env={"MININET_CACHE_DIR": str(tmp_path), "MININET_ISA": isa, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert f"% {isa} peak" in r.stdout
