"""PyTorch weights in and out (mininet.interop.torch_weights): each torch module, its
weights random, loaded into its mininet equivalent gives torch's outputs on random
inputs (float64); a mininet model's weights under torch's names load into torch's module
(strict) and give its outputs, through .pt and safetensors files too; torch modules that
compute differently, wrong shapes, dtypes and keys are refused by name."""
import numpy as np
import pytest

import mininet
from mininet import Tensor, nn
from mininet.interop import (LoadReport, TorchWeightsError, load_torch_state_dict, save_torch,
                             torch_names, torch_state_dict)

from conftest import assert_close, torch

pytestmark = pytest.mark.torch
F64 = "float64"


def ours(x):
    return Tensor(np.asarray(x, dtype=np.float64), dtype=F64)


def theirs(x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def out(t):
    return t.detach().numpy() if hasattr(t, "detach") else t.numpy()


def same(a, b, scale=1.0):
    assert_close(out(a), out(b), np.float64, scale)


def randomize(module, seed=0):
    """Random parameters (normal) and running statistics (variances in [0.5, 1.5])."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, tuple(b.shape))))
            elif name.endswith("running_mean"):
                b.copy_(torch.from_numpy(rng.standard_normal(tuple(b.shape))))
    return module


def torch_module(make, seed=0):
    torch.manual_seed(seed)
    return randomize(make().double(), seed).eval()


def loaded(model, source, **kw):
    report = load_torch_state_dict(model, source, **kw)
    assert isinstance(report, LoadReport)
    return model.eval()


rng = np.random.default_rng(1)


# layers, one by one ----------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    t = torch_module(lambda: torch.nn.Linear(5, 3, bias=bias))
    m = loaded(nn.Linear(5, 3, bias=bias, dtype=F64), t)
    x = rng.standard_normal((4, 5))
    same(m(ours(x)), t(theirs(x)))
    np.testing.assert_array_equal(m.weight.numpy(), out(t.weight).T)   # (in, out) here


@pytest.mark.parametrize("cfg", [
    dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1, bias=False),
    dict(kernel_size=3, padding=2, dilation=2), dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, padding=1, groups=2), dict(kernel_size=1, groups=4)])
def test_conv2d(cfg):
    t = torch_module(lambda: torch.nn.Conv2d(4, 8, **cfg))
    m = loaded(nn.Conv(4, 8, dtype=F64, **cfg), t)
    x = rng.standard_normal((2, 4, 9, 8))
    same(m(ours(x)), t(theirs(x)), scale=36)


@pytest.mark.parametrize("dims", [1, 2])
def test_batch_norm_with_running_statistics(dims):
    make = torch.nn.BatchNorm1d if dims == 1 else torch.nn.BatchNorm2d
    t = torch_module(lambda: make(5, eps=1e-3, momentum=0.2))
    t.num_batches_tracked.fill_(7)
    mine = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(5, eps=1e-3, momentum=0.2, dtype=F64)
    report = load_torch_state_dict(mine, t)
    assert "num_batches_tracked" in t.state_dict() and report.missing == report.unexpected == []
    x = rng.standard_normal((6, 5) if dims == 1 else (6, 5, 3, 4))
    same(mine.eval()(ours(x)), t(theirs(x)))
    # training mode: batch statistics, and the running ones updated alike
    same(mine.train()(ours(x)), t.train()(theirs(x)))
    same(mine.running_mean, t.running_mean)
    same(mine.running_var, t.running_var)


def test_layer_norm():
    t = torch_module(lambda: torch.nn.LayerNorm(7, eps=1e-6))
    m = loaded(nn.LayerNorm1d(7, eps=1e-6, dtype=F64), t)
    x = rng.standard_normal((3, 4, 7))
    same(m(ours(x)), t(theirs(x)))


def test_embedding():
    t = torch_module(lambda: torch.nn.Embedding(11, 4))
    m = loaded(nn.Embedding(11, 4, dtype=F64), t)
    idx = rng.integers(0, 11, (3, 5))
    same(m(Tensor(idx)), t(torch.from_numpy(idx)))


RECURRENT = {"rnn_tanh": (lambda *a, **k: torch.nn.RNN(*a, **k), nn.RNN, {}),
             "rnn_relu": (lambda *a, **k: torch.nn.RNN(*a, nonlinearity="relu", **k), nn.RNN,
                          {"nonlinearity": "relu"}),
             "lstm": (lambda *a, **k: torch.nn.LSTM(*a, **k), nn.LSTM, {}),
             "gru": (lambda *a, **k: torch.nn.GRU(*a, **k), getattr(nn, "GRU", None), {})}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_recurrent_layers_with_their_state(kind, layers):
    make_torch, make_ours, kw = RECURRENT[kind]
    if make_ours is None:
        pytest.skip("mininet.nn has no GRU")
    t = torch_module(lambda: make_torch(4, 6, layers))
    for k in range(layers):   # weights small enough that the gates do not saturate
        with torch.no_grad():
            for p in (getattr(t, f"weight_ih_l{k}"), getattr(t, f"weight_hh_l{k}")):
                p.mul_(0.3)
    m = loaded(make_ours(4, 6, layers, dtype=F64, **kw), t)
    x = rng.standard_normal((7, 3, 4))
    h0, c0 = rng.standard_normal((layers, 3, 6)), rng.standard_normal((layers, 3, 6))
    if kind == "lstm":
        (y, (h, c)), (ty, (th, tc)) = (m(ours(x), (ours(h0), ours(c0))),
                                       t(theirs(x), (theirs(h0), theirs(c0))))
        same(c, tc)
    else:
        (y, h), (ty, th) = m(ours(x), ours(h0)), t(theirs(x), theirs(h0))
    same(y, ty)
    same(h, th)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells(kind):
    if not hasattr(nn, kind):
        pytest.skip(f"mininet.nn has no {kind}")
    t = torch_module(lambda: getattr(torch.nn, kind)(5, 4))
    m = loaded(getattr(nn, kind)(5, 4, dtype=F64), t)
    x, h, c = (rng.standard_normal(s) for s in ((3, 5), (3, 4), (3, 4)))
    if kind == "LSTMCell":
        (mh, mc), (th, tc) = m(ours(x), (ours(h), ours(c))), t(theirs(x), (theirs(h), theirs(c)))
        same(mc, tc)
    else:
        mh, th = m(ours(x), ours(h)), t(theirs(x), theirs(h))
    same(mh, th)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention(batch_first, bias):
    t = torch_module(lambda: torch.nn.MultiheadAttention(8, 2, bias=bias, batch_first=batch_first))
    m = loaded(nn.MultiHeadAttention(8, 2, bias=bias, batch_first=batch_first, dtype=F64), t)
    q, kv = rng.standard_normal((5, 3, 8)), rng.standard_normal((4, 3, 8))
    if batch_first:
        q, kv = q.transpose(1, 0, 2), kv.transpose(1, 0, 2)
    same(m(ours(q)), t(theirs(q), theirs(q), theirs(q))[0])                  # self-attention
    same(m(ours(q), ours(kv), ours(2 * kv)), t(theirs(q), theirs(kv), theirs(2 * kv))[0])


def encoder_layer(**kw):
    return torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True, **kw)


def test_transformer_encoder_layer_pre_norm_relu():
    t = torch_module(encoder_layer)
    m = loaded(nn.TransformerLayer(8, 2, 16, dtype=F64), t)
    x = rng.standard_normal((5, 3, 8))
    same(m(ours(x)), t(theirs(x)))
    assert "self_attn.in_proj_weight" in torch_names(m)


# whole models ------------------------------------------------------------------------------------
def mlp_pair():
    t = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                            torch.nn.Tanh(), torch.nn.Linear(8, 3))
    m = nn.Sequential(nn.Linear(6, 16, dtype=F64), nn.ReLU(), nn.Linear(16, 8, dtype=F64),
                      nn.Tanh(), nn.Linear(8, 3, dtype=F64))
    return t, m, (5, 6)


def cnn_pair():
    t = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 3, stride=2, bias=False),
        torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 10),
        torch.nn.BatchNorm1d(10), torch.nn.Sigmoid(), torch.nn.Linear(10, 2))
    m = nn.Sequential(
        nn.Conv(3, 8, 3, padding=1, dtype=F64), nn.BatchNorm2d(8, dtype=F64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv(8, 4, 3, stride=2, bias=False, dtype=F64),
        nn.BatchNorm2d(4, dtype=F64), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10, dtype=F64),
        nn.BatchNorm1d(10, dtype=F64), nn.Sigmoid(), nn.Linear(10, 2, dtype=F64))
    return t, m, (4, 3, 10, 10)


class Nested(nn.Module):
    """Sequential inside a custom module, with a parameter and a buffer of its own, and
    an LSTM and a TransformerLayer: torch's names are the attribute names."""
    _buffers = ("scale",)

    def __init__(self, dtype=F64):
        super().__init__()
        self.embed = nn.Embedding(20, 8, dtype=dtype)
        self.body = nn.Sequential(nn.TransformerLayer(8, 2, 16, dtype=dtype),
                                  nn.LayerNorm1d(8, dtype=dtype))
        self.rnn = nn.LSTM(8, 8, 2, dtype=dtype)
        self.offset = nn.Parameter(Tensor(np.zeros(8), dtype=dtype))
        self.scale = Tensor(np.ones(8), dtype=dtype)

    def forward(self, idx):
        x = self.body(self.embed(idx))
        y, _ = self.rnn(x)
        return (y + mininet.ops.broadcast_to(self.offset, y.shape)) * \
            mininet.ops.broadcast_to(self.scale, y.shape)


class TorchNested(torch.nn.Module if torch is not None else object):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.body = torch.nn.Sequential(encoder_layer(), torch.nn.LayerNorm(8))
        self.rnn = torch.nn.LSTM(8, 8, 2)
        self.offset = torch.nn.Parameter(torch.zeros(8))
        self.register_buffer("scale", torch.ones(8))

    def forward(self, idx):
        return (self.rnn(self.body(self.embed(idx)))[0] + self.offset) * self.scale


def nested_pair():
    return TorchNested(), Nested(), None


PAIRS = {"mlp": mlp_pair, "cnn": cnn_pair, "nested": nested_pair}


def sample(shape):
    return rng.integers(0, 20, (5, 3)) if shape is None else rng.standard_normal(shape)


def feed(model, x, mine):
    if x.dtype.kind == "i":
        return model(Tensor(x) if mine else torch.from_numpy(x))
    return model(ours(x) if mine else theirs(x))


def with_scaled_recurrences(t):
    for name, p in t.named_parameters():
        if "weight_" in name:
            with torch.no_grad():
                p.mul_(0.3)
    return t


@pytest.mark.parametrize("source", ["module", "state_dict", "numpy", "pt", "safetensors"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_whole_models_from_every_source(pair, source, tmp_path):
    t, m, shape = PAIRS[pair]()
    torch.manual_seed(0)
    t = with_scaled_recurrences(randomize(t.double())).eval()
    if source == "module":
        src = t
    elif source == "state_dict":
        src = t.state_dict()
    elif source == "numpy":
        src = {k: v.numpy() for k, v in t.state_dict().items()}
    elif source == "pt":
        src = tmp_path / "w.pt"
        torch.save(t.state_dict(), src)
    else:
        from safetensors.torch import save_file as torch_save_file
        src = tmp_path / "w.safetensors"
        torch_save_file(t.state_dict(), str(src))
    report = load_torch_state_dict(m, src)
    assert report.missing == [] and report.unexpected == []
    assert set(report.loaded) == {k for k in t.state_dict() if not k.endswith("num_batches_tracked")}
    x = sample(shape)
    same(feed(m.eval(), x, True), feed(t, x, False), scale=30)


def our_random_model(pair, seed=3):
    """Our model with random weights and running statistics (mininet's own init)."""
    t, m, shape = PAIRS[pair]()
    mininet.manual_seed(seed)
    r = np.random.default_rng(seed)
    for _, p in m.named_parameters():
        p.data = mininet.NDArray(r.standard_normal(p.shape) * 0.5, dtype=p.dtype)
    for _, name, owner in m._buffer_slots():
        old = getattr(owner, name)
        values = r.uniform(0.5, 1.5, old.shape) if name == "running_var" else r.standard_normal(old.shape)
        setattr(owner, name, Tensor(values, dtype=F64))
    return t.double().eval(), m.eval(), shape


@pytest.mark.parametrize("pair", list(PAIRS))
def test_export_loads_into_torch_strictly(pair):
    t, m, shape = our_random_model(pair)
    state = torch_state_dict(m)
    assert list(state) == list(t.state_dict())   # torch's names, in torch's order
    t.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    x = sample(shape)
    same(feed(t, x, False), feed(m, x, True), scale=30)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("pair", ["cnn", "nested"])
def test_save_torch_files_load_in_torch(pair, suffix, tmp_path):
    t, m, shape = our_random_model(pair)
    path = tmp_path / f"w{suffix}"
    save_torch(m, path)
    if suffix == ".pt":
        state = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file as torch_load_file
        state = torch_load_file(str(path))
    t.load_state_dict(state, strict=True)
    x = sample(shape)
    same(feed(t, x, False), feed(m, x, True), scale=30)
    # and back: a fresh mininet model from the file gives the same outputs
    fresh = PAIRS[pair]()[1]
    load_torch_state_dict(fresh, path)
    same(feed(fresh.eval(), x, True), feed(m, x, True))


# the table ------------------------------------------------------------------------------------
def test_torch_names_say_where_each_tensor_lives():
    names = torch_names(Nested())
    assert names["body.0.self_attn.in_proj_weight"] == (
        ("body.modules_list.0.attn.W_q", "body.modules_list.0.attn.W_k",
         "body.modules_list.0.attn.W_v"), True, "parameter")
    assert names["body.0.self_attn.out_proj.bias"].ours == ("body.modules_list.0.attn.b_out",)
    assert names["rnn.weight_hh_l1"] == (("rnn.cells.1.W_hh",), True, "parameter")
    assert names["rnn.bias_ih_l0"] == (("rnn.cells.0.bias_ih",), False, "parameter")
    assert names["body.1.weight"] == (("body.modules_list.1.weight",), False, "parameter")
    assert names["offset"].kind == "parameter" and names["scale"].kind == "buffer"
    assert list(names) == list(TorchNested().state_dict())
    bn = torch_names(nn.Sequential(nn.Identity(), nn.BatchNorm1d(3)))
    assert bn["1.num_batches_tracked"] == ((), False, "torch_only")
    assert bn["1.running_var"] == (("modules_list.1.running_var",), False, "buffer")


def test_export_writes_zero_batches_tracked_and_copies():
    m = nn.BatchNorm2d(3, dtype=F64)
    state = torch_state_dict(m)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 0
    state["weight"][:] = 5   # a copy: the model keeps its weights
    assert np.all(m.weight.numpy() == 1)


# refusals ------------------------------------------------------------------------------------
REFUSED = {
    "post_norm": (lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0),
                  lambda: nn.TransformerLayer(8, 2, 16, dtype=F64), r"norm_first=False"),
    "gelu": (lambda: encoder_layer(activation="gelu"),
             lambda: nn.TransformerLayer(8, 2, 16, dtype=F64), r"activation gelu"),
    "heads": (lambda: torch.nn.MultiheadAttention(8, 4),
              lambda: nn.MultiHeadAttention(8, 2, dtype=F64), r"num_heads is 4 in torch, 2 here"),
    "relu_rnn": (lambda: torch.nn.RNN(3, 4, nonlinearity="relu"),
                 lambda: nn.RNN(3, 4, dtype=F64), r"nonlinearity is 'relu' in torch, 'tanh' here"),
    "batch_first_lstm": (lambda: torch.nn.LSTM(3, 4, batch_first=True),
                         lambda: nn.LSTM(3, 4, dtype=F64), r"batch_first=True"),
    "conv_stride": (lambda: torch.nn.Conv2d(2, 3, 3, stride=2),
                    lambda: nn.Conv(2, 3, 3, dtype=F64), r"stride is \(2, 2\) in torch"),
    "conv_same": (lambda: torch.nn.Conv2d(2, 3, 3, padding="same"),
                  lambda: nn.Conv(2, 3, 3, padding=1, dtype=F64), r"padding='same'"),
    "bn_eps": (lambda: torch.nn.BatchNorm1d(3, eps=1e-3),
               lambda: nn.BatchNorm1d(3, dtype=F64), r"eps is 0.001 in torch"),
    "gelu_in_sequential": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.GELU()),
                           lambda: nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.ReLU()),
                           r"1 is a torch GELU, a ReLU here"),
    "layer_norm_2d": (lambda: torch.nn.LayerNorm((2, 3)),
                      lambda: nn.LayerNorm1d(3, dtype=F64), r"normalized_shape"),
    "embedding_max_norm": (lambda: torch.nn.Embedding(5, 3, max_norm=1.0),
                           lambda: nn.Embedding(5, 3, dtype=F64), r"max_norm=1.0"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_torch_modules_that_compute_differently_are_refused_by_name(case):
    make_torch, make_ours, expect = REFUSED[case]
    t, m = torch_module(make_torch), make_ours()
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(TorchWeightsError, match=expect) as info:
        load_torch_state_dict(m, t)
    assert "state_dict()" in str(info.value) and "\n" not in str(info.value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])   # nothing loaded


