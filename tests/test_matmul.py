"""matmul against numpy (float64 references) for every edge of the tiling."""
import numpy as np
import pytest

import mininet as mn
from mininet import nn
from mininet.ndarray import NDArray
from conftest import assert_close

rng = np.random.default_rng(1)
SIZES = [1, 7, 63, 65, 1000]


def check(x, y, a=None, b=None, dtype=np.float32):
    a = NDArray(x) if a is None else a
    b = NDArray(y) if b is None else b
    got = (a @ b).numpy()
    want = np.matmul(x.astype(np.float64), y.astype(np.float64))
    assert got.shape == want.shape
    assert_close(got, want, dtype, scale=x.shape[-1])


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
def test_odd_sizes(m, n):
    k = 65 if m * n < 10**5 else 63
    check(rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 4, 8, 9, 12, 13, 16, 20, 24, 28, 32, 40, 64, 76])
@pytest.mark.parametrize("kn", [(147, 8192), (64, 64), (100, 10), (40, 80), (300, 50)])
def test_row_edges_of_every_path(m, kn, dtype):
    """Row counts whose last panel is short (16 = 12 + 4, 64 = 5 x 12 + 4) on the
    few-rows, narrow and blocked paths, plain and with a transposed B."""
    k, n = kn
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((k, n)).astype(dtype)
    check(x, y, dtype=dtype)
    check(x, y, b=NDArray(np.ascontiguousarray(y.T)).T, dtype=dtype)


from mininet_ext.matmul import blocking as _blocking
KC, NC = _blocking()["kc"], _blocking()["nc"]


@pytest.mark.parametrize("k", sorted({1, 7, 255, 256, 257, 1000, 4096, KC - 1, KC, KC + 1, 2 * KC + 1}))
def test_long_k(k):
    check(rng.standard_normal((33, k)).astype(np.float32), rng.standard_normal((k, 45)).astype(np.float32))


@pytest.mark.parametrize("n", [NC - 1, NC + 1, 2 * NC + 33])
def test_wide_n_crosses_column_blocks(n):
    check(rng.standard_normal((70, KC + 5)).astype(np.float32),
          rng.standard_normal((KC + 5, n)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thin_product_long_k(dtype):
    # one output block and a long K: the K-split path (conv weight gradients)
    x = rng.standard_normal((6, 20011)).astype(dtype)
    y = rng.standard_normal((25, 20011)).astype(dtype)
    check(x, y.T, b=NDArray(y).T, dtype=dtype)


@pytest.fixture
def three_threads():
    """More threads than a product has panels to share evenly (set back afterwards)."""
    import mininet
    old = mininet.get_num_threads()
    mininet.set_num_threads(3)
    yield
    mininet.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(101, 99, 783),     # C sliced by columns
                                   (517, 70, 300),     # by rows
                                   (13, 500, 700)])    # two row panels: by columns, 2 threads
def test_small_products_sliced_over_threads(m, n, k, dtype, three_threads):
    # below 2^24 multiply-adds each thread computes whole micro-panels of C on its own
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((n, k)).astype(dtype)
    check(x, y.T, b=NDArray(y).T, dtype=dtype)
    check(x, y.T, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_and_float64(dtype):
    x = rng.standard_normal((300, 517)).astype(dtype)
    y = rng.standard_normal((517, 211)).astype(dtype)
    check(x, y, dtype=dtype)


def test_strided_operands():
    x = rng.standard_normal((120, 90)).astype(np.float32)
    y = rng.standard_normal((70, 90)).astype(np.float32)
    check(x, y.T, NDArray(x), NDArray(y).T)
    check(x[::2, 1::3], y.T[1::3, ::3], NDArray(x)[::2, 1::3], NDArray(y).T[1::3, ::3])
    check(x.T, x, NDArray(x).T, NDArray(x))


def test_batched_and_broadcast():
    x = rng.standard_normal((2, 3, 17, 20)).astype(np.float32)
    y = rng.standard_normal((3, 20, 9)).astype(np.float32)
    check(x, y)
    z = rng.standard_normal((1, 20, 9)).astype(np.float32)
    check(x, z)
    check(x[0, 0], y)


def test_vectors():
    A = rng.standard_normal((40, 30)).astype(np.float32)
    v = rng.standard_normal(30).astype(np.float32)
    w = rng.standard_normal(40).astype(np.float32)
    check(A, v)
    check(w, A)
    check(v, v)
    assert (NDArray(v) @ NDArray(v)).shape == ()


def test_zero_sizes():
    for m, k, n in [(0, 3, 4), (3, 0, 4), (3, 4, 0)]:
        x, y = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
        got = (NDArray(x) @ NDArray(y)).numpy()
        np.testing.assert_array_equal(got, x @ y)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 6\)"):
        NDArray(np.ones((3, 4))) @ NDArray(np.ones((5, 6)))
    with pytest.raises(ValueError, match="at least 1-d"):
        NDArray(np.float32(1)) @ NDArray(np.ones(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 4, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100])
