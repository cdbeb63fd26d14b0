"""mininet_ext.norm's (N, C, H*W) batch norm kernels against numpy float64: odd sizes,
one pixel, one image, data far from zero (the shifted one-pass statistics), float64,
the float32 rounding, a zero-size batch (a clear error), and through BatchNorm2d vs
PyTorch on non-contiguous input."""
import numpy as np
import pytest

from mininet_ext import _isa
from mininet_ext.buffer import Buffer

norm = _isa.variant("norm")   # as built for this process's kernel set

SHAPES = [(1, 1, 1), (2, 3, 1), (3, 5, 7), (4, 2, 33), (7, 3, 49), (64, 4, 64), (2, 17, 130)]


def ref_forward(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=(0, 2))
    var = x.var(axis=(0, 2))
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean[:, None]) * inv[:, None]
    return xhat, xhat * w[:, None] + b[:, None], mean, var, inv


def ref_backward(g, xhat, w, inv):
    g, xhat = g.astype(np.float64), xhat.astype(np.float64)
    n = g.shape[0] * g.shape[2]
    db, dw = g.sum(axis=(0, 2)), (g * xhat).sum(axis=(0, 2))
    dx = (w * inv / n)[:, None] * (n * g - db[:, None] - xhat * dw[:, None])
    return dx, dw, db


def run_forward(x, w, b, eps=1e-5):
    o, c, i = x.shape
    xhat, y = np.empty_like(x), np.empty_like(x)
    mean, var, inv = (np.empty(c, x.dtype) for _ in range(3))
    B = Buffer.wrap
    norm.forward(B(x), 0, B(w), 0, B(b), 0, B(xhat), B(y), B(mean), B(var), B(inv), o, c, i,
                 eps, x.itemsize)
    return xhat, y, mean, var, inv


def run_backward(g, xhat, w, inv):
    o, c, i = g.shape
    dx, dw, db = np.empty_like(g), np.empty(c, g.dtype), np.empty(c, g.dtype)
    B = Buffer.wrap
    norm.backward(B(g), 0, B(xhat), B(w), 0, B(inv), B(dx), B(dw), B(db), o, c, i, g.itemsize)
    return dx, dw, db


