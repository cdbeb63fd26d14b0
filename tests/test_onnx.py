"""ONNX export (mininet.onnx): every exported graph passes onnx's full checker and
onnxruntime, the independent reference, runs it to mininet's outputs, at a batch size
other than the traced one."""
import os
import sys

import numpy as np
import pytest

import mininet as mn
from mininet import nn, ops
from mininet.autograd import Op, Tensor
from mininet.models import MLP, LanguageModel, MLPResNet, ResNet9, SoftmaxRegression
from mininet.models.mlp import CNN
from mininet.nn import functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import mininet.onnx as mo   # noqa: E402
from mininet.onnx import OnnxExportError   # noqa: E402

RTOL = ATOL = 1e-5   # float32: mininet's kernels and onnxruntime's differ in summation order


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1   # the machine's cores are shared
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def reference(model, *arrays):
    """mininet's outputs in eval mode, flattened as the export flattens them."""
    model.eval()
    with mn.no_grad():
        out = model(*[Tensor(a) for a in arrays])
    return [v.numpy() for v in mo.trace.flatten_values(out)]


def export_checked(model, example, path, **kw):
    proto = mo.export(model, example, path, **kw)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return proto


def assert_runs_like(path, model, *arrays, rtol=RTOL, atol=ATOL):
    sess = session(path)
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})
    want = reference(model, *arrays)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _perturb_buffers(model, rng):
    """Running statistics other than the initial zeros and ones, so that they matter."""
    for _, name, owner in model._buffer_slots():
        old = getattr(owner, name)
        value = rng.uniform(0.5, 1.5, old.shape) if name == "running_var" else \
            rng.standard_normal(old.shape) * 0.3
        setattr(owner, name, Tensor(value.astype(np.float32)))


# the models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "mlp", "resnet", "cnn", "resnet9"])
def test_models_run_in_onnxruntime_as_in_mininet_at_another_batch(name, tmp_path):
    mn.init.manual_seed(1)
    rng = np.random.default_rng(1)
    shape = {"cnn": (1, 28, 28), "resnet9": (3, 32, 32)}.get(name, (784,))
    model = {"softmax": SoftmaxRegression, "mlp": MLP, "resnet": MLPResNet, "cnn": CNN,
             "resnet9": ResNet9}[name]()
    _perturb_buffers(model, rng)
    model.train()
    path = tmp_path / f"{name}.onnx"
    proto = export_checked(model, Tensor(rand(rng, 3, *shape)), path)
    assert model.training and all(m.training for m in model.modules())   # flags restored
    for batch in (1, 7):
        assert_runs_like(path, model, rand(rng, batch, *shape))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(shape)
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # parameters (and buffers) are initializers named by the module tree
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for pname, p in model.named_parameters():
        if pname in inits:
            np.testing.assert_array_equal(inits[pname], p.numpy())
    assert any(pname in inits for pname, _ in model.named_parameters())
    # no shape constant holds the traced batch size: reshapes carry -1
    for node in proto.graph.node:
        if node.op_type == "Reshape":
            target = inits.get(node.input[1])
            assert target is None or (3 not in target.tolist() and -1 in target.tolist())


def test_batch_norm_and_layer_norm_export_as_single_ops(tmp_path):
    mn.init.manual_seed(2)
    rng = np.random.default_rng(2)
    model = MLPResNet(in_dim=20, hidden=16, num_blocks=1)
    _perturb_buffers(model, rng)
    proto = export_checked(model, Tensor(rand(rng, 4, 20)), tmp_path / "r.onnx")
    types = [n.op_type for n in proto.graph.node]
    assert types.count("BatchNormalization") == 2 and "Pow" not in types
    names = {i.name for i in proto.graph.initializer}
    assert any(n.endswith("running_mean") for n in names) and any(n.endswith("running_var")
                                                                  for n in names)
    assert_runs_like(tmp_path / "r.onnx", model, rand(rng, 9, 20))


