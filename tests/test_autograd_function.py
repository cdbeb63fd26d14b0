"""mininet.autograd.Function (custom forward/backward, as torch.autograd.Function) and
mininet.autograd.grad (torch.autograd.grad's signature and semantics), against torch and by
central differences in float64."""
import numpy as np
import pytest

import mininet
from mininet.autograd import Function, Tensor, grad, no_grad

from conftest import gradcheck, t64, torch

rng = np.random.default_rng(11)


def close(ours, theirs, tol=1e-10):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)


# the same functions, written for each library --------------------------------------------
class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y


class ClampST(Function):
    """clamp in forward, the identity's gradient in backward (straight-through)."""
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


class MulAdd(Function):
    """(x * w + b, x - w): two outputs, non-tensor and broadcast arguments."""
    @staticmethod
    def forward(ctx, x, w, b, scale):
        ctx.save_for_backward(x, w)
        ctx.scale = scale
        return (x * w + b) * scale, x - w

    @staticmethod
    def backward(ctx, g1, g2):
        x, w = ctx.saved_tensors
        # b's gradient is given at the output's shape: the caller sums it down (as torch)
        return g1 * w * ctx.scale + g2, g1 * x * ctx.scale - g2, g1 * ctx.scale, None


def torch_functions():
    class TExp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            y, = ctx.saved_tensors
            return g * y

    class TClampST(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lo, hi):
            return x.clamp(lo, hi)

        @staticmethod
        def backward(ctx, g):
            return g, None, None

    class TMulAdd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b, scale):
            ctx.save_for_backward(x, w)
            ctx.scale = scale
            return (x * w + b) * scale, x - w

        @staticmethod
        def backward(ctx, g1, g2):
            x, w = ctx.saved_tensors
            return g1 * w * ctx.scale + g2, g1 * x * ctx.scale - g2, g1 * ctx.scale, None

    return TExp, TClampST, TMulAdd


def pair(shape):
    a = rng.standard_normal(shape)
    return t64(a), torch.tensor(a, requires_grad=True)


@pytest.mark.torch
def test_custom_exp_matches_torch_values_and_gradients():
    TExp, _, _ = torch_functions()
    (x, tx), wn = pair((3, 4)), rng.standard_normal((3, 4))
    y, ty = Exp.apply(x), TExp.apply(tx)
    close(y, ty)
    (y * Tensor(wn)).sum().backward()
    (ty * torch.tensor(wn)).sum().backward()
    close(x.grad, tx.grad)


@pytest.mark.torch
def test_straight_through_clamp_matches_torch():
    _, TClampST, _ = torch_functions()
    x, tx = pair((5, 3))
    x3 = x * 3.0
    tx3 = tx * 3.0
    y, ty = ClampST.apply(x3, -1.0, 1.0), TClampST.apply(tx3, -1.0, 1.0)
    close(y, ty)
    assert np.abs(y.numpy()).max() <= 1.0
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    close(x.grad, tx.grad)
    # the straight-through gradient is not clamp's (zero outside [-1, 1])
    z = x3.detach()
    assert np.any(np.abs(z.numpy()) > 1) and np.all(x.grad.numpy() != 0)


@pytest.mark.torch
def test_two_outputs_non_tensor_args_and_a_broadcast_gradient_match_torch():
    _, _, TMulAdd = torch_functions()
    (x, tx), (w, tw), (b, tb) = pair((4, 3)), pair((4, 3)), pair((3,))
    p, q = MulAdd.apply(x, w, b, 2.5)
    tp, tq = TMulAdd.apply(tx, tw, tb, 2.5)
    close(p, tp)
    close(q, tq)
    wn = rng.standard_normal((4, 3))
    ((p * Tensor(wn)).sum() + (q * q).sum()).backward()
    ((tp * torch.tensor(wn)).sum() + (tq * tq).sum()).backward()
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        close(ours.grad, theirs.grad)
    assert b.grad.shape == (3,)


