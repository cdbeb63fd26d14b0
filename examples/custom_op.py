"""Write your own differentiable op, two ways, and check its gradient numerically.

    python examples/custom_op.py           (--tiny is accepted and changes nothing: it is quick)

1. mininet.autograd.Function, PyTorch's way: forward(ctx, ...) on tensors,
   backward(ctx, grad) returning one gradient per input. Here: Swish with a learnable
   slope per feature, y = x * sigmoid(beta * x).
2. mininet.autograd.Op, needle's way: compute(*NDArrays) -> NDArray on the raw arrays,
   gradient(out_grad, node) -> one Tensor per input, written with tensor ops so it has a
   gradient itself. Here: log(cosh(x)), computed stably.

Each gradient is compared with central differences in float64; the script exits 1 when
they disagree. Then Swish trains inside a small nn.Module.
"""
import argparse
import math
import sys

import numpy as np

import mininet
from mininet import nn, ops, optim
from mininet.autograd import Function, Op, Tensor


class Swish(Function):
    """y = x * sigmoid(beta * x); x (N, F), beta (F,) broadcast over the rows."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x, beta)
        return x * ops.sigmoid(x * beta)

    @staticmethod
    def backward(ctx, g):
        x, beta = ctx.saved_tensors
        s = ops.sigmoid(x * beta)          # recomputed: cheaper to keep x than s, and with
        ds = s * (1.0 - s)                 # tensor ops here, backward has a gradient too
        grad_x = g * (s + x * beta * ds)
        grad_beta = g * x * x * ds         # (N, F): summed to beta's (F,) by mininet
        return grad_x, grad_beta


class LogCosh(Op):
    """log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2: no overflow for large |x|."""

    def compute(self, a):                  # a is an NDArray
        m = abs(a)
        return m + (m * -2.0).exp().log1p() - math.log(2.0)

    def gradient(self, out_grad, node):    # d/dx log cosh x = tanh x
        (x,) = node.inputs
        return out_grad * ops.tanh(x)


def logcosh(x):
    return LogCosh()(x)


def numeric_grad(f, arrays, k, eps=1e-6):
    """Central differences of the scalar f(*arrays) in arrays[k] (float64 numpy)."""
    base = arrays[k]
    grad = np.zeros_like(base)
    for i in np.ndindex(base.shape):
        old = base[i]
        base[i] = old + eps
        up = f(*arrays)
        base[i] = old - eps
        down = f(*arrays)
        base[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def check(name, fn, arrays):
    """Largest difference between backward's gradient and central differences."""
    weights = np.random.default_rng(1).standard_normal(fn(*map(Tensor, arrays)).shape)

    def scalar(*arrs):                     # sum(fn(x) * w): every output element counts
        return float((fn(*(Tensor(a) for a in arrs)) * Tensor(weights)).sum().item())

    leaves = [Tensor(a, requires_grad=True) for a in arrays]
    (fn(*leaves) * Tensor(weights)).sum().backward()
    worst = 0.0
    for k, leaf in enumerate(leaves):
        expected = numeric_grad(scalar, [a.copy() for a in arrays], k)
        worst = max(worst, float(np.abs(leaf.grad.numpy() - expected).max()))
    print(f"{name}: largest gradient error vs central differences {worst:.2e}")
    return worst


class SwishMLP(nn.Module):
    def __init__(self, features=32):
        super().__init__()
        self.fc1 = nn.Linear(2, features)
        self.beta = nn.Parameter(mininet.ones(features))
        self.fc2 = nn.Linear(features, 2)

    def forward(self, x):
        return self.fc2(Swish.apply(self.fc1(x), self.beta))


def train_swish_mlp(steps):
    """Two interleaved half-moons: a learnt curve separates them."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0, math.pi, 400)
    labels = rng.integers(0, 2, 400)
    x = np.stack([np.cos(t) + labels, np.sin(t) * (1 - 2 * labels) + 0.5 * labels], 1)
    x = (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    model, loss_fn = SwishMLP(), nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=0.02)
    xt, yt = mininet.tensor(x), mininet.tensor(labels)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
    accuracy = float((model(xt).numpy().argmax(1) == labels).mean())
    print(f"Swish MLP on two moons: loss {loss.item():.4f}, accuracy {accuracy:.4f}")
    return accuracy


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="training steps of the Swish MLP")
    p.add_argument("--tiny", action="store_true", help="CI mode (the same run)")
    args = p.parse_args(argv)
    mininet.manual_seed(0)
    rng = np.random.default_rng(0)
    errors = [
        check("Swish (autograd.Function)", Swish.apply,
              [rng.standard_normal((4, 3)), rng.standard_normal(3)]),
        check("LogCosh (autograd.Op)", logcosh, [rng.standard_normal((3, 5)) * 3]),
    ]
    # a gradient of the gradient, through Swish's backward written with ops
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    beta = Tensor(rng.standard_normal(3))
    (gx,) = mininet.autograd.grad(Swish.apply(x, beta).sum(), [x], create_graph=True)
    (ggx,) = mininet.autograd.grad(gx.sum(), [x])
    xv, bv = x.numpy(), beta.numpy()
    sig = 1 / (1 + np.exp(-bv * xv))
    d1 = sig * (1 - sig)                   # s', then s'' = s' (1 - 2 s)
    exact = 2 * bv * d1 + xv * bv ** 2 * d1 * (1 - 2 * sig)
    errors.append(float(np.abs(ggx.numpy() - exact).max()))
    print(f"Swish second derivative (backward of backward): largest error {errors[-1]:.2e}")
    train_swish_mlp(args.steps)
    if max(errors) > 1e-6:
        print("gradient check FAILED", file=sys.stderr)
        return 1
    print("gradient check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
