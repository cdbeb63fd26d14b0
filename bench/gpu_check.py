#!/usr/bin/env python3
"""`make gpu-check`: the one command for the day a GPU is lent.

On the GPU machine, from the repository root (the PyCUDA wheels and MNIST carried in .whl/:
`make gpu-carry` here, then the device tool's run with carry [".whl"]):

    python3 bench/gpu_check.py            # or: make gpu-check

installs PyCUDA from the wheels (offline), builds the Cython extension in place, compiles
every cuda_src/*.cu for the GPU, runs the GPU test suite, benchmarks matmul (1024-8192)
against cuBLAS (PyTorch, TF32 off), convolutions and a CNN training epoch on cuda vs cpu,
and a test subset under compute-sanitizer (memcheck, racecheck). Every step runs in its
own process with its own timeout, cut to what is left of a total budget (--budget, 340 s);
a failing step does not stop the others. One JSON report (per step: status, seconds,
output tail, figures; then a summary) is written after every step to --report (default
$OUT/gpu_check.json, else build/gpu_check.json) and its path printed at the end; a log of
every step's full output lies beside it. Exit status 1 if any step failed.

    MININET_CUDA=emulate python bench/gpu_check.py --dry-run

runs the same steps under the CUDA emulator with tiny sizes (MININET_GPU_CHECK_SIZES=small
alone shrinks the sizes), skipping the installs, the build and compute-sanitizer: CI runs
it (tests/test_gpu_check.py), so the script works before a GPU is ever lent.
"""
import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BUDGET_S = 340           # the whole check, under the 6 minutes it is given
MIN_STEP_S = 10          # a step is not started with less than this left
TAIL_CHARS = 2500

# compute-sanitizer's subset: the kernels with shared memory and barriers, float32 (35 tests,
# 2.4 s under the emulator)
SANITIZE_SUBSET = ["tests/test_gpu.py", "tests/test_gpu_fused.py", "-k",
                   "(batched_matmul or reductions or softmax_xent_forward or batchnorm_forward "
                   "or implicit_gemm_conv) and not float64"]
# sizes: "full" on a real GPU, "small" for the dry run under the emulator; cnn is
# (samples, batch, seconds at most)
SIZES = {
    "full": {"matmul": "1024,2048,4096,8192", "repeat": 3,
             "conv": "100,1,28,28,16,5,1,2;100,16,14,14,32,5,1,2;8,64,56,56,64,3,1,1;"
                     "32,128,28,28,128,3,1,1",
             "cnn": (60000, 100, 40), "sanitize": SANITIZE_SUBSET,
             # test_gpu_check.py runs this script's dry run: proven in CI, not needed here
             "tests": ["tests", "--ignore=tests/test_gpu_check.py"]},
    "small": {"matmul": "64,100x33x17", "repeat": 1,
              "conv": "2,1,8,8,4,3,1,1;2,4,6,6,4,3,1,1",
              "cnn": (32, 8, 40),
              "tests": ["tests/test_gpu.py", "-k", "batched_matmul or memory_returns"],
              "sanitize": ["tests/test_gpu.py::test_batched_matmul_and_setitem"]},
}


@dataclass
class Config:
    sizes: str            # a key of SIZES
    dry_run: bool
    budget: float         # seconds for the whole check
    workdir: Path         # the steps' outputs and junit files
    env: dict             # the steps' environment

    def __getitem__(self, key):
        return SIZES[self.sizes][key]


# commands ---------------------------------------------------------------------------------
def cli(*args):
    return [PY, "-m", "mininet.cli", *map(str, args)]


def worker(name, cfg, *args):
    """This script in worker mode: one measurement in its own process, JSON on stdout."""
    flags = ["--sizes", cfg.sizes] + (["--dry-run"] if cfg.dry_run else [])
    return [PY, str(Path(__file__).resolve()), "--worker", name, *flags, *map(str, args)]


def pytest(cfg, junit, selection):
    return [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
            f"--junitxml={cfg.workdir / junit}", *per_test_timeout(), *selection]


