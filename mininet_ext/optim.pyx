# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused optimizer updates, in place on compact parameter buffers: one pass
over memory instead of a chain of elementwise ops and temporaries."""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.math cimport sqrt, sqrtf
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_timed, arrived, finished
from mininet_ext._check cimport check_itemsize, need

# one thread's ns per element (Zen 4 EPYC, 64k-256k float32: SGD with momentum 0.15-0.19,
# Adam 0.36-0.41): threads_timed weighs them against the cost of waking the team
cdef double SGD_NS = 0.15, ADAM_NS = 0.35

cdef extern from "_adam.h" nogil:
    bint MN_ADAM_VEC
    void mn_adam_f32(float* p, const float* g, float* m, float* v, Py_ssize_t i0, Py_ssize_t i1,
                     float step, float vscale, float b1, float b2, float eps, float c1, float c2,
                     float decay, float l2)

cdef extern from "_ftz.h" nogil:
    unsigned mn_ftz_on()
    void mn_ftz_restore(unsigned old)


cdef void sgd_range(floating* p, const floating* g, floating* v, Py_ssize_t i0, Py_ssize_t i1,
                    double lr, double momentum, double dampening, double wd, bint nesterov,
                    bint first) noexcept nogil:
    # each item's loads come before its stores (pi, not p[i] again after v[i] is written):
    # buffers of one size lie a multiple of a large power of two apart in memory, and a
    # load after a store whose address agrees in those low bits waits for it (4K aliasing
    # and wider); the reloads made the AVX2 build's SGD 1.6x and Adam 4x slower
    cdef Py_ssize_t i
    cdef floating d, buf, pi
    cdef unsigned csr = mn_ftz_on()
    for i in range(i0, i1):
        pi = p[i]
        d = g[i] + <floating>wd * pi
        if momentum != 0:
            buf = d if first else <floating>momentum * v[i] + <floating>(1 - dampening) * d
            v[i] = buf
            d = d + <floating>momentum * buf if nesterov else buf
        p[i] = pi - <floating>lr * d
    mn_ftz_restore(csr)


cdef void sgd_run(floating* p, const floating* g, floating* v, Py_ssize_t n, double lr,
                  double momentum, double dampening, double wd, bint nesterov, bint first) noexcept nogil:
    cdef int t, nt = threads_timed(n, n * SGD_NS)
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
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
    cdef floating d, root, pi, mi, vi
    cdef Py_ssize_t i
    cdef unsigned csr = mn_ftz_on()
    if floating is float:
        if MN_ADAM_VEC:   # AVX-512 builds: the division as a refined reciprocal (_adam.h)
            mn_adam_f32(p, g, m, v, i0, i1, step, vscale, fb1, fb2, feps, c1, c2, decay, l2)
            mn_ftz_restore(csr)
            return
    for i in range(i0, i1):   # loads before stores, as in sgd_range
        pi = p[i]
        d = g[i] + l2 * pi
        mi = fb1 * m[i] + c1 * d
        vi = fb2 * v[i] + c2 * d * d
        m[i] = mi
        v[i] = vi
        if floating is float:
            root = sqrtf(vi)
        else:
            root = sqrt(vi)
        p[i] = pi * decay - step * mi / (root * vscale + feps)
    mn_ftz_restore(csr)


cdef void adam_run(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n, double lr,
                   double b1, double b2, double eps, double wd, bint decoupled, double bc1,
                   double bc2) noexcept nogil:
    cdef int t, nt = threads_timed(n, n * ADAM_NS)
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        adam_range(p, g, m, v, n * t // nt, n * (t + 1) // nt, lr, b1, b2, eps, wd, decoupled,
                   bc1, bc2)
        finished(threadid())


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


# Adam over several parameters in one call: one parallel region (at most one team wake-up)
# for the whole model, and one Python call instead of one per parameter (the MLP's four
# calls cost more than their kernels' work outside its first layer).
cdef struct adam_job:
    char* p
    const char* g
    char* m
    char* v
    Py_ssize_t n, start     # items; start: its first item in the concatenation of all jobs
    double bc1, bc2


cdef void adam_jobs_range(const adam_job* jobs, Py_ssize_t njobs, Py_ssize_t i0, Py_ssize_t i1,
                          double lr, double b1, double b2, double eps, double wd,
                          bint decoupled, int itemsize) noexcept nogil:
    """Items i0..i1 of the concatenated parameters: each job's overlap with them."""
    cdef Py_ssize_t j, a, b
    for j in range(njobs):
        a = max(i0, jobs[j].start) - jobs[j].start
        b = min(i1, jobs[j].start + jobs[j].n) - jobs[j].start
        if a >= b:
            continue
        if itemsize == 4:
            adam_range(<float*>jobs[j].p, <const float*>jobs[j].g, <float*>jobs[j].m,
                       <float*>jobs[j].v, a, b, lr, b1, b2, eps, wd, decoupled, jobs[j].bc1,
                       jobs[j].bc2)
        else:
            adam_range(<double*>jobs[j].p, <const double*>jobs[j].g, <double*>jobs[j].m,
                       <double*>jobs[j].v, a, b, lr, b1, b2, eps, wd, decoupled, jobs[j].bc1,
                       jobs[j].bc2)


