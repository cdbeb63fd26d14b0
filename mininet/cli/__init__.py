"""The `mininet` command line (Typer + rich): info, bench, train."""
import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..models.mlp import MODELS

app = typer.Typer(help="mininet: a small, fast deep-learning library.", no_args_is_help=True,
                  add_completion=False)
bench_app = typer.Typer(help="Benchmarks, timed against a reference in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool):
    if value:
        console.print(f"mininet {__version__}")
        raise typer.Exit()


@app.callback()
def root(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """mininet command line."""
    from mininet_ext import _omp
    if _omp.ENV_ERROR and ctx.invoked_subcommand != "info":
        _fail(_omp.ENV_ERROR)


@app.command()
def info(json_out: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Version, build flags, OpenMP and threads, CPU SIMD features, CUDA availability."""
    from .info import gather
    data = gather()
    if json_out:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="mininet info", show_header=False)
    for key, value in data.items():
        if isinstance(value, (list, dict)):
            value = ", ".join(value) if isinstance(value, list) else ", ".join(
                f"{k}={v}" for k, v in value.items())
        elif key == "openmp":
            value = "on" if value else "off (serial build: the compiler had no OpenMP)"
        table.add_row(key, escape(str(value)))
    console.print(table)


class _ExitLine:
    """The line main() prints for a Ctrl-C that no command explained (typer turns
    KeyboardInterrupt into a silent exit 130 before main sees it): `on_interrupt`, which
    `train` sets, unless a line was printed already (`printed`)."""

    def __init__(self):
        self.printed = False
        self.on_interrupt = "interrupted"


_exit_line = _ExitLine()


def _error(message):
    """One line on stderr (never stdout, so --json output stays clean)."""
    _exit_line.printed = True
    err_console.print(f"[red]error:[/red] {escape(str(message))}")


def _fail(message, code=2):
    _error(message)
    raise typer.Exit(code)


def _check_device(device):
    """--device: cpu, or cuda when PyCUDA and a GPU are there."""
    if device == "cpu":
        return
    if device != "cuda":
        _fail(f"--device must be cpu or cuda, got {device!r}")
    from ..backend import cuda_status
    ok, why = cuda_status()
    if not ok:
        _fail(f"--device cuda: CUDA is unavailable ({why}); use --device cpu")


# square sizes, then the shapes layers produce: an MLP step (100x784x100, its output
# layer 100x100x10), a tall product with tiny K (a conv's im2col, 100352x9x32), a conv
# layer's GEMM (6272x288x64) and evaluating 100k samples (100000x784x100)
DEFAULT_SIZES = "64,256,512,1024,2048,100x784x100,100x100x10,100352x9x32,6272x288x64,100000x784x100"
THREADS_HELP = "Threads (>= 1; default: MININET_NUM_THREADS, else all cores)."


@bench_app.command("matmul")
def bench_matmul(
    sizes: str = typer.Option(DEFAULT_SIZES, help="N for N^3, or MxKxN, comma separated."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    repeat: int = typer.Option(5, min=1, help="Timed repeats; the best is reported."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
):
    """GFLOPS of mininet's matmul vs numpy's BLAS and a simple tiled kernel."""
    from .bench import bench_matmul as run, parse_shapes
    if dtype not in ("float32", "float64"):
        _fail(f"--dtype must be float32 or float64, got {dtype!r}")
    try:
        shapes = parse_shapes(sizes)
    except ValueError as e:
        _fail(f"--sizes: {e}")
    _check_device(device)
    if device != "cpu":
        from .gpu import bench_matmul_gpu
        rows = bench_matmul_gpu(shapes, dtype, repeat)
    else:
        rows = run(shapes, dtype=dtype, threads=threads, repeat=repeat)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    _ratio_table(rows, "matmul", ("m", "k", "n"), "gflops", "GFLOPS")


def _ratio_table(rows, title, keys, metric, unit):
    """One row per case: each impl's metric, then mininet's ratio to the reference."""
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    ref = impls[1]
    table = Table(title=f"{title} ({unit}, {rows[0]['threads']} threads)")
    table.add_column("case")
    for impl in impls:
        table.add_column(impl, justify="right")
    table.add_column(f"mininet / {ref}", justify="right")
    cases = list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))
    for case in cases:
        by_impl = {r["impl"]: r[metric] for r in rows if tuple(r[k] for k in keys) == case}
        ratio = by_impl["mininet"] / by_impl[ref]
        color = "green" if ratio >= 0.8 else "yellow" if ratio >= 0.5 else "red"
        table.add_row("x".join(map(str, case)), *[f"{by_impl.get(i, float('nan')):.1f}" for i in impls],
                      f"[{color}]{ratio:.2f}[/{color}]")
    console.print(table)


@bench_app.command("ewise")
def bench_ewise(
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    repeat: int = typer.Option(5, min=1),
    json_out: bool = typer.Option(False, "--json"),
):
    """Elementwise add throughput (contiguous and broadcast) vs numpy."""
    from .bench import bench_ewise as run
    rows = run(threads=threads, repeat=repeat)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    _ratio_table(rows, "elementwise", ("case",), "gbytes_per_s", "GB/s")


@bench_app.command("conv")
def bench_conv(
    shapes: str = typer.Option(
        "100,1,28,28,16,5,1,2;100,16,14,14,32,5,1,2;8,64,56,56,64,3,1,1",
        help="N,C,H,W,K,k,stride,pad; several separated by ';'. Defaults: the MNIST CNN's two "
             "conv layers at batch 100 and a ResNet-style 64-channel 3x3 layer at 56x56."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    repeat: int = typer.Option(5, min=1, help="Timed repeats; the best is reported."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    naive: bool = typer.Option(True, help="Also time the naive direct convolution (numpy)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
):
    """Convolution forward and forward+backward: mininet vs a naive direct conv and PyTorch."""
    from .bench import bench_conv as run, parse_conv_shapes
    try:
        parsed = parse_conv_shapes(shapes)
    except ValueError as e:
        _fail(f"--shapes: {e}")
    _check_device(device)
    rows = run(parsed, threads=threads, repeat=repeat, device=device, naive=naive)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    table = Table(title=f"conv on {device} (ms and GFLOPS, {rows[0]['threads']} threads)")
    for col in ("N,C,H,W,K,k,s,p", "mode", *impls, *(f"mininet / {i} time" for i in impls[1:])):
        table.add_column(col, justify="right")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for mode in ("fwd", "fwd+bwd"):
            t = {r["impl"]: r for r in rows if r["shape"] == shape and r["mode"] == mode}
            cells = [f"{t[i]['seconds'] * 1e3:.2f} ({t[i]['gflops']:.0f})" for i in impls]
            ratios = [t["mininet"]["seconds"] / t[i]["seconds"] for i in impls[1:]]
            table.add_row(shape, mode, *cells, *(f"{r:.2f}" for r in ratios))
    console.print(table)


@bench_app.command("train")
def bench_train(
    models: str = typer.Option("mlp,resnet,cnn",
                               help="Comma-separated: mlp, resnet, cnn, softmax, mlp-large (784-1024-1024-10, batch 256), cifar-cnn (3 conv-BN-ReLU-pool stages on 3x32x32, 10k samples), resnet9 (the course's ResNet9 on 3x32x32, batch 128, 5,120 samples), lstm-lm (20 steps of a 2-layer LSTM language model: hidden 256, seq 35, batch 20, vocab 10,000; samples are tokens)."),
    samples: int = typer.Option(60000, min=100, help="MNIST-shaped random samples per epoch."),
    batch_size: int = typer.Option(100, min=1),
    threads: int = typer.Option(2, min=1),
    repeat: int = typer.Option(1, min=1, help="Epochs timed; the best is reported."),
    ranks: Optional[str] = typer.Option(None, help="Data-parallel scaling instead, e.g. 1,2: each count of MPI ranks shares --threads cores (threads // ranks each) at the same global batch; reports samples/s and communication time per step (mininet only; pip install 'mininet\\[mpi]')."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Seconds per training epoch (Adam, batch 100) of mininet vs PyTorch CPU, same run."""
    from .bench import bench_train as run
    from .bench import TRAIN_MODELS
    names = tuple(m.strip() for m in models.split(","))
    unknown = [m for m in names if m not in TRAIN_MODELS]
    if unknown:
        _fail(f"--models: unknown model {unknown[0]!r}; choose from {', '.join(TRAIN_MODELS)}")
    if ranks is not None:
        return _bench_scaling(names, ranks, samples, batch_size, threads, repeat, json_out)
    rows = run(names, samples, batch_size, threads, repeat)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"one training epoch, Adam, {threads} threads")
    for col in ("model", "samples", "batch", "mininet s", "torch s", "mininet / torch time"):
        table.add_column(col, justify="right")
    for name in dict.fromkeys(r["model"] for r in rows):
        t = {r["impl"]: r["seconds"] for r in rows if r["model"] == name}
        first = next(r for r in rows if r["model"] == name)
        ratio = t["mininet"] / t["torch"] if "torch" in t else float("nan")
        color = "green" if ratio <= 1.0 else "red"
        table.add_row(name, str(first["samples"]), str(first["batch_size"]), f"{t['mininet']:.2f}",
                      f"{t.get('torch', float('nan')):.2f}", f"[{color}]{ratio:.2f}[/{color}]")
    console.print(table)


def _bench_scaling(names, ranks, samples, batch_size, threads, repeat, json_out):
    from .bench_dist import bench_scaling
    from .launch import LaunchError
    try:
        counts = [int(r) for r in ranks.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        _fail(f"--ranks: expected positive integers separated by commas, got {ranks!r}")
    if "lstm-lm" in names:
        _fail("--ranks: lstm-lm has no data-parallel case; choose image models")
    try:
        rows = bench_scaling(names, counts, samples, batch_size, threads, repeat)
    except (LaunchError, RuntimeError) as e:
        _fail(str(e), code=1)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"data-parallel training, one epoch, Adam, {threads} cores in all")
    # wait: the allreduce time a step still waits after backward (not hidden by overlap);
    # alone: one allreduce of all gradients, timed by itself
    for col in ("model", "ranks x thr", "batch", "samples/s", "vs 1 rank", "wait ms",
                "alone ms", "grad MB"):
        table.add_column(col, justify="right")
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["ranks"] == 1), None)
        table.add_row(r["model"], f"{r['ranks']} x {r['threads_per_rank']}", str(r["global_batch"]),
                      f"{r['samples_per_s']:,.0f}",
                      f"{r['samples_per_s'] / base['samples_per_s']:.2f}" if base else "-",
                      f"{r['wait_ms_per_step']:.2f}", f"{r['allreduce_ms']:.2f}", f"{r['grad_mb']:.2f}")
    console.print(table)


@app.command()
def train(
    dataset: str = typer.Argument("mnist", help="mnist, fashion-mnist (the same format; Debian's dataset-fashion-mnist files are found), cifar10 (ResNet9) or ptb (a word-level language model; any train/valid/test text corpus with --data-dir)."),
    model: Optional[str] = typer.Option(None, help="softmax, mlp (default), resnet or cnn; for cifar10: resnet9; for ptb: rnn, lstm (default) or transformer."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs (default: 10 for cnn, 20 for the others)."),
    batch_size: int = typer.Option(100, min=1, help="Batch size."),
    lr: float = typer.Option(2e-3, help="Learning rate (> 0)."),
    optimizer: str = typer.Option("adam", help="sgd, momentum, adam, adamw, adagrad or rmsprop."),
    weight_decay: float = typer.Option(1e-4, help="Weight decay (>= 0)."),
    schedule: str = typer.Option("cosine", help="Learning-rate schedule per epoch: cosine, step or none."),
    seed: int = typer.Option(0, help="Random seed (init, dropout, shuffling)."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the four IDX files (else $MININET_DATA for mnist, $MININET_FASHION_DATA or /usr/share/datasets/fashion-mnist for fashion-mnist, else ~/.cache/mininet/<dataset>)."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    save: Optional[str] = typer.Option(None, help="Write model + optimizer state here after each epoch (atomically)."),
    resume: Optional[str] = typer.Option(None, help="Continue from a checkpoint written by --save."),
    export_weights: Optional[str] = typer.Option(None, help="After training, write the model's weights here as a safetensors file (mininet.load_file, safetensors.torch.load_file read it)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-epoch metrics as JSON."),
    seq_len: int = typer.Option(35, min=1, help="ptb: tokens per truncated-BPTT window."),
    clip: Optional[float] = typer.Option(0.25, help="ptb: clip the gradient norm to this (0: off)."),
    embedding_size: int = typer.Option(200, min=1, help="ptb: embedding width."),
    hidden_size: int = typer.Option(200, min=1, help="ptb: hidden units per layer."),
    layers: int = typer.Option(2, min=1, help="ptb: recurrent layers."),
    max_lines: Optional[int] = typer.Option(None, min=1, help="ptb: read only the first lines of each file."),
    ranks: Optional[int] = typer.Option(None, min=1, help="Data-parallel over this many MPI ranks on this machine: runs mpirun itself (pip install 'mininet\\[mpi]'). The global batch is --batch-size x ranks."),
    distributed_run: bool = typer.Option(False, "--distributed", help="This process is one rank of `mpirun -n N mininet train ... --distributed` (data-parallel; rank 0 prints and saves)."),
):
    """Train a model on MNIST, Fashion-MNIST (test accuracy) or PTB (perplexity)."""
    _exit_line.on_interrupt = ("interrupted before training started; nothing was written; run "
                               "the same command to start again")
    import math

    from ..data import DataError
    from ..models.train import OPTIMIZERS, SCHEDULES, CheckpointError
    from ..models.train import TrainingDiverged
    from .train import Interrupted, NothingToDo, check_save_path, run
    if dataset not in ("mnist", "fashion-mnist", "cifar10", "ptb"):
        _fail(f"unknown dataset {dataset!r}: choose mnist, fashion-mnist, cifar10 or ptb")
    lm = dataset == "ptb"
    model = model or {"ptb": "lstm", "cifar10": "resnet9"}.get(dataset, "mlp")
    choices = {"ptb": ("rnn", "lstm", "transformer"), "cifar10": ("resnet9",)}.get(dataset,
                                                                                   tuple(MODELS))
    if model not in choices:
        _fail(f"--model must be one of {', '.join(choices)} for {dataset}, got {model!r}")
    if clip is not None and not (math.isfinite(clip) and clip >= 0):
        _fail(f"--clip must be >= 0, got {clip}")
    if not (math.isfinite(lr) and lr > 0):
        _fail(f"--lr must be a positive number, got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail(f"--weight-decay must be >= 0, got {weight_decay}")
    if optimizer not in OPTIMIZERS:
        _fail(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        _fail(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    _check_device(device)
    if save:
        try:
            check_save_path(save)
        except OSError as e:
            _fail(f"--save {save}: {e}")
    if export_weights:
        if lm:
            _fail("--export-weights covers mnist, fashion-mnist and cifar10 so far, not ptb")
        try:
            check_save_path(export_weights)
        except OSError as e:
            _fail(f"--export-weights {export_weights}: {e}")
    epochs = epochs or (10 if model == "cnn" else 20)
    if (ranks or 1) > 1 or distributed_run:
        if lm:
            _fail("--ranks/--distributed: data-parallel training covers mnist, fashion-mnist "
                  "and cifar10 so far, not ptb")
        if device != "cpu":
            _fail("--ranks/--distributed: data-parallel training runs on the CPU only so far")
    if (ranks or 1) > 1 and not distributed_run:
        _launch(ranks, save, resume)
    from ..distributed import DistributedError
    try:
        if lm:
            from .train_lm import run_lm
            run_lm(model, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir,
                   threads, save, resume, json_out, seq_len, clip, embedding_size, hidden_size,
                   layers, max_lines, device=device)
        else:
            run(model, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads,
                save, resume, json_out, device, schedule, dataset=dataset,
                distributed_run=distributed_run, export_weights=export_weights)
    except NothingToDo as e:
        err_console.print(str(e))
    except Interrupted as e:
        _interrupted(str(e))
    except (TrainingDiverged, DistributedError) as e:
        _fail_rank(str(e), code=1)
    except CheckpointError as e:
        _fail_rank(f"--resume {e}")
    except (DataError, ValueError, KeyError, OSError) as e:   # DataError: the loaders' errors
        _fail_rank(str(e))
    _finish_ranks()


def _launch(ranks, save, resume):
    """Run this command as `ranks` MPI ranks (they print) and exit as they did. After a Ctrl-C
    rank 0 says what was kept, unless the job had to be ended before the ranks could take
    it, or they did not stop in time: then this process says it."""
    from .launch import LaunchError, relaunch
    from .train import before_training
    try:
        ended = relaunch(ranks)
    except (LaunchError, OSError) as e:
        _fail(str(e))
    if ended.unanswered == "early":
        _error(str(before_training(save, resume)))
    elif ended.unanswered:
        why = {"again": "interrupted again: the ranks were ended at once",
               "overdue": "interrupted, and the ranks did not stop within MININET_DIST_TIMEOUT "
                          "+ 30 s: they were ended"}[ended.unanswered]
        _error(f"{why}; {_kept(save, resume)}")
    elif ended.code == 130:
        _exit_line.printed = True   # rank 0 said what was kept
    raise typer.Exit(ended.code)


def _kept(save, resume):
    """What --save (or --resume) holds after the launcher ended the ranks: read from the file."""
    from ..models.train import checkpoint_epoch
    from .train import Kept
    kept = Kept(save, resume, (checkpoint_epoch(resume) if resume else None) or 0)
    kept.epoch = checkpoint_epoch(save) if save else None
    return kept.where()


def _finish_ranks():
    """A rank of a data-parallel run meets the others before MPI_Finalize, within
    MININET_DIST_TIMEOUT: a rank that stopped (SIGSTOP, a debugger) or died after its last
    collective makes this one end the job with an error, instead of waiting forever."""
    from .. import distributed
    if not distributed.is_initialized():
        return
    import signal
    try:
        try:
            distributed.finalize()
        except KeyboardInterrupt:   # the launcher's Ctrl-C came after this rank's work: finish
            distributed.finalize()
    except distributed.DistributedError as e:
        _fail_rank(str(e), code=1)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # done: a late Ctrl-C has nothing to stop


def _interrupted(message):
    """Ctrl-C: one line (what was kept, how to go on) and exit 130. In a data-parallel run
    rank 0 alone prints it and every rank finishes MPI cleanly, so mpirun adds no report of
    its own; the ranks of a `--ranks` job then exit 0 and the launcher, which passed the
    Ctrl-C on and waited for them, exits 130."""
    import os
    from .. import distributed
    from .launch import note_answered
    if distributed.rank() == 0:
        _error(message)
        note_answered()   # for the launcher's exit status
    if not distributed.is_initialized():
        raise typer.Exit(130)
    _finish_ranks()
    raise typer.Exit(0 if os.environ.get("MININET_LAUNCHER") == "1" else 130)


def _fail_rank(message, code=2):
    """_fail, and in a data-parallel run end the other ranks too: they would otherwise
    wait for this one in their next collective."""
    from .. import distributed
    if distributed.world_size() > 1:
        if distributed.rank() != 0:
            message = f"rank {distributed.rank()}: {message}"
        _error(message)
        distributed.abort(code)
    _fail(message, code)


def main():
    """Usage errors (a bad flag value) as one line on stderr and exit 2, like every other
    error of the CLI, instead of click's multi-line panel."""
    import sys
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _error("aborted")
        raise SystemExit(130) from None
    except Exception as e:  # click's UsageError/BadParameter (typer may vendor click)
        if not hasattr(e, "format_message"):
            raise
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        _error(f"{where}{e.format_message()}")
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    if code == 130 and not _exit_line.printed:   # a Ctrl-C typer turned into a silent exit
        _error(_exit_line.on_interrupt)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
