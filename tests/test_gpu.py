"""The CUDA backend against the CPU backend (marked gpu: skipped, with the reason,
where there is no CUDA device)."""
import numpy as np
import pytest

import mininet
from mininet import nn, ops, optim
from mininet.autograd import Tensor
from mininet.models import build_model
from mininet.ndarray import NDArray
from conftest import assert_near

pytestmark = pytest.mark.gpu
rng = np.random.default_rng(11)


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


def pair(x, gpu):
    return NDArray(x), NDArray(x, device=gpu)


def close(got, want, tol=1e-5):
    assert_near(got, want, tol)


@pytest.mark.parametrize("name", ["__add__", "__sub__", "__mul__", "__truediv__", "maximum",
                                  "minimum", "__lt__", "__ge__", "__eq__"])
def test_binary_with_views_and_broadcast(gpu, name):
    x = rng.standard_normal((7, 33, 5)).astype(np.float32)
    y = rng.uniform(0.5, 2, (33, 1)).astype(np.float32)
    (cx, gx), (cy, gy) = pair(x, gpu), pair(y, gpu)
    close(getattr(gx.permute(2, 0, 1), name)(gy.T),
          getattr(cx.permute(2, 0, 1), name)(cy.T))
    close(getattr(gx[:, ::3], name)(gy[::3]), getattr(cx[:, ::3], name)(cy[::3]))
    close(getattr(gx, name)(1.5), getattr(cx, name)(1.5))


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "sign",
                                  "square", "__neg__", "erf", "gelu", "silu"])
def test_unary_on_strided_views(gpu, name):
    x = rng.uniform(0.1, 3, (13, 9)).astype(np.float64)
    cx, gx = pair(x, gpu)
    close(getattr(gx.T[::2], name)(), getattr(cx.T[::2], name)(), 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "leaky_relu",
                                  "elu", "softplus"])
