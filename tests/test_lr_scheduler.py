"""mininet.optim.lr_scheduler against torch.optim.lr_scheduler: the lr of every param group
(and OneCycleLR's momentum) over 40 steps, state_dict round trips, refused arguments."""
import math

import numpy as np
import pytest

from mininet import nn, optim
from mininet.optim import lr_scheduler

from conftest import torch

STEPS = 40

# name: (optimizer, its options, scheduler, its arguments)
CASES = {
    "step": ("SGD", {}, "StepLR", dict(step_size=7, gamma=0.5)),
    "multistep": ("SGD", {}, "MultiStepLR", dict(milestones=[3, 10, 10, 25], gamma=0.3)),
    "exponential": ("Adam", {}, "ExponentialLR", dict(gamma=0.9)),
    "cosine": ("SGD", {}, "CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
    "cosine_long": ("AdamW", {}, "CosineAnnealingLR", dict(T_max=40)),
    "lambda": ("SGD", {}, "LambdaLR", dict(lr_lambda=lambda e: 1.0 / (1 + e) ** 0.5)),
    "linear_warmup": ("SGD", {}, "LinearLR", dict(start_factor=0.1, total_iters=8)),
    "linear_default": ("Adam", {}, "LinearLR", dict()),
    "linear_decay": ("SGD", {}, "LinearLR", dict(start_factor=1.0, end_factor=0.2, total_iters=30)),
    "constant": ("SGD", {}, "ConstantLR", dict(factor=0.5, total_iters=4)),
    "polynomial": ("SGD", {}, "PolynomialLR", dict(total_iters=25, power=2.0)),
    "onecycle_default": ("SGD", {"momentum": 0.9}, "OneCycleLR", dict(max_lr=0.5, total_steps=STEPS)),
    "onecycle_adam": ("Adam", {}, "OneCycleLR", dict(max_lr=[0.01, 0.02], total_steps=STEPS)),
    "onecycle_linear_3phase": ("RMSprop", {}, "OneCycleLR",
                               dict(max_lr=0.1, epochs=4, steps_per_epoch=10, pct_start=0.25,
                                    anneal_strategy="linear", three_phase=True)),
    "onecycle_no_momentum": ("Adagrad", {}, "OneCycleLR",
                             dict(max_lr=0.1, total_steps=STEPS, cycle_momentum=False,
                                  div_factor=10.0, final_div_factor=100.0)),
}


def build(lib, opt_name, opt_kw, sched_name, kw):
    """Two param groups (lr 0.1 and 0.05) on lib's optimizer, and lib's scheduler."""
    if lib == "torch":
        ps = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
        opt = getattr(torch.optim, opt_name)([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}],
                                             lr=0.1, **opt_kw)
        return opt, getattr(torch.optim.lr_scheduler, sched_name)(opt, **kw)
    ps = [nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))]
    opt = getattr(optim, opt_name)([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}],
                                   lr=0.1, **opt_kw)
    return opt, getattr(lr_scheduler, sched_name)(opt, **kw)


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def sequence(opt, sched, steps=STEPS):
    """(lrs, momenta, last lrs) at construction and after each step."""
    lrs, ms, last = [[g["lr"] for g in opt.param_groups]], [momenta(opt)], [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()   # no gradients: nothing moves, but torch wants it before sched.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        ms.append(momenta(opt))
        last.append(sched.get_last_lr())
    return np.array(lrs, float), ms, np.array(last, float)


@pytest.mark.torch
@pytest.mark.parametrize("case", list(CASES))
def test_lr_sequence_matches_torch(case):
    opt, sched = build("mininet", *CASES[case])
    topt, tsched = build("torch", *CASES[case])
    steps = STEPS - 1 if case.startswith("onecycle") else STEPS   # total_steps lrs in all
    lrs, ms, last = sequence(opt, sched, steps)
    tlrs, tms, tlast = sequence(topt, tsched, steps)
    np.testing.assert_allclose(lrs, tlrs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(last, tlast, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(lrs, last)
    if case.startswith("onecycle") and CASES[case][3].get("cycle_momentum", True):
        np.testing.assert_allclose(np.array(ms, float), np.array(tms, float), rtol=1e-12)
    assert sched.last_epoch == tsched.last_epoch == steps
    assert len(np.unique(lrs[:, 0])) >= 2   # the schedule moved


@pytest.mark.torch
@pytest.mark.parametrize("milestones,parts", [
    ([5], [("LinearLR", dict(start_factor=0.01, total_iters=5)),
           ("CosineAnnealingLR", dict(T_max=30, eta_min=1e-4))]),
    ([3, 12], [("ConstantLR", dict(factor=0.2, total_iters=3)),
               ("ExponentialLR", dict(gamma=0.8)),
               ("StepLR", dict(step_size=4, gamma=0.5))]),
])
def test_sequential_lr_matches_torch(milestones, parts):
    seqs = []
    for lib, mod in (("mininet", lr_scheduler), ("torch", torch and torch.optim.lr_scheduler)):
        opt, first = build(lib, "SGD", {}, *parts[0])
        rest = [getattr(mod, name)(opt, **kw) for name, kw in parts[1:]]
        sched = getattr(mod, "SequentialLR")(opt, [first, *rest], milestones=milestones)
        seqs.append(sequence(opt, sched)[0])
    np.testing.assert_allclose(seqs[0], seqs[1], rtol=1e-12, atol=1e-15)


@pytest.mark.torch
def test_onecycle_refuses_to_step_past_total_steps_as_torch():
    opt, sched = build("mininet", "SGD", {}, "OneCycleLR", dict(max_lr=0.1, total_steps=5))
    topt, tsched = build("torch", "SGD", {}, "OneCycleLR", dict(max_lr=0.1, total_steps=5))
    for _ in range(5):   # torch lets last_epoch reach total_steps
        sched.step()
        topt.step()
        tsched.step()
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
    with pytest.raises(ValueError, match="total_steps=5"):
        sched.step()
    with pytest.raises(ValueError):
        tsched.step()


@pytest.mark.parametrize("case", ["step", "cosine", "onecycle_adam", "linear_warmup"])
def test_state_dict_round_trip_continues_as_uninterrupted(case):
    opt, sched = build("mininet", *CASES[case])
    for _ in range(12):
        sched.step()
    osd, ssd = opt.state_dict(), sched.state_dict()
    assert "optimizer" not in ssd and ssd["last_epoch"] == 12
    rest = []
    for _ in range(15):
        sched.step()
        rest.append(sched.get_last_lr())
    opt2, sched2 = build("mininet", *CASES[case])
    opt2.load_state_dict(osd)
    sched2.load_state_dict(ssd)
    again = []
    for _ in range(15):
        sched2.step()
        again.append(sched2.get_last_lr())
    assert again == rest


def test_sequential_lr_state_dict_round_trip():
    def make():
        opt, warm = build("mininet", "SGD", {}, "LinearLR", dict(start_factor=0.1, total_iters=4))
        cos = lr_scheduler.CosineAnnealingLR(opt, T_max=20)
        return opt, lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[4])
    opt, sched = make()
    for _ in range(6):
        sched.step()
    sd = sched.state_dict()
    assert len(sd["_schedulers"]) == 2
    tail = []
    for _ in range(5):
        sched.step()
        tail.append(sched.get_last_lr())
    opt2, sched2 = make()
    sched2.load_state_dict(sd)
    for i in range(5):
        sched2.step()
        assert sched2.get_last_lr() == tail[i]


def test_resuming_by_stepping_to_the_epoch_gives_that_epochs_lr():
    """`mininet train --resume`: a new schedule stepped `start` times after the checkpoint
    restored the (already scheduled) lr gives the uninterrupted run's lr."""
    from mininet.training import make_scheduler
    for name in ("cosine", "step"):
        p = nn.Parameter(np.ones(2))
        opt = optim.SGD([p], lr=0.1)
        sched = make_scheduler(name, opt, 9)
        for _ in range(4):
            sched.step()
        saved = opt.state_dict()
        for _ in range(3):
            sched.step()
        want = opt.lr
        opt2 = optim.SGD([nn.Parameter(np.ones(2))], lr=0.1)
        sched2 = make_scheduler(name, opt2, 9)
        opt2.load_state_dict({"step_count": saved["step_count"], "lr": saved["lr"], "state": {}})
        for _ in range(7):
            sched2.step()
        assert opt2.lr == pytest.approx(want, rel=1e-15)


def test_the_old_spellings_keep_working():
    p = nn.Parameter(np.zeros(4))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.CosineAnnealingLR(opt, t_max=4)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [(1 + np.cos(np.pi * t / 4)) / 2 for t in range(1, 5)])
    opt2 = optim.SGD([p], lr=1.0)
    step = optim.StepLR(opt2, 2, 0.5)
    for _ in range(4):
        step.step()
    assert opt2.lr == 0.25 and step.get_last_lr() == [0.25]


def test_every_group_follows_its_own_initial_lr():
    opt, sched = build("mininet", "SGD", {}, "ExponentialLR", dict(gamma=0.5))
    for _ in range(3):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1 * 0.125, 0.05 * 0.125]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.05]


