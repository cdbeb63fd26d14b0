"""Conventions every command follows: -h, `python -m mininet`, flags shown as flags, shell
completion, no-argument help; and the kernel benchmarks' output (bench matmul / ewise /
conv): tables that fit 80 columns without cutting a shape, "1 thread", the torch column
without torch, % peak from a cached peak, the noise mark, progress only on a terminal,
--json rows, --save and --save -."""
import json
import os
import pty
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import CLI_ENV, assert_one_line_error, run_python

TORCH_MISSING = "torch not installed (pip install 'mininet-dl[torch]')"


def mininet(*args, env=None, timeout=120):
    """`python -m mininet args...` as the tests' CLI runs (one thread, no download), with
    a cache folder of its own (no peak cached) and 80 columns unless env says otherwise."""
    e = {**os.environ, **CLI_ENV, "COLUMNS": "80", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mininet", *map(str, args)],
                          capture_output=True, text=True, env=e, timeout=timeout)


@pytest.fixture(autouse=True)
def no_peak_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MININET_CACHE_DIR", str(tmp_path / "cache"))


def in_process(code, tmp_path, env=None):
    """Run `code` (which ends by calling the CLI's main with sys.argv set) in a fresh
    interpreter; what it printed."""
    e = {**os.environ, **CLI_ENV, "COLUMNS": "80", **(env or {})}
    return run_python(textwrap.dedent(code), env=e)


# conventions ------------------------------------------------------------------------------
HELP_ALL = """
import contextlib, io, json, sys
import typer
from mininet.cli import app, main

def walk(cmd, path):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from walk(sub, path + [name])

out = {}
for path in walk(typer.main.get_command(app), []):
    for flag in ("-h", "--help"):
        sys.argv = ["mininet", *path, flag]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code
        out[" ".join(path + [flag])] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_dash_h_everywhere_and_flags_read_as_flags(tmp_path):
    r = in_process(HELP_ALL, tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    helps = json.loads(r.stdout)
    assert {"bench matmul -h", "bench conv -h", "bench ewise -h", "info -h", "-h"} <= set(helps)
    for cmd, (code, text) in helps.items():
        assert code == 0 and "Usage:" in text, (cmd, code, text[:300])
        assert "<bool>" not in text, (cmd, text)
    for cmd in ("bench matmul", "bench", "info"):
        assert helps[f"{cmd} -h"] == helps[f"{cmd} --help"]
    matmul = helps["bench matmul -h"][1]
    for option in ("--json", "--save", "--min-time", "--repeat", "--peak", "--quiet"):
        assert option in matmul, option
    assert "--install-completion" in helps["-h"][1]


def test_python_dash_m_mininet_and_no_arguments():
    r = mininet("--version")
    assert r.returncode == 0 and r.stdout.startswith("mininet ")
    for args in ([], ["bench"]):
        r = mininet(*args)
        assert r.returncode == 0 and "Usage:" in r.stdout and r.stderr == "", (args, r.stderr)
    assert "matmul" in mininet("bench").stdout
    assert_one_line_error(mininet("bench", "matmul", "--bogus"), "--bogus")


def test_shell_completion_installs_and_completes(tmp_path):
    code = "import sys; sys.argv = ['mininet', *sys.argv[1:]]; from mininet.cli import main; main()"
    # typer detects the parent shell (sh under make): the test hook makes --install-completion
    # take the shell's name instead, so the test is the same under any parent
    env = {**os.environ, "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    r = subprocess.run([sys.executable, "-c", code, "--install-completion", "bash"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "mininet.sh"
    assert str(script) in (tmp_path / ".bashrc").read_text()
    assert "_MININET_COMPLETE" in script.read_text()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**env, "_MININET_COMPLETE": "complete_bash",
                            "COMP_WORDS": "mininet bench ma", "COMP_CWORD": "2"})
    assert r.returncode == 0 and r.stdout.split() == ["matmul"], (r.stdout, r.stderr)


# the benchmarks' output -------------------------------------------------------------------
def _lines_fit(text, width=80):
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, long


def test_matmul_table_fits_80_columns_and_keeps_shapes_whole():
    sizes = ["8x8x8", "3x1000x2", "1000x2x3"]
    r = mininet("bench", "matmul", "--sizes", "8,3x1000x2,1000x2x3", "--repeat", "2")
    assert r.returncode == 0 and r.stderr == "", r.stderr        # no progress bar in a pipe
    _lines_fit(r.stdout)
    for s in sizes:
        assert s in r.stdout, s
    assert "1 thread" in r.stdout and "1 threads" not in r.stdout
    assert "no peak cached" in r.stdout and "vs numpy" in r.stdout
    assert "nan" not in r.stdout


def test_conv_table_fits_80_columns_and_keeps_shapes_whole():
    shapes = ["2,1,8,8,2,3,1,1", "1,4,10,10,8,5,1,2"]
    r = mininet("bench", "conv", "--shapes", ";".join(shapes), "--repeat", "2")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    _lines_fit(r.stdout)
    for s in shapes:
        assert s in r.stdout, s
    for word in ("mininet", "naive", "fwd+bwd", "ms"):
        assert word in r.stdout
    assert "1 thread" in r.stdout and "1 threads" not in r.stdout


def test_conv_without_torch_says_so(tmp_path):
    r = in_process("""
        import sys
        sys.modules["torch"] = None          # `import torch` raises ImportError
        sys.argv = ["mininet", "bench", "conv", "--shapes", "2,1,6,6,2,3,1,1", "--repeat", "2"]
        from mininet.cli import main
        main()
        """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert TORCH_MISSING in " ".join(r.stdout.split())
    assert "vs naive" in r.stdout and "nan" not in r.stdout
    _lines_fit(r.stdout)


FAKE_PEAK = """
import sys
import mininet.benchmark.peak as peak
FAKE = {"fp32_gflops_1": 100.0, "fp32_gflops_all": 180.0, "fp64_gflops_1": 50.0,
        "fp64_gflops_all": 90.0, "copy_gbs_1": 15.0, "copy_gbs_all": 20.0,
        "triad_gbs_1": 20.0, "triad_gbs_all": 25.0, "threads_all": 2, "cpu_model": "fake",
        "cores": 2, "isa": "fake", "measured_at": "2026-01-01T00:00:00+00:00"}
