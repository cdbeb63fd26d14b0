"""The model registry (issue 23 item 9): one entry per name, from which mininet's model and
PyTorch's twin are both built, so that `bench train --models softmax` times softmax
regression in both libraries (it used to time PyTorch's MLPResNet against it)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mininet
from mininet.autograd import Tensor
from mininet.models import registry
from conftest import assert_one_line_error, cli, torch

# small sizes of the language models, so that the twins' tests stay fast
LM_SMALL = {"vocab_size": 50, "embedding_size": 8, "hidden_size": 12, "num_layers": 2}
NAMES = list(registry.MODELS)


def small(entry):
    return LM_SMALL if entry.language_model else {}


def count(params):
    return sum(int(np.prod(p.shape)) for p in params)


def test_every_entry_says_what_it_is():
    assert NAMES == ["softmax", "mlp", "resnet", "cnn", "mlp-large", "cifar-cnn", "resnet9",
                     "rnn", "lstm", "transformer"]
    for name, e in registry.MODELS.items():
        assert e.name == name and e.description and "\n" not in e.description
        assert e.batch_size >= 1 and e.epochs >= 1 and e.input_shape
        assert set(e.datasets) <= {"mnist", "fashion-mnist", "cifar10", "ptb"} and e.datasets
        assert json.loads(json.dumps(dict(e.kwargs))) == registry._plain(dict(e.kwargs))
    assert registry.names("cifar10") == ("cifar-cnn", "resnet9")
    assert registry.names("ptb") == ("rnn", "lstm", "transformer")
    for dataset, name in registry.DEFAULT_MODEL.items():
        assert dataset in registry.get(name).datasets


def test_names_aliases_and_arguments_are_checked():
    assert registry.get("lstm-lm") is registry.get("lstm")
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of softmax, mlp"):
        registry.get("nope")
    with pytest.raises(ValueError, match="model 'mlp': unknown argument 'width'; it takes in_dim"):
        registry.build("mlp", width=3)
    model = registry.build("mlp", hidden=7)
    assert model.arch == {"name": "mlp", "kwargs": {"in_dim": 784, "hidden": 7, "num_classes": 10}}
    assert [tuple(p.shape) for p in model.parameters()] == [(784, 7), (7,), (7, 10), (10,)]
    # mininet.models.build_model is the registry's
    assert type(mininet.models.build_model("cifar-cnn")).__name__ == "CifarCNN"


def test_a_seed_gives_the_weights_the_models_always_had():
    """The spec builds the layers in the order the classes did: MLP(784-100-10) under seed 0."""
    mininet.init.manual_seed(0)
    w = registry.build("mlp").state_dict()
    mininet.init.manual_seed(0)
    first = mininet.init.kaiming_uniform(784, 100).numpy()
    np.testing.assert_array_equal(next(iter(w.values())), first)   # the first Linear's weight


def _output(model, entry, x):
    out = model(Tensor(x) if not entry.language_model else Tensor(x, dtype="int64"))
    return out[0] if entry.language_model else out


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_the_twin_has_the_same_parameters_and_output_shape(name):
    entry = registry.get(name)
    model, twin = entry.build(**small(entry)), entry.build_torch(**small(entry))
    assert count(model.parameters()) == count(twin.parameters())
    if name != "transformer":   # torch packs q, k and v into one in_proj
        assert [tuple(p.shape) for p in model.parameters()] == \
            [_our_layout(n, tuple(p.shape)) for n, p in twin.named_parameters()]
    x = entry.example_input(3, np.random.default_rng(1), **small(entry))
    model.eval(), twin.eval()
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x))
    theirs = theirs[0] if entry.language_model else theirs
    assert _output(model, entry, x).shape == tuple(theirs.shape)
    if entry.language_model:   # (seq_len * batch, vocabulary)
        assert tuple(theirs.shape) == (entry.input_shape[0] * 3, LM_SMALL["vocab_size"])
    else:
        assert tuple(theirs.shape) == (3, 10)


def _our_layout(name, shape):
    """A torch parameter's shape in mininet's layout: Linear and recurrent weights (in, out)."""
    return shape[::-1] if len(shape) == 2 and "embedding" not in name else shape


def copy_weights(model, twin, entry):
    """mininet's parameters into the twin: 2-D weights transposed (ours are (in, out)) but for
    embeddings, conv and the rest as they are; the Transformer's q, k, v packed as torch's
    in_proj."""
    ours = {k: p.numpy() for k, p in model.named_parameters()}
    if entry.name == "transformer":
        values = _transformer_values(ours)
    else:
        values = [w.T if w.ndim == 2 and "embedding" not in k else w for k, w in ours.items()]
    params = list(twin.parameters())
    assert len(values) == len(params)
    with torch.no_grad():
        for p, w in zip(params, values):
            assert tuple(p.shape) == w.shape
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))


def _transformer_values(ours):
    """Our Transformer LM's parameters in the order and layout of torch's twin."""
    values = [ours["embedding.weight"], ours["seq.positions.weight"]]
    k = 0
    while f"seq.layers.{k}.attn.W_q" in ours:
        p = lambda n: ours[f"seq.layers.{k}.{n}"]   # noqa: E731
        values += [np.concatenate([p("attn.W_q").T, p("attn.W_k").T, p("attn.W_v").T]),
                   np.concatenate([p("attn.b_q"), p("attn.b_k"), p("attn.b_v")]),
                   p("attn.W_out").T, p("attn.b_out"), p("linear1.weight").T, p("linear1.bias"),
                   p("linear2.weight").T, p("linear2.bias"), p("norm1.weight"), p("norm1.bias"),
                   p("norm2.weight"), p("norm2.bias")]
        k += 1
    return values + [ours["head.weight"].T, ours["head.bias"]]


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_the_twin_computes_the_same_outputs_with_the_same_weights(name):
    """Every entry, in eval mode (dropout off, batch norm on its running statistics): the
    brief asked for mlp, cnn and softmax; the others' layouts are simple enough too."""
    entry = registry.get(name)
    mininet.init.manual_seed(2)
    model, twin = entry.build(**small(entry)), entry.build_torch(**small(entry))
    copy_weights(model, twin, entry)
    model.eval(), twin.eval()
    x = entry.example_input(4, np.random.default_rng(3), **small(entry))
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x))
    theirs = (theirs[0] if entry.language_model else theirs).numpy()
    ours = _output(model, entry, x).numpy()
    assert np.abs(theirs).max() > 1e-3          # not trivially zero
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


