"""Optimizers against torch.optim: parameter groups with their own lr and weight decay,
every optimizer's options, several steps on the same gradients, state_dict round trips
(also from torch's own state dict), and refused hyper-parameters."""
import math

import numpy as np
import pytest

from mininet import nn, optim
from mininet.autograd import Tensor

from conftest import torch

SHAPES = [(4, 3), (3,), (2, 2)]
TOL = {"float32": 1e-5, "float64": 1e-10}

# name: (ours, torch's), each given the groups (a list of dicts of parameters and options)
CASES = {
    "sgd": (optim.SGD, "SGD", dict(lr=0.1)),
    "sgd_momentum": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    "sgd_nesterov": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "sgd_maximize": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    "adam": (optim.Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6)),
    "adam_amsgrad": (optim.Adam, "Adam", dict(lr=0.01, amsgrad=True)),
    "adam_decoupled": (optim.Adam, "Adam", dict(lr=0.01, decoupled_weight_decay=True)),
    "adam_maximize": (optim.Adam, "Adam", dict(lr=0.01, maximize=True)),
    "adamw": (optim.AdamW, "AdamW", dict(lr=0.01)),
    "adamw_amsgrad": (optim.AdamW, "AdamW", dict(lr=0.01, amsgrad=True)),
    "adagrad": (optim.Adagrad, "Adagrad", dict(lr=0.1)),
    "adagrad_decay": (optim.Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05,
                                                     initial_accumulator_value=0.2, eps=1e-6)),
    "rmsprop": (optim.RMSprop, "RMSprop", dict(lr=0.01)),
    "rmsprop_momentum": (optim.RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.7)),
    "rmsprop_centered": (optim.RMSprop, "RMSprop", dict(lr=0.01, centered=True)),
    "rmsprop_centered_momentum": (optim.RMSprop, "RMSprop", dict(lr=0.01, centered=True,
                                                                 momentum=0.5, eps=1e-4)),
    "adadelta": (optim.Adadelta, "Adadelta", dict()),
    "adadelta_options": (optim.Adadelta, "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5)),
}


def make_params(dtype, seed=0):
    """The same starting values as (mininet Parameters, torch Parameters)."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [nn.Parameter(v.copy(), dtype=dtype) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
    return ours, theirs


def groups_of(params, options):
    """Two groups: the first with the optimizer's options, the second with its own lr and
    weight decay (and the third parameter alone, with the defaults)."""
    return [{"params": params[:2]},
            {"params": params[2:], "lr": options.get("lr", 1.0) * 0.5, "weight_decay": 0.03}]


def set_grads(ours, theirs, rng, dtype):
    for p, tp in zip(ours, theirs):
        g = rng.standard_normal(p.shape).astype(dtype)
        p.grad = Tensor(g.copy(), dtype=dtype)
        tp.grad = torch.tensor(g.copy())


def run(opt, topt, ours, theirs, steps, dtype, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        set_grads(ours, theirs, rng, dtype)
        opt.step()
        topt.step()


def assert_params_match(ours, theirs, dtype):
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=TOL[dtype],
                                   atol=TOL[dtype])


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_param_groups_with_their_own_lr_and_weight_decay_match_torch(case, dtype):
    cls, tname, options = CASES[case]
    ours, theirs = make_params(dtype)
    opt = cls(groups_of(ours, options), **options)
    topt = getattr(torch.optim, tname)(groups_of(theirs, options), **options)
    run(opt, topt, ours, theirs, 8, dtype)
    assert_params_match(ours, theirs, dtype)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
    assert [g["weight_decay"] for g in opt.param_groups] == \
        [g["weight_decay"] for g in topt.param_groups]


@pytest.mark.torch
def test_the_groups_really_differ():
    """The second group's lr and weight decay change its update (not all groups alike)."""
    ours, _ = make_params("float64")
    same, _ = make_params("float64")
    opt = optim.SGD(groups_of(ours, {"lr": 0.1}), lr=0.1)
    plain = optim.SGD(same, lr=0.1)
    rng = np.random.default_rng(0)
    for p, q in zip(ours, same):
        p.grad = q.grad = Tensor(rng.standard_normal(p.shape))
    opt.step()
    plain.step()
    np.testing.assert_array_equal(ours[0].numpy(), same[0].numpy())
    assert not np.allclose(ours[2].numpy(), same[2].numpy())


@pytest.mark.torch
@pytest.mark.parametrize("case", ["adam", "sgd_momentum", "adagrad_decay", "rmsprop_centered"])
def test_add_param_group_midway_matches_torch(case):
    """A group added after some steps starts its own state (Adam's bias correction from
    its first step, as torch counts steps per parameter)."""
    cls, tname, options = CASES[case]
    ours, theirs = make_params("float64")
    opt = cls(ours[:2], **options)
    topt = getattr(torch.optim, tname)(theirs[:2], **options)
    rng = np.random.default_rng(5)
    for step in range(6):
        if step == 3:
            opt.add_param_group({"params": [ours[2]], "lr": 0.02, "weight_decay": 0.1})
            topt.add_param_group({"params": [theirs[2]], "lr": 0.02, "weight_decay": 0.1})
        set_grads(ours, theirs, rng, "float64")
        opt.step()
        topt.step()
    assert_params_match(ours, theirs, "float64")
    assert opt.steps == {0: 6, 1: 6, 2: 3}


