"""In-place writes and autograd, as torch: x[index] = value and add_/sub_/mul_/div_/
clamp_/fill_/zero_/copy_ on tensors inside a graph are recorded (the tensor object stays
the same, its node becomes the write); each write bumps the version of the buffer (shared
by all views), and backward refuses an op whose saved values were written since (torch's
message). PyTorch CPU is the reference for every gradient and for where it raises."""
import numpy as np
import pytest

import mininet
from mininet import Tensor, no_grad

from conftest import assert_close, torch

pytestmark = pytest.mark.torch
rng = np.random.default_rng(7)


def r(*shape):
    return rng.standard_normal(shape)


def leaves(arrays):
    """The same float64 leaves (requiring grad) in mininet and torch."""
    return ([Tensor(a, requires_grad=True) for a in arrays],
            [torch.tensor(a, requires_grad=True) for a in arrays])


def check(program, arrays, create_graph=False):
    """Run program(lib, *leaves) -> scalar loss in both, compare the value and every
    leaf's gradient (with create_graph: also the gradient of the sum of squared
    gradients, a double backward through the writes)."""
    ms, ts = leaves(arrays)
    ml, tl = program(mininet, *ms), program(torch, *ts)
    assert_close(ml.numpy(), tl.detach().numpy(), np.float64)
    if not create_graph:
        ml.backward()
        tl.backward()
        for m, t in zip(ms, ts):
            assert_close(m.grad.numpy(), t.grad.numpy(), np.float64)
        return
    mg = mininet.autograd.grad(ml, ms, create_graph=True)
    tg = torch.autograd.grad(tl, ts, create_graph=True)
    for m, t in zip(mg, tg):
        assert_close(m.numpy(), t.detach().numpy(), np.float64)
    sum(((g * g).sum() for g in mg[1:]), (mg[0] * mg[0]).sum()).backward()
    sum(((g * g).sum() for g in tg[1:]), (tg[0] * tg[0]).sum()).backward()
    for m, t in zip(ms, ts):
        assert_close(m.grad.numpy(), t.grad.numpy(), np.float64)


def zeros(lib, *shape):
    return lib.zeros(*shape, dtype=lib.float64)


def index(lib, a):
    """An int64 index tensor in lib."""
    return lib.tensor(np.asarray(a, dtype=np.int64))


# x[index] = value on a tensor in a graph -----------------------------------------------------
MASK = rng.random((3, 4)) < 0.5
WRITES = {
    "scalar": (lambda lib, a, b: _write(a * 2.0, 0, b), [r(4), r()]),
    "python number": (lambda lib, a: _write(a * 2.0, (1, 2), 7.0), [r(3, 4)]),
    "row broadcast": (lambda lib, a, b: _write(a * 2.0, slice(1, 3), b), [r(3, 4), r(4)]),
    "column": (lambda lib, a, b: _write(a + 1.0, (slice(None), 1), b), [r(3, 4), r(3)]),
    "stepped slices": (lambda lib, a, b: _write(a * a, (slice(None, None, 2),
                                                         slice(1, None, 3)), b),
                       [r(5, 7), r(3, 2)]),
    "int list": (lambda lib, a, b: _write(a * 2.0, [0, 2], b), [r(3, 4), r(2, 4)]),
    "int tensor and column": (lambda lib, a, b: _write(a * 2.0, (index(lib, [2, 0]), 1), b),
                              [r(3, 4), r(2)]),
    "2-d int array": (lambda lib, a, b: _write(a * 2.0, index(lib, [[0, 1], [3, 2]]), b),
                      [r(4, 3), r(2, 2, 3)]),
    "bool mask": (lambda lib, a, b: _write(a * 2.0, lib.tensor(MASK), b),
                  [r(3, 4), r(int(MASK.sum()))]),
    "mask scalar tensor": (lambda lib, a, b: _write(a * 2.0, a > 0, b), [r(3, 4), r()]),
    "value from another tensor's row": (lambda lib, a: _write(a * 2.0, 0, (a * 2.0)[1] * 3.0),
                                        [r(3, 2)]),
}


