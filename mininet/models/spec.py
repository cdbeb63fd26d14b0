"""Layer descriptions: one spec per model, from which both mininet's network and its
PyTorch twin are built, so that a model's name means the same layers in both libraries.

A spec is a tuple whose first item names the layer:
    ("linear", in, out)              ("conv", in, out, kernel, stride, padding)
    ("bn1d", n)  ("bn2d", c)  ("ln1d", n)
    ("relu",)  ("dropout", p)  ("flatten",)  ("maxpool", kernel)
    ("seq", (spec, ...))             ("residual", spec): spec(x) + x
    ("lm", kind, vocab, embedding, hidden, layers): LanguageModel (kind rnn, lstm, transformer)
The two builders construct the layers in the order the spec lists them, so a seed gives
the same initial weights as a model written out by hand."""
from .. import nn


def to_mininet(spec, dtype="float32"):
    """The mininet Module that spec describes."""
    kind, *args = spec
    if kind == "seq":
        return nn.Sequential(*[to_mininet(s, dtype) for s in args[0]])
    if kind == "residual":
        return nn.Residual(to_mininet(args[0], dtype))
    if kind not in _MININET:
        raise ValueError(f"unknown layer {kind!r} in a model spec; known: {', '.join(KINDS)}")
    return _MININET[kind](dtype, *args)


def _lm(dtype, kind, vocab, embedding, hidden, layers):
    from .language import LanguageModel
    return LanguageModel(embedding, vocab, hidden, layers, kind, dtype=dtype)


_MININET = {
    "linear": lambda dt, i, o: nn.Linear(i, o, dtype=dt),
    "conv": lambda dt, ci, co, k, s, p: nn.Conv(ci, co, k, stride=s, padding=p, dtype=dt),
    "bn1d": lambda dt, n: nn.BatchNorm1d(n, dtype=dt),
    "bn2d": lambda dt, c: nn.BatchNorm2d(c, dtype=dt),
    "ln1d": lambda dt, n: nn.LayerNorm1d(n, dtype=dt),
    "relu": lambda dt: nn.ReLU(),
    "dropout": lambda dt, p: nn.Dropout(p),
    "flatten": lambda dt: nn.Flatten(),
    "maxpool": lambda dt, k: nn.MaxPool2d(k),
    "lm": _lm,
}
KINDS = ("seq", "residual") + tuple(_MININET)


def to_torch(spec):
    """The torch.nn.Module that spec describes (PyTorch imported here, not before)."""
    import torch.nn as tnn
    kind, *args = spec
    if kind == "seq":
        return tnn.Sequential(*[to_torch(s) for s in args[0]])
    if kind == "residual":
        return _torch_residual()(to_torch(args[0]))
    if kind == "lm":
        from .language import torch_language_model
        kind_, vocab, embedding, hidden, layers = args
        return torch_language_model(kind_, vocab, embedding, hidden, layers)
    table = {
        "linear": lambda i, o: tnn.Linear(i, o),
        "conv": lambda ci, co, k, s, p: tnn.Conv2d(ci, co, k, stride=s, padding=p),
        "bn1d": tnn.BatchNorm1d, "bn2d": tnn.BatchNorm2d, "ln1d": tnn.LayerNorm,
        "relu": tnn.ReLU, "dropout": tnn.Dropout, "flatten": tnn.Flatten,
        "maxpool": tnn.MaxPool2d,
    }
    if kind not in table:
        raise ValueError(f"unknown layer {kind!r} in a model spec; known: {', '.join(KINDS)}")
    return table[kind](*args)


def _torch_residual():
    import torch.nn as tnn

    class Residual(tnn.Module):
        """fn(x) + x, as mininet's nn.Residual."""

        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x
    return Residual


class Network(nn.Module):
    """A model that is its spec's layers and nothing more: forward(x) = net(x)."""

    def __init__(self, spec, dtype="float32"):
        super().__init__()
        self.spec = spec
        self.net = to_mininet(spec, dtype)

    def forward(self, x):
        return self.net(x)
