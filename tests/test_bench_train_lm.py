"""`bench train` on the language models, the Transformer LM among them: mininet's model and
its PyTorch twin (the registry's build_torch) trained in the same run, at tiny sizes."""
import numpy as np
import pytest

from mininet.cli import bench_train
from mininet.models import registry

TINY = {"vocab_size": 40, "embedding_size": 16, "hidden_size": 16, "num_layers": 1}


def count(params):
    return sum(int(np.prod(tuple(p.shape))) for p in params)


@pytest.fixture
def tiny(monkeypatch):
    """Tiny language models: a 40-word vocabulary, width 16, one layer, 2 windows."""
    monkeypatch.setattr(bench_train, "LM_KWARGS", TINY)
    monkeypatch.setattr(bench_train, "LM_STEPS", 2)


@pytest.mark.torch
def test_transformer_runs_against_its_torch_twin(tiny, monkeypatch):
    torch = pytest.importorskip("torch")
    twins, mine, start = [], [], []
    real_torch, real_build = registry.ModelEntry.build_torch, registry.ModelEntry.build

    def build_torch(self, **kw):
        twins.append(real_torch(self, **kw))
        start.append({k: v.clone() for k, v in twins[-1].state_dict().items()})
        return twins[-1]

    def build(self, **kw):
        mine.append(real_build(self, **kw))
        return mine[-1]
    monkeypatch.setattr(registry.ModelEntry, "build_torch", build_torch)
    monkeypatch.setattr(registry.ModelEntry, "build", build)
    rows = bench_train.bench_train(("transformer",), threads=1, repeat=2)
    assert [(r["impl"], r["model"]) for r in rows] == [("mininet", "transformer"),
                                                       ("torch", "transformer")]
    entry = registry.get("transformer")
    tokens = 2 * entry.input_shape[0] * entry.batch_size
    for r in rows:
        assert r["samples"] == tokens and r["batch_size"] == entry.batch_size
        assert r["threads"] == 1 and len(r["epoch_seconds"]) == 2 and r["seconds"] > 0
    # the same network on both sides: a Transformer twin, as many parameters as mininet's
    (twin,), (model,) = twins, mine
    assert any(isinstance(m, torch.nn.MultiheadAttention) or "attn" in type(m).__name__.lower()
               or "attention" in type(m).__name__.lower() for m in twin.modules())
    assert count(twin.parameters()) == count(model.parameters())
    # and both were trained (Adam moved every side's weights away from the initial ones)
    moved = [not torch.equal(v, start[0][k]) for k, v in twin.state_dict().items()
             if v.dtype.is_floating_point]
    assert moved and all(moved)


@pytest.mark.torch
def test_lstm_and_transformer_in_one_run_by_alias(tiny):
    pytest.importorskip("torch")
    rows = bench_train.bench_train(("lstm-lm", "transformer-lm"), threads=1)
    assert [(r["impl"], r["model"]) for r in rows] == [
        ("mininet", "lstm-lm"), ("torch", "lstm-lm"),
        ("mininet", "transformer-lm"), ("torch", "transformer-lm")]
    assert all(r["samples"] == 2 * 35 * 20 and r["samples_per_s"] > 0 for r in rows)


def test_transformer_without_torch_times_mininet_only(tiny, monkeypatch):
    monkeypatch.setattr(bench_train, "_torch", lambda threads: None)
    rows = bench_train.bench_train(("transformer",), threads=1)
    assert [(r["impl"], r["model"]) for r in rows] == [("mininet", "transformer")]
