"""The `mininet bench train` command (and its --ranks scaling mode)."""
import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..models import registry
from . import THREADS_HELP, _fail, bench_app, console


def _models_list():
    """The registry's models, a line each: name (aliases): description."""
    lines = []
    for name, e in registry.MODELS.items():
        alias = f" (or {', '.join(e.aliases)})" if e.aliases else ""
        lines.append(f"{name}{alias}: {e.description}")
    return ("Models (mininet's model registry; PyTorch's twin of each is built from the same "
            "spec):\n\n" + "\n\n".join(lines))


@bench_app.command("train", epilog=_models_list())
def bench_train(
    models: str = typer.Option("mlp,resnet,cnn", help="Comma-separated model names (listed below). Image models train on random data of their input shape; language models run 20 windows of 35 x 20 tokens (embedding and hidden 256, vocabulary 10,000; samples are tokens)."),
    samples: int = typer.Option(60000, min=100, help="Random samples per epoch of an image model (cifar-cnn: at most 10,000; resnet9: 5,120)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size (default: each model's: 100; mlp-large 256, resnet9 128, language models 20)."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    repeat: int = typer.Option(1, min=1, help="Epochs timed per implementation, in turns; the median is reported (--save keeps every one: `bench compare` needs several)."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the run (every timed epoch, the machine, the software) as JSON for `mininet bench compare`; '-' writes it to stdout."),
    precision: str = typer.Option("fp32", help="fp32, or bf16: both libraries train under bf16 autocast (mininet.autocast; torch.autocast on the CPU with bfloat16). Image models only."),
    graph: bool = typer.Option(True, "--graph/--no-graph", help="mininet replays its training step as a mininet.KernelGraph, as `mininet train` does; --no-graph: eager steps (PyTorch's are eager either way)."),
    ranks: Optional[str] = typer.Option(None, help="Data-parallel scaling instead, e.g. 1,2: each count of MPI ranks shares --threads cores (threads // ranks each) at the same global batch; reports samples/s and communication time per step (mininet only; pip install 'mininet-dl\\[mpi]')."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Seconds per training epoch (Adam) of mininet vs PyTorch CPU (the same network, from
    the model registry), same run."""
    from .. import get_num_threads
    from .bench_train import TORCH_MISSING, bench_train as run, paired_ratio
    from .train import threads_phrase
    names = tuple(m.strip() for m in models.split(","))
    for name in names:
        try:
            registry.get(name)
        except ValueError:
            _fail(f"--models: unknown model {name!r}; choose from "
                  f"{', '.join(list(registry.MODELS) + list(registry.ALIASES))}")
    threads = threads or get_num_threads()
    if precision not in ("fp32", "bf16"):
        _fail(f"--precision: expected fp32 or bf16, got {precision!r}")
    lms = [n for n in names if registry.get(n).language_model]
    if precision == "bf16" and lms:
        _fail(f"--precision bf16: {', '.join(lms)} (language models) train in fp32 only; "
              f"choose image models")
    if ranks is not None:
        if precision != "fp32":
            _fail("--precision: not with --ranks (the scaling mode trains in fp32)")
        if save is not None:
            _fail("--save: not with --ranks (the scaling mode reports samples/s per rank count)")
        return _bench_scaling(names, ranks, samples, batch_size, threads, repeat, json_out)
    from .bench_cmds import _check_common
    _check_common(1.0, save, json_out)
    rows = run(names, samples, batch_size, threads, repeat,
               precision=None if precision == "fp32" else precision, graph=graph)
    if save is not None:
        _save(rows, save)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    if save == "-":
        return
    mixed = (", bf16 autocast" if precision == "bf16" else "") + \
        (", mininet's step as a KernelGraph" if any(r.get("graph") for r in rows) else "")
    table = Table(title=f"one training epoch, Adam, {threads_phrase(threads)}{mixed}")
    for col in ("model", "samples", "batch", "mininet s", "torch s", "mininet / torch time"):
        table.add_column(col, justify="right")
    for name in dict.fromkeys(r["model"] for r in rows):
        t = {r["impl"]: r["seconds"] for r in rows if r["model"] == name}
        epochs = {r["impl"]: r["epoch_seconds"] for r in rows if r["model"] == name}
        first = next(r for r in rows if r["model"] == name)
        if "torch" in t:
            ratio = paired_ratio(epochs["mininet"], epochs["torch"])
            color = "green" if ratio <= 1.0 else "red"
            torch_s, versus = f"{t['torch']:.2f}", f"[{color}]{ratio:.2f}[/{color}]"
        else:
            torch_s, versus = escape(TORCH_MISSING), "-"
        table.add_row(name, str(first["samples"]), str(first["batch_size"]), f"{t['mininet']:.2f}",
                      torch_s, versus)
    console.print(table)
    if repeat > 1 and any(r["impl"] == "torch" for r in rows):
        console.print("mininet / torch time: the median of each round's ratio (the epochs "
                      "run in turns); the seconds are each library's median epoch")


def _save(rows, save):
    """The rows as a saved run: one case per model and implementation, a sample per epoch."""
    import sys
    from ..benchmark.harness import Case
    from ..benchmark.runs import new_run, write_run
    cases = [Case(name=f"train {r['model']} batch {r['batch_size']}"
                       f"{' bf16' if r['precision'] == 'bf16' else ''} {r['impl']}",
                  impl=r["impl"],
                  params={"model": r["model"], "samples": r["samples"],
                          "batch_size": r["batch_size"], "precision": r["precision"],
                          "graph": r.get("graph", False)},
                  threads=r["threads"], samples=list(r["epoch_seconds"])) for r in rows]
    try:
        write_run(save, new_run("train", cases, command=["mininet", *sys.argv[1:]]))
    except (OSError, ValueError) as e:
        _fail(f"--save: {e}", code=1)


def _bench_scaling(names, ranks, samples, batch_size, threads, repeat, json_out):
    from .bench_dist import bench_scaling
    from .launch import LaunchError
    try:
        counts = [int(r) for r in ranks.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        _fail(f"--ranks: expected positive integers separated by commas, got {ranks!r}")
    for name in names:
        if registry.get(name).language_model:
            _fail(f"--ranks: {name} (a language model) has no data-parallel case; choose "
                  f"image models")
    try:
        rows = bench_scaling(names, counts, samples, batch_size, threads, repeat)
    except (LaunchError, RuntimeError) as e:
        _fail(str(e), code=1)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"data-parallel training, one epoch, Adam, {threads} core"
                        f"{'' if threads == 1 else 's'} in all")
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