def _write(h, idx, v):
    """h[idx] = v, then a loss that reads h nonlinearly (and h's values twice)."""
    h[idx] = v
    return (h * h * h).sum() + h.sum()


@pytest.mark.parametrize("name", WRITES)
def test_setitem_gradients_as_torch(name):
    program, arrays = WRITES[name]
    check(program, arrays)


@pytest.mark.parametrize("name", ["scalar", "row broadcast", "int list", "bool mask"])
def test_setitem_double_backward_as_torch(name):
    program, arrays = WRITES[name]
    check(program, arrays, create_graph=True)


def test_the_tensor_object_stays_the_same_and_becomes_a_non_leaf():
    (a,), _ = leaves([r(3)])
    h = a * 2.0
    same = h
    h[0] = 1.0
    assert h is same and h.requires_grad and not h.is_leaf()
    assert type(h.op).__name__ == "SetItem"


def test_writes_in_a_loop_into_a_plain_tensor():
    """out = zeros(n); out[i] = f(w) one row at a time (the first write makes out a
    graph tensor, the next ones write into it)."""
    def program(lib, w):
        out = zeros(lib, 4, 3)
        for i in range(4):
            out[i] = (w * float(i + 1)).tanh()
        return (out * out).sum()
    check(program, [r(3)])


def test_writes_seen_through_earlier_views():
    """A view taken before a write sees it, and its gradient follows it (torch rebases the
    view's history)."""
    def program(lib, a, b):
        h = a * 2.0
        row = h[1]
        col = h[:, 2]
        h[1, 2] = b
        return (row * row).sum() + (col * 3.0).sum()
    check(program, [r(3, 4), r()])


SELF_READS = {   # the written value computed from the tensor itself, before the write
    "column scaled": lambda h, src: h.__setitem__((slice(None), 0), src[:, 0] * 0.5),
    "shifted rows": lambda h, src: h.__setitem__(slice(1, None), src[:-1] * 2.0 + src[1:]),
    "whole tensor": lambda h, src: h.__setitem__(0, (src * src).sum(0)),
    "itself": lambda h, src: h.__setitem__(slice(None), src),
    "mul_ by itself": lambda h, src: h.mul_(src),
    "add_ a row of itself": lambda h, src: h.add_(src[2].exp()),
    "div_ by a column of itself": lambda h, src: h.div_(src[:, 1:2] * src[:, 1:2] + 1.0),
}


def self_read(name):
    """The program: mininet reads h itself, torch (which refuses some of these, its saved
    h being written) a clone of h: the same values and gradients."""
    def program(lib, a):
        h = a * 2.0 + 0.5
        SELF_READS[name](h, h if lib is mininet else h.clone())
        return (h * h * h).sum()
    return program


def test_a_view_used_after_the_write_follows_it():
    """col is a view of h taken before the write: after it col holds the written values,
    and its gradient goes through the write (torch rebases col's history)."""
    def program(lib, a):
        h = a * 2.0
        col = h[:, 0]
        h[:, 0] = (col * col) if lib is mininet else (col.clone() * col.clone())
        return (col * 3.0).sum() + (h * h).sum()
    check(program, [r(3, 4)])


@pytest.mark.parametrize("name", SELF_READS)
def test_values_computed_from_the_written_tensor_as_torch(name):
    check(self_read(name), [r(3, 4)])


@pytest.mark.parametrize("name", ["column scaled", "shifted rows", "mul_ by itself"])
def test_values_computed_from_the_written_tensor_double_backward(name):
    check(self_read(name), [r(3, 4)], create_graph=True)


def test_write_chain_on_one_tensor():
    def program(lib, a, b, c):
        h = a * 1.5
        h[0] = b
        h.mul_(c)
        h[1:, 0] = c[0] * 2.0
        h.add_(b)
        return (h * h).sum()
    check(program, [r(3, 2), r(2), r(2)])


