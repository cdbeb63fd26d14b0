"""PyTorch habits mininet once lacked, each against PyTorch itself: Tensor.mm, format() of
a tensor, batch_first recurrent layers (forward, gradients, torch weights, ONNX export),
Module.double/float/to(dtype), dropout2d on 2-D input, a numpy array given to a loss, and
full() / min() of bool tensors."""
import warnings

import numpy as np
import pytest

import mininet
import mininet.nn as nn
import mininet.nn.functional as F
from mininet import Tensor

from conftest import torch

pytestmark = pytest.mark.torch
F64 = "float64"


# Tensor.mm ----------------------------------------------------------------------------------
def test_mm_matches_torch_and_its_gradient():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    x, w = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    y, ty = x.mm(w), tx.mm(tw)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.matmul(w).numpy(), a @ b, rtol=1e-12)


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((3,), (3, 2)), ((2, 2, 2), (2, 2))])
def test_mm_refuses_what_torch_refuses_naming_the_shapes(shapes):
    sa, sb = shapes
    with pytest.raises(RuntimeError):
        torch.ones(sa).mm(torch.ones(sb))
    with pytest.raises(ValueError, match=r"mm: .*" + str(sa).replace("(", r"\(").replace(")", r"\)")):
        mininet.ones(*sa).mm(mininet.ones(*sb))


# format ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1.5, -2.0, 3, True])
@pytest.mark.parametrize("spec", ["", "+.2f", ".1f", ">8"])
def test_format_of_a_0d_tensor_as_torch(value, spec):
    dtype = {bool: "bool", int: "int64"}.get(type(value), F64)
    tdtype = {bool: torch.bool, int: torch.int64}.get(type(value), torch.float64)
    assert format(mininet.tensor(value, dtype=dtype), spec) == format(
        torch.tensor(value, dtype=tdtype), spec)


def test_format_of_larger_tensors_as_torch():
    for shape in [(1,), (2,), (1, 1)]:
        with pytest.raises(TypeError, match="unsupported format string passed to Tensor.__format__"):
            format(torch.ones(shape), ".2f")
        with pytest.raises(TypeError, match="unsupported format string passed to Tensor.__format__"):
            format(mininet.ones(*shape), ".2f")
        t = mininet.ones(*shape)
        assert format(t, "") == str(t) == "{}".format(t)


# batch_first ----------------------------------------------------------------------------------
TORCH_RNN = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


@pytest.mark.parametrize("kind", list(TORCH_RNN))
@pytest.mark.parametrize("with_state", [False, True])
def test_batch_first_forward_and_gradients_match_torch(kind, with_state):
    from mininet.interop import load_torch_state_dict
    torch.manual_seed(0)
    t = TORCH_RNN[kind](4, 5, num_layers=2, batch_first=True).double()
    m = getattr(nn, kind)(4, 5, num_layers=2, batch_first=True, dtype=F64)
    load_torch_state_dict(m, t)
    rng = np.random.default_rng(1)
    xa = rng.standard_normal((3, 7, 4))   # (batch, seq, feature)
    h0, c0 = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    x, tx = Tensor(xa, requires_grad=True), torch.tensor(xa, requires_grad=True)
    if not with_state:
        args, targs = (), ()
    elif kind == "LSTM":
        args, targs = ((Tensor(h0), Tensor(c0)),), ((torch.tensor(h0), torch.tensor(c0)),)
    else:
        args, targs = (Tensor(h0),), (torch.tensor(h0),)
    y, state = m(x, *args)
    ty, tstate = t(tx, *targs)
    assert tuple(y.shape) == tuple(ty.shape) == (3, 7, 5)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-9, atol=1e-12)
    h, th = (state[0], tstate[0]) if kind == "LSTM" else (state, tstate)
    assert tuple(h.shape) == (2, 3, 5)   # states stay (layers, batch, hidden)
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-9, atol=1e-12)
    wy = rng.standard_normal((3, 7, 5))
    ((y * Tensor(wy)).sum() + h.sum()).backward()
    ((ty * torch.tensor(wy)).sum() + th.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(m.cells[0].W_ih.grad.numpy(), t.weight_ih_l0.grad.numpy().T,
                               rtol=1e-8, atol=1e-11)


def test_batch_first_checks_name_the_layout():
    lstm = nn.LSTM(4, 5, batch_first=True)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, features\)"):
        lstm(mininet.ones(3, 4))
    with pytest.raises(ValueError, match="features, expected 4"):
        lstm(mininet.ones(2, 3, 6))


