"""Optimizers with PyTorch's rules, names and parameter groups. Updates write parameters in
place and build no graph; SGD and Adam/AdamW (without amsgrad) run one fused kernel per
parameter, the others a few elementwise array ops.

Every optimizer holds `param_groups`: dicts with "params" and that group's hyper-parameters
(lr, weight_decay, ...: the constructor's arguments are the defaults of every group), as
torch's. Per-parameter state lives in `state[index]` (the index counts parameters through
the groups in order, as torch's state_dict does) under mininet's short names, which the
checkpoint files use; load_state_dict also takes torch's:

    SGD      v (torch: momentum_buffer)
    Adam(W)  m, v, max_v (exp_avg, exp_avg_sq, max_exp_avg_sq)
    Adagrad  sum        RMSprop  square_avg, momentum (momentum_buffer), grad_avg
    Adadelta square_avg, acc_delta

and the steps each parameter took in `steps[index]` (torch's state "step")."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

import numpy as np

from ..autograd import Tensor, _bump, enable_grad
from ..backend.capture import (CaptureError, capturing, check_params, host_call, note_zeroed,
                               refuse, wrap_own_method)
from ..ndarray import NDArray


def check_count(name, value):
    """ValueError unless value is a whole number in [0, 2**31): an int (not 3.0, not True),
    as state_dict and save_checkpoint write step_count and epoch."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < 2 ** 31):
        raise ValueError(f"{name} must be a whole number in [0, 2**31), got {value!r}")


def check_lr(lr):
    """ValueError unless lr is a finite number >= 0."""
    if not _finite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")