@pytest.mark.parametrize("threads", [1, 3])
def test_narrow_products_every_edge(n, dtype, threads):
    """N <= 2 NR reads A in place (direct path), N edges of <= NR/2 columns take the
    half-width kernel; M edges, K blocks of equal size, transposed operands, threads."""
    import mininet
    old = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        for m, k in ((1, 5), (11, 9), (12, 300), (13, 784), (157, 40), (2000, 33)):
            x = rng.standard_normal((m, k)).astype(dtype)
            y = rng.standard_normal((k, n)).astype(dtype)
            check(x, y, dtype=dtype)
            check(x, y, a=NDArray(np.ascontiguousarray(x.T)).T, dtype=dtype)   # A column-major
            check(x, y, b=NDArray(np.ascontiguousarray(y.T)).T, dtype=dtype)
            sl = NDArray(np.concatenate([x, x], axis=1))[:, ::2]               # A column stride 2
            check(np.concatenate([x, x], axis=1)[:, ::2], y, a=sl, dtype=dtype)
    finally:
        mininet.set_num_threads(old)


@pytest.mark.parametrize("shape", [(100352, 9, 32), (6272, 288, 64), (20000, 784, 100)])
def test_tall_products_split_over_threads(shape):
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(np.float32)
    y = rng.standard_normal((k, n)).astype(np.float32)
    check(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 5, 12, 13, 20, 48])
@pytest.mark.parametrize("threads", [1, 2])
def test_few_rows_read_b_in_place(m, dtype, threads):
    """M <= 4 MR and N past the narrow path: B is read in place (a recurrent step's
    h @ W_hh); every N edge, K blocks, a transposed A, threads."""
    import mininet
    old = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        for n, k in ((1024, 256), (300, 700), (513, 9), (1000, 1)):
            x = rng.standard_normal((m, k)).astype(dtype)
            y = rng.standard_normal((k, n)).astype(dtype)
            check(x, y, dtype=dtype)
            check(x, y, a=NDArray(np.ascontiguousarray(x.T)).T, dtype=dtype)
            big = np.concatenate([y, y], axis=1)                # B rows longer than N
            check(x, y, b=NDArray(big)[:, :n], dtype=dtype)
    finally:
        mininet.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 7, 20, 48])
