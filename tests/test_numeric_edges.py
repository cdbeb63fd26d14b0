"""Numeric edge cases: huge and infinite logits, division by zero, empty arrays, axis
checks and dtype promotion, against numpy and (where installed) PyTorch CPU."""
import numpy as np
import pytest
from numpy.exceptions import AxisError

import mininet.ndarray as nd
import mininet.nn as nn
import mininet.ops as ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray

from conftest import assert_close

INF = np.inf
TORCH_REASON = "PyTorch CPU is the reference for these values (test-only extra)"


def _torch():
    return pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.fixture(params=["fused", "composite"])
def xent_path(request, monkeypatch):
    """Cross-entropy through the CPU's fused kernel, or the op composition that devices
    without it (CUDA) run."""
    if request.param == "composite":
        from mininet.backend.cpu import CPUDevice
        monkeypatch.setattr(CPUDevice, "capabilities", CPUDevice.capabilities - {"softmax_xent"})
    return request.param


def _xent_with_grad(z, labels, dtype="float64"):
    mz = Tensor(np.asarray(z), dtype=dtype, requires_grad=True)
    loss = ops.softmax_cross_entropy(mz, np.asarray(labels))
    loss.backward()
    return loss.numpy(), mz.grad.numpy()


# 5: cross-entropy of huge logits ------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_keeps_log2_for_tied_logits_of_1e17(xent_path, dtype):
    loss, grad = _xent_with_grad(np.full((3, 2), 1e17), [0, 1, 0], dtype)
    assert_close(loss, np.log(2.0), dtype)
    assert_close(grad, np.array([[-0.5, 0.5], [0.5, -0.5], [-0.5, 0.5]]) / 3, dtype)


def test_cross_entropy_float64_keeps_every_digit_at_1e9(xent_path):
    offsets = np.array([[0.0, 1.0, -2.0], [3.0, 0.5, 0.25]])
    labels = np.array([0, 2])
    # the loss depends only on the offsets from 1e9: the reference never sees the 1e9
    lse = np.log(np.exp(offsets).sum(1))
    want = (lse - offsets[np.arange(2), labels]).mean()
    loss, _ = _xent_with_grad(1e9 + offsets, labels)
    np.testing.assert_allclose(loss, want, rtol=1e-12)


