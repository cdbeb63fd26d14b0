"""`mininet bench peak`: the FMA kernel's arithmetic against closed forms, the STREAM kernels
against numpy, the cache (hit, refresh, another machine's file, corrupt files), the roofline
against hand-computed values, and the command line."""
import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest

from mininet.benchmark import peak
from mininet_ext import peak as kernels

from conftest import cli, run_python

ITEMSIZE = {"float32": 4, "float64": 8}
ISA_BITS = {"avx512f": 512, "avx2+fma": 256, "avx": 256, "sse2": 128, "neon": 128, "generic": 128}


def lanes(dtype):
    return kernels.vector_bits() // (8 * ITEMSIZE[dtype])


def chain_sum(dtype, threads, step, x0):
    """sum over threads, chains j and lanes of step(x0 + j): the FMA kernel's checksum."""
    t = kernels.max_threads(threads)
    return t * lanes(dtype) * sum(step(Fraction(x0) + j) for j in range(kernels.chains()))


# the FMA kernel ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_fma_counts_every_iteration(dtype, threads, n):
    # a = b = 1: each chain gains exactly 1 per iteration (exact in fp32 below 2^24)
    got = kernels.fma(dtype, n, threads, a=1.0, b=1.0, x0=0.5)
    assert got == chain_sum(dtype, threads, lambda x: x + n, 0.5)


@pytest.mark.parametrize("dtype, n", [("float32", 15), ("float64", 40)])
def test_fma_halving_converges_exactly(dtype, n):
    # x <- x / 2 + 1 has the fixed point 2: x_n = 2 + (x_0 - 2) / 2^n, exact in these widths
    got = kernels.fma(dtype, n, 1, a=0.5, b=1.0, x0=0.25)
    assert got == chain_sum(dtype, 1, lambda x: 2 + (x - 2) / Fraction(2) ** n, 0.25)


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_fma_sign_flips(n):
    got = kernels.fma("float64", n, 2, a=-1.0, b=0.0, x0=3.0)
    assert got == chain_sum("float64", 2, lambda x: (-1) ** n * x, 3.0)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_fma_matches_the_geometric_closed_form(dtype, rtol):
    a, b, x0, n = 0.75, 0.25, 3.0, 5000   # fixed point c = b / (1 - a) = 1
    got = kernels.fma(dtype, n, 1, a=a, b=b, x0=x0)
    want = lanes(dtype) * sum(a ** n * (x0 + j - 1) + 1 for j in range(kernels.chains()))
    assert got == pytest.approx(want, rel=rtol)


def test_fma_flops_and_isa_agree():
    for dtype in ITEMSIZE:
        assert kernels.flops_per_iteration(dtype) == kernels.chains() * lanes(dtype) * 2
    assert kernels.chains() >= 8   # enough chains in flight to fill two FMA pipes
    assert kernels.vector_bits() == ISA_BITS[kernels.isa()]
    info = peak.kernel_info()
    assert info["isa"] == kernels.isa() and info["vector_bits"] == kernels.vector_bits()


def test_isa_is_one_this_cpu_has():
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no x86 /proc/cpuinfo flags here")
    need = {"avx512f": ["avx512f"], "avx2+fma": ["avx2", "fma"], "avx": ["avx"], "sse2": ["sse2"]}
    for flag in need.get(kernels.isa(), []):
        assert flag in flags


def test_threads_are_real_where_openmp_is():
    from mininet_ext import _omp
    assert kernels.max_threads(3) == (3 if _omp.openmp_enabled() else 1)
    assert kernels.max_threads(1) == 1


def test_a_fork_child_runs_on_one_thread_instead_of_hanging():
    code = ("import os; from mininet_ext import peak as p; p.fma('float32', 1000, 2)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    print(p.max_threads(2), p.fma('float32', 3, 2, 1.0, 1.0, 0.0), flush=True); os._exit(0)\n"
            "os.waitpid(pid, 0)\n")
    r = run_python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    lanes32 = kernels.vector_bits() // 32
    assert r.stdout.split() == ["1", str(float(lanes32 * sum(j + 3 for j in range(kernels.chains()))))]


