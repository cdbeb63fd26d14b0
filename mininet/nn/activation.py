"""Activation modules: each calls its mininet.nn.functional form. inplace= is accepted
for PyTorch scripts and printed as torch prints it; the result is computed out of place."""
from numbers import Real

from .. import ops
from ..autograd import Tensor
from . import functional as F
from .module import Module


def _inplace(flag):
    return "inplace=True" if flag else ""


def _number(what, name, value):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what}: {name} must be a number, got {value!r}")
    return value


class ReLU(Module):
    """max(x, 0), elementwise: input of any shape `(*)`, output of the same shape. `inplace`
    is accepted for PyTorch scripts (and printed) but the result is computed out of place."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class Tanh(Module):
    """tanh(x), elementwise: input of any shape `(*)`, output of the same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise: input of any shape `(*)`, output of the same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class GELU(Module):
    """x * Phi(x) (Phi the standard normal CDF), elementwise: input of shape `(*)`, output of
    the same shape. `approximate`: 'none' (exact, through erf; default) or 'tanh' (torch's
    approximation); another value raises ValueError."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x * sigmoid(x), elementwise: input of shape `(*)`, output of the same shape. `inplace`
    is accepted and printed, the result computed out of place."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class LeakyReLU(Module):
    """x where x > 0, else `negative_slope` * x (default 0.01), elementwise: input of
    shape `(*)`, output of the same shape. A non-number slope raises TypeError; `inplace` is
    accepted, the result computed out of place."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = _number("LeakyReLU", "negative_slope", negative_slope)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    """x where x > 0, else alpha (exp(x) - 1), elementwise: input of shape `(*)`, output of the
    same shape. A non-number `alpha` raises TypeError; `inplace` is accepted, the result
    computed out of place."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = _number("ELU", "alpha", alpha)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, elementwise (x itself where beta x > `threshold`):
    input of shape `(*)`, output of the same shape. beta=0 raises ValueError, a non-number
    TypeError."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = _number("Softplus", "beta", beta)
        self.threshold = _number("Softplus", "threshold", threshold)
        if beta == 0:
            raise ValueError("Softplus: beta must not be 0")

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


def _softmax_dim(dim, x):
    """dim, or torch's old implicit choice when None: 0 for 0-, 1- and 3-D input, else 1."""
    if dim is not None:
        return dim
    return 0 if x.ndim in (0, 1, 3) else 1


class Softmax(Module):
    """softmax along `dim`: input of shape `(*)`, output of the same shape, each slice
    along dim summing to 1. dim=None takes torch's old implicit choice (0 for 0-, 1- and 3-D
    input, else 1), without torch's warning."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, _softmax_dim(self.dim, x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log(softmax(x)) along `dim`, computed stably: input of shape `(*)`, output of the
    same shape. dim=None as Softmax's (0 for 0-, 1- and 3-D input, else 1)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, _softmax_dim(self.dim, x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
