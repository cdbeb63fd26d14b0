"""nn.Module as PyTorch's: printing (the same text as torch for a twin model), summary,
containers (Sequential, ModuleList, ModuleDict), buffers, state_dict / load_state_dict."""
from collections import OrderedDict

import numpy as np
import pytest

import mininet
import mininet.nn as nn
from mininet import Tensor

torch = pytest.importorskip("torch")
tnn = torch.nn


def twin(L):
    """The same model in either library (L: mininet.nn or torch.nn)."""
    return L.Sequential(
        L.Linear(784, 100), L.ReLU(), L.Dropout(0.25),
        L.Sequential(L.Linear(100, 10, bias=False), L.Tanh()),
        L.LayerNorm(10), L.GELU(approximate="tanh"), L.Unflatten(1, (2, 5)), L.Flatten(),
        L.LeakyReLU(0.1), L.LogSoftmax(dim=1))


def conv_twin(L):
    return L.Sequential(
        L.Conv2d(1, 8, 3, padding=1), L.BatchNorm2d(8), L.ReLU(inplace=True), L.MaxPool2d(2),
        L.Conv2d(8, 8, (3, 5), stride=2, dilation=2, groups=4, bias=False), L.GroupNorm(2, 8),
        L.SiLU(), L.Dropout2d(0.1), L.AvgPool2d(2), L.Flatten(), L.Identity(),
        L.Softplus(beta=2.0), L.ELU(), L.Softmax(dim=-1))


def nested(L):
    class Net(L.Module):
        def __init__(self):
            super().__init__()
            self.stem = L.Linear(4, 8)
            self.blocks = L.ModuleList([L.Linear(8, 8), L.Linear(8, 8), L.ReLU(), L.Linear(8, 8)])
            self.heads = L.ModuleDict({"a": L.Linear(8, 2), "b": L.Sequential(L.Linear(8, 3))})
            self.norm = L.BatchNorm1d(8)
            self.loss = L.CrossEntropyLoss(label_smoothing=0.1)
    return Net()


@pytest.mark.parametrize("build", [twin, conv_twin, nested])
def test_print_is_torchs(build):
    assert str(build(nn)) == str(build(tnn))
    assert repr(build(nn)) == repr(build(tnn))


def test_print_of_leaves_and_empty_containers():
    for mine, theirs in [(nn.Linear(784, 100), tnn.Linear(784, 100)),
                         (nn.Sequential(), tnn.Sequential()), (nn.ModuleList(), tnn.ModuleList()),
                         (nn.ModuleDict(), tnn.ModuleDict()), (nn.MSELoss(), tnn.MSELoss()),
                         (nn.BatchNorm1d(16), tnn.BatchNorm1d(16)),
                         (nn.Embedding(10, 3), tnn.Embedding(10, 3)),
                         (nn.ModuleList([nn.ReLU()] * 3), tnn.ModuleList([tnn.ReLU()] * 3))]:
        assert repr(mine) == repr(theirs)
    assert repr(nn.Linear(784, 100)) == "Linear(in_features=784, out_features=100, bias=True)"


def test_custom_extra_repr_lines():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.ReLU()

        def extra_repr(self):
            return "factor=2\nmode='fast'"
    assert repr(Scale()) == "Scale(\n  factor=2\n  mode='fast'\n  (inner): ReLU()\n)"


def test_summary_counts_parameters_without_running_the_model():
    model, ref = nested(nn), nested(tnn)
    s = model.summary()
    total = sum(p.numel() for p in ref.parameters())
    assert s.total_params == total == sum(p.numel() for p in model.parameters())
    assert s.trainable_params == total
    rows = {row.name: row for row in s.rows}
    assert rows["stem"] == ("stem", "Linear", 40, 40)
    assert rows["blocks.2"].params == 0 and rows["heads.b.modules_list.0"].type == "Linear"
    assert [row.name for row in s.rows] == [name for name, _ in model.named_modules()]
    model.blocks.requires_grad_(False)
    s = model.summary()
    assert s.trainable_params == total - 3 * 72
    text = str(s)
    assert f"total params: {total:,}" in text and f"non-trainable params: {3 * 72:,}" in text
    assert "blocks.0" in text and "BatchNorm1d" in text


def test_summary_counts_a_shared_parameter_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert model.summary().total_params == 12 == sum(p.numel() for p in model.parameters())


