"""The DataLoader: batches from a data set, in this process or in worker processes."""
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend._typing import DeviceLike, DTypeLike
from ..ndarray import as_dtype, share_numpy
from ..ops.creation import get_default_dtype
from .collate import default_convert, to_tensors
from .dataset import IterableDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler, as_generator, draw_seed
from .workers import Exhausted, Fetcher, WorkerError, WorkerPool, unpack


class DataLoader:
    """Batches from a data set, as PyTorch's DataLoader (needle's spelling
    DataLoader(dataset, batch_size, shuffle) and seed= work too).

    A map-style data set is read in the sampler's order (shuffle=True: a new permutation
    each epoch from `generator`, a numpy Generator or a seed, default mininet's generator
    so mininet.manual_seed makes it reproducible; seed= is the same as generator=), in
    batches of batch_size (the last one shorter unless drop_last) or as batch_sampler
    groups them; batch_size=None yields single samples, converted, not stacked. An
    IterableDataset is read as its iterator yields.

    Batches: collate_fn(list of samples), by default default_collate (arrays and Tensors
    stacked along a new first dim, so samples of shape `(*)` give batches of shape `(B, *)`,
    B = batch_size; numbers as 1-d Tensors of shape (B,), strings kept as they come, dicts
    per key, tuples and lists per position, returned as lists). Integers and bools become
    int64 Tensors (labels); floats become `dtype` (default mininet's default dtype, float32; PyTorch would keep
    numpy's float64). Our own data sets (batch_indexing: TensorDataset, MNISTDataset,
    CIFAR10Dataset, and Subsets of them) are read a whole batch per call by fancy
    indexing and give tuples of Tensors. `device` puts the batches on a device.

    num_workers > 0 reads batches in that many processes (started by fork where the
    platform has it, else by multiprocessing_context), prefetch_factor batches ahead per
    worker, and yields them in the sampler's order, the same batches as num_workers=0. An
    error in a worker is raised here with the worker and the sample; a worker that dies
    is an error within a fraction of a second, never a hang; timeout > 0 bounds the wait
    for each batch. Each worker seeds mininet's, numpy's and Python's generators with
    its WorkerInfo.seed (a base seed drawn per epoch, without moving the generator's
    stream, plus its id), then calls worker_init_fn(id). persistent_workers keeps them
    for the next epochs. pin_memory (and pin_memory_device) are accepted and do nothing:
    batches live in ordinary host memory, or on `device`."""
    prefetch_factor: int | None   # set by __init__: None without workers

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Iterable[Any] | None = None, batch_sampler: Iterable[Any] | None = None,
                 num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable[[int], None] | None = None,
                 multiprocessing_context: Any = None, generator: np.random.Generator | None = None,
                 *, prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", seed: int | None = None, dtype: DTypeLike = None,
                 device: DeviceLike = None) -> None:
        iterable = isinstance(dataset, IterableDataset)
        _check_options(iterable, batch_size, shuffle, sampler, batch_sampler, num_workers,
                       drop_last, timeout, prefetch_factor, persistent_workers, generator, seed)
        self.dataset, self.num_workers, self.collate_fn = dataset, num_workers, collate_fn
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        self.timeout, self.worker_init_fn = timeout, worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        if num_workers:
            self.prefetch_factor = 2 if prefetch_factor is None else prefetch_factor
        else:
            self.prefetch_factor = None
        self.persistent_workers, self.shuffle = persistent_workers, bool(shuffle)
        self.generator = as_generator(seed if generator is None else generator, "DataLoader")
        self.dtype = get_default_dtype() if dtype is None else as_dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"DataLoader: dtype is the float batches' dtype (float32 or "
                             f"float64), got {self.dtype}")
        self.device = device
        self._user_batches = batch_sampler is not None
        self.batch_size = None if self._user_batches else batch_size
        self.drop_last = False if self._user_batches else drop_last
        self._auto_collation = batch_size is not None or self._user_batches
        self._own_sampler = sampler is None and not iterable
        if iterable or sampler is not None:
            self.sampler = sampler
        else:
            self.sampler = RandomSampler(dataset, generator=self.generator) if shuffle \
                else SequentialSampler(dataset)
        if batch_sampler is None and self.sampler is not None and batch_size is not None:
            batch_sampler = BatchSampler(self.sampler, batch_size, drop_last)   # torch's attribute
        self.batch_sampler = batch_sampler
        self._mode = ("iterable" if iterable else "single" if not self._auto_collation else
                      "batched" if collate_fn is None and getattr(dataset, "batch_indexing", False)
                      else "samples")
        self._pool, self._epochs, self._live_epoch = None, itertools.count(), None

    @property
    def rng(self):
        """The shuffling generator (None: mininet's); setting it reshuffles from it."""
        return self.generator

    @rng.setter
    def rng(self, generator):
        self.generator = as_generator(generator, "DataLoader")
        if self._own_sampler and isinstance(self.sampler, RandomSampler):
            self.sampler.generator = self.generator

    def __len__(self):
        if self._mode == "iterable":
            n = len(self.dataset)    # a TypeError when the stream has no length
        elif self._user_batches:
            return len(self.batch_sampler)
        else:
            n = len(self.sampler)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.num_workers == 0:
            return self._in_process()
        return _WorkerIterator(self)

    def _fetcher(self):
        return Fetcher(self.dataset, self._mode, self.collate_fn, self._auto_collation,
                       self.batch_size, self.drop_last)

    def _index_batches(self):
        """Each batch's indices (None per batch for an IterableDataset)."""
        if self._mode == "iterable":
            return itertools.repeat(None)
        if self._user_batches:
            return iter(self.batch_sampler)
        if self.batch_size is None:
            return iter(self.sampler)
        if self._mode != "batched":
            order = list(self.sampler)
        elif isinstance(self.sampler, RandomSampler):
            order = self.sampler.order()
        else:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        bs, n = self.batch_size, len(order)
        stop = n - n % bs if self.drop_last else n
        return (order[i:i + bs] for i in range(0, stop, bs))

    def _in_process(self):
        fetcher = self._fetcher()
        fetcher.start_epoch()
        for indices in self._index_batches():
            try:
                data = fetcher(indices)
            except StopIteration:
                if self._mode == "iterable":
                    return
                raise
            except Exception as e:
                e.add_note(f"DataLoader: raised while loading {fetcher.where}")
                raise
            yield self._finish(data, from_worker=False)

    def _finish(self, data, from_worker):
        """A fetched batch as the loader yields it (Tensors made here, not in a worker)."""
        if self.collate_fn is not None:
            return unpack(data) if from_worker else data
        if self._mode == "batched":
            return tuple(self._tensor(x, fresh=from_worker) for x in data)
        if not self._auto_collation:
            return default_convert(data, self.dtype, self.device)
        return to_tensors(data, self.dtype, self.device)

    def _tensor(self, x, fresh=False):
        """The batch as a Tensor; a fresh batch array of the right dtype is shared, not
        copied again (the dataset's fancy indexing, or unpickling, already made it)."""
        x = np.asarray(x)
        if x.dtype.kind in "iu":  # labels stay integers (bool masks stay bool)
            x = x.astype(np.int64, copy=False)
        elif x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if fresh or x.base is None:   # share it where the device can (else share_numpy copies)
            return Tensor.make_const(share_numpy(x, self.device))
        return Tensor(x, dtype=x.dtype, device=self.device)

    def _workers(self):
        if self._pool is not None and not self._pool.closed:
            return self._pool
        pool = WorkerPool(self.num_workers, self.dataset, self._fetcher(),
                          draw_seed(self.generator), self.worker_init_fn,
                          self.multiprocessing_context, self.timeout)
        if self.persistent_workers:
            self._pool = pool
        return pool

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.close()
            except Exception:   # at interpreter exit the modules it needs may be gone
                pass