def test_the_weights_alone_load_when_asked():
    t = torch_module(lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0))
    m = nn.TransformerLayer(8, 2, 16, dtype=F64)
    load_torch_state_dict(m, t.state_dict())
    same(m.linear1.weight, t.linear1.weight.T)


def test_shape_mismatch_names_the_key_and_both_shapes_and_loads_nothing():
    t = torch_module(lambda: torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 2)))
    m = nn.Sequential(nn.Linear(5, 3, dtype=F64), nn.Linear(3, 2, dtype=F64))
    before = m.modules_list[1].bias.numpy()
    with pytest.raises(TorchWeightsError) as info:
        load_torch_state_dict(m, t.state_dict())
    message = str(info.value)
    assert "0.weight: expected shape (3, 5) (mininet's modules_list.0.weight transposed), got " \
           "shape (4, 5)" in message
    assert "0.bias: expected shape (3,)" in message and "1.weight: expected shape (2, 3)" in message
    np.testing.assert_array_equal(m.modules_list[1].bias.numpy(), before)   # 1.bias fit; not loaded


def test_packed_attention_shape_is_checked():
    m = nn.MultiHeadAttention(8, 2, dtype=F64)
    state = {k: theirs(v) for k, v in torch_state_dict(m).items()}
    state["in_proj_weight"] = state["in_proj_weight"][:16]
    expect = (r"in_proj_weight: expected shape \(24, 8\) \(mininet's W_q \+ W_k \+ W_v "
              r"transposed\), got shape \(16, 8\)")
    with pytest.raises(TorchWeightsError, match=expect):
        load_torch_state_dict(m, state)


