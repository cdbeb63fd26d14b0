# cython: boundscheck=False, wraparound=False, cdivision=True
"""Machine peak kernels for `mininet bench peak`: FMA throughput and STREAM-style bandwidth."""
import os

from cython.parallel cimport prange

from mininet_ext._omp import forked_child

cdef extern from *:
    """
    #include <stddef.h>
    /* The vector width the kernels are compiled for (-march=native unless MININET_PORTABLE). */
    #if defined(__AVX512F__)
    #define MN_PK_VBYTES 64
    #define MN_PK_ISA "avx512f"
    #elif defined(__AVX2__) && defined(__FMA__)
    #define MN_PK_VBYTES 32
    #define MN_PK_ISA "avx2+fma"
    #elif defined(__AVX__)
    #define MN_PK_VBYTES 32
    #define MN_PK_ISA "avx"
    #elif defined(__ARM_NEON)
    #define MN_PK_VBYTES 16
    #define MN_PK_ISA "neon"
    #elif defined(__SSE2__)
    #define MN_PK_VBYTES 16
    #define MN_PK_ISA "sse2"
    #else
    #define MN_PK_VBYTES 16
    #define MN_PK_ISA "generic"
    #endif
    #include "_peak_fma.h"   /* MN_PK_CHAINS, MN_PK_FUSED, MN_PK_FMA_BODY */
    #ifdef _OPENMP
    #define MN_PK_OPENMP 1
    #else
    #define MN_PK_OPENMP 0
    #endif

    typedef float mn_pk_vf __attribute__((vector_size(MN_PK_VBYTES)));
    typedef double mn_pk_vd __attribute__((vector_size(MN_PK_VBYTES)));

    static const char *mn_pk_isa(void) { return MN_PK_ISA; }
    static int mn_pk_vbytes(void) { return MN_PK_VBYTES; }
    static int mn_pk_fused(void) { return MN_PK_FUSED; }
    static int mn_pk_chains(void) { return MN_PK_CHAINS; }
    static int mn_pk_openmp(void) { return MN_PK_OPENMP; }

    static double mn_pk_fma_f32(long long n, float a, float b, float x0) MN_PK_FMA_BODY(mn_pk_vf, float)
    static double mn_pk_fma_f64(long long n, double a, double b, double x0) MN_PK_FMA_BODY(mn_pk_vd, double)
    /* this build's own FMA kernel as a kernel set's peak table, so that fma() and
       fma_path() are one function over two tables */
    #include "_isa.h"
    static const mn_peak_kernels mn_pk_own = {
        MN_KERNELS_ABI, MN_PK_ISA, 8 * MN_PK_VBYTES, MN_PK_CHAINS, MN_PK_FUSED,
        mn_pk_fma_f32, mn_pk_fma_f64
    };

    static void mn_pk_fill(double *__restrict__ a, double v, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) a[i] = v;
    }
    static void mn_pk_copy(double *__restrict__ a, const double *__restrict__ b, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) a[i] = b[i];
    }
    static void mn_pk_triad(double *__restrict__ a, const double *__restrict__ b,
                            const double *__restrict__ c, double s, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
    }
    """
    const char *mn_pk_isa() nogil
    int mn_pk_vbytes() nogil
    int mn_pk_fused() nogil
    int mn_pk_chains() nogil
    int mn_pk_openmp() nogil
    void mn_pk_fill(double *a, double v, Py_ssize_t n) noexcept nogil
    void mn_pk_copy(double *a, const double *b, Py_ssize_t n) noexcept nogil
    void mn_pk_triad(double *a, const double *b, const double *c, double s, Py_ssize_t n) noexcept nogil

cdef extern from "_isa.h":
    ctypedef struct mn_peak_kernels:
        int abi
        const char* isa
        int vector_bits, chains, fused
        double (*fma_f32)(long long n, float a, float b, float x0) noexcept nogil
        double (*fma_f64)(long long n, double a, double b, double x0) noexcept nogil
    int MN_KERNELS_ABI
    const char* MN_PEAK_CAPSULE

