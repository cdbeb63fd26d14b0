"""The generic (SSE2) kernel set's GEMM micro-kernels (_gemm_sse2.h: rotated A vectors
instead of broadcasts) against float64 numpy, in a fresh process under MININET_ISA=generic:
m, n, k of 0, 1, odd and off-tile sizes, the accumulating calls of a k split into tiny blocks,
non-contiguous and offset operands, and
2 threads."""
import pytest

from conftest import run_python
from mininet_ext import _isa
from test_isa_dispatch import isa_env

pytestmark = pytest.mark.skipif("generic" not in _isa.supported(),
                                reason="this build or CPU has no generic kernel set")

CHECK = r"""
import numpy as np
import mininet
from mininet_ext import _isa, matmul
assert _isa.active() == "generic" and matmul.blocking()["mr"] == 4, _isa.active()
rng = np.random.default_rng(7)
TOL = {"float32": 2e-6, "float64": 1e-14}

def check(m, n, k, dtype, view=False):
    x, y = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    if view:   # offset and strides both ways, through a transposed view too
        big = rng.standard_normal((2 * m + 1, 3 * k + 2))
        x = big[1::2, 2::3]
        yt = rng.standard_normal((n + 3, k)).T[:, 3:] if n else y
        y = np.asarray(yt)
        xt, ytt = mininet.Tensor(big, dtype=dtype)[1::2, 2::3], (
            mininet.Tensor(yt.T.copy(), dtype=dtype).transpose() if n else mininet.Tensor(y, dtype=dtype))
    else:
        xt, ytt = mininet.Tensor(x, dtype=dtype), mininet.Tensor(y, dtype=dtype)
    xr, yr = x.astype(dtype).astype(np.float64), y.astype(dtype).astype(np.float64)
    got = (xt @ ytt).numpy()
    want = xr @ yr
    assert got.shape == (m, n) and got.dtype == np.dtype(dtype), (got.shape, got.dtype)
    scale = np.sqrt(np.abs(xr) ** 2 @ np.abs(yr) ** 2) + 1e-30
    err = np.max(np.abs(got - want) / (scale * np.sqrt(max(k, 1)))) if got.size else 0.0
    assert err <= TOL[dtype], (m, n, k, dtype, view, err)

SIZES = [(0, 9, 9), (9, 0, 9), (9, 9, 0), (1, 1, 1), (4, 8, 1), (4, 8, 2), (5, 9, 3),
         (7, 17, 13), (33, 31, 29), (64, 64, 64), (67, 71, 385), (130, 9, 777), (9, 130, 777)]
for dtype in ("float32", "float64"):
    for m, n, k in SIZES:
        check(m, n, k, dtype)
        check(m, n, k, dtype, view=True)
# a tiny k block: every k block after the first accumulates into C (MC or NC below the
# shape crashes in matmul.pyx's buffer sizing as of this writing, so they stay)
old = matmul.blocking()
matmul.set_blocking(old["mc"], 5, old["nc"])
try:
    for dtype in ("float32", "float64"):
        for m, n, k in [(9, 13, 11), (17, 25, 23), (40, 40, 40), (3, 50, 17)]:
            check(m, n, k, dtype)
finally:
    matmul.set_blocking(old["mc"], old["kc"], old["nc"])
print("ok")
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_generic_gemm_matches_float64_numpy(threads):
    r = run_python(CHECK, env=isa_env(MININET_ISA="generic", MININET_NUM_THREADS=threads),
                   timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout[-2000:] + r.stderr[-3000:]
