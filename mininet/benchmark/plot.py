"""Plots of benchmark runs, comparisons and training histories (matplotlib, optional).

Every function returns the matplotlib Figure and, given a path, writes it as .png or
.svg (by the suffix) atomically. Figures are drawn on their own Agg canvas, never
through pyplot: no global backend is switched and no figure outlives its caller."""
import io
import math
import os

from .stats import median

PLOT_HINT = "plotting needs matplotlib: pip install 'mininet-dl[plot]'"
FORMATS = {".png": "png", ".svg": "svg"}
VERDICT_COLORS = {"slower": "tab:red", "faster": "tab:green", "same": "tab:gray"}


def plot_format(path):
    """"png" or "svg" by path's suffix; ValueError naming path for any other."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: cannot write a plot as {suffix or 'a file without a suffix'!r}"
                         f"; use .png or .svg")
    return FORMATS[suffix]


def _figure(rows=1, cols=1, size=(7, 4.5)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "matplotlib":
            raise
        raise ImportError(PLOT_HINT) from None
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    return fig, axes


def _finish(fig, path):
    """Write fig to path (when given) and return it."""
    if path is not None:
        from ..interop.atomic import write_atomically
        buf = io.BytesIO()
        fig.savefig(buf, format=plot_format(path), metadata=_NO_DATE[plot_format(path)])
        data = buf.getvalue()
        write_atomically(str(path), lambda f: f.write(data), "plot")
    return fig


_NO_DATE = {"png": None, "svg": {"Date": None}}   # an SVG otherwise changes every run


# runs --------------------------------------------------------------------------------------
def gflops(case):
    """The case's median speed in GFLOPS (None without a flop count)."""
    if not case.get("flops"):
        return None
    return case["flops"] / median(case["samples"]) / 1e9


def case_sizes(cases):
    """(sizes, axis label) for cases: params' "size"; else the cube root of m*k*n; else
    the d-th root of the product of a d-long "shape"; else the flop count itself."""
    params = [c.get("params") or {} for c in cases]
    if all(_number(p.get("size")) for p in params):
        return [float(p["size"]) for p in params], "size"
    if all(all(_number(p.get(k)) for k in "mkn") for p in params):
        return [float(p["m"] * p["k"] * p["n"]) ** (1 / 3) for p in params], "size ((m k n)^(1/3))"
    if all(isinstance(p.get("shape"), list) and p["shape"] and all(map(_number, p["shape"]))
           for p in params):
        return [math.prod(p["shape"]) ** (1 / len(p["shape"])) for p in params], \
            "size (geometric mean of the shape)"
    return [float(c["flops"]) for c in cases], "FLOPs per call"


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _series(cases):
    """Cases grouped by what distinguishes their lines: impl, and dtype or threads when
    the run holds several."""
    dtypes = {(c.get("params") or {}).get("dtype") for c in cases}
    threads = {c.get("threads") for c in cases}
    groups = {}
    for c in cases:
        label = c.get("impl") or "?"
        if len(dtypes) > 1:
            label += f" {(c.get('params') or {}).get('dtype')}"
        if len(threads) > 1:
            label += f" {c.get('threads')} threads"
        groups.setdefault(label, []).append(c)
    return groups


def _peak_pair(peak, what, cases):
    """(GFLOPS, GB/s) from a (gflops, gbytes_per_s) pair, a mapping with those keys, or
    the measured peak of `mininet bench peak` (peak.load_or_measure: the FMA figure of
    the cases' dtype and the triad bandwidth, at the cases' thread count)."""
    if isinstance(peak, dict) and "triad_gbs_all" in peak:
        return _measured_peak(peak, cases)
    if isinstance(peak, dict):
        if "gflops" not in peak or "gbytes_per_s" not in peak:
            raise ValueError(f"{what}: peak needs 'gflops' and 'gbytes_per_s', got {sorted(peak)}")
        pair = (peak["gflops"], peak["gbytes_per_s"])
    else:
        try:
            pair = tuple(peak)
        except TypeError:
            raise ValueError(f"{what}: peak must be (gflops, gbytes_per_s), got {peak!r}") from None
    if len(pair) != 2 or not all(_number(v) for v in pair):
        raise ValueError(f"{what}: peak must be two positive numbers (gflops, gbytes_per_s), "
                         f"got {peak!r}")
    return float(pair[0]), float(pair[1])