@pytest.mark.parametrize("seq_model", ["lstm", "rnn", "transformer"])
def test_language_model(seq_model, tmp_path):
    """(seq, batch) token ids, batch on axis 1; every output (logits and the final state)."""
    mn.init.manual_seed(3)
    rng = np.random.default_rng(3)
    model = LanguageModel(16, 50, 24, num_layers=2, seq_model=seq_model)
    path = tmp_path / "lm.onnx"
    proto = export_checked(model, Tensor(rng.integers(0, 50, (7, 3))), path, dynamic_batch=1)
    types = [n.op_type for n in proto.graph.node]
    if seq_model == "lstm":
        assert types.count("LSTM") == 2
    elif seq_model == "rnn":
        assert types.count("RNN") == 2
    else:
        assert types.count("LayerNormalization") == 4 and "Softmax" in types
    for batch in (1, 5):
        got = assert_runs_like(path, model, rng.integers(0, 50, (7, batch)))
        assert got[0].shape == (7 * batch, 50)
    assert len(proto.graph.output) == {"lstm": 3, "rnn": 2, "transformer": 1}[seq_model]


class LSTMWithState(nn.Module):
    """An LSTM given its initial state (three graph inputs)."""

    def __init__(self, by_keyword=False):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, num_layers=2)
        self.by_keyword = by_keyword

    def forward(self, x, h0, c0):
        if self.by_keyword:
            out, (h, c) = self.lstm(x, state=(h0, c0))
        else:
            out, (h, c) = self.lstm(x, (h0, c0))
        return out, h, c


@pytest.mark.parametrize("by_keyword", [False, True])
def test_lstm_with_initial_state(by_keyword, tmp_path):
    """As a positional argument the module maps to ONNX's LSTM with initial_h/initial_c; as
    a keyword (hidden from the module hook) the traced ops export one by one, each layer
    still as an LSTM op."""
    mn.init.manual_seed(4)
    rng = np.random.default_rng(4)
    model = LSTMWithState(by_keyword)
    ex = (rand(rng, 4, 3, 5), rand(rng, 2, 3, 6), rand(rng, 2, 3, 6))
    path = tmp_path / "lstm.onnx"
    proto = export_checked(model, tuple(Tensor(a) for a in ex), path, dynamic_batch=1,
                           input_names=["x", "h0", "c0"], output_names=["y", "h", "c"])
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 2
    inits = {i.name for i in proto.graph.initializer}
    assert ("lstm.cells.0.W" in inits) != by_keyword
    assert_runs_like(path, model, rand(rng, 4, 6, 5), rand(rng, 2, 6, 6), rand(rng, 2, 6, 6))


class GRUs(nn.Module):
    """nn.GRU with and without a state (the module as ONNX's GRU; by keyword, as the
    traced GRULayer ops), and a GRUCell (its ops one by one)."""

    def __init__(self, bias):
        super().__init__()
        self.gru = nn.GRU(5, 4, num_layers=2, bias=bias)
        self.cell = nn.GRUCell(5, 4, bias=bias)

    def forward(self, x, h0):
        out, hn = self.gru(x)
        out2, hn2 = self.gru(x, h0=hn * 0.5 + h0)
        out3, hn3 = self.gru(x, h0)
        return out, hn, out2, hn2, out3, hn3, self.cell(x[0])


@pytest.mark.parametrize("bias", [True, False])
def test_gru(bias, tmp_path):
    mn.init.manual_seed(15)
    rng = np.random.default_rng(15)
    model = GRUs(bias)
    path = tmp_path / "gru.onnx"
    proto = export_checked(model, (Tensor(rand(rng, 4, 3, 5)), Tensor(rand(rng, 2, 3, 4))),
                           path, dynamic_batch=1)
    gru_ops = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(gru_ops) == 6   # two layers, three calls
    names = [i.name for i in proto.graph.initializer]
    for k in range(2):   # ONNX-layout weights, once for both calls of the module
        assert [n for n in names if n.startswith(f"gru.cells.{k}.") and n[-2:] in
                (".W", ".R", ".B")] == [f"gru.cells.{k}.{w}" for w in "WRB"[:3 if bias else 2]]
    assert_runs_like(path, model, rand(rng, 4, 6, 5), rand(rng, 2, 6, 4))


