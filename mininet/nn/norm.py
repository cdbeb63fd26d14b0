"""Normalisation layers: BatchNorm1d/2d (running statistics as buffers), needle's
LayerNorm1d, and PyTorch's LayerNorm and GroupNorm (through mininet.nn.functional)."""
from numbers import Real

from .. import init, ops
from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, positive_int


def _eps(what, eps):
    if isinstance(eps, bool) or not isinstance(eps, Real) or not eps > 0:
        raise ValueError(f"{what}: eps must be a positive number, got {eps!r}")
    return eps


class _BatchNorm(Module):
    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        what = type(self).__name__
        self.dim, self.eps = positive_int(what, "num_features", dim), _eps(what, eps)
        self.momentum = momentum
        self.weight = Parameter(init.ones(dim, dtype=dtype, device=device))
        self.bias = Parameter(init.zeros(dim, dtype=dtype, device=device))
        self.register_buffer("running_mean", init.zeros(dim, dtype=dtype, device=device))
        self.register_buffer("running_var", init.ones(dim, dtype=dtype, device=device))

    def extra_repr(self):
        return (f"{self.dim}, eps={self.eps}, momentum={self.momentum}, affine=True, bias=True, "
                "track_running_stats=True")

    def _norm(self, x, axes, keep, relu=False):
        if x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}({self.dim}): input of shape {x.shape} "
                             f"has {x.shape[1]} channels")
        if self.training:
            norm = ops.batch_norm_relu if relu else ops.batch_norm
            y, op = norm(x, self.weight, self.bias, axes, self.eps)
            n = x.numel() // self.dim
            m = self.momentum  # running var is unbiased, as in PyTorch
            rm, rv = self.running_mean.cached_data, self.running_var.cached_data
            # written into the buffers in place (as torch): a kernel graph's replay updates
            # the same statistics, and references to the buffers stay current
            rm[...] = rm * (1 - m) + op.mean * m
            rv[...] = rv * (1 - m) + op.var * (m * n / max(n - 1, 1))
            return y
        mean = ops.broadcast_to(ops.reshape(self.running_mean, keep), x.shape)
        inv = ops.broadcast_to(ops.reshape((self.running_var + self.eps) ** -0.5, keep), x.shape)
        w = ops.broadcast_to(ops.reshape(self.weight, keep), x.shape)
        b = ops.broadcast_to(ops.reshape(self.bias, keep), x.shape)
        y = (x - mean) * inv * w + b
        return ops.relu(y) if relu else y

    def forward_relu(self, x: Tensor) -> Tensor:
        """relu(self(x)), in training mode one fused op (the kernel writes max(bn, 0) and
        the backward masks by its output in the same pass): Sequential calls it for a
        BatchNorm followed by a ReLU."""
        axes, keep = self._axes(x)
        return self._norm(x, axes, keep, relu=True)

    def forward(self, x: Tensor) -> Tensor:
        """The normalised x, of x's shape (the class docstring says which shapes)."""
        axes, keep = self._axes(x)
        return self._norm(x, axes, keep)

    def _axes(self, x) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(reduced axes, shape of the per-channel statistics broadcast over x)."""
        raise NotImplementedError


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) input over the batch, per feature: in training, the
    batch mean and biased variance normalise, and running_mean / running_var (buffers of shape
    (C,); the variance kept unbiased, as torch) move by `momentum`; in eval mode the running
    statistics normalise. Then weight (C,) (ones) and bias (C,) (zeros). `dim` is C (a
    positive int); the output has the input's shape. An input whose dim 1 is not C raises
    ValueError."""

    def _axes(self, x):
        return (0,), (1, self.dim)


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) input over N, H and W, per channel (as BatchNorm1d:
    running statistics of shape (C,) as buffers, weight and bias (C,)); output of the input's
    shape. Input that is not 4-D, or has another C, raises ValueError."""

    def _axes(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d({self.dim}): input must be 4-D (N, C, H, W), got {x.shape}")
        return (0, 2, 3), (1, self.dim, 1, 1)


class LayerNorm1d(Module):
    """needle's layer norm: normalise the input `(*, dim)` over its last dim (of size
    `dim`; biased variance, `eps` added), then weight (dim,) (ones) and bias (dim,) (zeros).
    The output has the input's shape."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim, dtype=dtype, device=device))
        self.bias = Parameter(init.zeros(dim, dtype=dtype, device=device))

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        return ops.layer_norm(x, 1, self.weight, self.bias, self.eps)


class LayerNorm(Module):
    """PyTorch's: normalise input of shape `(*, *normalized_shape)` over its last
    len(normalized_shape) dims (biased variance, `eps` added); weight (ones) and bias (zeros)
    of shape normalized_shape when elementwise_affine (bias=False drops the bias). Output of
    the input's shape. An input not ending in normalized_shape raises ValueError."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype="float32"):
        super().__init__()
        shape = normalized_shape if hasattr(normalized_shape, "__iter__") else (normalized_shape,)
        self.normalized_shape = tuple(positive_int("LayerNorm", "normalized_shape", n)
                                      for n in shape)
        if not self.normalized_shape:
            raise ValueError("LayerNorm: normalized_shape must name at least one dim, got ()")
        self.eps, self.elementwise_affine = _eps("LayerNorm", eps), bool(elementwise_affine)
        affine = self.elementwise_affine
        self.weight = Parameter(init.ones(*self.normalized_shape, dtype=dtype, device=device)) \
            if affine else None
        self.bias = Parameter(init.zeros(*self.normalized_shape, dtype=dtype, device=device)) \
            if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine="
                f"{self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """PyTorch's: input `(N, C, *)` normalised over each group of C / num_groups channels
    and the remaining dims; weight (ones) and bias (zeros) of shape (C,) when affine. Output
    of the input's shape. `num_channels` not divisible by `num_groups`, or an input whose dim
    1 is not num_channels, raises ValueError."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype="float32", *, bias=True):
        super().__init__()
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} must be divisible by "
                             f"num_groups={num_groups}")
        self.eps, self.affine = _eps("GroupNorm", eps), bool(affine)
        self.weight = Parameter(init.ones(num_channels, dtype=dtype, device=device)) \
            if affine else None
        self.bias = Parameter(init.zeros(num_channels, dtype=dtype, device=device)) \
            if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}): input of shape "
                             f"{x.shape} does not have {self.num_channels} channels in dim 1")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