def _measured_peak(peak, cases):
    from .peak import DTYPE_PREFIX, at_threads
    dtypes = {(c.get("params") or {}).get("dtype") for c in cases} - {None}
    threads = {c.get("threads") for c in cases} - {None}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    count = threads.pop() if len(threads) == 1 else None
    return (at_threads(peak, f"{DTYPE_PREFIX.get(dtype, 'fp32')}_gflops", count),
            at_threads(peak, "triad_gbs", count))


def plot_scaling(run, path=None, peak=None):
    """GFLOPS against problem size, one line per impl; peak (GFLOPS, or any peak that
    plot_roofline takes) as a dashed horizontal line."""
    if path is not None:
        plot_format(path)
    cases = [c for c in run["cases"] if c.get("flops")]
    if not cases:
        raise ValueError("plot_scaling: no case in the run has a flop count")
    fig, (ax,) = _figure()
    sizes, xlabel = case_sizes(cases)
    size_of = {id(c): s for c, s in zip(cases, sizes)}
    for label, group in _series(cases).items():
        group = sorted(group, key=lambda c: size_of[id(c)])
        ax.plot([size_of[id(c)] for c in group], [gflops(c) for c in group], marker="o",
                label=label)
    if peak is not None:
        top = peak if _number(peak) else _peak_pair(peak, "plot_scaling", cases)[0]
        ax.axhline(top, color="black", linestyle="--", label=f"peak {top:.4g} GFLOPS")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GFLOPS (median)")
    ax.set_ylim(bottom=0)
    ax.set_title(_title(run, "scaling"))
    ax.legend()
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def plot_roofline(run, peak, path=None):
    """Each case at (arithmetic intensity = flops / nbytes, its median GFLOPS), log-log,
    under the roof min(peak GFLOPS, intensity * bandwidth). peak: (gflops, gbytes_per_s),
    a mapping with those keys, or the measured peak (peak.load_or_measure)."""
    if path is not None:
        plot_format(path)
    cases = [c for c in run["cases"] if c.get("flops") and c.get("nbytes")]
    if not cases:
        raise ValueError("plot_roofline: no case in the run has both flops and nbytes")
    top, bandwidth = _peak_pair(peak, "plot_roofline", cases)
    fig, (ax,) = _figure()
    intensities = []
    for label, group in _series(cases).items():
        xs = [c["flops"] / c["nbytes"] for c in group]
        intensities += xs
        ax.scatter(xs, [gflops(c) for c in group], label=label, zorder=3)
    ridge = top / bandwidth
    lo, hi = min(min(intensities), ridge) / 4, max(max(intensities), ridge) * 4
    ax.plot([lo, ridge, hi], [lo * bandwidth, top, top], color="black",
            label=f"roof ({top:.4g} GFLOPS, {bandwidth:.4g} GB/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("GFLOPS (median)")
    ax.set_title(_title(run, "roofline"))
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, path)


def _title(run, what):
    cpu = (run.get("machine") or {}).get("cpu_model")
    return f"{run.get('benchmark', 'benchmark')} {what}" + (f" ({cpu})" if cpu else "")