@pytest.mark.parametrize("call, words", [
    (lambda: kernels.fma("int64", 10), ["dtype", "int64"]),
    (lambda: kernels.fma("float32", -1), ["iterations", "-1"]),
    (lambda: kernels.fma("float32", 10, 0), ["threads", "0"]),
    (lambda: kernels.flops_per_iteration("float16"), ["dtype", "float16"]),
])
def test_fma_bad_arguments_name_the_problem(call, words):
    with pytest.raises(ValueError) as e:
        call()
    for w in words:
        assert w in str(e.value)


# the STREAM kernels -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 100003])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_stream_kernels_compute_what_they_say(n, threads):
    rng = np.random.default_rng(n + threads)
    b, c = rng.standard_normal(n), rng.standard_normal(n)
    a = np.full(n, np.nan)
    kernels.fill(a, 4.5, threads)
    np.testing.assert_array_equal(a, np.full(n, 4.5))
    kernels.copy(a, b, threads)
    np.testing.assert_array_equal(a, b)
    kernels.triad(a, b, c, -1.5, threads)
    np.testing.assert_allclose(a, b + -1.5 * c, rtol=1e-15, atol=1e-15)


def test_stream_kernels_on_offset_views():
    base = np.zeros(20)
    src = np.arange(20.0)
    kernels.copy(base[3:11], src[5:13], 2)
    want = np.zeros(20)
    want[3:11] = src[5:13]
    np.testing.assert_array_equal(base, want)


@pytest.mark.parametrize("call, words", [
    (lambda: kernels.copy(np.zeros(3), np.zeros(4)), ["copy", "3", "4"]),
    (lambda: kernels.triad(np.zeros(3), np.zeros(3), np.zeros(2), 1.0), ["triad", "2"]),
    (lambda: (lambda x: kernels.copy(x[2:], x[:-2]))(np.zeros(8)), ["overlaps"]),
    (lambda: (lambda x: kernels.triad(x, np.zeros(8), x, 1.0))(np.zeros(8)), ["overlaps"]),
    (lambda: kernels.copy(np.zeros(3), np.zeros(3), 0), ["threads"]),
])
def test_stream_bad_arguments_name_the_problem(call, words):
    with pytest.raises(ValueError) as e:
        call()
    for w in words:
        assert w in str(e.value)


def test_stream_kernels_refuse_strided_and_wrong_dtypes():
    with pytest.raises(ValueError, match="contiguous"):
        kernels.copy(np.zeros(4), np.zeros(8)[::2])
    with pytest.raises(ValueError, match="dtype"):
        kernels.copy(np.zeros(4), np.zeros(4, dtype=np.float32))


# measure ----------------------------------------------------------------------------------------

KEYS = ["cpu_model", "cores", "isa", *peak.FIGURES, "threads_all", "measured_at"]


def test_quick_measure_gives_sane_figures():
    r = peak.measure(quick=True)
    assert sorted(r) == sorted(KEYS)
    assert {k: r[k] for k in ("cpu_model", "cores")} == \
        {k: v for k, v in peak.machine_key().items() if k != "mininet"}
    assert r["isa"] == kernels.isa()
    assert r["threads_all"] == kernels.max_threads(r["cores"])
    for name in peak.FIGURES:
        assert math.isfinite(r[name]) and r[name] > 0, name
    # no ratio between the 1-core and all-core figures here: a busy shared machine (another
    # process on the second core) makes the all-core one anything (speed lives in benchmarks)
    json.dumps(r, allow_nan=False)


def test_machine_key():
    key = peak.machine_key()
    assert set(key) == {"cpu_model", "cores", "mininet"}
    assert key["cores"] == len(os.sched_getaffinity(0))
    assert key["mininet"] == __import__("mininet").__version__
    assert isinstance(key["cpu_model"], str) and key["cpu_model"]


# the cache --------------------------------------------------------------------------------------

def fake_peak(scale=1.0):
    key = peak.machine_key()
    r = {"cpu_model": key["cpu_model"], "cores": key["cores"], "isa": kernels.isa()}
    r.update({name: scale * (i + 1) for i, name in enumerate(peak.FIGURES)})
    r.update(threads_all=2, measured_at="2025-01-01T00:00:00+00:00")
    return r


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """MININET_CACHE_DIR in tmp_path; peak.measure replaced by a counter returning fake_peak."""
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(quick=False):
        calls.append(1)
        return fake_peak(len(calls))
    monkeypatch.setattr(peak, "measure", fake_measure)
    return tmp_path / "peak.json", calls


