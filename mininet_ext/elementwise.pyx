# cython: boundscheck=False, wraparound=False, cdivision=True
"""Elementwise kernels: out[idx] = op(a[idx], b[idx]) with any strides
(broadcast inputs have stride 0); the output is always compact."""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.stdint cimport uint8_t
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_timed, arrived
from mininet_ext._nd cimport MAXDIM, load_dims, collapse, total_size, row_start, compact_strides

cdef extern from "_ewise.h" nogil:
    void mn_binary_f32(int op, const float* a, Py_ssize_t sa, const float* b, Py_ssize_t sb,
                       float* o, Py_ssize_t n)
    void mn_binary_f64(int op, const double* a, Py_ssize_t sa, const double* b, Py_ssize_t sb,
                       double* o, Py_ssize_t n)
    void mn_unary_f32(int op, const float* a, Py_ssize_t sa, float* o, Py_ssize_t n)
    void mn_unary_f64(int op, const double* a, Py_ssize_t sa, double* o, Py_ssize_t n)
    void mn_compare_f32(int op, const float* a, Py_ssize_t sa, const float* b, Py_ssize_t sb,
                        uint8_t* o, Py_ssize_t n)
    void mn_compare_f64(int op, const double* a, Py_ssize_t sa, const double* b, Py_ssize_t sb,
                        uint8_t* o, Py_ssize_t n)
    void mn_logical(int op, const uint8_t* a, Py_ssize_t sa, const uint8_t* b, Py_ssize_t sb,
                    uint8_t* o, Py_ssize_t n)
    int NUM_BINARY "MN_NUM_BINARY"
    int NUM_UNARY "MN_NUM_UNARY"
    const char* OPS_SIGNATURE "MN_OPS_SIGNATURE"
    const int* unary_cost "mn_unary_cost"
    const unsigned char* is_compare "mn_is_compare"

# one thread's time per element of a float32 add (0.14-0.15 ns at 64k-256k elements, Zen 4
# EPYC); a transcendental op counts unary_cost items per element. threads_timed weighs it
# against the measured cost of waking the team.
cdef double NS_PER_ITEM = 0.12

# the op table these kernels were built from (backend/cpu.py checks it against opcodes.py)
SIGNATURE = OPS_SIGNATURE.decode()


