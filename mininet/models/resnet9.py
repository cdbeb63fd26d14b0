"""The course's ResNet9 for 3x32x32 images: conv-BN-ReLU blocks and two residual stages."""
from .. import nn


def conv_bn(cin, cout, kernel, stride, dtype="float32"):
    """Conv (padding kernel // 2) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(nn.Conv(cin, cout, kernel, stride=stride, padding=kernel // 2, dtype=dtype),
                         nn.BatchNorm2d(cout, dtype=dtype), nn.ReLU())


class ResNet9(nn.Module):
    """32x32 -> 8x8 (7x7 conv, stride 4) -> 4x4 -> residual -> 2x2 -> 1x1 -> residual ->
    Linear(128, 128) -> ReLU -> Linear(128, classes)."""

    def __init__(self, num_classes=10, dtype="float32"):
        super().__init__()
        self.net = nn.Sequential(
            conv_bn(3, 16, 7, 4, dtype), conv_bn(16, 32, 3, 2, dtype),
            nn.Residual(nn.Sequential(conv_bn(32, 32, 3, 1, dtype), conv_bn(32, 32, 3, 1, dtype))),
            conv_bn(32, 64, 3, 2, dtype), conv_bn(64, 128, 3, 2, dtype),
            nn.Residual(nn.Sequential(conv_bn(128, 128, 3, 1, dtype), conv_bn(128, 128, 3, 1, dtype))),
            nn.Flatten(), nn.Linear(128, 128, dtype=dtype), nn.ReLU(),
            nn.Linear(128, num_classes, dtype=dtype))

    def forward(self, x):
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise ValueError(f"ResNet9: input must be (N, 3, 32, 32), got shape {x.shape}")
        return self.net(x)
