"""`mininet bench ...` commands."""
import json
from typing import Optional

import typer
from rich.table import Table

from . import THREADS_HELP, _check_device, _fail, bench_app, console


# square sizes, then the shapes layers produce: an MLP step (100x784x100, its output
# layer 100x100x10), a tall product with tiny K (a conv's im2col, 100352x9x32), a conv
# layer's GEMM (6272x288x64) and evaluating 100k samples (100000x784x100)
DEFAULT_SIZES = "64,256,512,1024,2048,100x784x100,100x100x10,100352x9x32,6272x288x64,100000x784x100"


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
