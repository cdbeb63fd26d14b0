"""The GEMM under any cache blocking (matmul.set_blocking, set_blocking_bf16): tiny
blocks, blocks that are not multiples of MR or NR, blocks of 1 and huge ones, on every
GEMM path (in place, few rows, transposed B, narrow, blocked, K split), float32 and
float64, 1 and 2 threads, plain, transposed and sliced operands, against numpy float64.
The sweep runs in a fresh process per kernel set (MININET_ISA), so a packing buffer
written past its end shows as a crash (glibc's heap checks) rather than passing by luck."""
import os

import numpy as np
import pytest

from conftest import run_under_isa
from mininet_ext import _isa, matmul

SUPPORTED = _isa.supported()

SWEEP = r"""
import json
import numpy as np
import mininet as mn
from mininet import amp
from mininet.ndarray import NDArray
from mininet_ext import matmul

rng = np.random.default_rng(0)
TOL = {np.float32: 2e-5, np.float64: 1e-12}
count = 0

def close(got, want, tol, k, what):
    global count
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = float(np.abs(got - want).max(initial=0.0))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert err <= tol * max(1.0, np.sqrt(k)) * 4 * scale, f"{what}: max error {err:g}"
    count += 1

def bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)

def products(m, n, k, dtype, what):
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((k, n)).astype(dtype)
    want = x.astype(np.float64) @ y.astype(np.float64)
    tol = TOL[dtype]
    close((NDArray(x) @ NDArray(y)).numpy(), want, tol, k, what)
    yt = NDArray(np.ascontiguousarray(y.T)).T            # B transposed: the swap path
    close((NDArray(x) @ yt).numpy(), want, tol, k, what + " B^T")
    xt = NDArray(np.ascontiguousarray(x.T)).T            # A transposed
    close((xt @ NDArray(y)).numpy(), want, tol, k, what + " A^T")
    wide = np.zeros((m + 1, 2 * k), dtype)
    wide[1:, ::2] = x                                    # A sliced: offset, column stride 2
    close((NDArray(wide)[1:, ::2] @ NDArray(y)).numpy(), want, tol, k, what + " A[1:, ::2]")
    if dtype == np.float32:                              # the bf16 GEMM, its own blocking
        want16 = bf16(x).astype(np.float64) @ bf16(y).astype(np.float64)
        close(amp.matmul(NDArray(x), NDArray(y), "bf16").numpy(), want16, tol, k, what + " bf16")
        close(amp.matmul(NDArray(x), yt, "bf16").numpy(), want16, tol, k, what + " bf16 B^T")

info = matmul.blocking()
mr, nr = info["mr"], info["nr_f32"]
# (mc, kc, nc): ones, tiny, not multiples of MR or NR, the reported crashes, the default,
# larger than any operand
BLOCKS = [(1, 1, 1), (5, 7, 3), (13, 17, 33), (384, 384, 16), (12, 64, 64), (6, 384, 40),
          (8, 384, 2048), (mr + 1, 3, nr - 1), (192, 384, 2048), (4096, 4096, 1 << 20)]
# every path: in place, few rows (M around MR, 4 MR), narrow, blocked, a long K (the K split
# with small KC), matrix-vector, edges around MR and NR
SHAPES = [(40, 40, 40), (100, 100, 784), (150, 130, 140), (65, 65, 63), (7, 400, 300),
          (4 * mr, 200, 150), (4 * mr + 1, 8 * nr + 1, 70), (mr + 1, nr + 1, 33),
          (mr - 1, nr - 1, 31), (20, 30, 1200), (6, 25, 801), (3, 50, 40), (1, 1, 1),
          (2 * mr + 3, 4 * nr, 5)]
# B panels an A panel meets in turn: the default, one panel, three (groups end mid-block)
GROUPS = [None, 1, 3 * nr * 384 * 4]
for i, (mc, kc, nc) in enumerate(BLOCKS):
    matmul.set_blocking(mc, kc, nc, GROUPS[i % 3] or info["b_group"])
    matmul.set_blocking_bf16(mc, kc, nc)
    b = matmul.blocking()
    # around this setting's (rounded) blocks too: one past, one short
    edges = [(b["mc"] + 1, b["nc"] + 1, b["kc"] + 1), (max(b["mc"] - 1, 1), max(b["nc"] - 1, 1),
             max(b["kc"] - 1, 1))]
    for m, n, k in SHAPES + [e for e in edges if e[0] * e[1] * e[2] <= 1e6]:
        for threads in (1, 2):
            mn.set_num_threads(threads)
            for dtype in (np.float32, np.float64):
                products(m, n, k, dtype, f"{m}x{n}x{k} {np.dtype(dtype).name} "
                         f"blocks {(mc, kc, nc)} {threads} threads")
print(json.dumps({"isa": matmul.kernel_isa(), "checked": count}))
"""


