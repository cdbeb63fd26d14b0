"""Layers and losses."""
from .. import init, ops
from ..autograd import Tensor
from .module import Module, Parameter


class Linear(Module):
    """y = x W + b with W of shape (in, out); kaiming-uniform init as needle."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, dtype=dtype, device=device))
        self.bias = Parameter(init.kaiming_uniform(out_features, 1, dtype=dtype, device=device)
                              .reshape((out_features,))) if bias else None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape {x.shape} "
                             f"has {x.shape[-1]} features")
        return ops.linear(x, self.weight, self.bias)


class Conv(Module):
    """2-D convolution over (N, C, H, W) input, weight (out, in/groups, k, k) with
    kaiming-uniform init (fan_in = in/groups * k * k) as needle."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, device=None, dtype="float32"):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
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

    def forward(self, x):
        return ops.conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


Conv2d = Conv


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    def forward(self, x):
        return ops.reshape(x, (x.shape[0], -1)) if x.ndim != 2 else x


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Dropout(Module):
    """Zero each element with probability p in training, scale the rest by 1/(1-p). The
    mask comes from mininet's generator (init.dropout_mask): on CUDA a Philox kernel keyed
    by two words drawn from it, on the CPU its uniforms; manual_seed repeats either."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * init.dropout_mask(*x.shape, keep=1 - self.p, dtype=x.dtype, device=x.device)


class _BatchNorm(Module):
    _buffers = ("running_mean", "running_var")

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self.weight = Parameter(init.ones(dim, dtype=dtype, device=device))
        self.bias = Parameter(init.zeros(dim, dtype=dtype, device=device))
        self.running_mean = init.zeros(dim, dtype=dtype, device=device)
        self.running_var = init.ones(dim, dtype=dtype, device=device)

    def _norm(self, x, axes, keep):
        if x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}({self.dim}): input of shape {x.shape} "
                             f"has {x.shape[1]} channels")
        if self.training:
            y, op = ops.batch_norm(x, self.weight, self.bias, axes, self.eps)
            n = x.numel() // self.dim
            m = self.momentum  # running var is unbiased, as in PyTorch
            rm, rv = self.running_mean.cached_data, self.running_var.cached_data
            self.running_mean = Tensor.make_const((rm * (1 - m) + op.mean * m).astype(rm.dtype))
            self.running_var = Tensor.make_const(
                (rv * (1 - m) + op.var * (m * n / max(n - 1, 1))).astype(rv.dtype))
            return y
        mean = ops.broadcast_to(ops.reshape(self.running_mean, keep), x.shape)
        inv = ops.broadcast_to(ops.reshape((self.running_var + self.eps) ** -0.5, keep), x.shape)
        w = ops.broadcast_to(ops.reshape(self.weight, keep), x.shape)
        b = ops.broadcast_to(ops.reshape(self.bias, keep), x.shape)
        return (x - mean) * inv * w + b


class BatchNorm1d(_BatchNorm):
    def forward(self, x):
        return self._norm(x, (0,), (1, self.dim))


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) input over N, H and W, per channel."""

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d({self.dim}): input must be 4-D (N, C, H, W), got {x.shape}")
        return self._norm(x, (0, 2, 3), (1, self.dim, 1, 1))


class LayerNorm1d(Module):
    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim, dtype=dtype, device=device))
        self.bias = Parameter(init.zeros(dim, dtype=dtype, device=device))

    def forward(self, x):
        # ops.mean, not * (1.0 / n): zero features give an empty output, as torch
        mean = ops.broadcast_to(ops.reshape(ops.mean(x, -1), x.shape[:-1] + (1,)), x.shape)
        xc = x - mean
        var = ops.broadcast_to(ops.reshape(ops.mean(xc * xc, -1), x.shape[:-1] + (1,)), x.shape)
        return xc * (var + self.eps) ** -0.5 * ops.broadcast_to(self.weight, x.shape) + ops.broadcast_to(self.bias, x.shape)


class SoftmaxLoss(Module):
    """Mean cross-entropy of logits against integer labels."""

    def forward(self, logits, y):
        return ops.softmax_cross_entropy(logits, y)


CrossEntropyLoss = SoftmaxLoss


class MSELoss(Module):
    def forward(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {pred.shape} and target {target.shape} differ in shape")
        d = pred - target
        return ops.mean(d * d)   # NaN for empty inputs, as torch
