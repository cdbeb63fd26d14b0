"""Softmax regression, MLP, and the course's MLPResNet."""
from .. import nn


class SoftmaxRegression(nn.Module):
    def __init__(self, in_dim=784, num_classes=10):
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, x):
        return self.linear(x)


class MLP(nn.Module):
    def __init__(self, in_dim=784, hidden=100, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


def residual_block(dim, hidden, norm=nn.BatchNorm1d, drop_prob=0.1):
    return nn.Sequential(
        nn.Residual(nn.Sequential(nn.Linear(dim, hidden), norm(hidden), nn.ReLU(), nn.Dropout(drop_prob),
                                  nn.Linear(hidden, dim), norm(dim))),
        nn.ReLU())


class MLPResNet(nn.Module):
    """Linear, ReLU, then residual blocks of Linear-BN-ReLU-Dropout-Linear-BN, then Linear."""

    def __init__(self, in_dim=784, hidden=100, num_blocks=3, num_classes=10, norm=nn.BatchNorm1d,
                 drop_prob=0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            *[residual_block(hidden, hidden // 2, norm, drop_prob) for _ in range(num_blocks)],
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """LeNet-style: two conv(5x5)+ReLU+max-pool stages, then two linear layers.
    Input (N, 1, 28, 28)."""

    def __init__(self, in_channels=1, channels=(16, 32), hidden=128, num_classes=10, size=28):
        super().__init__()
        c1, c2 = channels
        flat = c2 * (size // 4) ** 2
        self.net = nn.Sequential(
            nn.Conv(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"CNN: input must be (N, C, H, W) images, got shape {x.shape}")
        return self.net(x)


MODELS = {"softmax": SoftmaxRegression, "mlp": MLP, "resnet": MLPResNet, "cnn": CNN}


def build_model(name, **kw):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kw)