@pytest.mark.torch
def test_an_unused_output_gets_a_zero_gradient_as_torch():
    _, _, TMulAdd = torch_functions()
    (x, tx), (w, tw), (b, tb) = pair((2, 3)), pair((2, 3)), pair((2, 3))
    p, _ = MulAdd.apply(x, w, b, 1.0)
    tp, _ = TMulAdd.apply(tx, tw, tb, 1.0)
    p.sum().backward()
    tp.sum().backward()
    close(x.grad, tx.grad)
    close(w.grad, tw.grad)


@pytest.mark.torch
def test_second_order_through_saved_output_matches_torch():
    """backward written with tensor ops on ctx.saved_tensors: with create_graph its ops
    are recorded, and the saved output is the one in the graph (d(g*y)/dx has y's path)."""
    TExp, _, _ = torch_functions()
    x, tx = pair((6,))
    gx, = grad((Exp.apply(x) * x).sum(), x, create_graph=True)
    tgx, = torch.autograd.grad((TExp.apply(tx) * tx).sum(), tx, create_graph=True)
    close(gx, tgx)
    ggx, = grad((gx * gx).sum(), x)
    tggx, = torch.autograd.grad((tgx * tgx).sum(), tx)
    close(ggx, tggx)


def test_function_gradcheck_by_central_differences():
    class Softplus(Function):
        @staticmethod
        def forward(ctx, x, beta):
            ctx.save_for_backward(x)
            ctx.beta = beta
            return (1 + (x * beta).exp()).log() / beta

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * (x * ctx.beta).sigmoid(), None

    gradcheck(lambda x: Softplus.apply(x, 1.7), rng.standard_normal((3, 4)))
    gradcheck(lambda x, w, b: MulAdd.apply(x, w, b, 0.5)[0] + MulAdd.apply(x, w, b, 0.5)[1],
              rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal(3))


def test_ctx_needs_input_grad_and_no_grad_mode():
    seen = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, a, b, k):
            seen.append(ctx.needs_input_grad)
            assert not a.requires_grad   # forward runs on detached tensors
            return a * b * k

        @staticmethod
        def backward(ctx, g):
            return g, g, None

    a, b = t64(np.ones(2)), t64(np.ones(2), grad=False)
    y = Probe.apply(a, b, 2.0)
    assert seen[-1] == (True, False, False) and y.requires_grad
    with no_grad():
        z = Probe.apply(a, b, 2.0)
    assert seen[-1] == (False, False, False) and not z.requires_grad
    np.testing.assert_array_equal(z.numpy(), [2.0, 2.0])


def test_torch2_setup_context_form():
    class Square(Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    x = t64(np.array([1.0, -2.0, 3.0]))
    Square.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -4.0, 6.0])


def test_wrong_backward_results_are_clear_errors():
    def fn(result):
        class Bad(Function):
            @staticmethod
            def forward(ctx, x, k):
                return x * k

            @staticmethod
            def backward(ctx, g):
                return result(g)
        return Bad

    x = t64(np.ones(3))
    for result, err, words in [
        (lambda g: g, RuntimeError, "returned 1 gradients, expected 2"),
        (lambda g: (g, g), RuntimeError, "argument 1 is not a Tensor"),
        (lambda g: (Tensor(np.ones(4)), None), RuntimeError, "has shape (4,), its input has shape (3,)"),
        (lambda g: (np.ones(3), None), TypeError, "ndarray, not a Tensor"),
    ]:
        with pytest.raises(err, match=words.replace("(", r"\(").replace(")", r"\)")):
            fn(result).apply(x, 2.0).sum().backward()

    class NotTensor(Function):
        @staticmethod
        def forward(ctx, x):
            return x.numpy()

    with pytest.raises(TypeError, match="NotTensor.forward: output 0 is a ndarray"):
        NotTensor.apply(x)