# containers -----------------------------------------------------------------------------
def test_sequential_indexing_slicing_append():
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)]
    s = nn.Sequential(*layers)
    assert len(s) == 3 and list(s) == layers and s[-1] is layers[2]
    head = s[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    assert head(Tensor(np.ones((5, 3)))).shape == (5, 4)
    assert s.append(nn.Tanh()) is s and len(s) == 4 and isinstance(s[3], nn.Tanh)
    s.insert(0, nn.Identity())
    assert isinstance(s[0], nn.Identity) and len(s) == 5
    s.extend([nn.Sigmoid()])
    assert isinstance(s.pop(), nn.Sigmoid) and len(s) == 5
    del s[0]
    s[1] = nn.GELU()
    assert [type(m).__name__ for m in s] == ["Linear", "GELU", "Linear", "Tanh"]
    assert s(Tensor(np.ones((2, 3)))).shape == (2, 2)
    with pytest.raises(IndexError, match="out of range"):
        s[4]
    with pytest.raises(TypeError, match="not a Module"):
        s.append(lambda x: x)
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_sequential_keeps_mininets_state_dict_names():
    s = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert list(s.state_dict()) == ["modules_list.0.weight", "modules_list.0.bias",
                                    "modules_list.1.weight", "modules_list.1.bias",
                                    "modules_list.1.running_mean", "modules_list.1.running_var"]
    assert s[1:].state_dict().keys() == {"modules_list.0.weight", "modules_list.0.bias",
                                         "modules_list.0.running_mean", "modules_list.0.running_var"}


def test_sequential_from_ordered_dict_names_as_torch():
    def od(L):
        return OrderedDict([("fc", L.Linear(3, 4)), ("act", L.ReLU()), ("out", L.Linear(4, 1))])
    s, t = nn.Sequential(od(nn)), tnn.Sequential(od(tnn))
    assert repr(s) == repr(t)
    assert list(s.state_dict()) == list(t.state_dict())
    assert isinstance(s.fc, nn.Linear) and s[0] is s.fc
    assert list(s[1:].state_dict()) == ["out.weight", "out.bias"]
    with pytest.raises(AttributeError):
        s.nothing


def test_module_list():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml) == 3 and isinstance(ml[1:], nn.ModuleList) and len(ml[1:]) == 2
    ml.append(nn.ReLU())
    ml.extend([nn.Tanh(), nn.Sigmoid()])
    ml.insert(1, nn.GELU())
    assert [type(m).__name__ for m in ml] == ["Linear", "GELU", "Linear", "Linear", "ReLU", "Tanh",
                                              "Sigmoid"]
    assert ml.index(ml[4]) == 4 and ml[-1] is ml[6]
    del ml[1]
    assert isinstance(ml.pop(), nn.Sigmoid) and len(ml) == 5
    ml += [nn.Identity()]
    assert len(ml) == 6 and isinstance(ml[-1], nn.Identity)
    with pytest.raises(IndexError):
        ml[6]
    with pytest.raises(TypeError, match="not a Module"):
        ml.append(3)
    with pytest.raises(ValueError):
        ml.index(nn.ReLU())


def test_module_list_and_dict_inside_a_model_name_as_torch():
    model, ref = nested(nn), nested(tnn)
    assert list(model.state_dict()) == [
        "stem.weight", "stem.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
        "blocks.1.bias", "blocks.3.weight", "blocks.3.bias", "heads.a.weight", "heads.a.bias",
        "heads.b.modules_list.0.weight", "heads.b.modules_list.0.bias", "norm.weight", "norm.bias",
        "norm.running_mean", "norm.running_var"]
    # torch's names, but for Sequential(*modules)'s modules_list (mininet's checkpoints)
    torchs = lambda names: [n.replace("modules_list.", "") for n in names]  # noqa: E731
    assert set(torchs(model.state_dict())) == set(ref.state_dict()) - {"norm.num_batches_tracked"}
    assert torchs(n for n, _ in model.named_modules()) == [n for n, _ in ref.named_modules()]
    assert [n for n, _ in model.named_children()] == [n for n, _ in ref.named_children()]
    model.eval()
    assert not model.blocks[0].training and not model.heads["b"][0].training


def test_module_dict():
    d = nn.ModuleDict({"a": nn.ReLU()})
    d["b"] = nn.Linear(2, 3)
    d.update([("c", nn.Tanh())])
    assert list(d) == ["a", "b", "c"] and len(d) == 3 and "b" in d and d.b is d["b"]
    assert list(d.keys()) == ["a", "b", "c"] and isinstance(list(d.values())[2], nn.Tanh)
    assert isinstance(d.pop("a"), nn.ReLU) and list(d) == ["b", "c"]
    assert [n for n, _ in d.named_parameters()] == ["b.weight", "b.bias"]
    with pytest.raises(KeyError, match="zz"):
        d["zz"]
    with pytest.raises(KeyError, match="'.'"):
        d["x.y"] = nn.ReLU()
    with pytest.raises(TypeError, match="not a Module"):
        d["e"] = 5


