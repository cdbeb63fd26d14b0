"""Fused neural-network ops: stable softmax cross-entropy and batch norm."""
import math

import numpy as np

from ..autograd import Op, Tensor, _observers, grad_enabled
from ..ndarray import _FLOATS, NDArray, _ewise as nd_ewise, int64
from .math import ReLUGrad, relu, require_float
from .reduce import softmax, summation


def one_hot(labels, num_classes, dtype="float32", device=None):
    """(N,) integer labels -> (N, num_classes) constant Tensor."""
    y = _labels_numpy(labels)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes}), got min {y.min()} max {y.max()}")
    eye = np.eye(num_classes, dtype=dtype)[y]
    return Tensor(eye, dtype=dtype, device=device)


def _labels_numpy(labels):
    if isinstance(labels, Tensor):
        labels = labels.cached_data
    y = labels.numpy() if isinstance(labels, NDArray) else np.asarray(labels)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError("labels must be whole numbers")
        y = y.astype(np.int64)
    return y.astype(np.int64, copy=False)


class SoftmaxCrossEntropy(Op):
    """mean_i(logsumexp(z_i) - z_i[y_i]) in one op. On devices with the fused kernel
    (mininet_ext/losses.pyx) the forward keeps softmax(z) and the gradient
    (softmax(z) - onehot(y)) * g / N is one more pass, over it; elsewhere both are built from
    NDArray ops. The gradient is an op of its own, differentiable again."""

    def __init__(self, labels, num_classes, ylabels=None):
        self.labels, self.num_classes = labels, num_classes   # (N,) int64 numpy, or None
        self.probs = None        # softmax(z) of the last forward (fused path)
        self.ylabels = ylabels   # the labels on the device (fused path)
        self._onehot = None

    def onehot(self, dtype, device):
        """The labels as a constant (N, C) Tensor (composite path and second order)."""
        if self._onehot is None:
            if self.labels is None:   # device labels, read back only for this path
                self.labels = _labels_numpy(self.ylabels)
            self._onehot = one_hot(self.labels, self.num_classes, dtype=dtype, device=device)
        return self._onehot

    def compute(self, z):
        dev = z.device
        if not dev.has("softmax_xent"):
            shifted = z - z.max(1, keepdims=True).broadcast_to(z.shape)
            # log(sum(exp(z - m))) - (z[y] - m), never + m - z[y]: at |z| ~ 1e17 that
            # cancels the loss away. z[y] - m is selected (pass_pos), not z * onehot, whose
            # 0 * -inf off the label would be NaN
            lse = shifted.exp().sum(1, keepdims=True).log()
            picked = nd_ewise(shifted, self.onehot(z.dtype, dev).cached_data, "pass_pos")
            return (lse - picked.sum(1, keepdims=True)).sum() * _per_row(z.shape[0])
        z = z.compact()
        self.probs = NDArray.make(z.shape, device=dev, dtype=z.dtype)
        loss = NDArray.make((), device=dev, dtype=z.dtype)
        if self.ylabels is None:   # a copy on the device (NDArray(labels) checks more, ~2x)
            self.ylabels = NDArray.make(self.labels.shape, device=dev, dtype=int64)
            dev.from_numpy(self.labels, self.ylabels)
            # the host labels may be a view of the caller's tensor: onehot() reads the copy
            self.labels = None
        dev.softmax_xent(z, self.ylabels, self.probs, loss)
        return loss

    def gradient(self, g, node):
        return SoftmaxCrossEntropyGrad(self)(node.inputs[0], g)


class SoftmaxCrossEntropyGrad(Op):
    """d loss / dz = (softmax(z) - onehot(y)) * g / N, for the scalar output grad g."""

    def __init__(self, xent):
        self.xent = xent

    def compute(self, z, g):
        dev, n = z.device, z.shape[0]
        if self.xent.probs is None or not dev.has("softmax_xent"):
            onehot = self.xent.onehot(z.dtype, dev).cached_data
            m = z.max(1, keepdims=True)
            e = (z - m.broadcast_to(z.shape)).exp()
            p = e / e.sum(1, keepdims=True).broadcast_to(z.shape)
            return (p - onehot) * g.reshape((1, 1)).broadcast_to(z.shape) * _per_row(n)
        # written over the probabilities (no second (N, C) array to fill: 0.4x the time
        # of the pass at 700 x 10,000), which are then gone: a second backward (retained
        # graph) takes the composed path above
        out, self.xent.probs = self.xent.probs, None
        g = g.compact() if g.dtype == z.dtype else g.astype(z.dtype)
        dev.softmax_xent_grad(out, self.xent.ylabels, g, _per_row(n), out)
        return out

    def gradient(self, h, node):
        # with s = softmax(z): d/dz = s * (h - rowsum(h * s)) * g / N, d/dg = sum(h * (s - onehot)) / N
        z, g = node.inputs
        n, c = z.shape
        s = softmax(z, 1)
        scale = g.reshape((1, 1)).broadcast_to(z.shape) * _per_row(n)
        rows = summation(h * s, (1,)).reshape((n, 1)).broadcast_to(z.shape)
        dz = s * (h - rows) * scale
        dg = summation(h * (s - self.xent.onehot(z.dtype, z.device))) * _per_row(n)
        return dz, dg.reshape(g.shape)