def test_activation_forward_and_gradient(gpu, dtype, name):
    """The activations' one-pass kernels (unary gelu, gelu_tanh and silu, binary
    gelu_grad, gelu_tanh_grad, silu_grad, tanh_grad, sigmoid_grad, and leaky, elu,
    softplus and their slopes with a scalar) as on the CPU, through autograd, second order
    included."""
    x = rng.uniform(-5, 5, (6, 11)).astype(dtype)
    # float32: 1 + tanh(u) cancels for x near -5 (the libraries' tanh differ by ulps)
    tol = 5e-5 if dtype == np.float32 else 1e-12
    # (leaky ReLU's derivative is piecewise constant: times x, its second order is not 0)
    special = {"gelu_tanh": lambda t: nn.functional.gelu(t, approximate="tanh"),
               "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.2) * t}
    fn = special[name] if name in special else getattr(nn.functional, name)
    grads = []
    for dev in (mininet.cpu(), gpu):
        t = Tensor(x, device=dev, requires_grad=True)
        (g,) = mininet.autograd.grad(fn(t).sum(), [t], create_graph=True)
        (g * g).sum().backward()
        grads.append((fn(t).numpy(), g.numpy(), t.grad.numpy()))
    for got, want in zip(grads[1], grads[0]):
        close(got, want, tol)


@pytest.mark.parametrize("name", ["sum", "max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
def test_reductions(gpu, name, axis):
    x = rng.standard_normal((5, 1000, 3)).astype(np.float32)
    cx, gx = pair(x, gpu)
    if name.startswith("arg") and not (axis is None or isinstance(axis, int)):
        # argmax/argmin take one axis (or None), on either device: a tuple is refused alike
        for a in (gx, cx):
            with pytest.raises(TypeError, match="axis must be an int or None"):
                getattr(a, name)(axis)
    else:
        close(getattr(gx, name)(axis), getattr(cx, name)(axis), 1e-4)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (127, 65, 129), (300, 517, 211), (64, 2048, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_odd_sizes_and_transposes(gpu, m, k, n, dtype):
    x = rng.standard_normal((m, k)).astype(dtype)
    y = rng.standard_normal((n, k)).astype(dtype)
    (cx, gx), (cy, gy) = pair(x, gpu), pair(y, gpu)
    tol = 1e-4 * np.sqrt(k) if dtype == np.float32 else 1e-10
    close(gx @ gy.T, cx @ cy.T, tol)
    close(gy.T.T @ gx.T, cy @ cx.T, tol)


def test_batched_matmul_and_setitem(gpu):
    x = rng.standard_normal((3, 1, 20, 30)).astype(np.float32)
    y = rng.standard_normal((4, 30, 10)).astype(np.float32)
    (cx, gx), (cy, gy) = pair(x, gpu), pair(y, gpu)
    close(gx @ gy, cx @ cy, 1e-4)
    gx[:, :, 2:7, ::3] = 5.0
    cx[:, :, 2:7, ::3] = 5.0
    gx[1] = gx[0]
    cx[1] = cx[0]
    close(gx, cx)


@pytest.mark.parametrize("case", [(2, 3, 9, 8, 4, 3, 1, 1, 1, 1), (3, 4, 11, 10, 6, 3, 2, 2, 2, 2),
                                  (2, 1, 28, 28, 16, 5, 1, 2, 1, 1)])
def test_conv_and_pooling_forward_backward(gpu, case):
    n, c, h, w, k, ks, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // g, ks, ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    grads = {}
    for dev in ("cpu", gpu):
        tx, tw, tb = (Tensor(a, device=dev, requires_grad=True) for a in (x, wt, b))
        y = ops.conv(tx, tw, tb, s, p, d, g)
        z = ops.avg_pool2d(ops.max_pool2d(ops.relu(y), 2, 1), 2, 1, 1)
        (z * z).sum().backward()
        grads[str(dev)[:3]] = [z.numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()]
    for a, b2 in zip(grads["cpu"], grads["cud"]):
        # float32 sums of terms up to ~1e4 (the weight gradient of a 28x28 map): an entry
        # that cancels to ~1 keeps the absolute error of its terms, so atol follows the scale
        np.testing.assert_allclose(b2, a, rtol=2e-4, atol=2e-4 * max(1.0, np.abs(a).max()))


@pytest.mark.parametrize("model", ["mlp", "resnet", "cnn"])
def test_one_training_step_matches_cpu(gpu, model):
    x = rng.random((16, 784)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    if model == "cnn":
        x = x.reshape(16, 1, 28, 28)
    params = {}
    for dev in ("cpu", gpu):
        mininet.manual_seed(0)
        net = build_model(model, **({"drop_prob": 0.0} if model == "resnet" else {}))
        net.to(dev)
        # eps above float32 noise: with the default 1e-8 Adam turns a near-zero gradient's
        # rounding noise (biases feeding batch norm: true gradient 0) into a +-lr step
        opt = optim.Adam(net.parameters(), 1e-2, eps=1e-3, weight_decay=1e-4)
        loss = nn.SoftmaxLoss()(net(Tensor(x, device=dev)), Tensor(y, dtype="int64", device=dev))
        loss.backward()
        opt.step()
        params[dev == "cpu"] = [p.numpy() for p in net.parameters()] + [loss.numpy()]
    for a, b in zip(params[True], params[False]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_memory_returns_to_the_pool(gpu):
    mininet.manual_seed(0)
    net = build_model("mlp")
    net.to(gpu)
    opt = optim.SGD(net.parameters(), 0.1, momentum=0.9)
    x = Tensor(rng.random((100, 784)).astype(np.float32), device=gpu)
    y = Tensor(rng.integers(0, 10, 100), dtype="int64", device=gpu)
    stats = []
    for step in range(100):
        opt.zero_grad()
        loss = nn.SoftmaxLoss()(net(x), y)
        loss.backward()
        opt.step()
        del loss
        if step in (9, 99):
            gpu.synchronize()
            stats.append(gpu.memory_stats())
    assert stats[1]["active_blocks"] == stats[0]["active_blocks"], stats
    assert stats[1]["managed_bytes"] == stats[0]["managed_bytes"], stats