def per_test_timeout(seconds=60):
    """With pytest-timeout (on the GPU machine's image): a test stuck in a hung kernel ends
    the run after `seconds`, naming the test, instead of eating the step's whole time."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return []
    return [f"--timeout={seconds}", "--timeout-method=thread"]


def sanitizer(tool):
    def command(cfg):
        return [sanitizer_path(), "--tool", tool, "--error-exitcode", "1",
                *pytest(cfg, f"{tool}.xml", cfg["sanitize"])]
    return command


def sanitizer_path():
    return shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if Path(p).exists()), None)


# figures: (stdout, cfg, step) -> what the report keeps; ValueError fails the step -------
class Failed(ValueError):
    """Figures that fail the step, kept in the report all the same."""
    def __init__(self, message, figures):
        super().__init__(message)
        self.figures = figures


def from_json(out, cfg, step):
    """The JSON a command printed last (lines before it, such as notes, are skipped)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("[", "{")):
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
    raise ValueError("the command printed no JSON")


def matmul_figures(out, cfg, step):
    """`mininet bench matmul --json`, each product checked against numpy's in float64: the
    tests stop at K = 2048, the benchmark reaches 8192 (float32 rounding grows ~ sqrt(K)
    per term, ~1e-3 at 8192; a wrong tile is off by the values themselves, ~sqrt(K))."""
    rows = from_json(out, cfg, step)
    wrong = [f"{r['m']}x{r['k']}x{r['n']}: max error {r['max_abs_err']:.3g}" for r in rows
             if r["impl"] == "mininet" and not r["max_abs_err"] <= max(1e-3, 1e-5 * r["k"])]
    if wrong:
        raise Failed("matmul result wrong at " + ", ".join(wrong), rows)
    return rows


def junit(out, cfg, step):
    """Counts from pytest's junit XML: none may fail, error or be skipped, and some ran."""
    counts = junit_counts(cfg.workdir / f"{step}.xml")
    if counts["tests"] == 0:
        raise Failed("no GPU test ran", counts)
    if counts["skipped"]:
        raise Failed(f"{counts['skipped']} GPU tests skipped: " + "; ".join(counts["why"]), counts)
    if counts["failures"] + counts["errors"]:
        raise Failed(f"{counts['failures']} failed, {counts['errors']} errors", counts)
    return counts


