"""The row kernels (mininet_ext/rows.pyx: layer norm, softmax and log-softmax over the last
dim) and the
ops that use them, against numpy float64: odd widths, one row, zero rows or features,
non-contiguous input, no weight or bias, float64, thread counts (the same bits), NaN and
-inf rows, second-order gradients (the ops-built backward) against finite differences.
Also the two matmul paths added with them: batched small products split over threads,
and a permuted stack of rows folded into one product through a copy."""
import numpy as np
import pytest

import mininet as mn
from mininet import nn, ops
from mininet.autograd import Tensor
from mininet.nn import functional as F
from mininet_ext import _isa
from mininet_ext.buffer import Buffer

rows = _isa.variant("rows")
SHAPES = [(1, 1), (3, 5), (7, 33), (64, 256), (5, 1000), (2, 3, 17)]


def ref_layer_norm(x, w, b, eps, ndim=1):
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    y = xhat * (1 if w is None else w) + (0 if b is None else b)
    return y, xhat


def ref_layer_norm_grad(g, xhat, x, w, eps, ndim=1):
    axes = tuple(range(x.ndim - ndim, x.ndim))
    lead = tuple(range(x.ndim - ndim))
    g = g.astype(np.float64)
    rstd = 1 / np.sqrt(x.astype(np.float64).var(axis=axes, keepdims=True) + eps)
    gw = g * (1 if w is None else w)
    dx = rstd * (gw - gw.mean(axis=axes, keepdims=True)
                 - xhat * (gw * xhat).mean(axis=axes, keepdims=True))
    return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


def ref_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_op_matches_float64(shape, dtype, affine):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    d = shape[-1]
    w = (rng.standard_normal(d) + 1).astype(dtype) if affine[0] else None
    b = rng.standard_normal(d).astype(dtype) if affine[1] else None
    g = rng.standard_normal(shape).astype(dtype)
    tx = Tensor(x, requires_grad=True)
    tw, tb = (None if a is None else Tensor(a, requires_grad=True) for a in (w, b))
    y = ops.layer_norm(tx, 1, tw, tb, 1e-5)
    assert y.dtype == dtype
    ry, xhat = ref_layer_norm(x, w, b, 1e-5)
    np.testing.assert_allclose(y.numpy(), ry, **tol(dtype))
    (y * Tensor(g)).sum().backward()
    dx, dw, db = ref_layer_norm_grad(g, xhat, x, w, 1e-5)
    np.testing.assert_allclose(tx.grad.numpy(), dx, **tol(dtype))
    if tw is not None:
        np.testing.assert_allclose(tw.grad.numpy(), dw, rtol=1e-4, atol=1e-4)
    if tb is not None:
        np.testing.assert_allclose(tb.grad.numpy(), db, rtol=1e-4, atol=1e-4)