def test_strict_refuses_missing_and_unexpected_keys_and_lax_reports_them():
    t = torch_module(lambda: torch.nn.Linear(3, 2))
    state = dict(t.state_dict())
    del state["bias"]
    state["extra.weight"] = torch.zeros(2)
    m = nn.Linear(3, 2, dtype=F64)
    with pytest.raises(TorchWeightsError, match=r"missing keys \['bias'\], unexpected keys "
                                                r"\['extra.weight'\]"):
        load_torch_state_dict(m, state)
    assert np.abs(m.weight.numpy() - out(t.weight).T).max() > 0   # not loaded
    report = load_torch_state_dict(m, state, strict=False)
    assert report.loaded == ["weight"] and report.missing == ["bias"]
    assert report.unexpected == ["extra.weight"]
    np.testing.assert_array_equal(m.weight.numpy(), out(t.weight).T)


def test_num_batches_tracked_is_checked_then_dropped():
    m = nn.BatchNorm1d(3, dtype=F64)
    state = {k: v for k, v in torch_state_dict(m).items()}
    assert load_torch_state_dict(m, {k: v for k, v in state.items()
                                     if k != "num_batches_tracked"}).missing == []
    for bad in (np.array(-1), np.array(2.0), np.array([3])):
        with pytest.raises(TorchWeightsError, match="num_batches_tracked: expected shape ()"):
            load_torch_state_dict(m, {**state, "num_batches_tracked": bad})


