"""Sequence modules: Embedding, RNN, LSTM and GRU (cells and multi-layer), needle's layout.

Weights are stored as needle stores them, (in, out), so that x @ W needs no transpose:
W_ih `(input_size, k * hidden_size)` and W_hh `(hidden_size, k * hidden_size)`, k = 1 for
the RNN, 4 for the LSTM (gates i, f, g, o, PyTorch's order) and 3 for the GRU (r, z, n,
PyTorch's order): torch's weight_ih_l0 is our W_ih transposed, its biases bias_ih and
bias_hh `(k * hidden_size,)` are ours as they are. Sequences are (seq_len, batch,
features). Each layer projects its whole input sequence with one GEMM before the time
loop; a step then costs one (batch, hidden) x `(hidden, k * hidden)` product.
"""
from typing import Any

from .. import init, ops
from ..autograd import Tensor
from ..ops.rnn import gru_cell, gru_layer, rnn_layer
from .module import Module, Parameter, positive_int


def _uniform(shape, hidden_size, dtype, device):
    bound = 1.0 / hidden_size ** 0.5
    return Parameter(init.rand(*shape, low=-bound, high=bound, dtype=dtype, device=device))


class Embedding(Module):
    """A lookup table, weight of shape (num_embeddings, embedding_dim) initialised N(0, 1)
    as PyTorch: forward(idx) with integer indices of shape `(*)` gives `(*, embedding_dim)`."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, dtype=dtype,
                                           device=device))

    def forward(self, x: Any) -> Tensor:
        """Rows of the table for integer indices `x` of shape `(*)` (a Tensor or
        array): returns `(*, embedding_dim)`."""
        return ops.embedding(x, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class _Cell(Module):
    gates = 1
    fold_bias_hh = True   # bias_hh joins the input projection (not the GRU's: see GRUCell)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        k = self.gates * hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.W_ih = _uniform((input_size, k), hidden_size, dtype, device)
        self.W_hh = _uniform((hidden_size, k), hidden_size, dtype, device)
        self.bias_ih = _uniform((k,), hidden_size, dtype, device) if bias else None
        self.bias_hh = _uniform((k,), hidden_size, dtype, device) if bias else None

    def project(self, x):
        """x @ W_ih + bias_ih (+ bias_hh): the part of the gates that does not need h."""
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input of shape {x.shape} has {x.shape[-1]} "
                             f"features, expected {self.input_size}")
        y = ops.linear(x, self.W_ih, self.bias_ih)
        return y if self.bias_hh is None or not self.fold_bias_hh else y + self.bias_hh

    def zeros(self, batch, like):
        return init.zeros(batch, self.hidden_size, dtype=like.dtype, device=like.device)


class RNNCell(_Cell):
    """One step of an Elman RNN: h' = tanh(x W_ih + b_ih + h W_hh + b_hh) (or relu with
    nonlinearity='relu'; another value raises ValueError). needle's weight layout: W_ih
    (input_size, hidden_size), W_hh (hidden_size, hidden_size) (torch's weight_ih / weight_hh
    transposed), biases (hidden_size,) (None with bias=False)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype="float32"):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def step(self, xp, h):
        """One step from the projected input xp."""
        z = xp + h @ self.W_hh
        return ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """x of shape (batch, input_size) and h of shape (batch, hidden_size)
        (zeros when None) give h' of shape (batch, hidden_size)."""
        return self.step(self.project(x), self.zeros(x.shape[0], x) if h is None else h)


