"""ONNX export of advanced indexing: x[int arrays / masks] and table[ids] (TakeRows, as
Gather) and x[index] = value (SetItem, as ScatterND) inside a model's forward. The exported
graph passes onnx's full checker and onnxruntime, the independent reference, runs it to
mininet's outputs, at the traced batch size and at another."""
import numpy as np
import pytest

import mininet as mn
from mininet import nn
from mininet.autograd import Tensor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import mininet.onnx as mo   # noqa: E402
from mininet.onnx import OnnxExportError   # noqa: E402

RTOL = ATOL = 1e-5
rng = np.random.default_rng(22)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


class Fn(nn.Module):
    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, nn.Parameter(Tensor(v)))

    def forward(self, *xs):
        return self.fn(self, *xs)


def run_both(model, example, *arrays, **kw):
    """Export (checked), then run mininet and onnxruntime on arrays; returns op types."""
    path = kw.pop("path")
    proto = mo.export(model, example, path, **kw)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})
    with mn.no_grad():
        want = model(*[Tensor(a) for a in arrays])
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w.numpy(), rtol=RTOL, atol=ATOL)
    return {n.op_type for n in proto.graph.node}


# reads: TakeRows -> Gather ----------------------------------------------------------------------
def _reads(m, x):
    """x (B, 5, 6): arrays on the non-batch axes, and on a static weight."""
    w = m.w
    return (x[:, [4, 0, 0]], x[:, mn.tensor(np.array([[1, 2], [3, 1]]))], x[..., [5, 1]] * 2.0,
            w[[2, 0, 2]], w[np.array([True, False, True, True])], w[[0, 3], [1, 2]],
            x[:, 1:4][:, [2, 0]].exp())


@pytest.mark.parametrize("dynamic", [True, False])
def test_array_reads_export_as_gather(dynamic, tmp_path):
    model = Fn(_reads, w=rand(4, 3))
    types = run_both(model, Tensor(rand(3, 5, 6)), rand(3 if not dynamic else 7, 5, 6),
                     path=tmp_path / "reads.onnx", dynamic_batch=dynamic)
    assert "Gather" in types


def test_embedding_style_rows_read_the_index_input(tmp_path):
    """table[ids] with ids the model's input: Gather by that input, not a constant."""
    model = Fn(lambda m, ids: m.table[ids].sum(-1), table=rand(10, 4))
    ids = np.array([[1, 9, 3], [0, 0, 7]], dtype=np.int64)
    path = tmp_path / "emb.onnx"
    types = run_both(model, Tensor(ids), np.array([[2, 4, 4], [8, 1, 0], [5, 5, 5]]),
                     path=path)
    assert "Gather" in types
    graph = onnx.load(str(path)).graph
    gather = next(n for n in graph.node if n.op_type == "Gather")
    assert not any(i.name == gather.input[1] for i in graph.initializer)


# writes: SetItem -> ScatterND -------------------------------------------------------------------
def _writes(m, x):
    """x (B, 5, 6): writes into copies of x and of a weight (keep the batch axis whole)."""
    h = x * 2.0
    h[:, 1] = 0.0                              # a row of every sample
    h[:, :, ::2] = m.w[0, :3]                  # stepped slice, broadcast value
    h[:, [0, 3], 4] = m.w[1, :2] * 3.0         # int array + int
    h[:, 2:4, 1:3] = h[:, :2, :2].exp()        # the value read from h itself
    t = m.w * 1.0
    t[[1, 1, 2]] = mn.tensor(np.arange(18, dtype=np.float32).reshape(3, 6))   # repeats: last wins
    t[t > 0.5] = -1.0                          # a mask (from the weights: a constant)
    return h, t.sum(0) + h.sum(1)


@pytest.mark.parametrize("dynamic", [True, False])
def test_writes_export_as_scatter(dynamic, tmp_path):
    model = Fn(_writes, w=rand(3, 6))
    types = run_both(model, Tensor(rand(2, 5, 6)), rand(5 if dynamic else 2, 5, 6),
                     path=tmp_path / "writes.onnx", dynamic_batch=dynamic)
    assert "ScatterND" in types


def test_inplace_arithmetic_exports(tmp_path):
    def fn(m, x):
        h = x @ m.w
        h.mul_(2.0).add_(m.b).clamp_(-1.0, 1.0)
        out = mn.zeros(x.shape[0], 3)
        out.copy_(h[:, :3])
        return out, h
    model = Fn(fn, w=rand(4, 5), b=rand(5))
    types = run_both(model, Tensor(rand(3, 4)), rand(6, 4), path=tmp_path / "arith.onnx")
    assert {"Mul", "Add", "Clip"} <= types


def test_static_write_with_the_index_on_the_batch_axis(tmp_path):
    def fn(m, x):
        h = x + 0.0
        h[[0, 2], 1] = m.w
        return h
    model = Fn(fn, w=rand(2, 3))
    run_both(model, Tensor(rand(3, 2, 3)), rand(3, 2, 3), path=tmp_path / "s.onnx",
             dynamic_batch=False)
    with pytest.raises(OnnxExportError, match="SetItem.*batch axis"):
        mo.export(model, Tensor(rand(3, 2, 3)), tmp_path / "d.onnx")


def test_writing_into_an_input_or_a_parameter_is_refused(tmp_path):
    def into_input(m, x):
        x[:, 0] = 1.0
        return x * 2.0

    def into_weight(m, x):
        m.w[0] = 1.0
        return x @ m.w
    for fn, what in ((into_input, "an input"), (into_weight, "a parameter")):
        with pytest.raises(OnnxExportError, match=f"writes in place into {what}"):
            mo.export(Fn(fn, w=rand(3, 3)), Tensor(rand(2, 3)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_a_data_dependent_mask_is_refused_with_a_dynamic_batch(tmp_path):
    def fn(m, x):
        h = x * 1.0
        h[x > 0] = 0.0     # the mask comes from the data: frozen into the graph
        return h
    with pytest.raises(OnnxExportError, match="changes with the input"):
        mo.export(Fn(fn), Tensor(rand(4, 3)), tmp_path / "m.onnx")
