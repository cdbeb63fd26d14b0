"""Layers, losses and optimizers: one step against PyTorch with the same weights."""
import numpy as np
import pytest

import mininet
from mininet import nn, optim
from mininet.autograd import Tensor

from conftest import check_batchnorm_against_torch, t64, torch

rng = np.random.default_rng(3)


def copy_linear(m, tl):
    m.weight.data = Tensor(tl.weight.detach().numpy().T.copy(), dtype=m.weight.dtype)
    m.bias.data = Tensor(tl.bias.detach().numpy().copy(), dtype=m.bias.dtype)


@pytest.mark.torch
def test_linear_relu_loss_backward_matches_torch():
    x = rng.standard_normal((8, 5))
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    tl = torch.nn.Linear(5, 3).double()
    m = nn.Linear(5, 3, dtype="float64")
    copy_linear(m, tl)
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(torch.relu(tl(tx)), torch.tensor(y))
    tloss.backward()
    mx = t64(x)
    loss = nn.SoftmaxLoss()(nn.ReLU()(m(mx)), Tensor(y, dtype="int64"))
    loss.backward()
    np.testing.assert_allclose(loss.numpy(), tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(m.weight.grad.numpy(), tl.weight.grad.numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.bias.grad.numpy(), tl.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["Tanh", "Sigmoid", "Flatten", "Identity"])
def test_simple_layers(name):
    cls, tcls = getattr(nn, name), getattr(torch.nn, name)
    x = rng.standard_normal((4, 3, 2))
    np.testing.assert_allclose(cls()(t64(x)).numpy(), tcls()(torch.tensor(x)).numpy(), rtol=1e-12)


@pytest.mark.torch
def test_batchnorm1d_train_and_eval_match_torch():
    x = rng.standard_normal((16, 6)) * 3 + 1
    check_batchnorm_against_torch(nn.BatchNorm1d(6, dtype="float64"),
                                  torch.nn.BatchNorm1d(6).double(), x, rng)


@pytest.mark.torch
def test_batchnorm_forward_matches_torch():
    x = rng.standard_normal((10, 4))
    tb = torch.nn.BatchNorm1d(4).double()
    np.testing.assert_allclose(nn.BatchNorm1d(4, dtype="float64")(t64(x)).numpy(),
                               tb(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_layernorm_matches_torch():
    x = rng.standard_normal((5, 7))
    tl = torch.nn.LayerNorm(7).double()
    mx = t64(x)
    out = nn.LayerNorm1d(7, dtype="float64")(mx)
    (out * out).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    (tl(tx) ** 2).sum().backward()
    np.testing.assert_allclose(out.numpy(), tl(tx).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.torch
def test_mse_and_dropout():
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(nn.MSELoss()(t64(a), t64(b)).numpy(),
                               torch.nn.functional.mse_loss(torch.tensor(a), torch.tensor(b)).item())
    mininet.init.manual_seed(0)
    d = nn.Dropout(0.5)
    out = d(t64(np.ones((200, 50)))).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert 0.45 < (out == 0).mean() < 0.55
    d.eval()
    np.testing.assert_array_equal(d(t64(np.ones((3, 3)))).numpy(), np.ones((3, 3)))


OPTIMS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                 lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "nesterov": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                 lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01),
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    "adagrad": (lambda p: optim.Adagrad(p, lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1)),
    "rmsprop": (lambda p: optim.RMSprop(p, lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(OPTIMS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optimizer_steps_match_torch(name, dtype):
    make, tmake = OPTIMS[name]
    w0 = rng.standard_normal((4, 3)).astype(dtype)
    p = nn.Parameter(w0.copy(), dtype=dtype)
    tp = torch.nn.Parameter(torch.tensor(w0.copy()))
    opt, topt = make([p]), tmake([tp])
    for step in range(3):
        g = rng.standard_normal((4, 3)).astype(dtype)
        p.grad = Tensor(g, dtype=dtype)
        tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    tol = 1e-5 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=tol, atol=tol)


def test_optimizer_builds_no_graph_and_zero_grad():
    p = nn.Parameter(np.ones(3))
    opt = optim.Adam([p])
    (p * 2).sum().backward()
    opt.step()
    assert p.op is None and p.inputs == ()
    opt.zero_grad()
    assert p.grad is None


def test_clip_grad_norm_and_schedules():
    p = nn.Parameter(np.zeros(4))
    p.grad = Tensor(np.array([3.0, 4.0, 0, 0]))
    norm = optim.clip_grad_norm([p], 1.0)
    assert norm == pytest.approx(5.0)
    assert np.linalg.norm(p.grad.numpy()) == pytest.approx(1.0, rel=1e-5)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.CosineAnnealingLR(opt, 4)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [(1 + np.cos(np.pi * t / 4)) / 2 for t in range(1, 5)])
    opt2 = optim.SGD([p], lr=1.0)
    step = optim.StepLR(opt2, 2, 0.5)
    for _ in range(4):
        step.step()
    assert opt2.lr == 0.25


def test_module_state_dict_roundtrip():
    from mininet.models import MLPResNet
    a, b = MLPResNet(hidden=16, num_blocks=1), MLPResNet(hidden=16, num_blocks=1)
    a.train()
    a(Tensor(rng.standard_normal((4, 784))))  # moves running stats
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    sd = a.state_dict()
    sd.pop(next(iter(sd)))
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict(sd)
    assert len(a.parameters()) == len(list(a.named_parameters()))
