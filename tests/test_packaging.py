"""The distribution users install: its name (mininet-dl: "mininet" on the public index is the
network emulator), its metadata, every install hint naming it, and `mininet info` telling where
mininet is installed from and whether the compiled kernels match their sources."""
import ast
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.specifiers import SpecifierSet

from conftest import CLI_ENV

info = importlib.import_module("mininet.cli.info")   # the module (mininet.cli.info is also a command)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = "mininet-dl"


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_the_distribution_is_mininet_dl_with_complete_metadata():
    p = pyproject()["project"]
    assert p["name"] == DIST
    for field in ("version", "description", "readme", "requires-python", "license", "authors",
                  "keywords", "classifiers", "dependencies"):
        assert p.get(field), f"pyproject.toml: [project] {field} is missing"
    assert p["readme"] == "README.md" and p["license"] == "MIT"
    assert p["scripts"] == {"mininet": "mininet.cli:main"}   # the command keeps its name
    classifiers = set(p["classifiers"])
    for c in ("Operating System :: POSIX :: Linux", "Programming Language :: Cython",
              "Topic :: Scientific/Engineering :: Artificial Intelligence",
              "Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12"):
        assert c in classifiers
    # a license expression (PEP 639) and a License classifier together are refused by setuptools
    assert not any(c.startswith("License ::") for c in classifiers)
    # every Python version a classifier names is one requires-python admits, and the
    # interpreter running this (CI's) is one of them
    versions = [c.rsplit(" ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    spec = SpecifierSet(p["requires-python"])
    assert versions and all(spec.contains(v) for v in versions)
    assert spec.contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert any(r.startswith("twine") for r in p["optional-dependencies"]["test"])


def test_no_placeholder_urls():
    """Only URLs that exist may be published: none is known, so there are none."""
    urls = pyproject()["project"].get("urls", {})
    assert all(u.startswith("https://") for u in urls.values()), urls


def _text_files():
    for top in ("mininet", "tests", "bench", "docs", "examples", ".ci"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".py", ".pyx", ".md", ".sh", ".txt", ".toml", ".yml", ".cfg")) \
                        and f != "test_packaging.py":
                    yield os.path.join(d, f)
    for f in ("README.md", "Makefile", "pyproject.toml", "setup.py", "mkdocs.yml"):
        if os.path.exists(os.path.join(ROOT, f)):
            yield os.path.join(ROOT, f)


# `pip install mininet` / `mininet[extra]` name the network emulator's distribution
OLD_NAME = re.compile(r"pip install\s+['\"]?mininet(?![-\w])|(?<![-\w/.])mininet\\*\[")
# an extra named by an installed library's message: the distribution, not a checkout's "."
EXTRA_HINT = re.compile(r"pip install\s+(?:-e\s+)?['\"]?([^\s'\"`)\\\[]*)\\*\[")


def test_every_install_hint_names_mininet_dl():
    """The rule: what the installed library prints or documents (errors, CLI help,
    docstrings, docs/, README) says `pip install 'mininet-dl[extra]'`; text for a source
    checkout (tests' skip reasons, the Makefile, the README's development steps) may say
    `pip install -e '.[extra]'`. Nowhere the bare name, which is someone else's program."""
    bad = []
    for path in _text_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                rel = os.path.relpath(path, ROOT)
                if OLD_NAME.search(line):
                    bad.append(f"{rel}:{n}: {line.strip()}")
                if rel.startswith("mininet" + os.sep):
                    bad += [f"{rel}:{n}: {line.strip()}" for m in EXTRA_HINT.finditer(line)
                            if m.group(1) != DIST]
    assert not bad, "install hints that do not name mininet-dl:\n" + "\n".join(bad)


def test_the_hint_rule_catches_the_old_spellings():
    for line in ("pip install mininet", "pip install 'mininet[onnx]'", 'pip install "mininet[mpi]"',
                 "pip install 'mininet\\\\[mpi]'", "`pip install mininet[mpi]`"):
        assert OLD_NAME.search(line), line
    for line in ("pip install mininet-dl", "pip install 'mininet-dl[onnx]'", "pip install -e '.[test]'",
                 "mininet.cli:main", "sys.modules['mininet']"):
        assert not OLD_NAME.search(line), line
    assert [m.group(1) for m in EXTRA_HINT.finditer("pip install '.[torch]'")] == ["."]
    assert [m.group(1) for m in EXTRA_HINT.finditer("pip install 'mininet-dl\\\\[mpi]'")] == [DIST]


def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert re.search(r"^make test$", ci, re.M)
    assert re.search(r"^make test$", readme, re.M)
    assert "python3 -m venv" in readme and DIST in readme


def _setup_source_hash():
    """setup.py's source_hash, taken out of setup.py (importing it would run the build)."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "source_hash")
    ns = {"os": os, "hashlib": hashlib}
    exec(compile(ast.Module([fn], []), "setup.py", "exec"), ns)
    return ns["source_hash"]


def test_setup_and_info_hash_the_sources_alike():
    root = os.path.join(ROOT, "mininet_ext")
    assert _setup_source_hash()(root) == info.source_hash(root)


def _kernel_sources(tmp_path):
    dst = tmp_path / "mininet_ext"
    shutil.copytree(os.path.join(ROOT, "mininet_ext"), dst,
                    ignore=lambda d, names: [n for n in names
                                             if not n.endswith((".pyx", ".pxd", ".pxi", ".h"))
                                             and not os.path.isdir(os.path.join(d, n))])
    return dst


def test_extension_matches_source_until_a_pyx_is_touched(tmp_path):
    root = _kernel_sources(tmp_path)
    (root / "_build_info.py").write_text(f"SOURCE_HASH = {_setup_source_hash()(str(root))!r}\n")
    assert info.extension_matches_source(str(root)) is True
    pyx = root / "buffer.pyx"
    pyx.write_text(pyx.read_text() + "\n# edited after the build\n")
    assert info.extension_matches_source(str(root)) is False


def test_extension_stale_when_an_included_part_changes(tmp_path):
    """convgemm.pyx pulls its parts in with `include`: an edit of a .pxi is a stale build."""
    root = _kernel_sources(tmp_path)
    (root / "_build_info.py").write_text(f"SOURCE_HASH = {_setup_source_hash()(str(root))!r}\n")
    parts = sorted(root.glob("convgemm_*.pxi"))
    assert parts, "convgemm's included parts are missing from the copy"
    parts[0].write_text(parts[0].read_text() + "\n# edited after the build\n")
    assert info.extension_matches_source(str(root)) is False


def test_extension_match_is_unknown_without_sources_or_record(tmp_path):
    root = _kernel_sources(tmp_path)
    assert info.extension_matches_source(str(root)) is None              # no _build_info.py
    (root / "_build_info.py").write_text("CFLAGS = '-O3'\n")
    assert info.extension_matches_source(str(root)) is None              # a build before the hash
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    (wheel / "_build_info.py").write_text("SOURCE_HASH = 'abc'\n")
    assert info.extension_matches_source(str(wheel)) is None             # installed: no sources


def test_a_changed_hash_reads_as_a_stale_build(monkeypatch):
    monkeypatch.setattr(info, "source_hash", lambda root: "0" * 64)
    assert info.extension_matches_source() in (False, None)   # None: this build recorded no hash


def test_info_json_says_where_mininet_is_installed_from(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mininet", "info", "--json"], capture_output=True,
                       text=True, env={**os.environ, **CLI_ENV}, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    import mininet
    install = data["install"]
    assert install["path"] == os.path.dirname(os.path.abspath(mininet.__file__))
    assert set(install) == {"path", "distribution", "editable", "url"}
    assert data["extension_matches_source"] in (True, False, None)
    if install["distribution"] is None:
        pytest.skip("mininet runs from a source tree here, not from an installed distribution")
    if install["distribution"].split()[0] != DIST:
        pytest.skip(f"the installed metadata ({install['distribution']}) predates the rename to "
                    f"{DIST}: pip install -e '.[test]' again")
    assert install["editable"] in (True, False)


def test_this_build_matches_its_sources():
    """True right after a build (CI builds first); elsewhere a kernel source edited since the
    last build makes it False, which `make build` fixes."""
    matches = info.extension_matches_source()
    if not os.environ.get("CI") and matches is not True:
        pytest.skip(f"extension_matches_source is {matches} here: the kernels were built before "
                    "their sources' last edit, or before setup.py recorded a hash (make build)")
    assert matches is True


def test_every_package_is_listed_for_the_wheel():
    """pyproject's explicit package list must hold every folder of mininet with an
    __init__.py: a missing one is left out of the wheel and the sdist's install fails to
    import (mininet.nn.utils once was)."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("mininet", "mininet_ext"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                found.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    assert found - listed == set()
