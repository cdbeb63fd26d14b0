"""mypy on mininet/ (issue 22: type hints on the public API, checked in CI): the same check
as `make typecheck`, with the settings of [tool.mypy] in pyproject.toml, so that running the
tests alone enforces it too."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[test]' installs it)")
def test_mypy_is_clean_on_mininet():
    # the config file named, so that the check is the same from any working directory;
    # mypy's incremental cache where `make typecheck` keeps it (.mypy_cache, ignored by
    # git): after that target, as in CI, this check takes 1-2 s instead of 16
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(ROOT / ".mypy_cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"mypy found errors:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout
