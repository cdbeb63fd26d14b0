"""`mininet export CHECKPOINT`: a checkpoint's model as ONNX, safetensors or a PyTorch .pt."""
from pathlib import Path
from typing import Optional

import typer

from . import _fail, app, console

FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors", "pt": ".pt"}


@app.command()
def export(
    checkpoint: str = typer.Argument(..., help="A checkpoint written by `mininet train --save`."),
    format: str = typer.Option("onnx", "--format", "-f",
                               help="onnx (pip install 'mininet-dl\\[onnx]'), safetensors, or pt "
                                    "(PyTorch's names and layouts, read by torch.load)."),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="Where to write (default: the checkpoint's name "
                                              "with the format's suffix)."),
    opset: int = typer.Option(17, min=15, help="onnx: the ONNX opset."),
    torch_names: bool = typer.Option(False, "--torch-names",
                                     help="safetensors: PyTorch's parameter names and layouts "
                                          "(those of mininet.models.registry.build_torch(name)"
                                          ", as pt has), instead of mininet's."),
):
    """Write a trained model in a format other tools read: the model is rebuilt from the
    checkpoint alone (its registry name and constructor arguments)."""
    from ..training import CheckpointError, build_from_checkpoint
    if format not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if torch_names and format != "safetensors":
        _fail("--torch-names applies to --format safetensors (pt always has PyTorch's names)")
    out = Path(output) if output else Path(checkpoint).with_suffix(FORMATS[format])
    if out.resolve() == Path(checkpoint).resolve():
        _fail(f"--output {out}: that is the checkpoint itself")
    try:
        model, _ = build_from_checkpoint(checkpoint)
    except (CheckpointError, OSError) as e:
        _fail(str(e))
    try:
        _write(model, model.arch, format, out, opset, torch_names)
    except (ImportError, ValueError, OSError) as e:
        _fail(f"export to {out}: {e}")
    console.print(f"{model.arch['name']} written to {out} ({format})", highlight=False)


def _write(model, arch, format, out, opset, torch_names):
    """arch: {"name", "kwargs"}, which the registry's build sets on every model."""
    from .. import interop
    from ..interop.pt_reader import write_pt
    if format == "onnx":
        from .. import onnx
        from ..models import registry
        entry = registry.get(arch["name"])
        example = entry.example_input(batch=2, **arch.get("kwargs", {}))
        onnx.export(model, example, out, opset=opset, dynamic_batch=1 if entry.language_model else True)
    elif format == "pt":
        write_pt(interop.torch_state_dict(_twin_shaped(model)), out)
    elif torch_names:
        interop.save_file(interop.torch_state_dict(_twin_shaped(model)), out)
    else:
        interop.save_file(model.state_dict(), out, metadata={"model": arch["name"]})


def _twin_shaped(model):
    """The module whose torch names are the registry's torch twin's: a registry model that
    wraps the one module its spec built (self.net) is named from that module, as the twin
    (registry.build_torch) is that module's counterpart itself."""
    children = list(model.children())
    if getattr(model, "spec", None) is not None and len(children) == 1:
        return children[0]
    return model