def test_lstm_weights_follow_onnx_layout_against_torch(tmp_path):
    """The exported W, R, B are PyTorch's weight_ih/hh (gates i, f, g, o) reordered to
    ONNX's i, o, f, c, checked against torch's own LSTM."""
    torch = pytest.importorskip("torch")
    mn.init.manual_seed(5)
    rng = np.random.default_rng(5)
    model = nn.LSTM(3, 4)
    proto = mo.to_model(model, Tensor(rand(rng, 2, 2, 3)), dynamic_batch=1)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    t = torch.nn.LSTM(3, 4)
    cell = model.cells[0]
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(cell.W_ih.numpy().T))
        t.weight_hh_l0.copy_(torch.tensor(cell.W_hh.numpy().T))
        t.bias_ih_l0.copy_(torch.tensor(cell.bias_ih.numpy()))
        t.bias_hh_l0.copy_(torch.tensor(cell.bias_hh.numpy()))
    order = np.concatenate([np.arange(k * 4, k * 4 + 4) for k in (0, 3, 1, 2)])
    np.testing.assert_array_equal(inits["cells.0.W"][0], t.weight_ih_l0.detach().numpy()[order])
    np.testing.assert_array_equal(inits["cells.0.R"][0], t.weight_hh_l0.detach().numpy()[order])
    x = rand(rng, 2, 5, 3)   # the traced sequence length, another batch
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})
    want, (h, c) = t(torch.tensor(x))
    np.testing.assert_allclose(got[0], want.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[2], c.detach().numpy(), rtol=RTOL, atol=ATOL)


class Cells(nn.Module):
    """Cells without a state (zeros of the batch's size), and an RNN whose state comes as a
    keyword (exported op by op: each layer is one RNNLayer op, an ONNX RNN)."""

    def __init__(self):
        super().__init__()
        self.lstm_cell = nn.LSTMCell(5, 4)
        self.rnn_cell = nn.RNNCell(5, 4, nonlinearity="relu")
        self.rnn = nn.RNN(5, 4, num_layers=2)

    def forward(self, x, seq):
        h, c = self.lstm_cell(x)
        out, hn = self.rnn(seq, h0=ops.stack([h, c], 0))
        return h, c, self.rnn_cell(x), out, hn


def test_cells_and_an_unrolled_rnn(tmp_path):
    mn.init.manual_seed(12)
    rng = np.random.default_rng(12)
    model = Cells()
    path = tmp_path / "cells.onnx"
    proto = export_checked(model, (Tensor(rand(rng, 3, 5)), Tensor(rand(rng, 4, 3, 5))), path,
                           dynamic_batch=(0, 1))
    assert [n.op_type for n in proto.graph.node].count("RNN") == 2
    assert_runs_like(path, model, rand(rng, 6, 5), rand(rng, 4, 6, 5))


def test_outputs_that_are_inputs_parameters_or_repeated(tmp_path):
    rng = np.random.default_rng(13)
    model = Fn(lambda m, x: (x, m.w, ops.relu(x), x * 2.0, m.w),
               w=Tensor(rand(rng, 3)))
    model2 = Fn(lambda m, x: (lambda y: (y, y))(ops.relu(x)))
    for k, mod in enumerate((model, model2)):
        path = tmp_path / f"o{k}.onnx"
        proto = export_checked(mod, Tensor(rand(rng, 2, 3)), path, dynamic_batch=False)
        assert len({o.name for o in proto.graph.output}) == len(proto.graph.output)
        assert_runs_like(path, mod, rand(rng, 2, 3))


@pytest.mark.parametrize("opset", [15, 17, 18, 21])
def test_transformer_layer_across_opsets(opset, tmp_path):
    """LayerNormalization from opset 17 (composed before), reduce axes as inputs from 18."""
    mn.init.manual_seed(6)
    rng = np.random.default_rng(6)
    model = nn.TransformerLayer(16, 4, 32, dropout=0.3, causal=True)
    path = tmp_path / "tl.onnx"
    proto = export_checked(model, Tensor(rand(rng, 6, 3, 16)), path, opset=opset,
                           dynamic_batch=1)
    types = [n.op_type for n in proto.graph.node]
    assert ("LayerNormalization" in types) == (opset >= 17)
    assert "Dropout" not in types
    assert proto.opset_import[0].version == opset
    assert_runs_like(path, model, rand(rng, 6, 5, 16))


def test_float64_transformer_layer(tmp_path):
    mn.init.manual_seed(14)
    rng = np.random.default_rng(14)
    model = nn.TransformerLayer(8, 2, 16, dtype="float64")
    path = tmp_path / "t64.onnx"
    export_checked(model, Tensor(rng.standard_normal((5, 3, 8))), path, dynamic_batch=1)
    assert_runs_like(path, model, rng.standard_normal((5, 4, 8)), rtol=1e-10, atol=1e-11)


