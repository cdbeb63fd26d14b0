"""Fused recurrent ops: an LSTM step's gates in one kernel, and a whole LSTM layer over
a sequence as one op (a language model runs a step per token and layer: per-step ops
cost ~15 kernels, their graph nodes and, in backward, one small weight-gradient GEMM
and one accumulation per step). Their gradients of a create_graph backward are built
from ops, so higher orders work; devices without the kernels use the composites."""
from ..autograd import Tensor, TupleOp, grad, grad_enabled
from ..ndarray import NDArray, matmul as nd_matmul
from .math import require_float, sigmoid, tanh
from .shape import concatenate, reshape, split, stack


def _gate_blocks(z, n):
    """z (B, 4n) -> its four (B, n) blocks i, f, g, o."""
    return split(reshape(z, (z.shape[0], 4, n)), 1)


def lstm_gates_composite(z, c):
    """(h', c') from elementwise ops: sigmoid(f) c + sigmoid(i) tanh(g), sigmoid(o) tanh(c')."""
    i, f, g, o = _gate_blocks(z, c.shape[1])
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    return sigmoid(o) * tanh(c), c


class LSTMGates(TupleOp):
    """An LSTM step's (h', c') from its gate pre-activations z (B, 4n: blocks i, f, g, o,
    PyTorch's order) and cell c (B, n), in one kernel that keeps the activations for a
    one-kernel backward. The gradient of a create_graph backward is built from ops, so
    higher orders work."""

    def compute(self, z, c):
        b, n = c.shape
        dev = c.device
        self.act = NDArray.make((b, 5 * n), device=dev, dtype=c.dtype)
        c_new = NDArray.make((b, n), device=dev, dtype=c.dtype)
        h_new = NDArray.make((b, n), device=dev, dtype=c.dtype)
        dev.lstm_gates(z.compact(), c.compact(), self.act, c_new, h_new)
        return h_new, c_new

    def gradient(self, g, node):
        z, c = node.inputs
        if grad_enabled():
            return _lstm_gates_grad_ops(z, c, g[0], g[1])
        dh, dc = (x.compact() for x in g.cached_data)
        dz = NDArray.make(z.shape, device=c.device, dtype=c.dtype)
        dc_prev = NDArray.make(c.shape, device=c.device, dtype=c.dtype)
        c.device.lstm_gates_grad(self.act, c.cached_data.compact(), dh, dc, dz, dc_prev)
        return Tensor.make_const(dz), Tensor.make_const(dc_prev)


def _lstm_gates_grad_ops(z, c, dh, dc):
    """The gradient as ops of z and c: dz's blocks and dc_prev."""
    zi, zf, zg, zo = _gate_blocks(z, c.shape[1])
    i, f, g, o = sigmoid(zi), sigmoid(zf), tanh(zg), sigmoid(zo)
    t = tanh(f * c + i * g)
    dct = dc + dh * o * (1 - t * t)
    dz = concatenate([dct * g * i * (1 - i), dct * c * f * (1 - f), dct * i * (1 - g * g),
                      dh * t * o * (1 - o)], 1)
    return dz, dct * f


def lstm_gates(z, c):
    """(h', c') of an LSTM step: fused where the device has the kernel, else composite."""
    require_float("lstm_gates", z, c)
    if c.ndim != 2 or z.ndim != 2:
        raise ValueError(f"lstm_gates: gates {z.shape} and cell {c.shape} must be 2-D (batch, "
                         "features)")
    b, n = c.shape
    if tuple(z.shape) != (b, 4 * n) or z.dtype != c.dtype:
        raise ValueError(f"lstm_gates: gates of shape {z.shape} ({z.dtype}) must be ({b}, "
                         f"{4 * n}) for a cell of shape {c.shape} ({c.dtype})")
    if not c.device.has("lstm"):
        return lstm_gates_composite(z, c)
    out = LSTMGates()(z, c)
    return out[0], out[1]


# a whole layer ------------------------------------------------------------------------
def lstm_layer_composite(xp, w_hh, h0, c0):
    """(H (S, B, n), h_n, c_n) step by step from ops: z_t = xp[t] + h_{t-1} @ w_hh."""
    h, c, outs = h0, c0, []
    for xt in split(xp, 0):
        h, c = lstm_gates(xt + h @ w_hh, c)
        outs.append(h)
    return stack(outs, 0), h, c


