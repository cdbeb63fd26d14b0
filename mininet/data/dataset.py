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


class DistributedSampler:
    """The indices one rank of a data-parallel job reads (PyTorch's class): each epoch a
    permutation drawn from (seed, epoch), the same on every rank, padded by wrapping
    around to a multiple of the ranks (pad=False: not padded, for evaluation), and every
    num_replicas-th index from position `rank`. The shards are disjoint and cover the
    data set; each iteration moves to the next epoch unless set_epoch() says which."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, pad=True):
        from .. import distributed
        self.n = dataset if isinstance(dataset, int) else len(dataset)
        self.num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        self.rank = distributed.rank() if rank is None else rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: rank {self.rank} is not in "
                             f"[0, {self.num_replicas})")
        self.shuffle, self.seed, self.pad, self.epoch = shuffle, seed, pad, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.pad:
            return -(-self.n // self.num_replicas)
        return len(range(self.rank, self.n, self.num_replicas))

    def indices(self):
        """This rank's indices for the current epoch."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.pad and self.n:
            total = len(self) * self.num_replicas
            order = np.resize(order, total)   # repeats from the start: the padding wraps
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        order = self.indices()
        self.epoch += 1
        return iter(order.tolist())


class DataLoader:
    """Batches of Tensors. With shuffle, each epoch draws a new order from
    `seed` (or mininet.manual_seed's generator); a sampler (DistributedSampler) gives the
    order instead."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 dtype="float32", device=None, sampler=None):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle to the sampler, not with sampler= "
                             "(a DistributedSampler shuffles itself)")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.sampler = sampler
        self.drop_last, self.dtype, self.device = drop_last, np.dtype(dtype), device
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.sampler is not None:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        elif self.shuffle:
            order = (self.rng or init.generator()).permutation(len(self.dataset))
        else:
            order = np.arange(len(self.dataset))
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
