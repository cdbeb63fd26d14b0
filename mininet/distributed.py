"""Data-parallel training over MPI (mpi4py, `pip install 'mininet-dl[mpi]'`).

Every rank holds the whole model and trains on its own shard of each global batch
(data.DistributedSampler); after backward the ranks average their gradients, so each takes
the same optimizer step. GradientReducer overlaps that averaging with backward: parameters
are grouped into flat buckets of a few MB, in the reverse of their order (the last layers'
gradients are ready first), and a bucket's non-blocking Iallreduce starts as soon as its
last gradient has been accumulated.

Outside mpirun the world is one process: every function here works unchanged and mpi4py
is never imported. Every wait on another rank has a deadline (MININET_DIST_TIMEOUT
seconds, default 300): a rank that died or stopped makes the others fail with an error
naming the collective, then abort the job, instead of hanging.
"""
import os
import pickle
import sys
import threading
import time

import numpy as np

_comm = None       # MPI.COMM_WORLD once init() ran under mpirun; None: one process
_ctl = None        # a duplicate of it for finalize(): collectives on _comm may be in flight
_closing = None    # finalize()'s barrier request
_MPI = None
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS")
DEFAULT_TIMEOUT = 300.0


class DistributedError(RuntimeError):
    """MPI is missing, or another rank did not take part in a collective in time."""


def launched_by_mpi():
    """True in a process that mpirun (Open MPI, MPICH) started."""
    return any(k in os.environ for k in _MPI_ENV)