cdef extern from *:
    const mn_peak_kernels mn_pk_own

from cpython.pycapsule cimport PyCapsule_GetPointer

# the STREAM kernels' ops, dispatched inside the parallel region
cdef enum:
    OP_FILL = 0
    OP_COPY = 1
    OP_TRIAD = 2


def isa():
    """The SIMD instruction set the kernels were compiled for: avx512f, avx2+fma, avx, sse2, neon, generic."""
    return mn_pk_isa().decode()


def vector_bits():
    """The width of the vectors the FMA kernel runs on, in bits."""
    return 8 * mn_pk_vbytes()


def fused():
    """True when the target has fused multiply-add (else x * a + b is a multiply and an add)."""
    return bool(mn_pk_fused())


def chains():
    """Independent accumulator vectors the FMA kernel keeps in flight."""
    return mn_pk_chains()


def flops_per_iteration(str dtype):
    """Flops one thread does per iteration of fma(): chains x lanes x 2 (a multiply and an add)."""
    return mn_pk_chains() * (mn_pk_vbytes() // _itemsize(dtype, "flops_per_iteration")) * 2


# libgomp's threads do not survive fork(): a child of a process whose team started would
# wait for them forever, so such a child runs these kernels on one thread (as _omp does)
cdef bint _team_started = False
cdef bint _forked_child = False


def _after_fork_in_child():
    global _forked_child
    if _team_started:
        _forked_child = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def max_threads(int threads):
    """The threads a parallel kernel here really runs on when asked for `threads`."""
    global _team_started
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not mn_pk_openmp() or _forked_child or forked_child():
        return 1   # a serial build, or a fork() child
    if threads > 1:
        _team_started = True
    return threads


cdef int _itemsize(str dtype, str where) except -1:
    if dtype == "float32":
        return 4
    if dtype == "float64":
        return 8
    raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype!r}")


def fma(str dtype, long long iterations, int threads=1, double a=0.5, double b=1.0, double x0=0.0):
    """sum over threads, chains j and lanes of x_n, where x_0 = x0 + j and x_{k+1} = x_k * a + b."""
    return _fma(&mn_pk_own, "fma", dtype, iterations, threads, a, b, x0)


cdef double _fma(const mn_peak_kernels* k, str where, str dtype, long long iterations,
                 int threads, double a, double b, double x0) except? -1:
    """fma() on the kernels of table k (this build's, or a kernel set's: fma_path)."""
    cdef int itemsize = _itemsize(dtype, where)
    if iterations < 0:
        raise ValueError(f"{where}: iterations must be >= 0, got {iterations}")
    cdef int t = max_threads(threads), j
    cdef double total = 0
    with nogil:
        for j in prange(t, schedule='static', num_threads=t):
            if itemsize == 4:
                total += k.fma_f32(iterations, <float>a, <float>b, <float>x0)
            else:
                total += k.fma_f64(iterations, a, b, x0)
    return total


cdef void _stream(int op, double *a, const double *b, const double *c, double s,
                  Py_ssize_t n, int t) noexcept nogil:
    """a = s (fill), a = b (copy) or a = b + s * c (triad), in t contiguous static chunks:
    the same chunk per thread for every op, so the pages a thread touched first are its own."""
    cdef int k
    cdef Py_ssize_t lo, hi, chunk = (n + t - 1) // t
    for k in prange(t, schedule='static', num_threads=t):
        lo = k * chunk
        hi = lo + chunk
        if hi > n:
            hi = n
        if lo < hi:
            if op == OP_FILL:
                mn_pk_fill(a + lo, s, hi - lo)
            elif op == OP_COPY:
                mn_pk_copy(a + lo, b + lo, hi - lo)
            else:
                mn_pk_triad(a + lo, b + lo, c + lo, s, hi - lo)


