"""Loss modules with PyTorch's arguments; each calls its mininet.nn.functional form.
reduction= is 'mean' (default), 'sum' or 'none'; a weight or pos_weight is a buffer, as
torch's."""
from numbers import Real

import numpy as np

from .. import ops
from ..autograd import Tensor
from ..ndarray import NDArray
from . import functional as F
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction="mean", **buffers):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or 'none', "
                             f"got {reduction!r}")
        self.reduction = reduction
        for name, value in buffers.items():
            if value is None:
                setattr(self, name, None)
            elif isinstance(value, Tensor):
                self.register_buffer(name, value)
            else:
                raise TypeError(f"{type(self).__name__}: {name} must be a Tensor or None, got "
                                f"{type(value).__name__}")


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        if isinstance(beta, bool) or not isinstance(beta, Real) or beta < 0:
            raise ValueError(f"SmoothL1Loss: beta must be a number >= 0, got {beta!r}")
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, self.reduction, self.beta)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities (each log clamped at -100, as torch)."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction, weight=weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits, stable for any logit; pos_weight (per class, the
    last dim) scales the positive term."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  self.pos_weight)


def _ignore_index(what, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: ignore_index must be an int, got {value!r}")
    return int(value)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (class dim 1) at integer targets."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction, weight=weight)
        self.ignore_index = _ignore_index("NLLLoss", ignore_index)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


def _host_labels(target):
    raw = target.cached_data if isinstance(target, Tensor) else target
    return raw.numpy() if isinstance(raw, NDArray) else np.asarray(raw)


class CrossEntropyLoss(_Loss):
    """log_softmax over dim 1, then NLL (class-index or class-probability targets). With
    the defaults and (N, C) logits it is one fused op (ops.softmax_cross_entropy), which
    also takes whole-number float labels as needle's SoftmaxLoss did."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction, weight=weight)
        self.ignore_index = _ignore_index("CrossEntropyLoss", ignore_index)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, Real) \
                or not 0 <= label_smoothing <= 1:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        plain = (self.weight is None and self.reduction == "mean" and not self.label_smoothing
                 and input.ndim == 2)
        if plain and isinstance(target, Tensor) and not target.device.synchronous:
            return ops.softmax_cross_entropy(input, target)   # labels stay on the device
        y = _host_labels(target)
        soft = y.dtype.kind == "f" and y.shape == tuple(input.shape)
        if plain and not soft and not np.any(y == self.ignore_index):
            return ops.softmax_cross_entropy(input, y)
        if not soft and y.dtype.kind == "f" and np.all(y == np.round(y)):
            target = y.astype(np.int64)   # needle's float labels
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


SoftmaxLoss = CrossEntropyLoss   # needle's name
