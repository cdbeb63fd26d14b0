"""`mininet bench peak`: this machine's FMA and memory-bandwidth peak (cached)."""
import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from . import _fail, bench_app, console

# FMA throughput scales with cores (each has its own units); far below that, the cores
# were shared with other work while we measured
BUSY_SCALING = 0.75


@bench_app.command("peak")
def bench_peak(
    refresh: bool = typer.Option(False, "--refresh", help="Measure again instead of using the cache."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    isa: Optional[str] = typer.Option(None, "--isa", help="FMA peak per kernel set (GEMM path) "
                                      "instead: all, or generic, avx2, avx512, avx512bf16 "
                                      "(comma separated), each with its own vector width."),
):
    """This machine's peak: fp32 and fp64 FMA GFLOPS and STREAM copy/triad bandwidth, on one
    core and on all cores, with mininet's own kernels. Bandwidth counts bytes read plus bytes
    written (the STREAM convention: copy 16, triad 24 bytes per float64 element). Cached per
    CPU model, core count and mininet version in $XDG_CACHE_HOME/mininet (else
    ~/.cache/mininet; MININET_CACHE_DIR overrides)."""
    from ..benchmark import peak
    if isa is not None:
        return _bench_path_peak(isa, refresh, json_out)
    try:
        result = peak.load_or_measure(refresh=refresh)
    except (OSError, MemoryError) as e:
        _fail(f"bench peak: {e}")
    if json_out:
        print(json.dumps(result, indent=2))
        return
    _print_peak(result, peak.kernel_info(), peak.cache_path())


def _print_peak(result, kernel, path):
    table = Table(title=f"peak of {escape(result['cpu_model'])} ({result['cores']} cores)")
    table.add_column("kernel")
    table.add_column("1 core", justify="right")
    table.add_column(f"all ({result['threads_all']} threads)", justify="right")
    for name, prefix, unit in (("fp32 FMA", "fp32_gflops", "GFLOPS"), ("fp64 FMA", "fp64_gflops", "GFLOPS"),
                               ("copy", "copy_gbs", "GB/s"), ("triad", "triad_gbs", "GB/s")):
        table.add_row(f"{name} ({unit})", f"{result[prefix + '_1']:.1f}", f"{result[prefix + '_all']:.1f}")
    console.print(table)
    fma = "fused multiply-add" if kernel["fused"] else "multiply + add (no FMA)"
    console.print(f"kernels: {escape(result['isa'])}, {kernel['vector_bits']}-bit vectors, {fma}, "
                  f"{kernel['chains']} independent chains; bandwidth counts bytes read + written")
    console.print(f"measured {escape(result['measured_at'])}; cache {escape(path)} "
                  f"(--refresh measures again)")
    threads = result["threads_all"]
    if threads > 1 and result["fp32_gflops_all"] < BUSY_SCALING * threads * result["fp32_gflops_1"]:
        console.print(f"[yellow]note:[/yellow] all-core FMA is under {BUSY_SCALING:.0%} of {threads} x one "
                      f"core: other processes were probably busy; --refresh on an idle machine")


def _bench_path_peak(spec, refresh, json_out):
    from ..benchmark import peak_isa
    try:
        isas = peak_isa.choose(spec)
        figures = peak_isa.load_or_measure(isas, refresh=refresh)
    except ValueError as e:
        _fail(f"bench peak: {e}")
    if json_out:
        print(json.dumps(figures, indent=2))
        return
    threads = max(f["threads_all"] for f in figures.values())
    table = Table(title="FMA peak per kernel set (GFLOPS)")
    for name, just in (("path", "left"), ("vector", "right"), ("fp32 1 core", "right"),
                       (f"fp32 all ({threads})", "right"), ("fp64 1 core", "right"),
                       (f"fp64 all ({threads})", "right")):
        table.add_column(name, justify=just)
    for name, f in figures.items():
        table.add_row(name, f"{f['vector_bits']}-bit {'FMA' if f['fused'] else 'mul+add'}",
                      *(f"{f[k]:.1f}" for k in peak_isa.FIGURES))
    console.print(table)
    console.print(f"cache {escape(peak_isa.cache_path())} (--refresh measures again); "
                  f"`mininet bench matmul` shows % of the running path's peak")
