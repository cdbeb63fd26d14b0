# cython: boundscheck=False, wraparound=False, cdivision=True
"""Reductions of a compact array seen as (outer, red, inner) over its middle axis.

inner == 1 reduces contiguous runs; inner > 1 accumulates whole rows, which
vectorises across `inner` and needs no transpose (axis-0 sums of a batch).
"""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.stdint cimport int64_t
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for, threads_timed, arrived, channel_block
from mininet_ext._check cimport check_itemsize, need

cdef extern from *:
    """
    /* float32 sums accumulate in double; the simd pragma lets gcc reassociate. */
    static double mn_sum_f32(const float* x, ptrdiff_t n) {
        double s = 0; ptrdiff_t i;
        #pragma omp simd reduction(+:s)
        for (i = 0; i < n; i++) s += x[i];
        return s;
    }
    static double mn_sum_f64(const double* x, ptrdiff_t n) {
        double s = 0; ptrdiff_t i;
        #pragma omp simd reduction(+:s)
        for (i = 0; i < n; i++) s += x[i];
        return s;
    }
    """
    double mn_sum_f32(const float* x, Py_ssize_t n) nogil
    double mn_sum_f64(const double* x, Py_ssize_t n) nogil

cdef extern from *:
    """
    #include <string.h>
    /* o[i] = y[i] > 0 ? g[i] : 0 (a ReLU's gradient; a NaN y masks, as numpy's y > 0), and
     * the sum of o added lane by lane into tot (64 / sizeof(T) doubles): two 64-byte vector
     * accumulators (GCC vector extensions, whatever the ISA; an array of lanes made gcc
     * keep the sums in memory), the last part of a vector through a zero-padded copy. The
     * tail as scalar selects was a branch per item that random signs mispredicted half the
     * time, and the lanes totalled one by one a chain of dependent adds: a 4x4 map's rows
     * (16 items) took 60 ns each. */
    #define MN_DEF_RELU_MASK_ACC(NAME, T, IT)                                        \
    typedef T NAME##_v __attribute__((vector_size(64), aligned(sizeof(T))));         \
    typedef IT NAME##_m __attribute__((vector_size(64)));                            \
    static void NAME(const T* g, const T* y, T* o, ptrdiff_t n, double* tot) {       \
        enum { W = 64 / sizeof(T) };                                                 \
        NAME##_v a0 = {0}, a1 = {0}, zero = {0};                                     \
        ptrdiff_t i = 0;                                                             \
        for (; i + 2 * W <= n; i += 2 * W) {                                         \
            NAME##_v y0 = *(const NAME##_v*)(y + i), y1 = *(const NAME##_v*)(y + i + W); \
            NAME##_v g0 = *(const NAME##_v*)(g + i), g1 = *(const NAME##_v*)(g + i + W); \
            NAME##_v v0 = (NAME##_v)((NAME##_m)g0 & (NAME##_m)(y0 > zero));          \
            NAME##_v v1 = (NAME##_v)((NAME##_m)g1 & (NAME##_m)(y1 > zero));          \
            *(NAME##_v*)(o + i) = v0;                                                \
            *(NAME##_v*)(o + i + W) = v1;                                            \
            a0 += v0;                                                                \
            a1 += v1;                                                                \
        }                                                                            \
        if (i + W <= n) {                                                            \
            NAME##_v y0 = *(const NAME##_v*)(y + i), g0 = *(const NAME##_v*)(g + i);   \
            NAME##_v v0 = (NAME##_v)((NAME##_m)g0 & (NAME##_m)(y0 > zero));          \
            *(NAME##_v*)(o + i) = v0;                                                \
            a0 += v0;                                                                \
            i += W;                                                                  \
        }                                                                            \
        if (i < n) {                                                                 \
            ptrdiff_t m = n - i;                                                     \
            T gt[W] __attribute__((aligned(64))) = {0};                              \
            T yt[W] __attribute__((aligned(64))) = {0};                              \
            memcpy(gt, g + i, m * sizeof(T));                                        \
            memcpy(yt, y + i, m * sizeof(T));                                        \
            NAME##_v v = (NAME##_v)((NAME##_m)*(NAME##_v*)gt & (NAME##_m)(*(NAME##_v*)yt > zero)); \
            memcpy(o + i, &v, m * sizeof(T));                                        \
            a1 += v;                                                                 \
        }                                                                            \
        a0 += a1;                                                                    \
        for (int l = 0; l < W; l++) tot[l] += a0[l];                                 \
    }
    MN_DEF_RELU_MASK_ACC(mn_relu_mask_acc_f32, float, int)
    MN_DEF_RELU_MASK_ACC(mn_relu_mask_acc_f64, double, long long)
    """
    void mn_relu_mask_acc_f32(const float* g, const float* y, float* o, Py_ssize_t n,
                              double* tot) nogil
    void mn_relu_mask_acc_f64(const double* g, const double* y, double* o, Py_ssize_t n,
                              double* tot) nogil

