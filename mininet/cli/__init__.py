"""The `mininet` command line (Typer + rich): info, bench, train."""
import json
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}   # sub-apps inherit it; set on each anyway
app = typer.Typer(help="mininet: a small, fast deep-learning library.", no_args_is_help=True,
                  add_completion=True, context_settings=HELP_OPTIONS)
bench_app = typer.Typer(help="Benchmarks, timed against a reference in the same run.",
                        no_args_is_help=True, context_settings=HELP_OPTIONS)
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


THREADS_HELP = "Threads (>= 1; default: MININET_NUM_THREADS, else all cores)."


def _bare_flags():
    """Flags in the help as `--json`, not `--json <bool>`: typer 0.28+ (which vendors
    click) prints every option's type in its rich help panel, flags included, where its
    plain formatter and older typers leave them bare. Typers without the method are
    already right."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    show = getattr(option, "display_type_rich", None)
    if show is None or getattr(show, "bare_flags", False):
        return

    def display_type_rich(self, *args, **kwargs):
        return None if getattr(self, "is_flag", False) else show(self, *args, **kwargs)
    display_type_rich.bare_flags = True
    option.display_type_rich = display_type_rich


def main():
    """Usage errors (a bad flag value) as one line on stderr and exit 2, like every other
    error of the CLI, instead of click's multi-line panel."""
    import sys
    _bare_flags()
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
        if type(e).__name__ == "NoArgsIsHelpError":   # `mininet bench`: its help, as `mininet`
            if e.format_message().strip():            # (the rich help printed itself)
                print(e.format_message())
            raise SystemExit(0) from None
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        _error(f"{where}{e.format_message()}")
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    if code == 130 and not _exit_line.printed:   # a Ctrl-C typer turned into a silent exit
        _error(_exit_line.on_interrupt)
    raise SystemExit(code if isinstance(code, int) else 0)


# the commands register themselves on app and bench_app
from . import (bench_cmds, bench_compare, bench_peak, bench_profile, bench_train_cmd,  # noqa: E402,F401
               export_cmd, train_cmd)
from . import bench_latency  # noqa: E402,F401

if __name__ == "__main__":
    main()