# in-place arithmetic on intermediates --------------------------------------------------------
ARITH = {
    "add_": lambda lib, a, b: _use(_h(a).add_(b)),
    "add_ alpha": lambda lib, a, b: _use(_h(a).add_(b, alpha=-0.5)),
    "sub_": lambda lib, a, b: _use(_h(a).sub_(b * b)),
    "mul_": lambda lib, a, b: _use(_h(a).mul_(b)),
    "mul_ number": lambda lib, a, b: _use(_h(a).mul_(3.0) + b),
    "div_": lambda lib, a, b: _use(_h(a).div_(b * b + 1.0)),
    "clamp_": lambda lib, a, b: _use(_h(a).clamp_(-0.5, 0.7) * b),
    "clamp_ min": lambda lib, a, b: _use(_h(a).clamp_(min=0.1) + b),
    "fill_": lambda lib, a, b: _use(_h(a).fill_(2.0) * b + a),
    "fill_ tensor": lambda lib, a, b: _use(_h(a).fill_(b.sum()) + a),
    "zero_": lambda lib, a, b: _use(_h(a).zero_() + a * b),
    "copy_": lambda lib, a, b: _use(_h(a).copy_(b * 3.0) + a),
    "copy_ broadcast": lambda lib, a, b: _use(_h(a).copy_(b[0]) + a),
    "into a constant": lambda lib, a, b: _use(zeros(lib, 3, 4).add_(a).mul_(b)),
}


def _h(a):
    return a * 2.0 + 1.0


def _use(h):
    return (h * h).sum() + h.sum()


@pytest.mark.parametrize("name", ARITH)
def test_inplace_arithmetic_gradients_as_torch(name):
    check(ARITH[name], [r(3, 4), r(4)])


@pytest.mark.parametrize("name", ["add_", "mul_", "div_", "copy_"])
def test_inplace_arithmetic_double_backward_as_torch(name):
    check(ARITH[name], [r(3, 4), r(4)], create_graph=True)


def test_inplace_returns_the_same_object():
    (a,), _ = leaves([r(3)])
    h = a * 2.0
    for f in (lambda t: t.add_(1.0), lambda t: t.mul_(a), lambda t: t.clamp_(0.0),
              lambda t: t.zero_(), lambda t: t.copy_(a)):
        assert f(h) is h


def test_inplace_broadcast_must_keep_the_shape():
    (a, b), _ = leaves([r(3), r(2, 3)])
    h = a * 2.0
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        h.add_(b)
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        Tensor(r(3)).add_(Tensor(r(2, 3)))


# stale backward: torch's version error --------------------------------------------------------
STALE = {
    # (program building y, then the write): torch raises on each in backward
    "mul_ of a saved input": lambda lib, x, w: _stale(x * 1.0, lambda h: (h * w).sum(),
                                                      lambda h: h.mul_(2.0)),
    "setitem of a saved input": lambda lib, x, w: _stale(x * 1.0, lambda h: (h * w).sum(),
                                                         lambda h: h.__setitem__(0, 5.0)),
    "write through a view": lambda lib, x, w: _stale(x * 1.0, lambda h: (h * w).sum(),
                                                     lambda h: h[1:].add_(1.0), no_grad=True),
    "tanh's saved output": lambda lib, x, w: _stale(x.tanh(), lambda h: (h * w).sum() + h.sum(),
                                                    lambda h: h.mul_(2.0), no_grad=True),
    "matmul's saved weight": lambda lib, x, w: _stale(w * 1.0, lambda h: (x @ h).sum(),
                                                      lambda h: h.zero_()),
}


def _stale(h, use, write, no_grad=False):
    """y = use(h), then write(h) (under no_grad if asked): y's backward must raise."""
    y = use(h)
    if no_grad:
        with (torch.no_grad() if isinstance(h, torch.Tensor) else mininet.no_grad()):
            write(h)
    else:
        write(h)
    return y


@pytest.mark.parametrize("name", STALE)
def test_stale_backward_raises_as_torch(name):
    ms, ts = leaves([r(3), r(3)])
    ty = STALE[name](torch, *ts)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward()
    my = STALE[name](mininet, *ms)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: \[\w+ "
                                           r"(input \d|output), shape \([\d, ]+\)\] is at version "
                                           r"\d+; expected version \d+ instead"):
        my.backward()