def _finite(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# hyper-parameter checks by kind: (test, what the value must be)
_KINDS = {
    "nonneg": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "unit": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "unit_closed": (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "real": (_finite, "a finite number"),
    "bool": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
    "betas": (lambda v: isinstance(v, (tuple, list)) and len(v) == 2
              and all(_finite(b) and 0 <= b < 1 for b in v),
              "a pair (beta1, beta2) of numbers in [0, 1)"),
}


class Optimizer:
    """Base class: param_groups, state, step(), zero_grad(), state_dict()/load_state_dict().
    A subclass gives `hypers` ({name: kind}) and update(i, p, g, group)."""
    hypers = {"lr": "nonneg", "weight_decay": "nonneg", "maximize": "bool"}
    # the state arrays each optimizer keeps per parameter (None: any), those that must be
    # >= 0, and torch's names for them
    state_names: tuple[str, ...] | None = None
    nonnegative: tuple[str, ...] = ()
    torch_names: dict[str, str] = {}

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = self._checked_group(dict(defaults), "")
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}       # parameter index -> {name: NDArray}
        self.steps: dict[int, int] = {}       # parameter index -> steps it has taken (torch's state "step")
        self.step_count = 0   # calls of step()
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or "
                            f"of dicts (parameter groups), got a single Tensor: pass [tensor]")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # parameter groups ---------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Append a group: a dict with "params" (a Tensor, an iterable of them or of (name,
        Tensor) pairs) and any hyper-parameters, the others taken from the defaults."""
        name = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group is a dict with a 'params' entry, got "
                            f"{param_group!r:.100}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: parameters must be an ordered collection (a list), not a "
                            "set: a set's order changes between runs")
        params = [params] if isinstance(params, Tensor) else list(params)
        if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
            group["param_names"] = [n for n, _ in params]
            params = [p for _, p in params]
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for k, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameter {k} of group {len(self.param_groups)} is a "
                                f"{type(p).__name__}, not a Tensor")
            if p.op is not None:
                raise ValueError(f"{name}: parameter {k} of group {len(self.param_groups)} is "
                                 "not a leaf tensor (it was computed from others): optimize "
                                 "leaves, such as Parameters")
            if id(p) in seen:
                raise ValueError(f"{name}: parameter {k} of group {len(self.param_groups)} "
                                 "appears twice (in this group or another)")
            seen.add(id(p))
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(self._checked_group(group, f" (group {len(self.param_groups)})"))

    def _checked_group(self, group, where):
        """group with its hyper-parameters checked (ValueError naming the first bad one)."""
        for key, kind in self.hypers.items():
            if key in group:
                test, what = _KINDS[kind]
                if not test(group[key]):
                    raise ValueError(f"{type(self).__name__}{where}: {key} must be {what}, got "
                                     f"{group[key]!r}")
                if kind == "betas":
                    group[key] = tuple(float(b) for b in group[key])
                elif kind == "bool":
                    group[key] = bool(group[key])
        self._check_rules(group, where)
        return group

    def _check_rules(self, group, where):
        """Checks between hyper-parameters (SGD's nesterov)."""

    @property
    def params(self):
        """Every parameter, through the groups in order (the index of state and steps)."""
        return [p for g in self.param_groups for p in g["params"]]

    # a hyper-parameter read as an attribute is group 0's; set, it is every group's (needle's
    # single-group habits: opt.lr = 0.1)
    def __getattr__(self, name):
        groups, defaults = self.__dict__.get("param_groups"), self.__dict__.get("defaults")
        if groups and defaults is not None and name in defaults:
            return groups[0][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        defaults = self.__dict__.get("defaults")
        if defaults is not None and name in defaults and "param_groups" in self.__dict__:
            checked = [self._checked_group({**g, name: value}, "") for g in self.param_groups]
            for g, c in zip(self.param_groups, checked):
                g[name] = c[name]
            return
        object.__setattr__(self, name, value)

    # stepping -----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set_to_none=False: set them to zeros instead)."""
        if capturing():
            note_zeroed(self.params)
        for p in self.params:
            if p.grad is None or set_to_none:
                p.grad = None
            else:
                p.grad = Tensor.make_const(NDArray.make(p.grad.shape, device=p.grad.device,
                                                        dtype=p.grad.dtype).fill(0.0))

    reset_grad = zero_grad

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; closure (optional) recomputes
        the loss first, with grad mode on, and its value is returned. In a kernel graph's
        capture the whole update is kept as a host call, run again at each replay."""
        if capturing():
            return self._captured_step(lambda: self._step(None), closure)
        return self._step(closure)

    def __init_subclass__(cls, **kw):
        """A subclass's own step() (torch's habit of overriding it) is a host call in a
        kernel graph's capture as a whole, its own Python included."""
        super().__init_subclass__(**kw)
        wrap_own_method(cls, "step", lambda self, run, args, kwargs: self._captured_step(
            run, args[0] if args else kwargs.get("closure")))

    def _captured_step(self, run, closure):
        """run() (the update) as the capture's host call for this optimizer, its
        parameters checked: compact before (the update would move one to a new buffer),
        the same after, and at every replay (which also gives them back the captured
        gradients). A closure is refused (its loss would be lost at each replay)."""
        name = type(self).__name__
        if closure is not None:
            refuse("a closure")
        for p in self.params:
            x = p.cached_data
            if p.grad is not None and (x.offset or not x.is_compact()):
                raise CaptureError(f"kernel graph capture: {name}.step would move a "
                                   f"parameter of shape {x.shape} to a new buffer (it makes "
                                   "a non-compact or offset parameter compact): make the "
                                   "parameters compact before capturing")
        check = check_params(self.params, name)
        out = host_call(run)
        try:
            check()
        except CaptureError:
            raise CaptureError(f"kernel graph capture: {name}.step moved a parameter to a "
                               "new buffer; make the parameters compact before capturing, "
                               "and update them in place") from None
        return out

    def _step(self, closure):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self.__dict__["step_count"] = self.step_count + 1   # (__setattr__'s checks: not hot)
        i, steps, grad_of = 0, self.steps, self._grad
        for group in self.param_groups:
            items, maximize = [], group.get("maximize")
            for p in group["params"]:
                g = None if p.grad is None else grad_of(p)
                if g is not None:
                    steps[i] = steps.get(i, 0) + 1
                    items.append((i, p, -g if maximize else g))
                i += 1
            if items:
                self.update_group(items, group)
            for item in items:
                _bump(item[1].cached_data)   # written in place: graphs that saved p now raise
        return loss

    def update_group(self, items, group):
        """The updates of one param group: items are (i, p, g) as update() takes them, for
        its parameters with a gradient. By default one update() each; an optimizer with a
        fused kernel over several parameters overrides it."""
        for i, p, g in items:
            self.update(i, p, g, group)

    def update(self, i, p, g, group):
        """One parameter's update, given by each optimizer: `i` indexes the parameter (its
        state lives in self.state[i]), `p` is the Parameter, `g` its gradient as a compact
        NDArray of p's shape and dtype (negated when maximize), `group` its param group's
        options. step() calls it for every parameter with a gradient; it writes p in place."""
        raise NotImplementedError

    @staticmethod
    def _grad(p):
        """p's gradient as a compact NDArray of p's dtype (None: no gradient); p's own buffer
        made compact, which the fused kernels update."""
        if p.grad is None:
            return None
        g, x = p.grad.cached_data, p.cached_data
        if g.shape != x.shape:
            raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {x.shape}")
        if g.dtype is not x.dtype and g.dtype != x.dtype:
            g = g.astype(x.dtype)
        if x.offset or not x.is_compact():
            p.cached_data = x.copy()
        return g.compact()

    def _buffer(self, i, name, like, value=0.0):
        st = self.state.get(i)
        if st is None:
            st = self.state[i] = {}
        buf = st.get(name)
        if buf is None:
            buf = st[name] = NDArray.make(like.shape, device=like.device,
                                          dtype=like.dtype).fill(value)
        return buf

    # state dicts --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's layout: {"state": {index: {name: numpy array}}, "param_groups": [groups,
        "params" as indices]}, with "steps" ({index: steps taken}), "step_count" and "lr"
        (group 0's), which checkpoints store."""
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"state": {i: {k: v.numpy() for k, v in st.items()} for i, st in self.state.items()},
                "param_groups": groups, "steps": dict(self.steps),
                "step_count": self.step_count, "lr": self.lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the state (and the groups' hyper-parameters) with state_dict's, after
        checking all of it (a ValueError, TypeError or KeyError names what is wrong, and
        nothing changes): every array one this optimizer keeps, of its parameter's shape and
        dtype, finite (second moments >= 0). A state array of the wrong size would otherwise
        reach a fused kernel that reads its parameter's size of elements.
        Takes what state_dict gives (torch's layout, also torch's names for the arrays and a
        per-parameter "step"), or a checkpoint's {"step_count", "lr", "state"}."""
        sd = state_dict
        if "param_groups" in sd:
            groups, index = self._loaded_groups(sd["param_groups"])
        else:   # a checkpoint's: one lr for every group
            check_lr(sd["lr"])
            groups = [{**g, "lr": float(sd["lr"])} for g in self.param_groups]
            index = {i: i for i in range(len(self.params))}
        state, steps = self._loaded_state(sd.get("state", {}), index)
        for i, n in (sd.get("steps") or {}).items():
            check_count(f"steps[{i}]", n)
            steps[self._index(i, index)] = int(n)
        step_count = sd.get("step_count", max(steps.values(), default=0))
        check_count("step_count", step_count)
        for i in state:   # a checkpoint's parameters took step_count steps
            steps.setdefault(i, int(step_count))
        self.param_groups, self.step_count, self.steps = groups, int(step_count), steps
        self.state = {i: {k: NDArray(v, dtype=self.params[i].dtype, device=self.params[i].device)
                          for k, v in st.items()} for i, st in state.items()}

    def _loaded_groups(self, saved):
        """(the new groups: saved hyper-parameters, our parameters; {saved index: ours})."""
        name = type(self).__name__
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved)} parameter groups, this "
                             f"optimizer {len(self.param_groups)}")
        groups, index, start = [], {}, 0
        for k, (s, ours) in enumerate(zip(saved, self.param_groups)):
            ids = list(s.get("params", ()))
            if len(ids) != len(ours["params"]):
                raise ValueError(f"{name}: group {k} of the state dict has {len(ids)} "
                                 f"parameters, this optimizer's {len(ours['params'])}")
            for j, saved_id in enumerate(ids):
                index[saved_id] = start + j
            start += len(ids)
            group = {**self.defaults, **{key: v for key, v in s.items() if key != "params"},
                     "params": ours["params"]}
            groups.append(self._checked_group(group, f" (group {k} of the state dict)"))
        return groups, index

    def _index(self, i, index):
        if isinstance(i, bool) or not isinstance(i, (numbers.Integral, str)) or i not in index:
            raise KeyError(f"{type(self).__name__}: state for parameter {i!r}, but there are "
                           f"{len(self.params)} parameters")
        return index[i]

    def _loaded_state(self, saved, index):
        state, steps, params = {}, {}, self.params
        for i, st in saved.items():
            j = self._index(i, index)
            state[j] = {}
            for k, v in st.items():
                if k == "step":   # torch's per-parameter step
                    steps[j] = self._whole(f"state {i}/step", v)
                    continue
                k = self.torch_names.get(k, k)
                state[j][k] = self._checked(i, k, v, params[j])
        return state, steps

    def _whole(self, what, v):
        v = v.numpy() if isinstance(v, NDArray) else v
        v = v.item() if isinstance(v, np.ndarray) and v.size == 1 else v
        if not (_finite(v) and v >= 0 and float(v).is_integer()):
            raise ValueError(f"{type(self).__name__} {what} must be a whole number >= 0, got {v!r}")
        return int(v)

    def _checked(self, i, name, value, p):
        what = f"{type(self).__name__} state {i}/{name}"
        if self.state_names is not None and name not in self.state_names:
            raise KeyError(f"{what}: not a state this optimizer keeps "
                           f"({', '.join(self.state_names)})")
        value = value.numpy() if isinstance(value, NDArray) else value
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{what}: expected an array, got {type(value).__name__}")
        if value.shape != tuple(p.shape) or value.dtype != p.dtype:
            raise ValueError(f"{what} is {value.dtype} {value.shape}, its parameter is "
                             f"{p.dtype} {tuple(p.shape)}")
        if not np.isfinite(value).all():
            raise ValueError(f"{what} holds NaN or infinite values")
        if name in self.nonnegative and (value < 0).any():
            raise ValueError(f"{what} holds negative values (it is a sum of squares)")
        return value

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            lines += [f"    {key}: {v}" for key, v in g.items() if key not in ("params", "param_names")]
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """torch.optim.SGD: d = g + wd p; buf = momentum buf + (1 - dampening) d (buf = d at
    first); d = d + momentum buf (nesterov) or buf; p -= lr d."""
    hypers = {**Optimizer.hypers, "momentum": "nonneg", "dampening": "real", "nesterov": "bool"}
    state_names = ("v",)
    torch_names = {"momentum_buffer": "v"}

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_rules(self, group, where):
        if group.get("nesterov") and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD{where}: nesterov=True needs momentum > 0 and dampening 0, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def update(self, i, p, g, group):
        momentum = group["momentum"]
        first = "v" not in self.state.get(i, {})
        v = self._buffer(i, "v", g) if momentum else g
        p.device.sgd_step(p.cached_data, g, v, group["lr"], momentum, group["dampening"],
                          group["weight_decay"], group["nesterov"], first)


