"""`mininet bench compare` and `mininet bench ab`: two saved runs, or two commands run in
turns, compared case by case (Mann-Whitney U), with an exit status that can gate CI."""
import json
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from . import _fail, bench_app, console, err_console

WIDTH = 80            # the table fits a classic terminal
COLORS = {"slower": "red", "faster": "green"}
ALPHA_HELP = "Significance level of the Mann-Whitney U test."
FAIL_HELP = ("Exit 1 when a case is significantly slower by a ratio (new / base median) "
             "above this, e.g. 1.05. Default: report only.")


@bench_app.command("compare")
def bench_compare(
    base: str = typer.Argument(..., help="The saved base run (--save of any bench)."),
    new: str = typer.Argument(..., help="The saved new run."),
    alpha: float = typer.Option(0.01, help=ALPHA_HELP),
    fail_above: Optional[float] = typer.Option(None, help=FAIL_HELP),
    plot: Optional[str] = typer.Option(None, help="Also plot the ratios (.png or .svg)."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Compare two saved runs: each case's median ratio, p-value and verdict."""
    from ..benchmark.runs import load_run
    _check_options(alpha, fail_above, plot)
    try:
        base_run, new_run = load_run(base), load_run(new)
    except ValueError as e:
        _fail(e)
    _report(base_run, new_run, alpha, fail_above, plot, json_out)


@bench_app.command("ab")
def bench_ab(
    base_cmd: str = typer.Option(..., help="Shell command printing the base run as JSON "
                                 "(e.g. 'mininet bench matmul --sizes 256 --save -')."),
    new_cmd: str = typer.Option(..., help="Shell command printing the new run as JSON."),
    rounds: int = typer.Option(5, min=1, help="Rounds; each runs both commands once."),
    order: str = typer.Option("abba", help="abba (swap the order every other round, "
                              "cancelling drift) or abab."),
    timeout: Optional[float] = typer.Option(None, help="Seconds one command may run."),
    alpha: float = typer.Option(0.01, help=ALPHA_HELP),
    fail_above: Optional[float] = typer.Option(None, help=FAIL_HELP),
    save: Optional[str] = typer.Option(None, help="Write both merged runs and the comparison "
                                       "as JSON."),
    plot: Optional[str] = typer.Option(None, help="Also plot the ratios (.png or .svg)."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Run two benchmark commands in turns (interleaved A/B), pool each one's samples per
    case and compare them as `bench compare` does."""
    from ..benchmark import ab
    _check_options(alpha, fail_above, plot)
    if order not in ab.ORDERS:
        _fail(f"--order must be one of {', '.join(ab.ORDERS)}, got {order!r}")
    if timeout is not None and not timeout > 0:
        _fail(f"--timeout must be positive seconds, got {timeout}")

    def progress(line):
        err_console.print(f"[dim]{escape(line)}[/dim]")
    try:
        base_run, new_run = ab.run_ab(base_cmd, new_cmd, rounds, order, timeout, progress)
    except ab.ABError as e:
        _fail(e)
    result = _report(base_run, new_run, alpha, fail_above, plot, json_out, exit_now=False)
    if save:
        doc = ab.ab_document(base_cmd, new_cmd, rounds, order, base_run, new_run, result)
        try:
            ab.save_json(save, doc, "A/B result")
        except OSError as e:
            _fail(e)
    _exit_gate(result, fail_above)


def _check_options(alpha, fail_above, plot):
    """Everything that can fail before a long run, checked first."""
    if not 0 < alpha < 1:
        _fail(f"--alpha must be between 0 and 1, got {alpha}")
    if fail_above is not None and not fail_above > 0:
        _fail(f"--fail-above must be a positive ratio, got {fail_above}")
    if plot:
        from ..benchmark.plot import PLOT_HINT, plot_format
        try:
            plot_format(plot)
        except ValueError as e:
            _fail(f"--plot: {e}")
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            _fail(PLOT_HINT)


def _report(base_run, new_run, alpha, fail_above, plot, json_out, exit_now=True):
    from ..benchmark.compare import compare
    result = compare(base_run, new_run, alpha)
    for warning in result["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        _print_result(result, fail_above)
    if plot and not result["cases"]:
        err_console.print("[yellow]warning:[/yellow] nothing to plot: no case is in both runs")
    elif plot:
        from ..benchmark.plot import plot_compare
        try:
            plot_compare(result, plot)
        except (ImportError, ValueError, OSError) as e:
            _fail(e)
    if exit_now:
        _exit_gate(result, fail_above)
    return result


def _exit_gate(result, fail_above):
    from ..benchmark.compare import slowdowns
    if fail_above is None:
        return
    slow = slowdowns(result, fail_above)
    if slow:
        names = ", ".join(f"{r['name']} ({r['ratio']:.3f}x)" for r in slow)
        err_console.print(f"[red]gate failed:[/red] {len(slow)} case(s) significantly slower "
                          f"than {fail_above}x: {escape(names)}")
        raise typer.Exit(1)


# the table ---------------------------------------------------------------------------------
def _print_result(result, fail_above):
    rows = result["cases"]
    if rows:
        console.print(_table(result))
    else:
        console.print("no case is in both runs")
    if result["geomean_ratio"] is not None:
        console.print(f"geometric mean of ratios (new / base): {result['geomean_ratio']:.3f} "
                      f"over {len(rows)} case(s)")
    for key, where in (("only_base", "base"), ("only_new", "new")):
        if result[key]:
            console.print(f"only in the {where} run: {escape(', '.join(result[key]))}")
    if fail_above is not None and not any(r["verdict"] == "slower" and r["ratio"] > fail_above
                                          for r in rows):
        console.print(f"gate passed: no case significantly slower than {fail_above}x")


def _table(result):
    rows = result["cases"]
    cells = [[format_seconds(r["base_median"]), format_seconds(r["new_median"]),
              f"{r['ratio']:.3f}", format_p(r["p_value"]), r["verdict"]] for r in rows]
    headers = ["base", "new", "new/base", "p", "verdict"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    room = max(12, WIDTH - 16 - sum(widths))   # 16: the gaps between the six columns
    names, common = short_names([r["name"] for r in rows], room)
    title = f"new vs base median, alpha {result['alpha']}"
    table = Table(title=title + (f" ({' '.join(common)})" if common else ""),
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("case", no_wrap=True)
    for h in headers:
        table.add_column(h, justify="left" if h == "verdict" else "right", no_wrap=True)
    for name, row, cell in zip(names, rows, cells):
        color = COLORS.get(row["verdict"]) if row["significant"] else None
        styled = [f"[{color}]{c}[/{color}]" if color and i >= 2 else c for i, c in enumerate(cell)]
        table.add_row(escape(name), *styled)
    return table


def short_names(names, width):
    """Names that fit `width`: when one is too long, the words every name shares (e.g.
    "matmul", "float32") go into the title instead, returned second; then words without
    a digit are shortened (longest first), so sizes like 1024x784x10 stay whole."""
    common = []
    if any(len(n) > width for n in names) and len(names) > 1:
        shared = set(names[0].split()).intersection(*(n.split() for n in names[1:]))
        common = [w for w in names[0].split() if w in shared]
        if common:
            names = [" ".join(w for w in n.split() if w not in shared) or n for n in names]
    return [abbreviate(n, width) for n in names], common


def abbreviate(name, width):
    words = name.split(" ")
    keep = [len(w) for w in words]
    wordy = [i for i, w in enumerate(words) if not any(c.isdigit() for c in w)]
    while sum(keep) + len(words) - 1 > width:
        longest = max(wordy, key=keep.__getitem__, default=None)
        if longest is None or keep[longest] <= 2:
            break
        keep[longest] -= 1
    short = " ".join(w if k == len(w) else w[:k - 1] + "…" for w, k in zip(words, keep))
    return middle_ellipsis(short, width)


def middle_ellipsis(name, width):
    """The last resort: the middle of name gives way, never its ends."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def format_seconds(seconds):
    """Three significant digits in s, ms, µs or ns."""
    if seconds >= 999.5:
        return f"{seconds:.0f} s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        value = float(f"{seconds / scale:.3g}")
        if value >= 1 or unit == "ns":
            return f"{value:.3g} {unit}"


def format_p(p):
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
