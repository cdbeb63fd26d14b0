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


MODELS = {"softmax": SoftmaxRegression, "mlp": MLP, "resnet": MLPResNet}


def build_model(name, **kw):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kw)
