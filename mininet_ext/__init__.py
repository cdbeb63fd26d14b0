"""Compiled kernels (private). Importing this package loads GNU OpenMP with a bounded spin.

libgomp's threads spin up to ~300,000 iterations (milliseconds) waiting for work before
they sleep. On a busy machine that spinning steals the cores the other thread needs: a CNN
epoch ran 40% slower with 2 threads than with 1 next to one busy process. Too short a spin
costs the other way: waking a sleeping thread took 25-55 us under KVM (AMD EPYC), more than
a small convolution's whole kernel, and a training step's Python between two parallel
regions is often 30-300 us. An idle thread here spins SPIN_US (~0.25 ms): it covers those
gaps, and stays far from the default's loaded slowdown (bench/RESULTS.md, "OpenMP spin,
session 13"). GOMP_SPINCOUNT counts spins, not time, and a spin took 13 ns on one CPU and
16-32 on another: the count is SPIN_US over a spin's time on this CPU, timed
at import (_isa.spin_ns; 10000 spins were 0.25 ms on the EPYC and 0.13 ms on a Xeon, too
short for a training loop's gaps there: "OpenMP spin by time, session 23").

libgomp reads the variable once, when it loads, so it is set only while our first
extension loads and then removed: other libraries' OpenMP runtimes (PyTorch's) and child
processes never see it. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
"""
import os as _os

SPIN_US = 250                 # how long an idle OpenMP thread waits for work, about
SPIN_DEFAULT = "10000"        # the count where a spin cannot be timed
SPIN_BOUNDS = (1000, 100000)  # the least and most spins a timing may give


def _spin_count():
    """GOMP_SPINCOUNT for SPIN_US on this CPU, as a string."""
    try:
        # (_isa runs no OpenMP: libgomp is not loaded yet when it is timed)
        from ._isa import spin_ns
        ns = spin_ns()
    except (ImportError, RuntimeError):   # a bad MININET_ISA: raised again by the kernels
        return SPIN_DEFAULT
    if not ns > 0:
        return SPIN_DEFAULT
    low, high = SPIN_BOUNDS
    return str(int(min(max(SPIN_US * 1000 / ns, low), high)))


def spin_us():
    """How long, in us, the count mininet set makes an idle OpenMP thread spin (timed again
    now); None where the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT decides."""
    if WAIT_POLICY is None:
        return None
    from ._isa import spin_ns
    return int(WAIT_POLICY) * spin_ns() / 1000


def _load_openmp():
    if "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ:
        return None
    _os.environ["GOMP_SPINCOUNT"] = count = _spin_count()
    try:
        # a module with parallel loops: it links libgomp, which reads the variable on load
        from . import strided  # noqa: F401
    finally:
        del _os.environ["GOMP_SPINCOUNT"]
    return count


WAIT_POLICY = _load_openmp()   # the spin count set; None: the user's environment decides
