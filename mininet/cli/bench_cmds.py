"""`mininet bench matmul | ewise | conv`: options, progress, tables, --json rows, --save."""
import contextlib
import json
import math
import os
import sys
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import THREADS_HELP, _check_device, _fail, bench_app, console, err_console


# square sizes, then the shapes layers produce: an MLP step (100x784x100, its output
# layer 100x100x10), a tall product with tiny K (a conv's im2col, 100352x9x32), a conv
# layer's GEMM (6272x288x64) and evaluating 100k samples (100000x784x100)
DEFAULT_SIZES = "64,256,512,1024,2048,100x784x100,100x100x10,100352x9x32,6272x288x64,100000x784x100"

MIN_TIME_HELP = "Seconds of timed samples per case (after a warm-up); at least 3 samples."
REPEAT_HELP = "Exactly N timed samples per case instead of --min-time."
SAVE_HELP = ("Save the run (every sample, the machine, the software) as JSON for `mininet bench "
             "compare`; '-' writes it to stdout.")
JSON_HELP = "Print the rows as a JSON array instead of a table."
QUIET_HELP = "No progress bar."
PLOT_HELP = ("Also plot GFLOPS per case and implementation, with this machine's peak as a line "
             "when one is known (.png or .svg; pip install 'mininet-dl[plot]').")
ROOFLINE_HELP = ("Also draw a roofline chart (.png or .svg): each case at its arithmetic "
                 "intensity under this machine's roof (needs the peak: --peak, or a cached one).")
PEAK_HELP = ("Measure this machine's peak (~10 s, once: it is cached) for the % peak and bound "
             "columns. Without it they appear only when a peak is cached already "
             "(`mininet bench peak`).")


# shared option handling ---------------------------------------------------------------------
def _check_common(min_time, save, json_out):
    if not (min_time > 0 and math.isfinite(min_time)):
        _fail(f"--min-time must be a positive number of seconds, got {min_time}")
    if save == "-" and json_out:
        _fail("--save - and --json both write to stdout: use one, or --save FILE")
    if save is not None and save != "-":
        _check_save_path(save)


