# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused batch norm over every axis but the channel axis: x viewed as compact
(outer, C, inner) = (N, C) for BatchNorm1d, (N, C, H*W) for BatchNorm2d.
Forward: per-channel mean and biased variance, xhat and y = xhat * w + b. Backward:
dx, dw, db. The op-by-op versions take about a dozen kernel calls and as many
temporaries each. With relu, y = max(xhat * w + b, 0) and the backward masks the output
grad by y > 0 in the same passes (conv -> BatchNorm2d -> ReLU blocks).

(N, C, H*W): threads split the channels; each channel is read twice, statistics then
output (its N rows stay in L2 between the two). The statistics are one pass of
shifted sums in double, vectorised (_norm.h): with the shift k = the channel's first
value, var = E[(x-k)^2] - E[x-k]^2 loses nothing to cancellation unless the mean sits
thousands of deviations from that value.

Small maps (inner <= SLAB_INNER: BatchNorm1d's (N, C), maps up to 16x16 such as a
ResNet's late 4x4 .. 1x1 ones) go by columns instead: each sample is one row of
C * inner values, sums are kept per column (same shift, per channel) and then added per
channel, so every loop runs whole rows in vector lanes instead of a few values per call;
threads split the channels (column blocks on channel bounds)."""
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
                        Buffer inv, Buffer dx, Buffer dw, Buffer db, Buffer y, tuple shape,
                        Py_ssize_t C, int itemsize) except -1:
    check_itemsize(itemsize, "batchnorm_backward")
    if y is not None:
        need(y, 0, shape, itemsize, "batchnorm_backward", "ReLU output")
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
    void mn_bn_grad_sums_relu_f32(const float* g, const float* xh, const float* y,
                                  Py_ssize_t n, double* sg, double* sgx)
    void mn_bn_grad_sums_relu_f64(const double* g, const double* xh, const double* y,
                                  Py_ssize_t n, double* sg, double* sgx)
    void mn_bn_normalise_f32(const float* x, float* xh, float* y, Py_ssize_t n, float m,
                             float iv, float w, float b)
    void mn_bn_normalise_f64(const double* x, double* xh, double* y, Py_ssize_t n, double m,
                             double iv, double w, double b)
    void mn_bn_normalise_relu_f32(const float* x, float* xh, float* y, Py_ssize_t n, float m,
                                  float iv, float w, float b)
    void mn_bn_normalise_relu_f64(const double* x, double* xh, double* y, Py_ssize_t n,
                                  double m, double iv, double w, double b)
    void mn_bn_dx_f32(const float* g, const float* xh, float* dx, Py_ssize_t n, float a,
                      float fn, float sg, float sgx)
    void mn_bn_dx_f64(const double* g, const double* xh, double* dx, Py_ssize_t n, double a,
                      double fn, double sg, double sgx)
    void mn_bn_dx_relu_f32(const float* g, const float* xh, const float* y, float* dx,
                           Py_ssize_t n, float a, float fn, float sg, float sgx)
    void mn_bn_dx_relu_f64(const double* g, const double* xh, const double* y, double* dx,
                           Py_ssize_t n, double a, double fn, double sg, double sgx)
    void mn_bn_col_sums_f32(const float* r, const float* k, double* s, double* q, Py_ssize_t n)
    void mn_bn_col_sums_f64(const double* r, const double* k, double* s, double* q,
                            Py_ssize_t n)
    void mn_bn_col_normalise_f32(const float* x, float* xh, float* y, const float* m,
                                 const float* iv, const float* w, const float* b, Py_ssize_t n,
                                 int relu)
    void mn_bn_col_normalise_f64(const double* x, double* xh, double* y, const double* m,
                                 const double* iv, const double* w, const double* b,
                                 Py_ssize_t n, int relu)
    void mn_bn_col_grad_sums_f32(const float* g, const float* xh, const float* y, double* sg,
                                 double* sgx, Py_ssize_t n)
    void mn_bn_col_grad_sums_f64(const double* g, const double* xh, const double* y,
                                 double* sg, double* sgx, Py_ssize_t n)
    void mn_bn_col_dx_f32(const float* g, const float* xh, const float* y, float* dx,
                          const float* a, const float* sg, const float* sgx, float fn,
                          Py_ssize_t n)
    void mn_bn_col_dx_f64(const double* g, const double* xh, const double* y, double* dx,
                          const double* a, const double* sg, const double* sgx, double fn,
                          Py_ssize_t n)


# maps of at most this many values per sample and channel (16x16) go by columns: measured
# 0.5-0.8x the channel path's time at 8x8 and 16x16, 0.05-0.5x below
DEF SLAB_INNER = 256


cdef inline void shifted_sums(const floating* r, Py_ssize_t n, double k, double* s,
                              double* q) noexcept nogil:
    if floating is float:
        mn_bn_sums_f32(r, n, k, s, q)
    else:
        mn_bn_sums_f64(r, n, k, s, q)


cdef inline void grad_sums(const floating* g, const floating* xh, const floating* y,
                           Py_ssize_t n, double* sg, double* sgx) noexcept nogil:
    if floating is float:
        if y != NULL:
            mn_bn_grad_sums_relu_f32(g, xh, y, n, sg, sgx)
        else:
            mn_bn_grad_sums_f32(g, xh, n, sg, sgx)
    else:
        if y != NULL:
            mn_bn_grad_sums_relu_f64(g, xh, y, n, sg, sgx)
        else:
            mn_bn_grad_sums_f64(g, xh, n, sg, sgx)


cdef inline void normalise_row(const floating* x, floating* xhat, floating* y, Py_ssize_t n,
                               floating m, floating iv, floating w, floating b,
                               bint relu) noexcept nogil:
    if floating is float:
        if relu:
            mn_bn_normalise_relu_f32(x, xhat, y, n, m, iv, w, b)
        else:
            mn_bn_normalise_f32(x, xhat, y, n, m, iv, w, b)
    else:
        if relu:
            mn_bn_normalise_relu_f64(x, xhat, y, n, m, iv, w, b)
        else:
            mn_bn_normalise_f64(x, xhat, y, n, m, iv, w, b)


cdef inline void dx_row(const floating* g, const floating* xh, const floating* y, floating* dx,
                        Py_ssize_t n, floating a, floating fn, floating sg,
                        floating sgx) noexcept nogil:
    if floating is float:
        if y != NULL:
            mn_bn_dx_relu_f32(g, xh, y, dx, n, a, fn, sg, sgx)
        else:
            mn_bn_dx_f32(g, xh, dx, n, a, fn, sg, sgx)
    else:
        if y != NULL:
            mn_bn_dx_relu_f64(g, xh, y, dx, n, a, fn, sg, sgx)
        else:
            mn_bn_dx_f64(g, xh, dx, n, a, fn, sg, sgx)


cdef inline void stats(double s, double q, double k, Py_ssize_t n, double eps, floating* mean,
                       floating* var, floating* inv) noexcept nogil:
    """mean, biased var and 1/sqrt(var + eps) from shifted sums s, q about k."""
    cdef double d = s / n                 # mean - k
    cdef double v = max(q / n - d * d, 0.0)
    mean[0], var[0], inv[0] = <floating>(k + d), <floating>v, <floating>(1.0 / sqrt(v + eps))


cdef void forward_channel(const floating* x, const floating* w, const floating* b, floating* xhat,
                          floating* y, floating* mean, floating* var, floating* inv,
                          Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, double eps,
                          Py_ssize_t c, bint relu) noexcept nogil:
    cdef Py_ssize_t o, row
    cdef double s = 0, q = 0, k = x[c * inner]
    for o in range(outer):
        shifted_sums(x + (o * C + c) * inner, inner, k, &s, &q)
    stats(s, q, k, outer * inner, eps, mean + c, var + c, inv + c)
    for o in range(outer):
        row = (o * C + c) * inner
        normalise_row(x + row, xhat + row, y + row, inner, mean[c], inv[c], w[c], b[c], relu)


cdef void forward_columns(const floating* x, const floating* w, const floating* b,
                          floating* xhat, floating* y, floating* mean, floating* var,
                          floating* inv, double* ds, double* dq, floating* cm, floating* civ,
                          floating* cw, floating* cb, Py_ssize_t outer, Py_ssize_t C,
                          Py_ssize_t inner, double eps, Py_ssize_t c0, Py_ssize_t c1,
                          bint relu) noexcept nogil:
    """Channels [c0, c1) by columns: ds, dq (double) and cm, civ, cw, cb hold per-column
    sums and constants (C * inner each; this block's columns only are touched)."""
    cdef Py_ssize_t W = C * inner, j0 = c0 * inner, nj = (c1 - c0) * inner, j, c, o, i
    cdef double s, q
    for j in range(j0, j0 + nj):
        ds[j], dq[j] = 0, 0
        cm[j] = x[j - j % inner]          # the shift: the channel's first value
    for o in range(outer):
        col_sums(x + o * W + j0, cm + j0, ds + j0, dq + j0, nj)
    for c in range(c0, c1):
        s, q = 0, 0
        for i in range(c * inner, (c + 1) * inner):
            s += ds[i]
            q += dq[i]
        stats(s, q, cm[c * inner], outer * inner, eps, mean + c, var + c, inv + c)
        for i in range(c * inner, (c + 1) * inner):
            cm[i], civ[i], cw[i], cb[i] = mean[c], inv[c], w[c], b[c]
    for o in range(outer):
        j = o * W + j0
        col_normalise(x + j, xhat + j, y + j, cm + j0, civ + j0, cw + j0, cb + j0, nj, relu)


cdef inline void col_sums(const floating* r, const floating* k, double* s, double* q,
                          Py_ssize_t n) noexcept nogil:
    if floating is float:
        mn_bn_col_sums_f32(r, k, s, q, n)
    else:
        mn_bn_col_sums_f64(r, k, s, q, n)


cdef inline void col_normalise(const floating* x, floating* xh, floating* y, const floating* m,
                               const floating* iv, const floating* w, const floating* b,
                               Py_ssize_t n, bint relu) noexcept nogil:
    if floating is float:
        mn_bn_col_normalise_f32(x, xh, y, m, iv, w, b, n, relu)
    else:
        mn_bn_col_normalise_f64(x, xh, y, m, iv, w, b, n, relu)


cdef inline (Py_ssize_t, Py_ssize_t) block(Py_ssize_t C, int t, int nt) noexcept nogil:
    """Thread t's channels [c0, c1) of C split into nt blocks."""
    return C * t // nt, C * (t + 1) // nt


cdef void forward_any(const floating* x, const floating* w, const floating* b, floating* xhat,
                      floating* y, floating* mean, floating* var, floating* inv, char* work,
                      Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, double eps, bint relu,
                      int nt) noexcept nogil:
    cdef Py_ssize_t c, c0, c1, W = C * inner
    cdef int t
    cdef double* ds = <double*>work
    cdef floating* f = <floating*>(work + 2 * W * sizeof(double))
    if inner > SLAB_INNER:
        for c in prange(C, num_threads=nt, schedule='static'):
            forward_channel(x, w, b, xhat, y, mean, var, inv, outer, C, inner, eps, c, relu)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        c0, c1 = block(C, t, nt)
        forward_columns(x, w, b, xhat, y, mean, var, inv, ds, ds + W, f, f + W, f + 2 * W,
                        f + 3 * W, outer, C, inner, eps, c0, c1, relu)


cdef Buffer workspace(Py_ssize_t W, int itemsize, int arrays):
    """2 double arrays and `arrays` arrays of the dtype, W each (the column path's)."""
    return Buffer(max(W * (2 * <Py_ssize_t>sizeof(double) + arrays * itemsize), 1))


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b, Py_ssize_t b_off,
            Buffer xhat, Buffer y, Buffer mean, Buffer var, Buffer inv, Py_ssize_t outer,
            Py_ssize_t C, Py_ssize_t inner, double eps, int itemsize, bint relu=False):
    """Training-mode batch norm; xhat, y (like x) and mean, var, inv (C,) are written.
    relu: y = max(xhat * w + b, 0)."""
    check_forward(x, x_off, w, w_off, b, b_off, xhat, y, mean, var, inv, (outer, C, inner), C,
                  itemsize)
    if outer * inner == 0:
        raise ValueError("batch norm: no values to take statistics over")
    cdef int nt = min(threads_for(outer * C * inner * 4), C) if C > 0 else 1
    cdef Buffer work = workspace(C * inner if inner <= SLAB_INNER else 0, itemsize, 4)
    with nogil:
        if itemsize == 4:
            forward_any(<float*>x.ptr + x_off, <float*>w.ptr + w_off, <float*>b.ptr + b_off,
                        <float*>xhat.ptr, <float*>y.ptr, <float*>mean.ptr, <float*>var.ptr,
                        <float*>inv.ptr, work.ptr, outer, C, inner, eps, relu, nt)
        else:
            forward_any(<double*>x.ptr + x_off, <double*>w.ptr + w_off, <double*>b.ptr + b_off,
                        <double*>xhat.ptr, <double*>y.ptr, <double*>mean.ptr, <double*>var.ptr,
                        <double*>inv.ptr, work.ptr, outer, C, inner, eps, relu, nt)


cdef void backward_channel(const floating* g, const floating* xhat, const floating* y,
                           const floating* w, const floating* inv, floating* dx, floating* dw,
                           floating* db, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                           Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t o, k
    cdef Py_ssize_t n = outer * inner
    cdef double sg = 0, sgx = 0
    cdef floating a, fn = <floating>n
    for o in range(outer):
        k = (o * C + c) * inner
        grad_sums(g + k, xhat + k, y + k if y != NULL else NULL, inner, &sg, &sgx)
    dw[c], db[c] = <floating>sgx, <floating>sg
    # dx = w * inv / n * (n g - sum(g) - xhat * sum(g xhat))
    a = <floating>(w[c] * inv[c] / n)
    for o in range(outer):
        k = (o * C + c) * inner
        dx_row(g + k, xhat + k, y + k if y != NULL else NULL, dx + k, inner, a, fn,
               <floating>sg, <floating>sgx)


cdef void backward_columns(const floating* g, const floating* xhat, const floating* y,
                           const floating* w, const floating* inv, floating* dx, floating* dw,
                           floating* db, double* ds, double* dq, floating* ca, floating* csg,
                           floating* csgx, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                           Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """backward_channel for channels [c0, c1) by columns (as forward_columns)."""
    cdef Py_ssize_t W = C * inner, j0 = c0 * inner, nj = (c1 - c0) * inner, j, c, o, i
    cdef Py_ssize_t n = outer * inner
    cdef double sg, sgx
    for j in range(j0, j0 + nj):
        ds[j], dq[j] = 0, 0
    for o in range(outer):
        j = o * W + j0
        col_grad_sums(g + j, xhat + j, y + j if y != NULL else NULL, ds + j0, dq + j0, nj)
    for c in range(c0, c1):
        sg, sgx = 0, 0
        for i in range(c * inner, (c + 1) * inner):
            sg += ds[i]
            sgx += dq[i]
        dw[c], db[c] = <floating>sgx, <floating>sg
        for i in range(c * inner, (c + 1) * inner):
            ca[i], csg[i], csgx[i] = <floating>(w[c] * inv[c] / n), <floating>sg, <floating>sgx
    for o in range(outer):
        j = o * W + j0
        col_dx(g + j, xhat + j, y + j if y != NULL else NULL, dx + j, ca + j0, csg + j0,
               csgx + j0, <floating>n, nj)


cdef inline void col_grad_sums(const floating* g, const floating* xh, const floating* y,
                               double* sg, double* sgx, Py_ssize_t n) noexcept nogil:
    if floating is float:
        mn_bn_col_grad_sums_f32(g, xh, y, sg, sgx, n)
    else:
        mn_bn_col_grad_sums_f64(g, xh, y, sg, sgx, n)


cdef inline void col_dx(const floating* g, const floating* xh, const floating* y, floating* dx,
                        const floating* a, const floating* sg, const floating* sgx, floating fn,
                        Py_ssize_t n) noexcept nogil:
    if floating is float:
        mn_bn_col_dx_f32(g, xh, y, dx, a, sg, sgx, fn, n)
    else:
        mn_bn_col_dx_f64(g, xh, y, dx, a, sg, sgx, fn, n)


cdef void backward_any(const floating* g, const floating* xhat, const floating* y,
                       const floating* w, const floating* inv, floating* dx, floating* dw,
                       floating* db, char* work, Py_ssize_t outer, Py_ssize_t C,
                       Py_ssize_t inner, int nt) noexcept nogil:
    cdef Py_ssize_t c, c0, c1, W = C * inner
    cdef int t
    cdef double* ds = <double*>work
    cdef floating* f = <floating*>(work + 2 * W * sizeof(double))
    if inner > SLAB_INNER:
        for c in prange(C, num_threads=nt, schedule='static'):
            backward_channel(g, xhat, y, w, inv, dx, dw, db, outer, C, inner, c)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        c0, c1 = block(C, t, nt)
        backward_columns(g, xhat, y, w, inv, dx, dw, db, ds, ds + W, f, f + W, f + 2 * W, outer,
                         C, inner, c0, c1)


def backward(Buffer g, Py_ssize_t g_off, Buffer xhat, Buffer w, Py_ssize_t w_off, Buffer inv,
             Buffer dx, Buffer dw, Buffer db, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
             int itemsize, Buffer y=None):
    """dx (like g), dw, db (C,) of training-mode batch norm from the output grad g; with y
    (the forward's ReLU output, compact) g is first masked by y > 0."""
    check_backward(g, g_off, xhat, w, w_off, inv, dx, dw, db, y, (outer, C, inner), C, itemsize)
    cdef int nt = min(threads_for(outer * C * inner * 4), C) if C > 0 else 1
    cdef Buffer work = workspace(C * inner if inner <= SLAB_INNER else 0, itemsize, 3)
    cdef char* yp = y.ptr if y is not None else NULL
    with nogil:
        if itemsize == 4:
            backward_any(<float*>g.ptr + g_off, <float*>xhat.ptr, <float*>yp,
                         <float*>w.ptr + w_off, <float*>inv.ptr, <float*>dx.ptr, <float*>dw.ptr,
                         <float*>db.ptr, work.ptr, outer, C, inner, nt)
        else:
            backward_any(<double*>g.ptr + g_off, <double*>xhat.ptr, <double*>yp,
                         <double*>w.ptr + w_off, <double*>inv.ptr, <double*>dx.ptr,
                         <double*>dw.ptr, <double*>db.ptr, work.ptr, outer, C, inner, nt)


# (N, C) input: inner == 1, the column path
def forward_2d(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b, Py_ssize_t b_off,
               Buffer xhat, Buffer y, Buffer mean, Buffer var, Buffer inv, Py_ssize_t N,
               Py_ssize_t C, double eps, int itemsize, bint relu=False):
    """forward() for (N, C) input."""
    forward(x, x_off, w, w_off, b, b_off, xhat, y, mean, var, inv, N, C, 1, eps, itemsize, relu)


def backward_2d(Buffer g, Py_ssize_t g_off, Buffer xhat, Buffer w, Py_ssize_t w_off, Buffer inv,
                Buffer dx, Buffer dw, Buffer db, Py_ssize_t N, Py_ssize_t C, int itemsize,
                Buffer y=None):
    """backward() for (N, C) input."""
    backward(g, g_off, xhat, w, w_off, inv, dx, dw, db, N, C, 1, itemsize, y)
