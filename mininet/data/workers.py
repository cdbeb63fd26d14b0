"""DataLoader worker processes (num_workers > 0). Each worker owns a task queue; the main
process hands out batches round-robin, at most prefetch_factor per worker ahead, and puts
the results back in order. A worker sends each result pickled by itself, so a batch that
cannot be pickled is an error naming it rather than a batch lost on the way; an error in
a worker comes back with the worker and the sample it was loading; a worker that dies
is noticed within a poll interval (and the main process's death by the workers)."""
import os
import pickle
import queue
import random
import signal
import time
import traceback
from typing import NamedTuple

import numpy as np

from .. import init
from ..autograd import Tensor
from .collate import stack

POLL_S = 0.25        # how often a waiting process checks that the others are alive
JOIN_S = 2.0         # how long a worker may take to exit when told to

_info = None


class WorkerInfo(NamedTuple):
    """What get_worker_info() returns inside a worker (PyTorch's fields)."""
    id: int
    num_workers: int
    seed: int
    dataset: object


def get_worker_info() -> WorkerInfo | None:
    """In a DataLoader worker: its WorkerInfo (id, num_workers, seed, and its own copy of
    the dataset, e.g. to shard an IterableDataset); in the main process: None."""
    return _info


class Exhausted:
    """A worker's answer when its IterableDataset copy has no more batches."""


class _Packed:
    """A Tensor crossing a process boundary (Tensors do not pickle): its data and dtype."""

    def __init__(self, tensor):
        self.array = tensor.numpy()