def _check_save_path(path):
    """--save's path can be written: not a folder, under a folder we may write in."""
    if os.path.isdir(path):
        _fail(f"--save {path}: is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        _fail(f"--save {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        _fail(f"--save {path}: cannot write in {parent}")


def _progress_hidden(json_out, save, quiet):
    return json_out or save == "-" or quiet or not err_console.is_terminal


@contextlib.contextmanager
def _progress(hidden):
    """A callback (done, total, label) drawing a progress bar with ETA on stderr."""
    if hidden:
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(done, total, label):
            bar.update(task, completed=done, total=total, description=escape(label))
        yield update


def _peak(measure, device):
    """This machine's peak (mininet.benchmark.peak): the cached one, measured with --peak;
    None on a GPU run or where none is cached."""
    if device != "cpu":
        return None
    try:
        from ..benchmark import peak
    except ImportError:
        return None
    if not measure:
        return peak.read_cache()
    err_console.print("measuring this machine's peak (~10 s; cached for the next runs) ...")
    return peak.load_or_measure()


def _check_plots(plot, roofline, peak_dict):
    """--plot / --roofline: a .png or .svg path, matplotlib there, and for the roofline a
    peak; checked before anything is timed."""
    for flag, path in (("--plot", plot), ("--roofline", roofline)):
        if path is None:
            continue
        from ..benchmark.plot import PLOT_HINT, plot_format
        try:
            plot_format(path)
        except ValueError as e:
            _fail(f"{flag}: {e}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _fail(f"{flag}: {PLOT_HINT}")
    if roofline is not None and peak_dict is None:
        _fail("--roofline needs this machine's peak: pass --peak (measured once, then cached) "
              "or run `mininet bench peak` first")


def _finish(benchmark, cases, save, json_out, quiet, rows, table, plot=None, roofline=None,
            peak=None):
    """--json rows, or the table; then --save, --plot and --roofline."""
    if json_out:
        print(json.dumps(rows, indent=2))
    elif save != "-":
        table()
    if save is None and plot is None and roofline is None:
        return
    from ..benchmark.runs import new_run, write_run
    run = new_run(benchmark, cases, command=["mininet", *sys.argv[1:]])
    if save is not None:
        try:
            write_run(save, run)
        except (OSError, ValueError) as e:
            _fail(f"--save: {e}", code=1)
        if save != "-" and not quiet:
            err_console.print(f"saved {len(cases)} cases to {escape(save)}")
    from ..benchmark import plot as plots
    for flag, path, draw in (("--plot", plot, lambda: plots.plot_scaling(run, path, peak)),
                             ("--roofline", roofline, lambda: plots.plot_roofline(run, peak, path))):
        if path is None:
            continue
        try:
            draw()
        except (OSError, ValueError) as e:
            _fail(f"{flag}: {e}", code=1)
        if not quiet:
            err_console.print(f"{flag[2:]} drawn to {escape(path)}")


def _rows(cases, metric, scale, device=None):
    """The --json rows: params, threads, seconds (the median) and the metric
    (scale / median), with the spread: best_seconds, q1, q3, worst, n_samples. `device`:
    the run's --device for every row (as the rows always had it; a saved case's params
    say where each implementation ran)."""
    rows = []
    for c in cases:
        params = dict(c.params)
        gpu = params.get("device") != "cpu"
        if device is not None:
            params["device"] = device
        row = {"impl": c.impl, **params, "threads": "gpu" if gpu else c.threads,
               "seconds": c.median, metric: scale(c) / c.median / 1e9,
               "best_seconds": c.best, "q1": c.q1, "q3": c.q3, "worst": c.worst,
               "n_samples": len(c.samples)}
        rows.append(row)
    return rows


# tables -------------------------------------------------------------------------------------
class Column:
    """A table column: `drop` > 0 lets a narrow terminal drop it (the lowest first)."""

    def __init__(self, header, justify="right", drop=0, wrap=True, title_note=None):
        self.header, self.justify, self.drop, self.wrap = header, justify, drop, wrap
        self.title_note = title_note    # dropped, the title says this instead


def _plain(markup):
    return Text.from_markup(markup).plain


def _print_table(title, columns, rows, notes):
    """rows: lists of markup strings, one per column. Columns made with wrap=False (the
    case: a shape is never cut) keep their lines whole; others may wrap between words,
    never inside one. Columns are dropped, lowest `drop` first, until that fits the
    console; the widths are set here (rich's own squeezing cuts words). The notes
    (footnotes) follow, wrapped."""
    lines = [[_plain(c).split("\n") for c in [col.header] + [r[i] for r in rows]]
             for i, col in enumerate(columns)]
    full = [max(Text(x).cell_len for cell in cells for x in cell) for cells in lines]
    need = [full[i] if not col.wrap else
            max(Text(w).cell_len for cell in lines[i] for x in cell for w in x.split() or [""])
            for i, col in enumerate(columns)]
    keep = list(range(len(columns)))

    def room():
        return console.width - 2 * (len(keep) - 1) - sum(need[i] for i in keep)
    dropped = []
    for i in sorted((i for i in keep if columns[i].drop), key=lambda i: columns[i].drop):
        if room() >= 0:
            break
        keep.remove(i)
        if columns[i].title_note is not None:
            title += f", {columns[i].title_note}" if columns[i].title_note else ""
        else:
            dropped.append(columns[i].header)
    widths, spare = {i: need[i] for i in keep}, room()
    for i in keep:                       # give columns their full width, left to right
        grow = min(max(spare, 0), full[i] - widths[i])
        widths[i] += grow
        spare -= grow
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True, title_justify="left")
    for i in keep:
        table.add_column(columns[i].header, justify=columns[i].justify, width=widths[i],
                         no_wrap=not columns[i].wrap, overflow="fold")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    console.print(table)
    if dropped:
        notes = notes + [f"not shown at {console.width} columns: {', '.join(dropped)} "
                         "(wider terminal, --json or --save)"]
    for note in notes:
        console.print(note, highlight=False)


def _group_lines(label, extra, n_rows):
    """The case column of a group of n_rows rows: the label, then `extra` lines (dim) on
    the following rows, the ones left over joined into the last row."""
    lines = [label] + [f"[dim]{escape(e)}[/dim]" for e in extra]
    if len(lines) < n_rows:
        return lines + [""] * (n_rows - len(lines))
    return lines[:n_rows - 1] + ["\n".join(lines[n_rows - 1:])]


def _fmt(value):
    """3 significant digits, never scientific notation for the sizes we see."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def _spread(c):
    """Half the interquartile range relative to the median."""
    return f"±{50 * (c.q3 - c.q1) / c.median:.0f}%"


def _ratio(mine, ref, marks):
    """Speed of mine against ref (ref's median time / mine's), colored, '~' within the noise."""
    from ..benchmark.harness import within_noise
    ratio = ref.median / mine.median
    noisy = within_noise(mine.__dict__, ref.__dict__)
    if noisy:
        marks.add("~")
    color = "green" if ratio >= 0.8 else "yellow" if ratio >= 0.5 else "red"
    return f"[{color}]{ratio:.2f}x[/{color}]" + ("~" if noisy else "")


def _add_threads(cases, columns, rows, col):
    """A threads column ("1 thread", "2 threads", "gpu"). Where every row has the same
    count, a narrow terminal drops it first and the title says it instead."""
    from ..benchmark.harness import threads_label
    labels = [threads_label(c.threads, c.params.get("device", "cpu")) for c in cases]
    same = len(set(labels)) == 1
    columns.insert(col, Column("threads", "left", drop=0.5 if same else 4,
                               title_note=labels[0] if same and labels[0] != "gpu" else ""))
    for r, label in zip(rows, labels):
        r.insert(col, label)


def _common_notes(cases, peak, ref, marks, unit):
    """The footnotes: how the figures were made, the ratio, the noise mark, the peak
    (peak: its dict, None where none is cached, False where it does not apply)."""
    n = sorted({len(c.samples) for c in cases})
    count = (str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}") + " timed sample" \
        + ("" if n == [1] else "s")
    notes = [f"{unit} from each case's median time over {count}; ±: half the "
             "interquartile range, relative; best: the fastest sample."]
    if ref:
        notes.append(f"vs {ref}: {ref}'s median time / mininet's (above 1: mininet is faster).")
    if "~" in marks:
        from ..benchmark.harness import NOISE_NOTE
        notes.append(f"~ the middle halves of the two samples overlap: the ratio is within the "
                     f"noise ({NOISE_NOTE}).")
    if peak is None:
        notes.append("% peak and bound: no peak cached for this machine; --peak measures it "
                     "(~10 s, once).")
    elif any(c.params.get("pct_peak", 0) > 100 for c in cases):
        notes.append("% peak above 100: the cached peak is too low (measured on a busy "
                     "machine?); `mininet bench peak --refresh` measures it again.")
    elif peak:
        notes.append("% peak: of the FMA peak at the row's threads (`mininet bench peak`); "
                     "flop/B: flops per byte moved (each array once); bound: the roofline's "
                     "(flop/B against the peak's ridge).")
    return notes


def _roofline_lines(case):
    p = case.params
    lines = []
    if "flop_per_byte" in p:
        lines.append(f"{_fmt(p['flop_per_byte'])} flop/B")
    if "bound" in p:
        lines.append(p["bound"])
    return lines


def _grouped(cases, key):
    groups = {}
    for c in cases:
        groups.setdefault(key(c), []).append(c)
    return groups


def _add_path_peak(cases, measure):
    """mininet's rows gain "path" (the kernel set it ran: MININET_ISA or the best) and
    "pct_path_peak", % of that path's own FMA peak (`mininet bench peak --isa`), where it
    is cached, or measured now with --peak."""
    from ..benchmark import peak_isa
    from mininet_ext import _isa
    path = _isa.active()
    figures = peak_isa.read_cache().get(path)
    if figures is None and measure:
        err_console.print(f"measuring the {path} path's FMA peak (cached for the next runs) ...")
        figures = peak_isa.load_or_measure((path,))[path]
    if figures is None:
        return
    for c in cases:
        if c.impl == "mininet" and c.threads is not None:
            c.params.update(path=path, pct_path_peak=peak_isa.pct_of_path(
                c.flops / c.median / 1e9, figures, c.params.get("dtype", "float32"), c.threads))


def _rate_table(title, cases, key, label, metric, ref_order, peak, device):
    """One row per case, grouped by `key`: the group's label (and its flop/B and bound),
    impl, the metric (rate: GFLOPS or GB/s from the median) with its spread and best, the
    ratio to the first of ref_order present, % peak."""
    unit, scale = metric
    marks = set()
    columns = [Column(label, "left", wrap=False), Column("impl", "left"), Column(unit),
               Column("±IQR", drop=3), Column("best", drop=1)]
    show_peak = peak is not None and any("pct_peak" in c.params for c in cases)
    refs = [r for r in ref_order if any(c.impl == r for c in cases)]
    ref = refs[0] if refs else None
    if ref:
        columns.append(Column(f"vs {ref}"))
    if show_peak:
        columns.append(Column("% peak", drop=2))
    path = next((c.params["path"] for c in cases if "pct_path_peak" in c.params), None)
    if path:
        columns.append(Column(f"% {path} peak", drop=2))
    rows, flat = [], []
    for name, group in _grouped(cases, key).items():
        by_impl = {c.impl: c for c in group}
        for c, first in zip(group, _group_lines(name, _roofline_lines(group[0]), len(group))):
            row = [first, c.impl, _fmt(scale(c) / c.median / 1e9), _spread(c),
                   _fmt(scale(c) / c.best / 1e9)]
            if ref:
                row.append(_ratio(c, by_impl[ref], marks) if c.impl == "mininet" and ref in by_impl
                           else "")
            if show_peak:
                row.append(f"{c.params['pct_peak']:.0f}%" if "pct_peak" in c.params else "")
            if path:
                row.append(f"{c.params['pct_path_peak']:.0f}%" if "pct_path_peak" in c.params
                           else "")
            rows.append(row)
            flat.append(c)
    _add_threads(flat, columns, rows, 2)
    notes = _common_notes(cases, peak if device == "cpu" else False, ref, marks, unit)
    _print_table(title, columns, rows, notes)


# commands -----------------------------------------------------------------------------------
@bench_app.command("matmul")
def bench_matmul(
    sizes: str = typer.Option(DEFAULT_SIZES, help="N for N^3, or MxKxN, comma separated."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    min_time: float = typer.Option(0.2, "--min-time", help=MIN_TIME_HELP),
    repeat: Optional[int] = typer.Option(None, min=1, help=REPEAT_HELP),
    dtype: str = typer.Option("float32", help="float32, float64, or bf16 (mininet's bf16 "
                              "GEMM vs its float32 one and torch's bfloat16 matmul; cpu)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    peak: bool = typer.Option(False, "--peak", help=PEAK_HELP),
    save: Optional[str] = typer.Option(None, "--save", help=SAVE_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help=PLOT_HELP),
    roofline: Optional[str] = typer.Option(None, "--roofline", help=ROOFLINE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
):
    """GFLOPS of mininet's matmul vs numpy's BLAS (same thread count) and a simple tiled
    kernel; on --device cuda vs cuBLAS."""
    from .bench import add_roofline, bench_matmul as run, parse_shapes
    dtype = "bf16" if dtype.lower() in ("bf16", "bfloat16") else dtype
    if dtype not in ("float32", "float64", "bf16"):
        _fail(f"--dtype must be float32, float64 or bf16, got {dtype!r}")
    if dtype == "bf16" and device != "cpu":
        _fail("--dtype bf16 runs on the cpu only (mininet's bf16 GEMM is a CPU kernel)")
    try:
        shapes = parse_shapes(sizes)
    except ValueError as e:
        _fail(f"--sizes: {e}")
    _check_common(min_time, save, json_out)
    _check_device(device)
    peak_dict = _peak(peak, device)
    _check_plots(plot, roofline, peak_dict)
    with _progress(_progress_hidden(json_out, save, quiet)) as progress:
        if device != "cpu":
            from .gpu import bench_matmul_gpu
            cases = bench_matmul_gpu(shapes, dtype, min_time, repeat, progress)
        elif dtype == "bf16":
            from .bench import bench_matmul_bf16
            cases = bench_matmul_bf16(shapes, threads=threads, min_time=min_time, repeat=repeat,
                                      progress=progress)
        else:
            cases = run(shapes, dtype=dtype, threads=threads, min_time=min_time, repeat=repeat,
                        progress=progress)
    if dtype != "bf16":   # the cached peak is float32 FMA's
        add_roofline(cases, peak_dict)
        if device == "cpu":
            _add_path_peak(cases, peak)
    title = f"matmul {dtype} on {device}"
    refs: tuple = ("numpy", "cublas")
    if dtype == "bf16":
        title = "matmul bf16 (float32 in/out, bf16 inputs, float32 sums) on cpu"
        refs = ("mininet-fp32",)
    _finish("matmul", cases, save, json_out, quiet, _rows(cases, "gflops", lambda c: c.flops),
            lambda: _rate_table(title, cases, lambda c: f"{c.params['m']}x{c.params['k']}x"
                                f"{c.params['n']}", "shape", ("GFLOPS", lambda c: c.flops),
                                refs, False if dtype == "bf16" else peak_dict, device),
            plot, roofline, peak_dict)


@bench_app.command("ewise")
def bench_ewise(
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    min_time: float = typer.Option(0.2, "--min-time", help=MIN_TIME_HELP),
    repeat: Optional[int] = typer.Option(None, min=1, help=REPEAT_HELP),
    save: Optional[str] = typer.Option(None, "--save", help=SAVE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
):
    """Elementwise add throughput (contiguous and broadcast) vs numpy."""
    from .bench import bench_ewise as run
    _check_common(min_time, save, json_out)
    with _progress(_progress_hidden(json_out, save, quiet)) as progress:
        cases = run(threads=threads, min_time=min_time, repeat=repeat, progress=progress)
    rows = _rows(cases, "gbytes_per_s", lambda c: c.nbytes)
    _finish("ewise", cases, save, json_out, quiet, rows,
            lambda: _rate_table("elementwise add, float32", cases, lambda c: c.params["case"],
                                "case", ("GB/s", lambda c: c.nbytes), ("numpy",), False, "cpu"))


@bench_app.command("conv")
def bench_conv(
    shapes: Optional[str] = typer.Option(
        None,
        help="N,C,H,W,K,k,stride,pad; several separated by ';'. Defaults: the MNIST CNN's two "
             "conv layers at batch 100, a ResNet-style 64-channel 3x3 layer at 56x56, and at "
             "batch 64 every conv layer of cifar-cnn and resnet9 and a ResNet-18-style 3x3 "
             "stack (64-256 channels, 32x32 and 16x16)."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    min_time: float = typer.Option(0.2, "--min-time", help=MIN_TIME_HELP),
    repeat: Optional[int] = typer.Option(None, min=1, help=REPEAT_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda (PyTorch and the naive conv run on "
                                           "the CPU)."),
    naive: bool = typer.Option(True, help="Also time the naive direct convolution (numpy, once)."),
    peak: bool = typer.Option(False, "--peak", help=PEAK_HELP),
    save: Optional[str] = typer.Option(None, "--save", help=SAVE_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help=PLOT_HELP),
    roofline: Optional[str] = typer.Option(None, "--roofline", help=ROOFLINE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
):
    """Convolution forward and forward+backward: mininet vs PyTorch and a naive direct conv."""
    from .bench import CONV_SHAPES, add_roofline, bench_conv as run, parse_conv_shapes
    try:
        parsed = parse_conv_shapes(CONV_SHAPES if shapes is None else shapes)
    except ValueError as e:
        _fail(f"--shapes: {e}")
    _check_common(min_time, save, json_out)
    _check_device(device)
    peak_dict = _peak(peak, device)
    _check_plots(plot, roofline, peak_dict)
    with _progress(_progress_hidden(json_out, save, quiet)) as progress:
        cases = run(parsed, threads=threads, min_time=min_time, repeat=repeat, device=device,
                    naive=naive, progress=progress)
    add_roofline(cases, peak_dict)
    _finish("conv", cases, save, json_out, quiet, _rows(cases, "gflops", lambda c: c.flops, device),
            lambda: _conv_table(cases, device, peak_dict), plot, roofline, peak_dict)


def _conv_table(cases, device, peak):
    """Rows grouped by shape and mode: impl, ms (median) and spread, GFLOPS, the ratio to
    PyTorch (else the naive conv), % peak."""
    from .bench import TORCH_MISSING, torch_or_none
    marks = set()
    refs = [r for r in ("torch", "naive") if any(c.impl == r for c in cases)]
    ref = refs[0] if refs else None
    show_peak = any("pct_peak" in c.params for c in cases)
    columns = [Column("shape", "left", wrap=False), Column("mode", "left", wrap=False),
               Column("impl", "left"),
               Column("ms"), Column("±IQR", drop=3), Column("GFLOPS", drop=1)]
    if ref:
        columns.append(Column(f"vs {ref}"))
    if show_peak:
        columns.append(Column("% peak", drop=2))
    rows, flat = [], []
    for shape, group in _grouped(cases, lambda c: c.params["shape"]).items():
        first_of_shape = True
        for mode, mgroup in _grouped(group, lambda c: c.params["mode"]).items():
            by_impl = {c.impl: c for c in mgroup}
            for c, mode_cell in zip(mgroup, _group_lines(mode, _roofline_lines(mgroup[0]),
                                                         len(mgroup))):
                row = [shape if first_of_shape else "", mode_cell, c.impl, _fmt(c.median * 1e3),
                       _spread(c), _fmt(c.flops / c.median / 1e9)]
                first_of_shape = False
                if ref:
                    row.append(_ratio(c, by_impl[ref], marks)
                               if c.impl == "mininet" and ref in by_impl else "")
                if show_peak:
                    row.append(f"{c.params['pct_peak']:.0f}%" if "pct_peak" in c.params else "")
                rows.append(row)
                flat.append(c)
    _add_threads(flat, columns, rows, 3)
    notes = _common_notes(cases, peak if device == "cpu" else False, ref, marks, "ms, GFLOPS")
    notes[0] = notes[0].replace(" best: the fastest sample.", "")
    notes.insert(1, "fwd+bwd: 3x the forward's flops" + ("; naive: timed once (it is slow)."
                                                         if any(c.impl == "naive" for c in cases)
                                                         else "."))
    if torch_or_none() is None:
        notes.insert(0, f"torch: {escape(TORCH_MISSING)}")
    _print_table(f"conv on {device}", columns, rows, notes)
