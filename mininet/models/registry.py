"""The models by name: the one table that `mininet train`, `mininet bench train` (and its
PyTorch twins) and checkpoints take them from. Each entry builds mininet's model and
PyTorch's twin from one spec (models/spec.py), so a name means the same network in both
libraries."""
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from .language import LanguageModel, lm_spec
from .mlp import (CNN, MLP, CifarCNN, MLPResNet, SoftmaxRegression, cifar_cnn_spec, cnn_spec,
                  mlp_resnet_spec, mlp_spec, softmax_spec)
from .resnet9 import ResNet9, resnet9_spec
from .spec import to_torch


@dataclass(frozen=True)
class ModelEntry:
    """name; description (one line); input_shape: one sample's (a language model's is
    (seq_len,): a batch of token ids is (seq_len, batch)); batch_size: the default batch;
    kwargs: the constructor's arguments and their defaults (plain values: they are written
    into checkpoints); datasets it trains on; epochs: the default for `mininet train`."""
    name: str
    description: str
    input_shape: tuple[int, ...]
    batch_size: int
    kwargs: Mapping[str, Any]   # a MappingProxyType once built
    datasets: tuple[str, ...]
    spec_of: Callable[..., Any]          # (**kwargs) -> the layer description (models/spec.py)
    make: Callable[..., Any]             # (**kwargs) -> the mininet Module
    epochs: int = 20
    aliases: tuple[str, ...] = ()
    language_model: bool = False   # token ids (seq_len, batch) in, (logits, state) out

    def __post_init__(self):
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))

    def options(self, kw):
        """The constructor's arguments: the defaults updated by kw, whose names are checked."""
        unknown = sorted(set(kw) - set(self.kwargs))
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown argument {unknown[0]!r}; it takes "
                             f"{', '.join(self.kwargs) or 'none'}")
        return {**self.kwargs, **kw}

    def spec(self, **kw):
        return self.spec_of(**self.options(kw))

    def build(self, **kw):
        """The mininet model; `model.arch` records {"name", "kwargs"} for checkpoints."""
        opts = self.options(kw)
        model = self.make(**opts)
        model.arch = {"name": self.name, "kwargs": _plain(opts)}
        return model

    def build_torch(self, **kw):
        """PyTorch's twin, built from the same spec (PyTorch is imported now, not before)."""
        return to_torch(self.spec(**kw))

    def example_input(self, batch=None, rng=None, **kw):
        """A random numpy input of a batch: float32 (batch,) + input_shape, or, for a
        language model, int64 token ids (seq_len, batch) below the vocabulary size."""
        rng = rng or np.random.default_rng(0)
        batch = batch or self.batch_size
        if self.language_model:
            return rng.integers(0, self.options(kw)["vocab_size"], self.input_shape + (batch,))
        return rng.random((batch,) + self.input_shape, dtype=np.float32)


def _plain(value):
    """Tuples as lists, as JSON stores them, so a rebuilt model's arch compares equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _lm(kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def spec_of(**kw):
        return lm_spec(kind, **kw)

    def make(vocab_size, embedding_size, hidden_size, num_layers):
        return LanguageModel(embedding_size, vocab_size, hidden_size, num_layers, kind)
    return spec_of, make


IMAGES = ("mnist", "fashion-mnist")
_LM_KW = {"vocab_size": 10000, "embedding_size": 200, "hidden_size": 200, "num_layers": 2}
_ENTRIES = [
    ModelEntry("softmax", "softmax regression: one Linear layer, 784 -> 10", (784,), 100,
               {"in_dim": 784, "num_classes": 10}, IMAGES, softmax_spec, SoftmaxRegression),
    ModelEntry("mlp", "MLP 784-100-10 (ReLU)", (784,), 100,
               {"in_dim": 784, "hidden": 100, "num_classes": 10}, IMAGES, mlp_spec, MLP),
    ModelEntry("resnet", "MLPResNet: Linear 784-100, 3 residual blocks "
               "(Linear-BN-ReLU-Dropout-Linear-BN), Linear 100-10", (784,), 100,
               {"in_dim": 784, "hidden": 100, "num_blocks": 3, "num_classes": 10,
                "norm": "batch", "drop_prob": 0.1}, IMAGES, mlp_resnet_spec, MLPResNet),
    ModelEntry("cnn", "LeNet-style CNN: 2 conv(5x5)-ReLU-pool stages (16, 32 channels), "
               "Linear 1568-128-10, on 1x28x28", (1, 28, 28), 100,
               {"in_channels": 1, "channels": (16, 32), "hidden": 128, "num_classes": 10,
                "size": 28}, IMAGES, cnn_spec, CNN, epochs=10),
    ModelEntry("mlp-large", "MLP 784-1024-1024-10 (ReLU)", (784,), 256,
               {"in_dim": 784, "hidden": (1024, 1024), "num_classes": 10}, IMAGES, mlp_spec, MLP),
    ModelEntry("cifar-cnn", "3 conv(3x3)-BN-ReLU-pool stages (32, 64, 128 channels), "
               "Linear 2048-10, on 3x32x32", (3, 32, 32), 100,
               {"in_channels": 3, "channels": (32, 64, 128), "num_classes": 10, "size": 32},
               ("cifar10",), cifar_cnn_spec, CifarCNN),
    ModelEntry("resnet9", "the course's ResNet9 (conv-BN-ReLU, 2 residual stages) on 3x32x32",
               (3, 32, 32), 128, {"num_classes": 10}, ("cifar10",), resnet9_spec, ResNet9),
    ModelEntry("rnn", "language model: Embedding 200, 2-layer tanh RNN 200, Linear to the "
               "vocabulary", (35,), 20, _LM_KW, ("ptb",), *_lm("rnn"), aliases=("rnn-lm",),
               language_model=True),
    ModelEntry("lstm", "language model: Embedding 200, 2-layer LSTM 200, Linear to the "
               "vocabulary", (35,), 20, _LM_KW, ("ptb",), *_lm("lstm"), aliases=("lstm-lm",),
               language_model=True),
    ModelEntry("transformer", "language model: Embedding 200 + positions, 2 causal pre-norm "
               "Transformer layers (4 heads, feed-forward 200), Linear to the vocabulary",
               (35,), 20, _LM_KW, ("ptb",), *_lm("transformer"),
               aliases=("transformer-lm",), language_model=True),
]
MODELS = MappingProxyType({e.name: e for e in _ENTRIES})
ALIASES = MappingProxyType({a: e.name for e in _ENTRIES for a in e.aliases})
# the model `mininet train DATASET` trains when --model is not given
DEFAULT_MODEL = MappingProxyType({"mnist": "mlp", "fashion-mnist": "mlp", "cifar10": "resnet9",
                                  "ptb": "lstm"})


def get(name):
    """The entry of that name (or alias); ValueError naming the choices otherwise."""
    entry = MODELS.get(ALIASES.get(name, name))
    if entry is None:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return entry


def names(dataset=None):
    """The models' names, or those that train on dataset."""
    return tuple(n for n, e in MODELS.items() if dataset is None or dataset in e.datasets)


def build(name, **kw):
    """mininet's model of that name, with constructor kwargs."""
    return get(name).build(**kw)


def build_torch(name, **kw):
    """PyTorch's twin of that model, from the same spec."""
    return get(name).build_torch(**kw)