def test_dtypes_are_converted_with_a_note_or_refused():
    t = torch.nn.Linear(4, 3)   # float32
    m = nn.Linear(4, 3, dtype=F64)
    report = load_torch_state_dict(m, t)
    assert any("float32 tensors cast to the model's float64" in n for n in report.notes)
    np.testing.assert_array_equal(m.weight.numpy(), out(t.weight).T.astype(np.float64))
    report = load_torch_state_dict(m, {k: v.to(torch.bfloat16) for k, v in t.state_dict().items()})
    assert any("bfloat16 tensors widened to float32" in n for n in report.notes)
    np.testing.assert_array_equal(m.bias.numpy(), out(t.bias.to(torch.bfloat16).double()))
    with pytest.raises(TorchWeightsError, match="bias: expected shape .*, got dtype int64, not "
                                                "floating point"):
        load_torch_state_dict(m, {"weight": t.weight, "bias": torch.arange(3)})


def test_bad_sources_are_refused():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="not a state dict, a path or a torch module"):
        load_torch_state_dict(m, [1, 2])
    with pytest.raises(TorchWeightsError, match="keys are strings"):
        load_torch_state_dict(m, {0: np.zeros(2)})
    with pytest.raises(TorchWeightsError, match="weight: .*is a str, not an array"):
        load_torch_state_dict(m, {"weight": "zeros", "bias": np.zeros(2)})
