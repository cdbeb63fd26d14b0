"""torch.nn.utils's spellings: mininet.nn.utils.fusion (conv + batch norm folding,
conv + ReLU fusion for inference)."""
from . import fusion
from .fusion import find_fusable, fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_modules

__all__ = ["fusion", "find_fusable", "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_modules"]
