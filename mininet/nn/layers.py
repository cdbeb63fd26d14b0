"""Layers: Linear, Conv, pooling, Flatten/Unflatten, Dropout/Dropout2d. Activations,
normalisation and losses live in activation.py, norm.py and loss.py (names re-exported
here, where they used to be). Modules keep needle's weight layout: Linear's weight is
(in_features, out_features), torch's transposed."""
from numbers import Integral

from .. import init, ops
from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, check_probability, positive_int
from .activation import (ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU,  # noqa: F401
                         Softmax, Softplus, Tanh)
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, LayerNorm1d  # noqa: F401
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss,  # noqa: F401
                   MSELoss, NLLLoss, SmoothL1Loss, SoftmaxLoss)


class Linear(Module):
    """y = x W + b: input `(*, in_features)`, output `(*, out_features)`. needle's layout:
    weight W of shape (in_features, out_features) (torch's is (out, in): transpose it, or
    use F.linear, which takes torch's), bias (out_features,) (None with bias=False); both
    kaiming-uniform initialised as needle. An input whose last dim is not in_features raises
    ValueError; sizes must be positive ints."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        in_features = positive_int("Linear", "in_features", in_features)
        out_features = positive_int("Linear", "out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, dtype=dtype, device=device))
        self.bias = Parameter(init.kaiming_uniform(out_features, 1, dtype=dtype, device=device)
                              .reshape((out_features,))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape {x.shape} "
                             f"has {x.shape[-1]} features")
        return ops.linear(x, self.weight, self.bias)

    def forward_relu(self, x: Tensor) -> Tensor:
        """relu(self(x)) as one op (the ReLU taken as the bias is added): input
        `(*, in_features)`, output `(*, out_features)`. Sequential calls it for a Linear
        followed by a ReLU."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape {x.shape} "
                             f"has {x.shape[-1]} features")
        return ops.linear(x, self.weight, self.bias, relu=True)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _pair_of(what, name, value, least):
    """value as an (int, int) pair, each >= least, else ValueError naming the argument."""
    pair = (value, value) if isinstance(value, Integral) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, Integral)
                                             or v < least for v in pair):
        kind = "positive ints" if least > 0 else "ints >= 0"
        raise ValueError(f"{what}: {name} must be an int or a pair of {kind}, got {value!r}")
    return tuple(int(v) for v in pair)