class LSTMLayer(TupleOp):
    """An LSTM layer over a sequence: inputs the projected input xp (S, B, 4n) (x @ W_ih +
    biases, one GEMM for the sequence), w_hh (n, 4n), h0 and c0 (B, n); outputs every
    h_t (S, B, n), h_n and c_n. Backward runs the steps in reverse with the gate kernel
    and takes w_hh's gradient as one GEMM over all steps."""

    def compute(self, xp, w, h0, c0):
        S, B, n4 = xp.shape
        n, dev, dt = n4 // 4, xp.device, xp.dtype
        xp, w = xp.compact(), w.compact()
        self.hs = NDArray.make((S + 1, B, n), device=dev, dtype=dt)   # h_0 .. h_S
        self.cs = NDArray.make((S + 1, B, n), device=dev, dtype=dt)   # c_0 .. c_S
        self.act = NDArray.make((S, B, 5 * n), device=dev, dtype=dt)
        self.hs[0] = h0
        self.cs[0] = c0
        for t in range(S):
            z = nd_matmul(self.hs[t], w)
            z.add_(xp[t])
            dev.lstm_gates(z, self.cs[t], self.act[t], self.cs[t + 1], self.hs[t + 1])
        return self.hs[1:], self.hs[S].compact(), self.cs[S].compact()

    def gradient(self, g, node):
        if grad_enabled():   # create_graph: the vector-Jacobian product of the composite
            # g seeds the pass instead of entering a sum(outs * g): g depends on this
            # node's outputs whenever the loss is not linear in them, and differentiating
            # through it would count those paths again (and recurse into this gradient)
            outs = lstm_layer_composite(*node.inputs)
            return tuple(grad(list(outs), list(node.inputs), list(g)))
        xp, w, h0, c0 = (x.cached_data for x in node.inputs)
        dhs, dhn, dcn = g.cached_data
        S, B, n4 = xp.shape
        n, dev, dt = n4 // 4, xp.device, xp.dtype
        dz = NDArray.make((S, B, n4), device=dev, dtype=dt)
        wt = w.compact().permute((1, 0))
        dh, dc = dhn, dcn.copy()   # dc's buffer is written below
        dc_prev = NDArray.make((B, n), device=dev, dtype=dt)
        for t in reversed(range(S)):
            dh = dh + dhs[t]
            dev.lstm_gates_grad(self.act[t], self.cs[t], dh.compact(), dc, dz[t], dc_prev)
            dc, dc_prev = dc_prev, dc
            dh = nd_matmul(dz[t], wt)
        dw = nd_matmul(self.hs[:S].reshape((S * B, n)).permute((1, 0)), dz.reshape((S * B, n4)))
        return tuple(Tensor.make_const(a) for a in (dz, dw, dh, dc.compact()))


def lstm_layer(xp, w_hh, h0, c0):
    """(H, h_n, c_n) of an LSTM layer over (S, B, 4n) projected inputs: one op where the
    device has the gate kernel, else step by step."""
    require_float("lstm_layer", xp, w_hh, h0, c0)
    if xp.ndim != 3:
        raise ValueError(f"lstm_layer: the projected input must be (seq, batch, 4 * hidden), "
                         f"got shape {xp.shape}")
    S, B, n4 = xp.shape
    n = n4 // 4
    if S == 0 or n4 % 4:
        raise ValueError(f"lstm_layer: the projected input {xp.shape} needs a sequence of at "
                         "least one step and 4 * hidden features")
    if tuple(w_hh.shape) != (n, n4) or tuple(h0.shape) != (B, n) or tuple(c0.shape) != (B, n):
        raise ValueError(f"lstm_layer: projected input {xp.shape} needs w_hh ({n}, {n4}) and "
                         f"states ({B}, {n}); got {w_hh.shape}, {h0.shape}, {c0.shape}")
    if len({xp.dtype, w_hh.dtype, h0.dtype, c0.dtype}) != 1:
        raise ValueError(f"lstm_layer: inputs must share a dtype, got {xp.dtype}, {w_hh.dtype}, "
                         f"{h0.dtype}, {c0.dtype}")
    if not xp.device.has("lstm"):
        return lstm_layer_composite(xp, w_hh, h0, c0)
    out = LSTMLayer()(xp, w_hh, h0, c0)
    return out[0], out[1], out[2]
