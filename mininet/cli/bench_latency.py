"""`mininet bench latency`: inference latency (eval mode, no graph) of a registry model at
batch 1 (or --batch), mininet against its PyTorch twin holding the same weights, timed in
turns in one run. At batch 1 a step is mostly overhead outside the kernels (op creation,
checks, allocation), which this measures."""
import json
from typing import Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..models import registry
from . import THREADS_HELP, _fail, bench_app, console, err_console

ROUNDS = 5   # turns of mininet then torch: a slow spell of a shared machine hits both
TORCH_MISSING = "torch not installed (pip install 'mininet-dl[torch]')"


def copy_weights(model, twin):
    """model's parameters into twin (same spec: the same parameters in the same order),
    Linear weights transposed (ours are (in, out), torch's (out, in))."""
    import torch
    ours = [p.numpy() for p in model.parameters()]
    params = list(twin.parameters())
    if len(ours) != len(params):
        raise ValueError(f"the twin has {len(params)} parameters, the model {len(ours)}")
    with torch.no_grad():
        for p, w in zip(params, ours):
            w = w.T if w.ndim == 2 else w
            if tuple(p.shape) != w.shape:
                raise ValueError(f"a twin parameter of shape {tuple(p.shape)} for ours of "
                                 f"shape {w.shape}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))


def latency_case(name, batch, rng=None, graph=False):
    """(forward functions {impl: fn}, the input, mininet's model, its twin) of one model:
    mininet's in eval mode under no_grad, with graph also "graph" (the same forward pass
    captured once as a mininet.KernelGraph and replayed), and where PyTorch is installed
    (else the twin is None) its twin with mininet's weights under inference_mode; each fn
    runs one forward pass and returns the output."""
    from .. import KernelGraph, Tensor, no_grad
    entry = registry.get(name)
    if entry.language_model:
        raise ValueError(f"bench latency: {name} is a language model; choose an image model")
    x = entry.example_input(batch, rng or np.random.default_rng(0))
    model = entry.build()
    model.eval()
    tx = Tensor(x)

    def ours():
        with no_grad():
            return model(tx)
    fns = {"mininet": ours}
    if graph:
        captured = KernelGraph()
        with no_grad(), captured.capture():
            out = model(tx)

        def replayed():
            captured.replay()
            return out
        fns["graph"] = replayed
    try:
        import torch
    except ImportError:
        return fns, x, model, None
    twin = entry.build_torch()
    copy_weights(model, twin)
    twin.eval()
    px = torch.from_numpy(x)

    def theirs():
        with torch.inference_mode():
            return twin(px)
    fns["torch"] = theirs
    return fns, x, model, twin


def bench_latency(models=("mlp", "cnn"), batch=1, threads=None, min_time=0.5, progress=None,
                  graph=False):
    """harness Cases, one per model and implementation: seconds per forward pass, the
    samples of ROUNDS turns (mininet, graph: its KernelGraph replay, then torch) of
    min_time / ROUNDS each."""
    from .. import get_num_threads, set_num_threads
    from ..benchmark.harness import Case, measure
    threads = threads or get_num_threads()
    old = get_num_threads()
    torch_old = _torch_threads(threads)
    set_num_threads(threads)
    cases = []
    try:
        for k, name in enumerate(models):
            if progress:
                progress(k, len(models), f"latency {name}")
            fns = latency_case(name, batch, graph=graph)[0]
            samples = {impl: [] for impl in fns}
            for _ in range(ROUNDS):
                for impl, fn in fns.items():
                    samples[impl] += measure(fn, min_time=min_time / ROUNDS)
            cases += [Case(name=f"latency {name} batch {batch} {impl}", impl=impl,
                           params={"model": name, "batch": batch}, threads=threads,
                           samples=s) for impl, s in samples.items()]
    finally:
        set_num_threads(old)
        _torch_threads(torch_old)
    return cases


def _torch_threads(threads):
    """Set PyTorch's thread count (where it is installed); returns the one it had."""
    try:
        import torch
    except ImportError:
        return None
    if threads is None:
        return None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    return old


def rows_of(cases):
    """One dict per case for --json: model, batch, impl, threads, median_us, q1_us, q3_us,
    best_us, samples."""
    return [{"model": c.params["model"], "batch": c.params["batch"], "impl": c.impl,
             "threads": c.threads, "median_us": c.median * 1e6, "q1_us": c.q1 * 1e6,
             "q3_us": c.q3 * 1e6, "best_us": c.best * 1e6, "samples": len(c.samples)}
            for c in cases]


@bench_app.command("latency")
def bench_latency_cmd(
    models: str = typer.Option("mlp,cnn", help="Comma-separated image models of the registry (`mininet bench train --help` lists them)."),
    batch: int = typer.Option(1, min=1, help="Batch size of the input."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    min_time: float = typer.Option(0.5, help="Seconds of samples per model and implementation (split over 5 turns)."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the run (every sample, the machine, the software) as JSON for `mininet bench compare`; '-' writes it to stdout."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    graph: bool = typer.Option(False, "--graph", help="Also time mininet's forward pass captured once as a mininet.KernelGraph and replayed (impl \"graph\")."),
):
    """Inference latency of a forward pass (eval mode, no graph), mininet vs its PyTorch
    twin with the same weights (inference_mode), in microseconds: median and quartiles."""
    from .bench_cmds import _check_common, _progress, _progress_hidden
    names = tuple(m.strip() for m in models.split(","))
    for name in names:
        try:
            entry = registry.get(name)
        except ValueError:
            _fail(f"--models: unknown model {name!r}; choose from {', '.join(registry.MODELS)}")
        if entry.language_model:
            _fail(f"--models: {name} is a language model; bench latency takes image models")
    _check_common(min_time, save, json_out)
    with _progress(_progress_hidden(json_out, save, quiet)) as progress:
        cases = bench_latency(names, batch, threads, min_time, progress, graph=graph)
    if save is not None:
        _save(cases, save, quiet)
    if json_out:
        print(json.dumps(rows_of(cases), indent=2))
    elif save != "-":
        _table(cases, batch)


def _save(cases, save, quiet):
    import sys
    from ..benchmark.runs import new_run, write_run
    try:
        write_run(save, new_run("latency", cases, command=["mininet", *sys.argv[1:]]))
    except (OSError, ValueError) as e:
        _fail(f"--save: {e}", code=1)
    if save != "-" and not quiet:
        err_console.print(f"saved {len(cases)} cases to {escape(save)}")


def _table(cases, batch):
    from .train import threads_phrase
    table = Table(title=f"inference latency, batch {batch}, {threads_phrase(cases[0].threads)} "
                        "(median, q1 - q3, us)")
    graph = any(c.impl == "graph" for c in cases)
    cols = ["model", "mininet us"] + (["KernelGraph us"] if graph else []) + \
        ["torch us", "mininet / torch time"] + (["KernelGraph / torch"] if graph else [])
    for col in cols:
        table.add_column(col, justify="right")
    for name in dict.fromkeys(c.params["model"] for c in cases):
        by = {c.impl: c for c in cases if c.params["model"] == name}
        ours, theirs = by["mininet"], by.get("torch")
        mine = [by["mininet"]] + ([by["graph"]] if graph else [])
        if theirs is None:
            table.add_row(name, *[_us(c) for c in mine], escape(TORCH_MISSING),
                          *["-"] * len(mine))
            continue
        table.add_row(name, *[_us(c) for c in mine], _us(theirs),
                      *[_ratio(c.median / theirs.median) for c in mine])
    console.print(table)


def _ratio(r):
    color = "green" if r <= 1.0 else "red"
    return f"[{color}]{r:.2f}[/{color}]"


def _us(case):
    return f"{case.median * 1e6:.1f} [{case.q1 * 1e6:.1f} - {case.q3 * 1e6:.1f}]"
