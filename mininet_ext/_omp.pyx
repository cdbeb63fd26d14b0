# cython: boundscheck=False, wraparound=False, cdivision=True
"""Thread count for every parallel kernel (MININET_NUM_THREADS, then OMP_NUM_THREADS)."""
import os
import warnings
from cython.parallel cimport prange, threadid

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int mn_openmp_enabled(void) { return 1; }
    static int mn_omp_max_threads(void) { return omp_get_max_threads(); }
    static double mn_omp_time(void) { return omp_get_wtime(); }
    static void mn_count(long long* p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }
    #else
    static void mn_count(long long* p) { ++*p; }
    #include <time.h>
    static int mn_openmp_enabled(void) { return 0; }
    static int mn_omp_max_threads(void) { return 1; }
    static double mn_omp_time(void)
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
    #endif
    """
    int mn_openmp_enabled() nogil
    int mn_omp_max_threads() nogil
    double mn_omp_time() nogil
    void mn_count(long long* p) nogil

# Below this many elements (or flops / 64) a kernel runs on one thread: waking
# the OpenMP team costs more than it saves.
cdef enum:
    PARALLEL_GRAIN = 32768

cdef int _num_threads = 1
cdef int _team_started = 0     # a parallel region has run in this process
cdef int _forked_child = 0     # we are a fork() child of a process whose team had started


cdef int num_threads() noexcept nogil:
    return _num_threads


cdef int size_threads(Py_ssize_t work) noexcept nogil:
    """threads_for's count, with none of its effects (for reporting a choice)."""
    if work < PARALLEL_GRAIN or _num_threads <= 1:
        return 1
    cdef Py_ssize_t t = work // PARALLEL_GRAIN
    return <int>t if t < _num_threads else _num_threads


cdef int threads_for(Py_ssize_t work) noexcept nogil:
    """Threads to use for `work` elements: 1 for small jobs. The count is the size's
    alone, and the region that follows is not timed: the last timed region's samples are
    folded in and its description dropped, so that arrived and finished in a region on
    this count note nothing (else they timed it from the last timed region's start: a
    K split after a pause made the estimates of waking cost and slowdown jump)."""
    global _team_started, _region_nt
    fold_sample()
    _region_nt = 0
    cdef int nt = size_threads(work)
    if nt > 1:
        _team_started = 1
    return nt


cdef Py_ssize_t chunk_items(Py_ssize_t n, int nt, Py_ssize_t per_thread) noexcept nogil:
    """Items per chunk when n items are handed out to nt threads as they come free
    (schedule='dynamic', or work claims: _claim.h): about per_thread chunks a thread, at
    least one item a chunk. A thread slowed by its core (another process on it, a busy
    SMT sibling on a shared host) then leaves its share to the others instead of holding
    the pass."""
    cdef Py_ssize_t per = n // (max(nt, 1) * max(per_thread, 1))
    return per if per > 1 else 1


# Adaptive team use (threads_timed). A region costs the time its last thread takes to
# arrive: ~1 us while the other thread still spins after the last region, tens of us
# to wake it from sleep on an idle VM, ~100 us when other processes hold the cores (a
# 2-core EPYC shared by 8 processes: 2 threads made the MLP step 2-3x slower than 1).
# Kernels that call threads_timed note their last thread's arrival (arrived), and the
# running estimate of that cost decides whether a job's share of work pays for it.
cdef extern from *:
    """
    #include <time.h>
    static double mn_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
    }
    """
    double mn_now_ns() nogil

cdef double PROBE_NS = 20e6     # while one thread is chosen, re-measure at most every 20 ms
cdef double SAMPLE_CAP = 2e6    # one descheduled arrival (a time slice) counts as 2 ms
cdef double _wake_ns = 0        # running estimate of a region's arrival cost (0: unmeasured)
cdef double _region_start = 0   # when the region being measured began
cdef double _sample = -1        # its last thread's arrival, ns after _region_start (-1: none)
cdef double _last_probe = 0
cdef int _region_nt = 0         # threads of the region being measured (0: none)
cdef double _region_est = 0     # its one-thread estimate (ns)
cdef double _share_ns = -1      # how long the calling thread took over its share (-1: none)
cdef double _slowdown = 1       # running ratio of a share's time to its estimate: above 1
                                # on a busy machine, where one thread alone is slower too
cdef bint _adaptive = 1


cdef inline void fold_sample() noexcept nogil:
    global _wake_ns, _sample, _share_ns, _slowdown
    cdef double s = _sample
    if s >= 0:
        s = s if s < SAMPLE_CAP else SAMPLE_CAP
        # a quarter weight: follows a change of load within a few regions, not one outlier
        _wake_ns = s if _wake_ns == 0 else _wake_ns + (s - _wake_ns) * 0.25
        _sample = -1
    if _share_ns >= 0:
        if _region_est > 0 and _region_nt > 0:   # (a share of a region still described)
            s = _share_ns / (_region_est / _region_nt)
            s = 1 if s < 1 else 20 if s > 20 else s
            _slowdown += (s - _slowdown) * 0.25
        _share_ns = -1