# tree walks, modes, gradients -----------------------------------------------------------
def test_children_modules_apply():
    model = nested(nn)
    assert [type(c).__name__ for c in model.children()] == [
        "Linear", "ModuleList", "ModuleDict", "BatchNorm1d", "CrossEntropyLoss"]
    assert len(model.modules()) == len(list(nested(tnn).modules()))
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen[-1] == "Net" and seen.count("Linear") == 6
    shared = nn.Linear(2, 2)
    assert len(nn.Sequential(shared, shared).modules()) == 2   # each module once, as torch


def test_requires_grad_and_zero_grad():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model(Tensor(np.ones((4, 3)))).sum().backward()
    model.zero_grad(set_to_none=False)
    for p in model.parameters():
        assert p.grad is not None and np.all(p.grad.numpy() == 0)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert model[0].requires_grad_(False) is model[0]
    model(Tensor(np.ones((4, 3)))).sum().backward()
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


# buffers and state dicts ----------------------------------------------------------------
class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("scale", Tensor(np.full(2, 3.0, np.float32)))
        self.register_buffer("cache", Tensor(np.zeros(2, np.float32)), persistent=False)
        self.register_buffer("nothing", None)

    def forward(self, x):
        return self.lin(x) * self.scale


def test_register_buffer_and_named_buffers():
    m = WithBuffers()
    assert [n for n, _ in m.named_buffers()] == ["scale", "cache"]
    assert m.buffers()[0] is m.scale and not m.scale.requires_grad
    assert list(m.state_dict()) == ["lin.weight", "lin.bias", "scale"]   # cache: not persistent
    outer = nn.Sequential(nn.BatchNorm1d(3), m)
    assert [n for n, _ in outer.named_buffers()] == [
        "modules_list.0.running_mean", "modules_list.0.running_var", "modules_list.1.scale",
        "modules_list.1.cache"]
    assert [n for n, _ in outer.named_buffers(recurse=False)] == []
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("lin", Tensor(np.zeros(1)))
    with pytest.raises(TypeError, match="Tensor"):
        m.register_buffer("raw", np.zeros(2))
    with pytest.raises(KeyError, match="'.'"):
        m.register_buffer("a.b", Tensor(np.zeros(1)))


def test_batch_norm_running_stats_are_buffers_and_round_trip():
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    a(Tensor(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)))
    assert list(a.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert [n for n, _ in a.named_buffers()] == ["running_mean", "running_var"]
    assert b.load_state_dict(a.state_dict()) == ([], [])
    np.testing.assert_array_equal(b.running_mean.numpy(), a.running_mean.numpy())
    assert b.running_mean.dtype == np.float32


def test_load_state_dict_strict_names_both_lists_and_loads_nothing():
    a, b = WithBuffers(), WithBuffers()
    before = {k: v.copy() for k, v in b.state_dict().items()}
    sd = a.state_dict()
    del sd["lin.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(nn.StateDictError) as info:
        b.load_state_dict(sd)
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, KeyError)
    assert err.missing_keys == ["lin.bias"] and err.unexpected_keys == ["extra"]
    assert "missing keys ['lin.bias']" in str(err) and "unexpected keys ['extra']" in str(err)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    result = b.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["lin.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(b.lin.weight.numpy(), a.lin.weight.numpy())


def test_load_state_dict_names_a_shape_mismatch_even_when_not_strict():
    m = nn.Linear(3, 2)
    sd = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"weight has shape \(2, 3\), the model expects \(3, 2\)"):
            m.load_state_dict(sd, strict=strict)
    assert m.weight.numpy().any()   # nothing loaded


def test_load_state_dict_takes_tensors_and_torch_tensors():
    mine, ref = nn.LayerNorm(4), tnn.LayerNorm(4)
    with torch.no_grad():
        ref.weight.uniform_()
    assert mine.load_state_dict(ref.state_dict()) == ([], [])
    np.testing.assert_array_equal(mine.weight.numpy(), ref.weight.detach().numpy())
    other = nn.LayerNorm(4)
    other.load_state_dict(mine.state_dict(keep_vars=True))
    np.testing.assert_array_equal(other.weight.numpy(), mine.weight.numpy())
    assert other.weight.requires_grad and isinstance(other.weight, nn.Parameter)


def test_a_saved_models_state_loads_into_a_new_one():
    mininet.manual_seed(0)
    a = nested(nn)
    mininet.manual_seed(1)
    b = nested(nn)
    x = Tensor(np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32))
    out_a = a.heads["a"](a.blocks[0](a.stem(x)))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.heads["a"](b.blocks[0](b.stem(x))).numpy(), out_a.numpy())
