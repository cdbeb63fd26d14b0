"""Threads and processes: fork() after threaded kernels, and set_num_threads racing
a running kernel. Each scenario runs in a subprocess with a timeout, so a hang or a
heap corruption fails the test instead of the test run."""
import textwrap

import pytest

from conftest import run_python

FORK_CHILD = """
import os, pickle, sys
import numpy as np
import mininet
from mininet import ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray

mininet.set_num_threads(2)
rng = np.random.default_rng(0)
a = rng.standard_normal((600, 600)).astype(np.float32)
x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)
w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)

def work():
    m = NDArray(a)
    y = ops.max_pool2d(ops.conv(Tensor(x), Tensor(w), padding=1), 2)
    return [(m @ m).numpy(), (m.exp() + m).sum(axis=0).numpy(), y.numpy()]

parent = work()          # starts the OpenMP team
r, wfd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    with os.fdopen(wfd, "wb") as f:
        pickle.dump((work(), mininet.get_num_threads()), f)
    os._exit(0)
os.close(wfd)
with os.fdopen(r, "rb") as f:
    child, child_threads = pickle.load(f)
os.waitpid(pid, 0)
for p, c in zip(parent, child):
    np.testing.assert_allclose(c, p, rtol=1e-4, atol=1e-3)
print("ok", child_threads)
"""

POOL = """
import multiprocessing as mp
import numpy as np
import mininet
from mininet.ndarray import NDArray

def square_sum(seed):
    a = NDArray(np.random.default_rng(seed).standard_normal((300, 300)))
    return float((a @ a).sum())

if __name__ == "__main__":
    mininet.set_num_threads(2)
    a = NDArray(np.ones((500, 500)))
    (a @ a).sum()
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(square_sum, range(4))
    want = [square_sum(s) for s in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    print("ok")
"""

RACE = """
import threading
import numpy as np
import mininet
from mininet.ndarray import NDArray

# rows < threads: the kernel splits each row's sum over the threads, with nt * rows
# partial sums in a scratch buffer; small live arrays around it catch stray writes
x = NDArray(np.ones((7, 200000)))
stop = False
errors = []

def reduce_loop():
    canaries, n = [], 0
    while not stop:
        n += 1
        canaries.append(NDArray(np.full(1 + n % 40, 3.0)))
        if n % 3 == 0:
            canaries.pop(len(canaries) // 2)   # holes, so scratch blocks move around
        s = x.sum(axis=1).numpy()
        if (s != 200000.0).any():
            errors.append(s)
    for c in canaries:
        if (c.numpy() != 3.0).any():
            errors.append(c.numpy())

t = threading.Thread(target=reduce_loop)
t.start()
for i in range(4000):
    mininet.set_num_threads(1 if i % 2 else 64)
stop = True
t.join()
assert not errors, errors[:5]
print("ok")
"""


def run_script(src, timeout=60):
    return run_python(textwrap.dedent(src), timeout=timeout)


def test_fork_after_threaded_kernels_runs_the_child():
    r = run_script(FORK_CHILD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "1"]   # the child runs serially


def test_fork_pool_after_threaded_kernels():
    r = run_script(POOL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_forked_child_refuses_more_threads_with_a_warning():
    src = FORK_CHILD.replace("pickle.dump((work(), mininet.get_num_threads()), f)", """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mininet.set_num_threads(4)
        assert "forked" in str(caught[0].message)
        pickle.dump((work(), mininet.get_num_threads()), f)""")
    r = run_script(src)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "1"]


def test_set_num_threads_while_another_thread_reduces():
    for _ in range(3):
        r = run_script(RACE)
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
        assert r.stdout.strip() == "ok"


def _openmp_env(extra):
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **extra)
    r = run_python("import os, mininet, mininet_ext; "
                   "print(os.environ.get('GOMP_SPINCOUNT'), mininet.get_num_threads(), "
                   "mininet_ext.WAIT_POLICY)",
                   env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split(), r.stderr


def test_openmp_threads_spin_briefly_by_default():
    """Long spin-waits made 2 threads slower than 1 next to a busy process (issue 11.17),
    and too short ones made every parallel kernel of a training step wait for a sleeping
    thread: libgomp loads with the GOMP_SPINCOUNT worth mininet_ext.SPIN_US on this CPU,
    and the variable does not leak into os.environ (PyTorch's own libgomp and child
    processes keep their defaults)."""
    import mininet_ext
    from mininet_ext import _isa
    out, shown = _openmp_env({})
    count = int(out[2])
    low, high = mininet_ext.SPIN_BOUNDS
    assert low <= count <= high
    assert f"GOMP_SPINCOUNT = '{count}'" in shown
    assert out[0] == "None"
    # the count spins about SPIN_US here (a loaded machine times a spin slower: wide bounds)
    spun_us = count * _isa.spin_ns() / 1000
    assert mininet_ext.SPIN_US / 4 <= spun_us <= mininet_ext.SPIN_US * 4 or count in (low, high)


def test_spin_timing_is_a_positive_time_and_checks_its_arguments():
    from mininet_ext import _isa
    ns = _isa.spin_ns(500, 5)
    assert 0.05 < ns < 1000   # a load and a pause hint: between a cycle and a microsecond
    for spins, rounds in ((0, 1), (1, 0), (-5, 3)):
        with pytest.raises(ValueError, match="spin_ns: spins and rounds must be >= 1"):
            _isa.spin_ns(spins, rounds)


def test_a_bad_isa_choice_still_loads_openmp_then_fails_where_kernels_load():
    """The spin is timed in _isa before libgomp loads; a MININET_ISA that _isa refuses must
    not break the package's import there (the default count is used), and the refusal
    still reaches the user when the kernels load."""
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(MININET_ISA="no-such-set")
    r = run_python("import mininet_ext; print(mininet_ext.WAIT_POLICY); import mininet",
                   env=env, timeout=60)
    assert r.returncode != 0
    assert r.stdout.split()[0] == __import__("mininet_ext").SPIN_DEFAULT
    assert "MININET_ISA='no-such-set' is not a kernel set" in r.stderr


def test_a_users_wait_policy_wins():
    out, shown = _openmp_env({"OMP_WAIT_POLICY": "ACTIVE"})
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in shown
    assert out[2] == "None"   # mininet set no count
    out, shown = _openmp_env({"GOMP_SPINCOUNT": "5"})
    assert "GOMP_SPINCOUNT = '5'" in shown
    assert out[2] == "None"