def junit_counts(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    counts["why"] = sorted({(e.get("message") or "")[:200] for e in root.iter("skipped")})
    return counts


# the steps, in the order they run -----------------------------------------------------------
class Step(NamedTuple):
    name: str
    timeout: int                                    # seconds, cut to the budget left
    command: Callable                               # cfg -> argv
    figures: Optional[Callable] = None              # see from_json
    real_only: str = ""                             # why the dry run skips it
    needs: Optional[Callable] = None                # () -> path of a tool the step needs


STEPS = [
    Step("pycuda", 90, lambda c: worker("pycuda", c), from_json,
         real_only="installs PyCUDA from the carried wheels"),
    Step("build", 180, lambda c: [PY, "setup.py", "-q", "build_ext", "--inplace"],
         real_only="builds the Cython extension in place (already built here)"),
    Step("kernels", 150, lambda c: worker("kernels", c), from_json),
    Step("info", 30, lambda c: cli("info", "--json"), from_json),
    Step("tests", 150, lambda c: pytest(c, "tests.xml", c["tests"]), junit),
    # the sanitizers before the benchmarks: only a real GPU can run them, so they are the
    # last steps the budget should cut
    Step("memcheck", 60, sanitizer("memcheck"), junit,
         real_only="compute-sanitizer needs a real GPU", needs=sanitizer_path),
    Step("racecheck", 60, sanitizer("racecheck"), junit,
         real_only="compute-sanitizer needs a real GPU", needs=sanitizer_path),
    Step("matmul", 150, lambda c: cli("bench", "matmul", "--device", "cuda", "--sizes",
                                      c["matmul"], "--repeat", c["repeat"], "--json"),
         matmul_figures),
    Step("torch", 90, lambda c: worker("torch", c), from_json),
    Step("conv", 90, lambda c: cli("bench", "conv", "--device", "cuda", "--no-naive", "--shapes",
                                   c["conv"], "--repeat", c["repeat"], "--json"), from_json),
    Step("conv-cpu", 90, lambda c: cli("bench", "conv", "--device", "cpu", "--no-naive",
                                       "--shapes", c["conv"], "--repeat", c["repeat"], "--json"),
         from_json),
    Step("cnn-cuda", 90, lambda c: worker("cnn", c, "cuda"), from_json),
    Step("cnn-cpu", 90, lambda c: worker("cnn", c, "cpu"), from_json),
]


# running a step -----------------------------------------------------------------------------
def run_command(argv, env, timeout, outfile, errfile):
    """Exit status of argv (None when it ran past timeout: its whole process group is
    killed, so a hung kernel or a sanitizer's child cannot outlive it)."""
    with open(outfile, "w") as out, open(errfile, "w") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def skip_reason(step, cfg, left):
    if cfg.dry_run and step.real_only:
        return f"dry run: {step.real_only}"
    if step.needs is not None and step.needs() is None:
        return "not found on this machine"
    if left < MIN_STEP_S:
        return f"out of time: {max(left, 0):.0f} s of the {cfg.budget:.0f} s budget left"
    return ""


def run_step(step, cfg, deadline):
    left = deadline - time.monotonic()
    reason = skip_reason(step, cfg, left)
    if reason:
        return {"name": step.name, "status": "skipped", "reason": reason, "seconds": 0.0}
    timeout = int(min(step.timeout, left))
    argv = [str(a) for a in step.command(cfg)]
    out, err = cfg.workdir / f"{step.name}.out", cfg.workdir / f"{step.name}.err"
    start = time.monotonic()
    code = run_command(argv, cfg.env, timeout, out, err)
    seconds = time.monotonic() - start
    stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    result = {"name": step.name, "status": "ok", "reason": "", "seconds": round(seconds, 2),
              "timeout": timeout, "command": shlex.join(argv), "returncode": code,
              "output_tail": tail(stdout, stderr), "figures": None}
    return judge(result, step, cfg, stdout)


def judge(result, step, cfg, stdout):
    """ok, or failed with the reason: timed out, a non-zero exit, figures that say so."""
    failures = []
    if result["returncode"] is None:
        failures.append(f"timed out after {result['timeout']} s (killed)")
    elif result["returncode"] != 0:
        failures.append(f"exit status {result['returncode']}")
    if step.figures is not None:
        try:
            result["figures"] = step.figures(stdout, cfg, step.name)
        except Exception as e:   # whatever the output was, the check goes on
            failures.append(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
            result["figures"] = getattr(e, "figures", None)
    if failures:
        result["status"], result["reason"] = "failed", "; ".join(failures)
    return result


def tail(stdout, stderr):
    text = stdout[-TAIL_CHARS:]
    if stderr.strip():
        text += "\n--- stderr ---\n" + stderr[-TAIL_CHARS:]
    return text


# the report ---------------------------------------------------------------------------------
def report_paths(requested):
    """Where the report goes: --report, and a copy under $OUT when that is set."""
    out = os.environ.get("OUT")
    main = Path(requested) if requested else (
        Path(out) / "gpu_check.json" if out else REPO / "build" / "gpu_check.json")
    paths = [main.resolve()]
    if out and Path(out).resolve() not in main.resolve().parents:
        paths.append(Path(out).resolve() / "gpu_check.json")
    return paths


def write_report(report, paths, cfg):
    text = json.dumps(report, indent=1, default=str)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        write_log(report, path.with_suffix(".log"), cfg)


def write_log(report, path, cfg):
    """Every step's whole output, one file (the report keeps only the tails)."""
    with open(path, "w") as log:
        for r in report["steps"]:
            log.write(f"=== {r['name']}: {r['status']} {r.get('command', '')}\n")
            for kind in ("out", "err"):
                f = cfg.workdir / f"{r['name']}.{kind}"
                text = f.read_text(errors="replace") if f.exists() else ""
                if text.strip():
                    log.write(f"--- std{kind}\n{text}\n")


def host_facts():
    """The machine, from quick commands that cannot hang the check."""
    facts = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
             "compute_sanitizer": sanitizer_path(), "mnist": str(find_mnist())}
    for key, argv in {"gpu": ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,"
                              "clocks.max.sm", "--format=csv,noheader"],
                      "nvcc": ["nvcc", "--version"]}.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
            facts[key] = out.strip().splitlines()[-1] if out.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            facts[key] = None
    return facts