cdef int threads_timed(Py_ssize_t work, double est_ns) noexcept nogil:
    """Threads for a job of `work` elements (threads_for's floor) that takes about est_ns
    on one thread: 1 while waking the team is expected to cost more than the others'
    shares save. The kernel must call arrived(threadid()) first in its parallel body."""
    global _region_start, _region_nt, _region_est, _last_probe
    cdef int nt = threads_for(work)   # (which folds the last region's figures in)
    cdef double now
    if nt == 1 or not _adaptive:
        return nt
    now = mn_now_ns()
    # the others' shares save est (nt - 1) / nt, at the speed this thread has lately had
    if est_ns * _slowdown * (nt - 1) / nt <= _wake_ns:
        if now - _last_probe < PROBE_NS:
            return 1
        _last_probe = now     # a probe: the load may have changed since
    _region_start = now
    _region_est = est_ns
    _region_nt = nt
    return nt


cdef void arrived(int tid) noexcept nogil:
    """Called by each thread as it starts its share: the last thread's arrival is noted."""
    global _sample
    if tid > 0 and tid == _region_nt - 1 and _sample < 0:
        _sample = mn_now_ns() - _region_start


cdef void finished(int tid) noexcept nogil:
    """Called by each thread after its share (or each of its pieces): the calling
    thread's time is noted, which measures how fast one thread runs now."""
    global _share_ns
    if tid == 0 and _region_nt > 0:
        _share_ns = mn_now_ns() - _region_start


def slowdown():
    """The running ratio of the calling thread's share time to its estimate (>= 1)."""
    return _slowdown


def wake_cost_ns():
    """The running estimate of a parallel region's arrival cost (ns; 0 before any)."""
    return _wake_ns


def set_adaptive(bint on):
    """Whether threads_timed weighs the measured arrival cost (False: size floors only,
    as threads_for; for benchmarks and tests). Returns the previous setting."""
    global _adaptive
    old = bool(_adaptive)
    _adaptive = on
    return old


def reset_wake_cost(double ns=0):
    """Set the arrival-cost estimate to ns (0: forget it; the next parallel job measures
    it afresh). For tests and benchmarks: kernels measure it as they run."""
    global _wake_ns, _sample, _last_probe, _share_ns, _slowdown
    if not ns >= 0:
        raise ValueError(f"reset_wake_cost: ns must be >= 0, got {ns}")
    _wake_ns = ns
    _sample = -1
    _share_ns = -1
    _slowdown = 1
    _last_probe = mn_now_ns()   # no probe for PROBE_NS: the value set here is used


ENV_ERROR = None   # why MININET_NUM_THREADS / OMP_NUM_THREADS was ignored, if it was


def _default_threads():
    """The thread count from the environment, else the usable cores. A bad value must not
    make `import mininet` fail (nor print at import): it is ignored and recorded in
    ENV_ERROR, which the CLI reports as an error and `mininet info` shows."""
    global ENV_ERROR
    for var in ("MININET_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value.split(",")[0])
            except ValueError:
                n = 0
            if n >= 1:
                return n
            ENV_ERROR = (f"{var}={value!r} is not a positive integer: set it to a thread count "
                         f"such as 2, or unset it")
            break
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_num_threads(int n):
    """Set the number of threads used by every kernel (>= 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if _forked_child and n > 1:
        warnings.warn("mininet: this process was forked after its parent ran threaded kernels; "
                      "GNU OpenMP cannot start threads in such a child, so it stays at 1 thread "
                      "(use the 'spawn' start method for threaded workers)", stacklevel=2)
        n = 1
    _num_threads = n if mn_openmp_enabled() else 1


def _after_fork_in_child():
    """libgomp's thread pool does not survive fork(): a child that opened a parallel region
    would wait forever for threads that only exist in the parent. Run serially instead."""
    global _num_threads, _forked_child
    if _team_started:
        _forked_child = 1
        _num_threads = 1


def forked_child():
    """True in a fork() child whose parent had started OpenMP threads (kernels run serially)."""
    return bool(_forked_child)


def get_num_threads():
    """The number of threads every kernel uses: set_num_threads sets it; at import,
    MININET_NUM_THREADS or OMP_NUM_THREADS, else the usable cores (1 without OpenMP)."""
    return _num_threads


def openmp_enabled():
    return bool(mn_openmp_enabled())


set_num_threads(_default_threads())
os.register_at_fork(after_in_child=_after_fork_in_child)


def claims_trace(Py_ssize_t n, int nt, int late=-1, double late_s=0.0, double chunk_s=0.0):
    """Run n chunks on nt threads through work claims (_claim.h) and return, for each
    chunk, the thread that ran it (-1: none, -2: more than one). late: a thread that
    waits late_s seconds before its first claim; each chunk busy-waits chunk_s. For tests
    of the claims."""
    if n < 0 or nt < 1:
        raise ValueError(f"claims_trace: n must be >= 0 and nt >= 1, got {n} and {nt}")
    import array
    cdef long long[::1] who = array.array("q", [-1] * max(n, 1))
    cdef long long[::1] runs = array.array("q", [0] * max(n, 1))
    cdef Py_ssize_t i, c
    cdef int u, t
    cdef mn_claims cl
    claims_start(&cl, n, nt)
    with nogil:
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            if t == late:
                _busy(late_s)
            c = mn_claim(&cl, t)
            while c >= 0:
                who[c] = t
                mn_count(&runs[c])
                _busy(chunk_s)
                c = mn_claim(&cl, t)
    mn_claims_free(&cl)
    return [who[i] if runs[i] == 1 else (-1 if runs[i] == 0 else -2) for i in range(n)]


cdef void _busy(double seconds) noexcept nogil:
    cdef double t0 = mn_omp_time()
    while mn_omp_time() - t0 < seconds:
        pass
