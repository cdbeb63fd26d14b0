"""The blocked GEMM of each kernel set (MININET_ISA, a fresh process each) against float64
numpy: the generic set's pre-broadcast A panels (_gemm.h, kernel_bc: 6-row panels, each
A value stored as a whole vector) at edges of 6 rows, 8 columns and K blocks, transposed
and sliced operands, blocks smaller than the operands, 1 and 2 threads; and what
matmul.blocking() reports of it. Also: peak.fma() is peak.fma_path() over this build's
own kernel (the same sums where the vector width and FMA agree)."""
import json

import numpy as np
import pytest

from conftest import run_python
from mininet_ext import _isa, peak
from test_isa_dispatch import isa_env

SUPPORTED = _isa.supported()

CHECK = r"""
import json
import numpy as np
import mininet as mn
from mininet.ndarray import NDArray
from mininet_ext import _omp, matmul

_omp.set_adaptive(False)   # the thread count by size alone: 2 threads mean 2
rng = np.random.default_rng(3)
TOL = {np.float32: 3e-6, np.float64: 1e-14}
info = matmul.blocking()
count = 0

def check(m, n, k, dtype, how):
    global count
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((k, n)).astype(dtype)
    if how == "plain":
        a = NDArray(x)
    elif how == "a_t":   # A transposed: packed down its columns
        a = NDArray(np.ascontiguousarray(x.T)).T
    else:                # A sliced: an offset and a column stride of 2
        wide = np.zeros((m + 1, 2 * k), dtype)
        wide[1:, ::2] = x
        a = NDArray(wide)[1:, ::2]
    got = (a @ NDArray(y)).numpy()
    want = x.astype(np.float64) @ y.astype(np.float64)
    scale = np.sqrt(np.abs(x.astype(np.float64)) ** 2 @ np.abs(y.astype(np.float64)) ** 2) + 1e-30
    err = float(np.max(np.abs(got - want) / (scale * np.sqrt(k)))) if got.size else 0.0
    assert got.shape == (m, n) and err <= TOL[dtype], (m, n, k, dtype, how, err)
    count += 1

# wide enough for the blocked path (N > 8 NR) and past the in-place size; edges of the
# 6-row panels (m % 6 = 1..5), of the 8 / 16 / 32 columns, and of the K blocks
SHAPES = [(97, 300, 180), (102, 301, 385), (257, 515, 200), (61, 530, 769), (300, 290, 64)]
for mc, kc, nc in [(info["mc"], info["kc"], info["nc"]), (30, 50, 272), (7, 129, 300)]:
    matmul.set_blocking(mc, kc, nc)
    b = matmul.blocking()
    assert b["mc"] % b["mr_blocked"] == 0, b
    for threads in (1, 2):
        mn.set_num_threads(threads)
        for dtype in (np.float32, np.float64):
            for m, n, k in SHAPES:
                for how in ("plain", "a_t", "sliced"):
                    check(m, n, k, dtype, how)
print(json.dumps({"isa": matmul.kernel_isa(), "blocking": info, "checked": count}))
"""


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_blocked_gemm_of_each_path(isa):
    if isa not in SUPPORTED:
        pytest.skip(f"this CPU or build lacks the {isa} kernels")
    r = run_python(CHECK, env=isa_env(MININET_ISA=isa), timeout=600)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["isa"] == isa and out["checked"] == 3 * 2 * 2 * 5 * 3
    b = out["blocking"]
    if isa == "generic":   # SSE2: pre-broadcast A in 6-row panels, MR (conv's) stays 4
        assert b["pre_broadcast"] and b["mr_blocked"] == 6 and b["mr"] == 4, b
    else:
        assert not b["pre_broadcast"] and b["mr_blocked"] == b["mr"], b


def _own_path():
    """The kernel set whose peak kernel matches this build's own (-march=native) one."""
    for isa in reversed(_isa.ISAS):
        if isa in SUPPORTED:
            p = peak.path_info(isa)
            if p["vector_bits"] == peak.vector_bits() and p["fused"] == peak.fused() \
                    and p["chains"] == peak.chains():
                return isa
    return None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_is_fma_path_over_the_builds_own_kernel(dtype):
    isa = _own_path()
    if isa is None:
        pytest.skip("no kernel set has this build's vector width and FMA")
    for n, a, b, x0 in [(0, 0.5, 1.0, 0.0), (7, 0.5, 1.0, 0.25), (1000, -1.0, 0.0, 3.0),
                        (333, 0.75, 0.125, 1.5)]:
        for threads in (1, 2):
            assert peak.fma(dtype, n, threads, a, b, x0) == \
                peak.fma_path(isa, dtype, n, threads, a, b, x0)


def test_fma_and_fma_path_name_their_own_errors():
    with pytest.raises(ValueError, match="^fma: dtype must be float32 or float64, got 'int8'"):
        peak.fma("int8", 10)
    with pytest.raises(ValueError, match="^fma: iterations must be >= 0, got -2"):
        peak.fma("float32", -2)
    isa = SUPPORTED[0]
    with pytest.raises(ValueError, match="^fma_path: dtype must be float32 or float64"):
        peak.fma_path(isa, "int8", 10)
    with pytest.raises(ValueError, match="^fma_path: iterations must be >= 0, got -1"):
        peak.fma_path(isa, "float32", -1)