class Conv(Module):
    """2-D convolution (torch's Conv2d; Conv2d is this class): input (N, C_in, H, W), output
    (N, C_out, H_out, W_out), H_out = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1
    (W_out alike). weight (C_out, C_in / groups, kH, kW), torch's layout, kaiming-uniform
    (fan_in = C_in / groups * kH * kW) as needle; bias (C_out,) from U(-1/sqrt(fan_in),
    1/sqrt(fan_in)). kernel_size, stride, padding, dilation: an int or an (h, w) pair;
    groups must divide both channel counts (ValueError otherwise)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, device=None, dtype="float32"):
        super().__init__()
        in_channels = positive_int("Conv2d", "in_channels", in_channels)
        out_channels = positive_int("Conv2d", "out_channels", out_channels)
        groups = positive_int("Conv2d", "groups", groups)
        kh, kw = _pair_of("Conv2d", "kernel_size", kernel_size, 1)
        _pair_of("Conv2d", "stride", stride, 1)
        _pair_of("Conv2d", "padding", padding, 0)
        _pair_of("Conv2d", "dilation", dilation, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        fan_in = in_channels // groups * kh * kw
        shape = (out_channels, in_channels // groups, kh, kw)
        self.weight = Parameter(init.kaiming_uniform(fan_in, None, shape=shape, dtype=dtype, device=device))
        bound = 1.0 / fan_in ** 0.5
        self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, dtype=dtype,
                                        device=device)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def forward_relu(self, x: Tensor) -> Tensor:
        """relu(self(x)) as one op (the ReLU taken as the output is written): the same
        shapes and errors as forward. Sequential calls it for a Conv2d followed by a ReLU."""
        return F.conv2d_relu(x, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, self.groups)

    def _get_name(self):
        return "Conv2d" if type(self) is Conv else super()._get_name()

    def extra_repr(self):
        pair = lambda name, v: _pair_of("Conv2d", name, v, 0)   # noqa: E731
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={pair('stride', self.stride)}")
        if pair("padding", self.padding) != (0, 0):
            text += f", padding={pair('padding', self.padding)}"
        if pair("dilation", self.dilation) != (1, 1):
            text += f", dilation={pair('dilation', self.dilation)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + (", bias=False" if self.bias is None else "")


Conv2d = Conv


class MaxPool2d(Module):
    """Max over each kernel window (F.max_pool2d): input (N, C, H, W), output
    (N, C, H_out, W_out), H_out = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1.
    kernel_size, stride (default: kernel_size), padding, dilation: an int or an (h, w) pair."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride
        return (f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode=False")


class AvgPool2d(Module):
    """Mean over each kernel window, zero padding counted (F.avg_pool2d): input
    (N, C, H, W), output (N, C, H_out, W_out), H_out = (H + 2 padding - kH) // stride + 1.
    kernel_size, stride (default: kernel_size), padding: an int or an (h, w) pair."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"


def _dim(what, name, value):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{what}: {name} must be an int, got {value!r}")
    return int(value)


class Flatten(Module):
    """Dims start_dim..end_dim merged into one (torch's defaults keep the batch dim):
    (N, C, H, W) becomes (N, C * H * W). Non-int dims raise TypeError."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = _dim("Flatten", "start_dim", start_dim)
        self.end_dim = _dim("Flatten", "end_dim", end_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Dim `dim` split into unflattened_size (one entry may be -1, inferred): with dim=1
    and (C, H, W), input (N, C * H * W) becomes (N, C, H, W). A size that does not split
    raises ValueError."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = _dim("Unflatten", "dim", dim)
        sizes = tuple(unflattened_size) if isinstance(unflattened_size, (tuple, list)) else None
        if not sizes or any(isinstance(s, bool) or not isinstance(s, Integral) or (s < 1 and s != -1)
                            for s in sizes) or list(sizes).count(-1) > 1:
            raise ValueError(f"Unflatten: unflattened_size must be a tuple of positive ints "
                             f"(one may be -1), got {unflattened_size!r}")
        self.unflattened_size = tuple(int(s) for s in sizes)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dim + x.ndim if self.dim < 0 else self.dim
        if not 0 <= d < x.ndim:
            raise ValueError(f"Unflatten: dim {self.dim} is out of range for input of shape {x.shape}")
        sizes = self.unflattened_size
        known = 1
        for s in sizes:
            known *= s if s != -1 else 1
        n = x.shape[d]
        if (-1 in sizes and (known == 0 or n % known)) or (-1 not in sizes and known != n):
            raise ValueError(f"Unflatten: dim {self.dim} of size {n} cannot be split into {sizes}")
        sizes = tuple(n // known if s == -1 else s for s in sizes)
        return x.reshape(tuple(x.shape[:d]) + sizes + tuple(x.shape[d + 1:]))

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Dropout(Module):
    """Zero each element with probability p in training, scale the rest by 1/(1-p); the
    identity in eval mode. Input of any shape `(*)`, output of the same shape. The mask
    comes from mininet's generator (init.dropout_mask): on CUDA a Philox kernel keyed by two
    words drawn from it, on the CPU its uniforms; manual_seed repeats either. A p outside
    [0, 1] raises ValueError."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = check_probability(type(self).__name__, p)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Zero whole channels (an (n, c) plane of (N, C, H, W) input) with probability p in
    training, scale the rest by 1/(1-p) (F.dropout2d); output of the input's shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout2d(x, self.p, self.training)
