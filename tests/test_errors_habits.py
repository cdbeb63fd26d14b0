"""Misleading errors (issue 22 item 8), each turned into one that names the cause and the fix:
a numpy array given to a module or an op is a TypeError naming the module, the op and
what was given (as torch refuses numpy input); a second backward through a freed graph is
torch's "backward through the graph a second time ... retain_graph=True" RuntimeError,
while every legitimate second pass still works; a --resume file that is no checkpoint
says what it is."""
import os
import zipfile

import numpy as np
import pytest

import mininet
from mininet import nn, ops
from mininet.autograd import Op, Tensor, add_observer, grad, remove_observer
from mininet.models import build_model
from mininet.nn.checkpoint import checkpoint
from mininet.training import (CheckpointError, load_checkpoint, make_optimizer,
                              read_checkpoint_header, save_checkpoint)
from conftest import assert_one_line_error, cli


# 1. numpy (and other non-Tensor) input ---------------------------------------------------
def _type_error(call):
    with pytest.raises(TypeError) as info:
        call()
    return str(info.value)


def test_numpy_into_linear_names_the_module_the_input_and_the_fix():
    layer = nn.Linear(784, 10)
    x = np.random.default_rng(0).standard_normal((2, 784))
    msg = _type_error(lambda: layer(x))
    assert msg.startswith("Linear ("), msg
    for w in ("expected a mininet Tensor", "numpy.ndarray", "(2, 784)", "float64",
              "mininet.tensor(x)", "input 0"):
        assert w in msg, (w, msg)
    assert "cached_data" not in msg
    assert layer(mininet.tensor(x, dtype="float32")).shape == (2, 10)   # the fix works


def test_numpy_into_a_module_inside_sequential_names_the_innermost_module():
    model = nn.Sequential(nn.Conv(3, 4, 3), nn.ReLU())
    msg = _type_error(lambda: model(np.zeros((2, 3, 8, 8), np.float32)))
    assert msg.startswith("Conv (op ConvReLU, input 0)"), msg   # Conv2d + ReLU: one op
    assert "(2, 3, 8, 8)" in msg and "float32" in msg and "numpy.ndarray" in msg


def test_numpy_logits_into_a_loss():
    loss = nn.SoftmaxLoss()
    logits = np.zeros((4, 10), np.float32)
    msg = _type_error(lambda: loss(logits, mininet.tensor([1, 2, 3, 4])))
    assert msg.startswith(f"{type(loss).__name__} (op SoftmaxCrossEntropy, input 0)"), msg
    assert "numpy.ndarray (shape (4, 10), float32)" in msg and "mininet.tensor(x)" in msg


def test_functional_ops_outside_any_module_name_the_op_and_the_input():
    msg = _type_error(lambda: ops.relu(np.ones((3,), np.float32)))
    assert msg.startswith("ReLU (input 0): expected a mininet Tensor, got numpy.ndarray"), msg
    w = mininet.tensor(np.ones((4, 3), np.float32))
    msg = _type_error(lambda: nn.functional.linear(mininet.tensor(np.ones((2, 3), np.float32)),
                                                   np.ones((4, 3))))
    assert "numpy.ndarray (shape (4, 3), float64)" in msg, msg
    msg = _type_error(lambda: ops.matmul(mininet.tensor(np.ones((2, 3), np.float32)),
                                         np.ones((3, 3))))
    assert msg.startswith("MatMul (input 1)"), msg
    msg = _type_error(lambda: ops.exp([1.0, 2.0]))
    assert msg.startswith("Exp (input 0)") and "got list (length 2)" in msg, msg
    assert nn.functional.linear(mininet.tensor(np.ones((2, 3), np.float32)), w).shape == (2, 4)


def test_an_attribute_error_inside_compute_is_not_disguised():
    class Broken(Op):
        def compute(self, a):
            return a.no_such_attribute

    with pytest.raises(AttributeError, match="no_such_attribute"):
        Broken()(mininet.tensor([1.0]))


def test_the_type_error_comes_before_any_observer_sees_the_op():
    seen = []

    class Watch:
        def begin(self, op, inputs, phase):
            seen.append(op)

        def end(self, token, result):
            pass

    w = Watch()
    add_observer(w)
    try:
        msg = _type_error(lambda: ops.tanh(np.ones(2)))
    finally:
        remove_observer(w)
    assert msg.startswith("Tanh (input 0)") and seen == []


# 2. a second backward through a freed graph ----------------------------------------------
def _leaf(values):
    return Tensor(np.asarray(values, np.float64), dtype="float64", requires_grad=True)


def test_a_second_backward_names_the_cause_and_retain_graph():
    x = _leaf([1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward()
    first = x.grad.numpy().copy()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), first)   # nothing was added


def test_a_constant_still_says_it_does_not_require_grad():
    c = Tensor(np.ones(2)).sum()
    with pytest.raises(RuntimeError, match="does not require grad") as info:
        c.backward()
    assert "second time" not in str(info.value)


