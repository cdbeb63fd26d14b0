"""The `mininet bench profile` command: where a training step's time goes, op by op."""
import bisect
import json
import statistics
import time
from typing import Optional

import numpy as np
import typer

from . import THREADS_HELP, _fail, bench_app, console

PROFILE_MODELS = ("softmax", "mlp", "resnet", "cnn")
STEP = "train step"   # the record_function scope around each profiled step


@bench_app.command("profile")
def bench_profile(
    model: str = typer.Option("cnn", help=f"One of {', '.join(PROFILE_MODELS)}."),
    steps: int = typer.Option(20, min=1, help="Training steps profiled (and as many timed "
                                              "without the profiler first)."),
    warmup: int = typer.Option(3, min=0, help="Steps run before any timing."),
    batch_size: int = typer.Option(100, min=1),
    sort_by: str = typer.Option("self_time", help="self_time, total_time, kernel_time, calls "
                                                  "or flops."),
    row_limit: int = typer.Option(20, min=1, help="Rows of the table."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    trace: Optional[str] = typer.Option(None, help="Also write a Chrome trace (JSON) here, for "
                                                   "chrome://tracing or ui.perfetto.dev."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (every row) instead."),
):
    """Profile training steps (Adam, random MNIST-shaped data): the top ops and the share of
    step time spent outside kernels."""
    from .. import profiler
    if model not in PROFILE_MODELS:
        _fail(f"--model: unknown model {model!r}; choose from {', '.join(PROFILE_MODELS)}")
    if sort_by not in profiler.SORT_KEYS:
        _fail(f"--sort-by must be one of {', '.join(profiler.SORT_KEYS)}, got {sort_by!r}")
    prof, result = profile_training(model, steps, warmup, batch_size, threads)
    if trace is not None:
        try:
            prof.export_chrome_trace(trace)
        except OSError as e:
            _fail(f"--trace: {e}", code=1)
    rows = profiler.sort_rows(prof.key_averages(), sort_by, None)
    if json_out:
        print(json.dumps({**result, "rows": rows}, indent=2))
        return
    _print_table(rows[:row_limit], result, sort_by)


def profile_training(name, steps, warmup, batch_size, threads=None):
    """(profile, figures) of `steps` profiled Adam steps of model `name`, after `warmup`
    steps and `steps` timed without the profiler."""
    from .. import Tensor, get_num_threads, nn, optim, profiler, set_num_threads
    from .bench_train import train_case
    rng = np.random.default_rng(0)
    x, y, batch, model = train_case(name, batch_size * 4, batch_size, rng)
    batches = [(Tensor(x[i:i + batch]), y[i:i + batch]) for i in range(0, len(x), batch)]
    opt, loss_fn = optim.Adam(model.parameters(), lr=1e-3), nn.SoftmaxLoss()

    def step(i):
        xb, yb = batches[i % len(batches)]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()   # as training reads it (a device would be waited for here)

    old = get_num_threads()
    if threads is not None:
        set_num_threads(threads)
    try:
        for i in range(warmup):
            step(i)
        plain = []
        for i in range(steps):
            start = time.perf_counter()
            step(i)
            plain.append(time.perf_counter() - start)
        with profiler.profile() as prof:
            for i in range(steps):
                with profiler.record_function(STEP, {"step": i}):
                    step(i)
        used = get_num_threads()
    finally:
        set_num_threads(old)
    return prof, _figures(prof, name, steps, batch, used, plain)


def _figures(prof, name, steps, batch, threads, plain):
    """Medians over the profiled steps (a shared machine's stalls are outliers): step wall
    time, kernel time inside it, the share outside kernels, and where that went by kind
    of event (self time minus self kernel time)."""
    events = prof.events
    marks = sorted((e for e in events if e.cat == "user" and e.name == STEP), key=lambda e: e.start)
    starts = [e.start for e in marks]
    outside = [{} for _ in marks]
    for e in events:
        i = bisect.bisect_right(starts, e.start) - 1
        if i >= 0 and e.start < marks[i].start + marks[i].dur:
            outside[i][e.cat] = outside[i].get(e.cat, 0) + e.self_ns - e.self_kernel_ns
    kinds = sorted({k for o in outside for k in o})
    return {"model": name, "steps": steps, "batch_size": batch, "threads": threads,
            "step_ms": statistics.median(e.dur for e in marks) / 1e6,
            "unprofiled_step_ms": statistics.median(plain) * 1e3,
            "kernel_ms_per_step": statistics.median(e.kernel_ns for e in marks) / 1e6,
            "outside_kernels_share": statistics.median(1 - e.kernel_ns / e.dur for e in marks),
            "outside_kernels_ms_per_step": {k: round(statistics.median(o.get(k, 0) for o in outside)
                                                     / 1e6, 4) for k in kinds}}


def _print_table(rows, result, sort_by):
    from ..profiler import format_table
    console.print(f"{result['model']}: {result['steps']} training steps (Adam, batch "
                  f"{result['batch_size']}, {result['threads']} threads), by {sort_by}")
    print(format_table(rows))   # plain text: rich would wrap or squeeze its columns
    by_kind = ", ".join(f"{k} {v:.2f}" for k, v in result["outside_kernels_ms_per_step"].items())
    console.print(f"step time (median): {result['step_ms']:.2f} ms profiled, "
                  f"{result['unprofiled_step_ms']:.2f} ms without the profiler; "
                  f"{result['kernel_ms_per_step']:.2f} ms in kernels")
    console.print(f"share of step time outside kernels: "
                  f"{100 * result['outside_kernels_share']:.1f}%")
    console.print(f"outside kernels, ms per step by kind of event: {by_kind}")