# comparisons -------------------------------------------------------------------------------
def plot_compare(result, path=None):
    """Each common case's ratio new / base with its confidence interval, one row per case
    (the first at the top), colored by verdict, and a line at 1.0."""
    if path is not None:
        plot_format(path)
    rows = result["cases"]
    if not rows:
        raise ValueError("plot_compare: the comparison has no case common to both runs")
    fig, (ax,) = _figure(size=(8, 1.5 + 0.3 * len(rows)))
    ys = {id(r): len(rows) - 1 - i for i, r in enumerate(rows)}
    for verdict, color in VERDICT_COLORS.items():
        group = [r for r in rows if r["verdict"] == verdict]
        if not group:
            continue
        ratios = [r["ratio"] for r in group]
        below = [max(0.0, r["ratio"] - r["ci_low"]) for r in group]
        above = [max(0.0, r["ci_high"] - r["ratio"]) for r in group]
        ax.errorbar(ratios, [ys[id(r)] for r in group], xerr=[below, above], fmt="o",
                    color=color, capsize=3, label=verdict)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_short(r["name"], 48) for r in reversed(rows)])
    ax.set_xlabel(f"new / base median ({result.get('confidence', 0.95):.0%} interval)")
    if result.get("geomean_ratio"):
        ax.set_title(f"geometric mean of ratios {result['geomean_ratio']:.3f}")
    ax.legend()
    ax.grid(True, axis="x", alpha=0.3)
    return _finish(fig, path)


def _short(name, width):
    """name in at most width characters, its middle giving way."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


# training ----------------------------------------------------------------------------------
def plot_training(history, path=None, metric=None):
    """Loss per epoch (train and test) and, beside it, `metric`: "accuracy", or
    "perplexity" (exp of the loss: a language model's losses are mean log-likelihoods);
    None: accuracy when the history has any, else perplexity. history: [{"epoch",
    "train_loss", "train_acc" or None, "test_loss" or None, "test_acc" or None}, ...]."""
    if metric not in (None, "accuracy", "perplexity"):
        raise ValueError(f"plot_training: metric must be accuracy or perplexity, got {metric!r}")
    if path is not None:
        plot_format(path)
    _check_history(history)
    fig, (loss_ax, other_ax) = _figure(1, 2, size=(10, 4))
    has_acc = any(h.get(f"{s}_acc") is not None for h in history for s in ("train", "test"))
    has_acc = has_acc if metric is None else metric == "accuracy"
    for split in ("train", "test"):
        _epoch_line(loss_ax, history, f"{split}_loss", split, lambda v: v)
        if has_acc:
            _epoch_line(other_ax, history, f"{split}_acc", split, lambda v: v)
        else:
            _epoch_line(other_ax, history, f"{split}_loss", split, _perplexity)
    loss_ax.set_ylabel("loss")
    other_ax.set_ylabel("accuracy" if has_acc else "perplexity")
    if not has_acc:
        other_ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator
    for ax in (loss_ax, other_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if ax.get_lines():
            ax.legend()
        ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def _perplexity(loss):
    return math.exp(loss) if loss < 700 or math.isnan(loss) else math.inf


def _epoch_line(ax, history, key, label, transform):
    points = [(h["epoch"], transform(h[key])) for h in history if h.get(key) is not None]
    if points:
        ax.plot(*zip(*points), marker="o", label=label)


def _check_history(history):
    """Numbers where numbers belong; a NaN loss (a diverged run) is plotted as a gap."""
    if not isinstance(history, (list, tuple)) or not history:
        raise ValueError("plot_training: history must be a non-empty list of epochs")
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise ValueError(f"plot_training: history[{i}] is not a dict")
        if not _number_or_nan(h.get("epoch")) or not math.isfinite(h["epoch"]):
            raise ValueError(f"plot_training: history[{i}] has no number 'epoch'")
        if not _number_or_nan(h.get("train_loss")):
            raise ValueError(f"plot_training: history[{i}] has no number 'train_loss'")
        for key in ("train_acc", "test_loss", "test_acc"):
            if h.get(key) is not None and not _number_or_nan(h[key]):
                raise ValueError(f"plot_training: history[{i}][{key!r}] is {h[key]!r}, "
                                 f"not a number or None")


def _number_or_nan(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
