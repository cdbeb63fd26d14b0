# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused optimizer updates, in place on compact parameter buffers: one pass
over memory instead of a chain of elementwise ops and temporaries."""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport sqrt, sqrtf
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport check_itemsize, need

cdef extern from "_ftz.h" nogil:
    unsigned mn_ftz_on()
    void mn_ftz_restore(unsigned old)


cdef void sgd_range(floating* p, const floating* g, floating* v, Py_ssize_t i0, Py_ssize_t i1,
                    double lr, double momentum, double dampening, double wd, bint nesterov,
                    bint first) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d, buf
    cdef unsigned csr = mn_ftz_on()
    for i in range(i0, i1):
        d = g[i] + <floating>wd * p[i]
        if momentum != 0:
            buf = d if first else <floating>momentum * v[i] + <floating>(1 - dampening) * d
            v[i] = buf
            d = d + <floating>momentum * buf if nesterov else buf
        p[i] = p[i] - <floating>lr * d
    mn_ftz_restore(csr)


cdef void sgd_run(floating* p, const floating* g, floating* v, Py_ssize_t n, double lr,
                  double momentum, double dampening, double wd, bint nesterov, bint first) noexcept nogil:
    cdef int t, nt = threads_for(n)
    for t in prange(nt, num_threads=nt, schedule='static'):
        sgd_range(p, g, v, n * t // nt, n * (t + 1) // nt, lr, momentum, dampening, wd, nesterov,
                  first)


def sgd_step(Buffer p, Buffer g, Py_ssize_t g_off, Buffer v, Py_ssize_t n, double lr, double momentum,
             double dampening, double weight_decay, bint nesterov, bint first, int itemsize):
    """p -= lr * d, d = g + wd p, through momentum buffer v (torch.optim.SGD's rule)."""
    check_itemsize(itemsize, "sgd_step")
    need(p, 0, (n,), itemsize, "sgd_step", "parameter")
    need(g, g_off, (n,), itemsize, "sgd_step", "gradient")
    if momentum != 0:
        need(v, 0, (n,), itemsize, "sgd_step", "momentum buffer")
    with nogil:
        if itemsize == 4:
            sgd_run(<float*>p.ptr, <float*>g.ptr + g_off, <float*>v.ptr, n, lr, momentum, dampening,
                    weight_decay, nesterov, first)
        else:
            sgd_run(<double*>p.ptr, <double*>g.ptr + g_off, <double*>v.ptr, n, lr, momentum,
                    dampening, weight_decay, nesterov, first)


cdef void adam_range(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t i0,
                     Py_ssize_t i1, double lr, double b1, double b2, double eps, double wd,
                     bint decoupled, double bc1, double bc2) noexcept nogil:
    # constants hoisted and typed so gcc vectorises the loop (sqrtf for float32)
    cdef floating step = <floating>(lr / bc1), vscale = <floating>(1.0 / sqrt(bc2))
    cdef floating fb1 = <floating>b1, fb2 = <floating>b2, feps = <floating>eps
    cdef floating c1 = <floating>(1 - b1), c2 = <floating>(1 - b2)
    cdef floating decay = <floating>(1 - lr * wd) if decoupled else 1
    cdef floating l2 = 0 if decoupled else <floating>wd
    cdef floating d, root
    cdef Py_ssize_t i
    cdef unsigned csr = mn_ftz_on()
    for i in range(i0, i1):
        d = g[i] + l2 * p[i]
        m[i] = fb1 * m[i] + c1 * d
        v[i] = fb2 * v[i] + c2 * d * d
        if floating is float:
            root = sqrtf(v[i])
        else:
            root = sqrt(v[i])
        p[i] = p[i] * decay - step * m[i] / (root * vscale + feps)
    mn_ftz_restore(csr)


cdef void adam_run(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n, double lr,
                   double b1, double b2, double eps, double wd, bint decoupled, double bc1,
                   double bc2) noexcept nogil:
    cdef int t, nt = threads_for(n)
    for t in prange(nt, num_threads=nt, schedule='static'):
        adam_range(p, g, m, v, n * t // nt, n * (t + 1) // nt, lr, b1, b2, eps, wd, decoupled,
                   bc1, bc2)


def adam_step(Buffer p, Buffer g, Py_ssize_t g_off, Buffer m, Buffer v, Py_ssize_t n, double lr,
              double beta1, double beta2, double eps, double weight_decay, bint decoupled, int t,
              int itemsize):
    """Adam (decoupled=False, L2 in the gradient) or AdamW (decoupled) step t >= 1, bias-corrected."""
    check_itemsize(itemsize, "adam_step")
    if t < 1:
        raise ValueError(f"adam_step: step t must be >= 1, got {t}")
    need(p, 0, (n,), itemsize, "adam_step", "parameter")
    need(g, g_off, (n,), itemsize, "adam_step", "gradient")
    need(m, 0, (n,), itemsize, "adam_step", "first moment m")
    need(v, 0, (n,), itemsize, "adam_step", "second moment v")
    cdef double bc1 = 1 - beta1 ** t, bc2 = 1 - beta2 ** t
    with nogil:
        if itemsize == 4:
            adam_run(<float*>p.ptr, <float*>g.ptr + g_off, <float*>m.ptr, <float*>v.ptr, n, lr, beta1,
                     beta2, eps, weight_decay, decoupled, bc1, bc2)
        else:
            adam_run(<double*>p.ptr, <double*>g.ptr + g_off, <double*>m.ptr, <double*>v.ptr, n, lr,
                     beta1, beta2, eps, weight_decay, decoupled, bc1, bc2)