class LSTMCell(_Cell):
    """(h', c') from gates i, f, g, o = split(x W_ih + b_ih + h W_hh + b_hh):
    c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c')."""
    gates = 4

    def step(self, xp: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step from the projected input xp = x W_ih + b_ih + b_hh of shape
        (batch, 4 hidden_size) and state (h, c), each (batch, hidden_size): returns (h', c')."""
        h, c = state
        return ops.lstm_gates(xp + h @ self.W_hh, c)   # one fused kernel on the CPU

    def forward(self, x: Tensor,
                state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """x of shape (batch, input_size) and state (h, c), each (batch, hidden_size)
        (zeros when None), give (h', c'), each of shape (batch, hidden_size)."""
        if state is None:
            state = (self.zeros(x.shape[0], x), self.zeros(x.shape[0], x))
        return self.step(self.project(x), state)


class GRUCell(_Cell):
    """h' = (1 - z) n + z h with r, z, n = PyTorch's gates:
    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr), z = sigmoid(x W_iz + b_iz + h W_hz + b_hz),
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn)).

    Parameters as the other cells: W_ih `(input_size, 3 * hidden_size)` and W_hh
    `(hidden_size, 3 * hidden_size)`, their columns the blocks r, z, n (torch's weight_ih /
    weight_hh transposed), and two biases bias_ih and bias_hh `(3 * hidden_size,)`, torch's
    bias_ih / bias_hh unchanged (None with bias=False). The LSTM and RNN add bias_hh to the
    input projection; the GRU cannot, since b_hn is multiplied by r, so bias_hh enters
    each step with h W_hh. forward(x (batch, input_size), h=None) -> h' (batch, hidden);
    h defaults to zeros."""
    gates = 3
    fold_bias_hh = False

    def step(self, xp, h):
        """One step from the projected input xp = x W_ih + b_ih."""
        return gru_cell(xp, h, self.W_hh, self.bias_hh)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """x of shape (batch, input_size) and h of shape (batch, hidden_size) (zeros
        when None) give h' of shape (batch, hidden_size). Input that is not 2-D raises
        ValueError."""
        if x.ndim != 2:
            raise ValueError(f"GRUCell: input must be (batch, features), got shape {x.shape}")
        return self.step(self.project(x), self.zeros(x.shape[0], x) if h is None else h)


class _Stack(Module):
    """Layers of cells over (seq_len, batch, features) input ((batch, seq_len, features)
    with batch_first=True, as torch: the states stay (layers, batch, hidden))."""
    batch_first = False

    def _check(self, x):
        if x.ndim != 3:
            layout = "(batch, seq_len, features)" if self.batch_first else "(seq_len, batch, features)"
            raise ValueError(f"{type(self).__name__}: input must be {layout}, "
                             f"got shape {x.shape}")
        if x.shape[2] != self.cells[0].input_size:   # named here, before the reshape
            raise ValueError(f"{type(self).__name__}: input of shape {x.shape} has {x.shape[2]} "
                             f"features, expected {self.cells[0].input_size}")

    def _seq_first(self, x):
        """x as (seq_len, batch, features): a transposed view when batch_first."""
        self._check(x)
        return ops.transpose(x, (0, 1)) if self.batch_first else x

    def _out(self, out):
        return ops.transpose(out, (0, 1)) if self.batch_first else out

    def _run(self, x, states):
        self._check(x)
        seq, batch = x.shape[:2]
        finals = []
        for cell, state in zip(self.cells, states):
            xp = cell.project(ops.reshape(x, (seq * batch, x.shape[2])))
            x, state = self._layer(cell, ops.reshape(xp, (seq, batch, xp.shape[1])), state)
            finals.append(state)
        return x, finals

    def _layer(self, cell, xp, state):
        """One layer over the projected sequence xp: (outputs, final state), step by step."""
        outs = []
        for xt in ops.split(xp, 0):
            state = cell.step(xt, state)
            outs.append(state[0] if isinstance(state, tuple) else state)
        return ops.stack(outs, 0), state

    def _layers(self, a, num_layers):
        if a is None:
            return [None] * num_layers
        if a.shape[0] != num_layers:
            raise ValueError(f"{type(self).__name__}: initial state of shape {a.shape} must have "
                             f"{num_layers} layers first")
        return list(ops.split(a, 0))


class RNN(_Stack):
    """Multi-layer RNN: forward(x, h0) -> (output (seq, batch, hidden), h_n (layers, batch,
    hidden)); h0 defaults to zeros. Each layer runs as one op over the sequence
    (ops.rnn.rnn_layer)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh",
                 batch_first=False, device=None, dtype="float32"):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.batch_first = bool(batch_first)
        self.cells = [RNNCell(input_size if k == 0 else hidden_size, hidden_size, bias,
                              nonlinearity, device, dtype) for k in range(num_layers)]

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x of shape (seq_len, batch, input_size) ((batch, seq_len, input_size) with
        batch_first) and h0 of shape (num_layers, batch, hidden_size) (zeros when None) give
        (output, h_n): output (seq_len, batch, hidden_size) (batch first with batch_first), h_n
        (num_layers, batch, hidden_size)."""
        x = self._seq_first(x)
        states = [h if h is not None else c.zeros(x.shape[1], x)
                  for c, h in zip(self.cells, self._layers(h0, self.num_layers))]
        out, finals = self._run(x, states)
        return self._out(out), ops.stack(finals, 0)

    def _layer(self, cell, xp, h):
        """One op per layer and sequence (the CPU's sequence kernels)."""
        return rnn_layer(xp, cell.W_hh, h, cell.nonlinearity)


class LSTM(_Stack):
    """Multi-layer LSTM: forward(x, (h0, c0)) -> (output, (h_n, c_n)), states (layers,
    batch, hidden), zeros by default."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype="float32"):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.batch_first = bool(batch_first)
        self.cells = [LSTMCell(input_size if k == 0 else hidden_size, hidden_size, bias, device,
                               dtype) for k in range(num_layers)]

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x of shape (seq_len, batch, input_size) ((batch, seq_len, input_size) with
        batch_first) and state (h0, c0), each (num_layers, batch, hidden_size) (zeros when None),
        give (output, (h_n, c_n)): output (seq_len, batch, hidden_size) (batch first with
        batch_first), h_n and c_n (num_layers, batch, hidden_size)."""
        x = self._seq_first(x)
        h0, c0 = state if state is not None else (None, None)
        hs, cs = self._layers(h0, self.num_layers), self._layers(c0, self.num_layers)
        states = [(h if h is not None else cell.zeros(x.shape[1], x),
                   c if c is not None else cell.zeros(x.shape[1], x))
                  for cell, h, c in zip(self.cells, hs, cs)]
        out, finals = self._run(x, states)
        return self._out(out), (ops.stack([h for h, _ in finals], 0),
                                ops.stack([c for _, c in finals], 0))

    def _layer(self, cell, xp, state):
        """One op per layer and sequence (fused on the CPU)."""
        out, h, c = ops.lstm_layer(xp, cell.W_hh, *state)
        return out, (h, c)


class GRU(_Stack):
    """Multi-layer GRU: forward(x (seq, batch, input_size), h0) -> (output (seq, batch,
    hidden), h_n (layers, batch, hidden)); h0 defaults to zeros. Layer k is cells[k], a
    GRUCell (parameters and their layout there: torch's weight_ih_l{k} is
    cells[k].W_ih transposed, bias_hh_l{k} is cells[k].bias_hh). Each layer runs as one
    op over the sequence (ops.rnn.gru_layer)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype="float32"):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.batch_first = bool(batch_first)
        self.cells = [GRUCell(input_size if k == 0 else hidden_size, hidden_size, bias, device,
                              dtype) for k in range(num_layers)]

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x of shape (seq_len, batch, input_size) ((batch, seq_len, input_size) with
        batch_first) and h0 of shape (num_layers, batch, hidden_size) (zeros when None) give
        (output, h_n): output (seq_len, batch, hidden_size), h_n (num_layers, batch,
        hidden_size)."""
        x = self._seq_first(x)   # checked, before x.shape[1] below
        states = [h if h is not None else c.zeros(x.shape[1], x)
                  for c, h in zip(self.cells, self._layers(h0, self.num_layers))]
        out, finals = self._run(x, states)
        return self._out(out), ops.stack(finals, 0)

    def _layer(self, cell, xp, h):
        return gru_layer(xp, cell.W_hh, h, cell.bias_hh)
