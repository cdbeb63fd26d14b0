"""The documentation builds: `mkdocs build --strict` (every warning an error: broken links
and anchors, pages left out of the nav, docstrings that do not render) into a temporary
folder, as `make docs` does, with the generated pages (CLI reference, API members,
benchmark results, changelog) in it. Needs the docs extra; skipped, with the reason,
without it."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing():
    """The docs extra's modules that cannot be imported here."""
    missing = []
    for name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    missing = _missing()
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)}): "
                    "pip install -e '.[docs]'")
    site = tmp_path / "site"
    try:
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("mkdocs build hung for 600 s")
    assert r.returncode == 0, r.stderr[-5000:]
    assert "WARNING" not in r.stderr, r.stderr[-5000:]
    page = lambda p: (site / p / "index.html").read_text(encoding="utf-8")   # noqa: E731
    assert "mininet bench matmul" in page("cli")            # generated from the Typer app
    assert 'id="mininet.nn.Linear"' in page("api/nn")        # members from the package
    assert 'id="mininet.optim.Adam"' in page("api/optim")
    assert 'id="mininet.autograd.Function"' in page("api/autograd")
    assert "Recorded benchmark results" in page("bench-results")   # bench/RESULTS.md
    assert "Unreleased" in page("changelog")                      # CHANGELOG.md
    assert (site / "checkpoint-format" / "index.html").exists()
