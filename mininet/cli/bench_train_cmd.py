"""The `mininet bench train` command (and its --ranks scaling mode)."""
import json
from typing import Optional

import typer
from rich.table import Table

from . import _fail, bench_app, console


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
    from .bench_train import TRAIN_MODELS, bench_train as run
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
