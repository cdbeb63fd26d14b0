"""Fused recurrent ops: an LSTM step's gates in one kernel, and a whole LSTM, GRU or
Elman RNN layer over a sequence as one op (a language model runs a step per token and
layer: per-step ops cost ~15 kernels, their graph nodes and, in backward, one small
weight-gradient GEMM and one accumulation per step). On the CPU a layer's steps run in
one kernel call each way (capabilities lstm_seq, gru_seq, rnn_seq). Their gradients of
a create_graph backward are built from ops, so higher orders work; devices without the
kernels use the composites."""
from ..autograd import Tensor, TupleOp, grad_enabled, partial_grads
from ..ndarray import NDArray, matmul as nd_matmul
from .math import linear, relu, require_float, sigmoid, tanh
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
        if dev.has("lstm_seq"):   # the steps in one call, no per-step ops
            dev.lstm_sequence(xp, w, self.hs, self.cs, self.act)
        else:
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
            return tuple(partial_grads(list(outs), list(node.inputs), list(g)))
        xp, w, h0, c0 = (x.cached_data for x in node.inputs)
        dhs, dhn, dcn = g.cached_data
        S, B, n4 = xp.shape
        n, dev, dt = n4 // 4, xp.device, xp.dtype
        dz = NDArray.make((S, B, n4), device=dev, dtype=dt)
        if dev.has("lstm_seq"):
            dh = NDArray.make((B, n), device=dev, dtype=dt)
            dc = NDArray.make((B, n), device=dev, dtype=dt)
            dev.lstm_sequence_grad(self.act, self.cs, w.compact(), dhs.compact(), dhn.compact(),
                                   dcn.compact(), dz, dh, dc)
        else:
            dh, dc = self._steps_grad(w, dhs, dhn, dcn, dz)
        dw = nd_matmul(self.hs[:S].reshape((S * B, n)).permute((1, 0)), dz.reshape((S * B, n4)))
        return tuple(Tensor.make_const(a) for a in (dz, dw, dh, dc))

    def _steps_grad(self, w, dhs, dhn, dcn, dz):
        """(dh_0, dc_0), dz written: the steps in reverse, one op at a time."""
        S, B, n4 = dz.shape
        n, dev, dt = n4 // 4, dz.device, dz.dtype
        # W^T copied once: each step's dz @ W^T then reads it row-major in place (0.4-0.7x
        # the time of the transposed view's products at 20 x 1024 x 256)
        wt = w.compact().permute((1, 0)).compact()
        dh, dc = dhn, dcn.copy()   # dc's buffer is written below
        dc_prev = NDArray.make((B, n), device=dev, dtype=dt)
        for t in reversed(range(S)):
            dh = dh + dhs[t]
            dev.lstm_gates_grad(self.act[t], self.cs[t], dh.compact(), dc, dz[t], dc_prev)
            dc, dc_prev = dc_prev, dc
            dh = nd_matmul(dz[t], wt)
        return dh, dc.compact()


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


# Elman RNN ----------------------------------------------------------------------------
def rnn_layer_composite(xp, w_hh, h0, nonlinearity="tanh"):
    """(H (S, B, n), h_n) step by step from ops: h_{t+1} = act(xp[t] + h_t @ w_hh)."""
    act = tanh if nonlinearity == "tanh" else relu
    h, outs = h0, []
    for xt in split(xp, 0):
        h = act(xt + h @ w_hh)
        outs.append(h)
    return stack(outs, 0), h


class RNNLayer(TupleOp):
    """An Elman RNN layer over a sequence as one op: inputs the projected input xp (S, B, n)
    (x @ W_ih + both biases, one GEMM for the sequence), w_hh (n, n) and h0 (B, n);
    outputs every h_t (S, B, n) and h_n. Backward runs the steps in reverse and takes
    w_hh's gradient as one GEMM over all steps; a create_graph backward is the
    composite's, so higher orders work."""

    def __init__(self, nonlinearity="tanh"):
        super().__init__()
        self.relu = nonlinearity == "relu"

    def compute(self, xp, w, h0):
        S, B, n = xp.shape
        dev, dt = xp.device, xp.dtype
        self.hs = NDArray.make((S + 1, B, n), device=dev, dtype=dt)   # h_0 .. h_S
        self.hs[0] = h0
        dev.rnn_sequence(xp.compact(), w.compact(), self.hs, self.relu)
        return self.hs[1:], self.hs[S].compact()

    def gradient(self, g, node):
        if grad_enabled():   # create_graph: the composite's vector-Jacobian product, seeded
            # by g (never differentiated through: see LSTMLayer.gradient)
            outs = rnn_layer_composite(*node.inputs, "relu" if self.relu else "tanh")
            return tuple(partial_grads(list(outs), list(node.inputs), list(g)))
        w = node.inputs[1].cached_data
        dhs, dhn = g.cached_data
        S, B, n = dhs.shape
        dev, dt = dhs.device, dhs.dtype
        dz = NDArray.make((S, B, n), device=dev, dtype=dt)
        dh = NDArray.make((B, n), device=dev, dtype=dt)
        dev.rnn_sequence_grad(self.hs, w.compact(), dhs.compact(), dhn.compact(), dz, dh,
                              self.relu)
        dw = nd_matmul(self.hs[:S].reshape((S * B, n)).permute((1, 0)), dz.reshape((S * B, n)))
        return tuple(Tensor.make_const(a) for a in (dz, dw, dh))