@pytest.mark.parametrize("isa", _isa.ISAS)
def test_any_blocking_is_correct_and_writes_in_bounds(isa):
    if isa not in SUPPORTED:
        pytest.skip(f"this CPU or build lacks the {isa} kernels")
    out = run_under_isa(SWEEP, isa, timeout=600)
    assert out["isa"] == isa
    assert out["checked"] >= 10 * 14 * 2 * 2 * 4


@pytest.fixture
def restore_blocking():
    """The blocking as it was before the test, whatever the test set."""
    b, b16 = matmul.blocking(), matmul.bf16_info()
    yield
    matmul.set_blocking(b["mc"], b["kc"], b["nc"], b["b_group"])
    matmul.set_blocking_bf16(b16["mc"], b16["kc"], b16["nc"])
    assert matmul.blocking() == b and matmul.bf16_info() == b16


def test_blocks_are_rounded_to_whole_micro_panels(restore_blocking):
    # the blocked product's tile height (the generic path's pre-broadcast A: 6, not MR)
    mr, nr = matmul.blocking()["mr_blocked"], matmul.blocking()["nr_f32"]
    matmul.set_blocking(1, 1, 1)
    assert (matmul.blocking()["mc"], matmul.blocking()["kc"], matmul.blocking()["nc"]) == (mr, 1, nr)
    matmul.set_blocking(mr + 1, 5, nr + 1)
    b = matmul.blocking()
    assert (b["mc"], b["kc"], b["nc"]) == (2 * mr, 5, 2 * nr)
    assert b["nc"] % b["nr_f64"] == 0
    info = matmul.bf16_info()
    matmul.set_blocking_bf16(1, 3, 1)
    b16 = matmul.bf16_info()
    assert (b16["mc"], b16["kc"], b16["nc"]) == (info["mr"], 4, info["nr"])


@pytest.mark.parametrize("setter", ["set_blocking", "set_blocking_bf16"])
@pytest.mark.parametrize("sizes,word", [((0, 384, 2048), "positive"), ((192, -1, 2048), "positive"),
                                        ((192, 384, 0), "positive"),
                                        ((192, 384, 1 << 40), "at most")])
def test_bad_blocks_are_refused(restore_blocking, setter, sizes, word):
    before = matmul.blocking(), matmul.bf16_info()
    with pytest.raises(ValueError, match=f"{setter}: block sizes must be {word}"):
        getattr(matmul, setter)(*sizes)
    assert (matmul.blocking(), matmul.bf16_info()) == before   # nothing half set


@pytest.mark.parametrize("group", [0, -5, 1 << 40])
def test_bad_b_group_is_refused(restore_blocking, group):
    before = matmul.blocking()
    with pytest.raises(ValueError, match="set_blocking: b_group must be 1 to"):
        matmul.set_blocking(192, 384, 2048, group)
    assert matmul.blocking() == before


def test_small_blocks_in_process(restore_blocking):
    """One setting that used to overflow the narrow path's packed B, in this process."""
    import mininet as mn
    matmul.set_blocking(384, 384, 16)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((100, 784)).astype(np.float32)
    b = rng.standard_normal((784, 100)).astype(np.float32)
    got = (mn.Tensor(a) @ mn.Tensor(b)).numpy()
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=0, atol=2e-3)


def test_shared_b_blocks_same_bits_on_any_team(restore_blocking):
    """The team's shared B blocks (claimed by chunks of panels into two alternating
    buffers): many blocks along K, two along N, on 1 to 4 threads, give the same bits,
    and match float64."""
    import mininet as mn
    from mininet.ndarray import NDArray
    matmul.set_blocking(48, 40, 1024)   # blocks of 32 panels: 4 claims (AVX-512 float32)
    rng = np.random.default_rng(7)
    # big enough that timing gives the product its threads (threads_timed)
    a = rng.standard_normal((600, 513)).astype(np.float32)
    b = rng.standard_normal((513, 1100)).astype(np.float32)
    before = mn.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3, 4):
            mn.set_num_threads(t)
            outs.append((NDArray(a) @ NDArray(b)).numpy())
    finally:
        mn.set_num_threads(before)
    for got in outs[1:]:
        np.testing.assert_array_equal(got, outs[0])
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(outs[0] - want).max() <= 1e-4 * np.abs(want).max()


def _sysfs_l1d_bytes():
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            with open(os.path.join(path, "level")) as f, open(os.path.join(path, "type")) as g:
                if f.read().strip() == "1" and g.read().strip() == "Data":
                    with open(os.path.join(path, "size")) as h:
                        size = h.read().strip()
                    return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    except OSError:
        pass
    return None


def test_a_panel_held_in_l1_is_half_the_l1_data_cache():
    """The blocked product keeps packed A panels of up to half of L1 there (A-panel-major
    tiles); the size comes from sysconf, checked here against sysfs."""
    l1 = _sysfs_l1d_bytes()
    if l1 is None:
        pytest.skip("no L1 data cache size in sysfs")
    assert matmul.blocking()["a_panel_l1"] == l1 // 2