# 6: infinities in the reductions with a max ------------------------------------------------
INF_ROWS = [[INF, 1.0], [-INF, -INF], [-INF, 0.0], [INF, INF], [INF, -INF], [-INF, 1.0]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_of_infinities_is_infinite_not_nan(dtype):
    x = np.array([[INF, 1.0], [-INF, -INF], [INF, INF], [-INF, 2.0]])
    out = ops.logsumexp(Tensor(x, dtype=dtype), axes=(1,)).numpy()
    np.testing.assert_array_equal(out, [INF, -INF, INF, 2.0])
    whole = ops.logsumexp(Tensor(np.array([-INF, -INF]), dtype=dtype)).numpy()
    assert whole == -INF


@pytest.mark.torch
@pytest.mark.parametrize("row", INF_ROWS)
def test_logsumexp_value_and_gradient_at_infinities_match_torch(row):
    torch = _torch()
    mz = Tensor(np.array([row]), dtype="float64", requires_grad=True)
    out = ops.logsumexp(mz, axes=(1,))
    out.sum().backward()
    tz = torch.tensor([row], dtype=torch.float64, requires_grad=True)
    tout = torch.logsumexp(tz, 1)
    tout.sum().backward()
    np.testing.assert_array_equal(out.numpy(), tout.detach().numpy())
    np.testing.assert_array_equal(mz.grad.numpy(), tz.grad.numpy())   # NaN where torch's is


@pytest.mark.torch
@pytest.mark.parametrize("row", INF_ROWS)
def test_softmax_and_logsoftmax_at_infinities_match_torch(row):
    torch = _torch()
    w = np.array([[1.0, 2.0]])
    for mine, theirs in ((ops.softmax, torch.softmax), (ops.logsoftmax, torch.log_softmax)):
        mz = Tensor(np.array([row]), dtype="float64", requires_grad=True)
        out = mine(mz, 1)
        (out * Tensor(w, dtype="float64")).sum().backward()
        tz = torch.tensor([row], dtype=torch.float64, requires_grad=True)
        tout = theirs(tz, 1)
        (tout * torch.tensor(w)).sum().backward()
        np.testing.assert_array_equal(out.numpy(), tout.detach().numpy())
        finite = np.isfinite(tz.grad.numpy())
        np.testing.assert_array_equal(mz.grad.numpy()[finite], tz.grad.numpy()[finite])


@pytest.mark.torch
@pytest.mark.parametrize("row", INF_ROWS)
@pytest.mark.parametrize("label", [0, 1])
def test_cross_entropy_at_infinities_matches_torch(xent_path, row, label):
    torch = _torch()
    loss, grad = _xent_with_grad([row], [label])
    tz = torch.tensor([row], dtype=torch.float64, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor([label]))
    tloss.backward()
    np.testing.assert_array_equal(loss, tloss.item())
    finite = np.isfinite(tz.grad.numpy())
    np.testing.assert_array_equal(grad[finite], tz.grad.numpy()[finite])


# 7: division by zero -----------------------------------------------------------------------
@pytest.mark.parametrize("zero", [0, 0.0, -0.0])
def test_tensor_divided_by_zero_gives_numpy_infinities(zero):
    x = np.array([1.0, -2.0, 0.0])
    mx = Tensor(x, dtype="float64", requires_grad=True)
    out = mx / zero
    out.sum().backward()
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(out.numpy(), x / np.float64(zero))
        np.testing.assert_array_equal(mx.grad.numpy(), np.ones(3) / np.float64(zero))
        np.testing.assert_array_equal((NDArray(x) / zero).numpy(), x / np.float64(zero))


@pytest.mark.parametrize("shape, axes", [((2, 0), 1), ((0, 3), 0), ((0,), None)])
def test_mean_over_empty_axis_is_nan(shape, axes):
    x = np.zeros(shape)
    mx = Tensor(x, dtype="float64", requires_grad=True)
    out = mx.mean(axes)
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"), np.errstate(invalid="ignore"):
        want = np.mean(x, axis=axes)
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_array_equal(NDArray(x).mean(axes).numpy(), want)
    out.sum().backward()
    assert mx.grad.shape == shape


def test_mse_loss_over_empty_input_is_nan():
    e = Tensor(np.zeros((0, 3)), dtype="float64")
    assert np.isnan(nn.MSELoss()(e, e).numpy())


@pytest.mark.torch
def test_layer_norm_over_zero_features_is_empty_as_torch():
    torch = _torch()
    x = Tensor(np.ones((2, 0), np.float32), requires_grad=True)
    out = nn.LayerNorm1d(0)(x)
    assert out.shape == tuple(torch.nn.LayerNorm(0)(torch.ones(2, 0)).shape)
    out.sum().backward()
    assert x.grad.shape == (2, 0)


def test_cross_entropy_over_zero_rows_is_nan_with_an_empty_gradient(xent_path):
    loss, grad = _xent_with_grad(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert np.isnan(loss)
    assert grad.shape == (0, 3)


def test_cross_entropy_second_order_over_zero_rows():
    mz = Tensor(np.zeros((0, 3)), dtype="float64", requires_grad=True)
    loss = ops.softmax_cross_entropy(mz, np.zeros(0, dtype=np.int64))
    loss.backward(create_graph=True)
    g = mz.grad
    mz.grad = None
    (g * g).sum().backward()
    assert mz.grad.shape == (0, 3)


# 8: empty arrays are writable ----------------------------------------------------------------
def test_concatenate_and_stack_of_empty_arrays_match_numpy():
    a = np.zeros((2, 0), np.float32)
    assert nd.concatenate([NDArray(a), NDArray(a)]).shape == np.concatenate([a, a]).shape
    assert nd.concatenate([NDArray(a), NDArray(a)], 1).shape == np.concatenate([a, a], 1).shape
    b = np.zeros((3, 0), np.float32)
    for axis in (0, 1, 2, -1):
        assert nd.stack([NDArray(b)] * 2, axis).shape == np.stack([b] * 2, axis).shape
    t = Tensor(a, requires_grad=True)
    out = ops.stack([ops.concatenate([t, t]), ops.concatenate([t, t])])
    out.sum().backward()
    assert out.shape == (2, 4, 0) and t.grad.shape == (2, 0)


def test_setitem_on_empty_array():
    a = NDArray(np.zeros((2, 0), np.float32))
    a[...] = 1
    a[:] = NDArray(np.zeros((2, 0), np.float32))
    a.fill(3.0)
    assert a.shape == (2, 0) and a.numpy().shape == (2, 0)


def test_broadcast_view_is_still_read_only():
    v = NDArray(np.ones(3, np.float32)).broadcast_to((2, 3))
    with pytest.raises(ValueError, match="broadcast view"):
        v[...] = 1


@pytest.mark.torch
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_on_empty_batch_gives_empty_output_as_torch(num_layers):
    torch = _torch()
    lstm = nn.LSTM(3, 4, num_layers=num_layers)
    x = Tensor(np.zeros((5, 0, 3), np.float32), requires_grad=True)
    out, (h, c) = lstm(x)
    tout, (th, tc) = torch.nn.LSTM(3, 4, num_layers)(torch.zeros(5, 0, 3))
    assert (out.shape, h.shape, c.shape) == (tuple(tout.shape), tuple(th.shape), tuple(tc.shape))
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == (5, 0, 3)
    np.testing.assert_array_equal(lstm.cells[0].W_hh.grad.numpy(), 0.0)


# 9: axis checks and promotion -------------------------------------------------------------------
def test_expand_dims_accepts_numpy_axes_and_rejects_others():
    x = np.zeros((2, 3))
    for axis in range(-3, 3):
        assert NDArray(x).expand_dims(axis).shape == np.expand_dims(x, axis).shape
    for axis in (3, 9, -4):
        with pytest.raises(AxisError, match=f"axis {axis} is out of range"):
            NDArray(x).expand_dims(axis)


def test_swapaxes_out_of_range_raises_axis_error():
    x = np.zeros((2, 3))
    assert NDArray(x).swapaxes(0, -1).shape == np.swapaxes(x, 0, -1).shape
    with pytest.raises(AxisError, match="axis 5 is out of range"):
        NDArray(x).swapaxes(0, 5)
    with pytest.raises(AxisError, match="axis 5 is out of range"):
        Tensor(x).transpose((0, 5))
    assert issubclass(AxisError, IndexError) and issubclass(AxisError, ValueError)


def test_join_and_split_axes_out_of_range_raise_axis_error():
    a = NDArray(np.zeros((2, 3)))
    with pytest.raises(AxisError):
        nd.stack([a, a], 3)
    with pytest.raises(AxisError):
        nd.concatenate([a, a], 2)
    with pytest.raises(AxisError):
        ops.split(Tensor(np.zeros((2, 3))), 2)


@pytest.mark.torch
@pytest.mark.parametrize("axis", [0, -1, (0,), (-1,)])
def test_0d_reductions_accept_axis_0_and_minus_1_as_torch(axis):
    torch = _torch()
    x = np.array(3.5)
    tx = torch.tensor(x)
    want = torch.sum(tx, axis).numpy()
    np.testing.assert_array_equal(NDArray(x).sum(axis).numpy(), want)
    np.testing.assert_array_equal(NDArray(x).max(axis).numpy(), torch.amax(tx, axis).numpy())
    np.testing.assert_array_equal(NDArray(x).mean(axis).numpy(), torch.mean(tx, axis).numpy())
    mx = Tensor(x, dtype="float64", requires_grad=True)
    out = mx.sum(axis)
    out.backward()
    np.testing.assert_array_equal(out.numpy(), want)
    assert mx.grad.numpy() == 1.0


@pytest.mark.parametrize("axis", [1, -2])
def test_0d_reductions_reject_other_axes(axis):
    with pytest.raises(AxisError):
        NDArray(np.array(3.5)).sum(axis)


def test_float32_array_with_float64_numpy_array_promotes_to_float64():
    x = np.array([1.5, 2.25], np.float32)
    y = np.array([0.1, 0.2])   # float64: the 0.1 must not be rounded to float32
    want = x + y
    for got in (NDArray(x) + y, y + NDArray(x), NDArray(x) - y, NDArray(x) * y, NDArray(x) / y):
        assert got.dtype == np.float64
    np.testing.assert_array_equal((NDArray(x) + y).numpy(), want)
    mx = Tensor(x, requires_grad=True)
    out = mx + y
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_array_equal((mx * y).numpy(), x * y)
    out.sum().backward()
    assert mx.grad.dtype == np.float32   # a float32 leaf keeps a float32 grad (README, torch)


def test_promotion_follows_the_readme_table():
    f32, f64 = NDArray(np.ones(2, np.float32)), NDArray(np.ones(2))
    i64 = NDArray(np.array([1, 2]))
    # array op array (with int64 read as float64, as tests/test_robustness.py does)
    assert (f32 + f64).dtype == np.float64 and (i64 + i64).dtype == np.float64
    # creation from data: Python ints are int64, Python floats float64; then as above
    assert (f32 + [1, 2]).dtype == (f32 + i64).dtype
    assert (f32 + [1.0, 2.0]).dtype == np.float64
    np.testing.assert_array_equal((f32 + [0.1, 0.2]).numpy(), np.float32(1) + np.array([0.1, 0.2]))
    assert (f32 @ np.eye(2)).dtype == np.float64
    # array op scalar: a float array keeps its dtype, int64 gives float64
    assert (f32 + 0.1).dtype == np.float32 and (f32 + np.float64(0.1)).dtype == np.float32
    assert (i64 + 1).dtype == np.float64
    t32 = Tensor(np.ones(2, np.float32))
    assert (t32 + np.array([1, 2])).dtype == (t32 + Tensor(np.array([1, 2]))).dtype
    assert (t32 + [0.5, 1.5]).dtype == np.float64
    assert ops.maximum(t32, 0.5).dtype == np.float32
    assert ops.maximum(t32, np.zeros(2)).dtype == np.float64


def test_a_repeated_reduction_axis_is_refused_as_numpy():
    a = NDArray(np.ones((2, 3)))
    with pytest.raises(ValueError, match="repeated axis"):
        a.sum(axis=(0, 1, 0))
    with pytest.raises(ValueError):
        np.ones((2, 3)).sum(axis=(0, 1, 0))
    assert NDArray(np.float64(2.0)).sum(axis=(0,)).numpy() == 2.0
