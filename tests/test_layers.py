"""The layers depend one way (DESIGN.md): no module imports a higher layer."""
import ast
from pathlib import Path

from conftest import run_python

ROOT = Path(__file__).resolve().parents[1] / "mininet"
# lower number = lower layer; a module may import only its own layer or lower ones
LAYER = {"backend": 0, "ndarray": 1, "autograd": 2, "ops": 3, "nn": 4, "init": 4, "optim": 4,
         "distributed": 4, "profiler": 4, "interop": 2, "amp": 2,
         "data": 5, "utils": 5, "onnx": 5, "models": 6, "training": 6, "train": 6, "benchmark": 6,
         "cli": 7}
# The one allowed upward reference: Tensor's dunders reach ops through a lazy import.
ALLOWED = {("autograd", "ops")}


def layer_of(module):
    parts = module.split(".")
    if parts[0] != "mininet" or len(parts) < 2:
        return None
    return parts[1]


def imports(path):
    tree = ast.parse(path.read_text())
    pkg = "mininet." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: -node.level] if path.name != "__init__.py" else \
                    pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    for alias in node.names:
                        yield f"{mod}.{alias.name}"
                    continue
                yield mod
            else:
                yield node.module


def test_no_upward_imports():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel[0] == "__init__" or rel[0] == "__main__":
            continue
        mine = LAYER[rel[0]]
        for mod in imports(path):
            other = layer_of(mod)
            if other in LAYER and LAYER[other] > mine and (rel[0], other) not in ALLOWED:
                bad.append(f"{'/'.join(rel)} imports {mod}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_layer_table_covers_every_module():
    tops = {p.relative_to(ROOT).with_suffix("").parts[0] for p in ROOT.rglob("*.py")}
    assert tops - {"__init__", "__main__"} <= set(LAYER), tops - set(LAYER)


def test_import_has_no_side_effects():
    """A fresh interpreter: importing mininet prints nothing, starts no thread, loads no CUDA."""
    code = ("import sys, threading; before = threading.active_count(); import mininet; "
            "assert threading.active_count() == before, 'thread started'; "
            "assert 'pycuda' not in sys.modules, 'pycuda imported'")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