peak.read_cache = lambda path=None: FAKE
peak.load_or_measure = lambda refresh=False: 1 / 0     # never measured without --peak
sys.argv = ["mininet", "bench", "matmul", "--sizes", "64,3x5x7", "--repeat", "2",
            "--save", sys.argv[1]]
from mininet.cli import main
main()
"""


def test_percent_of_peak_from_a_cached_peak(tmp_path):
    path = tmp_path / "run.json"
    e = {**os.environ, **CLI_ENV, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-c", FAKE_PEAK, str(path)], capture_output=True,
                       text=True, env=e, timeout=120)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("64x64x64"))
    assert re.search(r" \d+%$", row), row                 # its % peak cell
    assert "flop/B" in r.stdout and "compute" in r.stdout and "memory" in r.stdout
    _lines_fit(r.stdout)
    from mininet.benchmark.runs import load_run
    cases = {c["name"]: c for c in load_run(path)["cases"]}
    big = cases["matmul 64x64x64 float32 mininet"]
    assert big["params"]["flop_per_byte"] == pytest.approx(2 * 64 ** 3 / (4 * 3 * 64 ** 2))
    assert big["params"]["bound"] == "compute"           # 10.7 flop/B > ridge 100/20 = 5
    gflops = big["flops"] / big["median"] / 1e9
    assert big["params"]["pct_peak"] == pytest.approx(100 * gflops / 100.0)   # 1 thread
    small = cases["matmul 3x5x7 float32 numpy"]["params"]
    assert small["flop_per_byte"] == pytest.approx(210 / (4 * 71)) and small["bound"] == "memory"


def test_json_rows_keep_their_keys():
    r = mininet("bench", "matmul", "--sizes", "16x8x4", "--repeat", "3", "--json")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = json.loads(r.stdout)
    assert [row["impl"] for row in rows] == ["mininet", "numpy", "simple-tiled"]
    for row in rows:
        assert (row["m"], row["k"], row["n"], row["dtype"]) == (16, 8, 4, "float32")
        assert row["threads"] == 1 and row["n_samples"] == 3
        assert row["best_seconds"] <= row["q1"] <= row["seconds"] <= row["q3"]
        assert row["gflops"] == pytest.approx(2 * 16 * 8 * 4 / row["seconds"] / 1e9)
    r = mininet("bench", "ewise", "--repeat", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert {row["case"] for row in json.loads(r.stdout)} == {"add 4194304", "add 4096x1024 + 1024"}


def test_save_to_a_file_and_to_stdout(tmp_path):
    path = tmp_path / "runs" / "ewise.json"
    r = mininet("bench", "ewise", "--repeat", "2", "--save", path)
    assert r.returncode == 0, r.stderr
    assert "GB/s" in r.stdout and f"saved 4 cases to {path}" in r.stderr
    from mininet.benchmark.runs import load_run
    run = load_run(path)
    assert run["benchmark"] == "ewise" and run["command"][:2] == ["mininet", "bench"]
    assert all(len(c["samples"]) == 2 and c["threads"] == 1 for c in run["cases"])
    r = mininet("bench", "matmul", "--sizes", "8", "--repeat", "2", "--save", "-")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)                  # the document and nothing else
    assert doc["schema"] == "mininet-bench/1" and len(doc["cases"]) == 3


@pytest.mark.parametrize("args, words", [
    (["--save", "-", "--json"], ["--save -", "--json"]),
    (["--save", "{tmp}"], ["--save", "directory"]),
    (["--save", "{tmp}/file/run.json"], ["--save", "not a directory"]),
    (["--min-time", "0"], ["--min-time"]),
    (["--repeat", "0"], ["--repeat"]),
])
def test_bad_bench_options_are_one_line_errors(tmp_path, args, words):
    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for bench in (["matmul", "--sizes", "8"], ["conv", "--shapes", "1,1,4,4,1,3,1,1"]):
        assert_one_line_error(mininet("bench", *bench, *args), *words)


def _on_a_terminal(*args):
    """stderr of `python -m mininet args` written to a pseudo-terminal."""
    master, slave = pty.openpty()
    e = {**os.environ, **CLI_ENV, "COLUMNS": "80"}
    p = subprocess.Popen([sys.executable, "-m", "mininet", *args], stdout=subprocess.PIPE,
                         stderr=slave, env=e)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.communicate(timeout=120)
    os.close(master)
    assert p.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only():
    err = _on_a_terminal("bench", "ewise", "--repeat", "2")
    # the bar redraws a few times a second: which case labels a frame shows depends on the
    # machine's speed; the last frame holds the count and one of the cases
    assert "ETA" in err and "4/4" in err and "ewise add" in err
    assert "ETA" not in _on_a_terminal("bench", "ewise", "--repeat", "2", "--quiet")
    assert "ETA" not in _on_a_terminal("bench", "ewise", "--repeat", "2", "--json")


# the noise mark ---------------------------------------------------------------------------
def _case(impl, samples):
    from mininet.benchmark.harness import Case
    return Case(name=f"matmul 8x8x8 float32 {impl}", impl=impl,
                params={"m": 8, "k": 8, "n": 8, "dtype": "float32", "device": "cpu"},
                threads=1, samples=samples, flops=1024.0, nbytes=768.0)


@pytest.mark.parametrize("numpy_samples, noisy", [([1.0, 1.1, 1.2, 1.3], True),
                                                  ([2.0, 2.1, 2.2, 2.3], False)])
def test_ratio_within_the_noise_is_marked(numpy_samples, noisy):
    from mininet.benchmark.harness import NOISE_NOTE
    from mininet.cli import bench_cmds
    cases = [_case("mininet", [1.05, 1.15, 1.25, 1.35]), _case("numpy", numpy_samples)]
    with bench_cmds.console.capture() as cap:
        bench_cmds._rate_table("matmul", cases, lambda c: "8x8x8", "shape",
                               ("GFLOPS", lambda c: c.flops), ("numpy",), None, "cpu")
    out = " ".join(cap.get().split())
    ratio = f"{sum(numpy_samples[1:3]) / 2 / 1.2:.2f}x"
    assert (ratio + "~" in out) == noisy and (ratio in out)
    assert (" ".join(NOISE_NOTE.split()) in out) == noisy
