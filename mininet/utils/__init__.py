"""PyTorch's torch.utils spellings: mininet.utils.data."""
from . import data

__all__ = ["data"]
