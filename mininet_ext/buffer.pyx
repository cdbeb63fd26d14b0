# cython: boundscheck=False, wraparound=False, cdivision=True
"""64-byte aligned memory blocks, recycled through a size-class pool.

Fresh large blocks come from mmap and are page-faulted on first touch, which
costs more than many kernels; a freed block goes back to the pool instead.
"""
from libc.stdlib cimport free
from libc.string cimport memset, memcpy
from cpython.buffer cimport PyBUF_WRITABLE, PyBUF_ANY_CONTIGUOUS, PyObject_GetBuffer, PyBuffer_Release

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)

cdef enum:
    ALIGN = 64
cdef Py_ssize_t POOL_LIMIT = 512 * 1024 * 1024  # bytes kept cached at most

cdef dict _pool = {}          # capacity -> list of pointers (as ints)
cdef Py_ssize_t _pooled = 0   # bytes held in the pool
cdef Py_ssize_t _in_use = 0   # bytes held by live buffers


# No machine holds a block this large (64 PiB); asking for one is refused by name, before
# size_class's doubling could overflow (a request of 2^62 bytes looped there forever)
cdef Py_ssize_t BLOCK_LIMIT = <Py_ssize_t>1 << 56


cdef Py_ssize_t size_class(Py_ssize_t n) except -1:
    """Round n up to 64 bytes, and large sizes to 1/8 of their power of two."""
    cdef Py_ssize_t step
    if n > BLOCK_LIMIT:
        raise MemoryError(f"mininet: cannot allocate {n} bytes (more than {BLOCK_LIMIT} "
                          f"bytes, 64 PiB, which no machine holds)")
    if n <= 4096:
        return (n + ALIGN - 1) & ~(ALIGN - 1)
    step = 1
    while step * 16 <= n:
        step <<= 1
    return (n + step - 1) // step * step


# Large blocks start at one of COLORS offsets, 256 bytes apart, taken in turn. Blocks of
# one size otherwise lie a multiple of a large power of two apart (the heap hands out
# neighbours), and a load whose address agrees in the low ~20 bits with a store still in
# flight waits for it: a loop that read p after writing m and v (Adam) ran 4x slower on
# arrays 4 MB apart, and 128 bytes of offset was enough to end it (Xeon model 207;
# bench/optim_aliasing.py). The malloc'd address sits just before the block, to free it.
cdef Py_ssize_t COLOR_MIN = 64 * 1024, COLOR_STEP = 256, COLORS = 16
cdef unsigned _color = 0


cdef char* pool_take(Py_ssize_t cap) except NULL:
    global _pooled, _color
    cdef list blocks = _pool.get(cap)
    cdef void* p = NULL
    cdef char* block
    if blocks:
        _pooled -= cap
        return <char*><size_t>blocks.pop()
    if cap < COLOR_MIN:
        if posix_memalign(&p, ALIGN, <size_t>cap) != 0 or p == NULL:
            raise MemoryError(f"mininet: cannot allocate {cap} bytes")
        return <char*>p
    if posix_memalign(&p, ALIGN, <size_t>(cap + COLORS * COLOR_STEP)) != 0 or p == NULL:
        raise MemoryError(f"mininet: cannot allocate {cap} bytes")
    _color = (_color + 7) % COLORS   # neighbours in time 7 colours apart
    block = <char*>p + ALIGN + _color * COLOR_STEP
    (<void**>block)[-1] = p
    return block


cdef void release(char* p, Py_ssize_t cap):
    """free() for pool_take's blocks."""
    free((<void**>p)[-1] if cap >= COLOR_MIN else p)


cdef void pool_give(char* p, Py_ssize_t cap):
    global _pooled
    if _pooled + cap > POOL_LIMIT:
        release(p, cap)
        return
    _pool.setdefault(cap, []).append(<size_t>p)
    _pooled += cap


def memory_stats():
    return {"in_use_bytes": _in_use, "cached_bytes": _pooled}


cdef void _give_back(Buffer b):
    """Return b's own block to the pool before it is pointed elsewhere (Buffer.wrap)."""
    global _in_use
    if b.ptr != NULL and b.base is None and not b.wrapped:
        _in_use -= b.capacity
        pool_give(b.ptr, b.capacity)
    b.ptr = NULL


cdef class Buffer:
    """An aligned block of `nbytes` bytes; exports the buffer protocol as bytes."""

    def __cinit__(self, Py_ssize_t nbytes, bint zero=False, Buffer base=None, Py_ssize_t start=0):
        global _in_use
        if nbytes < 0:
            raise ValueError(f"Buffer: negative size {nbytes}")
        self.nbytes = nbytes
        if base is not None:  # a view: base keeps the memory alive
            if start < 0 or start + nbytes > base.nbytes:
                raise ValueError(f"Buffer.at: bytes [{start}, {start + nbytes}) are outside a "
                                 f"buffer of {base.nbytes}")
            self.base = base
            self.ptr = base.ptr + start
            return
        self.capacity = size_class(nbytes if nbytes > 0 else 1)
        self.ptr = pool_take(self.capacity)
        _in_use += self.capacity
        if zero:
            memset(self.ptr, 0, nbytes)

    def __dealloc__(self):
        global _in_use
        if self.wrapped:
            PyBuffer_Release(&self.shared)
            self.ptr = NULL
            return
        if self.ptr != NULL and self.base is None:
            _in_use -= self.capacity
            pool_give(self.ptr, self.capacity)
            self.ptr = NULL

    @staticmethod
    def wrap(obj):
        """A Buffer over the memory of a writable contiguous object (a numpy array), shared,
        not copied; the object stays alive while the Buffer does."""
        cdef Buffer out = Buffer(0)
        _give_back(out)
        PyObject_GetBuffer(obj, &out.shared, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS)
        out.wrapped = True
        out.ptr = <char*>out.shared.buf
        out.nbytes = out.shared.len
        return out

    def at(self, Py_ssize_t start, Py_ssize_t nbytes):
        """A view of bytes [start, start + nbytes): for kernels that take no offset."""
        return Buffer(nbytes, False, self, start)

    @property
    def address(self):
        return <size_t>self.ptr

    def __getbuffer__(self, Py_buffer* view, int flags):
        self.shape[0] = self.nbytes
        self.strides[0] = 1
        view.buf = self.ptr
        view.obj = self
        view.len = self.nbytes
        view.readonly = 0
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self.exports -= 1

    def fill_zero(self):
        with nogil:
            memset(self.ptr, 0, self.nbytes)

    def copy_from(self, Buffer src, Py_ssize_t nbytes, Py_ssize_t dst_off=0, Py_ssize_t src_off=0):
        """Copy nbytes from src (at byte offset src_off) into self at dst_off."""
        if nbytes < 0 or dst_off + nbytes > self.nbytes or src_off + nbytes > src.nbytes:
            raise ValueError("Buffer.copy_from: range out of bounds")
        with nogil:
            memcpy(self.ptr + dst_off, src.ptr + src_off, nbytes)
