# One-thread products for kernels of other modules that run their own parallel region
# (rnn.pyx's sequence loops): the caller gives the scratch space serial_items sizes.
cdef Py_ssize_t serial_items(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ars,
                             Py_ssize_t brs, Py_ssize_t bcs, int itemsize) noexcept nogil
cdef void gemm_serial_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                          Py_ssize_t ars, Py_ssize_t acs, const float* B, Py_ssize_t brs,
                          Py_ssize_t bcs, float* C, float* work) noexcept nogil
cdef void gemm_serial_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                          Py_ssize_t ars, Py_ssize_t acs, const double* B, Py_ssize_t brs,
                          Py_ssize_t bcs, double* C, double* work) noexcept nogil