# the summary: mininet against the references, from the steps' figures -----------------------
def summarize(steps):
    fig = {s["name"]: s.get("figures") for s in steps}
    try:
        return {"matmul": matmul_summary(fig), "conv": conv_summary(fig), "cnn": cnn_summary(fig)}
    except Exception as e:   # figures of an unexpected shape: the steps keep them all
        return {"error": f"{type(e).__name__}: {e}"}


def _rows(fig, step, key=None):
    value = fig.get(step)
    if key is not None:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, list) else []


def matmul_summary(fig):
    """GFLOPS per size: mininet, cuBLAS (ctypes, pedantic) and PyTorch (TF32 off)."""
    table = {}
    for r in _rows(fig, "matmul") + _rows(fig, "torch", "matmul"):
        row = table.setdefault(f"{r['m']}x{r['k']}x{r['n']}", {})
        row[f"{r['impl']}_gflops"] = round(r["gflops"], 1)
    for row in table.values():
        if row.get("mininet_gflops") and row.get("torch_gflops"):
            row["mininet_vs_torch"] = round(row["mininet_gflops"] / row["torch_gflops"], 3)
    return table


def conv_summary(fig):
    """Milliseconds per shape and mode: mininet and PyTorch on each device."""
    bench = _rows(fig, "conv") + _rows(fig, "conv-cpu")
    # `mininet bench conv` times PyTorch on the CPU whatever --device says
    rows = [(r, "cpu" if r["impl"] == "torch" else r["device"]) for r in bench]
    rows += [(r, r["device"]) for r in _rows(fig, "torch", "conv")]
    table = {}
    for r, device in rows:
        row = table.setdefault(f"{r['shape']} {r['mode']}", {})
        row[f"{r['impl']}_{device}_ms"] = round(r["seconds"] * 1e3, 3)
    return table


def cnn_summary(fig):
    out = {}
    for step in ("cnn-cuda", "cnn-cpu"):
        f = fig.get(step)
        if isinstance(f, dict):
            out[f["device"]] = {k: f[k] if f[k] is None else round(f[k], 4)
                                for k in ("seconds", "samples_per_s", "loss")}
            out[f["device"]].update(samples=f["samples"], partial=f["partial"])
    if "cuda" in out and "cpu" in out:
        out["cuda_speedup"] = round(out["cuda"]["samples_per_s"] / out["cpu"]["samples_per_s"], 2)
    return out


# what travels to the GPU machine: `make gpu-carry` copies ../shared's PyCUDA wheels into
# .whl/ and the MNIST files into .whl/mnist/ (.whl is git-ignored; the device tool's `carry`
# brings it); ../shared itself does not travel
def _first(env_var, candidates, pattern):
    env = os.environ.get(env_var)
    for c in ([Path(env)] if env else []) + candidates:
        if any(c.glob(pattern)):
            return c
    return None


def find_wheels():
    """The folder holding the PyCUDA wheel: $MININET_WHEELS, .whl/, shared/wheels/cp312 or
    ../shared/wheels/cp312."""
    candidates = [REPO / ".whl", REPO / "shared" / "wheels" / "cp312",
                  REPO.parent / "shared" / "wheels" / "cp312"]
    found = _first("MININET_WHEELS", candidates, "pycuda-*.whl")
    if found is None:
        raise SystemExit("no pycuda-*.whl in " + ", ".join(map(str, candidates)) +
                         ": run `make gpu-carry` where ../shared is, and carry .whl")
    return found


def find_mnist():
    """The real MNIST folder some GPU tests read: $MININET_DATA, .whl/mnist, shared/data/mnist
    or ../shared/data/mnist (None: those tests skip, and the tests step fails saying so)."""
    candidates = [REPO / ".whl" / "mnist", REPO / "shared" / "data" / "mnist",
                  REPO.parent / "shared" / "data" / "mnist"]
    return _first("MININET_DATA", candidates, "t10k-images-idx3-ubyte*")


