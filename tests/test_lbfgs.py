"""optim.LBFGS (float64): convex least squares and L2-regularised logistic regression reach
the known optimum, as torch.optim.LBFGS does, with and without the strong Wolfe line search;
Rosenbrock from (-1.5, 2) with the line search; the first step without one; bad arguments."""
import numpy as np
import pytest

from mininet import nn, ops, optim
from mininet.autograd import Tensor

from conftest import torch

RNG = np.random.default_rng(0)
A = RNG.standard_normal((30, 5))
B = RNG.standard_normal((30, 1))
X_LOG = RNG.standard_normal((40, 3))
Y_LOG = np.where(X_LOG @ np.array([1.0, -2.0, 0.5]) + 0.3 * RNG.standard_normal(40) > 0,
                 1.0, -1.0).reshape(40, 1)
REG = 0.1


def lsq_optimum():
    w = np.linalg.lstsq(A, B, rcond=None)[0]
    return w, 0.5 * float(((A @ w - B) ** 2).sum())


def logistic_loss_np(w):
    z = -Y_LOG * (X_LOG @ w)
    return float(np.logaddexp(0, z).sum() + 0.5 * REG * (w ** 2).sum())


def logistic_optimum():
    """Newton's method in numpy (strictly convex: the L2 term)."""
    w = np.zeros((3, 1))
    for _ in range(50):
        z = Y_LOG * (X_LOG @ w)
        s = 1 / (1 + np.exp(z))          # sigma(-z)
        grad = -(X_LOG * (Y_LOG * s)).sum(0, keepdims=True).T + REG * w
        hess = (X_LOG * (s * (1 - s))).T @ X_LOG + REG * np.eye(3)
        w = w - np.linalg.solve(hess, grad)
    return w, logistic_loss_np(w)


def lsq_loss(lib, w):
    if lib == "torch":
        return 0.5 * ((torch.tensor(A) @ w - torch.tensor(B)) ** 2).sum()
    return ((Tensor(A, dtype="float64") @ w - Tensor(B, dtype="float64")) ** 2).sum() * 0.5


def logistic_loss(lib, w):
    if lib == "torch":
        z = -torch.tensor(Y_LOG) * (torch.tensor(X_LOG) @ w)
        return torch.log(1 + torch.exp(z)).sum() + 0.5 * REG * (w ** 2).sum()
    z = -Tensor(Y_LOG, dtype="float64") * (Tensor(X_LOG, dtype="float64") @ w)
    return ops.log(ops.exp(z) + 1.0).sum() + (w ** 2).sum() * (0.5 * REG)


def run(lib, loss_fn, shape, line_search, steps=5, **kw):
    start = np.zeros(shape)
    if lib == "torch":
        w = torch.nn.Parameter(torch.tensor(start))
        opt = torch.optim.LBFGS([w], line_search_fn=line_search, **kw)
    else:
        w = nn.Parameter(start, dtype="float64")
        opt = optim.LBFGS([w], line_search_fn=line_search, **kw)

    def closure():
        opt.zero_grad()
        loss = loss_fn(lib, w)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    value = loss_fn(lib, w)
    return (w.detach().numpy() if lib == "torch" else w.numpy()), float(value.detach().numpy()
                                                                        if lib == "torch"
                                                                        else value.numpy())


LIBS = ["mininet", pytest.param("torch", marks=pytest.mark.torch)]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("problem", ["lsq", "logistic"])
def test_convex_problems_reach_the_optimum(problem, line_search, lib):
    if problem == "lsq":
        (w_opt, f_opt), fn, shape = lsq_optimum(), lsq_loss, (5, 1)
    else:
        (w_opt, f_opt), fn, shape = logistic_optimum(), logistic_loss, (3, 1)
    w, f = run(lib, fn, shape, line_search, tolerance_grad=1e-12, tolerance_change=1e-14)
    assert abs(f - f_opt) <= 1e-8 * abs(f_opt)
    np.testing.assert_allclose(w, w_opt, rtol=0, atol=1e-6)


def rosenbrock(lib, a, b):
    return (1 - a) ** 2 * 1.0 + ((b - a * a) ** 2) * 100.0 if lib == "mininet" else \
        (1 - a) ** 2 + 100 * (b - a * a) ** 2


@pytest.mark.parametrize("lib", LIBS)
def test_rosenbrock_strong_wolfe(lib):
    if lib == "torch":
        a, b = (torch.nn.Parameter(torch.tensor([v], dtype=torch.float64)) for v in (-1.5, 2.0))
        opt = torch.optim.LBFGS([a, b], line_search_fn="strong_wolfe")
    else:
        a, b = (nn.Parameter(np.array([v]), dtype="float64") for v in (-1.5, 2.0))
        opt = optim.LBFGS([a, b], line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = rosenbrock(lib, a, b).sum()
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
    got = [float(p.detach().numpy()[0]) if lib == "torch" else float(p.numpy()[0])
           for p in (a, b)]
    np.testing.assert_allclose(got, [1.0, 1.0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [0.1, 10.0])   # |g|_1 below 1 and above it
def test_first_iteration_is_a_scaled_gradient_step(scale):
    c = np.array([1.0, -2.0, 0.5]) * scale
    w = nn.Parameter(np.zeros(3), dtype="float64")
    opt = optim.LBFGS([w], lr=0.5, max_iter=1)

    def closure():
        opt.zero_grad()
        loss = ((w - Tensor(c, dtype="float64")) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.numpy()) == pytest.approx(float((c ** 2).sum()))
    g = -2 * c                                   # the gradient at 0
    expected = -0.5 * min(1.0, 1.0 / np.abs(g).sum()) * g
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_history_persists_across_steps():
    w = nn.Parameter(np.zeros((5, 1)), dtype="float64")
    opt = optim.LBFGS([w], max_iter=3)

    def closure():
        opt.zero_grad()
        loss = lsq_loss("mininet", w)
        loss.backward()
        return loss

    opt.step(closure)
    n, iters = len(opt.state[0]["old_stps"]), opt.state[0]["n_iter"]
    opt.step(closure)
    assert len(opt.state[0]["old_stps"]) > n   # the pair of the last step of the first call
    assert opt.state[0]["n_iter"] > iters


@pytest.mark.parametrize("kw, name", [(dict(lr=-1.0), "lr"),
                                      (dict(history_size=0), "history_size"),
                                      (dict(max_iter=0), "max_iter"),
                                      (dict(max_eval=0), "max_eval"),
                                      (dict(line_search_fn="armijo"), "line_search_fn")])
def test_bad_arguments(kw, name):
    w = nn.Parameter(np.zeros(3), dtype="float64")
    with pytest.raises(ValueError, match=name):
        optim.LBFGS([w], **kw)


def test_one_group_only():
    w, v = (nn.Parameter(np.zeros(3), dtype="float64") for _ in range(2))
    with pytest.raises(ValueError, match="group"):
        optim.LBFGS([{"params": [w]}, {"params": [v]}])


def test_needs_a_closure():
    w = nn.Parameter(np.zeros(3), dtype="float64")
    with pytest.raises(ValueError, match="closure"):
        optim.LBFGS([w]).step()