def close(got, want, dtype, scale=1.0):
    tol = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_float64(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    xhat, y, mean, var, inv = run_forward(x, w, b)
    r_xhat, r_y, r_mean, r_var, r_inv = ref_forward(x, w, b, 1e-5)
    for got, want in ((xhat, r_xhat), (y, r_y), (mean, r_mean), (var, r_var), (inv, r_inv)):
        close(got, want, dtype, scale=max(1.0, np.abs(want).max()) * 10)
    dx, dw, db = run_backward(g, xhat, w, inv)
    r_dx, r_dw, r_db = ref_backward(g, xhat, w, inv.astype(np.float64))
    n = shape[0] * shape[2]
    # dx cancels terms of this size (it is ~0 for n = 2): its rounding is relative to them
    terms = np.abs(w * inv / n)[:, None] * (n * np.abs(g) + np.abs(r_db)[:, None]
                                             + np.abs(xhat * r_dw[:, None]))
    close(dx, r_dx, dtype, scale=terms.max() * 10)
    close(dw, r_dw, dtype, scale=n)
    close(db, r_db, dtype, scale=n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_of_data_far_from_zero(dtype):
    """A mean 1000 deviations from zero (the first value shifts the sums)."""
    rng = np.random.default_rng(1)
    x = (1000 + rng.standard_normal((8, 3, 50))).astype(dtype)
    x[0, :, 0] = 1000 + 4.0   # the shift itself an outlier: still no cancellation
    w, b = np.ones(3, dtype), np.zeros(3, dtype)
    xhat, y, mean, var, inv = run_forward(x, w, b)
    r_xhat, _, r_mean, r_var, _ = ref_forward(x, w, b, 1e-5)
    np.testing.assert_allclose(mean, r_mean, rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(var, r_var, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(xhat, r_xhat, atol=2e-3 if dtype == np.float32 else 1e-9)


def test_constant_channel_has_zero_variance():
    x = np.full((3, 2, 5), 7.25, np.float32)
    xhat, y, mean, var, inv = run_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32))
    assert (var == 0).all() and (mean == 7.25).all() and (xhat == 0).all()


def test_zero_size_batch_is_a_clear_error():
    x = np.empty((0, 3, 4), np.float32)
    with pytest.raises(ValueError, match="no values"):
        run_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no values"):
        run_forward(np.empty((2, 3, 0), np.float32), np.ones(3, np.float32),
                    np.zeros(3, np.float32))


def test_zero_size_backward_writes_zero_sums():
    g = np.empty((0, 3, 4), np.float32)
    dx, dw, db = run_backward(g, g.copy(), np.ones(3, np.float32), np.ones(3, np.float32))
    assert dx.shape == (0, 3, 4) and (dw == 0).all() and (db == 0).all()


def test_short_buffers_are_refused():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError):
        run_forward(x, np.ones(2, np.float32), np.zeros(3, np.float32))


@pytest.mark.torch
def test_batchnorm2d_on_a_permuted_input_matches_torch():
    """Non-contiguous (permuted) input, odd sizes, through the module, forward and backward."""
    torch = pytest.importorskip("torch")
    from mininet import Tensor, nn
    rng = np.random.default_rng(3)
    base = rng.standard_normal((5, 9, 7, 3)).astype(np.float32) * 2 + 0.5
    g = rng.standard_normal((5, 3, 9, 7)).astype(np.float32)
    x = Tensor(base, requires_grad=True)
    y = nn.BatchNorm2d(3)(x.permute((0, 3, 1, 2)))
    (y * Tensor(g)).sum().backward()
    tx = torch.from_numpy(base).requires_grad_()
    ty = torch.nn.BatchNorm2d(3)(tx.permute(0, 3, 1, 2))
    (ty * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=5e-5)


# 2x2 max pooling's short-row path (output rows under 16 wide: 8x8, 16x16 maps) -----------
def ref_maxpool2(x):
    """(out, flat index in the plane) of 2x2 / stride-2 windows, the first of equal values."""
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    win = x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, oh, ow, 4)
    a = win.argmax(axis=-1)                       # numpy: the first maximum
    rows = np.arange(oh)[:, None] * 2 + a // 2
    cols = np.arange(ow)[None, :] * 2 + a % 2
    return win.max(axis=-1), rows * w + cols


def run_maxpool2(x):
    conv = _isa.variant("conv")
    n, c, h, w = x.shape
    out = np.empty((n, c, h // 2, w // 2), x.dtype)
    idx = np.empty(out.shape, np.int64)
    B = Buffer.wrap
    conv.maxpool(B(x), B(out), B(idx), x.shape, (2, 2), (2, 2), (0, 0), (1, 1), h // 2, w // 2,
                 x.itemsize)
    return out, idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 2, 2), (3, 5, 7, 9), (2, 4, 16, 16),
                                   (1, 1, 30, 31), (2, 2, 32, 32), (0, 3, 8, 8)])
def test_maxpool2_matches_numpy(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    x[..., ::3, :] = np.round(x[..., ::3, :])     # ties: the first of equal values wins
    out, idx = run_maxpool2(x)
    r_out, r_idx = ref_maxpool2(x)
    np.testing.assert_array_equal(out, r_out)
    np.testing.assert_array_equal(idx, r_idx)


def test_maxpool2_short_rows_with_nan_take_the_nan():
    x = np.random.default_rng(5).standard_normal((2, 2, 8, 8)).astype(np.float32)
    x[1, 0, 3, 4] = np.nan
    out, idx = run_maxpool2(x)
    assert np.isnan(out[1, 0, 1, 2]) and idx[1, 0, 1, 2] == 3 * 8 + 4
    clean = np.isfinite(out)
    r_out, r_idx = ref_maxpool2(np.nan_to_num(x, nan=-np.inf))
    np.testing.assert_array_equal(out[clean], r_out[clean])
    np.testing.assert_array_equal(idx[clean], r_idx[clean])