def test_second_call_reads_the_cache(cache, monkeypatch):
    path, calls = cache
    first = peak.load_or_measure()
    assert calls == [1] and first == fake_peak(1)
    saved = json.loads(path.read_text())
    assert saved == {"key": peak.machine_key(), "peak": first}

    def must_not_measure(quick=False):
        raise AssertionError("measured although the cache was valid")
    monkeypatch.setattr(peak, "measure", must_not_measure)
    assert peak.load_or_measure() == first
    assert [p.name for p in path.parent.iterdir()] == ["peak.json"]   # no temp files left


def test_refresh_measures_again(cache):
    path, calls = cache
    peak.load_or_measure()
    again = peak.load_or_measure(refresh=True)
    assert calls == [1, 1] and again == fake_peak(2)
    assert json.loads(path.read_text())["peak"] == fake_peak(2)


@pytest.mark.parametrize("field, value", [("cpu_model", "Some Other CPU 9000"), ("cores", 977),
                                          ("mininet", "0.0.1-old")])
def test_another_machines_or_versions_cache_is_ignored(cache, field, value):
    path, calls = cache
    other = {**peak.machine_key(), field: value}
    path.write_text(json.dumps({"key": other, "peak": fake_peak(50)}))
    assert peak.load_or_measure() == fake_peak(1) and calls == [1]
    assert json.loads(path.read_text())["key"] == peak.machine_key()


def test_a_cache_from_other_kernels_is_ignored(cache):
    path, calls = cache
    path.write_text(json.dumps({"key": peak.machine_key(), "peak": {**fake_peak(50), "isa": "mmx"}}))
    assert peak.load_or_measure() == fake_peak(1) and calls == [1]


def _entry(**change):
    """A cache file for this machine whose peak has `change` applied (None deletes)."""
    result = fake_peak(50)
    for name, value in change.items():
        if value is None:
            del result[name]
        else:
            result[name] = value
    return json.dumps({"key": peak.machine_key(), "peak": result}).encode()   # NaN, Infinity as is


CORRUPT = {
    "garbage": lambda: b"\x00\xff not json at all",
    "truncated": lambda: b'{"key": {"cpu_model": "AMD',
    "empty": lambda: b"",
    "a list": lambda: b"[1, 2, 3]",
    "no peak": lambda: json.dumps({"key": peak.machine_key()}).encode(),
    "huge": lambda: b" " * (peak.CACHE_MAX_BYTES + 10) + _entry(),
    "negative": lambda: _entry(fp32_gflops_all=-1.0),
    "zero": lambda: _entry(copy_gbs_1=0),
    "nan": lambda: _entry(fp64_gflops_1=float("nan")),
    "infinite": lambda: _entry(triad_gbs_1=float("inf")),
    "string": lambda: _entry(fp32_gflops_1="fast"),
    "bool": lambda: _entry(copy_gbs_all=True),
    "missing": lambda: _entry(triad_gbs_all=None),
    "threads": lambda: _entry(threads_all=0),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_cache_is_remeasured(cache, name):
    path, calls = cache
    path.write_bytes(CORRUPT[name]())
    assert peak.load_or_measure() == fake_peak(1) and calls == [1]
    assert peak.load_or_measure() == fake_peak(1) and calls == [1]   # and the cache is good again


def test_the_valid_entry_of_the_corrupt_cases_is_read(cache):
    path, calls = cache   # the cases above fail for their one change, not for the rest
    path.write_bytes(_entry())
    assert peak.load_or_measure() == fake_peak(50) and calls == []


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MININET_CACHE_DIR", raising=False)
    monkeypatch.delenv("MININET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert peak.cache_path() == str(tmp_path / "xdg" / "mininet" / "peak.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert peak.cache_path() == str(tmp_path / "home" / ".cache" / "mininet" / "peak.json")
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path / "mine"))
    assert peak.cache_path() == str(tmp_path / "mine" / "peak.json")