def test_attention_batch_first_and_cross_attention(tmp_path):
    mn.init.manual_seed(7)
    rng = np.random.default_rng(7)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiHeadAttention(8, 2, batch_first=True)

        def forward(self, q, kv):
            return self.attn(q, kv)

    model = Cross()
    path = tmp_path / "a.onnx"
    export_checked(model, (Tensor(rand(rng, 2, 3, 8)), Tensor(rand(rng, 2, 5, 8))), path)
    assert_runs_like(path, model, rand(rng, 4, 3, 8), rand(rng, 4, 5, 8))


# real MNIST ----------------------------------------------------------------------------------
def mnist_folder():
    folder = os.environ.get("MININET_DATA") or "/work/shared/data/mnist"
    if not os.path.exists(os.path.join(folder, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"real MNIST not found in {folder} (set MININET_DATA)")
    return folder


def mnist(split):
    from mininet.data import MNISTDataset
    ds = MNISTDataset.load(split, path=mnist_folder(), download=False, flatten=False)
    return ds.images, ds.labels


@pytest.mark.parametrize("name", ["softmax", "mlp", "cnn"])
def test_models_on_real_mnist_images(name, tmp_path):
    images, _ = mnist("test")
    mn.init.manual_seed(8)
    model = {"softmax": SoftmaxRegression, "mlp": MLP, "cnn": CNN}[name]()
    x = images[:64] if name == "cnn" else images[:64].reshape(64, -1)
    path = tmp_path / "m.onnx"
    export_checked(model, Tensor(x[:10]), path)
    assert_runs_like(path, model, x[10:64])


def test_cnn_trained_on_mnist_keeps_its_accuracy_in_onnxruntime(tmp_path):
    """A CNN trained 300 steps on the 5k subset, exported: the same predictions on the 10k
    test set in onnxruntime as in mininet, apart from near ties of the top two logits."""
    images, labels = mnist("train")
    test_x, test_y = mnist("test")
    mn.init.manual_seed(9)
    rng = np.random.default_rng(9)
    model = CNN(channels=(8, 16), hidden=64)
    opt = mn.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.SoftmaxLoss()
    model.train()
    x5k, y5k = images[:5000], labels[:5000]
    for step in range(300):
        idx = rng.integers(0, 5000, 50)
        opt.zero_grad()
        loss = loss_fn(model(Tensor(x5k[idx])), y5k[idx])
        loss.backward()
        opt.step()
    path = tmp_path / "cnn.onnx"
    mo.export(model, Tensor(test_x[:32]), path)
    model.eval()
    with mn.no_grad():
        ours = np.concatenate([model(Tensor(test_x[i:i + 1000])).numpy()
                               for i in range(0, 10000, 1000)])
    theirs = session(path).run(None, {"input": test_x})[0]
    assert theirs.shape == (10000, 10)
    np.testing.assert_allclose(theirs, ours, rtol=RTOL, atol=ATOL)
    acc_ours = np.mean(ours.argmax(1) == test_y)
    acc_theirs = np.mean(theirs.argmax(1) == test_y)
    assert acc_ours > 0.9   # it learned something: the comparison means something
    differ = ours.argmax(1) != theirs.argmax(1)
    top2 = np.sort(ours, 1)[:, -2:]
    assert np.all(top2[differ, 1] - top2[differ, 0] < 1e-4)
    assert abs(acc_ours - acc_theirs) <= differ.sum() / 10000


# op coverage ---------------------------------------------------------------------------------
class Fn(nn.Module):
    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, nn.Parameter(v))

    def forward(self, *xs):
        return self.fn(self, *xs)


def _getitems(m, x):
    return (x[:, 1:5:2], x[:, -1], x[:, None, ::-1], x[..., 0], x[1:, ::-2], x[-2:], x[:-1],
            x[::-1], ops.flip(x, (0, 1)), x[:, 2], x[1], x[-1, 3:])


def _shapes(m, x):
    parts = list(ops.split(x, 1))
    return (ops.stack(parts[::-1], 1), ops.cat([x, x * 2.0], 1), ops.permute(
        ops.reshape(x, (x.shape[0], 2, 3)), (2, 0, 1)), ops.flatten(ops.reshape(x, (-1, 3, 2))),
        x.transpose(), ops.broadcast_to(ops.reshape(x, (x.shape[0], 1, 6)), (x.shape[0], 4, 6)),
        ops.pad(x, ((0, 0), (2, 1))))


