"""Modules exported as one ONNX op instead of the ops they ran: batch norm in eval mode
(BatchNormalization), layer norm (LayerNormalization, opset 17), LSTM, RNN and GRU
(ONNX's LSTM, RNN and GRU ops). A handler declines (returns False from accepts) when the call is not
the plain one it knows; the module's ops are then exported one by one."""
import numpy as np

from ..nn import layers, sequence
from .ops import gate_order, gru_order
from .trace import flatten_values


def _plain(module, cls):
    """module runs cls's own forward (a subclass may have changed it)."""
    return isinstance(module, cls) and type(module).forward is cls.forward


# batch norm, layer norm --------------------------------------------------------------------
class BatchNormEval:
    @staticmethod
    def accepts(g, scope):
        m = scope.module
        return (scope.training is False and len(scope.args) == 1
                and (_plain(m, layers.BatchNorm1d) or _plain(m, layers.BatchNorm2d)))

    @staticmethod
    def emit(g, scope):
        m = scope.module
        ins = [g.name(scope.args[0])] + [g.name(t) for t in (m.weight, m.bias, m.running_mean,
                                                              m.running_var)]
        return g.node("BatchNormalization", ins, epsilon=float(m.eps), hint="BatchNorm")


class LayerNorm:
    @staticmethod
    def accepts(g, scope):
        return g.opset >= 17 and len(scope.args) == 1 and _plain(scope.module, layers.LayerNorm1d)

    @staticmethod
    def emit(g, scope):
        m, x = scope.module, scope.args[0]
        stash = g.elem_type(x.dtype) if x.dtype == np.float64 else None   # else float32's
        return g.node("LayerNormalization", [g.name(x), g.name(m.weight), g.name(m.bias)],
                      axis=-1, epsilon=float(m.eps), stash_type=stash, hint="LayerNorm")


# recurrent layers ------------------------------------------------------------------------
def _state_args(scope):
    """The explicit initial state passed to the module (None when it used zeros)."""
    return scope.args[1] if len(scope.args) > 1 else None


def _hidden_inputs(g, scope):
    """Whether ops of the scope read traced values from outside it other than its
    arguments: a state passed as a keyword, which the scope's args do not show."""
    args = {id(v) for v in flatten_values(scope.args)}
    for n in g.trace.nodes:
        if scope.contains(n):
            for v in n.inputs:
                src = g.producers.get(id(v))
                outside = id(v) in g.input_ids or (src is not None and not scope.contains(src))
                if outside and id(v) not in args:
                    return True
    return False


def _accepts_stack(g, scope, cls):
    """A plain nn.LSTM/RNN/GRU called with (x) or (x, state), its inputs all visible."""
    return (_plain(scope.module, cls) and len(scope.args) <= 2
            and not _hidden_inputs(g, scope))


class LSTM:
    """nn.LSTM as one ONNX LSTM per layer, weights in ONNX's layout (gates i, o, f, c;
    W (4n, in), R (4n, n), B = [b_ih, b_hh]) under the cell's module-tree name."""

    @staticmethod
    def accepts(g, scope):
        return _accepts_stack(g, scope, sequence.LSTM)

    @staticmethod
    def emit(g, scope):
        m = scope.module
        state = _state_args(scope)
        x, hs, cs = _seq_in(g, m, g.name(scope.args[0])), [], []
        for k, cell in enumerate(m.cells):
            base = g.module_names.get(id(cell), f"lstm.{k}")
            n = cell.hidden_size
            ins = [x] + _weights(g, cell, base, gate_order(n)) + [""]   # no sequence_lens
            if state is not None:
                ins += [_layer_state(g, state[0], k, len(m.cells)),
                        _layer_state(g, state[1], k, len(m.cells))]
            y, yh, yc = g.node("LSTM", ins, outputs=3, hidden_size=n, hint="LSTM")
            x = g.squeeze(y, [1])
            hs.append(yh)
            cs.append(yc)
        return _seq_out(g, m, x), _concat_layers(g, hs), _concat_layers(g, cs)


