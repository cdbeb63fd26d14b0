from cpython.buffer cimport Py_buffer
cdef class Buffer:
    cdef char* ptr
    cdef readonly Py_ssize_t nbytes
    cdef Py_ssize_t capacity
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    cdef int exports
    cdef object base      # the Buffer this one views (None: owns its memory)
    cdef Py_buffer shared # a numpy array's memory this one wraps (Buffer.wrap)
    cdef bint wrapped
    cdef public long long version   # bumped by each in-place write (autograd's check)
