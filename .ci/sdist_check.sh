#!/usr/bin/env bash
# The packaging path a user takes: sdist -> wheel built from that sdist -> fresh venv -> run.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# build from a copy of the repository's files only: a left-over *.egg-info/SOURCES.txt in
# the checkout would otherwise fill in whatever MANIFEST.in forgets (files deleted but not yet
# committed are left out)
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 cp --parents -t "$work/src"
"$PYTHON" -m build --sdist --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
sdist="$(ls "$work"/dist/mininet_dl-*.tar.gz)"   # the distribution is mininet-dl (PEP 625: mininet_dl)
# the wheel is built from the unpacked sdist alone, so a file missing from it fails here
MININET_PORTABLE=1 "$PYTHON" -m pip wheel --no-deps -w "$work/wheel" "$sdist" > "$work/wheel.log" 2>&1 || { cat "$work/wheel.log"; exit 1; }
wheel="$(ls "$work"/wheel/mininet_dl-*.whl)"
# the metadata an index would show: it parses and the README renders (--strict: warnings fail too)
"$PYTHON" -m twine check --strict "$sdist" "$wheel"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
checks="$(pwd)/.ci"
cd "$work"   # not the checkout: the installed package must stand alone
"$work/venv/bin/mininet" info
# installed from the wheel: the distribution's name, and no kernel sources to compare with
"$work/venv/bin/mininet" info --json | "$work/venv/bin/python" -c "import json, sys; i = json.load(sys.stdin); assert i['install']['distribution'].startswith('mininet-dl ') and i['install']['editable'] is False and i['extension_matches_source'] is None, i"
"$work/venv/bin/python" -c "import mininet, numpy as np; from mininet.ndarray import NDArray; a = NDArray(np.eye(3, dtype=np.float32)); assert ((a @ a).numpy() == np.eye(3)).all(); print('sdist -> wheel -> venv: ok')"
# the modules built per kernel set: each set this CPU runs imports its own, and computes
"$work/venv/bin/python" "$checks/variant_check.py"