def _labels_on_device(labels, logits):
    """Integer labels already beside logits on an asynchronous device (CUDA), used where
    they are: checking them on the host would make every step wait for the GPU. The kernel
    turns a label outside [0, C) into a NaN loss, which training reports."""
    y = labels.cached_data if isinstance(labels, Tensor) else labels
    dev = logits.device
    if not isinstance(y, NDArray) or dev.synchronous or y.device != dev or y.dtype != int64:
        return None
    if y.shape != (logits.shape[0],):
        raise ValueError(f"softmax_cross_entropy: labels of shape {y.shape} do not match "
                         f"logits {logits.shape}")
    return y.compact()


def xent_checked_labels(logits, labels):
    """softmax_cross_entropy of (N, C) float logits and an int64 label Tensor beside them,
    on a device whose fused kernels check every label (capability "xent_checks_labels"):
    the labels copied on the device (backward reads the copy), with no host pass over them
    (their min and max took a fifth of a small model's loss). None where this does not
    apply, or when a label lies outside [0, C) (an ignore_index, or a mistake): the caller's
    host checks then take over and name it. Not with an observer installed, which would
    see an op begin that never ends."""
    if not isinstance(logits, Tensor):
        return None   # (the host path names what it got)
    y, z = labels.cached_data, logits.cached_data
    dev, zshape = z.device, z.shape
    if (_observers or y.dtype is not int64 or y.device is not dev or len(zshape) != 2
            or y.shape != zshape[:1] or z.dtype not in _FLOATS
            or not dev.has("xent_checks_labels")):
        return None
    try:
        return SoftmaxCrossEntropy(None, zshape[1], y.copy())(logits)
    except ValueError:   # a label outside [0, C): nothing was recorded
        return None


