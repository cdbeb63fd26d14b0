"""Loss modules with PyTorch's arguments; each calls its mininet.nn.functional form.
reduction= is 'mean' (default), 'sum' or 'none'; a weight or pos_weight is a buffer, as
torch's."""
from numbers import Real
from typing import Any

import numpy as np

from .. import ops
from ..autograd import Tensor
from ..ndarray import NDArray
from ..ops.nn import label_range, xent_checked_labels, xent_host_labels
from . import functional as F
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    # set by __init__ from **buffers (a buffer, or None); declared for the type checker
    weight: Tensor | None
    pos_weight: Tensor | None

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
    """Mean squared error (input - target)^2 (F.mse_loss). Called with `input` and
    `target` of one shape `(*)`; returns shape () for reduction 'mean' (default) or 'sum', shape
    `(*)` for 'none'. Another reduction raises ValueError."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Mean absolute error |input - target| (F.l1_loss). `input`, `target` of one shape
    `(*)`; returns shape () for reduction 'mean' (default) or 'sum', `(*)` for 'none'."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    """Huber-like loss (F.smooth_l1_loss): 0.5 d^2 / beta where |d| < beta, else
    |d| - 0.5 beta. `input`, `target` of one shape `(*)`; returns shape () for 'mean' / 'sum',
    `(*)` for 'none'. `beta` must be a number >= 0 (ValueError otherwise)."""

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        if isinstance(beta, bool) or not isinstance(beta, Real) or beta < 0:
            raise ValueError(f"SmoothL1Loss: beta must be a number >= 0, got {beta!r}")
        self.beta = beta

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.smooth_l1_loss(input, target, self.reduction, self.beta)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities (F.binary_cross_entropy; each log clamped at
    -100, as torch). `input` (probabilities in [0, 1]) and `target` of one shape `(*)`;
    `weight` (a Tensor broadcasting to `(*)`, kept as a buffer) scales each term. Returns shape
    () for 'mean' / 'sum', `(*)` for 'none'."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction, weight=weight)

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits, stable for any logit
    (F.binary_cross_entropy_with_logits). `input` (logits) and `target` of one shape `(*)`;
    `weight` broadcasts to `(*)`; `pos_weight` of shape (C,) (C the last dim) scales the
    positive term; both are buffers. Returns shape () for 'mean' / 'sum', `(*)` for 'none'."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  self.pos_weight)


def _ignore_index(what, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: ignore_index must be an int, got {value!r}")
    return int(value)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities at integer targets (F.nll_loss):
    `input` of shape (N, C), (N, C, d1, ...) or (C,) (class dim 1), `target` int64 of shape
    (N,) / (N, d1, ...). `weight` (C,) per class (a buffer); targets equal to `ignore_index`
    (an int, TypeError otherwise) are skipped. Returns shape () for 'mean' / 'sum', the
    target's shape for 'none'."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction, weight=weight)
        self.ignore_index = _ignore_index("NLLLoss", ignore_index)

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


def _host_labels(target):
    """The labels as a numpy array: a view of a host array's memory where the device shares
    it (read at once: the loss op copies the labels it keeps), else a copy."""
    raw = target.cached_data if isinstance(target, Tensor) else target
    if not isinstance(raw, NDArray):
        return np.asarray(raw)
    dev = raw.device
    if dev.has("share_host") and raw.is_compact() and raw.size:
        return dev.array_view(raw)   # (a copy to numpy and back cost ~5 us a step)
    return raw.numpy()


class CrossEntropyLoss(_Loss):
    """log_softmax over dim 1, then NLL (F.cross_entropy): `input` logits of shape
    (N, C), (N, C, d1, ...) or (C,); `target` int64 class indices of shape (N,) /
    (N, d1, ...), or class probabilities of the input's shape. `weight` (C,),
    `ignore_index`, `reduction` and `label_smoothing` (in [0, 1], ValueError otherwise) as
    torch's. Returns shape () for 'mean' / 'sum', (N,) / (N, d1, ...) for 'none'. With the
    defaults and (N, C) logits it is one fused op (ops.softmax_cross_entropy), which also
    takes whole-number float labels as needle's SoftmaxLoss did."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction, weight=weight)
        self.ignore_index = _ignore_index("CrossEntropyLoss", ignore_index)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, Real) \
                or not 0 <= label_smoothing <= 1:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Any) -> Tensor:
        plain = (self.weight is None and self.reduction == "mean" and not self.label_smoothing
                 and input.ndim == 2)
        if plain and isinstance(target, Tensor):
            if not target.device.synchronous:
                return ops.softmax_cross_entropy(input, target)   # labels stay on the device
            # the kernel checks the labels; one equal to ignore_index lies outside [0, C)
            # unless ignore_index is a class (then the host path below looks for it)
            if not 0 <= self.ignore_index < input.shape[1]:
                loss = xent_checked_labels(input, target)
                if loss is not None:
                    return loss
        y = _host_labels(target)
        if plain and y.dtype.kind in "iu":
            # integer labels: their min and max, read once, serve the range check and
            # show most batches hold no ignore_index (-100 by default) without a search
            y = y.astype(np.int64, copy=False)
            lo, hi = label_range(y)
            ignore = self.ignore_index
            if not (lo <= ignore <= hi and y.size and np.any(y == ignore)):
                return xent_host_labels(input, y, lo, hi)
        soft = y.dtype.kind == "f" and y.shape == tuple(input.shape)
        if plain and not soft and not np.any(y == self.ignore_index):
            return ops.softmax_cross_entropy(input, y)
        if not soft and y.dtype.kind == "f" and np.all(y == np.round(y)):
            target = y.astype(np.int64)   # needle's float labels
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


SoftmaxLoss = CrossEntropyLoss   # needle's name