def test_layer_norm_over_two_dims_of_a_permuted_input():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((5, 4, 6)).astype(np.float32)
    x = Tensor(base, requires_grad=True)
    xp = ops.permute(x, (1, 0, 2))        # (4, 5, 6), not compact
    w = Tensor(rng.standard_normal((5, 6)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal((5, 6)).astype(np.float32), requires_grad=True)
    y = F.layer_norm(xp, (5, 6), w, b)
    xn = base.transpose(1, 0, 2)
    ry, xhat = ref_layer_norm(xn, w.numpy(), b.numpy(), 1e-5, ndim=2)
    np.testing.assert_allclose(y.numpy(), ry, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(ry.shape).astype(np.float32)
    (y * Tensor(g)).sum().backward()
    dx, dw, db = ref_layer_norm_grad(g, xhat, xn, w.numpy(), 1e-5, ndim=2)
    np.testing.assert_allclose(x.grad.numpy(), dx.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.grad.numpy(), db, rtol=1e-4, atol=1e-4)


def test_layer_norm_statistics_far_from_zero_and_a_constant_row():
    x = np.full((3, 64), 1e4, np.float32)
    x[1] += np.linspace(-1, 1, 64, dtype=np.float32)
    y = ops.layer_norm(Tensor(x), 1).numpy()
    np.testing.assert_allclose(y, ref_layer_norm(x, None, None, 1e-5)[0], rtol=1e-3, atol=1e-3)
    assert np.all(y[0] == 0) and np.all(y[2] == 0)   # zero variance: (x - mean) * rstd = 0


def test_layer_norm_weight_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="normalized shape"):
        ops.layer_norm(Tensor(np.ones((2, 4), np.float32)), 1, Tensor(np.ones(3, np.float32)))


def test_layer_norm_zero_rows_and_zero_features():
    for shape in [(0, 5), (3, 0)]:
        x = Tensor(np.ones(shape, np.float32), requires_grad=True)
        w = Tensor(np.ones(shape[-1], np.float32), requires_grad=True)
        y = ops.layer_norm(x, 1, w, None)
        assert y.shape == shape
        y.sum().backward()
        assert x.grad.shape == shape and w.grad.shape == (shape[-1],)
        assert np.all(w.grad.numpy() == 0)


def test_layer_norm_sums_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    g = rng.standard_normal((4096, 64)).astype(np.float32)
    outs = []
    for threads in (1, 2):
        with _threads(threads):
            tx = Tensor(x, requires_grad=True)
            tw, tb = (Tensor(np.ones(64, np.float32), requires_grad=True) for _ in range(2))
            (ops.layer_norm(tx, 1, tw, tb) * Tensor(g)).sum().backward()
            outs.append((tw.grad.numpy(), tb.grad.numpy()))
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = mn.get_num_threads()
        mn.set_num_threads(self.n)

    def __exit__(self, *exc):
        mn.set_num_threads(self.old)


def _second_order(fn, args, eps=1e-6):
    """d/dargs of sum(grad_x(fn) * v), by autograd (create_graph) and by central
    differences of the first gradient (float64)."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal(args[0].shape)

    def first(vals):
        ts = [Tensor(a, dtype="float64", requires_grad=True) for a in vals]
        out = fn(*ts)
        (gx,) = mn.autograd.grad((out * out).sum(), [ts[0]], create_graph=True)
        return ts, gx

    ts, gx = first(args)
    (gx * Tensor(v)).sum().backward()
    got = [t.grad.numpy() for t in ts]
    for k, a in enumerate(args):
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            hi, lo = [x.copy() for x in args], [x.copy() for x in args]
            hi[k][idx] += eps
            lo[k][idx] -= eps
            fh = (first(hi)[1].numpy() * v).sum()
            fl = (first(lo)[1].numpy() * v).sum()
            num[idx] = (fh - fl) / (2 * eps)
        np.testing.assert_allclose(got[k], num, rtol=1e-5, atol=1e-6)


def test_layer_norm_second_order_gradients_match_finite_differences():
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5) + 1, rng.standard_normal(5)
    _second_order(lambda x, w, b: ops.layer_norm(x, 1, w, b), [x, w, b])


def test_softmax_second_order_gradients_match_finite_differences():
    x = np.random.default_rng(12).standard_normal((3, 6))
    _second_order(lambda x: ops.softmax(x, -1) * 3, [x])


@pytest.mark.parametrize("shape", SHAPES + [(4, 3, 35, 35)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_op_matches_float64(shape, dtype):
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tx = Tensor(x, requires_grad=True)
    y = ops.softmax(tx, -1)
    ref = ref_softmax(x)
    np.testing.assert_allclose(y.numpy(), ref, **tol(dtype))
    (y * Tensor(g)).sum().backward()
    ref_dx = ref * (g - (g * ref).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(tx.grad.numpy(), ref_dx, **tol(dtype))


def test_softmax_rows_with_nan_or_all_minus_infinity_are_nan():
    x = np.array([[1, np.nan, 2], [-np.inf, -np.inf, -np.inf], [0, -np.inf, 0]], np.float32)
    y = ops.softmax(Tensor(x), -1).numpy()
    assert np.all(np.isnan(y[0])) and np.all(np.isnan(y[1]))
    np.testing.assert_allclose(y[2], [0.5, 0, 0.5])


def ref_log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("shape", SHAPES + [(4, 3, 35, 35)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_op_matches_float64(shape, dtype):
    """One row kernel each way (device capability log_softmax), against numpy float64;
    rows far from zero (x * 40: exp of the unshifted values would overflow)."""
    rng = np.random.default_rng(len(shape) + shape[-1] + 1)
    x = (rng.standard_normal(shape) * 40).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tx = Tensor(x, requires_grad=True)
    y = F.log_softmax(tx, -1)
    ref = ref_log_softmax(x)
    np.testing.assert_allclose(y.numpy(), ref, **tol(dtype))
    (y * Tensor(g)).sum().backward()
    ref_dx = g - np.exp(ref) * g.astype(np.float64).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(tx.grad.numpy(), ref_dx, **tol(dtype))


def test_log_softmax_runs_one_kernel_each_way(monkeypatch):
    calls = []
    for name in ("log_softmax", "log_softmax_backward"):
        real = getattr(type(mn.cpu()), name)
        monkeypatch.setattr(type(mn.cpu()), name,
                            lambda self, *a, _n=name, _r=real: (calls.append(_n), _r(self, *a)))
    x = Tensor(np.random.default_rng(3).standard_normal((5, 7)), requires_grad=True)
    F.log_softmax(x, 1).sum().backward()
    assert calls == ["log_softmax", "log_softmax_backward"]


def test_log_softmax_second_order_gradients_match_finite_differences():
    x = np.random.default_rng(13).standard_normal((3, 6))
    _second_order(lambda x: F.log_softmax(x, -1) * 3, [x])


def test_log_softmax_rows_with_nan_inf_and_a_single_item():
    x = np.array([[1, np.nan, 2], [-np.inf, -np.inf, -np.inf], [0, -np.inf, 0],
                  [3, 3, 3]], np.float32)
    y = F.log_softmax(Tensor(x), -1).numpy()
    assert np.all(np.isnan(y[0])) and np.all(np.isnan(y[1]))
    np.testing.assert_allclose(y[2], [-np.log(2), -np.inf, -np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(y[3], [-np.log(3)] * 3, rtol=1e-6)
    np.testing.assert_array_equal(F.log_softmax(Tensor(np.ones((4, 1), np.float32)), -1).numpy(),
                                  np.zeros((4, 1)))


# op, its float64 reference, the input's seed and the float32 tolerance
ROW_OPS = {"softmax": (ops.softmax, ref_softmax, 2, dict(rtol=1e-6, atol=1e-7)),
           "log_softmax": (F.log_softmax, ref_log_softmax, 4, dict(rtol=1e-5, atol=1e-6))}


@pytest.mark.parametrize("name", list(ROW_OPS))
def test_row_op_of_a_permuted_input_and_over_another_axis(name):
    op, ref, seed, close = ROW_OPS[name]
    x = np.random.default_rng(seed).standard_normal((4, 6, 5)).astype(np.float32)
    xp = ops.permute(Tensor(x), (0, 2, 1))
    np.testing.assert_allclose(op(xp, -1).numpy(), ref(x.transpose(0, 2, 1)), **close)
    np.testing.assert_allclose(op(Tensor(x), 1).numpy(),
                               np.moveaxis(ref(np.moveaxis(x, 1, -1)), -1, 1), **close)


@pytest.mark.parametrize("name", list(ROW_OPS))
def test_row_op_of_empty_shapes(name):
    op = ROW_OPS[name][0]
    for shape in [(0, 4), (3, 0), (2, 0, 5)]:
        x = Tensor(np.ones(shape, np.float32), requires_grad=True)
        y = op(x, -1)
        assert y.shape == shape
        y.sum().backward()
        assert x.grad.shape == shape


def test_row_kernels_refuse_short_buffers():
    x = np.ones((4, 8), np.float32)
    small = Buffer.wrap(np.ones(8, np.float32))
    with pytest.raises(ValueError, match="output"):
        rows.softmax(Buffer.wrap(x), 0, small, 4, 8, 4)
    with pytest.raises(ValueError, match="log_softmax: .*output"):
        rows.log_softmax(Buffer.wrap(x), 0, small, 4, 8, 4)
    with pytest.raises(ValueError, match="log_softmax_backward: .*output gradient"):
        rows.log_softmax_backward(Buffer.wrap(x), 0, small, 0, Buffer.wrap(x.copy()), 4, 8, 4)
    with pytest.raises(ValueError, match="mean"):
        rows.layernorm(Buffer.wrap(x), 0, None, 0, None, 0, Buffer.wrap(x.copy()),
                       Buffer.wrap(np.ones(2, np.float32)), Buffer.wrap(np.ones(4, np.float32)),
                       4, 8, 1e-5, 4)


def test_transformer_layer_trains_as_the_composed_layer_norm():
    """TransformerLayer with the fused ops against the same layer built from ops
    (norms and softmax composed), one Adam step, float64."""
    mn.init.manual_seed(1)
    layer = nn.TransformerLayer(16, 4, 32, causal=True, batch_first=True, dtype="float64")
    x = np.random.default_rng(1).standard_normal((3, 7, 16))
    out = layer(Tensor(x, dtype="float64"))
    composed = _composed_transformer(layer, x)
    np.testing.assert_allclose(out.numpy(), composed, rtol=1e-10, atol=1e-10)


def _composed_transformer(layer, x):
    def ln(h, m):
        mu = h.mean(-1, keepdims=True)
        return (h - mu) / np.sqrt(h.var(-1, keepdims=True) + m.eps) * m.weight.numpy() \
            + m.bias.numpy()

    def lin(h, w, b):
        return h @ w.numpy() + b.numpy()

    a = layer.attn
    h = ln(x, layer.norm1)
    bsz, t, d = h.shape
    heads = a.num_heads

    def split(z):
        return z.reshape(bsz, t, heads, -1).transpose(0, 2, 1, 3)

    q, k, v = (split(lin(h, w, b)) for w, b in ((a.W_q, a.b_q), (a.W_k, a.b_k), (a.W_v, a.b_v)))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    s = s + np.triu(np.full((t, t), -np.inf), 1)
    att = (ref_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(bsz, t, d)
    x = x + lin(att, a.W_out, a.b_out)
    h = np.maximum(lin(ln(x, layer.norm2), layer.linear1.weight, layer.linear1.bias), 0)
    return x + lin(h, layer.linear2.weight, layer.linear2.bias)


@pytest.mark.parametrize("batch,m,k,n", [(80, 35, 64, 35), (7, 3, 5, 9), (33, 17, 31, 1),
                                         (2, 40, 40, 40)])
def test_batched_small_products_match_numpy(batch, m, k, n):
    rng = np.random.default_rng(batch + m)
    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, n, k)).astype(np.float32)
    A, B = mn.ndarray.NDArray(a), mn.ndarray.NDArray(b)
    got = (A @ B.permute((0, 2, 1))).numpy()   # B transposed: a strided operand
    np.testing.assert_allclose(got, a @ b.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("perm", [(1, 0, 2), (0, 1, 2)])
def test_permuted_stack_times_a_matrix_folds_through_a_copy(perm):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((35, 20, 64)).astype(np.float32)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    X = mn.ndarray.NDArray(x).permute(perm)
    W = mn.ndarray.NDArray(w).permute((1, 0))
    xt = x.transpose(perm)
    np.testing.assert_allclose((X @ W).numpy(), xt @ w.T, rtol=1e-4, atol=1e-4)
    # per-batch transposed rows (a key projection's gradient): (20, 35, 64) strides (.., 1, 35)
    y = mn.ndarray.NDArray(np.ascontiguousarray(rng.standard_normal((20, 64, 35)),
                                                dtype=np.float32))
    yt = y.permute((0, 2, 1))
    np.testing.assert_allclose((yt @ W).numpy(), yt.numpy() @ w.T, rtol=1e-4, atol=1e-4)


def test_layer_norm_of_one_long_row_keeps_its_partial_sums_small():
    """One row of 2M values: one part of partial sums (2D doubles), not 64 (a GB)."""
    x = np.random.default_rng(8).standard_normal((1, 1 << 21)).astype(np.float32)
    tx = Tensor(x, requires_grad=True)
    tw = Tensor(np.ones(x.shape[1], np.float32), requires_grad=True)
    ops.layer_norm(tx, 1, tw).sum().backward()
    _, xhat = ref_layer_norm(x, None, None, 1e-5)
    np.testing.assert_allclose(tw.grad.numpy(), xhat[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tx.grad.numpy(), 0, atol=1e-4)   # d/dx sum(xhat) = 0


@pytest.mark.parametrize("ndim", [0, 3, -1])
def test_layer_norm_over_no_dims_or_more_dims_than_the_input_is_refused(ndim):
    with pytest.raises(ValueError, match="trailing dims"):
        ops.layer_norm(Tensor(np.ones((2, 4), np.float32)), ndim)
    if ndim == 0:
        with pytest.raises(ValueError, match="trailing dims"):
            F.layer_norm(Tensor(np.ones((2, 4), np.float32)), ())


def test_device_row_kernels_refuse_other_dtypes_and_shapes():
    dev = mn.cpu()
    x = mn.ndarray.NDArray(np.ones((3, 4), np.float32))
    ints = mn.ndarray.NDArray(np.ones((3, 4), np.int64))
    out = mn.ndarray.NDArray.make((3, 4), device=dev, dtype=x.dtype)
    stats = [mn.ndarray.NDArray.make((3,), device=dev, dtype=x.dtype) for _ in range(2)]
    with pytest.raises(TypeError, match="float32 or float64"):
        dev.softmax_backward(ints, ints, out)
    with pytest.raises(TypeError, match="float32 or float64"):
        dev.log_softmax(ints, out)
    with pytest.raises(TypeError, match=r"must be a compact \(3, 4\) array of float32"):
        dev.log_softmax_backward(x, mn.ndarray.NDArray(np.ones((3, 4))), out)
    with pytest.raises(TypeError, match="float32 or float64"):
        dev.layernorm_backward(ints, ints, *stats, None, out, None, None)
    wide = mn.ndarray.NDArray(np.ones(3, np.float64))
    with pytest.raises(TypeError, match=r"\(3,\) array of float32"):
        dev.layernorm(x, None, None, out, wide, stats[1], 1e-5)
    with pytest.raises(TypeError, match=r"\(4,\) array of float32"):
        dev.layernorm(x, stats[0], None, out, *stats, 1e-5)
