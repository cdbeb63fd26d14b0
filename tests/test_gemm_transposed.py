"""GEMM with a transposed B (g @ W.T: B has row stride 1, each column contiguous), whose
packing transposes blocks of columns in vector registers (_gemm.h pack_b_t, _tr16.h),
under every kernel set this CPU runs (MININET_ISA, a fresh process each): odd N and K
(not multiples of the vector width or of NR, N < NR, K < 16), partial K and N blocks,
column strides wider than K and offset views, float32 and float64, 1 and 2 threads,
against float64 numpy; zero-size dimensions. Also A transposed times a thin B (x.T @ g
with g's few columns, the logits' weight gradient), which runs as C^T = g.T @ x."""
import json

import numpy as np
import pytest

from conftest import run_python
from mininet_ext import _isa
from test_isa_dispatch import isa_env

SUPPORTED = _isa.supported()

CHECK = r"""
import json
import numpy as np
import mininet as mn
from mininet.ndarray import NDArray
from mininet_ext import _omp, matmul

_omp.set_adaptive(False)   # the thread count by size alone: 2 threads mean 2
rng = np.random.default_rng(5)
TOL = {np.float32: 3e-6, np.float64: 1e-14}
count = 0

def check(m, n, k, dtype, how):
    global count
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)       # B = w.T
    if how == "t":          # a transposed compact W: column stride k
        b = NDArray(w).T
    elif how == "wide":     # W's rows 2k + 3 apart, from an offset: column stride 2k + 3
        store = np.zeros((n + 1, 2 * k + 3), dtype)
        store[1:, 3:3 + k] = w
        b = NDArray(store)[1:, 3:3 + k].T
    else:                   # "swap": swapaxes of a compact W (the autograd's view)
        b = NDArray(w).swapaxes(0, 1)
    assert b.strides[0] == 1 and b.shape == (k, n), (b.strides, b.shape)
    got = (NDArray(x) @ b).numpy()
    want = x.astype(np.float64) @ w.astype(np.float64).T
    scale = np.sqrt(np.abs(x.astype(np.float64)) ** 2 @ np.abs(w.astype(np.float64).T) ** 2) + 1e-30
    err = float(np.max(np.abs(got - want) / (scale * np.sqrt(k)))) if got.size else 0.0
    assert got.shape == (m, n) and err <= TOL[dtype], (m, n, k, dtype, how, err)
    count += 1

# blocked (N > 8 NR), narrow (N <= 8 NR, incl. N < NR), few rows with narrow N, K split;
# N and K off the vector width and NR, K < 16, K = 1
SHAPES = [(256, 1024, 1024), (97, 300, 180), (61, 529, 385), (130, 301, 17),
          (50, 37, 100), (300, 20, 15), (70, 5, 3), (64, 45, 1), (257, 129, 16),
          (30, 20, 33), (13, 7, 9), (20, 40, 4000)]
info = matmul.blocking()
for mc, kc, nc in [(info["mc"], info["kc"], info["nc"]), (30, 50, 96)]:
    matmul.set_blocking(mc, kc, nc)
    for threads in (1, 2):
        mn.set_num_threads(threads)
        for dtype in (np.float32, np.float64):
            for m, n, k in SHAPES:
                for how in ("t", "wide", "swap"):
                    check(m, n, k, dtype, how)

def check_thin(m, n, k, dtype, how):
    # A transposed times a thin B (x.T @ g, n <= NR / 2): computed as C^T = g.T @ x
    global count
    x = rng.standard_normal((k, m)).astype(dtype)       # A = x.T
    y = rng.standard_normal((k, n)).astype(dtype)
    if how == "t":
        a = NDArray(x).T
    else:                   # x's rows m + 3 apart, from an offset
        store = np.zeros((k, m + 4), dtype)
        store[:, 1:m + 1] = x
        a = NDArray(store)[:, 1:m + 1].T
    assert a.strides[0] == 1 and a.shape == (m, k), (a.strides, a.shape)
    got = (a @ NDArray(y)).numpy()
    want = x.astype(np.float64).T @ y.astype(np.float64)
    scale = np.sqrt(np.abs(x.astype(np.float64).T) ** 2 @ np.abs(y.astype(np.float64)) ** 2) + 1e-30
    err = float(np.max(np.abs(got - want) / (scale * np.sqrt(k))))
    assert got.shape == (m, n) and err <= TOL[dtype], (m, n, k, dtype, how, err)
    count += 1

THIN = [(1024, 10, 256), (97, 1, 33), (300, 16, 7), (130, 3, 1000), (200, 2, 5), (777, 8, 64),
        (100, 5, 3100)]
for mc, kc, nc in [(info["mc"], info["kc"], info["nc"]), (30, 50, 96)]:
    matmul.set_blocking(mc, kc, nc)
    for threads in (1, 2):
        mn.set_num_threads(threads)
        for dtype in (np.float32, np.float64):
            for m, n, k in THIN:
                for how in ("t", "wide"):
                    check_thin(m, n, k, dtype, how)
# zero-size dimensions
for m, n, k in [(0, 40, 30), (40, 0, 30), (40, 300, 0)]:
    got = (NDArray(np.ones((m, k), np.float32)) @ NDArray(np.ones((n, k), np.float32)).T).numpy()
    assert got.shape == (m, n) and (got == 0).all()
print(json.dumps({"isa": matmul.kernel_isa(), "checked": count}))
"""


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_transposed_b_of_each_kernel_set(isa):
    if isa not in SUPPORTED:
        pytest.skip(f"this CPU or build lacks the {isa} kernels")
    r = run_python(CHECK, env=isa_env(MININET_ISA=isa), timeout=600)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["isa"] == isa and out["checked"] == 2 * 2 * 2 * 12 * 3 + 2 * 2 * 2 * 7 * 2