# the reduction numbers, generated from mininet/backend/opcodes.py (REDUCE_OPS); argmax
# and argmin must stay last: `op >= ARGMAX` picks the index-writing kernels
cdef extern from "_ops.h":
    enum:
        SUM "MN_REDUCE_SUM"
        MAX "MN_REDUCE_MAX"
        MIN "MN_REDUCE_MIN"
        ARGMAX "MN_REDUCE_ARGMAX"
        ARGMIN "MN_REDUCE_ARGMIN"


# one thread's ns per float32 item summed (0.07-0.13 at 64k-256k items, Zen 4 EPYC):
# threads_timed weighs it against the cost of waking the team
cdef double NS_PER_ITEM = 0.08


cdef inline bint better(int op, floating x, floating best) noexcept nogil:
    # NaN wins, as in numpy
    if x != x:
        return best == best
    if op == MAX or op == ARGMAX:
        return x > best
    return x < best


cdef void reduce_run(int op, const floating* x, Py_ssize_t red, Py_ssize_t n,
                     floating* out, int64_t* idx) noexcept nogil:
    """Reduce one contiguous run of `red` items."""
    cdef Py_ssize_t r, k = 0
    cdef floating best
    if op == SUM:
        if floating is float:
            out[0] = <float>mn_sum_f32(x, red)
        else:
            out[0] = mn_sum_f64(x, red)
        return
    best = x[0]
    for r in range(1, red):
        if better(op, x[r], best):
            best = x[r]
            k = r
    if op == MAX or op == MIN:
        out[0] = best
    else:
        idx[0] = k


cdef void reduce_rows(int op, const floating* x, Py_ssize_t red, Py_ssize_t inner,
                      Py_ssize_t j0, Py_ssize_t j1, floating* out, int64_t* idx) noexcept nogil:
    """out[j] = op over r of x[r * inner + j], for j in [j0, j1)."""
    cdef Py_ssize_t r, j
    cdef floating v
    for j in range(j0, j1):
        out[j] = x[j]
        if op >= ARGMAX:
            idx[j] = 0
    for r in range(1, red):
        if op == SUM:
            for j in range(j0, j1):
                out[j] += x[r * inner + j]
        else:
            for j in range(j0, j1):
                v = x[r * inner + j]
                if better(op, v, out[j]):
                    out[j] = v
                    if op >= ARGMAX:
                        idx[j] = r


cdef void reduce_task(int op, const floating* x, Py_ssize_t outer, Py_ssize_t red, Py_ssize_t inner,
                      floating* out, int64_t* idx, Py_ssize_t t, Py_ssize_t ntasks) noexcept nogil:
    """Task t of ntasks: a share of the outer rows, or of the inner columns when outer is small."""
    cdef Py_ssize_t o, o0, o1, j0, j1
    if outer >= ntasks:
        o0 = outer * t // ntasks
        o1 = outer * (t + 1) // ntasks
        j0 = 0
        j1 = inner
    else:
        o0 = 0
        o1 = outer
        j0 = inner * t // ntasks
        j1 = inner * (t + 1) // ntasks
    for o in range(o0, o1):
        if inner == 1:
            reduce_run(op, x + o * red, red, 1, out + o, idx + o)
        else:
            reduce_rows(op, x + o * red * inner, red, inner, j0, j1, out + o * inner,
                        idx + o * inner)


