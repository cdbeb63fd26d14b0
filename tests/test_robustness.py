"""Defects found by fuzzing against numpy/torch (issue 11): each test failed before its fix."""
import numpy as np
import pytest

from mininet import ops
from mininet.autograd import Tensor
from mininet.ndarray import NDArray
from conftest import torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_sign_keep_nan(dtype):
    x = np.array([np.nan, -1.0, 0.0, 2.0, -np.inf, np.inf], dtype=dtype)
    np.testing.assert_array_equal(NDArray(x).relu().numpy(), np.where(x < 0, 0, x))
    np.testing.assert_array_equal(NDArray(x).sign().numpy(), np.sign(x))
    np.testing.assert_array_equal(ops.relu(Tensor(x)).numpy(), np.where(x < 0, 0, x))


@pytest.mark.parametrize("cls", [NDArray, Tensor])
def test_bool_follows_numpy(cls):
    assert bool(cls(np.array([0.0]))) is False
    assert bool(cls(np.array(0.0))) is False
    assert bool(cls(np.array([[2.5]]))) is True
    with pytest.raises(ValueError, match="ambiguous"):
        bool(cls(np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="empty"):
        bool(cls(np.zeros(0)))


def test_numpy_scalar_on_the_left_keeps_the_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    for y in (np.float32(0.5) * x, np.float64(0.5) * x + np.float32(1.0), np.float32(2.0) - x,
              np.float32(2.0) / x):
        assert isinstance(y, Tensor)
    y = np.float32(3.0) * x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    a = NDArray(np.array([1.0, 2.0], dtype=np.float32))
    r = np.float32(2.0) * a
    assert isinstance(r, NDArray)
    np.testing.assert_array_equal(r.numpy(), [2.0, 4.0])


def test_views_numpy_refuses():
    a = NDArray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(IndexError, match="boolean"):
        a[True]
    with pytest.raises(ValueError, match="permutation"):
        a.permute(5, 0)
    with pytest.raises(ValueError, match="permutation"):
        a.permute(0, -3)
    with pytest.raises(ValueError, match="repeats"):
        a.permute(1, -1)
    np.testing.assert_array_equal(a.permute(-1, 0).numpy(), a.numpy().T)
    with pytest.raises(ValueError, match="broadcast"):
        NDArray(np.zeros(1)).broadcast_to((-1,))
    b = NDArray(np.zeros((1, 3))).broadcast_to((2, 3))
    with pytest.raises(ValueError, match="broadcast view"):
        b[0, 0] = 5.0
    with pytest.raises(ValueError, match="broadcast view"):
        b.fill(1.0)
    np.testing.assert_array_equal(b.numpy(), np.zeros((2, 3)))


def test_two_outputs_of_one_split_in_one_graph():
    x0 = np.arange(6.0).reshape(2, 3) + 1
    x = Tensor(x0, dtype="float64", requires_grad=True)
    a = ops.split(x, 0)
    (a[0] * a[1] + a[0]).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [x0[1] + 1, x0[0]])


@pytest.mark.torch
def test_second_order_through_stack_matches_torch():
    x0 = np.array([1.0, 2.0, 3.0])
    x = Tensor(x0, dtype="float64", requires_grad=True)
    (ops.stack([x * x, x * x * x], 0) ** 2).sum().backward(create_graph=True)
    g = x.grad
    x.grad = None
    (g * g).sum().backward()
    tx = torch.tensor(x0, requires_grad=True)
    tg, = torch.autograd.grad((torch.stack([tx * tx, tx * tx * tx]) ** 2).sum(), tx,
                              create_graph=True)
    (tg * tg).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


# The promotion rule (README, "Dtypes"): (left, right) -> result
PROMOTION = [
    (np.float32, np.float32, np.float32), (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64), (np.int64, np.float32, np.float32),
    (np.float32, np.int64, np.float32), (np.int64, np.int64, np.float64),
    (np.int64, np.float64, np.float64),
]