@pytest.mark.parametrize("make,words", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), ["StepLR", "step_size", "0"]),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=-1), ["CosineAnnealingLR", "T_max", "-1"]),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0), ["LinearLR", "start_factor", "0"]),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), ["LinearLR", "end_factor", "1.5"]),
    (lambda o: lr_scheduler.ConstantLR(o, factor=2.0), ["ConstantLR", "factor", "2.0"]),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1), ["OneCycleLR", "total_steps"]),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5),
     ["OneCycleLR", "pct_start", "1.5"]),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"),
     ["anneal_strategy", "'exp'"]),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.1, 0.2, 0.3], total_steps=10),
     ["3 values of max_lr for 2 param groups"]),
    (lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0]), ["1 lr_lambdas for 2 param groups"]),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], milestones=[3]),
     ["1 schedulers need 0 milestones"]),
    (lambda o: lr_scheduler.StepLR(o, 2, last_epoch=-2), ["last_epoch", "-2"]),
])
def test_bad_arguments_are_valueerrors_naming_them(make, words):
    opt, _ = build("mininet", "SGD", {}, "ConstantLR", dict(factor=1.0))
    with pytest.raises(ValueError) as info:
        make(opt)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_cycle_momentum_needs_an_optimizer_with_momentum():
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="cycle_momentum"):
        lr_scheduler.OneCycleLR(optim.Adadelta([p]), max_lr=0.1, total_steps=10)
    assert math.isclose(lr_scheduler.OneCycleLR(optim.Adadelta([p]), max_lr=0.1, total_steps=10,
                                                cycle_momentum=False).get_last_lr()[0], 0.004)