def _is_count(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_options(iterable, batch_size, shuffle, sampler, batch_sampler, num_workers,
                   drop_last, timeout, prefetch_factor, persistent_workers, generator, seed):
    def refuse(problem):
        raise ValueError(f"DataLoader: {problem}")
    if batch_size is not None and (not _is_count(batch_size) or batch_size < 1):
        refuse(f"batch_size must be >= 1 (or None: no batching), got {batch_size!r}")
    if not _is_count(num_workers) or num_workers < 0:
        refuse(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if not isinstance(timeout, (int, float)) or timeout < 0:
        refuse(f"timeout must be >= 0 seconds (0: wait for ever), got {timeout!r}")
    if prefetch_factor is not None and (num_workers == 0 or not _is_count(prefetch_factor)
                                        or prefetch_factor < 1):
        refuse(f"prefetch_factor (got {prefetch_factor!r}) is the batches each worker loads "
               f"ahead: an integer >= 1, and only with num_workers > 0")
    if persistent_workers and num_workers == 0:
        refuse("persistent_workers needs num_workers > 0")
    if generator is not None and seed is not None:
        refuse("pass generator= or seed=, not both")
    if iterable and (shuffle or sampler is not None or batch_sampler is not None):
        refuse("an IterableDataset gives its own order: shuffle, sampler and batch_sampler "
               "do not apply (shuffle inside its __iter__)")
    if sampler is not None and shuffle:
        refuse("pass shuffle to the sampler, not with sampler= (a DistributedSampler "
               "shuffles itself)")
    if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None
                                      or drop_last):
        refuse("batch_sampler gives the batches: batch_size, shuffle, sampler and drop_last "
               "must keep their defaults with it")
    if batch_size is None and drop_last:
        refuse("drop_last needs a batch_size (batch_size=None yields single samples)")


class _WorkerIterator:
    """One epoch read by worker processes: tasks numbered in the sampler's order, handed
    round-robin, results put back in that order (a stale epoch's are dropped)."""

    def __init__(self, loader):
        self.loader, self.pool = loader, loader._workers()
        self.epoch, self.batches = next(loader._epochs), loader._index_batches()
        loader._live_epoch = self.epoch
        self.active, self.owner, self.buffer = list(range(len(self.pool))), {}, {}
        self.sent = self.received = self.turn = 0
        for _ in range(loader.prefetch_factor * len(self.pool)):
            if not self._send():
                break

    def __iter__(self):
        return self

    def __len__(self):
        return len(self.loader)

    def _send(self):
        if not self.active or self.batches is None:
            return False
        try:
            indices = next(self.batches)
        except StopIteration:
            self.batches = None
            return False
        n = len(self.pool)
        while self.turn % n not in self.active:   # the next worker in the cycle still reading
            self.turn += 1
        worker = self.turn % n
        self.turn += 1
        self.pool.submit(worker, self.epoch, self.sent, indices)
        self.owner[self.sent] = worker
        self.sent += 1
        return True

    def __next__(self):
        if self.loader.persistent_workers and self.loader._live_epoch != self.epoch:
            raise RuntimeError("DataLoader: this iterator's persistent workers now serve a newer "
                               "iter(loader); one iterator at a time reads them")
        while self.received < self.sent:
            task = self.received
            data = self._result(task)
            self.received += 1
            worker = self.owner.pop(task)
            if isinstance(data, Exhausted):     # that worker's share of the stream is done
                if worker in self.active:
                    self.active.remove(worker)
                self._send()
                continue
            if isinstance(data, WorkerError):
                self._close()
                data.reraise()
            self._send()
            return self.loader._finish(data, from_worker=True)
        self._close()
        raise StopIteration

    def _result(self, task):
        while task not in self.buffer:
            try:
                epoch, task_id, out = self.pool.get(f"batch {task}")
            except BaseException:
                self._close()
                raise
            if epoch == self.epoch:
                self.buffer[task_id] = out
        return self.buffer.pop(task)

    def _close(self):
        if not self.loader.persistent_workers:
            self.pool.close()

    def __del__(self):
        if getattr(self, "pool", None) is not None and not self.loader.persistent_workers:
            try:
                self.pool.close()
            except Exception:   # at interpreter exit the modules it needs may be gone
                pass