# grad() -------------------------------------------------------------------------------------
@pytest.mark.torch
def test_grad_allow_unused_and_materialize_as_torch():
    (x, tx), (u, tu) = pair((3,)), pair((3,))
    y, ty = (x * x).sum(), (tx * tx).sum()
    with pytest.raises(RuntimeError, match="input 1"):
        grad(y, [x, u], retain_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(ty, [tx, tu], retain_graph=True)
    gx, gu = grad(y, [x, u], allow_unused=True, retain_graph=True)
    tgx, tgu = torch.autograd.grad(ty, [tx, tu], allow_unused=True, retain_graph=True)
    close(gx, tgx)
    assert gu is None and tgu is None
    _, gu = grad(y, [x, u], materialize_grads=True)
    _, tgu = torch.autograd.grad(ty, [tx, tu], materialize_grads=True)
    close(gu, tgu)


@pytest.mark.torch
def test_grad_create_graph_decides_whether_the_gradients_have_a_graph():
    x, tx = pair((4,))
    g, = grad((x.tanh() * x).sum(), x)
    tg, = torch.autograd.grad((tx.tanh() * tx).sum(), tx)
    assert not g.requires_grad and not tg.requires_grad
    close(g, tg)
    g, = grad((x.tanh() * x).sum(), x, create_graph=True)
    tg, = torch.autograd.grad((tx.tanh() * tx).sum(), tx, create_graph=True)
    assert g.requires_grad and tg.requires_grad
    h, = grad((g * g.exp()).sum(), x)
    th, = torch.autograd.grad((tg * tg.exp()).sum(), tx)
    close(h, th)


@pytest.mark.torch
def test_grad_outputs_seed_each_output_as_torch():
    (x, tx), (w, tw) = pair((3, 2)), pair((2, 4))
    y, ty = x @ w, tx @ tw
    z, tz = x.sum(), tx.sum()
    seed = rng.standard_normal((3, 4))
    gx, gw = grad([y, z], [x, w], [Tensor(seed), None])
    tgx, tgw = torch.autograd.grad([ty, tz], [tx, tw], [torch.tensor(seed), None])
    close(gx, tgx)
    close(gw, tgw)
    with pytest.raises(RuntimeError, match="implied only for one element"):
        grad(x @ w, x)
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\)"):
        grad(x @ w, x, Tensor(np.ones(2)))


@pytest.mark.torch
def test_grad_with_respect_to_a_computed_tensor_and_its_source_as_torch():
    """An input computed from another input passes it its share (total derivatives)."""
    x, tx = pair((3,))
    h, th = x.exp(), tx.exp()
    y, ty = (h * x + h * h).sum(), (th * tx + th * th).sum()
    gh, gx = grad(y, [h, x])
    tgh, tgx = torch.autograd.grad(ty, [th, tx])
    close(gh, tgh)
    close(gx, tgx)


@pytest.mark.torch
def test_grad_retain_graph_and_return_type():
    x, tx = pair((2,))
    y = (x.exp() * x).sum()
    first = grad(y, x, retain_graph=True)
    assert isinstance(first, tuple) and len(first) == 1
    again = grad(y, x)
    close(again[0], first[0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad(y, x)   # the graph is spent (torch: trying to backward a second time)
    assert x.grad is None   # grad never touches .grad
    with pytest.raises(RuntimeError, match="input 0 does not require grad"):
        grad((x * 2).sum(), t64(np.ones(2), grad=False))
    with pytest.raises(RuntimeError, match="output 0 does not require grad"):
        grad(t64(np.ones(2), grad=False).sum(), x)


def test_partial_grads_keeps_the_ops_first_and_second_order():
    """The gradient that ops use (LSTM, GRU, checkpoint): inputs independent, a graph
    when grad mode is on."""
    from mininet.autograd import partial_grads
    x = t64(rng.standard_normal(3))
    h = x * 2.0
    y = (h * x).sum()
    gh, gx = partial_grads(y, [h, x], Tensor(np.ones(())))
    np.testing.assert_allclose(gx.numpy(), h.numpy())   # the direct path alone
    np.testing.assert_allclose(gh.numpy(), x.numpy())
    assert gx.requires_grad   # grad mode on: a graph
    assert mininet.autograd.grad_enabled()
