"""The course's ResNet9 for 3x32x32 images: conv-BN-ReLU blocks and two residual stages."""
from .. import nn
from .spec import to_mininet


def conv_bn_spec(cin, cout, kernel, stride):
    """Conv (padding kernel // 2) -> BatchNorm2d -> ReLU."""
    return ("seq", (("conv", cin, cout, kernel, stride, kernel // 2), ("bn2d", cout), ("relu",)))


def conv_bn(cin, cout, kernel, stride, dtype="float32"):
    return to_mininet(conv_bn_spec(cin, cout, kernel, stride), dtype)


def resnet9_spec(num_classes=10):
    """32x32 -> 8x8 (7x7 conv, stride 4) -> 4x4 -> residual -> 2x2 -> 1x1 -> residual ->
    Linear(128, 128) -> ReLU -> Linear(128, classes)."""
    def residual(c):
        return ("residual", ("seq", (conv_bn_spec(c, c, 3, 1), conv_bn_spec(c, c, 3, 1))))
    return ("seq", (conv_bn_spec(3, 16, 7, 4), conv_bn_spec(16, 32, 3, 2), residual(32),
                    conv_bn_spec(32, 64, 3, 2), conv_bn_spec(64, 128, 3, 2), residual(128),
                    ("flatten",), ("linear", 128, 128), ("relu",), ("linear", 128, num_classes)))


class ResNet9(nn.Module):
    __doc__ = "The course's ResNet9: " + (resnet9_spec.__doc__ or "")   # None under python -OO

    def __init__(self, num_classes=10, dtype="float32"):
        super().__init__()
        self.spec = resnet9_spec(num_classes)
        self.net = to_mininet(self.spec, dtype)

    def forward(self, x):
        """Logits of shape (N, num_classes) for images x of shape (N, 3, 32, 32);
        another shape raises ValueError."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise ValueError(f"ResNet9: input must be (N, 3, 32, 32), got shape {x.shape}")
        return self.net(x)