def test_few_rows_times_a_transposed_b(m, dtype, three_threads):
    """h @ W.T with few rows (an RNN step's input gradient) runs as W @ h.T, transposed."""
    for n, k in ((256, 1024), (48, 5), (1000, 300)):
        x = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        check(x, w.T, b=NDArray(w).T, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_small_products_in_place_every_edge(dtype, threads):
    """Small products (A and B within 32768 elements) are multiplied without packing:
    every row remainder of the 12-row tiles (8 + 4 + 2 + 1 kernels), column edges by
    masked loads and stores (1..70 columns), A transposed or strided, the threads'
    row and column splits; a batch of three shows no store strays into a neighbour."""
    import mininet
    old = mininet.get_num_threads()
    mininet.set_num_threads(threads)
    try:
        for m in list(range(4, 31)) + [47, 64, 100]:
            for n in (1, 5, 8, 10, 16, 17, 31, 32, 33, 48, 64, 70):
                k = 1 + (m * 7 + n) % 90
                x = rng.standard_normal((m, k)).astype(dtype)
                y = rng.standard_normal((k, n)).astype(dtype)
                check(x, y, dtype=dtype)
                if n in (10, 33):
                    check(x, y, a=NDArray(np.ascontiguousarray(x.T)).T, dtype=dtype)
                    wide = np.concatenate([x, x], axis=1)
                    check(wide[:, ::2], y, a=NDArray(wide)[:, ::2], dtype=dtype)
        x = rng.standard_normal((3, 13, 40)).astype(dtype)
        y = rng.standard_normal((3, 40, 21)).astype(dtype)
        check(x, y, dtype=dtype)
        check(np.ones((64, 64), dtype), np.ones((64, 64), dtype), dtype=dtype)
    finally:
        mininet.set_num_threads(old)


@pytest.mark.parametrize("view", ["compact", "offset", "row-step", "batch-permuted",
                                  "batch-broadcast", "1-d b"])
def test_stacked_rows_times_one_matrix(view):
    """(N, L, D) @ (D, E), a Linear on a sequence: folded into one (N*L, D) product where
    the batch dims merge into the rows without a copy, the batched path otherwise; both
    numpy's answer, in shape and value."""
    rng = np.random.default_rng(3)
    base = rng.random((6, 9, 8), dtype=np.float32)
    w = rng.random((8, 5), dtype=np.float32)
    nb = NDArray(base)
    a, na = {"compact": (base, nb), "offset": (base[1:], nb[1:]),
             "row-step": (base[:, ::2], nb[:, ::2]),
             "batch-permuted": (base.transpose(1, 0, 2), nb.permute((1, 0, 2))),
             "batch-broadcast": (np.broadcast_to(base[:1], (4, 9, 8)),
                                 nb[:1].broadcast_to((4, 9, 8))),
             "1-d b": (base, nb)}[view]
    assert na.strides[:2] != (0, 0) or view == "batch-broadcast"
    b = w[:, 0] if view == "1-d b" else w
    got = na @ NDArray(b)
    want = a @ b
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("rows,k,n", [(300, 16, 1024), (256, 257, 1100)])
def test_linear_bias_gradient_taken_in_the_weight_product(rows, k, n):
    """Output gradients of BIAS_IN_PRODUCT items and more take the bias's sums from the
    weight's product (a column of ones): both against numpy float64, bias and weight
    gradients views of one result that later in-place accumulation keeps apart."""
    from mininet.ops import math as mmath
    assert rows * n >= mmath.BIAS_IN_PRODUCT
    rng = np.random.default_rng(rows)
    layer = nn.Linear(k, n)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    g = rng.standard_normal((rows, n)).astype(np.float32)
    for _ in range(2):   # the second backward accumulates into the first's gradients
        (layer(mn.Tensor(x)) * mn.Tensor(g)).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), 2 * (x.T.astype(np.float64) @ g),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.bias.grad.numpy().reshape(-1),
                               2 * g.astype(np.float64).sum(0), rtol=1e-4, atol=1e-3)


def test_linear_with_a_wide_input_sums_the_bias_gradient_on_its_own(monkeypatch):
    """Fewer outputs than twice the inputs: no copy of x with a column of ones (it would
    cost more than the pass over g it saves)."""
    from mininet.ops import math as mmath

    def refuse(*a):
        raise AssertionError("the bias's gradient went through the weight's product")
    monkeypatch.setattr(mmath, "_weight_and_bias_grads", refuse)
    rng = np.random.default_rng(9)
    layer = nn.Linear(64, 100)
    x, g = rng.standard_normal((3000, 64)), rng.standard_normal((3000, 100))
    (layer(mn.Tensor(x.astype(np.float32))) * mn.Tensor(g.astype(np.float32))).sum().backward()
    np.testing.assert_allclose(layer.bias.grad.numpy().reshape(-1), g.sum(0), rtol=1e-4,
                               atol=1e-3)
