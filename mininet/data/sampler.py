"""Samplers (PyTorch's classes): the order in which a DataLoader reads a map-style
dataset. Randomness comes from a numpy Generator, a seed, or (None) mininet's global
generator as it is at each epoch, so mininet.manual_seed makes shuffling reproducible."""
from collections.abc import Iterable, Sequence, Sized

import numpy as np

from .. import init


def as_generator(generator, who="generator"):
    """None (mininet's global generator, looked up when used), a numpy Generator, or a
    seed (an int) for a new one."""
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{who}: expects a numpy Generator, a seed (int) or None, got "
                    f"{type(generator).__name__}")


def resolve(generator):
    return init.generator() if generator is None else generator


def draw_seed(generator):
    """A 63-bit seed from the generator that leaves its stream where it was (a spawned
    child draws it), so starting workers does not change the order a sampler draws next."""
    gen = resolve(generator)
    try:
        return int(gen.spawn(1)[0].integers(2 ** 63))
    except (AttributeError, TypeError):   # a generator without a SeedSequence to spawn from
        return int(gen.integers(2 ** 63))


def _length(data_source, who):
    try:
        return len(data_source)
    except TypeError:
        raise TypeError(f"{who}: the data set ({type(data_source).__name__}) has no len(); "
                        f"a map-style data set needs __len__") from None


class Sampler:
    """Yields indices into a data set; subclasses define __iter__ (and __len__)."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self):
        return iter(range(_length(self.data_source, "SequentialSampler")))

    def __len__(self):
        return _length(self.data_source, "SequentialSampler")


class RandomSampler(Sampler):
    """A new permutation each epoch; with replacement, num_samples draws with repeats;
    without, num_samples beyond the data set's size walk further permutations."""

    def __init__(self, data_source: Sized, replacement: bool = False,
                 num_samples: int | None = None,
                 generator: np.random.Generator | None = None) -> None:
        self.data_source, self.replacement = data_source, replacement
        self._num_samples = num_samples
        self.generator = as_generator(generator, "RandomSampler")
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement must be a bool, got {replacement!r}")
        if num_samples is not None and (not isinstance(num_samples, (int, np.integer))
                                        or isinstance(num_samples, bool) or num_samples <= 0):
            raise ValueError(f"RandomSampler: num_samples must be a positive integer, "
                             f"got {num_samples!r}")

    @property
    def num_samples(self) -> int:
        """How many indices an epoch yields: num_samples when given, else the
        length of data_source."""
        if self._num_samples is None:
            return _length(self.data_source, "RandomSampler")
        return int(self._num_samples)

    def __len__(self):
        return self.num_samples

    def order(self) -> np.ndarray:
        """This epoch's indices as an int64 array."""
        n, k = _length(self.data_source, "RandomSampler"), self.num_samples
        gen = resolve(self.generator)
        if self.replacement:
            return gen.integers(0, n, size=k, dtype=np.int64) if n else np.zeros(0, np.int64)
        if k == n:
            return gen.permutation(n)
        parts = [gen.permutation(n) for _ in range(-(-k // n))] if n else [np.zeros(0, np.int64)]
        return np.concatenate(parts)[:k]

    def __iter__(self):
        return iter(self.order().tolist())


class SubsetRandomSampler(Sampler):
    """The given indices in a new random order each epoch."""

    def __init__(self, indices: Sequence[int],
                 generator: np.random.Generator | None = None) -> None:
        self.indices = indices
        self.generator = as_generator(generator, "SubsetRandomSampler")

    def __iter__(self):
        perm = resolve(self.generator).permutation(len(self.indices))
        return (self.indices[i] for i in perm.tolist())

    def __len__(self):
        return len(self.indices)


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of batch_size (the last one shorter
    unless drop_last)."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                or batch_size <= 0):
            raise ValueError(f"BatchSampler: batch_size must be a positive integer, "
                             f"got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last must be a bool, got {drop_last!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