cdef void reduce_all(int op, const floating* x, Py_ssize_t outer, Py_ssize_t red,
                     Py_ssize_t inner, floating* out, int64_t* idx, floating* scratch,
                     int parts, int nt) noexcept nogil:
    """parts: the partial sums per row of a split sum (scratch holds parts * outer), fixed
    by the size; nt: the threads that run them (threads_timed: by timing), so the sum's
    rounding does not depend on the timing."""
    cdef Py_ssize_t t
    if parts > 1 and outer * inner < parts:
        # one long run (e.g. a full sum): split it and combine the partial sums
        if op == SUM and inner == 1:
            for t in prange(parts * outer, num_threads=min(nt, parts), schedule='static'):
                arrived(threadid())
                reduce_run(op, x + (t // parts) * red + red * (t % parts) // parts,
                           red * (t % parts + 1) // parts - red * (t % parts) // parts, 1,
                           scratch + t, NULL)
            for t in range(outer):
                if floating is float:
                    out[t] = <float>mn_sum_f32(scratch + t * parts, parts)
                else:
                    out[t] = mn_sum_f64(scratch + t * parts, parts)
            return
        nt = 1
    if nt == 1:
        reduce_task(op, x, outer, red, inner, out, idx, 0, 1)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        reduce_task(op, x, outer, red, inner, out, idx, t, nt)


def reduce(int op, Buffer x, Py_ssize_t x_off, Py_ssize_t outer, Py_ssize_t red, Py_ssize_t inner,
           Buffer out, int itemsize):
    """Reduce compact x of shape (outer, red, inner) into out (outer, inner).
    op: 0 sum, 1 max, 2 min, 3 argmax, 4 argmin (int64 out)."""
    if not 0 <= op <= ARGMIN:
        raise ValueError(f"reduce: unknown op {op}")
    if red <= 0 and op != SUM:
        raise ValueError("reduce: max/min/argmax of an empty axis is undefined")
    if outer * inner == 0:
        return
    if red == 0:
        out.fill_zero()
        return
    # read the thread count once: set_num_threads from another thread must not make the
    # kernel run more threads than scratch has room for
    cdef int parts = threads_for(outer * red * inner)
    cdef int nt = threads_timed(outer * red * inner, outer * red * inner * NS_PER_ITEM)
    cdef Buffer scratch = Buffer(parts * 8 * outer)
    cdef float* f_out = <float*>out.ptr
    cdef double* d_out = <double*>out.ptr
    cdef int64_t* idx = <int64_t*>out.ptr
    cdef Buffer tmp
    if op >= ARGMAX:
        # values go to a scratch row, indices to out
        tmp = Buffer(outer * inner * itemsize)
        f_out = <float*>tmp.ptr
        d_out = <double*>tmp.ptr
    with nogil:
        if itemsize == 4:
            reduce_all(op, <float*>x.ptr + x_off, outer, red, inner, f_out, idx, <float*>scratch.ptr, parts, nt)
        else:
            reduce_all(op, <double*>x.ptr + x_off, outer, red, inner, d_out, idx, <double*>scratch.ptr, parts, nt)


cdef enum:
    RELU_BLOCK_MAX = 64   # channels relu_grad_channels takes together


cdef void relu_grad_channels(const floating* g, const floating* y, floating* out,
                             floating* db, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
                             Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """Channels k0..k1 (at most RELU_BLOCK_MAX), image by image over the block's rows
    together (_omp.channel_block: channel by channel, at small maps every row was a cache
    miss). Each channel's sum runs in one order, whatever the block and the threads."""
    cdef double tot[RELU_BLOCK_MAX][16]
    cdef double s
    cdef Py_ssize_t n, at, k, l
    for k in range(k1 - k0):
        for l in range(16):
            tot[k][l] = 0
    for n in range(N):
        for k in range(k0, k1):
            at = (n * K + k) * P
            if floating is float:
                mn_relu_mask_acc_f32(g + at, y + at, out + at, P, tot[k - k0])
            else:
                mn_relu_mask_acc_f64(g + at, y + at, out + at, P, tot[k - k0])
    for k in range(k0, k1):
        s = 0
        for l in range(16):
            s += tot[k - k0][l]
        db[k] = <floating>s


def relu_grad_bias(Buffer g, Py_ssize_t g_off, Buffer y, Py_ssize_t y_off, Buffer out,
                   Py_ssize_t out_off, Buffer db, Py_ssize_t db_off, Py_ssize_t N, Py_ssize_t K,
                   Py_ssize_t P, int itemsize):
    """The backward of relu(conv(x, w) + b) up to the convolution, in one pass over compact
    (N, K, P) arrays: out = g where y > 0, else 0 (y: the op's output), and db[k] = the sum
    of out over n and p (the bias gradient), against a mask pass and a sum pass that each
    read the whole map."""
    check_itemsize(itemsize, "relu_grad_bias")
    for buf, off, dims, name in ((g, g_off, (N, K, P), "output gradient"),
                                 (y, y_off, (N, K, P), "output"),
                                 (out, out_off, (N, K, P), "masked gradient"),
                                 (db, db_off, (K,), "bias gradient")):
        need(buf, off, dims, itemsize, "relu_grad_bias", name)
    if K == 0:
        return
    cdef int nt = threads_for(N * K * P)
    cdef Py_ssize_t blk = channel_block(K, P, nt, RELU_BLOCK_MAX), b
    cdef Py_ssize_t nb = (K + blk - 1) // blk
    with nogil:
        for b in prange(nb, num_threads=nt, schedule='static'):
            if itemsize == 4:
                relu_grad_channels(<float*>g.ptr + g_off, <float*>y.ptr + y_off,
                                   <float*>out.ptr + out_off, <float*>db.ptr + db_off, N, K,
                                   P, b * blk, min(K, (b + 1) * blk))
            else:
                relu_grad_channels(<double*>g.ptr + g_off, <double*>y.ptr + y_off,
                                   <double*>out.ptr + out_off, <double*>db.ptr + db_off, N,
                                   K, P, b * blk, min(K, (b + 1) * blk))
