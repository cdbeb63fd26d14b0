"""Every CPU kernel on compact views that start at an offset into their buffer.

Each case calls a backend method twice: once with fresh arrays (offset 0), once
with every array argument (inputs and outputs) moved to the middle of a larger
buffer filled with a sentinel. The results must agree and the sentinel around
each output must be intact (a kernel that ignores the offset reads or writes
the wrong elements).
"""
import numpy as np
import pytest

from mininet.backend import cpu
from mininet.backend.opcodes import BINARY, REDUCE, UNARY
from mininet.ndarray import NDArray, int64
from mininet.ops.conv import ConvParams

PAD = 5
SENTINEL = -7777.0


def fresh(a):
    return NDArray(a, dtype=a.dtype)


def at_offset(a):
    """The same values as a compact view PAD items into a sentinel-filled buffer."""
    flat = np.full(a.size + 2 * PAD, SENTINEL, dtype=a.dtype)
    flat[PAD:PAD + a.size] = a.ravel()
    return NDArray(flat, dtype=a.dtype)[PAD:PAD + a.size].reshape(a.shape)


def sentinels_intact(view):
    whole = NDArray.make((view.size + 2 * PAD,), device=view.device, handle=view.handle,
                         dtype=view.dtype).numpy()
    return (whole[:PAD] == SENTINEL).all() and (whole[PAD + view.size:] == SENTINEL).all()


def run_both(method, arrays, *extra):
    """Call method(*arrays, *extra) on fresh and on offset copies; return both array lists."""
    plain = [fresh(a) for a in arrays]
    moved = [at_offset(a) for a in arrays]
    r1 = method(*plain, *extra)
    r2 = method(*moved, *extra)
    if r1 is not None:
        np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))
    for p, m in zip(plain, moved):
        np.testing.assert_array_equal(m.numpy(), p.numpy())
        assert sentinels_intact(m), "a kernel wrote outside its view"
    return plain, moved


