"""Optimizers and learning-rate schedules. Updates write parameters in place
and build no graph; SGD and Adam/AdamW run one fused kernel per parameter."""
import math
import numbers

import numpy as np

from .autograd import Tensor
from .ndarray import NDArray


def check_count(name, value):
    """ValueError unless value is a whole number in [0, 2**31): an int (not 3.0, not True),
    as state_dict and save_checkpoint write step_count and epoch."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < 2 ** 31):
        raise ValueError(f"{name} must be a whole number in [0, 2**31), got {value!r}")


def check_lr(lr):
    """ValueError unless lr is a finite number >= 0."""
    if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr)
            and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")


class Optimizer:
    def __init__(self, params, lr):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = lr
        self.state = {}  # param index -> dict of NDArrays
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    reset_grad = zero_grad

    def _grads(self):
        """(index, param, compact gradient NDArray) for params that have a gradient."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                g = p.grad.cached_data
                if g.shape != p.shape:
                    raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {p.shape}")
                if g.dtype != p.dtype:
                    g = g.astype(p.dtype)
                if p.cached_data.offset or not p.cached_data.is_compact():
                    p.cached_data = p.cached_data.copy()  # fused kernels update compact buffers
                yield i, p, g.compact()

    def _buffer(self, i, name, like):
        st = self.state.setdefault(i, {})
        if name not in st:
            st[name] = NDArray.make(like.shape, device=like.device, dtype=like.dtype).fill(0.0)
        return st[name]

    def step(self):
        self.step_count += 1
        for i, p, g in self._grads():
            self.update(i, p, g)

    def state_dict(self):
        return {"step_count": self.step_count, "lr": self.lr,
                "state": {i: {k: v.numpy() for k, v in st.items()} for i, st in self.state.items()}}

    # the state arrays each optimizer keeps per parameter (None: any), those that must be >= 0
    state_names = None
    nonnegative = ()

    def load_state_dict(self, sd):
        """Replace step_count, lr and the per-parameter state with sd's, after checking all
        of it (a ValueError, TypeError or KeyError names what is wrong, and nothing changes):
        every array must be one this optimizer keeps, of its parameter's shape and dtype, with
        finite values (second moments >= 0). A state array of the wrong size would otherwise
        reach a fused kernel that reads its parameter's size of elements."""
        step_count, lr = sd["step_count"], sd["lr"]
        check_count("step_count", step_count)
        check_lr(lr)
        state = {}
        for i, st in sd["state"].items():
            if isinstance(i, bool) or int(i) != i or not 0 <= int(i) < len(self.params):
                raise KeyError(f"{type(self).__name__}: state for parameter {i!r}, but there are "
                               f"{len(self.params)} parameters")
            p = self.params[int(i)]
            state[int(i)] = {k: self._checked(int(i), k, v, p) for k, v in st.items()}
        self.step_count, self.lr = int(step_count), float(lr)
        self.state = {i: {k: NDArray(v, dtype=self.params[i].dtype, device=self.params[i].device)
                          for k, v in st.items()} for i, st in state.items()}

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


class SGD(Optimizer):
    state_names = ("v",)

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.weight_decay = momentum, weight_decay
        self.nesterov, self.dampening = nesterov, dampening

    def update(self, i, p, g):
        first = "v" not in self.state.get(i, {})
        v = self._buffer(i, "v", g) if self.momentum else g
        p.device.sgd_step(p.cached_data, g, v, self.lr, self.momentum, self.dampening,
                          self.weight_decay, self.nesterov, first)


class Adam(Optimizer):
    decoupled = False
    state_names, nonnegative = ("m", "v"), ("v",)

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def update(self, i, p, g):
        m, v = self._buffer(i, "m", g), self._buffer(i, "v", g)
        p.device.adam_step(p.cached_data, g, m, v, self.lr, self.beta1, self.beta2, self.eps,
                           self.weight_decay, self.decoupled, self.step_count)


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay)


class Adagrad(Optimizer):
    state_names = nonnegative = ("sum",)

    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr)
        self.eps, self.weight_decay = eps, weight_decay

    def update(self, i, p, g):
        x = p.cached_data
        if self.weight_decay:
            g = g + x * self.weight_decay
        s = self._buffer(i, "sum", g) + g * g
        self.state[i]["sum"] = s
        x[...] = x - g / (s.sqrt() + self.eps) * self.lr


class RMSprop(Optimizer):
    state_names, nonnegative = ("square_avg", "momentum"), ("square_avg",)

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
        super().__init__(params, lr)
        self.alpha, self.eps, self.weight_decay, self.momentum = alpha, eps, weight_decay, momentum

    def update(self, i, p, g):
        x = p.cached_data
        if self.weight_decay:
            g = g + x * self.weight_decay
        sq = self._buffer(i, "square_avg", g) * self.alpha + g * g * (1 - self.alpha)
        self.state[i]["square_avg"] = sq
        d = g / (sq.sqrt() + self.eps)
        if self.momentum:
            d = self._buffer(i, "momentum", g) * self.momentum + d
            self.state[i]["momentum"] = d
        x[...] = x - d * self.lr


def clip_grad_norm(params, max_norm):
    """Scale gradients so their global L2 norm is at most max_norm; returns the norm before."""
    grads = [p.grad.cached_data for p in params if p.grad is not None]
    total = math.sqrt(sum(float((g * g).sum().item()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = Tensor.make_const(p.grad.cached_data * scale)
    return total


class StepLR:
    """lr = base * gamma ** (epoch // step_size); call step() once per epoch."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base, self.epoch = optimizer.lr, 0

    def step(self):
        self.epoch += 1
        self.optimizer.lr = self.base * self.gamma ** (self.epoch // self.step_size)


class CosineAnnealingLR:
    """lr follows half a cosine from base to eta_min over t_max steps."""

    def __init__(self, optimizer, t_max, eta_min=0.0):
        self.optimizer, self.t_max, self.eta_min = optimizer, t_max, eta_min
        self.base, self.epoch = optimizer.lr, 0

    def step(self):
        self.epoch += 1
        t = min(self.epoch, self.t_max)
        self.optimizer.lr = self.eta_min + (self.base - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2