@pytest.mark.torch
def test_a_parameter_without_a_gradient_is_skipped_as_torch_skips_it():
    ours, theirs = make_params("float64")
    opt, topt = optim.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    rng = np.random.default_rng(2)
    for step in range(5):
        set_grads(ours, theirs, rng, "float64")
        if step % 2:
            ours[1].grad, theirs[1].grad = None, None
        opt.step()
        topt.step()
    assert_params_match(ours, theirs, "float64")


@pytest.mark.torch
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_continues_as_uninterrupted(case):
    cls, _, options = CASES[case]
    a, _ = make_params("float32")
    opt = cls(groups_of(a, options), **options)
    rng = np.random.default_rng(4)
    grads = [[rng.standard_normal(s).astype("float32") for s in SHAPES] for _ in range(8)]

    def steps(o, params, gs):
        for g in gs:
            for p, v in zip(params, g):
                p.grad = Tensor(v, dtype="float32")
            o.step()

    steps(opt, a, grads[:4])
    sd = opt.state_dict()
    b = [nn.Parameter(p.numpy().copy()) for p in a]
    resumed = cls(groups_of(b, {}))   # other hyper-parameters: the state dict's win
    resumed.load_state_dict(sd)
    steps(opt, a, grads[4:])
    steps(resumed, b, grads[4:])
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert resumed.step_count == opt.step_count == 8
    assert resumed.param_groups[1]["lr"] == opt.param_groups[1]["lr"]


@pytest.mark.torch
@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw_amsgrad", "rmsprop_centered_momentum",
                                  "adagrad_decay", "adadelta"])
def test_state_dict_has_torchs_layout_and_loads_torchs_state(case):
    """The layout is torch's (state by index, groups with "params" as indices); torch's own
    state dict, as numpy arrays, loads and continues as torch does."""
    cls, tname, options = CASES[case]
    ours, theirs = make_params("float64")
    opt = cls(groups_of(ours, options), **options)
    topt = getattr(torch.optim, tname)(groups_of(theirs, options), **options)
    run(opt, topt, ours, theirs, 3, "float64")
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g["lr"] == tg["lr"] and g["weight_decay"] == tg["weight_decay"]
    assert all(isinstance(v, np.ndarray) for st in sd["state"].values() for v in st.values())
    # torch's state dict, its tensors as numpy arrays, into a fresh optimizer
    as_numpy = {"state": {i: {k: v.numpy().copy() for k, v in st.items()}
                          for i, st in tsd["state"].items()},
                "param_groups": [{k: v for k, v in g.items()} for g in tsd["param_groups"]]}
    fresh = [nn.Parameter(tp.detach().numpy().copy(), dtype="float64") for tp in theirs]
    other = cls(groups_of(fresh, {}))
    other.load_state_dict(as_numpy)
    rng = np.random.default_rng(9)
    for _ in range(3):
        set_grads(fresh, theirs, rng, "float64")
        other.step()
        topt.step()
    assert_params_match(fresh, theirs, "float64")


def test_state_dict_keeps_what_checkpoints_read():
    p = nn.Parameter(np.ones((2, 3), np.float32))
    opt = optim.Adam([p], lr=0.01)
    p.grad = Tensor(np.full((2, 3), 0.5, np.float32))
    opt.step()
    sd = opt.state_dict()
    assert sd["step_count"] == 1 and sd["lr"] == 0.01 and set(sd["state"][0]) == {"m", "v"}
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    opt2 = optim.Adam([nn.Parameter(np.ones((2, 3), np.float32))], lr=0.5)
    opt2.load_state_dict({"step_count": sd["step_count"], "lr": sd["lr"], "state": sd["state"]})
    assert opt2.lr == 0.01 and opt2.steps == {0: 1}


def test_load_state_dict_checks_groups_before_changing_anything():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    bad_lr = {**sd, "param_groups": [sd["param_groups"][0], {**sd["param_groups"][1], "lr": -2}]}
    with pytest.raises(ValueError, match=r"SGD \(group 1 of the state dict\): lr must be .*-2"):
        opt.load_state_dict(bad_lr)
    with pytest.raises(ValueError, match="1 parameter groups"):
        opt.load_state_dict({**sd, "param_groups": sd["param_groups"][:1]})
    moved = {**sd, "param_groups": [{**sd["param_groups"][0], "params": [0, 1]},
                                    {**sd["param_groups"][1], "params": []}]}
    with pytest.raises(ValueError, match="group 0 of the state dict has 2 parameters"):
        opt.load_state_dict(moved)
    with pytest.raises(KeyError, match="parameter 7"):
        opt.load_state_dict({**sd, "state": {7: {"v": np.zeros(3)}}})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5] and opt.state == {}


