# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused softmax cross-entropy: one pass per row for the loss (keeping the
probabilities for the backward pass), one pass for the gradient. The same thing
built from elementwise ops and reductions is ~8 kernel calls and temporaries."""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.stdint cimport int64_t
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for, threads_timed, arrived
from mininet_ext._check cimport check_indices, check_itemsize, need


# one thread's ns per logit, forward (an exp) and backward (a scaled copy): threads_timed
# weighs them against the cost of waking the team
cdef double FORWARD_NS = 0.5, BACKWARD_NS = 0.1

cdef extern from "_xent.h" nogil:
    double mn_xent_rows_f32(const float* z, const int64_t* y, float* p, Py_ssize_t C, Py_ssize_t R)
    double mn_xent_rows_f64(const double* z, const int64_t* y, double* p, Py_ssize_t C,
                            Py_ssize_t R)


def forward(Buffer z, Py_ssize_t z_off, Buffer labels, Buffer probs, Py_ssize_t N, Py_ssize_t C,
            int itemsize, Buffer loss=None):
    """probs (N, C) = softmax(z); returns mean_i(logsumexp(z_i) - z_i[y_i]), also written
    (in z's dtype) to the one item of loss where given. z compact from item z_off, probs
    and labels compact."""
    check_itemsize(itemsize, "softmax_xent")
    need(z, z_off, (N, C), itemsize, "softmax_xent", "logits")
    need(labels, 0, (N,), 8, "softmax_xent", "labels")
    need(probs, 0, (N, C), itemsize, "softmax_xent", "probabilities")
    if loss is not None:
        need(loss, 0, (1,), itemsize, "softmax_xent", "loss")
    check_indices(<int64_t*>labels.ptr, N, C, "softmax_xent: label", ValueError)
    cdef Py_ssize_t i, i1, part
    cdef double total = 0
    cdef const int64_t* y = <int64_t*>labels.ptr
    # the rows' losses are summed in `parts` partial sums fixed by the size (threads_for),
    # whatever number of threads runs them: threads_timed picks that number by timing,
    # and the loss's rounding must not depend on it
    cdef int parts = min(threads_for(N * C * 8), 64)
    cdef int nt = threads_timed(N * C * 8, N * C * FORWARD_NS)
    cdef double partial[64]
    for part in range(parts):
        partial[part] = 0
    if N == 0:
        total = float("nan")
    else:
        with nogil:
            for part in prange(parts, num_threads=min(nt, parts), schedule='static'):
                arrived(threadid())
                # a part's rows in one call: few classes run blocks of rows (_xent.h)
                i, i1 = N * part // parts, N * (part + 1) // parts
                if itemsize == 4:
                    partial[part] = mn_xent_rows_f32(<float*>z.ptr + z_off + i * C, y + i,
                                                     <float*>probs.ptr + i * C, C, i1 - i)
                else:
                    partial[part] = mn_xent_rows_f64(<double*>z.ptr + z_off + i * C, y + i,
                                                     <double*>probs.ptr + i * C, C, i1 - i)
            for part in range(parts):
                total += partial[part]
        total = total / N
    if loss is not None:   # (written here: a fill kernel call cost more than the loss)
        if itemsize == 4:
            (<float*>loss.ptr)[0] = <float>total
        else:
            (<double*>loss.ptr)[0] = total
    return total


cdef void grad_row(const floating* p, int64_t y, floating* out, Py_ssize_t C,
                   floating scale) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(C):
        out[j] = p[j] * scale
    out[y] -= scale


def backward(Buffer probs, Buffer labels, Buffer out, Py_ssize_t N, Py_ssize_t C, double scale,
             int itemsize, Buffer g=None, Py_ssize_t g_off=0):
    """out = (probs - onehot(labels)) * scale (times the one item of g from item g_off,
    the loss's gradient, where given), rows split over the threads."""
    check_itemsize(itemsize, "softmax_xent_grad")
    need(probs, 0, (N, C), itemsize, "softmax_xent_grad", "probabilities")
    need(labels, 0, (N,), 8, "softmax_xent_grad", "labels")
    need(out, 0, (N, C), itemsize, "softmax_xent_grad", "gradient")
    if g is not None:   # read here: a copy to the host cost more than the kernel
        need(g, g_off, (1,), itemsize, "softmax_xent_grad", "output gradient")
        scale *= (<float*>g.ptr)[g_off] if itemsize == 4 else (<double*>g.ptr)[g_off]
    check_indices(<int64_t*>labels.ptr, N, C, "softmax_xent_grad: label", ValueError)
    cdef Py_ssize_t i
    cdef const int64_t* y = <int64_t*>labels.ptr
    cdef int nt = threads_timed(N * C, N * C * BACKWARD_NS)
    with nogil:
        if itemsize == 4:
            for i in prange(N, num_threads=nt, schedule='static'):
                arrived(threadid())
                grad_row(<float*>probs.ptr + i * C, y[i], <float*>out.ptr + i * C, C, <float>scale)
        else:
            for i in prange(N, num_threads=nt, schedule='static'):
                arrived(threadid())
                grad_row(<double*>probs.ptr + i * C, y[i], <double*>out.ptr + i * C, C, scale)