cdef inline bint fits(Buffer b, Py_ssize_t off, Py_ssize_t n, int itemsize):
    """need()'s test without its messages: n items from item off lie inside b (n >= 0)."""
    if n == 0:
        return True
    return b is not None and 0 <= off <= b.nbytes // itemsize and n <= b.nbytes // itemsize - off


def adam_steps(list params, list grads, list g_offs, list ms, list vs, list sizes, list steps,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               bint decoupled, int itemsize):
    """adam_step for each parameter k (params[k], grads[k] from item g_offs[k], ms[k], vs[k],
    sizes[k] items, its step steps[k] >= 1), all of one dtype, in one parallel region."""
    check_itemsize(itemsize, "adam_steps")
    cdef Py_ssize_t njobs = len(params), k, total = 0, t, n
    for lst, what in ((grads, "grads"), (g_offs, "g_offs"), (ms, "ms"), (vs, "vs"),
                      (sizes, "sizes"), (steps, "steps")):
        if len(lst) != njobs:
            raise ValueError(f"adam_steps: {njobs} parameters but {len(lst)} {what}")
    cdef Buffer jobs_mem = Buffer(max(njobs, 1) * sizeof(adam_job))
    cdef adam_job* jobs = <adam_job*>jobs_mem.ptr
    cdef Buffer p, g, m, v
    cdef Py_ssize_t off
    for k in range(njobs):
        p, g, m, v, n, off, t = params[k], grads[k], ms[k], vs[k], sizes[k], g_offs[k], steps[k]
        if n < 0:
            raise ValueError(f"adam_steps: size of parameter {k} must be >= 0, got {n}")
        if t < 1:
            raise ValueError(f"adam_steps: step of parameter {k} must be >= 1, got {t}")
        # the messages are formatted only for a buffer that does not fit (every step runs this)
        if not (fits(p, 0, n, itemsize) and fits(g, off, n, itemsize)
                and fits(m, 0, n, itemsize) and fits(v, 0, n, itemsize)):
            need(p, 0, (n,), itemsize, "adam_steps", f"parameter {k}")
            need(g, off, (n,), itemsize, "adam_steps", f"gradient {k}")
            need(m, 0, (n,), itemsize, "adam_steps", f"first moment m {k}")
            need(v, 0, (n,), itemsize, "adam_steps", f"second moment v {k}")
        jobs[k].p, jobs[k].g, jobs[k].m, jobs[k].v = p.ptr, g.ptr + off * itemsize, m.ptr, v.ptr
        jobs[k].n, jobs[k].start = n, total
        jobs[k].bc1, jobs[k].bc2 = 1 - beta1 ** t, 1 - beta2 ** t   # as the one-parameter path
        total += n
    cdef int nt = threads_timed(total, total * ADAM_NS)
    cdef int tid
    with nogil:
        if nt == 1:
            adam_jobs_range(jobs, njobs, 0, total, lr, beta1, beta2, eps, weight_decay,
                            decoupled, itemsize)
        else:
            for tid in prange(nt, num_threads=nt, schedule='static'):
                arrived(threadid())
                # shares end on 16-item bounds: vector loops stay aligned, no line shared
                adam_jobs_range(jobs, njobs, (total * tid // nt) & ~15,
                                total if tid == nt - 1 else (total * (tid + 1) // nt) & ~15,
                                lr, beta1, beta2, eps, weight_decay, decoupled, itemsize)
                finished(threadid())