class Adam(Optimizer):
    """torch.optim.Adam (weight decay added to the gradient; decoupled_weight_decay=True is
    AdamW). betas=(beta1, beta2) as torch spells it, or needle's beta1=, beta2=."""
    hypers = {**Optimizer.hypers, "betas": "betas", "eps": "nonneg", "amsgrad": "bool",
              "decoupled_weight_decay": "bool"}
    state_names, nonnegative = ("m", "v", "max_v"), ("v", "max_v")
    torch_names = {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "max_v"}

    def __init__(self, params, lr=0.001, betas=None, eps=1e-8, weight_decay=0.0, amsgrad=False,
                 *, beta1=None, beta2=None, maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=_betas(type(self).__name__, betas, beta1, beta2),
                                      eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    @property
    def beta1(self):
        """The first param group's beta1 (betas[0], the mean's decay), as needle's attribute."""
        return self.param_groups[0]["betas"][0]

    @property
    def beta2(self):
        """The first param group's beta2 (betas[1], the squares' decay), as needle's attribute."""
        return self.param_groups[0]["betas"][1]

    def update(self, i, p, g, group):
        m, v = self._buffer(i, "m", g), self._buffer(i, "v", g)
        (b1, b2), t = group["betas"], self.steps[i]
        if group["amsgrad"]:
            return self._amsgrad(i, p, g, group, t)
        p.device.adam_step(p.cached_data, g, m, v, group["lr"], b1, b2, group["eps"],
                           group["weight_decay"], group["decoupled_weight_decay"], t)

    def update_group(self, items, group):
        """The group's parameters in one device call per (device, dtype): on the CPU one
        kernel and one parallel region for them all (issue 25.4: the MLP's four calls
        cost more than the work of all but its first layer)."""
        if group["amsgrad"] or len(items) == 1 or type(self).update is not Adam.update:
            # (a subclass that changes update() keeps its own per-parameter step)
            return super().update_group(items, group)
        (b1, b2) = group["betas"]
        state, steps, buckets = self.state, self.steps, {}
        for i, p, g in items:
            x = p.cached_data
            st = state.get(i)
            if st is None or "m" not in st or "v" not in st:
                m, v = self._buffer(i, "m", g), self._buffer(i, "v", g)
            else:
                m, v = st["m"], st["v"]
            # keyed by the device object's id: a Device hashes in Python (a call a lookup)
            key = (id(x.device), g.dtype)
            batch = buckets.get(key)
            if batch is None:
                batch = buckets[key] = (x.device, [], [], [], [], [])
            batch[1].append(x)
            batch[2].append(g)
            batch[3].append(m)
            batch[4].append(v)
            batch[5].append(steps[i])
        for dev, ps, gs, ms, vs, ts in buckets.values():
            dev.adam_steps(ps, gs, ms, vs, ts, group["lr"], b1, b2, group["eps"],
                           group["weight_decay"], group["decoupled_weight_decay"])

    def _amsgrad(self, i, p, g, group, t):
        """The step with v's running maximum in the denominator (array ops, not fused)."""
        x, st, (b1, b2) = p.cached_data, self.state[i], group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if group["decoupled_weight_decay"]:
            x[...] = x * (1 - lr * wd)
        elif wd:
            g = g + x * wd
        st["m"] = st["m"] * b1 + g * (1 - b1)
        st["v"] = st["v"] * b2 + g * g * (1 - b2)
        st["max_v"] = self._buffer(i, "max_v", g).maximum(st["v"])
        denom = st["max_v"].sqrt() / math.sqrt(1 - b2 ** t) + group["eps"]
        x[...] = x - st["m"] / denom * (lr / (1 - b1 ** t))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with the weight decay applied to the parameter
    (`p *= 1 - lr wd`), not added to the gradient."""

    def __init__(self, params, lr=0.001, betas=None, eps=1e-8, weight_decay=0.01, amsgrad=False,
                 *, beta1=None, beta2=None, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, beta1=beta1, beta2=beta2,
                         maximize=maximize, decoupled_weight_decay=True)


def _betas(name, betas, beta1, beta2):
    """(beta1, beta2) from torch's betas= or needle's beta1=/beta2= (not both)."""
    if betas is not None and not isinstance(betas, (tuple, list)):
        raise TypeError(f"{name}: betas is a pair (beta1, beta2), got {betas!r} (needle's "
                        "spelling takes keywords: beta1=..., beta2=...)")
    if betas is not None and (beta1 is not None or beta2 is not None):
        raise ValueError(f"{name}: give betas=(beta1, beta2) or beta1=/beta2=, not both")
    if betas is not None:
        return tuple(betas)
    return (0.9 if beta1 is None else beta1, 0.999 if beta2 is None else beta2)


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum += g^2; p -= lr / (1 + (t - 1) lr_decay) g / (sqrt(sum) + eps)."""
    hypers = {**Optimizer.hypers, "lr_decay": "nonneg", "initial_accumulator_value": "nonneg",
              "eps": "nonneg"}
    state_names = nonnegative = ("sum",)

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def update(self, i, p, g, group):
        x = p.cached_data
        if group["weight_decay"]:
            g = g + x * group["weight_decay"]
        s = self._buffer(i, "sum", g, group["initial_accumulator_value"]) + g * g
        self.state[i]["sum"] = s
        clr = group["lr"] / (1 + (self.steps[i] - 1) * group["lr_decay"])
        x[...] = x - g / (s.sqrt() + group["eps"]) * clr


class RMSprop(Optimizer):
    """torch.optim.RMSprop: sq = alpha sq + (1 - alpha) g^2; centered: minus the square of
    g's running mean; p -= lr g / (sqrt(.) + eps), through a momentum buffer if momentum."""
    hypers = {**Optimizer.hypers, "alpha": "nonneg", "eps": "nonneg", "momentum": "nonneg",
              "centered": "bool"}
    state_names, nonnegative = ("square_avg", "momentum", "grad_avg"), ("square_avg",)
    torch_names = {"momentum_buffer": "momentum"}

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def update(self, i, p, g, group):
        x, alpha = p.cached_data, group["alpha"]
        if group["weight_decay"]:
            g = g + x * group["weight_decay"]
        st = self.state.setdefault(i, {})
        sq = st["square_avg"] = self._buffer(i, "square_avg", g) * alpha + g * g * (1 - alpha)
        if group["centered"]:
            ga = st["grad_avg"] = self._buffer(i, "grad_avg", g) * alpha + g * (1 - alpha)
            sq = sq - ga * ga
        d = g / (sq.sqrt() + group["eps"])
        if group["momentum"] > 0:
            d = st["momentum"] = self._buffer(i, "momentum", g) * group["momentum"] + d
        x[...] = x - d * group["lr"]


class Adadelta(Optimizer):
    """torch.optim.Adadelta: sq = rho sq + (1 - rho) g^2; d = sqrt(acc + eps) / sqrt(sq + eps) g;
    acc = rho acc + (1 - rho) d^2; p -= lr d."""
    hypers = {**Optimizer.hypers, "rho": "unit_closed", "eps": "nonneg"}
    state_names = nonnegative = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def update(self, i, p, g, group):
        x, rho, eps = p.cached_data, group["rho"], group["eps"]
        if group["weight_decay"]:
            g = g + x * group["weight_decay"]
        st = self.state.setdefault(i, {})
        sq = st["square_avg"] = self._buffer(i, "square_avg", g) * rho + g * g * (1 - rho)
        acc = self._buffer(i, "acc_delta", g)
        d = (acc + eps).sqrt() / (sq + eps).sqrt() * g
        st["acc_delta"] = acc * rho + d * d * (1 - rho)
        x[...] = x - d * group["lr"]


def clip_grad_norm(params, max_norm):
    """Scale gradients in place (as torch's) so their global L2 norm is at most max_norm;
    returns the norm before. In a kernel graph's capture it is a host call: each replay
    measures and scales that replay's gradients again."""
    params = [params] if isinstance(params, Tensor) else list(params)
    if capturing():
        return host_call(_clip_grad_norm, params, max_norm)
    return _clip_grad_norm(params, max_norm)


def _clip_grad_norm(params, max_norm):
    grads = [p.grad.cached_data for p in params if p.grad is not None]
    total = math.sqrt(sum(float((g * g).sum().item()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g[...] = g * scale
            _bump(g)
    return total