cdef bint _overlap(const double[::1] x, const double[::1] y):
    cdef Py_ssize_t n = x.shape[0], m = y.shape[0]
    if n == 0 or m == 0:
        return False
    return &x[0] < &y[0] + m and &y[0] < &x[0] + n


cdef int _threads_for(Py_ssize_t n, int threads) except -1:
    cdef int t = max_threads(threads)
    return <int>n if n < t else t   # no empty chunks (and none at all for n == 0)


def fill(double[::1] a not None, double value, int threads=1):
    """a[i] = value, each thread writing (and so first touching) the chunk it later streams."""
    cdef int t = _threads_for(a.shape[0], threads)
    if t > 0:
        with nogil:
            _stream(OP_FILL, &a[0], NULL, NULL, value, a.shape[0], t)


def copy(double[::1] a not None, const double[::1] b not None, int threads=1):
    """a[i] = b[i] (STREAM copy: 16 bytes moved per element)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"copy: lengths {a.shape[0]} and {b.shape[0]} differ")
    if _overlap(a, b):
        raise ValueError("copy: the destination overlaps the source")
    cdef int t = _threads_for(a.shape[0], threads)
    if t > 0:
        with nogil:
            _stream(OP_COPY, &a[0], &b[0], NULL, 0.0, a.shape[0], t)


def triad(double[::1] a not None, const double[::1] b not None, const double[::1] c not None,
          double s, int threads=1):
    """a[i] = b[i] + s * c[i] (STREAM triad: 24 bytes moved per element)."""
    if a.shape[0] != b.shape[0] or a.shape[0] != c.shape[0]:
        raise ValueError(f"triad: lengths {a.shape[0]}, {b.shape[0]} and {c.shape[0]} differ")
    if _overlap(a, b) or _overlap(a, c):
        raise ValueError("triad: the destination overlaps a source")
    cdef int t = _threads_for(a.shape[0], threads)
    if t > 0:
        with nogil:
            _stream(OP_TRIAD, &a[0], &b[0], &c[0], s, a.shape[0], t)


# per kernel set (path) ----------------------------------------------------------------------

cdef const mn_peak_kernels* _path_table(str isa) except NULL:
    """The FMA peak kernel of mininet_ext._kern_<isa> (a ValueError or RuntimeError naming
    the problem when this build or CPU has no such set)."""
    from mininet_ext import _isa
    cdef const mn_peak_kernels* k = <const mn_peak_kernels*>PyCapsule_GetPointer(
        _isa.peak_kernels(isa), MN_PEAK_CAPSULE)
    if k.abi != MN_KERNELS_ABI:
        raise ImportError(f"mininet_ext._kern_{isa} comes from another build of mininet: "
                          f"rebuild the extensions")
    return k


def path_info(str isa):
    """{"isa", "vector_bits", "chains", "fused"} of the FMA peak kernel of kernel set `isa`."""
    cdef const mn_peak_kernels* k = _path_table(isa)
    return {"isa": k.isa.decode(), "vector_bits": k.vector_bits, "chains": k.chains,
            "fused": bool(k.fused)}


def path_flops_per_iteration(str isa, str dtype):
    """Flops one thread does per iteration of fma_path(isa, ...)."""
    cdef const mn_peak_kernels* k = _path_table(isa)
    return k.chains * (k.vector_bits // (8 * _itemsize(dtype, "path_flops_per_iteration"))) * 2


def fma_path(str isa, str dtype, long long iterations, int threads=1, double a=0.5,
             double b=1.0, double x0=0.0):
    """fma() with the vector width and instructions of kernel set `isa` (generic: SSE2
    multiply + add; avx2: 256-bit FMA; avx512, avx512bf16: 512-bit FMA)."""
    return _fma(_path_table(isa), "fma_path", dtype, iterations, threads, a, b, x0)