def pack(tree):
    """Tensors in a collate_fn's result, as picklable arrays (unpack undoes it)."""
    if isinstance(tree, Tensor):
        return _Packed(tree)
    if isinstance(tree, dict):
        return {k: pack(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(pack(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(pack(v) for v in tree)
    return tree


def unpack(tree, device=None):
    if isinstance(tree, _Packed):
        return Tensor(tree.array, dtype=tree.array.dtype, device=device)
    if isinstance(tree, dict):
        return {k: unpack(v, device) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(unpack(v, device) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(unpack(v, device) for v in tree)
    return tree


class Fetcher:
    """Reads one batch: in the main process, or in a worker (then the result must cross
    back: collate_fn's Tensors are packed). `where` says what it was reading when it
    raised. Modes: "batched" (dataset[index_array] gives the whole batch: our datasets'
    fast path), "samples" (dataset[i] per index, then collated), "single" (one index, no
    batching), "iterable" (the next batch_size items of the dataset's iterator)."""

    def __init__(self, dataset, mode, collate_fn, auto_collation=True, batch_size=None,
                 drop_last=False):
        self.dataset, self.mode, self.collate_fn = dataset, mode, collate_fn
        self.auto_collation, self.batch_size, self.drop_last = auto_collation, batch_size, drop_last
        self.iterator, self.items_read, self.in_worker = None, 0, False
        self._at = ("", None)   # (what, which): formatted only when something failed

    @property
    def where(self):
        what, which = self._at
        if what == "item":
            return f"item {which} of its iterator"
        return f"{what} {_short(which) if what != 'sample' else which}".strip()

    def start_epoch(self):
        if self.mode == "iterable":
            self.iterator, self.items_read = iter(self.dataset), 0

    def __call__(self, indices):
        if self.mode == "batched":
            self._at = ("samples", indices)
            return self.dataset[np.asarray(indices)]
        if self.mode == "single":
            self._at = ("sample", indices)
            return self._collated(self.dataset[indices])
        samples = self._next_items() if self.mode == "iterable" else self._samples(indices)
        self._at = ("the batch of samples", indices) if indices is not None else \
            ("collating a batch", None)
        return self._collated(samples)

    def _samples(self, indices):
        indices = indices.tolist() if isinstance(indices, np.ndarray) else list(indices)
        if hasattr(self.dataset, "__getitems__"):   # torch's hook: a list of samples at once
            self._at = ("samples", indices)
            return self.dataset.__getitems__(indices)
        samples = []
        for i in indices:
            self._at = ("sample", i)
            samples.append(self.dataset[i])
        return samples

    def _next_items(self):
        samples, want = [], self.batch_size or 1
        while len(samples) < want:
            self._at = ("item", self.items_read)
            try:
                samples.append(next(self.iterator))
            except StopIteration:
                break
            self.items_read += 1
        if not samples or (self.drop_last and len(samples) < want):
            raise StopIteration
        return samples if self.batch_size is not None else samples[0]

    def _collated(self, samples):
        if self.collate_fn is not None:
            out = self.collate_fn(samples)
            return pack(out) if self.in_worker else out
        return stack(samples) if self.auto_collation else samples


def _short(indices, limit=8):
    if indices is None:
        return ""
    seq = indices.tolist() if isinstance(indices, np.ndarray) else list(indices)
    if len(seq) <= limit:
        return str(seq)
    return f"[{', '.join(map(str, seq[:limit]))}, ...] ({len(seq)} samples)"


class WorkerError:
    """An exception raised in a worker, to be raised again in the main process."""

    def __init__(self, worker_id, where, exc):
        self.worker_id, self.where, self.pid = worker_id, where, os.getpid()
        self.type_name, self.message = type(exc).__name__, str(exc)
        self.traceback = traceback.format_exc()
        try:
            self.exc_type = pickle.loads(pickle.dumps(type(exc)))
        except Exception:    # a class defined in a function does not pickle
            self.exc_type = None

    def reraise(self):
        text = (f"{self.type_name} in DataLoader worker {self.worker_id} (pid {self.pid}) "
                f"while loading {self.where}: {self.message}\n\n"
                f"Traceback in the worker:\n{self.traceback}")
        try:
            exc = self.exc_type(text) if self.exc_type is not None else None
        except Exception:
            exc = None
        if not isinstance(exc, Exception):
            exc = RuntimeError(text)
        raise exc


def _seed_worker(seed):
    """Each worker's own random streams: mininet's generator, numpy's global one, Python's."""
    init.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _loop(worker_id, num_workers, seed, dataset, fetcher, init_fn, tasks, results, parent):
    global _info
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's to handle
    _info = WorkerInfo(worker_id, num_workers, seed, dataset)
    fetcher.in_worker, epoch = True, None
    _seed_worker(seed)
    broken = None   # worker_init_fn's error: the answer to every task, so it surfaces in order
    try:
        if init_fn is not None:
            init_fn(worker_id)
    except BaseException as e:
        broken = pickle.dumps(WorkerError(worker_id, "worker_init_fn", e))
    while True:
        try:
            task = tasks.get(timeout=POLL_S * 4)
        except queue.Empty:
            if os.getppid() != parent:    # the main process is gone: nobody will ask again
                return
            continue
        if task is None:    # shutting down: results not yet sent are no longer wanted
            results.cancel_join_thread()
            return
        task_epoch, task_id, indices = task
        if broken is not None:
            results.put((task_epoch, task_id, broken))
            continue
        if task_epoch != epoch:
            epoch = task_epoch
            try:
                fetcher.start_epoch()
            except BaseException as e:
                error = WorkerError(worker_id, "iter(dataset)", e)
                results.put((epoch, task_id, pickle.dumps(error)))
                continue
        results.put((task_epoch, task_id, _run(fetcher, indices, worker_id)))


def _run(fetcher, indices, worker_id):
    """The task's result, pickled here: a failure to pickle is this task's error."""
    try:
        out = fetcher(indices)
    except StopIteration:
        out = Exhausted()
    except BaseException as e:
        out = WorkerError(worker_id, fetcher.where, e)
    try:
        return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        return pickle.dumps(WorkerError(worker_id, f"{fetcher.where} (pickling its result)", e))


def _context(spec):
    import multiprocessing   # here: importing it costs mininet's import ~7 ms
    if spec is None:
        # fork: the dataset need not pickle, and workers start in milliseconds (forked
        # children run mininet's kernels on one thread, which suits data loading)
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("fork" if "fork" in methods else None)
    return multiprocessing.get_context(spec) if isinstance(spec, str) else spec


class WorkerPool:
    """num_workers processes, each with its task queue, and one result queue."""

    def __init__(self, num_workers, dataset, fetcher, seed, init_fn=None, context=None,
                 timeout=0):
        ctx = _context(context)
        self.timeout, self.results, self.tasks, self.procs = timeout, ctx.Queue(), [], []
        self.closed = False
        try:
            for wid in range(num_workers):
                self.tasks.append(ctx.Queue())
                self.procs.append(ctx.Process(
                    target=_loop, name=f"mininet-dataloader-{wid}", daemon=True,
                    args=(wid, num_workers, seed + wid, dataset, fetcher, init_fn,
                          self.tasks[-1], self.results, os.getpid())))
                self.procs[-1].start()
        except BaseException:   # e.g. a dataset that does not pickle for spawn
            self.procs = [p for p in self.procs if p.pid is not None]
            self.tasks = self.tasks[:len(self.procs)]
            self.close(graceful=False)
            raise

    def __len__(self):
        return len(self.procs)

    def submit(self, worker_id, epoch, task_id, indices):
        self.tasks[worker_id].put((epoch, task_id, indices))

    def check_alive(self):
        for wid, p in enumerate(self.procs):
            if p.exitcode is not None:
                code = p.exitcode
                how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
                       else f"exited unexpectedly with exit code {code}")
                self.close(graceful=False)
                raise RuntimeError(f"DataLoader worker {wid} (pid {p.pid}) {how}; the batches "
                                   f"it held are lost (a crash in the dataset, or out of memory?)")

    def get(self, what):
        """The next (epoch, task_id, result) from any worker; waits at most `timeout`
        seconds (0: for ever) and fails as soon as a worker has died."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while True:
            left = POLL_S if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                epoch, task_id, blob = self.results.get(timeout=min(POLL_S, left))
            except queue.Empty:
                self.check_alive()
                if deadline is not None and time.monotonic() >= deadline:
                    self.close(graceful=False)
                    raise RuntimeError(f"DataLoader timed out after {self.timeout} s waiting "
                                       f"for {what} from its workers") from None
                continue
            return epoch, task_id, pickle.loads(blob)

    def close(self, graceful=True):
        """Tells the workers to exit and waits JOIN_S for them (graceful=False, after an
        error: no wait), then terminates those still running."""
        if self.closed:
            return
        self.closed = True
        for q, p in zip(self.tasks, self.procs):
            if p.exitcode is None:
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + (JOIN_S if graceful else 0)
        for p in self.procs:
            p.join(max(deadline - time.monotonic(), 0))
            if p.exitcode is None:
                p.terminate()
                p.join(1)
        for q in self.tasks + [self.results]:
            q.cancel_join_thread()   # a dead reader must not block this process's exit
            q.close()
