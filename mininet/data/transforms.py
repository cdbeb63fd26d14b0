"""Transforms on numpy batches or single images (..., H, W) / (..., H, W, C)."""
from typing import Any

import numpy as np

from .. import init


class Normalize:
    """(x - mean) / std on a numpy image or batch: mean and std are numbers or arrays
    broadcasting against x (e.g. shape (C, 1, 1) per channel of a (C, H, W) image); the
    output has x's shape."""

    def __init__(self, mean: Any, std: Any) -> None:
        self.mean, self.std = mean, std

    def __call__(self, x):
        return (x - self.mean) / self.std


class RandomFlipHorizontal:
    """Flip the last spatial axis (`axis`, default -1: W of (..., H, W)) with
    probability p (per call, from mininet's generator); the output has the input's shape."""

    def __init__(self, p: float = 0.5, axis: int = -1) -> None:
        self.p, self.axis = p, axis

    def __call__(self, x):
        return np.flip(x, self.axis).copy() if init.generator().random() < self.p else x


class RandomCrop:
    """Zero-pad H and W of a (..., H, W) image by `padding` and crop back to (H, W) at a
    random shift in [-padding, padding] (from mininet's generator): the output has the input's
    shape."""

    def __init__(self, padding: int = 3) -> None:
        self.padding = padding

    def __call__(self, img):
        p = self.padding
        h, w = img.shape[-2:]
        dx, dy = init.generator().integers(-p, p + 1, size=2)
        padded = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(p, p), (p, p)])
        return padded[..., p + dx:p + dx + h, p + dy:p + dy + w]