# workers: each runs in its own process and prints JSON -------------------------------------
def work_pycuda(args):
    """PyCUDA from the wheels unless it imports already; then the GPU it sees."""
    try:
        import pycuda  # noqa: F401
        installed_from = "already installed"
    except ImportError:
        wheels = find_wheels()
        subprocess.run([PY, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                        str(wheels), "pycuda"], check=True)
        installed_from = str(wheels)
        importlib.invalidate_caches()
    import pycuda
    import pycuda.driver as drv
    drv.init()
    dev = drv.Device(0)
    return {"pycuda": pycuda.VERSION_TEXT, "from": installed_from, "device": dev.name(),
            "compute_capability": "%d.%d" % dev.compute_capability(),
            "memory_gib": round(dev.total_memory() / 2**30, 1),
            "driver": drv.get_driver_version()}


def work_kernels(args):
    """Every cuda_src/*.cu compiled for this GPU, in parallel, into the cache the later steps
    load from (the emulator's host builds under MININET_CUDA=emulate)."""
    from concurrent.futures import ThreadPoolExecutor
    from mininet.backend import cuda_build
    from mininet.backend.cuda import emulated, load_pycuda
    drv, _ = load_pycuda()
    drv.init()
    dev = drv.Device(0)
    arch = "sm_%d%d" % dev.compute_capability()
    build = cuda_build.compile_host_library if emulated() else \
        (lambda name: cuda_build.compile_cubin(name, arch))

    def timed(name):
        start = time.perf_counter()
        build(name)
        return name, round(time.perf_counter() - start, 2)
    names = [src.stem for src in cuda_build.sources()]
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        seconds = dict(pool.map(timed, names))
    return {"device": dev.name(), "arch": arch, "emulated": emulated(), "compile_seconds": seconds}


