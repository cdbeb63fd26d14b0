"""Learning-rate schedules with torch.optim.lr_scheduler's names and behaviour: built on an
optimizer, they set every param group's lr at construction (epoch 0) and at each step();
last_epoch, get_last_lr(), state_dict()/load_state_dict() as torch's.

Each lr is a function of the epoch and the group's initial lr (its closed form), so a
schedule stepped again to an epoch gives that epoch's lr whatever the optimizer's lr was
(`mininet train --resume` relies on it). torch computes most of them from the current lr
instead (chainable); alone, or in a SequentialLR, both give the same lrs, but two schedules
stepping one optimizer at once do not combine here: the last one's lr wins."""
from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..backend.capture import capturing, host_call, uncaptured, wrap_own_method
from .optimizers import Optimizer

_Lambda = Callable[[int], float]   # LambdaLR's lr_lambda: epoch -> factor


def _check(name, what, value, ok):
    if not ok:
        raise ValueError(f"{name}: {what}, got {value!r}")


def _whole(v, low):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


class LRScheduler:
    """Base class: a subclass gives lr_at(base_lr, epoch, group) (or get_lr())."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected a mininet optimizer, got {type(optimizer).__name__}")
        _check(name, "last_epoch must be a whole number >= -1", last_epoch, _whole(last_epoch, -1))
        self.optimizer = optimizer
        groups = optimizer.param_groups
        if last_epoch == -1:
            for g in groups:
                g.setdefault("initial_lr", g["lr"])
        for k, g in enumerate(groups):
            if "initial_lr" not in g:
                raise KeyError(f"{name}: param_groups[{k}] has no 'initial_lr', which resuming "
                               f"with last_epoch={last_epoch} needs (load the optimizer's state "
                               "saved with this schedule first)")
        self.base_lrs = [g["initial_lr"] for g in groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        uncaptured(self.step)   # made in a captured block: once, not at every replay

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or go to `epoch`) and set every group's lr. In a kernel graph's
        capture it is a host call: each replay steps the schedule again (torch's per-batch
        schedules, OneCycleLR, step inside the captured block)."""
        if capturing():
            host_call(self._advance, epoch)
            return
        self._advance(epoch)

    def _advance(self, epoch):
        self._step_count += 1
        self._update_lr(epoch)

    def __init_subclass__(cls, **kw):
        """A subclass's own step() is one host call in a kernel graph's capture, its own
        Python included (run again at each replay)."""
        super().__init_subclass__(**kw)
        wrap_own_method(cls, "step", lambda self, run, args, kwargs: host_call(run))

    def _update_lr(self, epoch=None):
        if epoch is not None:
            _check(type(self).__name__, "epoch must be a whole number >= 0", epoch, _whole(epoch, 0))
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        """Every param group's lr at last_epoch, as a list of floats (one per group,
        in param_groups' order); step() writes them into the groups."""
        return [self.lr_at(base, self.last_epoch, g)
                for base, g in zip(self.base_lrs, self.optimizer.param_groups)]

    def lr_at(self, base_lr: float, epoch: int, group: dict[str, Any]) -> float:
        """The lr of one param group at `epoch`, from the group's initial lr
        `base_lr` (the closed form each schedule gives); `group` is the param-group dict (for
        schedules that read it). A subclass gives this or get_lr()."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The lrs the last step set, one per param group."""
        return list(self._last_lr)

    # state ---------------------------------------------------------------------------------
    _not_state: tuple[str, ...] = ("optimizer",)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (and functions), as torch's."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k not in self._not_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take state_dict's values; a key this schedule does not have is a KeyError."""
        unknown = sorted(set(state_dict) - set(self.state_dict()))
        if unknown:
            raise KeyError(f"{type(self).__name__}.load_state_dict: unknown keys {unknown}")
        last = state_dict.get("last_epoch", self.last_epoch)
        _check(type(self).__name__, "last_epoch must be a whole number >= -1", last, _whole(last, -1))
        self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
    """lr = initial lr * lr_lambda(epoch); one function, or one per param group."""
    _not_state = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: _Lambda | list[_Lambda] | tuple[_Lambda, ...],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n:
            raise ValueError(f"LambdaLR: {len(lambdas)} lr_lambdas for {n} param groups")
        for f in lambdas:
            if not callable(f):
                raise TypeError(f"LambdaLR: lr_lambda must be callable, got {type(f).__name__}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """initial lr * lr_lambda(last_epoch) for each param group (its own lambda when
        one was given per group), as a list of floats."""
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = initial lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        _check("StepLR", "step_size must be a whole number >= 1", step_size, _whole(step_size, 1))
        _check("StepLR", "gamma must be a finite number", gamma, _real(gamma))
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return base * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = initial lr * gamma ** (the milestones passed, counted with repeats)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        milestones = sorted(milestones)
        for m in milestones:
            _check("MultiStepLR", "milestones must be whole numbers >= 0", m, _whole(m, 0))
        _check("MultiStepLR", "gamma must be a finite number", gamma, _real(gamma))
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return base * self.gamma ** bisect_right(self.milestones, epoch)


class ConstantLR(LRScheduler):
    """lr = initial lr * factor until epoch total_iters, then the initial lr."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        _check("ConstantLR", "factor must be in [0, 1]", factor, _real(factor) and 0 <= factor <= 1)
        _check("ConstantLR", "total_iters must be a whole number >= 0", total_iters,
               _whole(total_iters, 0))
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return base * (self.factor if epoch < self.total_iters else 1.0)


