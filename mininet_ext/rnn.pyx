# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused LSTM gates: one pass over a step's (batch, 4 * hidden) gate pre-activations
gives h' and c' (the composite is ~15 elementwise kernels and their temporaries, and a
language model runs a step per token and layer); one pass gives the gradients."""
from cython.parallel cimport prange
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport check_itemsize, need


cdef extern from "_lstm.h" nogil:
    void mn_lstm_fwd_f32(const float* z, const float* c, float* act, float* c_new, float* h_new,
                         Py_ssize_t n)
    void mn_lstm_fwd_f64(const double* z, const double* c, double* act, double* c_new,
                         double* h_new, Py_ssize_t n)
    void mn_lstm_bwd_f32(const float* act, const float* c, const float* dh, const float* dc,
                         float* dz, float* dc_prev, Py_ssize_t n)
    void mn_lstm_bwd_f64(const double* act, const double* c, const double* dh, const double* dc,
                         double* dz, double* dc_prev, Py_ssize_t n)


def lstm_forward(Buffer z, Buffer c, Buffer act, Buffer c_new, Buffer h_new, Py_ssize_t B,
                 Py_ssize_t n, int itemsize):
    """z (B, 4n), c (B, n) -> act (B, 5n), c_new, h_new (B, n); all compact."""
    check_itemsize(itemsize, "lstm_gates")
    need(z, 0, (B, 4 * n), itemsize, "lstm_gates", "gates z")
    need(act, 0, (B, 5 * n), itemsize, "lstm_gates", "activations")
    for buf, name in ((c, "cell c"), (c_new, "new cell"), (h_new, "new hidden state")):
        need(buf, 0, (B, n), itemsize, "lstm_gates", name)
    cdef Py_ssize_t b
    cdef int nt = threads_for(B * n * 40)
    with nogil:
        if itemsize == 4:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_fwd_f32(<float*>z.ptr + b * 4 * n, <float*>c.ptr + b * n,
                                <float*>act.ptr + b * 5 * n, <float*>c_new.ptr + b * n,
                                <float*>h_new.ptr + b * n, n)
        else:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_fwd_f64(<double*>z.ptr + b * 4 * n, <double*>c.ptr + b * n,
                                <double*>act.ptr + b * 5 * n, <double*>c_new.ptr + b * n,
                                <double*>h_new.ptr + b * n, n)


def lstm_backward(Buffer act, Buffer c, Buffer dh, Buffer dc, Buffer dz, Buffer dc_prev,
                  Py_ssize_t B, Py_ssize_t n, int itemsize):
    """dz (B, 4n) and dc_prev (B, n) from dh, dc (B, n); all compact."""
    check_itemsize(itemsize, "lstm_gates_grad")
    need(act, 0, (B, 5 * n), itemsize, "lstm_gates_grad", "activations")
    need(dz, 0, (B, 4 * n), itemsize, "lstm_gates_grad", "gates gradient dz")
    for buf, name in ((c, "cell c"), (dh, "dh"), (dc, "dc"), (dc_prev, "dc_prev")):
        need(buf, 0, (B, n), itemsize, "lstm_gates_grad", name)
    cdef Py_ssize_t b
    cdef int nt = threads_for(B * n * 12)
    with nogil:
        if itemsize == 4:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_bwd_f32(<float*>act.ptr + b * 5 * n, <float*>c.ptr + b * n,
                                <float*>dh.ptr + b * n, <float*>dc.ptr + b * n,
                                <float*>dz.ptr + b * 4 * n, <float*>dc_prev.ptr + b * n, n)
        else:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_bwd_f64(<double*>act.ptr + b * 5 * n, <double*>c.ptr + b * n,
                                <double*>dh.ptr + b * n, <double*>dc.ptr + b * n,
                                <double*>dz.ptr + b * 4 * n, <double*>dc_prev.ptr + b * n, n)