def _reductions(m, x):
    return (x.sum(1), x.sum(), x.max(axis=1), ops.logsumexp(x, (1,)), x.mean(1, keepdim=True),
            ops.norm2(x, (1,)), (x * 0.5 + 1.0).prod(1), x.cumsum(1), ops.softmax(x, 1),
            ops.logsoftmax(x, 1), x.amax(0), x.sum((0, 1), keepdim=True))


def _elementwise(m, x):
    p = ops.abs(x) + 0.5
    return (ops.exp(x), ops.log(p), ops.log1p(p), ops.expm1(x), ops.sqrt(p), x.clip(-0.5, 0.7),
            x.clip(min=0.1), x ** 3, x ** 2, p ** -0.5, 1.0 / p, x / 3.0, 2.0 - x, -x,
            ops.maximum(x, mn.Tensor(np.float32(0.1))), ops.erf(x), F.gelu(x),
            F.gelu(x, approximate="tanh"), ops.sigmoid(x), ops.tanh(x), ops.relu(x),
            F.leaky_relu(x), F.silu(x), F.elu(x, 0.7), F.softplus(x),
            F.softplus(x, threshold=0.5), x * x + x / p - x, p ** mn.Tensor(np.float32(1.5)),
            x.double(), ops.clone(x))


def _gathers(m, x):
    idx = np.broadcast_to(np.array([[0, 5, 2]]), (x.shape[0], 3))   # the same for each sample
    return (x.index_select(1, np.array([4, 0, 0, 3])), x.gather(1, idx),
            ops.masked_fill(x, np.array([True, False, True, False, False, True]), -2.0),
            ops.where(np.array([1, 0, 0, 1, 1, 0]), x, x * 2.0))


def _nn(m, x):
    y, _ = ops.batch_norm(x, m.w, m.b, (0,))
    return (y, ops.linear(x, m.w2), ops.linear(ops.reshape(x, (x.shape[0], 2, 3)), m.w3, m.b3),
            F.layer_norm(x, (6,)) if hasattr(F, "layer_norm") else x)


def _conv(m, x):
    return (ops.conv(x, m.k1, m.kb, stride=2, padding=1),
            ops.conv(x, m.k2, None, padding=(2, 1), dilation=2, groups=2),
            ops.max_pool2d(x, 3, stride=2, padding=1), ops.avg_pool2d(x, 2),
            ops.avg_pool2d(x, 3, stride=1, padding=1), ops.max_pool2d(x, 2, dilation=2))


def _cells(m, x):
    h = ops.tanh(x[:, :3] * 0.5)
    lstm_h, lstm_c = ops.lstm_gates(ops.linear(x, m.wz), h)
    out, hn, cn = ops.lstm_layer(ops.stack([ops.linear(x, m.wz)] * 4, 0), m.whh, h, lstm_c)
    return lstm_h, lstm_c, out, hn, cn


