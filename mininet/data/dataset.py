"""Datasets (map-style and iterable) and their combinators, with PyTorch's
torch.utils.data names and habits; mininet.utils.data re-exports them."""
import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from .sampler import as_generator, resolve


def pixels_to_float(pixels):
    """uint8 pixels as float32 in [0, 1] (one new array, scaled in place)."""
    x = pixels.astype(np.float32)
    x *= np.float32(1 / 255)
    return x


class Dataset:
    """A map-style data set: __getitem__(i) returns sample i (a tuple, dict, array,
    number ... anything default_collate batches) and __len__ their number.

    Our own data sets (TensorDataset, MNISTDataset, CIFAR10Dataset) set batch_indexing:
    dataset[index_array] returns the whole batch as a tuple of arrays, which the
    DataLoader fetches in one call instead of collating samples. `transforms` apply to
    the first array, image by image."""
    batch_indexing = False
    transforms: Sequence[Callable[[Any], Any]] = ()

    def __init__(self, transforms: Sequence[Callable[[Any], Any]] | None = None) -> None:
        self.transforms = transforms or []

    def apply_transforms(self, x: np.ndarray, batched: bool = False) -> np.ndarray:
        """Each transform sees one image (its own random flip or crop); a batch (an array
        index) is transformed image by image."""
        if not self.transforms:
            return x
        if batched:
            return np.stack([self.apply_transforms(xi) for xi in x]) if len(x) else x
        for t in self.transforms:
            x = t(x)
        return x

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A data set read as a stream: __iter__ yields samples. With num_workers > 0 each
    worker iterates its own copy; shard by get_worker_info() (id, num_workers) or every
    worker yields every item."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __getitem__(self, index):
        raise TypeError(f"{type(self).__name__} is an IterableDataset: iterate it, do not index it")

    def __add__(self, other):
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Sample i is (a[i] for a in arrays): numpy arrays, Tensors or anything numpy takes,
    all of one length. Indexed by an index array it gives the whole batch."""
    batch_indexing = True

    def __init__(self, *arrays, transforms=None):
        super().__init__(transforms)
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array")
        arrays = [a.numpy() if isinstance(a, Tensor) else a for a in arrays]
        n = {len(a) for a in arrays}
        if len(n) != 1:
            raise ValueError(f"TensorDataset: arrays differ in length: {[len(a) for a in arrays]}")
        self.arrays = [np.asarray(a) for a in arrays]

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        x = self.apply_transforms(self.arrays[0][index], batched=np.ndim(index) > 0)
        return (x,) + tuple(a[index] for a in self.arrays[1:])


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices, self._index_array = dataset, indices, None

    @property
    def batch_indexing(self):
        return getattr(self.dataset, "batch_indexing", False)

    def __getitem__(self, index):
        if isinstance(index, np.ndarray) and index.ndim > 0:   # a batch, for batch_indexing
            return self.dataset[self._as_array()[index]]
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)

    def _as_array(self):
        """indices as an array, converted once for a list (not once per batch)."""
        if isinstance(self.indices, np.ndarray):
            return self.indices
        if self._index_array is None or len(self._index_array) != len(self.indices):
            self._index_array = np.asarray(self.indices, dtype=np.int64)
        return self._index_array


def _check_index(index, n, who):
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"{who}: indices must be integers, got {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"{who}: index {index} is out of range for {n} samples")
    return int(index) + n if index < 0 else int(index)


class ConcatDataset(Dataset):
    """Map-style data sets one after another; index i falls in the first whose running
    total passes it (negative indices count from the end of the whole)."""

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: needs at least one data set")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError("ConcatDataset: cannot index an IterableDataset; use ChainDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        index = _check_index(index, len(self), "ConcatDataset")
        k = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[k][index - (self.cumulative_sizes[k - 1] if k else 0)]


class ChainDataset(IterableDataset):
    """Iterable data sets one after another."""

    def __init__(self, datasets: Iterable[IterableDataset]) -> None:
        self.datasets = list(datasets)

    def __iter__(self):
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError(f"ChainDataset: {type(d).__name__} is not an IterableDataset")
            yield from d

    def __len__(self):
        return sum(len(d) for d in self.datasets)


def _split_sizes(n, lengths):
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths is empty")
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in lengths):
        if any(x < 0 for x in lengths) or sum(lengths) != n:
            raise ValueError(f"random_split: lengths {lengths} must be >= 0 and add up to the "
                             f"data set's {n} samples")
        return [int(x) for x in lengths]
    if not all(isinstance(x, (int, float, np.integer, np.floating)) and 0 <= x <= 1
               for x in lengths) or not math.isclose(sum(lengths), 1) or sum(lengths) > 1:
        raise ValueError(f"random_split: lengths {lengths} are neither sizes adding up to {n} "
                         f"nor fractions in [0, 1] adding up to 1")
    sizes = [math.floor(n * f) for f in lengths]
    for i in range(n - sum(sizes)):   # what flooring left over goes round-robin from the first
        sizes[i % len(sizes)] += 1
    return sizes


def random_split(dataset: Any, lengths: Sequence[int | float],
                 generator: np.random.Generator | None = None) -> list[Subset]:
    """Disjoint Subsets of `dataset`, covering it, of the given sizes, or of fractions of
    its length (floored, the remainder dealt one by one from the first split, as PyTorch
    does). The order is a permutation from `generator` (a numpy Generator or a seed;
    default mininet's generator, which mininet.manual_seed seeds)."""
    n = len(dataset)
    sizes = _split_sizes(n, lengths)
    perm = resolve(as_generator(generator, "random_split")).permutation(n).tolist()
    ends = list(itertools.accumulate(sizes))
    return [Subset(dataset, perm[end - size:end]) for size, end in zip(sizes, ends)]


class DistributedSampler:
    """The indices one rank of a data-parallel job reads (PyTorch's class): each epoch a
    permutation drawn from (seed, epoch), the same on every rank, padded by wrapping
    around to a multiple of the ranks (pad=False: not padded, for evaluation), and every
    num_replicas-th index from position `rank`. The shards are disjoint and cover the
    data set; each iteration moves to the next epoch unless set_epoch() says which."""

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, pad: bool = True) -> None:
        from .. import distributed
        self.n = dataset if isinstance(dataset, int) else len(dataset)
        self.num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        self.rank = distributed.rank() if rank is None else rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: rank {self.rank} is not in "
                             f"[0, {self.num_replicas})")
        self.shuffle, self.seed, self.pad, self.epoch = shuffle, seed, pad, 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next iteration shuffles for (the permutation is seeded
        by (seed, epoch), so every rank draws the same one); as torch's, call it before each
        epoch."""
        self.epoch = epoch

    def __len__(self):
        if self.pad:
            return -(-self.n // self.num_replicas)
        return len(range(self.rank, self.n, self.num_replicas))

    def indices(self) -> np.ndarray:
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