@pytest.mark.parametrize("left, right, result", PROMOTION)
@pytest.mark.parametrize("op", ["__add__", "__mul__", "__truediv__", "maximum", "__matmul__"])
def test_one_promotion_rule_for_arrays_and_tensors(left, right, result, op):
    a, b = np.arange(1, 5).reshape(2, 2).astype(left), np.arange(2, 6).reshape(2, 2).astype(right)
    expect = getattr(np, {"__add__": "add", "__mul__": "multiply", "__truediv__": "divide",
                          "maximum": "maximum", "__matmul__": "matmul"}[op])(a, b)
    got = getattr(NDArray(a), op)(NDArray(b))
    assert got.dtype == result
    np.testing.assert_allclose(got.numpy(), expect)
    if op != "maximum":
        t = getattr(Tensor(a), op)(Tensor(b))
        assert t.dtype == result


@pytest.mark.parametrize("scalar", [2.5, 2, np.float64(2.5), np.float32(2.5), np.int64(2)])
def test_scalars_do_not_widen_a_float_array(scalar):
    for dtype in (np.float32, np.float64):
        a = np.array([1.0, 2.0], dtype=dtype)
        assert (NDArray(a) * scalar).dtype == dtype
        assert (scalar * Tensor(a)).dtype == dtype
        assert (Tensor(a) - scalar).dtype == dtype
    ints = NDArray(np.array([1, 2]))
    assert (ints * scalar).dtype == np.float64
    np.testing.assert_allclose((ints * scalar).numpy(), np.array([1, 2]) * float(scalar))


def test_creation_keeps_the_data_dtype():
    assert NDArray(np.arange(3)).dtype == np.int64
    assert NDArray([True, False]).dtype == np.bool_   # a real bool dtype, as torch
    assert NDArray(np.zeros(2, np.uint8)).dtype == np.int64
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor(np.zeros(2, np.float16)).dtype == np.float32
    assert Tensor(np.zeros(2, np.float32)).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert Tensor([1, 2], dtype="float32").dtype == np.float32
    with pytest.raises(TypeError, match="only float tensors can require grad"):
        Tensor([1, 2], requires_grad=True)
    np.testing.assert_array_equal(NDArray(np.array([2**60, 3])).numpy(), [2**60, 3])


def test_float32_leaf_gets_a_float32_grad_from_float64_data():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    (w * Tensor(np.arange(3.0))).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad.numpy(), [0, 1, 2])


def _int_inputs():
    ones = lambda *s: Tensor(np.ones(s, dtype=np.int64))
    return {
        "conv": lambda: ops.conv(ones(1, 1, 3, 3), ones(1, 1, 2, 2)),
        "max_pool2d": lambda: ops.max_pool2d(ones(1, 1, 4, 4), 2),
        "avg_pool2d": lambda: ops.avg_pool2d(ones(1, 1, 4, 4), 2),
        "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([0, 1])),
        "batch_norm": lambda: ops.batch_norm(ones(4, 3), ones(3), ones(3), (0,)),
        "add_": lambda: NDArray(np.ones(3, np.int64)).add_(NDArray(np.ones(3, np.int64))),
    }


@pytest.mark.parametrize("name", list(_int_inputs()))
def test_fused_ops_refuse_int64(name):
    with pytest.raises((TypeError, ValueError), match="float"):
        _int_inputs()[name]()


def test_backend_kernels_refuse_int64():
    from mininet.backend import cpu
    from mininet.ops.conv import ConvParams
    x = NDArray(np.ones((1, 1, 3, 3), np.int64))
    out = NDArray(np.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match="conv: needs float32 or float64"):
        cpu().conv2d(x, NDArray(np.ones((1, 1, 2, 2), np.int64)), None, out, *ConvParams().geometry())
    with pytest.raises(TypeError, match="max_pool2d"):
        cpu().maxpool(x, out, NDArray(np.zeros((1, 1, 2, 2), np.int64)), (2, 2), (1, 1), (0, 0),
                      (1, 1))