def rnn_layer(xp, w_hh, h0, nonlinearity="tanh"):
    """(H, h_n) of an Elman RNN layer over (S, B, n) projected inputs (x W_ih + b_ih +
    b_hh): one op where the device has the sequence kernels, else step by step."""
    require_float("rnn_layer", xp, w_hh, h0)
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_layer: nonlinearity must be 'tanh' or 'relu', got "
                         f"{nonlinearity!r}")
    if xp.ndim != 3 or xp.shape[0] == 0:
        raise ValueError(f"rnn_layer: the projected input must be (seq, batch, hidden) with "
                         f"at least one step, got shape {xp.shape}")
    S, B, n = xp.shape
    if tuple(w_hh.shape) != (n, n) or tuple(h0.shape) != (B, n):
        raise ValueError(f"rnn_layer: projected input {xp.shape} needs w_hh ({n}, {n}) and a "
                         f"state ({B}, {n}); got {w_hh.shape}, {h0.shape}")
    if len({xp.dtype, w_hh.dtype, h0.dtype}) != 1:
        raise ValueError(f"rnn_layer: inputs must share a dtype, got {xp.dtype}, "
                         f"{w_hh.dtype}, {h0.dtype}")
    if not xp.device.has("rnn_seq"):
        return rnn_layer_composite(xp, w_hh, h0, nonlinearity)
    out = RNNLayer(nonlinearity)(xp, w_hh, h0)
    return out[0], out[1]


# GRU ----------------------------------------------------------------------------------
# PyTorch's GRU, gates r, z, n in that order: with xp = x W_ih + b_ih and
# hp = h W_hh + b_hh, r = sigmoid(xp_r + hp_r), z = sigmoid(xp_z + hp_z),
# n = tanh(xp_n + r * hp_n), h' = (1 - z) n + z h. b_hh's n block sits inside the
# r product, so b_hh is an input of its own rather than folded into xp.
def _gru_blocks(a, n):
    """a (B, 3n) -> its three (B, n) blocks r, z, n."""
    return split(reshape(a, (a.shape[0], 3, n)), 1)


def _check_gru_step(xp, h, w_hh, b_hh):
    if xp.ndim != 2 or h.ndim != 2:
        raise ValueError(f"gru_cell: projected input {xp.shape} and state {h.shape} must be 2-D "
                         "(batch, features)")
    b, n = h.shape
    if tuple(xp.shape) != (b, 3 * n) or tuple(w_hh.shape) != (n, 3 * n) or (
            b_hh is not None and tuple(b_hh.shape) != (3 * n,)):
        raise ValueError(f"gru_cell: a state of shape {h.shape} needs a projected input ({b}, "
                         f"{3 * n}), w_hh ({n}, {3 * n}) and b_hh ({3 * n},); got {xp.shape}, "
                         f"{w_hh.shape}, {None if b_hh is None else b_hh.shape}")
    if len({a.dtype for a in (xp, h, w_hh, b_hh) if a is not None}) != 1:
        raise ValueError(f"gru_cell: inputs must share a dtype, got {xp.dtype}, {h.dtype}, "
                         f"{w_hh.dtype}, {None if b_hh is None else b_hh.dtype}")


def gru_cell(xp, h, w_hh, b_hh=None):
    """h' of a GRU step from ops, given the projected input xp = x W_ih + b_ih (B, 3n)."""
    require_float("gru_cell", xp, h, w_hh)
    _check_gru_step(xp, h, w_hh, b_hh)
    xr, xz, xn = _gru_blocks(xp, h.shape[1])
    hr, hz, hn = _gru_blocks(linear(h, w_hh, b_hh), h.shape[1])
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    g = tanh(xn + r * hn)
    return g + z * (h - g)


def gru_layer_composite(xp, w_hh, h0, b_hh=None):
    """(H (S, B, n), h_n) step by step from ops."""
    h, outs = h0, []
    for xt in split(xp, 0):
        h = gru_cell(xt, h, w_hh, b_hh)
        outs.append(h)
    return stack(outs, 0), h