def test_an_unwritable_cache_is_a_warning_not_a_failure(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("MININET_CACHE_DIR", str(blocker))
    with pytest.warns(UserWarning, match="peak not cached"):
        assert peak.load_or_measure() == fake_peak(1)


# the roofline -----------------------------------------------------------------------------------

PEAK4 = {"fp32_gflops_1": 100.0, "fp32_gflops_all": 400.0, "fp64_gflops_1": 50.0,
         "fp64_gflops_all": 200.0, "triad_gbs_1": 10.0, "triad_gbs_all": 40.0,
         "copy_gbs_1": 8.0, "copy_gbs_all": 30.0, "threads_all": 4}


def test_roofline_compute_bound_on_all_cores():
    # 2 GFLOP over 0.1 GB in 0.1 s: 20 GFLOPS, 20 flop/byte; ridge 400 / 40 = 10
    r = peak.roofline(2e9, 1e8, 0.1, PEAK4)
    assert r == pytest.approx({"gflops": 20.0, "pct_peak": 5.0, "intensity": 20.0, "ridge": 10.0,
                               "bound": "compute", "attainable_gflops": 400.0})


def test_roofline_memory_bound_and_threads_interpolate():
    # 2 threads of 4: compute 100 + 300 / 3 = 200, bandwidth 10 + 30 / 3 = 20, ridge 10
    r = peak.roofline(1e9, 2e9, 0.5, PEAK4, threads=2)
    assert r == pytest.approx({"gflops": 2.0, "pct_peak": 1.0, "intensity": 0.5, "ridge": 10.0,
                               "bound": "memory", "attainable_gflops": 10.0})
    one = peak.roofline(1e9, 2e9, 0.5, PEAK4, threads=1)
    assert one["pct_peak"] == pytest.approx(2.0) and one["attainable_gflops"] == pytest.approx(5.0)
    many = peak.roofline(1e9, 2e9, 0.5, PEAK4, threads=64)   # past the cores: the all-core peak
    assert many == peak.roofline(1e9, 2e9, 0.5, PEAK4)


def test_roofline_float64_uses_the_fp64_peak():
    r = peak.roofline(5e9, 1e8, 1.0, PEAK4, dtype="float64", threads=3)
    # compute 50 + 150 * 2 / 3 = 150, bandwidth 30, ridge 5, intensity 50
    assert r == pytest.approx({"gflops": 5.0, "pct_peak": 100 * 5 / 150, "intensity": 50.0,
                               "ridge": 5.0, "bound": "compute", "attainable_gflops": 150.0})


def test_roofline_at_the_ridge_is_compute_bound():
    assert peak.roofline(10e9, 1e9, 1.0, PEAK4)["bound"] == "compute"


@pytest.mark.parametrize("args, kwargs, words", [
    ((1e9, 1e6, 0.0), {}, ["seconds"]),
    ((1e9, 1e6, -1.0), {}, ["seconds"]),
    ((-5, 1e6, 1.0), {}, ["flops"]),
    ((1e9, 0, 1.0), {}, ["nbytes"]),
    ((float("nan"), 1e6, 1.0), {}, ["flops"]),
    ((1e9, 1e6, 1.0), {"dtype": "int64"}, ["dtype", "int64"]),
    ((1e9, 1e6, 1.0), {"threads": 0}, ["threads"]),
])
def test_roofline_bad_arguments_name_the_problem(args, kwargs, words):
    with pytest.raises(ValueError) as e:
        peak.roofline(*args, PEAK4, **kwargs)
    for w in words:
        assert w in str(e.value)


# the command line -------------------------------------------------------------------------------

def test_cli_json_prints_the_cached_peak(tmp_path):
    cached = fake_peak(3)
    (tmp_path / "peak.json").write_text(json.dumps({"key": peak.machine_key(), "peak": cached}))
    r = cli("bench", "peak", "--json", env={"MININET_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == cached


def test_cli_refresh_measures_and_prints_a_table(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from mininet.cli import app
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path))
    real_measure = peak.measure
    monkeypatch.setattr(peak, "measure", lambda: real_measure(quick=True))
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "peak", "--refresh", "--json"])
    assert r.exit_code == 0, r.output
    measured = json.loads(r.stdout)
    assert measured == json.loads((tmp_path / "peak.json").read_text())["peak"]
    r = runner.invoke(app, ["bench", "peak"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for words in ("fp32 FMA", "fp64 FMA", "copy", "triad", kernels.isa(),
                  f"{measured['fp32_gflops_1']:.1f}", f"{measured['triad_gbs_all']:.1f}",
                  "bytes read + written"):
        assert words in r.stdout, words