cdef void binary_range(int op, const floating* a, const floating* b, floating* o, int nd,
                       const Py_ssize_t* shape, const Py_ssize_t* sa, const Py_ssize_t* sb,
                       const Py_ssize_t* so, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t inner = shape[nd - 1], pos = start, row, col, n, oa, ob, unused
    while pos < stop:
        row = pos // inner
        col = pos - row * inner
        row_start(row, nd, shape, sa, sb, so, &oa, &ob, &unused)
        n = inner - col if inner - col < stop - pos else stop - pos
        oa += col * sa[nd - 1]
        ob += col * sb[nd - 1]
        if floating is float:
            mn_binary_f32(op, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + pos, n)
        else:
            mn_binary_f64(op, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + pos, n)
        pos += n


cdef void binary_run(int op, const floating* a, const floating* b, floating* o, int nd,
                     const Py_ssize_t* shape, const Py_ssize_t* sa, const Py_ssize_t* sb,
                     const Py_ssize_t* so) noexcept nogil:
    cdef Py_ssize_t total = total_size(nd, shape)
    cdef int nt = threads_timed(total, total * NS_PER_ITEM), t
    if nt == 1:
        binary_range(op, a, b, o, nd, shape, sa, sb, so, 0, total)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        # chunk edges on 16-element boundaries keep the vector loops aligned
        binary_range(op, a, b, o, nd, shape, sa, sb, so,
                     (total * t // nt) & ~15, total if t == nt - 1 else (total * (t + 1) // nt) & ~15)


cdef int prepare(tuple shape, tuple a_strides, tuple b_strides, Py_ssize_t* sh, Py_ssize_t* sa,
                 Py_ssize_t* sb, Py_ssize_t* so) except -1:
    cdef int nd = load_dims(shape, sh)
    load_dims(a_strides, sa)
    load_dims(b_strides, sb)
    compact_strides(nd, sh, so)
    return collapse(nd, sh, sa, sb, so)


def binary(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, Buffer b, Py_ssize_t b_off,
           tuple b_strides, Buffer out, tuple shape, int itemsize):
    """out = op(a, b) over `shape`; strides (in items) may be 0 for broadcast dims."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    if not 0 <= op < NUM_BINARY:
        raise ValueError(f"binary: unknown op {op}")
    cdef int nd = prepare(shape, a_strides, b_strides, sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        if itemsize == 4:
            binary_run(op, <float*>a.ptr + a_off, <float*>b.ptr + b_off, <float*>out.ptr,
                       nd, sh, sa, sb, so)
        else:
            binary_run(op, <double*>a.ptr + a_off, <double*>b.ptr + b_off, <double*>out.ptr,
                       nd, sh, sa, sb, so)


def binary_scalar(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, double value,
                  bint reverse, Buffer out, tuple shape, int itemsize):
    """out = op(a, value), or op(value, a) when reverse."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    cdef float f = <float>value
    cdef double d = value
    if not 0 <= op < NUM_BINARY:
        raise ValueError(f"binary_scalar: unknown op {op}")
    zeros = (0,) * len(shape)
    cdef int nd = prepare(shape, zeros if reverse else a_strides, a_strides if reverse else zeros,
                          sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        if itemsize == 4 and reverse:
            binary_run(op, &f, <float*>a.ptr + a_off, <float*>out.ptr, nd, sh, sa, sb, so)
        elif itemsize == 4:
            binary_run(op, <float*>a.ptr + a_off, &f, <float*>out.ptr, nd, sh, sa, sb, so)
        elif reverse:
            binary_run(op, &d, <double*>a.ptr + a_off, <double*>out.ptr, nd, sh, sa, sb, so)
        else:
            binary_run(op, <double*>a.ptr + a_off, &d, <double*>out.ptr, nd, sh, sa, sb, so)


cdef void unary_range(int op, const floating* a, floating* o, int nd, const Py_ssize_t* shape,
                      const Py_ssize_t* sa, const Py_ssize_t* so,
                      Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t inner = shape[nd - 1], pos = start, row, col, n, oa, u1, u2
    while pos < stop:
        row = pos // inner
        col = pos - row * inner
        row_start(row, nd, shape, sa, so, so, &oa, &u1, &u2)
        n = inner - col if inner - col < stop - pos else stop - pos
        oa += col * sa[nd - 1]
        if floating is float:
            mn_unary_f32(op, a + oa, sa[nd - 1], o + pos, n)
        else:
            mn_unary_f64(op, a + oa, sa[nd - 1], o + pos, n)
        pos += n


cdef void unary_run(int op, const floating* a, floating* o, int nd, const Py_ssize_t* shape,
                    const Py_ssize_t* sa, const Py_ssize_t* so) noexcept nogil:
    cdef Py_ssize_t total = total_size(nd, shape)
    # transcendental ops cost ~10x an add: go parallel sooner
    cdef int nt = threads_timed(total * unary_cost[op], total * unary_cost[op] * NS_PER_ITEM), t
    if nt == 1:
        unary_range(op, a, o, nd, shape, sa, so, 0, total)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        unary_range(op, a, o, nd, shape, sa, so,
                    (total * t // nt) & ~15, total if t == nt - 1 else (total * (t + 1) // nt) & ~15)


def unary(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, Buffer out, tuple shape, int itemsize):
    """out = op(a) over `shape`."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    if not 0 <= op < NUM_UNARY:
        raise ValueError(f"unary: unknown op {op}")
    cdef int nd = prepare(shape, a_strides, (0,) * len(shape), sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        if itemsize == 4:
            unary_run(op, <float*>a.ptr + a_off, <float*>out.ptr, nd, sh, sa, so)
        else:
            unary_run(op, <double*>a.ptr + a_off, <double*>out.ptr, nd, sh, sa, so)


# comparisons into bool outputs, and logical ops on bools ---------------------------------
ctypedef fused in_t:
    float
    double
    uint8_t


cdef void bool_range(int op, const in_t* a, const in_t* b, uint8_t* o, int nd,
                     const Py_ssize_t* shape, const Py_ssize_t* sa, const Py_ssize_t* sb,
                     const Py_ssize_t* so, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t inner = shape[nd - 1], pos = start, row, col, n, oa, ob, unused
    while pos < stop:
        row = pos // inner
        col = pos - row * inner
        row_start(row, nd, shape, sa, sb, so, &oa, &ob, &unused)
        n = inner - col if inner - col < stop - pos else stop - pos
        oa += col * sa[nd - 1]
        ob += col * sb[nd - 1]
        if in_t is float:
            mn_compare_f32(op, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + pos, n)
        elif in_t is double:
            mn_compare_f64(op, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + pos, n)
        else:
            mn_logical(op, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + pos, n)
        pos += n


cdef void bool_run(int op, const in_t* a, const in_t* b, uint8_t* o, int nd,
                   const Py_ssize_t* shape, const Py_ssize_t* sa, const Py_ssize_t* sb,
                   const Py_ssize_t* so) noexcept nogil:
    cdef Py_ssize_t total = total_size(nd, shape)
    cdef int nt = threads_timed(total, total * NS_PER_ITEM), t
    if nt == 1:
        bool_range(op, a, b, o, nd, shape, sa, sb, so, 0, total)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        # 64-byte chunk edges: no two threads write one cache line of the output
        bool_range(op, a, b, o, nd, shape, sa, sb, so,
                   (total * t // nt) & ~63, total if t == nt - 1 else (total * (t + 1) // nt) & ~63)


def compare(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, Buffer b, Py_ssize_t b_off,
            tuple b_strides, Buffer out, tuple shape, int itemsize):
    """out (bool) = op(a, b) != 0 over `shape`; a, b float32 or float64 (itemsize)."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    if not (0 <= op < NUM_BINARY and is_compare[op]):
        raise ValueError(f"compare: op {op} is not a comparison (eq, ne, lt, le, gt, ge)")
    cdef int nd = prepare(shape, a_strides, b_strides, sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        if itemsize == 4:
            bool_run(op, <float*>a.ptr + a_off, <float*>b.ptr + b_off, <uint8_t*>out.ptr,
                     nd, sh, sa, sb, so)
        else:
            bool_run(op, <double*>a.ptr + a_off, <double*>b.ptr + b_off, <uint8_t*>out.ptr,
                     nd, sh, sa, sb, so)


def compare_scalar(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, double value,
                   bint reverse, Buffer out, tuple shape, int itemsize):
    """out (bool) = op(a, value) != 0, or op(value, a) when reverse."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    cdef float f = <float>value
    cdef double d = value
    if not (0 <= op < NUM_BINARY and is_compare[op]):
        raise ValueError(f"compare_scalar: op {op} is not a comparison (eq, ne, lt, le, gt, ge)")
    zeros = (0,) * len(shape)
    cdef int nd = prepare(shape, zeros if reverse else a_strides, a_strides if reverse else zeros,
                          sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        if itemsize == 4 and reverse:
            bool_run(op, &f, <float*>a.ptr + a_off, <uint8_t*>out.ptr, nd, sh, sa, sb, so)
        elif itemsize == 4:
            bool_run(op, <float*>a.ptr + a_off, &f, <uint8_t*>out.ptr, nd, sh, sa, sb, so)
        elif reverse:
            bool_run(op, &d, <double*>a.ptr + a_off, <uint8_t*>out.ptr, nd, sh, sa, sb, so)
        else:
            bool_run(op, <double*>a.ptr + a_off, &d, <uint8_t*>out.ptr, nd, sh, sa, sb, so)


def logical(int op, Buffer a, Py_ssize_t a_off, tuple a_strides, Buffer b, Py_ssize_t b_off,
            tuple b_strides, Buffer out, tuple shape):
    """out = a and / or / xor b (op 0 / 1 / 2) over `shape`, all bools (nonzero is true)."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t sa[MAXDIM]
    cdef Py_ssize_t sb[MAXDIM]
    cdef Py_ssize_t so[MAXDIM]
    if not 0 <= op < 3:
        raise ValueError(f"logical: unknown op {op}")
    cdef int nd = prepare(shape, a_strides, b_strides, sh, sa, sb, so)
    if total_size(nd, sh) == 0:
        return
    with nogil:
        bool_run(op, <uint8_t*>a.ptr + a_off, <uint8_t*>b.ptr + b_off, <uint8_t*>out.ptr,
                 nd, sh, sa, sb, so)


from mininet_ext._check cimport check_itemsize, need


cdef void bias_rows(floating* y, const floating* b, Py_ssize_t r0, Py_ssize_t r1,
                    Py_ssize_t cols, bint relu) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* row
    for i in range(r0, r1):
        row = y + i * cols
        if b != NULL and relu:
            for j in range(cols):
                v = row[j] + b[j]
                row[j] = 0 if v < 0 else v   # NaN stays NaN, as relu
        elif b != NULL:
            for j in range(cols):
                row[j] = row[j] + b[j]
        elif relu:
            for j in range(cols):
                row[j] = 0 if row[j] < 0 else row[j]


cdef void bias_run(floating* y, const floating* b, Py_ssize_t rows, Py_ssize_t cols,
                   bint relu) noexcept nogil:
    cdef int nt = threads_timed(rows * cols, rows * cols * NS_PER_ITEM), t
    if nt == 1 or rows < 2:
        bias_rows(y, b, 0, rows, cols, relu)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        bias_rows(y, b, rows * t // nt, rows * (t + 1) // nt, cols, relu)


def bias_act(Buffer y, Py_ssize_t y_off, Buffer b, Py_ssize_t b_off, Py_ssize_t rows,
             Py_ssize_t cols, bint relu, int itemsize):
    """y[i, j] = y[i, j] + b[j] in place (b None: no bias), then max(., 0) with relu (NaN
    kept): a Linear layer's epilogue in one pass over its product. y compact (rows, cols)
    from item y_off, b compact (cols,) from item b_off."""
    check_itemsize(itemsize, "bias_act")
    need(y, y_off, (rows, cols), itemsize, "bias_act", "output")
    if b is not None:
        need(b, b_off, (cols,), itemsize, "bias_act", "bias")
    if rows * cols == 0:
        return
    with nogil:
        if itemsize == 4:
            bias_run(<float*>y.ptr + y_off,
                     NULL if b is None else <float*>b.ptr + b_off, rows, cols, relu)
        else:
            bias_run(<double*>y.ptr + y_off,
                     NULL if b is None else <double*>b.ptr + b_off, rows, cols, relu)
