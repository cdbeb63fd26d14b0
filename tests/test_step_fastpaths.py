"""The training step's fast paths (issue 25, item 4) give what the general code gives:
the topological order, Tensor.backward's pass (against autograd.grad's general pass and
finite differences), the loss's integer-label path (range and ignore_index checks, against
numpy), Adam's grouped update (against one update per parameter), and the NDArray
shortcuts (broadcast, compact checks, reductions) on views and odd shapes."""
import numpy as np
import pytest

import mininet
from mininet import autograd, nn, optim
from mininet.ndarray import NDArray


def _old_topo(roots):
    """The stack-of-pairs walk find_topo_sort used before (the reference order)."""
    order, visited = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for child in node.inputs:
                if id(child) not in visited and child.requires_grad:
                    stack.append((child, False))
    return order


def _graph():
    rng = np.random.default_rng(0)
    a = mininet.Tensor(rng.random((3, 4)), requires_grad=True)
    b = mininet.Tensor(rng.random((4, 2)), requires_grad=True)
    h = (a @ b).relu()
    s = h * h + h.exp() + (a.sum(1, keepdim=True) * h)
    return a, b, s.sum()


def test_topo_order_is_unchanged():
    *_, out = _graph()
    assert [id(n) for n in autograd.find_topo_sort([out])] == [id(n) for n in _old_topo([out])]


def test_backward_matches_autograd_grad_and_finite_differences():
    a, b, out = _graph()
    ga, gb = autograd.grad(out, [a, b], retain_graph=True)
    out.backward()
    np.testing.assert_array_equal(a.grad.numpy(), ga.numpy())
    np.testing.assert_array_equal(b.grad.numpy(), gb.numpy())
    x0 = a.numpy()

    def f(x):
        h = np.maximum(x @ b.numpy(), 0)
        return (h * h + np.exp(h) + x.sum(1, keepdims=True) * h).sum()
    eps, num = 1e-6, np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        d = np.zeros_like(x0)
        d[idx] = eps
        num[idx] = (f(x0 + d) - f(x0 - d)) / (2 * eps)
    np.testing.assert_allclose(a.grad.numpy(), num, rtol=1e-6, atol=1e-6)


def test_backward_accumulates_and_frees_the_graph():
    a, b, out = _graph()
    out.backward(retain_graph=True)
    first = a.grad.numpy()
    out.backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * first, rtol=1e-12)
    with pytest.raises(RuntimeError, match="second time"):
        out.backward()


def test_backward_to_a_float32_leaf_of_float64_data_casts():
    w = mininet.Tensor(np.ones(3, np.float32), requires_grad=True)
    x = mininet.Tensor(np.arange(3.0))   # float64: the product promotes
    (w * x).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad.numpy(), [0, 1, 2])


def _xent(z, y, ignore=None):
    """numpy mean cross-entropy over the labels != ignore."""
    z = z.astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    keep = np.ones(len(y), bool) if ignore is None else y != ignore
    return (lse - z[np.arange(len(y)), np.where(keep, y, 0)])[keep].mean()


@pytest.mark.parametrize("labels", [[0, 2, 1, 2], [2, 2, 2, 2]])
def test_loss_integer_labels(labels):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array(labels)
    loss = nn.CrossEntropyLoss()(mininet.Tensor(z), mininet.Tensor(y))
    np.testing.assert_allclose(loss.item(), _xent(z, y), rtol=1e-5)


def test_loss_ignore_index_inside_the_label_range():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 1, 3, 1, 2])
    loss = nn.CrossEntropyLoss(ignore_index=1)(mininet.Tensor(z), mininet.Tensor(y))
    np.testing.assert_allclose(loss.item(), _xent(z, y, ignore=1), rtol=1e-5)


def test_loss_bad_labels_are_named():
    z = mininet.Tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got min 0 max 4"):
        nn.CrossEntropyLoss()(z, mininet.Tensor(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match=r"got min -1 max 1"):
        nn.CrossEntropyLoss()(z, mininet.Tensor(np.array([-1, 0, 1])))
    with pytest.raises(ValueError, match="do not match"):
        nn.CrossEntropyLoss()(z, mininet.Tensor(np.array([0, 1])))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.CrossEntropyLoss()(mininet.Tensor(np.zeros((3, 4), np.int64)),
                              mininet.Tensor(np.array([0, 1, 2])))


def test_loss_empty_batch_is_nan():
    z = mininet.Tensor(np.zeros((0, 4), np.float32))
    assert np.isnan(nn.CrossEntropyLoss()(z, mininet.Tensor(np.zeros(0, np.int64))).item())


def test_adam_grouped_update_matches_one_call_per_parameter():
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (3,), (3, 2), (2,)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    results = []
    for grouped in (True, False):
        ps = [nn.Parameter(v.copy()) for v in values]
        opt = optim.Adam(ps, lr=0.01, weight_decay=0.1)
        if not grouped:   # the base class's way: update() per parameter
            opt.update_group = lambda items, group: [opt.update(*it, group) for it in items]
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = mininet.Tensor(g)
            ps[1].grad = None if step is grads[1] else ps[1].grad   # a parameter skips a step
            opt.step()
        results.append([p.numpy() for p in ps])
        assert opt.steps == {0: 3, 1: 2, 2: 3, 3: 3}
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ndarray_shortcuts_on_views():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((4, 6)).astype(np.float32)
    a = NDArray(base)
    for view, ref in [(a[1:3], base[1:3]), (a[:, ::2], base[:, ::2]),
                      (a.swapaxes(0, 1), base.T), (a[:, 2:3], base[:, 2:3]),
                      (a[1:2, :1], base[1:2, :1]), (a[:0], base[:0])]:
        assert view.is_compact() == (ref.flags.c_contiguous or ref.size <= 1)
        np.testing.assert_allclose(view.sum(0).numpy(), ref.sum(0), rtol=1e-6)
        np.testing.assert_allclose((view + view).numpy(), ref + ref, rtol=1e-6)
    row = NDArray(base[0])
    np.testing.assert_array_equal(row.broadcast_to((3, 4, 6)).numpy(),
                                  np.broadcast_to(base[0], (3, 4, 6)))
    np.testing.assert_array_equal((a + row).numpy(), base + base[0])
    with pytest.raises(ValueError, match="cannot broadcast"):
        row.broadcast_to((4, 5))
    with pytest.raises(ValueError, match="cannot broadcast"):
        a.broadcast_to((6,))
    np.testing.assert_array_equal((a > row).numpy(), base > base[0])


def test_adam_subclass_with_its_own_update_is_not_bypassed():
    """Adam's grouped kernel call must not skip a subclass's update()."""
    import mininet
    from mininet import optim
    calls = []

    class Logged(optim.Adam):
        def update(self, i, p, g, group):
            calls.append(i)
            return super().update(i, p, g, group)

    ps = [nn.Parameter(mininet.Tensor(np.ones((3, 2), dtype=np.float32))) for _ in range(3)]
    opt = Logged(ps, lr=0.1)
    sum((p * p).sum() for p in ps).backward()
    opt.step()
    assert calls == [0, 1, 2]
    np.testing.assert_allclose(ps[0].numpy(), np.full((3, 2), 0.9), rtol=1e-6)