def _per_row(n):
    """1 / n for a mean over n rows; NaN for none (0 / 0: torch's loss over an empty batch),
    where Python would raise ZeroDivisionError."""
    return 1.0 / n if n else math.nan


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of (N, C) logits against (N,) integer class labels."""
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, C), got shape {logits.shape}")
    n, c = logits.shape
    require_float("softmax_cross_entropy (logits)", logits)
    if isinstance(labels, Tensor):
        loss = xent_checked_labels(logits, labels)
        if loss is not None:
            return loss
    on_device = _labels_on_device(labels, logits)
    if on_device is not None:
        return SoftmaxCrossEntropy(None, c, on_device)(logits)
    y = _labels_numpy(labels)
    return xent_host_labels(logits, y, *label_range(y))


def label_range(y):
    """(min, max) of int64 numpy labels ((0, 0) for none): read once, by the loss module
    too (its ignore_index check) before it calls xent_host_labels."""
    return (int(y.min()), int(y.max())) if y.size else (0, 0)


def xent_host_labels(logits, y, lo, hi):
    """softmax_cross_entropy of (N, C) logits and int64 numpy labels y whose min and max
    are lo and hi (label_range): the checks that remain, then the fused op."""
    require_float("softmax_cross_entropy (logits)", logits)
    n, c = logits.shape
    if y.shape != (n,):
        raise ValueError(f"softmax_cross_entropy: labels of shape {y.shape} do not match logits {logits.shape}")
    if y.size and (lo < 0 or hi >= c):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {c}), got min {lo} "
                         f"max {hi}")
    return SoftmaxCrossEntropy(y, c)(logits)


class BatchNorm(Op):
    """Training-mode batch norm over `axes`; weight/bias broadcast over the rest.
    Keeps the batch mean and (biased) variance in .mean/.var for running stats.
    Over every axis but axis 1 (BatchNorm1d/2d) on a device with the fused kernels
    (mininet_ext/norm.pyx), forward and backward are one call each; the backward
    is built from ops instead when the gradient's own graph is being recorded
    (create_graph), so higher-order gradients still work.

    relu=True (only where the device has "batchnorm_relu": batch_norm_relu checks) gives
    max(batch_norm(x), 0) from the same kernel pass; its gradient masks g by output > 0
    first, as ReLU's would (ReLU's own second derivative is zero)."""

    def __init__(self, axes, eps, relu=False):
        self.axes, self.eps, self.relu = tuple(axes), eps, relu
        self.mean = self.var = None
        self.xhat = self.inv = None
        self.fused = False

    def compute(self, x, w, b):
        keep = tuple(1 if i in self.axes else n for i, n in enumerate(x.shape))
        dev = x.device
        self.fused = _fused_layout(x, w, b, self.axes)
        if self.fused:
            c = x.shape[1]
            x = x.compact()
            xhat, y = (NDArray.make(x.shape, device=dev, dtype=x.dtype) for _ in range(2))
            mean, var, inv = (NDArray.make((c,), device=dev, dtype=x.dtype) for _ in range(3))
            args = (x, w.compact().reshape((c,)), b.compact().reshape((c,)), xhat, y, mean, var,
                    inv, self.eps)
            if self.relu:
                dev.batchnorm(*args, relu=True)
            else:   # a device without batchnorm_relu takes no relu argument
                dev.batchnorm(*args)
            self.mean, self.var = mean.reshape(w.shape), var.reshape(w.shape)
            self.xhat, self.inv = xhat, inv.reshape(keep)
            return y
        if self.relu:
            raise ValueError("BatchNorm(relu=True) needs a device with the fused kernel "
                             "(use ops.batch_norm_relu, which falls back to two ops)")
        n = x.size // w.size
        mean = x.sum(self.axes, keepdims=True) * (1.0 / n)
        xc = x - mean.broadcast_to(x.shape)
        var = xc.square().sum(self.axes, keepdims=True) * (1.0 / n)
        inv = (var + self.eps) ** -0.5
        xhat = xc * inv.broadcast_to(x.shape)
        self.mean, self.var = mean.reshape(w.shape), var.reshape(w.shape)
        self.xhat, self.inv = xhat, inv
        return xhat * w.reshape(keep).broadcast_to(x.shape) + b.reshape(keep).broadcast_to(x.shape)

    def gradient(self, g, node):
        x, w, b = node.inputs
        if self.fused and not grad_enabled():
            y = node.cached_data if self.relu else None
            return self._fused_gradient(g.cached_data, w.cached_data, b.shape, y)
        if self.relu:   # ReLU's gradient, the mask from the output (constant: relu'' = 0)
            g = ReLUGrad()(g, Tensor.make_const(node.cached_data))
        keep = self.inv.shape
        n = x.cached_data.size // w.cached_data.size
        if grad_enabled():
            # the gradient's graph is recorded: xhat and inv must be functions of x too,
            # or its second derivatives in x would be lost
            xhat, inv = self._stats_from_ops(x, n, keep)
        else:
            xhat, inv = Tensor.make_const(self.xhat), Tensor.make_const(self.inv)
        dxhat = g * w.reshape(keep).broadcast_to(g.shape)
        s1 = summation(dxhat, self.axes, keepdims=True).broadcast_to(g.shape)
        s2 = summation(dxhat * xhat, self.axes, keepdims=True).broadcast_to(g.shape)
        dx = (dxhat * n - s1 - xhat * s2) * inv.broadcast_to(g.shape) * (1.0 / n)
        dw = summation(g * xhat, self.axes).reshape(w.shape)
        db = summation(g, self.axes).reshape(b.shape)
        return dx, dw, db

    def _stats_from_ops(self, x, n, keep):
        mean = (summation(x, self.axes, keepdims=True) * (1.0 / n)).broadcast_to(x.shape)
        xc = x - mean
        var = summation(xc * xc, self.axes, keepdims=True) * (1.0 / n)
        inv = (var + self.eps) ** -0.5
        return xc * inv.broadcast_to(x.shape), inv.reshape(keep)

    def _fused_gradient(self, g, w, bshape, y=None):
        dev, c = g.device, g.shape[1]
        g = g.compact()
        dx = NDArray.make(g.shape, device=dev, dtype=g.dtype)
        dw, db = (NDArray.make((c,), device=dev, dtype=g.dtype) for _ in range(2))
        args = (g, self.xhat, w.compact().reshape((c,)), self.inv.reshape((c,)), dx, dw, db)
        if y is None:
            dev.batchnorm_backward(*args)
        else:
            dev.batchnorm_backward(*args, y=y)
        return (Tensor.make_const(dx), Tensor.make_const(dw.reshape(w.shape)),
                Tensor.make_const(db.reshape(bshape)))


def batch_norm(x, weight, bias, axes, eps=1e-5):
    """Returns (y, op): op.mean and op.var hold the batch statistics."""
    require_float("batch_norm", x, weight, bias)
    op = BatchNorm(axes, eps)
    return op(x, weight, bias), op


def _fused_layout(x, w, b, axes):
    """Whether the fused kernels take this batch norm (arrays or Tensors): the device has
    them, one dtype, statistics over every axis but 1."""
    return (x.device.has("batchnorm") and x.ndim >= 2 and x.dtype == w.dtype == b.dtype
            and axes == (0,) + tuple(range(2, x.ndim)))


def batch_norm_relu(x, weight, bias, axes, eps=1e-5):
    """(relu(batch_norm(x)), op) as batch_norm: one fused op (one kernel pass each way)
    where the device has it and the layout suits (axes: every axis but 1, one dtype), else
    batch norm then ReLU, as two ops."""
    require_float("batch_norm_relu", x, weight, bias)
    axes = tuple(axes)
    if x.device.has("batchnorm_relu") and _fused_layout(x, weight, bias, axes):
        op = BatchNorm(axes, eps, relu=True)
        return op(x, weight, bias), op
    y, op = batch_norm(x, weight, bias, axes, eps)
    return relu(y), op


# layer norm ----------------------------------------------------------------------------
class LayerNorm(Op):
    """Layer norm over the last `ndim` dims of x: (x - mean) / sqrt(var + eps) (biased
    variance), times the weight and plus the bias where given (affine: which of the two are
    inputs after x). One kernel call each way (the device's "layernorm" row kernels); the
    backward is built from ops instead when its own graph is recorded (create_graph), so
    higher-order gradients still work."""
    saves_output = False   # its gradient reads the input and the row statistics

    def __init__(self, ndim, eps, affine=(True, True)):
        self.ndim, self.eps = ndim, eps
        self.has_w, self.has_b = affine
        self.mean = self.rstd = None   # (rows,): the forward's, for the backward

    def _split(self, args):
        rest = list(args[1:])
        w = rest.pop(0) if self.has_w else None
        b = rest.pop(0) if self.has_b else None
        return args[0], w, b

    def _rows(self, shape):
        k = len(shape) - self.ndim
        return math.prod(shape[:k]), math.prod(shape[k:])

    def compute(self, *args):
        x, w, b = self._split(args)
        dev, (r, d) = x.device, self._rows(x.shape)
        y = NDArray.make((r, d), device=dev, dtype=x.dtype)
        self.mean, self.rstd = (NDArray.make((r,), device=dev, dtype=x.dtype) for _ in range(2))
        dev.layernorm(x.compact().reshape((r, d)), _flat(w, d), _flat(b, d), y, self.mean,
                      self.rstd, self.eps)
        return y.reshape(x.shape)

    def gradient(self, g, node):
        x, w, b = self._split(node.inputs)
        if grad_enabled() or g.dtype != x.dtype:
            return self._gradient_from_ops(g, x, w, b)
        xd, (r, d) = x.cached_data, self._rows(x.shape)
        dev, dt = xd.device, xd.dtype
        dx = NDArray.make((r, d), device=dev, dtype=dt)
        dw, db = (NDArray.make((d,), device=dev, dtype=dt) if t is not None and t.requires_grad
                  else None for t in (w, b))
        dev.layernorm_backward(g.cached_data.compact().reshape((r, d)),
                               xd.compact().reshape((r, d)), self.mean, self.rstd,
                               _flat(None if w is None else w.cached_data, d), dx, dw, db)
        out = [Tensor.make_const(dx.reshape(x.shape))]
        for t, grad in ((w, dw), (b, db)):
            if t is not None:
                out.append(None if grad is None else Tensor.make_const(grad.reshape(t.shape)))
        return tuple(out)

    def _gradient_from_ops(self, g, x, w, b):
        from .shape import broadcast_to, reshape
        k = x.ndim - self.ndim
        dims, lead = tuple(range(k, x.ndim)), tuple(range(k))
        n = self._rows(x.shape)[1]
        inv_n = 1.0 / n if n else math.nan

        def row_mean(t):
            return broadcast_to(summation(t, dims, keepdims=True) * inv_n, x.shape)

        xc = x - row_mean(x)
        rstd = (row_mean(xc * xc) + self.eps) ** -0.5
        xhat = xc * rstd
        gw = g if w is None else g * broadcast_to(w, x.shape)
        out = [(gw - row_mean(gw) - xhat * row_mean(gw * xhat)) * rstd]
        for t, term in ((w, g * xhat), (b, g)):
            if t is not None:
                out.append(reshape(summation(term, lead) if lead else term, t.shape))
        return tuple(out)


def _flat(t, d):
    """A weight or bias as a compact (d,) array (None stays None)."""
    return None if t is None else t.compact().reshape((d,))


def layer_norm(x, ndim, weight=None, bias=None, eps=1e-5):
    """Layer norm of x over its last `ndim` dims (biased variance, eps added), then weight
    and bias (of those dims' shape) where given: one LayerNorm op where the device has the
    row kernels, else built from ops."""
    ts = [t for t in (weight, bias) if t is not None]
    require_float("layer_norm", x, *ts)
    if not 1 <= ndim <= x.ndim:
        raise ValueError(f"layer_norm: normalizes 1 to {x.ndim} trailing dims of an input of "
                         f"shape {x.shape}, not {ndim}")
    shape = tuple(x.shape[x.ndim - ndim:])
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name} of shape {tuple(t.shape)} must have the "
                             f"normalized shape {shape}")
    if x.device.has("layernorm") and all(t.dtype == x.dtype for t in ts):
        return LayerNorm(ndim, eps, (weight is not None, bias is not None))(x, *ts)
    dims = tuple(range(x.ndim - ndim, x.ndim))
    xc = x - x.mean(dims, keepdim=True)
    out = xc * ((xc * xc).mean(dims, keepdim=True) + eps) ** -0.5
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


# embedding lookups ---------------------------------------------------------------------
class EmbeddingLookup(Op):
    """out[..., :] = weight[idx[...], :] for a constant integer index array."""

    def __init__(self, idx, shape):
        self.idx, self.shape = idx, tuple(shape)   # idx: compact int64 (n,)

    def compute(self, w):
        d = w.shape[1]
        if w.device.has("rows"):
            out = NDArray.make((self.idx.size, d), device=w.device, dtype=w.dtype)
            w.device.take_rows(w.compact(), self.idx, out)
        else:   # a device without row kernels: one-hot rows times the table
            out = one_hot(self.idx.numpy(), w.shape[0], dtype=w.dtype, device=w.device) \
                .cached_data @ w
        return out.reshape(self.shape + (d,))

    def gradient(self, g, node):
        return EmbeddingGrad(self.idx, node.inputs[0].shape)(g)


class EmbeddingGrad(Op):
    """dweight: rows of g added at their indices (repeats add up); linear in g."""

    def __init__(self, idx, wshape):
        self.idx, self.wshape = idx, tuple(wshape)

    def compute(self, g):
        d = self.wshape[1]
        flat = g.compact().reshape((self.idx.size, d))
        if g.device.has("rows"):
            out = NDArray.make(self.wshape, device=g.device, dtype=g.dtype).fill(0.0)
            g.device.add_rows(flat, self.idx, out)
            return out
        onehot = one_hot(self.idx.numpy(), self.wshape[0], dtype=g.dtype, device=g.device)
        return onehot.cached_data.T @ flat

    def gradient(self, h, node):
        return EmbeddingLookup(self.idx, node.inputs[0].shape[:-1])(h)


def embedding(idx, weight):
    """weight[idx]: rows of the (num_embeddings, dim) table for integer indices of any shape."""
    raw = idx.cached_data if isinstance(idx, Tensor) else idx
    if isinstance(raw, NDArray) and raw.dtype == int64 and raw.device == weight.device \
            and raw.device.has("share_host") and isinstance(weight, Tensor) \
            and weight.ndim == 2 and weight.dtype in _FLOATS:
        # int64 indices already beside the table (the CPU's): copied there, checked by the
        # gather kernel, no host pass (a kernel graph records it)
        flat = raw.compact().reshape((raw.size,)).copy()
        try:
            return EmbeddingLookup(flat, raw.shape)(weight)
        except IndexError as e:
            raise IndexError(f"embedding: {e}") from None
    arr = raw.numpy() if isinstance(raw, NDArray) else np.asarray(raw)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {arr.dtype}")
    require_float("embedding (weight)", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    n = weight.shape[0]
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise IndexError(f"embedding: indices must lie in [0, {n}), got min {arr.min()} "
                         f"max {arr.max()}")
    flat = NDArray(np.ascontiguousarray(arr, dtype=np.int64).reshape(-1), device=weight.device)
    return EmbeddingLookup(flat, arr.shape)(weight)
