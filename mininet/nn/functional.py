"""torch.nn.functional's names (import mininet.nn.functional as F), composed from
mininet.ops: activations, losses with torch's reduction= ('mean', 'sum', 'none'),
linear with torch's (out, in) weight, conv2d, pooling, dropout, dropout2d, layer_norm,
group_norm, embedding, pad, one_hot. The modules of mininet.nn call these."""
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import init, ops
from ..autograd import Tensor
from ..ndarray import NDArray
from ..ops.conv_fused import conv_relu

IntPair = int | tuple[int, int]   # a size given for both spatial dims, or as (h, w)

relu = ops.relu
sigmoid = ops.sigmoid
tanh = ops.tanh


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim` (default the last), computed stably (the max
    subtracted first). `x` is a float Tensor of any shape `(*)`; the result has the same shape
    and dtype, each slice along `dim` summing to 1. torch's `softmax(x, dim)`."""
    return ops.softmax(x, dim)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log(softmax(x)) along `dim` (default the last), as x - logsumexp(x): no log of a
    rounded-down 0. `x`: a float Tensor of shape `(*)`; the result has the same shape and dtype."""
    return ops.logsoftmax(x, dim)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x), Phi the standard normal CDF, elementwise: exact (through erf) by default,
    `approximate='tanh'` for torch's tanh approximation. `x`: a float Tensor of shape `(*)`; the
    result has the same shape. Raises ValueError for another `approximate`."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return ops.gelu(x, approximate)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (swish), elementwise: a float Tensor of shape `(*)` in, the same shape
    out."""
    return ops.silu(x)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, elementwise and stable; where beta x > `threshold` the
    result is x itself (as torch). `x`: a float Tensor of shape `(*)`; the same shape out."""
    if beta == 1:   # one kernel pass (the other betas would give beta x / beta, not x)
        return ops.softplus(x, threshold)
    bx = x * beta
    soft = (ops.relu(bx) + ops.log1p(ops.exp(-ops.abs(bx)))) * (1.0 / beta)
    return ops.where(bx > threshold, x, soft)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else `negative_slope` * x, elementwise (default slope 0.01). `x`: a
    float Tensor of shape `(*)`; the result has the same shape."""
    return ops.leaky_relu(x, negative_slope)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """x where x > 0, else alpha (exp(x) - 1), elementwise, in one kernel pass. `x`: a
    float Tensor of shape `(*)`; the same shape out."""
    return ops.elu(x, alpha)


def _need_tensor(x, where, what="input"):
    """The ops' TypeError for a non-Tensor (a numpy array) given where an entry point reads
    .shape/.device before any op would say so."""
    if isinstance(x, Tensor):
        return
    kind = type(x)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        name += f" (shape {tuple(x.shape)}, {x.dtype})"
    raise TypeError(f"{where} ({what}): expected a mininet Tensor, got {name}; "
                    "wrap it: mininet.tensor(x)")


# losses -------------------------------------------------------------------------------
def _reduce(loss, reduction, what, count=None):
    """torch's reduction=; count replaces the element count of 'mean' (ignored targets)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        if count is None:
            return loss.mean()
        return loss.sum() * (1.0 / count if count else math.nan)   # nothing counted: NaN, as torch
    raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(a, b, what):
    _need_tensor(a, what)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{what}: input {a.shape} and target {b.shape} differ in shape")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error (input - target)^2. `input` and `target`: float Tensors of the
    same shape `(*)` (a different shape raises ValueError; torch would broadcast with a warning).
    `reduction`: 'mean' (default) and 'sum' give a 0-d Tensor (shape ()), 'none' the
    elementwise losses of shape `(*)`; another value raises ValueError."""
    _same_shape(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error |input - target|. `input`, `target`: float Tensors of one shape
    `(*)` (ValueError otherwise). `reduction` 'mean' (default) or 'sum': a 0-d Tensor of shape
    (); 'none': the losses, shape `(*)`."""
    _same_shape(input, target, "l1_loss")
    return _reduce(ops.abs(input - target), reduction, "l1_loss")


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Huber-like loss of d = input - target: 0.5 d^2 / beta where |d| < beta, else
    |d| - 0.5 beta (beta=0 gives l1_loss). `input`, `target`: float Tensors of one shape `(*)`
    (ValueError otherwise). `reduction` 'mean' (default) or 'sum' gives shape (); 'none' gives
    shape `(*)`."""
    _same_shape(input, target, "smooth_l1_loss")
    a = ops.abs(input - target)
    if beta == 0:
        return _reduce(a, reduction, "smooth_l1_loss")
    small = (a < beta)
    loss = ops.where(small, a * a * (0.5 / beta), a - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    """-(y log p + (1 - y) log(1 - p)) for probabilities `input` = p in [0, 1] and
    `target` = y, each log clamped at -100 as torch. `input`, `target`: float Tensors of one
    shape `(*)` (ValueError otherwise); `weight` (optional) broadcasts against that shape.
    `reduction` 'mean' (default) or 'sum': shape (); 'none': shape `(*)`."""
    _same_shape(input, target, "binary_cross_entropy")
    logp = ops.clip(ops.log(input), min=-100.0)
    log1mp = ops.clip(ops.log(1.0 - input), min=-100.0)
    loss = -(target * logp + (1.0 - target) * log1mp)
    return _reduce(loss if weight is None else loss * weight, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid and binary cross entropy in one stable formula,
    (1 - y) x + (1 + (pw - 1) y) (log1p(exp(-|x|)) + max(-x, 0)), for logits `input` = x and
    targets y. `input`, `target`: float Tensors of one shape `(*)` (ValueError otherwise);
    `weight` broadcasts to `(*)`; `pos_weight` (pw) weights the positives, shape (C,) for the
    last dim C. `reduction` 'mean' (default) or 'sum': shape (); 'none': shape `(*)`."""
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    log_sig_neg = ops.log1p(ops.exp(-ops.abs(input))) + ops.relu(-input)   # -log sigmoid(x)
    coef = 1.0 if pos_weight is None else (pos_weight - 1.0) * target + 1.0
    loss = (1.0 - target) * input + log_sig_neg * coef
    return _reduce(loss if weight is None else loss * weight, reduction,
                   "binary_cross_entropy_with_logits")


def _class_last(x):
    """(N, C, d1, ...) -> `(N * d1 * ..., C)`; (N, C) and (C,) as they are (as rows)."""
    if x.ndim <= 2:
        return x.reshape((1, -1)) if x.ndim == 1 else x
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    return ops.permute(x, perm).reshape((-1, x.shape[1]))


def _labels(target):
    raw = target.cached_data if isinstance(target, Tensor) else target
    y = raw.numpy() if isinstance(raw, NDArray) else np.asarray(raw)
    if y.dtype.kind not in "iu":
        raise TypeError(f"class targets must be integers, got {y.dtype}")
    return y.astype(np.int64).reshape(-1)


def nll_loss(input: Tensor, target: Any, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: -input[i, y_i], for log-probabilities `input` of shape
    (N, C) or (N, C, d1, ...) (class dim 1) or (C,), and int64 class indices `target` of shape
    (N,) or (N, d1, ...) (or a numpy array). `weight`: optional per-class Tensor of shape (C,).
    Targets equal to `ignore_index` (default -100) count for nothing; 'mean' divides by the
    summed weights of the targets counted (NaN if none), as torch. Returns shape () for 'mean'
    and 'sum', the target's shape for 'none'. Raises IndexError for a target outside [0, C),
    TypeError for non-integer targets."""
    _need_tensor(input, "nll_loss")
    logp = _class_last(input)
    y = _labels(target)
    c = logp.shape[1]
    keep = y != ignore_index
    if np.any((y[keep] < 0) | (y[keep] >= c)):
        raise IndexError(f"nll_loss: targets must lie in [0, {c}) (or be ignore_index), "
                         f"got {y[keep].min()}..{y[keep].max()}")
    safe = np.where(keep, y, 0)
    picked = ops.gather(logp, 1, safe.reshape(-1, 1)).reshape((-1,))
    w = np.ones(c) if weight is None else weight.numpy().astype(np.float64)
    wy = Tensor(w[safe] * keep, dtype=logp.dtype, device=logp.device)
    loss = -picked * wy
    out_shape = _target_shape(input, target)
    if reduction == "none":
        return loss.reshape(out_shape)
    return _reduce(loss, reduction, "nll_loss", count=float((w[safe] * keep).sum()))


def _target_shape(input, target):
    return tuple(np.shape(target) if not isinstance(target, Tensor) else target.shape) \
        if input.ndim != 1 else ()


def cross_entropy(input: Tensor, target: Any, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim 1, then nll_loss. `input`: float logits of shape
    (N, C), (N, C, d1, ...) or (C,). `target`: int64 class indices of shape (N,) /
    (N, d1, ...) (a Tensor or numpy array), or class probabilities of the input's shape.
    `weight` (C,), `ignore_index`, `reduction` ('mean', 'sum', 'none') and `label_smoothing`
    as torch's. Returns shape () for 'mean' / 'sum', the per-sample losses (N,) /
    (N, d1, ...) for 'none'. The plain mean over (N, C) is one fused op
    (ops.softmax_cross_entropy); on CUDA, int64 labels on the device stay there."""
    _need_tensor(input, "cross_entropy")
    if isinstance(target, Tensor) and target.dtype.kind == "f" and tuple(target.shape) == tuple(input.shape):
        return _soft_cross_entropy(input, target, weight, reduction, label_smoothing)
    if (isinstance(target, Tensor) and input.ndim == 2 and not input.device.synchronous
            and ignore_index == -100 and weight is None and reduction == "mean"
            and not label_smoothing and target.device == input.device
            and target.dtype == np.int64 and target.shape == (input.shape[0],)):
        # labels beside the logits on an asynchronous device (CUDA) are used where they are
        # (ops/nn.py _labels_on_device): reading them here would wait for the GPU each step.
        # A label of -100 (the default ignore_index) there gives a NaN loss, not a skip
        return ops.softmax_cross_entropy(input, target)
    y = _labels(target)
    if (input.ndim == 2 and weight is None and reduction == "mean" and not label_smoothing
            and not np.any(y == ignore_index)):
        return ops.softmax_cross_entropy(input, y)
    logp = ops.logsoftmax(input, 1 if input.ndim > 1 else 0)
    nll = nll_loss(logp, y.reshape(_target_shape(input, target)), weight, ignore_index, reduction)
    if not label_smoothing:
        return nll
    rows = _class_last(logp)
    keep = y != ignore_index
    w = None if weight is None else weight.reshape((1, -1))
    mask = Tensor(keep, dtype=rows.dtype, device=rows.device)
    smooth = -(rows if w is None else rows * w).sum(1) * mask * (1.0 / rows.shape[1])
    count = None
    if reduction == "mean":
        wv = np.ones(rows.shape[1]) if weight is None else weight.numpy()
        count = float((wv[np.where(keep, y, 0)] * keep).sum())
    smooth = _reduce(smooth.reshape(_target_shape(input, target)), reduction, "cross_entropy", count)
    return nll * (1.0 - label_smoothing) + smooth * label_smoothing


def _soft_cross_entropy(input, target, weight, reduction, label_smoothing):
    """Targets as class probabilities (same shape as input)."""
    dim = 1 if input.ndim > 1 else 0
    c = input.shape[dim]
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / c
    logp = ops.logsoftmax(input, dim)
    if weight is not None:
        shape = [1] * input.ndim
        shape[dim] = c
        logp = logp * weight.reshape(tuple(shape))
    loss = -(logp * target).sum(dim)
    if reduction == "mean" and input.ndim > 1:
        return loss.sum() / float(loss.numel())
    return _reduce(loss, reduction, "cross_entropy")


# layers as functions ---------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias, torch's layout: `weight` of shape (out_features,
    in_features), `bias` of shape (out_features,) or None; `input` of shape
    `(*, in_features)` gives `(*, out_features)`. Differs from needle: nn.Linear here stores its
    weight as (in_features, out_features) and does not go through this function's transpose."""
    return ops.linear(input, ops.transpose(weight), bias)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: IntPair | str = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation, as torch) of `input` (N, C_in, H, W) with `weight`
    (C_out, C_in / groups, kH, kW), plus `bias` (C_out,) if given. `stride`, `padding`,
    `dilation`: an int or an (h, w) pair; `padding` may also be 'valid' or 'same' (stride 1,
    odd dilated kernel; ValueError otherwise). Returns (N, C_out, H_out, W_out) with
    H_out = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1 (W_out alike)."""
    if isinstance(padding, str):
        padding = _string_padding(padding, weight, stride, dilation)
    return ops.conv(input, weight, bias, stride, padding, dilation, groups)


def conv2d_relu(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
                padding: IntPair | str = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """relu(conv2d(input, weight, bias, ...)) as one op (torch.ao.nn.intrinsic's ConvReLU2d
    as a function): the same arguments, shapes and errors as conv2d. Where the device has a
    ReLU epilogue (capability conv2d_relu) the output map is written once; the gradients,
    of any order, are conv2d's of the output grad masked by output > 0."""
    if isinstance(padding, str):
        padding = _string_padding(padding, weight, stride, dilation)
    return conv_relu(input, weight, bias, stride, padding, dilation, groups)


def _string_padding(mode, weight, stride, dilation):
    if mode == "valid":
        return 0
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    total = [d[i] * (weight.shape[2 + i] - 1) for i in range(2)]
    if mode != "same" or stride not in (1, (1, 1)) or any(t % 2 for t in total):
        raise ValueError(f"conv2d: padding={mode!r} works for 'valid', or 'same' with stride 1 "
                         "and an odd (dilated) kernel")
    return (total[0] // 2, total[1] // 2)


def max_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """Max over each kernel window of `input` (N, C, H, W); `kernel_size`, `stride`
    (default: the kernel size), `padding` (padded with -inf), `dilation`: an int or an (h, w)
    pair. Returns (N, C, H_out, W_out), H_out = (H + 2 padding - dilation (kH - 1) - 1) //
    stride + 1. `ceil_mode=True` and `return_indices=True` raise NotImplementedError."""
    if ceil_mode or return_indices:
        raise NotImplementedError("max_pool2d: ceil_mode and return_indices are not supported")
    return ops.max_pool2d(input, kernel_size, stride, padding, dilation)


def avg_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Mean over each kernel window of `input` (N, C, H, W), zero padding counted (torch's
    default count_include_pad=True). `kernel_size`, `stride` (default: the kernel size),
    `padding`: an int or an (h, w) pair. Returns (N, C, H_out, W_out), H_out =
    (H + 2 padding - kH) // stride + 1. `ceil_mode=True` or `count_include_pad=False` raise
    NotImplementedError."""
    if ceil_mode or not count_include_pad:
        raise NotImplementedError("avg_pool2d: ceil_mode and count_include_pad=False are not supported")
    return ops.avg_pool2d(input, kernel_size, stride, padding)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element of `input` (any shape `(*)`) with probability `p` when `training`,
    scaling the rest by 1 / (1 - p); the input itself when not training or p == 0. Returns the
    input's shape and dtype. Raises ValueError for p outside [0, 1], TypeError for a
    non-Tensor."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    _need_tensor(input, "dropout")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    return input * init.dropout_mask(*input.shape, keep=1 - p, dtype=input.dtype, device=input.device)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero whole channels: (N, C, H, W) keeps or drops each (n, c) plane, (N, C, L) each
    (n, c) row (as torch reads 3-D input today); the kept ones are scaled by 1 / (1 - p).
    Other inputs of 2 or more dims as torch 2.13: a deprecation warning, then each (n, c)
    slice (for (N, C): each element) kept or dropped; fewer than 2 dims raise ValueError.
    Returns the input's shape."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout2d: p must be in [0, 1], got {p}")
    _need_tensor(input, "dropout2d")
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is "
                      "deprecated (as in torch); use dropout instead. dropout2d is channel-wise "
                      "dropout for (N, C, H, W) or (C, H, W) (3-D: read as (N, C, L)) input.",
                      UserWarning, stacklevel=2)
        if input.ndim < 2:
            raise ValueError(f"dropout2d: feature dropout needs at least 2 dims (N, C, ...), "
                             f"got shape {input.shape}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    mask = init.dropout_mask(*shape, keep=1 - p, dtype=input.dtype, device=input.device)
    return input * ops.broadcast_to(mask, input.shape)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Group normalisation of `input` `(N, C, *)`: each group of C / num_groups channels
    and the remaining dims normalised to mean 0, variance 1 (biased variance, `eps` added),
    then scaled by `weight` (C,) and shifted by `bias` (C,) per channel if given. Returns the
    input's shape. Raises ValueError if C is not divisible by `num_groups`."""
    _need_tensor(input, "group_norm")
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise ValueError(f"group_norm: input {input.shape} must be (N, C, ...) with C divisible "
                         f"by num_groups={num_groups}")
    n, c = input.shape[:2]
    g = input.reshape((n, num_groups, -1))
    xc = g - g.mean(2, keepdim=True)
    out = (xc * ((xc * xc).mean(2, keepdim=True) + eps) ** -0.5).reshape(input.shape)
    per_channel = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    return out if bias is None else out + bias.reshape(per_channel)


def layer_norm(input: Tensor, normalized_shape: int | Sequence[int],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise `input` `(*, *normalized_shape)` over its last len(normalized_shape) dims
    to mean 0, variance 1 (biased variance, `eps` added, as torch), then `weight` and `bias`
    (of shape normalized_shape) if given. Returns the input's shape. Raises ValueError when
    the input's shape does not end in normalized_shape."""
    _need_tensor(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ValueError(f"layer_norm: input {input.shape} does not end in {shape}")
    return ops.layer_norm(input, len(shape), weight, bias, eps)


def embedding(input: Any, weight: Tensor) -> Tensor:
    """Rows of `weight` (num_embeddings, embedding_dim) picked by the integer indices
    `input` of shape `(*)`: returns `(*, embedding_dim)`. The gradient flows to `weight`."""
    return ops.embedding(input, weight)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """torch's pad: `pad` lists (left, right) for the last dim first, then the dim before,
    ...; e.g. (1, 1, 2, 2) pads W by 1 and H by 2 on each side of (N, C, H, W). Only
    mode='constant' (NotImplementedError otherwise), filled with `value`. Returns the input's
    shape grown by the pads. Raises ValueError for an odd-length `pad` or more pairs than
    dims."""
    _need_tensor(input, "pad")
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: {pad} must hold (before, after) pairs for at most {input.ndim} dims")
    pairs = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        pairs[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    out = ops.pad(input, pairs)
    if value:
        ones = NDArray.make(input.shape, device=input.device, dtype=input.dtype).fill(1.0)
        inside = ops.pad(Tensor.make_const(ones), pairs)
        out = out + (1.0 - inside) * value
    return out


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """One-hot int64 encoding of the class indices `tensor` of shape `(*)` (a Tensor or
    array of integers): returns shape `(*, num_classes)`; `num_classes=-1` takes max + 1. As
    torch (int64). Raises TypeError for non-integer input."""
    y = _labels(tensor)
    n = int(y.max()) + 1 if num_classes == -1 else num_classes
    shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else np.shape(tensor)
    return ops.one_hot(y, n, dtype="int64").reshape(tuple(shape) + (n,))
