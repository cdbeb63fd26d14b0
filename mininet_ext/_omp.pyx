# cython: boundscheck=False, wraparound=False, cdivision=True
"""Thread count for every parallel kernel (MININET_NUM_THREADS, then OMP_NUM_THREADS)."""
import os
import warnings

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int mn_openmp_enabled(void) { return 1; }
    static int mn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int mn_openmp_enabled(void) { return 0; }
    static int mn_omp_max_threads(void) { return 1; }
    #endif
    """
    int mn_openmp_enabled() nogil
    int mn_omp_max_threads() nogil

# Below this many elements (or flops / 64) a kernel runs on one thread: waking
# the OpenMP team costs more than it saves.
cdef enum:
    PARALLEL_GRAIN = 32768

cdef int _num_threads = 1
cdef int _team_started = 0     # a parallel region has run in this process
cdef int _forked_child = 0     # we are a fork() child of a process whose team had started


cdef int num_threads() noexcept nogil:
    return _num_threads


cdef int threads_for(Py_ssize_t work) noexcept nogil:
    """Threads to use for `work` elements: 1 for small jobs."""
    global _team_started
    if work < PARALLEL_GRAIN or _num_threads <= 1:
        return 1
    _team_started = 1
    cdef Py_ssize_t t = work // PARALLEL_GRAIN
    return <int>t if t < _num_threads else _num_threads


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