class RNN:
    """nn.RNN as one ONNX RNN per layer (Tanh or Relu)."""

    @staticmethod
    def accepts(g, scope):
        return _accepts_stack(g, scope, sequence.RNN)

    @staticmethod
    def emit(g, scope):
        m = scope.module
        state = _state_args(scope)
        x, hs = _seq_in(g, m, g.name(scope.args[0])), []
        for k, cell in enumerate(m.cells):
            base = g.module_names.get(id(cell), f"rnn.{k}")
            ins = [x] + _weights(g, cell, base, np.arange(cell.hidden_size)) + [""]
            if state is not None:
                ins.append(_layer_state(g, state, k, len(m.cells)))
            act = "Tanh" if cell.nonlinearity == "tanh" else "Relu"
            y, yh = g.node("RNN", ins, outputs=2, hidden_size=cell.hidden_size,
                           activations=[act], hint="RNN")
            x = g.squeeze(y, [1])
            hs.append(yh)
        return _seq_out(g, m, x), _concat_layers(g, hs)


class GRU:
    """nn.GRU as one ONNX GRU per layer (linear_before_reset: PyTorch's n gate), weights
    in ONNX's layout (gates z, r, h) under the cell's module-tree name."""

    @staticmethod
    def accepts(g, scope):
        return _accepts_stack(g, scope, sequence.GRU)

    @staticmethod
    def emit(g, scope):
        m = scope.module
        state = _state_args(scope)
        x, hs = _seq_in(g, m, g.name(scope.args[0])), []
        for k, cell in enumerate(m.cells):
            base = g.module_names.get(id(cell), f"gru.{k}")
            ins = [x] + _weights(g, cell, base, gru_order(cell.hidden_size)) + [""]
            if state is not None:
                ins.append(_layer_state(g, state, k, len(m.cells)))
            y, yh = g.node("GRU", ins, outputs=2, hidden_size=cell.hidden_size,
                           linear_before_reset=1, hint="GRU")
            x = g.squeeze(y, [1])
            hs.append(yh)
        return _seq_out(g, m, x), _concat_layers(g, hs)


def _weights(g, cell, base, order):
    """[W, R, B] in ONNX's layout: W_ih and W_hh transposed, (num_directions=1, gates *
    hidden, in), their gate blocks in `order`; B = [b_ih, b_hh] in that order ("" without
    biases)."""
    w = g.derived(cell.W_ih, f"{base}.W", lambda: cell.W_ih.numpy()[:, order].T[None])
    r = g.derived(cell.W_hh, f"{base}.R", lambda: cell.W_hh.numpy()[:, order].T[None])
    if cell.bias_ih is None:
        return [w, r, ""]
    b = g.derived(cell.bias_ih, f"{base}.B", lambda: np.concatenate(
        [cell.bias_ih.numpy()[order], cell.bias_hh.numpy()[order]])[None])
    return [w, r, b]


def _layer_state(g, state, k, layers_):
    """Layer k's (1, B, n) slice of a (layers, B, n) state."""
    name = g.name(state)
    if layers_ == 1:
        return name
    return g.node("Slice", [name, g.ints([k]), g.ints([k + 1]), g.ints([0])], hint="state")


def _seq_in(g, m, x):
    """The input as ONNX's (seq, batch, features): batch_first swaps the first two axes
    (a Transpose at any opset; the states stay (layers, batch, hidden) as torch's)."""
    return g.node("Transpose", [x], perm=[1, 0, 2], hint="batch_first") if m.batch_first else x


def _seq_out(g, m, y):
    """The output back in the module's layout."""
    return g.node("Transpose", [y], perm=[1, 0, 2], hint="batch_first") if m.batch_first else y


def _concat_layers(g, parts):
    return parts[0] if len(parts) == 1 else g.node("Concat", parts, axis=0)


HANDLERS = (BatchNormEval, LayerNorm, LSTM, RNN, GRU)


def handler_for(g, scope):
    for h in HANDLERS:
        if h.accepts(g, scope):
            return h
    return None


def bind_outputs(g, scope, names):
    """Give the scope's output values the names the handler returned."""
    values = flatten_values(scope.output)
    names = names if isinstance(names, tuple) else (names,)
    if len(values) != len(names):
        raise AssertionError(f"{type(scope.module).__name__}: {len(values)} outputs, "
                             f"{len(names)} names")
    for v, n in zip(values, names):
        g.bind(v, n)
