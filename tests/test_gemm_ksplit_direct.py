"""The narrow K split (matmul.pyx's gemm_ksplit, direct): a product with few columns and a
longer K than M (an MLP's x @ W1, 100 x 784 x 100) splits K over the threads, each
packing only its slice of B, and adds the partial products. Checked against float64
numpy at the column edges of the kernels (N past a multiple of NR, half panels, a
4-column tail), short row panels, transposed and sliced A, float32 and float64, 2 and 3
threads; and which shapes take it (matmul.path_of)."""
import numpy as np
import pytest

import mininet as mn
from mininet.ndarray import NDArray
from mininet_ext import _omp, matmul

TOL = {np.float32: 2e-6, np.float64: 1e-14}


@pytest.fixture
def threads():
    old, adaptive = mn.get_num_threads(), _omp.set_adaptive(False)
    yield mn.set_num_threads
    mn.set_num_threads(old)
    _omp.set_adaptive(adaptive)


def operand(x, how):
    if how == "plain":
        return NDArray(x)
    if how == "a_t":   # A transposed (x.T of a weight gradient): rows one item apart
        return NDArray(np.ascontiguousarray(x.T)).T
    wide = np.zeros((x.shape[0] + 1, 2 * x.shape[1]), x.dtype)
    wide[1:, ::2] = x   # an offset and a column stride of 2
    return NDArray(wide)[1:, ::2]


# (M, K, N), each with work enough for 3 threads (threads_for) but the last (2): the MLP's
# layer with its 4-column tail (100 = 3 x 32 + 4), N under a half panel, a half panel, N
# = 5, the widest narrow N, an odd K and a short last row panel (M = 4 MR + 1), M just
# under K
SHAPES = [(100, 784, 100), (200, 3200, 10), (150, 2700, 16), (400, 3201, 5), (64, 1000, 256),
          (49, 3001, 45), (255, 256, 64)]


@pytest.mark.parametrize("nt", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["plain", "a_t", "sliced"])
def test_k_split_of_narrow_products_matches_numpy(threads, nt, dtype, how):
    threads(nt)
    if mn.get_num_threads() < nt:
        pytest.skip(f"OpenMP gives {mn.get_num_threads()} threads here")
    rng = np.random.default_rng(nt)
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(dtype)
        y = rng.standard_normal((k, n)).astype(dtype)
        a = operand(x, how)
        itemsize = np.dtype(dtype).itemsize
        ars, acs = (s // itemsize for s in a.strides)
        nr = matmul.blocking()["nr_f32" if dtype == np.float32 else "nr_f64"]
        if how == "plain" and n <= 8 * nr and k >= 128 * nt and m * n * k >= (1 << 21) * nt:
            assert matmul.path_of(m, n, k, ars, acs, n, 1, itemsize) == "ksplit_direct", (m, k, n)
        got = (a @ NDArray(y)).numpy()
        want = x.astype(np.float64) @ y.astype(np.float64)
        scale = np.sqrt((x.astype(np.float64) ** 2) @ (y.astype(np.float64) ** 2)) + 1e-300
        err = float(np.max(np.abs(got - want) / scale))
        assert err <= TOL[dtype] * np.sqrt(k), (m, k, n, how, err)
        # the same product on one thread (the row-split direct path): the K split's
        # partials change the rounding only
        threads(1)
        one = (a @ NDArray(y)).numpy()
        threads(nt)
        assert np.allclose(got, one, rtol=0, atol=TOL[dtype] * np.sqrt(k) * scale.max())


def _narrow():
    """The MLP's hidden width (100), or the widest N the kernel set's narrow paths take
    (8 panels: 64 columns for the generic set's 8-wide panels)."""
    return min(100, 8 * matmul.blocking()["nr_f32"])


def test_path_of_names_where_the_k_split_applies(threads):
    threads(2)
    if mn.get_num_threads() < 2:
        pytest.skip("OpenMP gives one thread here")
    n = _narrow()
    assert matmul.path_of(100, n, 784, 784, 1, n, 1) == "ksplit_direct"
    # rows split where M is not below K (the MLP's weight gradient x.T @ g, 784 x 100 x 100)
    assert matmul.path_of(784, n, 100, 1, 784, n, 1) == "direct"
    # too short a K for two slices of 128
    assert matmul.path_of(100, n, 200, 200, 1, n, 1) == "direct"
    assert matmul.path_of(100, 300, 784, 784, 1, 300, 1) == "blocked"   # not narrow
    threads(1)
    assert matmul.path_of(100, n, 784, 784, 1, n, 1) == "direct"


def test_path_of_refuses_bad_arguments():
    with pytest.raises(ValueError, match="path_of: sizes"):
        matmul.path_of(-1, 2, 3, 3, 1, 2, 1)
    with pytest.raises(ValueError, match="path_of"):
        matmul.path_of(2, 2, 3, 3, 1, 2, 1, itemsize=2)


def test_k_split_rounding_does_not_depend_on_how_many_threads_ran_it():
    """The slices of K are fixed by the size; timing may run them all on one thread (a busy
    machine), and the sums, hence every bit of the result, stay the same."""
    old = mn.get_num_threads()
    mn.set_num_threads(2)
    try:
        if mn.get_num_threads() < 2:
            pytest.skip("OpenMP gives one thread here")
        rng = np.random.default_rng(7)
        n = _narrow()
        x = NDArray(rng.standard_normal((100, 784)).astype(np.float32))
        w = NDArray(rng.standard_normal((784, n)).astype(np.float32))
        assert matmul.path_of(100, n, 784, 784, 1, n, 1) == "ksplit_direct"
        _omp.reset_wake_cost(0)
        both = (x @ w).numpy()
        # waking a thread "costs a second": for the next 20 ms timing runs jobs on one
        _omp.reset_wake_cost(1e9)
        one = (x @ w).numpy()
        assert np.array_equal(both, one)
    finally:
        _omp.reset_wake_cost(0)
        mn.set_num_threads(old)


def test_k_split_adds_this_calls_partials(threads):
    """Products alternating between two B matrices: a sum read before the other slice's
    partial is written would show the previous call's values (a missing barrier)."""
    threads(2)
    if mn.get_num_threads() < 2:
        pytest.skip("OpenMP gives one thread here")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((100, 784)).astype(np.float32)
    ws = [rng.standard_normal((784, 100)).astype(np.float32) for _ in range(2)]
    wants = [x.astype(np.float64) @ w.astype(np.float64) for w in ws]
    a, bs = NDArray(x), [NDArray(w) for w in ws]
    for i in range(200):
        got = (a @ bs[i % 2]).numpy()
        assert np.max(np.abs(got - wants[i % 2])) < 1e-3, i
