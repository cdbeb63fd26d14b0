"""Transforms on numpy batches or single images (..., H, W) / (..., H, W, C)."""
import numpy as np

from .. import init


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, x):
        return (x - self.mean) / self.std


class RandomFlipHorizontal:
    """Flip the last spatial axis with probability p (per call)."""

    def __init__(self, p=0.5, axis=-1):
        self.p, self.axis = p, axis

    def __call__(self, x):
        return np.flip(x, self.axis).copy() if init.generator().random() < self.p else x


class RandomCrop:
    """Zero-pad by `padding` and crop back to the original size at a random shift."""

    def __init__(self, padding=3):
        self.padding = padding

    def __call__(self, img):
        p = self.padding
        h, w = img.shape[-2:]
        dx, dy = init.generator().integers(-p, p + 1, size=2)
        padded = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(p, p), (p, p)])
        return padded[..., p + dx:p + dx + h, p + dy:p + dy + w]