rng = np.random.default_rng(0)
DEV = cpu()


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def z(*shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_and_reduce(dtype):
    run_both(lambda a, b, o: DEV.binary(BINARY["mul"], a, b, o), [r(3, 4, dtype=dtype),
             r(3, 4, dtype=dtype), z(3, 4, dtype=dtype)])
    run_both(lambda a, o: DEV.binary_scalar(BINARY["sub"], a, 1.5, True, o),
             [r(7, dtype=dtype), z(7, dtype=dtype)])
    run_both(lambda a, o: DEV.unary(UNARY["exp"], a, o), [r(2, 5, dtype=dtype), z(2, 5, dtype=dtype)])
    run_both(lambda a, o: DEV.reduce(REDUCE["sum"], a, 3, 4, 2, o),
             [r(3, 4, 2, dtype=dtype), z(3, 2, dtype=dtype)])
    run_both(lambda a, o: DEV.reduce(REDUCE["argmax"], a, 3, 4, 1, o),
             [r(3, 4, dtype=dtype), z(3, dtype=np.int64)])
    run_both(lambda a, b, o: DEV.matmul(a, b, o, 3, 4, 5),
             [r(3, 5, dtype=dtype), r(5, 4, dtype=dtype), z(3, 4, dtype=dtype)])


def test_add_in_place_on_an_offset_view():
    x = at_offset(r(4, 3))
    expect = x.numpy() + 2.0
    x.add_(NDArray(np.full((3,), 2.0, dtype=np.float32)))
    np.testing.assert_array_equal(x.numpy(), expect)
    assert sentinels_intact(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_convolution_kernels(dtype):
    p = ConvParams(1, 1)
    x, w, b = r(2, 3, 6, 6, dtype=dtype), r(4, 3, 3, 3, dtype=dtype), r(4, dtype=dtype)
    g = r(2, 4, 6, 6, dtype=dtype)
    run_both(lambda *a: DEV.conv2d(*a, *p.geometry()), [x, w, b, z(2, 4, 6, 6, dtype=dtype)])
    run_both(lambda *a: DEV.conv2d_grad_input(*a, *p.geometry()), [g, w, z(2, 3, 6, 6, dtype=dtype)])
    run_both(lambda *a: DEV.conv2d_grad_weight(*a, *p.geometry()), [g, x, z(4, 3, 3, 3, dtype=dtype)])
    run_both(DEV.conv2d_grad_bias, [g, z(4, dtype=dtype)])
    run_both(lambda *a: DEV.im2col(*a, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6),
             [x, z(27, 2, 6, 6, dtype=dtype)])
    run_both(lambda *a: DEV.col2im(*a, (3, 3), (1, 1), (1, 1), (1, 1), 6, 6),
             [r(27, 2, 6, 6, dtype=dtype), z(2, 3, 6, 6, dtype=dtype)])
    run_both(DEV.to_nchw, [r(4, 72, dtype=dtype), b, z(2, 4, 6, 6, dtype=dtype)])
    run_both(DEV.from_nchw, [g, z(4, 72, dtype=dtype), z(4, dtype=dtype)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_kernels(dtype):
    x = r(2, 3, 4, 4, dtype=dtype)
    plain, moved = run_both(lambda *a: DEV.maxpool(*a, (2, 2), (2, 2), (0, 0), (1, 1)),
                            [x, z(2, 3, 2, 2, dtype=dtype), z(2, 3, 2, 2, dtype=np.int64)])
    expect = x.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(moved[1].numpy(), expect)
    idx = plain[2].numpy()
    run_both(DEV.maxpool_backward, [r(2, 3, 2, 2, dtype=dtype), idx, z(2, 3, 4, 4, dtype=dtype)])
    run_both(DEV.maxpool_gather, [x, idx, z(2, 3, 2, 2, dtype=dtype)])
    run_both(lambda s, d: DEV.avgpool(s, d, x.shape, (2, 2), (2, 2), (0, 0), False),
             [x, z(2, 3, 2, 2, dtype=dtype)])
    run_both(lambda s, d: DEV.avgpool(s, d, x.shape, (2, 2), (2, 2), (0, 0), True),
             [r(2, 3, 2, 2, dtype=dtype), z(2, 3, 4, 4, dtype=dtype)])


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2)])
def test_batchnorm_and_softmax_xent_kernels(shape):
    c = shape[1]
    run_both(lambda *a: DEV.batchnorm(*a, 1e-5),
             [r(*shape), r(c), r(c), z(*shape), z(*shape), z(c), z(c), z(c)])
    run_both(DEV.batchnorm_backward, [r(*shape), r(*shape), r(c), np.abs(r(c)), z(*shape), z(c), z(c)])
    labels = np.array([0, 3, 1, 2, 3, 0], dtype=np.int64)
    run_both(DEV.softmax_xent, [r(6, 4), labels, z(6, 4), z(1).reshape(())])
    probs = np.full((6, 4), 0.25, dtype=np.float32)
    run_both(lambda p, y, g, o: DEV.softmax_xent_grad(p, y, g, 0.5, o),
             [probs, labels, np.float32(2.0).reshape(()), z(6, 4)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_kernels(dtype):
    run_both(lambda p, g, v: DEV.sgd_step(p, g, v, 0.1, 0.9, 0.0, 1e-4, True, False),
             [r(37, dtype=dtype), r(37, dtype=dtype), r(37, dtype=dtype)])
    run_both(lambda p, g, m, v: DEV.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 1e-2, True, 3),
             [r(37, dtype=dtype), r(37, dtype=dtype), r(37, dtype=dtype), np.abs(r(37, dtype=dtype))])


def test_pooling_ops_on_offset_views():
    """The issue's example: the second image of a batch, through the op and its gradient."""
    from mininet import ops
    from mininet.autograd import Tensor
    base = Tensor(np.arange(32.).reshape(2, 1, 4, 4), requires_grad=True)
    y = ops.max_pool2d(base[1:], 2)
    np.testing.assert_array_equal(y.numpy().ravel(), [21, 23, 29, 31])
    a = ops.avg_pool2d(base[1:], 2)
    np.testing.assert_array_equal(a.numpy().ravel(), [18.5, 20.5, 26.5, 28.5])
    (y.sum() + a.sum()).backward()
    expect = np.zeros((2, 1, 4, 4))
    expect[1] += 0.25
    expect[1, 0, 1::2, 1::2] += 1
    np.testing.assert_array_equal(base.grad.numpy(), expect)