def init(threads=None):
    """Join the MPI world when launched by mpirun (else stay one process; no-op when called
    twice). Sets this rank's threads: `threads`, else MININET_NUM_THREADS / OMP_NUM_THREADS,
    else the cores this rank may use divided among the ranks on this machine."""
    global _comm, _ctl, _MPI
    if _comm is not None or not launched_by_mpi():
        return
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError("started by mpirun, but mpi4py is not installed: "
                               "pip install 'mininet-dl[mpi]'") from None
    _MPI, _comm = MPI, MPI.COMM_WORLD
    _ctl, request = _comm.Idup()
    wait([request], "init (joining the other ranks)")
    from mininet_ext._omp import set_num_threads
    if threads:
        set_num_threads(threads)
    elif not (os.environ.get("MININET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        set_num_threads(default_threads(_comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()))


def default_threads(local_ranks):
    """Cores per rank: a rank bound to some cores (mpirun's default binding) uses those;
    an unbound one (mpirun --bind-to none) a fair share of the machine's."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total = os.cpu_count() or 1
    if allowed < total:
        return max(1, allowed)
    return max(1, total // max(local_ranks, 1))


def is_initialized():
    return _comm is not None


def rank():
    return _comm.Get_rank() if _comm is not None else 0


def world_size():
    return _comm.Get_size() if _comm is not None else 1


def timeout():
    value = os.environ.get("MININET_DIST_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise DistributedError(f"MININET_DIST_TIMEOUT must be a number of seconds, got {value!r}") from None


def abort(code=1):
    """End every rank of the job (after an error on this one); a no-op outside MPI."""
    if _comm is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        _comm.Abort(code)


def wait(requests, what):
    """Wait for MPI requests, polling so that a rank that never comes fails after
    timeout() seconds instead of hanging: spin briefly (collectives of a step take
    micro- to milliseconds), then sleep between polls."""
    requests = [r for r in requests if r is not None]
    if not requests:
        return
    limit = timeout()
    start = time.perf_counter()
    while not _MPI.Request.Testall(requests):
        now = time.perf_counter()
        if now - start > limit:
            raise DistributedError(
                f"rank {rank()}: {what} did not complete within {limit:.0f} s: another rank "
                "died, stopped or took a different path (MININET_DIST_TIMEOUT sets the limit)")
        if now - start > 0.01:
            time.sleep(0.0005 if now - start < 1 else 0.005)


# collectives on numpy arrays and objects ------------------------------------------------
def allreduce_(array, what="allreduce"):
    """Sum a C-contiguous numpy array over the ranks, in place; returns it."""
    if _comm is not None:
        wait([_comm.Iallreduce(_MPI.IN_PLACE, array, op=_MPI.SUM)], what)
    return array


def broadcast_(array, root=0, what="broadcast"):
    """Overwrite a C-contiguous numpy array with root's, in place; returns it."""
    if _comm is not None:
        wait([_comm.Ibcast(array, root=root)], what)
    return array


def broadcast_object(obj, root=0, what="broadcast"):
    """root's picklable object on every rank (e.g. a checkpoint's bytes, or the error
    that stopped root reading it)."""
    if _comm is None:
        return obj
    data = pickle.dumps(obj) if rank() == root else b""
    size = broadcast_(np.array([len(data)], dtype=np.int64), root, what)
    buf = np.frombuffer(data, dtype=np.uint8).copy() if rank() == root else np.empty(size[0], np.uint8)
    broadcast_(buf, root, what)
    return obj if rank() == root else pickle.loads(buf.tobytes())


def barrier(what="barrier"):
    if _comm is not None:
        wait([_comm.Ibarrier()], what)


def finalize():
    """End this rank's part in the job: meet every other rank (a barrier with the deadline
    of every wait, on a communicator of its own, so collectives still in flight after an
    interrupt do not matter), then shut MPI down. A rank that stopped or died before it
    makes this one fail with a DistributedError (the caller ends the job), instead of
    waiting in MPI_Finalize forever; MPI_Finalize itself gets the same deadline (a watchdog
    ends the process). A no-op outside MPI and when called twice."""
    global _comm, _ctl, _closing
    if _comm is None:
        return
    if _closing is None:   # kept: a call that an interrupt stopped waits again, on the same one
        _closing = _ctl.Ibarrier()
    wait([_closing], "finishing the job (the barrier before MPI_Finalize)")
    me, limit = rank(), timeout()

    def stuck():
        sys.stderr.write(f"error: rank {me}: MPI_Finalize did not complete within {limit:.0f} s: "
                         "another rank stopped (MININET_DIST_TIMEOUT sets the limit)\n")
        sys.stderr.flush()
        os._exit(1)
    watchdog = threading.Timer(limit, stuck)
    watchdog.daemon = True
    watchdog.start()
    sys.stdout.flush()
    sys.stderr.flush()
    _comm = _ctl = _closing = None
    _MPI.Finalize()
    watchdog.cancel()


# parameters and gradients ------------------------------------------------------------------
def _host(nd):
    """A numpy view of a compact CPU NDArray (no copy), else a numpy copy."""
    if nd.device.has("share_host") and nd.is_compact() and nd.size:
        return nd.device.array_view(nd)
    return nd.numpy()


def _params(model_or_params):
    params = model_or_params.parameters() if hasattr(model_or_params, "parameters") else model_or_params
    return list(params)


def broadcast_parameters(model, root=0):
    """Every rank's parameters (and a Module's buffers, such as BatchNorm's running
    statistics) become root's: call once after building the model, before training."""
    _in_place(_params(model) + list(_buffers(model)),
              lambda flat: broadcast_(flat, root, "broadcast_parameters"))


def average_buffers(model):
    """Average a Module's buffers (BatchNorm's running statistics, which each rank
    gathers from its own shard) over the ranks, so every rank evaluates, and rank 0
    saves, the same model. The training loop calls it before each evaluation."""
    def average(flat):
        allreduce_(flat, "average_buffers")
        flat /= world_size()
    _in_place(list(_buffers(model)), average)


def _in_place(tensors, collective):
    """Run collective on the tensors' data packed flat (one array per dtype), then give
    each tensor its part of the result."""
    if _comm is None:
        return
    from .ndarray import NDArray
    for group in _by_dtype(tensors):
        flat = np.concatenate([_host(t.cached_data).ravel() for t in group])
        collective(flat)
        at = 0
        for t in group:
            n = t.cached_data.size
            t.cached_data = NDArray(flat[at:at + n].reshape(t.shape), dtype=t.dtype, device=t.device)
            at += n


def _buffers(model):
    """Tensors a Module keeps besides its parameters (running statistics)."""
    for m in (model.modules() if hasattr(model, "modules") else ()):
        for name in getattr(m, "_buffers", ()):
            t = getattr(m, name, None)
            if t is not None and hasattr(t, "cached_data"):
                yield t


def _by_dtype(tensors):
    groups = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return list(groups.values())


class _Bucket:
    def __init__(self, params):
        self.params = params
        self.size = sum(p.cached_data.size for p in params)
        self.dtype = params[0].dtype
        self.reset()

    def reset(self):
        self.flat, self.ready, self.request, self.copied = None, set(), None, {}

    def add(self, p):
        """Copy p's gradient into the flat buffer; True when the bucket is complete."""
        if self.flat is None:  # a fresh buffer per step: last step's grads are views of the old
            self.flat = np.empty(self.size, dtype=self.dtype)
        at = self.offsets[id(p)]
        n = p.cached_data.size
        np.copyto(self.flat[at:at + n].reshape(p.shape), _host(p.grad.cached_data), casting="unsafe")
        self.ready.add(id(p))
        self.copied[id(p)] = p.grad
        return len(self.ready) == len(self.params)


class GradientReducer:
    """Averages gradients over the ranks in buckets of about bucket_mb MB, each started
    (Iallreduce) during backward as soon as its gradients are complete; finish() waits for
    them and writes the averages back, before opt.step(). With one process it does nothing.

        reducer = GradientReducer(model)
        loss.backward()
        reducer.finish()
        opt.step()
    """

    def __init__(self, model, bucket_mb=4.0, overlap=True):
        self.params = [p for p in _params(model) if p.requires_grad]
        self.buckets, self.handles = [], []
        self.comm_seconds = 0.0   # time spent in finish() waiting (not overlapped)
        if _comm is None:
            return
        cap = max(int(bucket_mb * 2 ** 20), 1)
        for group in _by_dtype(reversed(self.params)):
            current, nbytes = [], 0
            for p in group:
                current.append(p)
                nbytes += p.cached_data.size * p.dtype.itemsize
                if nbytes >= cap:
                    self.buckets.append(_Bucket(current))
                    current, nbytes = [], 0
            if current:
                self.buckets.append(_Bucket(current))
        self.bucket_of = {}
        for b in self.buckets:
            b.offsets, at = {}, 0
            for p in b.params:
                b.offsets[id(p)] = at
                at += p.cached_data.size
                self.bucket_of[id(p)] = b
        if overlap:
            self.handles = [p.register_post_accumulate_grad_hook(self._ready) for p in self.params]
        self.next = 0   # buckets start in order: every rank must issue collectives alike

    def _ready(self, p):
        bucket = self.bucket_of[id(p)]
        if bucket.request is not None:
            return   # accumulated again after its bucket left (a shared weight): finish() redoes it
        bucket.add(p)
        self._launch()
        # Open MPI moves a non-blocking collective on only inside MPI calls: give the
        # buckets in flight a push at every gradient
        flying = [b.request for b in self.buckets[:self.next]]
        if flying:
            _MPI.Request.Testall(flying)

    def _launch(self):
        while self.next < len(self.buckets):
            b = self.buckets[self.next]
            if len(b.ready) < len(b.params):
                break
            b.request = _comm.Iallreduce(_MPI.IN_PLACE, b.flat, op=_MPI.SUM)
            self.next += 1

    def finish(self):
        """Wait for every bucket and set each parameter's .grad to the average over ranks.
        Parameters without a gradient this step count as zeros (as on the other ranks)."""
        if _comm is None:
            return
        t0 = time.perf_counter()
        for b in self.buckets[self.next:]:   # unused parameters: zeros, so every rank has a grad
            for p in b.params:
                if id(p) not in b.ready:
                    if p.grad is None:
                        p.grad = _zeros_grad(p)
                    b.add(p)
        self._launch()
        wait([b.request for b in self.buckets], "gradient allreduce")
        redo = [b for b in self.buckets if any(b.copied[id(p)] is not p.grad for p in b.params)]
        for b in redo:   # a gradient changed after its bucket was sent: send it again
            for p in b.params:
                b.add(p)
            allreduce_(b.flat, "gradient allreduce")
        self.comm_seconds += time.perf_counter() - t0
        scale = 1.0 / world_size()
        from .autograd import Tensor
        from .ndarray import share_numpy
        for b in self.buckets:
            b.flat *= b.flat.dtype.type(scale)
            for p in b.params:
                at, n = b.offsets[id(p)], p.cached_data.size
                p.grad = Tensor.make_const(share_numpy(b.flat[at:at + n].reshape(p.shape), p.device))
            b.reset()
        self.next = 0

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def _zeros_grad(p):
    from .autograd import Tensor
    from .ndarray import NDArray
    return Tensor.make_const(NDArray.make(p.shape, device=p.device, dtype=p.dtype).fill(0.0))


def allreduce_gradients(model, bucket_mb=4.0):
    """Average every parameter's gradient over the ranks now (blocking, in flat buckets),
    for loops that do not keep a GradientReducer."""
    GradientReducer(model, bucket_mb, overlap=False).finish()
