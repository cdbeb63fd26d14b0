"""Kernel coverage of an emulated run: which extern "C" entry points of cuda_src/*.cu ran.

    MININET_CUDA=emulate MININET_CUDA_EMU_COVERAGE=cov.json python -m pytest -m gpu tests
    python -m mininet.backend.emulator cov.json
"""
import json
import sys
from pathlib import Path

from .. import cuda_build


def report(path):
    """The table of every entry point with its fast/checked launches; returns the number
    that never ran."""
    ran = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    missing = 0
    for src in cuda_build.sources():
        for k in cuda_build.scan_kernels(src.stem):
            c = ran.get(k["name"], {"fast": 0, "checked": 0})
            missing += c["fast"] + c["checked"] == 0
            status = "ran" if c["fast"] + c["checked"] else "NEVER RAN"
            print(f"{src.name:16s} {k['name']:28s} {c['checked']:7d} checked {c['fast']:8d} fast  {status}")
    print(f"{missing} entry points never ran")
    return missing


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(1 if report(sys.argv[1]) else 0)
