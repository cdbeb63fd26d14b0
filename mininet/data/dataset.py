"""Dataset and DataLoader (PyTorch's habits: batch_size, shuffle, seed, drop_last)."""
import numpy as np

from ..autograd import Tensor
from ..ndarray import share_numpy
from .. import init


def pixels_to_float(pixels):
    """uint8 pixels as float32 in [0, 1] (one new array, scaled in place)."""
    x = pixels.astype(np.float32)
    x *= np.float32(1 / 255)
    return x


class Dataset:
    """Indexable; __getitem__ returns a tuple of numpy arrays. transforms apply to the first."""

    def __init__(self, transforms=None):
        self.transforms = transforms or []

    def apply_transforms(self, x, batched=False):
        """Each transform sees one image (its own random flip or crop); a batch (an array
        index) is transformed image by image."""
        if not self.transforms:
            return x
        if batched:
            return np.stack([self.apply_transforms(xi) for xi in x]) if len(x) else x
        for t in self.transforms:
            x = t(x)
        return x

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class TensorDataset(Dataset):
    def __init__(self, *arrays, transforms=None):
        super().__init__(transforms)
        n = {len(a) for a in arrays}
        if len(n) != 1:
            raise ValueError(f"TensorDataset: arrays differ in length: {[len(a) for a in arrays]}")
        self.arrays = [np.asarray(a) for a in arrays]

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        x = self.apply_transforms(self.arrays[0][index], batched=np.ndim(index) > 0)
        return (x,) + tuple(a[index] for a in self.arrays[1:])


class DataLoader:
    """Batches of Tensors. With shuffle, each epoch draws a new order from
    `seed` (or mininet.manual_seed's generator)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 dtype="float32", device=None):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.drop_last, self.dtype, self.device = drop_last, np.dtype(dtype), device
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        rng = self.rng or init.generator()
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self.dataset[idx]
            yield tuple(self._tensor(x) for x in batch)

    def _tensor(self, x):
        """The batch as a Tensor; a fresh batch array of the right dtype is shared, not
        copied again (the dataset's fancy indexing already made it)."""
        x = np.asarray(x)
        if x.dtype.kind in "iub":  # labels stay integers
            x = x.astype(np.int64, copy=False)
        elif x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if x.base is None:   # fresh: share it where the device can (else share_numpy copies)
            return Tensor.make_const(share_numpy(x, self.device))
        return Tensor(x, dtype=x.dtype, device=self.device)
