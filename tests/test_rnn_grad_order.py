"""First and second derivatives through recurrent modules against PyTorch (float64):
losses that are not linear in the outputs, so a layer's incoming gradient depends on
its own output (the fused LSTM layer once differentiated through it: 3x gradients, and
an endless recursion for stacks), by autograd.grad with and without a graph, by
backward with create_graph, and a gradient penalty's gradient."""
import signal

import numpy as np
import pytest

from mininet import nn
from mininet.autograd import Tensor, grad, no_grad

torch = pytest.importorskip("torch", reason="PyTorch (the test extra) is the reference here")
rng = np.random.default_rng(5)
SEQ, BATCH, INP, HIDDEN = 3, 2, 3, 4


@pytest.fixture(autouse=True)
def deadline():
    """A recursion that never ends must fail the test, not hang the suite."""
    def expire(*_):
        raise TimeoutError("the gradient did not finish within 60 s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def weight_pairs(cells, t):
    """(our parameter, torch's parameter) for each cell of a module; torch's weights are
    ours transposed (ours.T below), its biases the same."""
    sfx = [f"_l{k}" for k in range(len(cells))] if hasattr(t, "num_layers") else [""]
    for cell, s in zip(cells, sfx):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            ours = getattr(cell, name.replace("weight", "W"))
            yield ours, getattr(t, name + s)


def ours_layout(a):
    """A torch weight (or its gradient) in our (in, out) layout; biases unchanged."""
    return a.T if a.ndim == 2 else a


def build(kind, layers):
    """(ours, torch's, our parameter/torch tensor pairs) with torch's weights copied."""
    if kind.endswith("Cell"):
        ours, theirs = getattr(nn, kind)(INP, HIDDEN, dtype="float64"), \
            getattr(torch.nn, kind)(INP, HIDDEN).double()
        cells = [ours]
    else:
        ours, theirs = getattr(nn, kind)(INP, HIDDEN, layers, dtype="float64"), \
            getattr(torch.nn, kind)(INP, HIDDEN, layers).double()
        cells = ours.cells
    pairs = list(weight_pairs(cells, theirs))
    for p, tp in pairs:
        p.data = Tensor(ours_layout(tp.detach().numpy()).copy(), dtype="float64")
    return ours, theirs, pairs


def run(m, x, lib):
    """A loss not linear in any output: squares of the sequence, cubes of the state."""
    if isinstance(m, (nn.LSTMCell, torch.nn.LSTMCell)):
        h, c = m(x[0])
        h, c = m(x[1], (h, c))           # two steps: the cell's own stack over time
        return (h * h).sum() + (c * c * c).sum()
    if isinstance(m, (nn.RNNCell, torch.nn.RNNCell)):
        h = m(x[1], m(x[0]))
        return (h * h * h).sum()
    out, state = m(x)
    last = state[1] if isinstance(state, tuple) else state
    return (out * out).sum() + (last * last * last).sum()


def torch_grads(t, xn, pairs, order):
    x = torch.tensor(xn, requires_grad=True)
    loss = run(t, x, torch)
    wrt = [x] + [tp for _, tp in pairs]
    first = torch.autograd.grad(loss, wrt, create_graph=order == 2)
    if order == 1:
        return [ours_layout(g.detach().numpy()) for g in first]
    pen = (first[0] * first[0]).sum() + sum((g * g).sum() for g in first[1:])
    return [ours_layout(g.detach().numpy()) for g in torch.autograd.grad(pen, wrt)]


def close(ours, theirs):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-9, atol=1e-11)


MODULES = [("RNN", 1), ("RNN", 2), ("LSTM", 1), ("LSTM", 2), ("LSTM", 3),
           ("RNNCell", 1), ("LSTMCell", 1)]


@pytest.mark.parametrize("kind,layers", MODULES)
@pytest.mark.parametrize("how", ["grad_with_graph", "grad_no_graph", "backward",
                                 "backward_create_graph"])
def test_first_order_gradient_of_a_nonlinear_loss_matches_torch(kind, layers, how):
    m, t, pairs = build(kind, layers)
    xn = rng.standard_normal((SEQ, BATCH, INP))
    x = Tensor(xn, dtype="float64", requires_grad=True)
    wrt = [x] + [p for p, _ in pairs]
    if how.startswith("grad"):
        if how == "grad_no_graph":
            loss = run(m, x, None)
            with no_grad():
                got = grad(loss, wrt)
        else:
            got = grad(run(m, x, None), wrt, create_graph=True)
    else:
        run(m, x, None).backward(create_graph=how == "backward_create_graph")
        got = [w.grad for w in wrt]
    close(got, torch_grads(t, xn, pairs, 1))


@pytest.mark.parametrize("kind,layers", MODULES)
def test_gradient_penalty_second_order_matches_torch(kind, layers):
    m, t, pairs = build(kind, layers)
    xn = rng.standard_normal((SEQ, BATCH, INP))
    x = Tensor(xn, dtype="float64", requires_grad=True)
    wrt = [x] + [p for p, _ in pairs]
    first = grad(run(m, x, None), wrt, create_graph=True)
    pen = (first[0] * first[0]).sum()
    for g in first[1:]:
        pen = pen + (g * g).sum()
    close(grad(pen, wrt), torch_grads(t, xn, pairs, 2))


def test_stacked_lstm_penalty_by_backward_create_graph_matches_torch():
    m, t, pairs = build("LSTM", 3)
    xn = rng.standard_normal((2, 1, INP))
    x = Tensor(xn, dtype="float64", requires_grad=True)
    run(m, x, None).backward(create_graph=True)
    pen = (x.grad * x.grad).sum()
    x.grad = None
    for p, _ in pairs:
        p.grad = None
    pen.backward()
    xt = torch.tensor(xn, requires_grad=True)
    gx, = torch.autograd.grad(run(t, xt, torch), [xt], create_graph=True)
    (gx * gx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for p, tp in pairs:
        np.testing.assert_allclose(p.grad.numpy(), ours_layout(tp.grad.numpy()), rtol=1e-9,
                                   atol=1e-11)
