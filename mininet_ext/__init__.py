"""Compiled kernels (private). Importing this package loads GNU OpenMP with a bounded spin.

libgomp's threads spin up to ~300,000 iterations (milliseconds) waiting for work before
they sleep. On a busy machine that spinning steals the cores the other thread needs: a CNN
epoch ran 40% slower with 2 threads than with 1 next to one busy process. Too short a spin
costs the other way: waking a sleeping thread took 25-55 us under KVM (AMD EPYC), more than
a small convolution's whole kernel, and a training step's Python between two parallel
regions is often 30-150 us. GOMP_SPINCOUNT=10000 spins ~0.2-0.3 ms there: it covers those
gaps, and stays far from the default's loaded slowdown (bench/RESULTS.md, "OpenMP spin,
session 13"). libgomp reads the variable
once, when it loads, so it is set only while our first extension loads and then removed:
other libraries' OpenMP runtimes (PyTorch's) and child processes never see it. A user's
own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
"""
import os as _os

SPIN_DEFAULT = "10000"


def _load_openmp():
    if "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ:
        return None
    _os.environ["GOMP_SPINCOUNT"] = SPIN_DEFAULT
    try:
        # a module with parallel loops: it links libgomp, which reads the variable on load
        # (_omp itself does not link it: its one OpenMP call is optimised away)
        from . import strided  # noqa: F401
    finally:
        del _os.environ["GOMP_SPINCOUNT"]
    return SPIN_DEFAULT


WAIT_POLICY = _load_openmp()   # None: the user's environment decides