def test_torch_weights_refuse_a_batch_first_mismatch_only():
    from mininet.interop import TorchWeightsError, load_torch_state_dict
    t = torch.nn.GRU(3, 4, batch_first=True)
    load_torch_state_dict(nn.GRU(3, 4, batch_first=True), t)   # agreeing: loads
    with pytest.raises(TorchWeightsError, match="batch_first=True in torch, batch_first=False"):
        load_torch_state_dict(nn.GRU(3, 4), t)
    with pytest.raises(TorchWeightsError, match="batch_first=False in torch, batch_first=True"):
        load_torch_state_dict(nn.GRU(3, 4, batch_first=True), torch.nn.GRU(3, 4))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_batch_first_exports_to_onnx(kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import mininet.onnx as mo

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, kind)(4, 5, num_layers=2, batch_first=True)

        def forward(self, x):
            out, state = self.rnn(x)
            return out, state[0] if kind == "LSTM" else state

    mininet.manual_seed(3)
    model = Net().eval()
    rng = np.random.default_rng(3)
    path = tmp_path / "rnn.onnx"
    proto = mo.export(model, (Tensor(rng.standard_normal((3, 6, 4)).astype(np.float32)),), path,
                      dynamic_batch=0)
    assert [n.op_type for n in proto.graph.node].count(kind) == 2   # still one op per layer
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((5, 6, 4)).astype(np.float32)   # another batch size
    got = sess.run(None, {sess.get_inputs()[0].name: x})
    with mininet.no_grad():
        want = [v.numpy() for v in model(Tensor(x))]
    assert got[0].shape == (5, 6, 5) and got[1].shape == (2, 5, 5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# Module dtype conversion ------------------------------------------------------------------------
def _model(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.BatchNorm1d(4))


@pytest.mark.parametrize("how", ["double", "to_dtype", "to_device_dtype", "to_kw"])
def test_module_dtype_conversion_in_place_as_torch(how):
    calls = {"double": lambda m, L: m.double(),
             "to_dtype": lambda m, L: m.to(L.float64),
             "to_device_dtype": lambda m, L: m.to(L.device("cpu") if hasattr(L, "device") else "cpu",
                                                  L.float64),
             "to_kw": lambda m, L: m.to(dtype=L.float64)}
    for lib in (mininet, torch):
        m = _model(lib)
        params = list(m.parameters())
        assert calls[how](m, lib) is m
        assert all(p.dtype == lib.float64 for p in m.parameters())
        assert [id(p) for p in m.parameters()] == [id(p) for p in params]   # the same Parameters
        dtypes = {n: b.dtype for n, b in m.named_buffers()}
        assert [str(d).replace("torch.", "") for d in dtypes.values()] == \
            ["float64", "float64", "int64"][:len(dtypes)]   # num_batches_tracked stays int64
        y = m(lib.ones(2, 3, dtype=lib.float64))
        assert y.dtype == lib.float64
        y.sum().backward()
        assert m[0].weight.grad.dtype == lib.float64
        assert m.float() is m and all(p.dtype == lib.float32 for p in m.parameters())
        assert m[0].weight.grad.dtype == lib.float32   # torch converts .grad too
    with pytest.raises(TypeError, match="floating point"):
        torch.nn.Linear(2, 2).to(torch.int64)
    with pytest.raises(TypeError, match="floating point"):
        nn.Linear(2, 2).to(mininet.int64)


# dropout2d on 2-D input --------------------------------------------------------------------------
def test_dropout2d_on_2d_input_warns_and_drops_elements_as_torch():
    for lib, Fn in ((torch, torch.nn.functional), (mininet, F)):
        lib.manual_seed(0)
        with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
            y = Fn.dropout2d(lib.ones(64, 32), 0.5).numpy()
        assert set(np.unique(y)) == {0.0, 2.0}
        assert 0.35 < (y == 0).mean() < 0.65
        assert not np.all(y == y[:, :1])   # element-wise, not whole rows
        with pytest.warns(UserWarning, match="2-D input"):
            lib.nn.Dropout2d(0.5)(lib.ones(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.dropout2d(mininet.ones(2, 3, 4, 4), 0.5)   # 4-D: no warning


# numpy input to functional entry points --------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda x: F.cross_entropy(x, mininet.tensor([0, 1])),
    lambda x: F.nll_loss(x, mininet.tensor([0, 1])),
    lambda x: F.mse_loss(x, mininet.zeros(2, 3)),
    lambda x: F.dropout(x, 0.5),
    lambda x: F.dropout2d(x, 0.5),
    lambda x: F.layer_norm(x, (3,)),
    lambda x: F.group_norm(x, 1),
    lambda x: F.pad(x, (1, 1)),
])
def test_a_numpy_array_gets_the_ops_clear_type_error(call):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"expected a mininet Tensor, got numpy\.ndarray .*"
                                        r"wrap it: mininet\.tensor\(x\)"):
        call(x)


# full() and bool min ------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [True, False, 3, -2, 2.5, np.True_, np.int64(3)])
def test_full_infers_its_dtype_as_torch(fill):
    t, tt = mininet.full((2,), fill), torch.full((2,), fill)
    assert str(t.dtype) == str(tt.dtype).replace("torch.", "")
    np.testing.assert_array_equal(t.numpy(), tt.numpy())


def test_min_and_amin_of_bool_tensors_as_torch():
    a = np.array([[True, False, True], [True, True, True]])
    t, tt = Tensor(a), torch.tensor(a)
    for got, want in [(t.min(), tt.min()), (t.amin(), tt.amin()), (t.amin(1), tt.amin(1)),
                      (t.min(dim=1).values, tt.min(dim=1).values), (t.amin(0), tt.amin(0)),
                      (t.min(Tensor(~a)), tt.min(torch.tensor(~a)))]:
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(t.min(dim=1).indices.numpy(), tt.min(dim=1).indices.numpy())


def test_top_level_mm_and_matmul_as_torch():
    import torch
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(mininet.mm(mininet.tensor(a), mininet.tensor(b)).numpy(),
                               torch.mm(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mininet.matmul(mininet.tensor(a), mininet.tensor(b)).numpy(),
                               a @ b, rtol=1e-12)
    with pytest.raises(ValueError, match="mm"):
        mininet.mm(mininet.tensor(a), mininet.tensor(a))