def test_grad_through_a_spent_graph():
    x = _leaf([1.0, 2.0])
    y = (x * x).sum()
    grad(y, x)
    with pytest.raises(RuntimeError, match="does not require grad.*second time.*retain_graph"):
        grad(y, x)


def test_a_graph_shared_with_a_freed_output_raises_instead_of_dropping_its_share():
    x = _leaf([0.5, 1.0])
    a = x.exp()
    b, c = (a * 2).sum(), (a * 3).sum()
    b.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        c.backward()   # used to pass, leaving x.grad without c's share


def test_legitimate_second_passes_still_work():
    x = _leaf([0.5, 1.0])
    a = x.exp()
    b, c = (a * 2).sum(), (a * 3).sum()
    b.backward(retain_graph=True)
    c.backward()
    np.testing.assert_allclose(x.grad.numpy(), 5 * np.exp([0.5, 1.0]))

    y = (x * x).sum()   # retain_graph=True twice, then a last pass
    x.grad = None
    for _ in range(3):
        y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * 2 * np.array([0.5, 1.0]))

    s = _leaf(3.0)   # backward on a leaf, twice: accumulates
    s.backward()
    s.backward()
    assert s.grad.numpy() == 2.0

    x.grad = None   # create_graph keeps the graph: a second derivative
    (g,) = grad((x ** 3).sum(), x, create_graph=True)
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * np.array([0.5, 1.0]))

    # outputs sharing only leaves: each has its own graph
    w = _leaf([1.0, 2.0])
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [5.0, 5.0])


def test_lstm_tuple_outputs_freed_by_another_outputs_backward():
    lstm = nn.LSTM(3, 4)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32))
    out, (h, _) = lstm(x)
    out.sum().backward(retain_graph=True)
    h.sum().backward()   # retained: the second output's pass works
    out, (h, _) = lstm(x)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        h.sum().backward()


def test_checkpointed_model_second_backward():
    block = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    loss = checkpoint(block, x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


# 3. a --resume file that is no checkpoint ------------------------------------------------
@pytest.fixture
def good(tmp_path):
    model = build_model("softmax")
    opt = make_optimizer("sgd", model.parameters(), 0.1)
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, opt, 1, {"model": "softmax", "optimizer": "sgd"})
    return path


def _garbage(tmp_path, kind):
    path = tmp_path / f"garbage-{kind}.npz"
    if kind == "text":
        path.write_text("epoch = 3\nthis is not a checkpoint\n")
    elif kind == "random":
        path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
    elif kind == "npz":
        np.savez(path, weights=np.ones(3), labels=np.arange(2))
    elif kind == "pt":
        path = tmp_path / "model.pt"   # torch.save's zip layout
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model/data.pkl", b"\x80\x02}q\x00.")
            z.writestr("model/version", "3\n")
    elif kind == "legacy-pt":
        path = tmp_path / "old.pt"    # torch.save before 1.6: a pickle stream
        path.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), np.ones(3))
        os.replace(path.with_suffix(".npy"), path)
    return path


@pytest.mark.parametrize("kind, words", [
    ("text", ["is not a mininet checkpoint: it is a text file", "'epoch = 3"]),
    ("random", ["is not a mininet checkpoint: it is not a zip archive"]),
    ("empty", ["is not a mininet checkpoint: it is empty"]),
    ("zip", ["is not a mininet checkpoint: it is a zip archive with no header member",
             "notes.txt"]),
    ("npz", ["is not a mininet checkpoint: it is an .npz of arrays", "weights", "labels",
             "without the header member"]),
    ("pt", ["is not a mininet checkpoint: it looks like a PyTorch .pt file",
            "mininet.interop.load_torch_state_dict"]),
    ("legacy-pt", ["looks like a PyTorch .pt file in the legacy format",
                   "mininet.interop.load_torch_state_dict"]),
    ("npy", ["a single .npy array"]),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, kind, words):
    path = _garbage(tmp_path, kind)
    for name, read in ((str(path), lambda: read_checkpoint_header(path)),
                       (path.name, lambda: read_checkpoint_header(path.name,
                                                                  contents=path.read_bytes())),
                       (str(path), lambda: load_checkpoint(path, build_model("softmax")))):
        with pytest.raises(CheckpointError) as info:
            read()
        msg = str(info.value)
        assert msg.startswith(name), (name, msg)
        for w in words:
            assert w in msg, (w, msg)
        assert "allow_pickle" not in msg and "KeyError" not in msg and "BadZipFile" not in msg


def test_a_truncated_checkpoint_is_still_called_truncated(good, tmp_path):
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz: not a mininet checkpoint, or "
                                              "truncated/corrupt"):
        read_checkpoint_header(cut)
    assert read_checkpoint_header(good)["epoch"] == 1   # the real one still reads


def test_train_resume_from_garbage_is_one_clear_line(tmp_path, tiny_mnist):
    path = _garbage(tmp_path, "npz")
    r = cli("train", "mnist", "--data-dir", str(tiny_mnist), "--batch-size", "50",
            "--epochs", "1", "--resume", str(path))
    assert_one_line_error(r, "is not a mininet checkpoint", "without the header member",
                          code=r.returncode)
    assert r.returncode != 0
