"""Softmax regression, MLPs, the course's MLPResNet and two CNNs, each built from its spec
(models/spec.py), which also builds its PyTorch twin."""
from .. import nn
from .spec import to_mininet


def softmax_spec(in_dim=784, num_classes=10):
    return ("linear", in_dim, num_classes)


def mlp_spec(in_dim=784, hidden=100, num_classes=10):
    """Linear-ReLU for each hidden width (an int or a list of them), then Linear."""
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    layers = []
    for a, b in zip([in_dim] + widths, widths):
        layers += [("linear", a, b), ("relu",)]
    return ("seq", tuple(layers) + (("linear", widths[-1] if widths else in_dim, num_classes),))


NORMS = {"batch": "bn1d", "layer": "ln1d"}


def _norm_name(norm):
    """MLPResNet's norm: "batch" or "layer", or the class nn.BatchNorm1d / nn.LayerNorm1d."""
    name = {nn.BatchNorm1d: "batch", nn.LayerNorm1d: "layer"}.get(norm, norm)
    if name not in NORMS:
        raise ValueError(f"MLPResNet: norm must be 'batch' or 'layer' (or nn.BatchNorm1d, "
                         f"nn.LayerNorm1d), got {norm!r}")
    return name


def residual_block_spec(dim, hidden, norm="batch", drop_prob=0.1):
    n = NORMS[_norm_name(norm)]
    inner = ("seq", (("linear", dim, hidden), (n, hidden), ("relu",), ("dropout", drop_prob),
                     ("linear", hidden, dim), (n, dim)))
    return ("seq", (("residual", inner), ("relu",)))


def mlp_resnet_spec(in_dim=784, hidden=100, num_blocks=3, num_classes=10, norm="batch",
                    drop_prob=0.1):
    blocks = tuple(residual_block_spec(hidden, hidden // 2, norm, drop_prob)
                   for _ in range(num_blocks))
    return ("seq", (("linear", in_dim, hidden), ("relu",)) + blocks
            + (("linear", hidden, num_classes),))


def cnn_spec(in_channels=1, channels=(16, 32), hidden=128, num_classes=10, size=28):
    c1, c2 = channels
    return ("seq", (("conv", in_channels, c1, 5, 1, 2), ("relu",), ("maxpool", 2),
                    ("conv", c1, c2, 5, 1, 2), ("relu",), ("maxpool", 2),
                    ("flatten",), ("linear", c2 * (size // 4) ** 2, hidden), ("relu",),
                    ("linear", hidden, num_classes)))


def cifar_cnn_spec(in_channels=3, channels=(32, 64, 128), num_classes=10, size=32):
    """A conv(3x3)-BN-ReLU-max-pool stage per width, then Linear."""
    stages = []
    for cin, cout in zip([in_channels] + list(channels), channels):
        stages += [("conv", cin, cout, 3, 1, 1), ("bn2d", cout), ("relu",), ("maxpool", 2)]
    flat = channels[-1] * (size >> len(channels)) ** 2
    return ("seq", tuple(stages) + (("flatten",), ("linear", flat, num_classes)))


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: one Linear layer (in_dim, num_classes) giving
    logits. Input (N, in_dim) (flattened images), output (N, num_classes)."""

    def __init__(self, in_dim=784, num_classes=10):
        super().__init__()
        self.spec = softmax_spec(in_dim, num_classes)
        self.linear = to_mininet(self.spec)

    def forward(self, x):
        """Logits of shape (N, num_classes) for x of shape (N, in_dim)."""
        return self.linear(x)


class MLP(nn.Module):
    """Linear-ReLU per hidden width (hidden: an int, or a list such as [1024, 1024]), then
    Linear: input (N, in_dim), logits (N, num_classes)."""

    def __init__(self, in_dim=784, hidden=100, num_classes=10):
        super().__init__()
        self.spec = mlp_spec(in_dim, hidden, num_classes)
        self.net = to_mininet(self.spec)

    def forward(self, x):
        """Logits of shape (N, num_classes) for x of shape (N, in_dim)."""
        return self.net(x)


def residual_block(dim, hidden, norm=nn.BatchNorm1d, drop_prob=0.1):
    return to_mininet(residual_block_spec(dim, hidden, norm, drop_prob))


class MLPResNet(nn.Module):
    """Linear, ReLU, then residual blocks of Linear-BN-ReLU-Dropout-Linear-BN, then Linear.
    norm: "batch" (default) or "layer" (or the class nn.BatchNorm1d / nn.LayerNorm1d).
    Input (N, in_dim), logits (N, num_classes); hidden is the blocks' width."""

    def __init__(self, in_dim=784, hidden=100, num_blocks=3, num_classes=10, norm="batch",
                 drop_prob=0.1):
        super().__init__()
        self.spec = mlp_resnet_spec(in_dim, hidden, num_blocks, num_classes, norm, drop_prob)
        self.net = to_mininet(self.spec)

    def forward(self, x):
        """Logits of shape (N, num_classes) for x of shape (N, in_dim)."""
        return self.net(x)


class _Images(nn.Module):
    """A network over (N, C, H, W) images built from its spec."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.net = to_mininet(spec)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__}: input must be (N, C, H, W) images, got "
                             f"shape {x.shape}")
        return self.net(x)


class CNN(_Images):
    """LeNet-style: two conv(5x5)+ReLU+max-pool stages, then two linear layers.
    Input (N, 1, 28, 28)."""

    def __init__(self, in_channels=1, channels=(16, 32), hidden=128, num_classes=10, size=28):
        super().__init__(cnn_spec(in_channels, channels, hidden, num_classes, size))


class CifarCNN(_Images):
    """Three conv(3x3)-BN-ReLU-max-pool stages (32, 64, 128 channels), then Linear: input
    (N, in_channels, size, size), by default (N, 3, 32, 32), logits (N, num_classes)."""

    def __init__(self, in_channels=3, channels=(32, 64, 128), num_classes=10, size=32):
        super().__init__(cifar_cnn_spec(in_channels, channels, num_classes, size))


def build_model(name, **kw):
    """The registry's model of that name (models/registry.py), with constructor kwargs."""
    from .registry import build
    return build(name, **kw)