def _timer(torch, device, repeat, inner=5):
    """Best seconds per call of fn: synchronised wall time over `inner` calls, after a
    warm-up (the same on either device)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def best(fn):
        fn()
        sync()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            times.append((time.perf_counter() - start) / inner)
        return min(times)
    return best


def work_torch(args):
    """The references: PyTorch matmul (cuBLAS) and conv (cuDNN) with TF32 off, on the GPU
    (on the CPU in a dry run: the emulator is no CUDA device for PyTorch)."""
    import mininet.cli.bench  # noqa: F401  (mininet before torch, as the test suite does)
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("PyTorch sees no CUDA device")
    best = _timer(torch, device, SIZES[args.sizes]["repeat"])
    return {"device": str(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
            "torch": torch.__version__, "tf32": False,
            "matmul": torch_matmul(torch, device, best, args.sizes),
            "conv": torch_conv(torch, device, best, args.sizes)}


def torch_matmul(torch, device, best, sizes):
    from mininet.cli.bench import parse_shapes
    rows = []
    for m, k, n in parse_shapes(SIZES[sizes]["matmul"]):
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(m, k, device=device, generator=gen)
        b = torch.randn(k, n, device=device, generator=gen)
        t = best(lambda: a @ b)
        rows.append({"impl": "torch", "m": m, "k": k, "n": n, "seconds": t,
                     "gflops": 2.0 * m * n * k / t / 1e9})
    return rows


def torch_conv(torch, device, best, sizes):
    from mininet.cli.bench import parse_conv_shapes
    F = torch.nn.functional
    rows = []
    for shape in parse_conv_shapes(SIZES[sizes]["conv"]):
        n, c, h, w, k, ks, stride, pad = shape
        x = torch.randn(n, c, h, w, device=device, requires_grad=True)
        wt = torch.randn(k, c, ks, ks, device=device, requires_grad=True)
        b = torch.randn(k, device=device, requires_grad=True)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, wt, b, stride, pad)

        def fwd_bwd():
            x.grad = wt.grad = b.grad = None
            y = F.conv2d(x, wt, b, stride, pad)
            y.backward(torch.ones_like(y))
        for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            rows.append({"impl": "torch", "shape": ",".join(map(str, shape)), "mode": mode,
                         "device": device.type, "seconds": best(fn)})
    return rows


class _Enough(Exception):
    pass


def work_cnn(args):
    """Samples per second of one epoch of the MNIST CNN (Adam) on random data, after two
    warm-up batches (the kernels loaded, the memory pool filled); an epoch slower than the
    cap stops there and reports what it did ("partial")."""
    import numpy as np
    import mininet
    from mininet.data import DataLoader, TensorDataset
    from mininet.models import build_model
    from mininet.models.train import make_optimizer, train_epoch
    device = args.device
    samples, batch, cap = SIZES[args.sizes]["cnn"]
    rng = np.random.default_rng(0)
    x, y = rng.random((samples, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, samples)
    mininet.manual_seed(0)
    model = build_model("cnn")
    model.to(device)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    train_epoch(model, DataLoader(TensorDataset(x[:2 * batch], y[:2 * batch]), batch,
                                  device=device), opt)
    loader = DataLoader(TensorDataset(x, y), batch, shuffle=True, seed=0, device=device)
    seen, start = [0], time.perf_counter()

    def count(n):
        seen[0] += n
        if time.perf_counter() - start > cap:
            raise _Enough
    try:
        loss, accuracy = train_epoch(model, loader, opt, on_batch=count)
    except _Enough:
        loss = accuracy = None
    seconds = time.perf_counter() - start
    return {"device": device, "samples": seen[0], "batch": batch, "seconds": seconds,
            "samples_per_s": seen[0] / seconds, "partial": seen[0] < samples, "loss": loss,
            "accuracy": accuracy, "threads": mininet.get_num_threads()}


WORKERS = {"pycuda": work_pycuda, "kernels": work_kernels, "torch": work_torch, "cnn": work_cnn}


# main ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="under the CUDA emulator, tiny sizes, no installs, build or sanitizer")
    p.add_argument("--sizes", choices=sorted(SIZES),
                   help="full or small (default: $MININET_GPU_CHECK_SIZES, small for --dry-run, "
                        "else full)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    p.add_argument("--report", help="the JSON report's path (default $OUT/gpu_check.json, "
                                    "else build/gpu_check.json)")
    p.add_argument("--only", help="comma-separated step names to run (the others are skipped)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("device", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = args.sizes or os.environ.get("MININET_GPU_CHECK_SIZES") or (
        "small" if args.dry_run else "full")
    if args.sizes not in SIZES:
        p.error(f"MININET_GPU_CHECK_SIZES={args.sizes!r}: expected one of {', '.join(SIZES)}")
    return args


def step_env(dry_run):
    env = dict(os.environ, PYTHONUNBUFFERED="1", MININET_OFFLINE="1")
    mnist = find_mnist()
    if mnist is not None:
        env["MININET_DATA"] = str(mnist)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if dry_run:   # the emulator, each kernel run once (the emulated suite checks them)
        env.setdefault("MININET_CUDA", "emulate")
        env.setdefault("MININET_CUDA_EMU", "fast")
    return env


def run_all(args):
    import tempfile
    paths = report_paths(args.report)
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check."))
    cfg = Config(args.sizes, args.dry_run, args.budget, workdir, step_env(args.dry_run))
    only = set(args.only.split(",")) if args.only else None
    start, deadline = time.monotonic(), time.monotonic() + args.budget
    report = {"version": 1, "sizes": args.sizes, "dry_run": args.dry_run,
              "budget_s": args.budget, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": host_facts(), "steps": []}
    for step in STEPS:
        if only is not None and step.name not in only:
            result = {"name": step.name, "status": "skipped", "reason": "not in --only",
                      "seconds": 0.0}
        else:
            result = run_step(step, cfg, deadline)
        report["steps"].append(result)
        print_step(result)
        finish(report, start)
        write_report(report, paths, cfg)
    shutil.rmtree(workdir, ignore_errors=True)
    print_summary(report, paths)
    return 0 if report["ok"] else 1


def finish(report, start):
    report["seconds"] = round(time.monotonic() - start, 1)
    report["ok"] = not any(s["status"] == "failed" for s in report["steps"])
    report["summary"] = summarize(report["steps"])


def print_step(r):
    line = f"[{r['status']:>7}] {r['name']:<10} {r['seconds']:7.1f} s"
    print(line + (f"  {r['reason']}" if r["reason"] else ""), flush=True)
    if r["status"] == "failed":
        print("    " + "\n    ".join(r["output_tail"].splitlines()[-12:]), flush=True)


def print_summary(report, paths):
    print(json.dumps(report["summary"], indent=1))
    counts = {k: sum(s["status"] == k for s in report["steps"]) for k in ("ok", "failed", "skipped")}
    print(f"gpu-check: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {report['seconds']} s")
    for path in paths:
        print(f"report: {path}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(REPO))
        print(json.dumps(WORKERS[args.worker](args), indent=1))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