@pytest.mark.torch
def test_a_different_weight_is_noticed():
    """The comparison above can fail: one weight changed in the twin changes its output."""
    entry = registry.get("mlp")
    model, twin = entry.build(), entry.build_torch()
    copy_weights(model, twin, entry)
    with torch.no_grad():
        twin[2].weight[3, 5] += 0.5
    x = entry.example_input(4)
    assert not np.allclose(_output(model, entry, x).numpy(),
                           twin(torch.from_numpy(x)).detach().numpy(), rtol=2e-4, atol=2e-5)


# bench train takes its models, and its twins, from the registry --------------------------------
@pytest.mark.torch
def test_bench_train_times_the_registry_twin(monkeypatch):
    """`bench train --models softmax` trained PyTorch's MLPResNet (110,860 parameters) as the
    twin of softmax regression (7,850); now both sides are the registry's softmax."""
    from mininet.cli import bench_train
    built = []
    real = registry.ModelEntry.build_torch

    def build_torch(self, **kw):
        twin = real(self, **kw)
        built.append((self.name, count(twin.parameters())))
        return twin
    monkeypatch.setattr(registry.ModelEntry, "build_torch", build_torch)
    rows = bench_train.bench_train(("softmax", "lstm-lm"), samples=200, threads=1)
    assert built == [("softmax", 7850), ("lstm", count(registry.build(
        "lstm", **bench_train.LM_KWARGS).parameters()))]
    assert [(r["impl"], r["model"]) for r in rows] == [
        ("mininet", "softmax"), ("torch", "softmax"), ("mininet", "lstm-lm"), ("torch", "lstm-lm")]
    assert rows[0]["samples"] == 200 and rows[0]["batch_size"] == 100
    assert rows[2]["samples"] == 20 * 35 * 20 and rows[2]["batch_size"] == 20
    assert all(r["seconds"] > 0 and r["threads"] == 1 for r in rows)


def test_bench_train_says_one_thread_and_lists_the_models():
    r = cli("bench", "train", "--models", "softmax", "--samples", "200", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "Adam, 1 thread" in r.stdout and "1 threads" not in r.stdout
    r = cli("bench", "train", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name, e in registry.MODELS.items():
        assert f"{name}" in text and " ".join(e.description.split()) in text, name
    assert_one_line_error(cli("bench", "train", "--models", "mlp,vgg"), "--models", "vgg")


def test_bench_train_uses_every_core_by_default():
    env = {k: v for k, v in os.environ.items() if k not in ("MININET_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(COLUMNS="200", MININET_OFFLINE="1")
    cores = subprocess.run([sys.executable, "-c", "import mininet; print(mininet.get_num_threads())"],
                           capture_output=True, text=True, env=env, timeout=120)
    r = subprocess.run([sys.executable, "-m", "mininet.cli", "bench", "train", "--models", "softmax",
                        "--samples", "200", "--json"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert {row["threads"] for row in json.loads(r.stdout)} == {int(cores.stdout)}
    assert int(cores.stdout) == len(os.sched_getaffinity(0))


NO_TORCH = """if True:
    import sys
    sys.modules["torch"] = None          # import torch raises ImportError
    sys.argv = ["mininet", "bench", "train", "--models", "softmax", "--samples", "200", "--threads", "1"]
    from mininet.cli import main
    main()
"""


def test_bench_train_without_torch_says_how_to_install_it():
    r = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "softmax" in line)
    assert "torch not installed (pip install 'mininet-dl[torch]')" in row and "nan" not in row
