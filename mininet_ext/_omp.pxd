cdef int num_threads() noexcept nogil
cdef int threads_for(Py_ssize_t work) noexcept nogil
cdef Py_ssize_t chunk_items(Py_ssize_t n, int nt, Py_ssize_t per_thread) noexcept nogil
cdef int threads_timed(Py_ssize_t work, double est_ns) noexcept nogil
cdef void arrived(int tid) noexcept nogil
cdef void finished(int tid) noexcept nogil
