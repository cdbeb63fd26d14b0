# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused batch norm over every axis but the channel axis: x viewed as compact
(outer, C, inner) = (N, C) for BatchNorm1d, (N, C, H*W) for BatchNorm2d.
Forward: per-channel mean and biased variance, xhat and y = xhat * w + b. Backward:
dx, dw, db. The op-by-op versions take about a dozen kernel calls and as many
temporaries each.

(N, C, H*W): threads split the channels; each channel is read twice, statistics then
output (its N rows stay in L2 between the two). The statistics are one pass of
shifted sums in double, vectorised (_norm.h): with the shift k = the channel's first
value, var = E[(x-k)^2] - E[x-k]^2 loses nothing to cancellation unless the mean sits
thousands of deviations from that value."""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport sqrt
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport check_itemsize, need


cdef int check_forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b,
                       Py_ssize_t b_off, Buffer xhat, Buffer y, Buffer mean, Buffer var,
                       Buffer inv, tuple shape, Py_ssize_t C, int itemsize) except -1:
    check_itemsize(itemsize, "batchnorm")
    need(x, x_off, shape, itemsize, "batchnorm", "input")
    need(w, w_off, (C,), itemsize, "batchnorm", "weight")
    need(b, b_off, (C,), itemsize, "batchnorm", "bias")
    need(xhat, 0, shape, itemsize, "batchnorm", "xhat")
    need(y, 0, shape, itemsize, "batchnorm", "output")
    for buf, name in ((mean, "mean"), (var, "var"), (inv, "inv")):
        need(buf, 0, (C,), itemsize, "batchnorm", name)
    return 0


cdef int check_backward(Buffer g, Py_ssize_t g_off, Buffer xhat, Buffer w, Py_ssize_t w_off,
                        Buffer inv, Buffer dx, Buffer dw, Buffer db, tuple shape, Py_ssize_t C,
                        int itemsize) except -1:
    check_itemsize(itemsize, "batchnorm_backward")
    need(g, g_off, shape, itemsize, "batchnorm_backward", "output gradient")
    need(xhat, 0, shape, itemsize, "batchnorm_backward", "xhat")
    need(dx, 0, shape, itemsize, "batchnorm_backward", "input gradient")
    need(w, w_off, (C,), itemsize, "batchnorm_backward", "weight")
    for buf, name in ((inv, "inv"), (dw, "dw"), (db, "db")):
        need(buf, 0, (C,), itemsize, "batchnorm_backward", name)
    return 0


cdef extern from "_norm.h" nogil:
    void mn_bn_sums_f32(const float* r, Py_ssize_t n, double k, double* s, double* q)
    void mn_bn_sums_f64(const double* r, Py_ssize_t n, double k, double* s, double* q)
    void mn_bn_grad_sums_f32(const float* g, const float* xh, Py_ssize_t n, double* sg,
                             double* sgx)
    void mn_bn_grad_sums_f64(const double* g, const double* xh, Py_ssize_t n, double* sg,
                             double* sgx)
    void mn_bn_normalise_f32(const float* x, float* xh, float* y, Py_ssize_t n, float m,
                             float iv, float w, float b)
    void mn_bn_normalise_f64(const double* x, double* xh, double* y, Py_ssize_t n, double m,
                             double iv, double w, double b)
    void mn_bn_dx_f32(const float* g, const float* xh, float* dx, Py_ssize_t n, float a,
                      float fn, float sg, float sgx)
    void mn_bn_dx_f64(const double* g, const double* xh, double* dx, Py_ssize_t n, double a,
                      double fn, double sg, double sgx)


cdef inline void shifted_sums(const floating* r, Py_ssize_t n, double k, double* s,
                              double* q) noexcept nogil:
    if floating is float:
        mn_bn_sums_f32(r, n, k, s, q)
    else:
        mn_bn_sums_f64(r, n, k, s, q)


cdef inline void grad_sums(const floating* g, const floating* xh, Py_ssize_t n, double* sg,
                           double* sgx) noexcept nogil:
    if floating is float:
        mn_bn_grad_sums_f32(g, xh, n, sg, sgx)
    else:
        mn_bn_grad_sums_f64(g, xh, n, sg, sgx)


cdef inline void normalise_row(const floating* x, floating* xhat, floating* y, Py_ssize_t n,
                               floating m, floating iv, floating w, floating b) noexcept nogil:
    if floating is float:
        mn_bn_normalise_f32(x, xhat, y, n, m, iv, w, b)
    else:
        mn_bn_normalise_f64(x, xhat, y, n, m, iv, w, b)


cdef void forward_channel(const floating* x, const floating* w, const floating* b, floating* xhat,
                          floating* y, floating* mean, floating* var, floating* inv,
                          Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, double eps,
                          Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t o, row
    cdef Py_ssize_t n = outer * inner
    cdef double s = 0, q = 0, k = x[c * inner], d, v, iv
    for o in range(outer):
        shifted_sums(x + (o * C + c) * inner, inner, k, &s, &q)
    d = s / n                       # mean - k
    v = max(q / n - d * d, 0.0)     # the biased variance
    iv = 1.0 / sqrt(v + eps)
    mean[c], var[c], inv[c] = <floating>(k + d), <floating>v, <floating>iv
    for o in range(outer):
        row = (o * C + c) * inner
        normalise_row(x + row, xhat + row, y + row, inner, <floating>(k + d), <floating>iv,
                      w[c], b[c])


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b, Py_ssize_t b_off,
            Buffer xhat, Buffer y, Buffer mean, Buffer var, Buffer inv, Py_ssize_t outer,
            Py_ssize_t C, Py_ssize_t inner, double eps, int itemsize):
    """Training-mode batch norm; xhat, y (like x) and mean, var, inv (C,) are written."""
    check_forward(x, x_off, w, w_off, b, b_off, xhat, y, mean, var, inv, (outer, C, inner), C,
                  itemsize)
    cdef Py_ssize_t c
    cdef int nt = min(threads_for(outer * C * inner * 4), C) if C > 0 else 1
    if outer * inner == 0:
        raise ValueError("batch norm: no values to take statistics over")
    with nogil:
        for c in prange(C, num_threads=nt, schedule='static'):
            if itemsize == 4:
                forward_channel(<float*>x.ptr + x_off, <float*>w.ptr + w_off, <float*>b.ptr + b_off,
                                <float*>xhat.ptr, <float*>y.ptr, <float*>mean.ptr, <float*>var.ptr,
                                <float*>inv.ptr, outer, C, inner, eps, c)
            else:
                forward_channel(<double*>x.ptr + x_off, <double*>w.ptr + w_off,
                                <double*>b.ptr + b_off, <double*>xhat.ptr, <double*>y.ptr,
                                <double*>mean.ptr, <double*>var.ptr, <double*>inv.ptr, outer, C,
                                inner, eps, c)


cdef void backward_channel(const floating* g, const floating* xhat, const floating* w,
                           const floating* inv, floating* dx, floating* dw, floating* db,
                           Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                           Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t o, k
    cdef Py_ssize_t n = outer * inner
    cdef double sg = 0, sgx = 0
    cdef floating a, fn = <floating>n, fsg, fsgx
    for o in range(outer):
        k = (o * C + c) * inner
        grad_sums(g + k, xhat + k, inner, &sg, &sgx)
    dw[c], db[c] = <floating>sgx, <floating>sg
    # dx = w * inv / n * (n g - sum(g) - xhat * sum(g xhat))
    a = <floating>(w[c] * inv[c] / n)
    fsg, fsgx = <floating>sg, <floating>sgx
    for o in range(outer):
        k = (o * C + c) * inner
        if floating is float:
            mn_bn_dx_f32(g + k, xhat + k, dx + k, inner, a, fn, fsg, fsgx)
        else:
            mn_bn_dx_f64(g + k, xhat + k, dx + k, inner, a, fn, fsg, fsgx)


def backward(Buffer g, Py_ssize_t g_off, Buffer xhat, Buffer w, Py_ssize_t w_off, Buffer inv,
             Buffer dx, Buffer dw, Buffer db, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
             int itemsize):
    """dx (like g), dw, db (C,) of training-mode batch norm from the output grad g."""
    check_backward(g, g_off, xhat, w, w_off, inv, dx, dw, db, (outer, C, inner), C, itemsize)
    cdef Py_ssize_t c
    cdef int nt = min(threads_for(outer * C * inner * 4), C) if C > 0 else 1
    with nogil:
        for c in prange(C, num_threads=nt, schedule='static'):
            if itemsize == 4:
                backward_channel(<float*>g.ptr + g_off, <float*>xhat.ptr, <float*>w.ptr + w_off,
                                 <float*>inv.ptr, <float*>dx.ptr, <float*>dw.ptr, <float*>db.ptr,
                                 outer, C, inner, c)
            else:
                backward_channel(<double*>g.ptr + g_off, <double*>xhat.ptr,
                                 <double*>w.ptr + w_off, <double*>inv.ptr, <double*>dx.ptr,
                                 <double*>dw.ptr, <double*>db.ptr, outer, C, inner, c)


# (N, C) input (inner == 1): rows outer, channels inner, so every pass is contiguous and
# vectorises across channels; per-channel sums live in double arrays
cdef void forward_rows(const floating* x, const floating* w, const floating* b, floating* xhat,
                       floating* y, floating* mean, floating* var, floating* inv, double* acc,
                       Py_ssize_t N, Py_ssize_t C, double eps) noexcept nogil:
    cdef Py_ssize_t o, c
    cdef const floating* row
    for c in range(2 * C):
        acc[c] = 0
    for o in range(N):
        row = x + o * C
        for c in range(C):
            acc[c] += row[c]
    for c in range(C):
        mean[c] = <floating>(acc[c] / N)
    for o in range(N):
        row = x + o * C
        for c in range(C):
            acc[C + c] += (row[c] - mean[c]) * (row[c] - mean[c])
    for c in range(C):
        var[c] = <floating>(acc[C + c] / N)
        inv[c] = <floating>(1.0 / sqrt(acc[C + c] / N + eps))
    for o in range(N):
        for c in range(C):
            xhat[o * C + c] = (x[o * C + c] - mean[c]) * inv[c]
            y[o * C + c] = xhat[o * C + c] * w[c] + b[c]


cdef void backward_rows(const floating* g, const floating* xhat, const floating* w,
                        const floating* inv, floating* dx, floating* dw, floating* db, double* acc,
                        Py_ssize_t N, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t o, c
    for c in range(2 * C):
        acc[c] = 0
    for o in range(N):
        for c in range(C):
            acc[c] += g[o * C + c]
            acc[C + c] += g[o * C + c] * xhat[o * C + c]
    for c in range(C):
        db[c], dw[c] = <floating>acc[c], <floating>acc[C + c]
    for o in range(N):
        for c in range(C):
            dx[o * C + c] = (w[c] * inv[c] / N) * (N * g[o * C + c] - db[c] - xhat[o * C + c] * dw[c])


def forward_2d(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b, Py_ssize_t b_off,
               Buffer xhat, Buffer y, Buffer mean, Buffer var, Buffer inv, Py_ssize_t N,
               Py_ssize_t C, double eps, int itemsize):
    """forward() for (N, C) input, one thread (BatchNorm1d's sizes are small)."""
    check_forward(x, x_off, w, w_off, b, b_off, xhat, y, mean, var, inv, (N, C), C, itemsize)
    cdef Buffer acc = Buffer(max(2 * C, 1) * sizeof(double))
    if N == 0:
        raise ValueError("batch norm: no values to take statistics over")
    with nogil:
        if itemsize == 4:
            forward_rows(<float*>x.ptr + x_off, <float*>w.ptr + w_off, <float*>b.ptr + b_off,
                         <float*>xhat.ptr, <float*>y.ptr, <float*>mean.ptr, <float*>var.ptr,
                         <float*>inv.ptr, <double*>acc.ptr, N, C, eps)
        else:
            forward_rows(<double*>x.ptr + x_off, <double*>w.ptr + w_off, <double*>b.ptr + b_off,
                         <double*>xhat.ptr, <double*>y.ptr, <double*>mean.ptr, <double*>var.ptr,
                         <double*>inv.ptr, <double*>acc.ptr, N, C, eps)


def backward_2d(Buffer g, Py_ssize_t g_off, Buffer xhat, Buffer w, Py_ssize_t w_off, Buffer inv,
                Buffer dx, Buffer dw, Buffer db, Py_ssize_t N, Py_ssize_t C, int itemsize):
    """backward() for (N, C) input, one thread."""
    check_backward(g, g_off, xhat, w, w_off, inv, dx, dw, db, (N, C), C, itemsize)
    cdef Buffer acc = Buffer(max(2 * C, 1) * sizeof(double))
    with nogil:
        if itemsize == 4:
            backward_rows(<float*>g.ptr + g_off, <float*>xhat.ptr, <float*>w.ptr + w_off,
                          <float*>inv.ptr, <float*>dx.ptr, <float*>dw.ptr, <float*>db.ptr,
                          <double*>acc.ptr, N, C)
        else:
            backward_rows(<double*>g.ptr + g_off, <double*>xhat.ptr, <double*>w.ptr + w_off,
                          <double*>inv.ptr, <double*>dx.ptr, <double*>dw.ptr, <double*>db.ptr,
                          <double*>acc.ptr, N, C)
