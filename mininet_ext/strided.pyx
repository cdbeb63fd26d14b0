# cython: boundscheck=False, wraparound=False, cdivision=True
"""compact and setitem: the only kernels that walk arbitrary strides.

Items are moved as raw 1-, 4- or 8-byte words, so this serves every dtype.
"""
from cython.parallel cimport prange
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport check_indices, check_itemsize, need
from mininet_ext._nd cimport MAXDIM, load_dims, collapse, total_size, row_start, compact_strides

ctypedef fused word_t:
    uint8_t
    uint32_t
    uint64_t


cdef inline void copy_rows(const word_t* src, word_t* dst, Py_ssize_t m, Py_ssize_t s2,
                           Py_ssize_t d2, Py_ssize_t inner, Py_ssize_t sl,
                           Py_ssize_t dl) noexcept nogil:
    """m short rows (at most 8 items), rows s2 / d2 apart: unit-stride rows of 2 or 3 as
    one fixed-size move each (gcc's loop for a trip count this short cost 3-10x)."""
    cdef Py_ssize_t r, j
    cdef const word_t* s
    cdef word_t* d
    if sl == 1 and dl == 1 and inner == 2:
        for r in range(m):
            memcpy(dst + r * d2, src + r * s2, 2 * sizeof(word_t))
    elif sl == 1 and dl == 1 and inner == 3:
        for r in range(m):
            memcpy(dst + r * d2, src + r * s2, 3 * sizeof(word_t))
    else:
        for r in range(m):
            s = src + r * s2
            d = dst + r * d2
            for j in range(inner):
                d[j * dl] = s[j * sl]


cdef inline void carry(int d, Py_ssize_t* idx, const Py_ssize_t* shape, const Py_ssize_t* ss,
                       const Py_ssize_t* ds, Py_ssize_t* so, Py_ssize_t* do) noexcept nogil:
    """The odometer's step from dim d outwards: the next index, the offsets moved with it."""
    while d >= 0:
        idx[d] += 1
        so[0] += ss[d]
        do[0] += ds[d]
        if idx[d] < shape[d]:
            return
        so[0] -= shape[d] * ss[d]
        do[0] -= shape[d] * ds[d]
        idx[d] = 0
        d -= 1