class LinearLR(LRScheduler):
    """lr = initial lr * a factor going linearly from start_factor to end_factor over
    total_iters epochs (a warm-up when start_factor < end_factor), then end_factor."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        _check("LinearLR", "start_factor must be in (0, 1]", start_factor,
               _real(start_factor) and 0 < start_factor <= 1)
        _check("LinearLR", "end_factor must be in [0, 1]", end_factor,
               _real(end_factor) and 0 <= end_factor <= 1)
        _check("LinearLR", "total_iters must be a whole number >= 1", total_iters,
               _whole(total_iters, 1))
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        done = min(self.total_iters, epoch) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * done)


class ExponentialLR(LRScheduler):
    """lr = initial lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        _check("ExponentialLR", "gamma must be a finite number", gamma, _real(gamma))
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return base * self.gamma ** epoch


class PolynomialLR(LRScheduler):
    """lr = initial lr * (1 - min(epoch, total_iters) / total_iters) ** power."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        _check("PolynomialLR", "total_iters must be a whole number >= 1", total_iters,
               _whole(total_iters, 1))
        _check("PolynomialLR", "power must be a finite number", power, _real(power))
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return base * (1.0 - min(self.total_iters, epoch) / self.total_iters) ** self.power


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial lr - eta_min) (1 + cos(pi epoch / T_max)) / 2: half a cosine
    down to eta_min over T_max epochs, and back up over the next T_max (as torch's).
    mininet's older spelling t_max= is accepted."""

    def __init__(self, optimizer, T_max=None, eta_min=0.0, last_epoch=-1, *, t_max=None):
        if (T_max is None) == (t_max is None):
            raise TypeError("CosineAnnealingLR: give T_max (once)")
        T_max = T_max if t_max is None else t_max
        _check("CosineAnnealingLR", "T_max must be a number > 0", T_max, _real(T_max) and T_max > 0)
        _check("CosineAnnealingLR", "eta_min must be a finite number", eta_min, _real(eta_min))
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base: float, epoch: int, group: dict[str, Any]) -> float:
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch's): lr from max_lr / div_factor up to max_lr over pct_start of
    total_steps, then down to that / final_div_factor (three_phase: back to the start first,
    then down), by a cosine or linearly; with cycle_momentum the momentum (SGD, RMSprop) or
    beta1 (Adam) moves the other way between max_momentum and base_momentum. Step once per
    batch; stepping past total_steps is a ValueError."""

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        name = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected a mininet optimizer, got {type(optimizer).__name__}")
        if total_steps is not None:
            _check(name, "total_steps must be a whole number >= 1", total_steps, _whole(total_steps, 1))
        elif epochs is not None and steps_per_epoch is not None:
            _check(name, "epochs must be a whole number >= 1", epochs, _whole(epochs, 1))
            _check(name, "steps_per_epoch must be a whole number >= 1", steps_per_epoch,
                   _whole(steps_per_epoch, 1))
            total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(f"{name}: give total_steps, or epochs and steps_per_epoch")
        _check(name, "pct_start must be a number in [0, 1]", pct_start,
               _real(pct_start) and 0 <= pct_start <= 1)
        _check(name, "anneal_strategy must be 'cos' or 'linear'", anneal_strategy,
               anneal_strategy in ("cos", "linear"))
        for what, v in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            _check(name, f"{what} must be a number > 0", v, _real(v) and v > 0)
        self.total_steps, self.anneal_strategy = total_steps, anneal_strategy
        self.cycle_momentum, self.three_phase = cycle_momentum, three_phase
        up = float(pct_start * total_steps) - 1
        if three_phase:   # (last step of the phase, lr from, lr to, momentum from, to)
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (2 * up, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                            (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        groups = optimizer.param_groups
        max_lrs = _per_group(name, "max_lr", max_lr, len(groups))
        if last_epoch == -1:
            for g, top in zip(groups, max_lrs):
                g["initial_lr"], g["max_lr"] = top / div_factor, top
                g["min_lr"] = g["initial_lr"] / final_div_factor
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{name}: cycle_momentum needs an optimizer with momentum or "
                                 f"betas, not {type(optimizer).__name__} (pass cycle_momentum=False)")
            self.use_beta1 = "betas" in optimizer.defaults
            tops = _per_group(name, "max_momentum", max_momentum, len(groups))
            bases = _per_group(name, "base_momentum", base_momentum, len(groups))
            if last_epoch == -1:
                for g, top, base in zip(groups, tops, bases):
                    self._set_momentum(g, top)
                    g["max_momentum"], g["base_momentum"] = top, base
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, m):
        if self.use_beta1:
            group["betas"] = (m, *group["betas"][1:])
        else:
            group["momentum"] = m

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def get_lr(self) -> list[float]:
        """Every param group's lr at the current step of the cycle (and, with
        cycle_momentum, sets the group's momentum or beta1), as a list of floats."""
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, past total_steps="
                             f"{self.total_steps}")
        lrs = []
        for g in self.optimizer.param_groups:
            start = 0.0
            for k, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end or k == len(self._phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(g[lr0], g[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(g, self._anneal(g[m0], g[m1], pct))
                    break
                start = end
        return lrs


def _per_group(name, what, value, n):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values of {what} for {n} param groups")
    for v in values:
        _check(name, f"{what} must be a finite number", v, _real(v))
    return values


class SequentialLR(LRScheduler):
    """schedulers[0] until milestones[0], then schedulers[1] (from its epoch 0), ..."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        name = "SequentialLR"
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError(f"{name}: expected at least one scheduler")
        for k, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(f"{name}: scheduler {k} ({type(s).__name__}) steps another "
                                 "optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: {len(schedulers)} schedulers need "
                             f"{len(schedulers) - 1} milestones, got {len(milestones)}")
        if milestones != sorted(milestones):
            raise ValueError(f"{name}: milestones must be increasing, got {milestones}")
        self.optimizer, self._schedulers, self._milestones = optimizer, schedulers, milestones
        self.last_epoch = last_epoch + 1
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        for s in schedulers:   # undo the step each made when it was built
            s.last_epoch -= 1
        first = schedulers[bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self):
        """Advance one epoch: the schedule whose span holds the new epoch steps (a
        schedule reaching its milestone starts from its own epoch 0). Takes no epoch, as torch's.
        A host call in a kernel graph's capture, as LRScheduler.step."""
        self.last_epoch += 1
        k = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[k]
        if k > 0 and self._milestones[k - 1] == self.last_epoch:
            s._update_lr(0)
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    _not_state = ("optimizer", "_schedulers")

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (last_epoch, the milestones, ...) and, under
        '_schedulers', each inner schedule's state_dict(), as a dict."""
        return {**super().state_dict(), "_schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by state_dict(), the inner schedules' too;
        ValueError when the number of inner states does not match."""
        state_dict = dict(state_dict)
        inner = state_dict.pop("_schedulers", None)
        if inner is None or len(inner) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: expected the states of "
                             f"{len(self._schedulers)} schedulers under '_schedulers'")
        super().load_state_dict(state_dict)
        for s, sd in zip(self._schedulers, inner):
            s.load_state_dict(sd)
