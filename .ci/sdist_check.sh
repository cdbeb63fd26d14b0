#!/usr/bin/env bash
# The packaging path a user takes: sdist -> wheel built from that sdist -> fresh venv -> run.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# build from a copy of the repository's files only: a left-over *.egg-info/SOURCES.txt in
# the checkout would otherwise fill in whatever MANIFEST.in forgets
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src"
"$PYTHON" -m build --sdist --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
sdist="$(ls "$work"/dist/mininet-*.tar.gz)"
# the wheel is built from the unpacked sdist alone, so a file missing from it fails here
MININET_PORTABLE=1 "$PYTHON" -m pip wheel --no-deps -w "$work/wheel" "$sdist" > "$work/wheel.log" 2>&1 || { cat "$work/wheel.log"; exit 1; }
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$work"/wheel/mininet-*.whl
cd "$work"   # not the checkout: the installed package must stand alone
"$work/venv/bin/mininet" info
"$work/venv/bin/python" -c "import mininet, numpy as np; from mininet.ndarray import NDArray; a = NDArray(np.eye(3, dtype=np.float32)); assert ((a @ a).numpy() == np.eye(3)).all(); print('sdist -> wheel -> venv: ok')"