cdef void copy_range(const word_t* src, word_t* dst, int nd, const Py_ssize_t* shape,
                     const Py_ssize_t* ss, const Py_ssize_t* ds, const Py_ssize_t* zero,
                     Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    # the first row's offsets by division, then the next rows' by stepping an odometer:
    # short rows (a kernel's 2 or 3 taps) spent most of their time in row_start's divisions,
    # then in the odometer's step once a row: they go down whole runs of dims nd-2 (and
    # nd-3) in tight loops
    cdef Py_ssize_t inner = shape[nd - 1], pos = start, row, col, n, so, do, unused, j
    cdef Py_ssize_t sl = ss[nd - 1], dl = ds[nd - 1], m, q, r
    cdef Py_ssize_t s2 = ss[nd - 2] if nd >= 2 else 0, d2 = ds[nd - 2] if nd >= 2 else 0
    cdef Py_ssize_t s3 = ss[nd - 3] if nd >= 3 else 0, d3 = ds[nd - 3] if nd >= 3 else 0
    cdef Py_ssize_t idx[MAXDIM]
    cdef int d
    cdef const word_t* s
    cdef word_t* d_
    cdef word_t v
    if pos >= stop:
        return
    row = pos // inner
    col = pos - row * inner
    row_start(row, nd, shape, ss, ds, zero, &so, &do, &unused)
    for d in range(nd - 2, -1, -1):
        idx[d] = row % shape[d]
        row = row // shape[d]
    while True:
        m = 0
        if inner <= 8 and col == 0 and nd >= 2:
            m = min(shape[nd - 2] - idx[nd - 2], (stop - pos) // inner)
        if m > 0 and nd >= 3 and m == shape[nd - 2]:   # whole planes of dims nd-2, nd-1
            q = min(shape[nd - 3] - idx[nd - 3], (stop - pos) // (m * inner))
            for r in range(q):
                copy_rows(src + so + r * s3, dst + do + r * d3, m, s2, d2, inner, sl, dl)
            pos += q * m * inner
            if pos >= stop:
                return
            so += (q - 1) * s3   # at the last plane copied: carry steps past it
            do += (q - 1) * d3
            idx[nd - 3] += q - 1
            carry(nd - 3, idx, shape, ss, ds, &so, &do)
            continue
        if m > 0:   # a run of whole rows down dim nd-2
            copy_rows(src + so, dst + do, m, s2, d2, inner, sl, dl)
            pos += m * inner
            if pos >= stop:
                return
            so += (m - 1) * s2
            do += (m - 1) * d2
            idx[nd - 2] += m - 1
            carry(nd - 2, idx, shape, ss, ds, &so, &do)
            continue
        n = inner - col if inner - col < stop - pos else stop - pos
        s = src + so + col * sl
        d_ = dst + do + col * dl
        if sl == 1 and dl == 1:
            if n <= 4:
                for j in range(n):
                    d_[j] = s[j]
            else:
                memcpy(d_, s, n * sizeof(word_t))
        elif sl == 0:
            v = s[0]
            for j in range(n):
                d_[j * dl] = v
        else:
            for j in range(n):
                d_[j * dl] = s[j * sl]
        pos += n
        if pos >= stop:
            return
        col = 0
        carry(nd - 2, idx, shape, ss, ds, &so, &do)   # the next row


cdef void copy_run(const word_t* src, word_t* dst, int nd, const Py_ssize_t* shape,
                   const Py_ssize_t* ss, const Py_ssize_t* ds, const Py_ssize_t* zero) noexcept nogil:
    cdef Py_ssize_t total = total_size(nd, shape)
    cdef int nt = threads_for(total), t
    if nt == 1:
        copy_range(src, dst, nd, shape, ss, ds, zero, 0, total)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        copy_range(src, dst, nd, shape, ss, ds, zero, total * t // nt, total * (t + 1) // nt)


cdef enum:
    TB = 16   # transpose tiles: TB x TB items, read and written within the cache


cdef void transpose_rows(const word_t* src, word_t* dst, Py_ssize_t cols, Py_ssize_t ss1,
                         Py_ssize_t ds0, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dst[r * ds0 + c] = src[r + c * ss1] for rows r0..r1: a transpose, by tiles, so the
    strided side is read (or written) a tile's rows at a time instead of once a column."""
    cdef Py_ssize_t rb, cb, r, c, rend, cend
    rb = r0
    while rb < r1:
        rend = rb + TB if rb + TB < r1 else r1
        cb = 0
        while cb < cols:
            cend = cb + TB if cb + TB < cols else cols
            for c in range(cb, cend):
                for r in range(rb, rend):
                    dst[r * ds0 + c] = src[r + c * ss1]
            cb += TB
        rb += TB


cdef void transpose_run(const word_t* src, word_t* dst, const Py_ssize_t* shape,
                        Py_ssize_t ss1, Py_ssize_t ds0) noexcept nogil:
    cdef Py_ssize_t rows = shape[0], cols = shape[1]
    cdef int nt = threads_for(rows * cols), t
    if nt == 1:
        transpose_rows(src, dst, cols, ss1, ds0, 0, rows)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        transpose_rows(src, dst, cols, ss1, ds0, rows * t // nt // TB * TB,
                       rows if t == nt - 1 else rows * (t + 1) // nt // TB * TB)


def copy(Buffer src, Py_ssize_t src_off, tuple src_strides, Buffer dst, Py_ssize_t dst_off,
         tuple dst_strides, tuple shape, int itemsize):
    """dst[idx] = src[idx] for every index of `shape` (offsets and strides in items)."""
    cdef Py_ssize_t sh[MAXDIM]
    cdef Py_ssize_t ss[MAXDIM]
    cdef Py_ssize_t ds[MAXDIM]
    cdef Py_ssize_t zero[MAXDIM]
    cdef int nd = load_dims(shape, sh), i
    load_dims(src_strides, ss)
    load_dims(dst_strides, ds)
    for i in range(nd):
        zero[i] = 0
    if total_size(nd, sh) == 0:
        return
    nd = collapse(nd, sh, ss, ds, zero)
    if nd == 2 and ss[0] == 1 and ds[1] == 1 and ss[1] > 1 and sh[0] >= TB and sh[1] >= TB \
            and itemsize == 4:   # a matrix transposed into compact rows (a weight's .T)
        with nogil:
            transpose_run(<uint32_t*>src.ptr + src_off, <uint32_t*>dst.ptr + dst_off, sh,
                          ss[1], ds[0])
        return
    with nogil:
        if itemsize == 4:
            copy_run(<uint32_t*>src.ptr + src_off, <uint32_t*>dst.ptr + dst_off, nd, sh, ss, ds, zero)
        elif itemsize == 8:
            copy_run(<uint64_t*>src.ptr + src_off, <uint64_t*>dst.ptr + dst_off, nd, sh, ss, ds, zero)
        elif itemsize == 1:
            copy_run(<uint8_t*>src.ptr + src_off, <uint8_t*>dst.ptr + dst_off, nd, sh, ss, ds, zero)
        else:
            with gil:
                raise ValueError(f"copy: unsupported item size {itemsize}")


def fill(Buffer dst, Py_ssize_t dst_off, tuple dst_strides, tuple shape, double value, int dtype_code):
    """dst[idx] = value for every index (dtype_code: 0 float32, 1 float64, 2 int64,
    3 bool: value != 0)."""
    cdef float f = <float>value
    cdef double g = value
    cdef long long q = <long long>value
    cdef uint8_t b = value != 0
    cdef Buffer one = Buffer(8)
    if dtype_code == 0:
        memcpy(one.ptr, &f, 4)
    elif dtype_code == 1:
        memcpy(one.ptr, &g, 8)
    elif dtype_code == 3:
        memcpy(one.ptr, &b, 1)
    else:
        memcpy(one.ptr, &q, 8)
    copy(one, 0, (0,) * len(shape), dst, dst_off, dst_strides, shape,
         4 if dtype_code == 0 else 1 if dtype_code == 3 else 8)


# row gather and scatter-add (embedding lookups and their gradient) ------------------------
from cython cimport floating
from libc.stdint cimport int64_t


cdef void take_rows_run(const floating* src, const int64_t* idx, floating* out, Py_ssize_t n,
                        Py_ssize_t d, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(i0, i1):
        memcpy(out + i * d, src + idx[i] * d, d * sizeof(floating))


def take_rows(Buffer src, Py_ssize_t src_off, Buffer idx, Py_ssize_t idx_off, Buffer out,
              Py_ssize_t n, Py_ssize_t rows, Py_ssize_t d, int itemsize):
    """out[i, :] = src[idx[i], :] for compact src (rows, d), idx (n,) int64 in [0, rows)."""
    check_itemsize(itemsize, "take_rows")
    need(src, src_off, (rows, d), itemsize, "take_rows", "source")
    need(idx, idx_off, (n,), 8, "take_rows", "indices")
    need(out, 0, (n, d), itemsize, "take_rows", "output")
    cdef const int64_t* ix = <const int64_t*>idx.ptr + idx_off
    cdef Py_ssize_t t
    check_indices(ix, n, rows, "row index", IndexError)
    cdef int nt = threads_for(n * d)
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                take_rows_run(<float*>src.ptr + src_off, ix, <float*>out.ptr, n, d,
                              n * t // nt, n * (t + 1) // nt)
            else:
                take_rows_run(<double*>src.ptr + src_off, ix, <double*>out.ptr, n, d,
                              n * t // nt, n * (t + 1) // nt)


cdef void add_rows_run(const floating* g, const int64_t* idx, floating* out, Py_ssize_t n,
                       Py_ssize_t d, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Columns j0..j1 of every row: threads split columns, so no two write one element."""
    cdef Py_ssize_t i, j
    cdef floating* o
    cdef const floating* s
    for i in range(n):
        o = out + idx[i] * d
        s = g + i * d
        for j in range(j0, j1):
            o[j] += s[j]


def add_rows(Buffer g, Py_ssize_t g_off, Buffer idx, Py_ssize_t idx_off, Buffer out,
             Py_ssize_t n, Py_ssize_t rows, Py_ssize_t d, int itemsize):
    """out[idx[i], :] += g[i, :] (repeated indices add up); out (rows, d) compact."""
    check_itemsize(itemsize, "add_rows")
    need(g, g_off, (n, d), itemsize, "add_rows", "gradient")
    need(idx, idx_off, (n,), 8, "add_rows", "indices")
    need(out, 0, (rows, d), itemsize, "add_rows", "output")
    cdef const int64_t* ix = <const int64_t*>idx.ptr + idx_off
    cdef Py_ssize_t t
    check_indices(ix, n, rows, "row index", IndexError)
    cdef int nt = min(threads_for(n * d), max(d // 16, 1))
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                add_rows_run(<float*>g.ptr + g_off, ix, <float*>out.ptr, n, d,
                             d * t // nt, d * (t + 1) // nt)
            else:
                add_rows_run(<double*>g.ptr + g_off, ix, <double*>out.ptr, n, d,
                             d * t // nt, d * (t + 1) // nt)
