"""Shape/stride bookkeeping shared by the kernels that walk strides."""
cdef enum:
    MAXDIM = 32


cdef inline int load_dims(tuple shape, Py_ssize_t* out) except -1:
    cdef int i, nd = len(shape)
    if nd > MAXDIM:
        raise ValueError(f"at most {MAXDIM} dimensions are supported, got {nd}")
    for i in range(nd):
        out[i] = shape[i]
    return nd


cdef inline void compact_strides(int nd, const Py_ssize_t* shape, Py_ssize_t* st) noexcept nogil:
    cdef Py_ssize_t s = 1
    cdef int i
    for i in range(nd - 1, -1, -1):
        st[i] = s
        s *= shape[i]


cdef inline int collapse(int nd, Py_ssize_t* shape, Py_ssize_t* s0, Py_ssize_t* s1,
                         Py_ssize_t* s2) noexcept nogil:
    """Drop size-1 dims and merge neighbours that are contiguous in all three
    stride sets, so loops run over few, long rows. Returns the new ndim (>= 1)."""
    cdef int i, k = 0, m = 0
    for i in range(nd):
        if shape[i] != 1:
            shape[k] = shape[i]; s0[k] = s0[i]; s1[k] = s1[i]; s2[k] = s2[i]
            k += 1
    if k == 0:
        shape[0] = 1; s0[0] = 0; s1[0] = 0; s2[0] = 0
        return 1
    for i in range(1, k):
        if (s0[m] == s0[i] * shape[i] and s1[m] == s1[i] * shape[i]
                and s2[m] == s2[i] * shape[i]):
            shape[m] *= shape[i]; s0[m] = s0[i]; s1[m] = s1[i]; s2[m] = s2[i]
        else:
            m += 1
            shape[m] = shape[i]; s0[m] = s0[i]; s1[m] = s1[i]; s2[m] = s2[i]
    return m + 1


cdef inline Py_ssize_t total_size(int nd, const Py_ssize_t* shape) noexcept nogil:
    cdef Py_ssize_t n = 1
    cdef int i
    for i in range(nd):
        n *= shape[i]
    return n


cdef inline void row_start(Py_ssize_t row, int nd, const Py_ssize_t* shape,
                           const Py_ssize_t* s0, const Py_ssize_t* s1, const Py_ssize_t* s2,
                           Py_ssize_t* o0, Py_ssize_t* o1, Py_ssize_t* o2) noexcept nogil:
    """Offsets of the first element of `row` (a row = one run of the last dim)."""
    cdef Py_ssize_t i, a = 0, b = 0, c = 0
    cdef int d
    for d in range(nd - 2, -1, -1):
        i = row % shape[d]
        row = row // shape[d]
        a += i * s0[d]; b += i * s1[d]; c += i * s2[d]
    o0[0] = a; o1[0] = b; o2[0] = c