def test_constructor_forms_and_attributes():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    # needle's spelling and torch's give the same groups
    assert optim.Adam([a], beta1=0.8, beta2=0.9).param_groups[0]["betas"] == (0.8, 0.9)
    assert optim.Adam([a], betas=(0.8, 0.9)).beta2 == 0.9
    opt = optim.SGD([{"params": a}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    assert opt.params == [a, b] and opt.lr == 0.1 and opt.momentum == 0.9
    opt.lr = 0.01   # needle's habit: every group
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
    named = optim.SGD([("w", a), ("b", b)], lr=0.1)
    assert named.params == [a, b] and named.param_groups[0]["param_names"] == ["w", "b"]
    loss = optim.SGD([a], lr=0.1).step(lambda: 3.0)
    assert loss == 3.0


def test_zero_grad_to_none_or_to_zeros():
    p = nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = Tensor(np.array([1.0, 2.0, 3.0]))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


BAD = [
    (lambda p: optim.SGD(p, lr=-1), lambda p: torch.optim.SGD(p, lr=-1), "SGD: lr must be", "-1"),
    (lambda p: optim.SGD(p, lr=float("nan")), None, "SGD: lr must be", "nan"),
    (lambda p: optim.Adam(p, lr=float("inf")), None, "Adam: lr must be", "inf"),
    (lambda p: optim.SGD(p, momentum=-0.5), lambda p: torch.optim.SGD(p, momentum=-0.5),
     "SGD: momentum must be", "-0.5"),
    (lambda p: optim.SGD(p, weight_decay=-1e-4), lambda p: torch.optim.SGD(p, weight_decay=-1e-4),
     "SGD: weight_decay must be", "-0.0001"),
    (lambda p: optim.SGD(p, momentum=0.9, nesterov=True, dampening=0.1),
     lambda p: torch.optim.SGD(p, momentum=0.9, nesterov=True, dampening=0.1),
     "SGD: nesterov=True needs momentum > 0 and dampening 0", "dampening=0.1"),
    (lambda p: optim.SGD(p, nesterov=True), lambda p: torch.optim.SGD(p, nesterov=True),
     "SGD: nesterov=True needs", "momentum=0.0"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), lambda p: torch.optim.Adam(p, betas=(1.0, 0.999)),
     "Adam: betas must be", "(1.0, 0.999)"),
    (lambda p: optim.AdamW(p, beta2=-0.1), lambda p: torch.optim.AdamW(p, betas=(0.9, -0.1)),
     "AdamW: betas must be", "-0.1"),
    (lambda p: optim.Adam(p, eps=-1e-8), lambda p: torch.optim.Adam(p, eps=-1e-8),
     "Adam: eps must be", "-1e-08"),
    (lambda p: optim.AdamW(p, weight_decay=-0.01), lambda p: torch.optim.AdamW(p, weight_decay=-0.01),
     "AdamW: weight_decay must be", "-0.01"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), lambda p: torch.optim.Adagrad(p, lr_decay=-1),
     "Adagrad: lr_decay must be", "-1"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1),
     lambda p: torch.optim.Adagrad(p, initial_accumulator_value=-1),
     "Adagrad: initial_accumulator_value must be", "-1"),
    (lambda p: optim.RMSprop(p, alpha=-0.1), lambda p: torch.optim.RMSprop(p, alpha=-0.1),
     "RMSprop: alpha must be", "-0.1"),
    (lambda p: optim.RMSprop(p, momentum=-1), lambda p: torch.optim.RMSprop(p, momentum=-1),
     "RMSprop: momentum must be", "-1"),
    (lambda p: optim.Adadelta(p, rho=1.5), lambda p: torch.optim.Adadelta(p, rho=1.5),
     "Adadelta: rho must be", "1.5"),
    (lambda p: optim.SGD([{"params": p, "lr": -3}], lr=0.1), None, "SGD (group 0): lr must be", "-3"),
]


@pytest.mark.torch
@pytest.mark.parametrize("make,tmake,message,value", BAD)
def test_invalid_hyper_parameters_are_valueerrors_naming_them(make, tmake, message, value):
    with pytest.raises(ValueError) as info:
        make([nn.Parameter(np.ones(3))])
    assert message in str(info.value) and value in str(info.value), str(info.value)
    if tmake is not None:   # torch refuses it too
        with pytest.raises(ValueError):
            tmake([torch.nn.Parameter(torch.ones(3))])


def test_bad_parameter_lists():
    p = nn.Parameter(np.ones(3))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="not a set"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="betas is a pair"):
        optim.Adam([p], 0.01, 0.9)
    with pytest.raises(ValueError, match="not both"):
        optim.Adam([p], betas=(0.9, 0.99), beta1=0.8)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        opt.lr = -0.1
    assert opt.lr == 0.1


def test_make_optimizer_names_still_build():
    from mininet.training import make_optimizer
    for name in ("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop"):
        p = nn.Parameter(np.ones(3, np.float32))
        opt = make_optimizer(name, [p], 0.01, weight_decay=1e-4)
        p.grad = Tensor(np.ones(3, np.float32))
        opt.step()
        assert opt.param_groups[0]["weight_decay"] == 1e-4 and math.isfinite(p.numpy().sum())