CASES = {
    "getitem": (_getitems, (6,), {}),
    "shapes": (_shapes, (6,), {}),
    "reductions": (_reductions, (6,), {}),
    "elementwise": (_elementwise, (6,), {}),
    "gathers": (_gathers, (6,), {}),
    "nn": (_nn, (6,), {"w": (6,), "b": (6,), "w2": (6, 4), "w3": (3, 5), "b3": (5,)}),
    "conv": (_conv, (4, 9, 9), {"k1": (5, 4, 3, 3), "kb": (5,), "k2": (6, 2, 3, 2)}),
    "cells": (_cells, (6,), {"wz": (6, 12), "whh": (3, 12)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_coverage(case, tmp_path):
    fn, shape, params = CASES[case]
    rng = np.random.default_rng(10)
    model = Fn(fn, **{k: Tensor(rand(rng, *s) * 0.5) for k, s in params.items()})
    path = tmp_path / f"{case}.onnx"
    proto = export_checked(model, Tensor(rand(rng, 4, *shape)), path)
    assert_runs_like(path, model, rand(rng, 6, *shape))
    assert len(proto.graph.output) == len(reference(model, rand(rng, 2, *shape)))


def test_softmax_cross_entropy_reads_labels_from_an_input(tmp_path):
    mn.init.manual_seed(11)
    rng = np.random.default_rng(11)

    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLP(12, 8, 5)
            self.loss = nn.SoftmaxLoss()

        def forward(self, x, y):
            return self.loss(self.net(x), y)

    model = WithLoss()
    path = tmp_path / "loss.onnx"
    proto = export_checked(model, (Tensor(rand(rng, 4, 12)), Tensor(rng.integers(0, 5, 4))), path)
    assert "SoftmaxCrossEntropyLoss" in [n.op_type for n in proto.graph.node]
    assert_runs_like(path, model, rand(rng, 9, 12), rng.integers(0, 5, 9))


def test_static_batch_and_float64(tmp_path):
    rng = np.random.default_rng(12)
    model = Fn(lambda m, x: ops.relu(x @ m.w) - x.mean(0), w=Tensor(rng.standard_normal((5, 5))))
    x = rng.standard_normal((3, 5))
    with pytest.raises(OnnxExportError, match="depends on the batch size"):
        mo.to_model(model, Tensor(x))
    path = tmp_path / "s.onnx"
    proto = export_checked(model, Tensor(x), path, dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert_runs_like(path, model, rng.standard_normal((3, 5)), rtol=1e-12, atol=1e-12)


# errors --------------------------------------------------------------------------------------
class Mystery(Op):
    def compute(self, a):
        return a.exp()


class MysteryLayer(nn.Module):
    def forward(self, x):
        return Mystery()(x)


def test_an_unmapped_op_names_the_op_and_its_module_and_writes_nothing(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), MysteryLayer())
    path = tmp_path / "m.onnx"
    with pytest.raises(OnnxExportError, match=r"no mapping for op Mystery .*module "
                                              r"'modules_list\.1' \(MysteryLayer\)"):
        mo.export(model, Tensor(np.ones((2, 4), np.float32)), path)
    assert os.listdir(tmp_path) == []


def test_a_constant_computed_from_the_data_is_refused():
    model = Fn(lambda m, x: ops.where(x > 0, x, x * 0.1))   # the mask is not an op
    with pytest.raises(OnnxExportError, match="changes with the input"):
        mo.to_model(model, Tensor(np.arange(-6, 6, dtype=np.float32).reshape(4, 3)))


def test_bad_arguments_are_named():
    model = SoftmaxRegression(4, 2)
    x = Tensor(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="opset must be an integer from 15"):
        mo.to_model(model, x, opset=9)
    with pytest.raises(ValueError, match="output_names must be 1"):
        mo.to_model(model, x, output_names=["a", "b"])
    with pytest.raises(ValueError, match="batch axis 2 is out of range"):
        mo.to_model(model, x, dynamic_batch=2)
    with pytest.raises(TypeError, match="must be a mininet.nn.Module"):
        mo.to_model(lambda x: x, x)


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'mininet-dl\[onnx\]'"):
        mo.to_model(SoftmaxRegression(4, 2), Tensor(np.ones((2, 4), np.float32)))


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old model")
    model = SoftmaxRegression(4, 2)

    def half_then_full_disk(f, data):
        f.write(data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.modules["mininet.onnx.export"], "write_chunks", half_then_full_disk)
    with pytest.raises(OSError, match="model.onnx"):
        mo.export(model, Tensor(np.ones((2, 4), np.float32)), path)
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_the_written_file_is_the_returned_model(tmp_path):
    model = MLP(6, 5, 3)
    path = tmp_path / "sub" / "m.onnx"
    proto = mo.export(model, Tensor(np.ones((2, 6), np.float32)), path)
    assert path.read_bytes() == proto.SerializeToString()
    assert os.listdir(path.parent) == ["m.onnx"]


@pytest.mark.parametrize("opset", [15, 17])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_op_over_two_dims_across_opsets(opset, affine, tmp_path):
    """The fused LayerNorm op (nn.LayerNorm, F.layer_norm): LayerNormalization from opset
    17 (a ones scale where there is no weight), composed before."""
    rng = np.random.default_rng(21)
    keep = {"both": ("w", "b"), "weight": ("w",), "bias": ("b",), "none": ()}[affine]
    params = {k: Tensor(rand(rng, 3, 4)) for k in keep}
    model = Fn(lambda m, x: F.layer_norm(x, (3, 4), getattr(m, "w", None), getattr(m, "b", None),
                                         1e-3), **params)
    path = tmp_path / "ln.onnx"
    proto = export_checked(model, Tensor(rand(rng, 2, 3, 4)), path, opset=opset)
    assert ("LayerNormalization" in [n.op_type for n in proto.graph.node]) == (opset >= 17)
    assert_runs_like(path, model, rand(rng, 5, 3, 4))