class GRULayer(TupleOp):
    """A GRU layer over a sequence: inputs the projected input xp (S, B, 3n) (x @ W_ih +
    b_ih, one GEMM for the sequence), w_hh (n, 3n), h0 (B, n) and optionally b_hh (3n,);
    outputs every h_t (S, B, n) and h_n. A device with gru_seq (the CPU) runs the steps
    in one call each way; elsewhere they are array ops, so every device runs it. It keeps
    each step's r, z, n and h W_hn + b_hn, and backward runs the steps in reverse with
    w_hh's gradient as one GEMM over all steps (and b_hh's as one sum).
    The gradient of a create_graph backward is the composite's, so higher orders work."""

    def compute(self, xp, w, h0, b=None):
        S, B, n3 = xp.shape
        n, dev, dt = n3 // 3, xp.device, xp.dtype
        xp, w = xp.compact(), w.compact()
        self.hs = NDArray.make((S + 1, B, n), device=dev, dtype=dt)   # h_0 .. h_S
        self.act = NDArray.make((S, B, 4 * n), device=dev, dtype=dt)  # r, z, n, h W_hn + b_hn
        self.hs[0] = h0
        if dev.has("gru_seq"):   # the steps in one call, no per-step ops
            dev.gru_sequence(xp, w, None if b is None else b.compact(), self.hs, self.act)
            return self.hs[1:], self.hs[S].compact()
        for t in range(S):
            hp = nd_matmul(self.hs[t], w)
            if b is not None:
                hp.add_(b)
            x, a = xp[t], self.act[t]
            a[:, :2 * n] = (x[:, :2 * n] + hp[:, :2 * n]).sigmoid()
            a[:, 3 * n:] = hp[:, 2 * n:]
            g = (x[:, 2 * n:] + a[:, :n] * hp[:, 2 * n:]).tanh()
            a[:, 2 * n:3 * n] = g
            self.hs[t + 1] = g + a[:, n:2 * n] * (self.hs[t] - g)
        return self.hs[1:], self.hs[S].compact()

    def gradient(self, g, node):
        if grad_enabled():   # create_graph: the composite's vector-Jacobian product, seeded
            # by g (never differentiated through: see LSTMLayer.gradient)
            outs = gru_layer_composite(*node.inputs)
            return tuple(partial_grads(list(outs), list(node.inputs), list(g)))
        xp, w = node.inputs[0].cached_data, node.inputs[1].cached_data
        dhs, dh_n = g.cached_data
        S, B, n3 = xp.shape
        n, dev, dt = n3 // 3, xp.device, xp.dtype
        dxp = NDArray.make((S, B, n3), device=dev, dtype=dt)
        dhp = NDArray.make((S, B, n3), device=dev, dtype=dt)   # d(h W_hh + b_hh) per step
        if dev.has("gru_seq"):
            dh = NDArray.make((B, n), device=dev, dtype=dt)
            dev.gru_sequence_grad(self.act, self.hs, w.compact(), dhs.compact(), dh_n.compact(),
                                  dxp, dhp, dh)
        else:
            dh = self._steps_grad(w, dhs, dh_n, dxp, dhp)
        dhp2 = dhp.reshape((S * B, n3))
        dw = nd_matmul(self.hs[:S].reshape((S * B, n)).permute((1, 0)), dhp2)
        grads = [dxp, dw, dh.compact()] + ([dhp2.sum(0)] if len(node.inputs) == 4 else [])
        return tuple(Tensor.make_const(a) for a in grads)

    def _steps_grad(self, w, dhs, dh, dxp, dhp):
        """h_0's gradient, dxp and dhp written: the steps in reverse, one op at a time."""
        S, B, n3 = dxp.shape
        n = n3 // 3
        wt = w.compact().permute((1, 0)).compact()   # as LSTMLayer's
        for t in reversed(range(S)):
            dh = dh + dhs[t]
            a = self.act[t]
            r, z, gn, hn = (a[:, k * n:(k + 1) * n] for k in range(4))
            dgn = dh * (1 - z) * (1 - gn * gn)
            dxp[t, :, :n] = dgn * hn * r * (1 - r)
            dxp[t, :, n:2 * n] = dh * (self.hs[t] - gn) * z * (1 - z)
            dxp[t, :, 2 * n:] = dgn
            dhp[t, :, :2 * n] = dxp[t, :, :2 * n]
            dhp[t, :, 2 * n:] = dgn * r
            dh = dh * z + nd_matmul(dhp[t], wt)
        return dh


def gru_layer(xp, w_hh, h0, b_hh=None):
    """(H, h_n) of a GRU layer over (S, B, 3n) projected inputs (x W_ih + b_ih), as one op."""
    args = [xp, w_hh, h0] + ([] if b_hh is None else [b_hh])
    require_float("gru_layer", *args)
    if xp.ndim != 3:
        raise ValueError(f"gru_layer: the projected input must be (seq, batch, 3 * hidden), "
                         f"got shape {xp.shape}")
    S, B, n3 = xp.shape
    n = n3 // 3
    if S == 0 or n3 % 3:
        raise ValueError(f"gru_layer: the projected input {xp.shape} needs a sequence of at "
                         "least one step and 3 * hidden features")
    if tuple(w_hh.shape) != (n, n3) or tuple(h0.shape) != (B, n) or (
            b_hh is not None and tuple(b_hh.shape) != (n3,)):
        raise ValueError(f"gru_layer: projected input {xp.shape} needs w_hh ({n}, {n3}), state "
                         f"({B}, {n}) and b_hh ({n3},); got {w_hh.shape}, {h0.shape}, "
                         f"{None if b_hh is None else b_hh.shape}")
    if len({a.dtype for a in args}) != 1:
        raise ValueError(f"gru_layer: inputs must share a dtype, got "
                         f"{', '.join(str(a.dtype) for a in args)}")
    out = GRULayer()(*args)
    return out[0], out[1]
