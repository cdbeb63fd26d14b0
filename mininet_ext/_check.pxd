"""Size checks for the def wrappers of the fused kernels (DESIGN rule 4: thin wrappers
validate). The kernels trust the sizes they are given; a buffer smaller than those sizes
(e.g. an optimizer state of the wrong shape read from a checkpoint) is a ValueError here,
before any kernel runs, never a read or a write past the buffer's end."""
from libc.stdint cimport int64_t
from mininet_ext.buffer cimport Buffer


cdef inline int check_indices(const int64_t* ix, Py_ssize_t n, Py_ssize_t limit, str what,
                              type error) except -1:
    """Every ix[i] in [0, limit), checked before a kernel reads or writes through them."""
    cdef Py_ssize_t i
    for i in range(n):
        if ix[i] < 0 or ix[i] >= limit:
            raise error(f"{what} {ix[i]} at position {i} is outside [0, {limit})")
    return 0


cdef inline int check_itemsize(int itemsize, str kernel) except -1:
    if itemsize != 4 and itemsize != 8:
        raise ValueError(f"{kernel}: itemsize must be 4 (float32) or 8 (float64), got {itemsize}")
    return 0


cdef inline int need(Buffer b, Py_ssize_t off, tuple dims, int itemsize, str kernel,
                     str name) except -1:
    """Buffer b must hold the prod(dims) items of itemsize bytes that start at item off
    (the product in Python integers: no overflow). Nothing is needed of an empty array."""
    cdef object n = 1
    for d in dims:
        if d < 0:
            raise ValueError(f"{kernel}: {name} has a negative size in {dims}")
        n = n * d
    if n == 0:
        return 0
    if b is None:
        raise ValueError(f"{kernel}: {name} ({dims}) is missing")
    if off < 0 or (off + n) * itemsize > b.nbytes:
        raise ValueError(f"{kernel}: {name} of shape {dims} from item {off} needs "
                         f"{(off + n) * itemsize} bytes, but its buffer holds {b.nbytes}")
    return 0


cdef inline int need_strided(Buffer b, Py_ssize_t off, tuple shape, tuple strides, int itemsize,
                             str kernel, str name) except -1:
    """Buffer b must hold every item a view (shape, strides in items, from item off) reaches."""
    cdef object lo = off, hi = off
    if len(shape) != len(strides):
        raise ValueError(f"{kernel}: {name} has shape {shape} but strides {strides}")
    for d, s in zip(shape, strides):
        if d < 0:
            raise ValueError(f"{kernel}: {name} has a negative size in {shape}")
        if d == 0:
            return 0
        if s > 0:
            hi = hi + (d - 1) * s
        else:
            lo = lo + (d - 1) * s
    if b is None:
        raise ValueError(f"{kernel}: {name} ({shape}) is missing")
    if lo < 0 or (hi + 1) * itemsize > b.nbytes:
        raise ValueError(f"{kernel}: {name} of shape {shape}, strides {strides} from item {off} "
                         f"reaches items [{lo}, {hi}], but its buffer holds {b.nbytes} bytes")
    return 0