def test_the_version_message_names_op_shape_and_versions():
    x, w = Tensor(r(2, 3), requires_grad=True), Tensor(r(2, 3), requires_grad=True)
    h = x * 1.0
    y = (h * w).sum()
    h.mul_(2.0)
    h.add_(1.0)
    with pytest.raises(RuntimeError) as e:
        y.backward()
    assert "[EWiseMul input 0, shape (2, 3)] is at version 2; expected version 0" in str(e.value)


def test_a_no_grad_write_into_a_saved_leaf_raises():
    """An optimizer-style write (no_grad) into a parameter an unfinished graph saved."""
    ms, ts = leaves([r(3), r(3)])
    for lib, (x, w) in ((torch, ts), (mininet, ms)):
        y = (x * w).sum()
        with (torch.no_grad() if lib is torch else mininet.no_grad()):
            w.mul_(0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


def test_writes_after_backward_and_before_a_new_graph_are_fine():
    ms, ts = leaves([r(3), r(3)])
    for lib, (x, w) in ((torch, ts), (mininet, ms)):
        (x * w).sum().backward()
        with (torch.no_grad() if lib is torch else mininet.no_grad()):
            w.sub_(w.grad * 0.1)
        (x * w * w).sum().backward()
    for m, t in zip(ms, ts):
        assert_close(m.grad.numpy(), t.grad.numpy(), np.float64)


def test_an_ops_output_it_reads_is_kept_by_a_recorded_write():
    """exp reads its output in backward; a recorded write into it keeps a copy of the old
    values for exp's gradient: the right gradient (torch refuses this program instead)."""
    a0, b0 = r(3), r()
    a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
    h = a.exp()
    h[1] = b
    (h * h).sum().backward()
    assert_close(a.grad.numpy(), np.where(np.arange(3) == 1, 0.0, 2 * np.exp(2 * a0)), np.float64)
    assert_close(b.grad.numpy(), 2 * b0, np.float64)


def test_version_counters_are_shared_by_views_and_bumped_by_every_write():
    from mininet.autograd import _version
    x = Tensor(r(3, 4))
    v = x[1]
    start = _version(x.cached_data)
    x[0] = 1.0
    v.add_(1.0)
    x.mul_(2.0)
    x.clamp_(-1.0, 1.0)
    x.zero_()
    x.copy_(Tensor(r(3, 4)))
    x.fill_(3.0)
    assert _version(x.cached_data) == _version(v.cached_data) == start + 7


# what is refused, what is allowed --------------------------------------------------------------
@pytest.mark.parametrize("write", [lambda t: t.__setitem__(0, 1.0), lambda t: t.add_(1.0),
                                   lambda t: t.mul_(2.0), lambda t: t.div_(2.0),
                                   lambda t: t.sub_(1.0), lambda t: t.clamp_(0.0),
                                   lambda t: t.fill_(1.0), lambda t: t.zero_(),
                                   lambda t: t.copy_(Tensor(r(3)))])
def test_a_leaf_that_requires_grad_is_refused_as_torch(write):
    x = Tensor(r(3), requires_grad=True)
    t = torch.tensor(r(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        t.add_(1.0)
    before = x.numpy()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in "
                                           "an in-place operation"):
        write(x)
    np.testing.assert_array_equal(x.numpy(), before)
    with no_grad():
        write(x)
    assert x.requires_grad and x.is_leaf()


def test_no_grad_writes_into_graph_tensors_are_not_recorded():
    ms, ts = leaves([r(3)])
    for lib, (a,) in ((torch, ts), (mininet, ms)):
        h = a * 2.0
        with (torch.no_grad() if lib is torch else mininet.no_grad()):
            h[0] = 10.0
            h.add_(1.0)
        (h * 3.0).sum().backward()
    assert_close(ms[0].grad.numpy(), ts[0].grad.numpy(), np.float64)


def test_a_recorded_write_into_a_view_is_refused_naming_the_limitation():
    a = Tensor(r(3, 4), requires_grad=True)
    h = a * 2.0
    v = h[1]
    with pytest.raises(RuntimeError, match="view of another tensor.*write into the base"):
        v[0] = Tensor(r(), requires_grad=True)
    with pytest.raises(RuntimeError, match="view of another tensor"):
        v.mul_(2.0)
    plain = Tensor(r(3, 4))
    with pytest.raises(RuntimeError, match="view of another tensor"):
        plain[1][0] = Tensor(r(), requires_grad=True)
    with no_grad():   # unrecorded writes through views reach the base
        v[0] = 5.0
    assert h.numpy()[1, 0] == 5.0


def test_integer_tensors_take_unrecorded_writes():
    t = Tensor(np.arange(5))
    t[t > 2] = 0
    t.add_(1)
    assert t.tolist() == [1, 2, 3, 1, 1]
    a = Tensor(r(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="int64"):
        Tensor(np.arange(3))[0] = a.sum()


# optimizers, checkpoints, data ----------------------------------------------------------------
def test_optimizer_steps_still_train_as_torch():
    """SGD with momentum writes parameters in place under no_grad, between graphs."""
    from mininet import nn, optim
    w0, b0, x0, y0 = r(4, 3), r(3), r(8, 4), r(8, 3)
    mw, mb = nn.Parameter(Tensor(w0)), nn.Parameter(Tensor(b0))
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    mopt = optim.SGD([mw, mb], lr=0.05, momentum=0.9)
    topt = torch.optim.SGD([tw, tb], lr=0.05, momentum=0.9)
    for _ in range(3):
        for opt, w, b, x, y in ((mopt, mw, mb, Tensor(x0), Tensor(y0)),
                                (topt, tw, tb, torch.tensor(x0), torch.tensor(y0))):
            opt.zero_grad()
            h = x @ w + b
            h[:, 0] = h[:, 0] * 0.5     # a recorded write inside the model
            ((h - y) * (h - y)).mean().backward()
            opt.step()
    assert_close(mw.numpy(), tw.detach().numpy(), np.float64)
    assert_close(mb.numpy(), tb.detach().numpy(), np.float64)


def test_checkpoint_round_trip_after_inplace_writes(tmp_path):
    from mininet import nn
    model = nn.Linear(3, 2)
    with no_grad():
        model.weight.mul_(2.0)
        model.bias[0] = 1.5
    mininet.save(model.state_dict(), tmp_path / "m.pt")
    other = nn.Linear(3, 2)
    other.load_state_dict(mininet.load(tmp_path / "m.pt"))
    np.testing.assert_array_equal(other.weight.numpy(), model.weight.numpy())
    assert other.bias.numpy()[0] == 1.5


def test_an_optimizer_step_bumps_the_version_as_torch():
    """A graph built before step() and backpropagated after it would use the new weights:
    both refuse it."""
    from mininet import nn, optim
    w0, x0 = r(3, 2), r(4, 3)
    mw, tw = nn.Parameter(Tensor(w0)), torch.tensor(w0, requires_grad=True)
    for opt, w, x in ((optim.SGD([mw], lr=0.1), mw, Tensor(x0)),
                      (torch.optim.SGD([tw], lr=0.1), tw, torch.tensor(x0))):
        first = (x @ (w * w)).sum()   # (torch's mm alone would not save w: x needs no grad)
        (x @ w).sum().backward()
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            first.backward()


@pytest.mark.parametrize("write", ["mul_", "setitem", "assign"])
def test_writes_through_data_are_not_counted_as_torch(write):
    """.data shares the memory but not the version: a backward that saved the values reads
    the written ones, in torch and here alike (x.data = new too)."""
    grads = []
    for lib in ("mininet", "torch"):
        x = Tensor(np.ones(3), requires_grad=True) if lib == "mininet" else \
            torch.ones(3, dtype=torch.float64, requires_grad=True)
        y = (x * x).sum()
        if write == "mul_":
            x.data.mul_(2)
        elif write == "setitem":
            x.data[0] = 5
        else:
            x.data = Tensor(np.full(3, 3.0)) if lib == "mininet" else \
                torch.full((3,), 3.0, dtype=torch.float64)
        y.backward()
        grads.append(np.asarray(x.grad.numpy() if lib == "mininet" else x.grad.numpy()))
    np.testing.assert_array_equal(grads[0], grads[1])
