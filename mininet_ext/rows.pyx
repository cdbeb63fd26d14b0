# cython: boundscheck=False, wraparound=False, cdivision=True
"""Row kernels over the last dim of a compact (R, D) array, one call of _rows.h's loops a
row: layer norm forward (y, and each row's mean and 1/sqrt(var + eps) for the backward)
and backward (dx, and the weight's and bias's gradients summed over the rows); softmax
forward and backward; log-softmax forward and backward. Built from ops, a layer norm is
about a dozen kernel calls and as many temporaries each way, a softmax five forward and
four back, a log-softmax six forward (4.8x PyTorch's time at 2048 x 256) and four back.

Rows split over the threads. The weight's and bias's gradients are summed in `parts`
partial sums (double) fixed by the size whatever number of threads runs them, then added
in order: the same bits on any thread count."""
from cython.parallel cimport prange, threadid
from libc.stdlib cimport calloc, free
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_timed, arrived
from mininet_ext._check cimport check_itemsize, need

cdef extern from "_rows.h" nogil:
    void mn_ln_stats_f32(const float* r, Py_ssize_t n, double eps, float* mean, float* rstd)
    void mn_ln_stats_f64(const double* r, Py_ssize_t n, double eps, double* mean, double* rstd)
    void mn_ln_row_f32(const float* x, const float* w, const float* b, float* y, Py_ssize_t n,
                       float m, float rs)
    void mn_ln_row_f64(const double* x, const double* w, const double* b, double* y,
                       Py_ssize_t n, double m, double rs)
    void mn_ln_back_row_f32(const float* g, const float* x, const float* w, float* dx,
                            double* dw, double* db, Py_ssize_t n, float m, float rs)
    void mn_ln_back_row_f64(const double* g, const double* x, const double* w, double* dx,
                            double* dw, double* db, Py_ssize_t n, double m, double rs)
    double mn_softmax_row_f32(const float* x, float* y, Py_ssize_t n, float* m)
    double mn_softmax_row_f64(const double* x, double* y, Py_ssize_t n, double* m)
    void mn_softmax_back_row_f32(const float* y, const float* g, float* dx, Py_ssize_t n)
    void mn_softmax_back_row_f64(const double* y, const double* g, double* dx, Py_ssize_t n)
    void mn_log_softmax_row_f32(const float* x, float* y, Py_ssize_t n)
    void mn_log_softmax_row_f64(const double* x, double* y, Py_ssize_t n)
    void mn_log_softmax_back_row_f32(const float* y, const float* g, float* dx, Py_ssize_t n)
    void mn_log_softmax_back_row_f64(const double* y, const double* g, double* dx, Py_ssize_t n)


cdef extern from *:
    """
    /* softmax rows with the row loop's shape each_row takes (no max written back) */
    static void mn_softmax_only_f32(const float* x, float* y, ptrdiff_t n)
    { mn_softmax_row_f32(x, y, n, NULL); }
    static void mn_softmax_only_f64(const double* x, double* y, ptrdiff_t n)
    { mn_softmax_row_f64(x, y, n, NULL); }
    """
    void mn_softmax_only_f32(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void mn_softmax_only_f64(const double* x, double* y, Py_ssize_t n) noexcept nogil


# one thread's ns per value, about (Xeon model 167): threads_timed weighs them against the
# cost of waking the team
# values per partial sum of the weight's and bias's gradients (up to 64 of them)
DEF PART_VALUES = 8192
DEF PART_SUMS_MAX = 1 << 20
cdef double LN_NS = 0.4, LN_BACK_NS = 0.6, SOFTMAX_NS = 0.6, SOFTMAX_BACK_NS = 0.3


cdef inline char* at(Buffer b, Py_ssize_t off, int itemsize):
    return NULL if b is None else b.ptr + off * itemsize


cdef int check_rows(str kernel, int itemsize, Py_ssize_t R, Py_ssize_t D) except -1:
    check_itemsize(itemsize, kernel)
    if R < 0 or D < 0:
        raise ValueError(f"{kernel}: negative size ({R}, {D})")
    return 0


def layernorm(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer b, Py_ssize_t b_off,
              Buffer y, Buffer mean, Buffer rstd, Py_ssize_t R, Py_ssize_t D, double eps,
              int itemsize):
    """y (R, D) = (x - mean) * rstd * w + b row by row (w, b (D,) or None); mean and
    rstd (R,) written. x compact from item x_off; the rest compact."""
    check_rows("layernorm", itemsize, R, D)
    need(x, x_off, (R, D), itemsize, "layernorm", "input")
    if w is not None:
        need(w, w_off, (D,), itemsize, "layernorm", "weight")
    if b is not None:
        need(b, b_off, (D,), itemsize, "layernorm", "bias")
    need(y, 0, (R, D), itemsize, "layernorm", "output")
    need(mean, 0, (R,), itemsize, "layernorm", "mean")
    need(rstd, 0, (R,), itemsize, "layernorm", "rstd")
    cdef char* xp = at(x, x_off, itemsize)
    cdef char* wp = at(w, w_off, itemsize)
    cdef char* bp = at(b, b_off, itemsize)
    cdef Py_ssize_t i
    cdef int nt = threads_timed(R * D, R * D * LN_NS)
    with nogil:
        if itemsize == 4:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                mn_ln_stats_f32(<float*>xp + i * D, D, eps, <float*>mean.ptr + i,
                                <float*>rstd.ptr + i)
                mn_ln_row_f32(<float*>xp + i * D, <float*>wp, <float*>bp,
                              <float*>y.ptr + i * D, D, (<float*>mean.ptr)[i],
                              (<float*>rstd.ptr)[i])
        else:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                mn_ln_stats_f64(<double*>xp + i * D, D, eps, <double*>mean.ptr + i,
                                <double*>rstd.ptr + i)
                mn_ln_row_f64(<double*>xp + i * D, <double*>wp, <double*>bp,
                              <double*>y.ptr + i * D, D, (<double*>mean.ptr)[i],
                              (<double*>rstd.ptr)[i])


cdef void back_rows(char* g, char* x, char* w, char* mean, char* rstd, char* dx, double* dw,
                    double* db, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t D,
                    int itemsize) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(r0, r1):
        if itemsize == 4:
            mn_ln_back_row_f32(<float*>g + i * D, <float*>x + i * D, <float*>w,
                               <float*>dx + i * D, dw, db, D, (<float*>mean)[i],
                               (<float*>rstd)[i])
        else:
            mn_ln_back_row_f64(<double*>g + i * D, <double*>x + i * D, <double*>w,
                               <double*>dx + i * D, dw, db, D, (<double*>mean)[i],
                               (<double*>rstd)[i])


def layernorm_backward(Buffer g, Py_ssize_t g_off, Buffer x, Py_ssize_t x_off, Buffer mean,
                       Buffer rstd, Buffer w, Py_ssize_t w_off, Buffer dx, Buffer dw, Buffer db,
                       Py_ssize_t R, Py_ssize_t D, int itemsize):
    """dx (R, D) from the output gradient g, the input x and the forward's mean and rstd;
    dw = sum over rows of g * xhat and db = sum of g (D,) where given (else None).
    g and x compact from items g_off and x_off; the rest compact."""
    check_rows("layernorm_backward", itemsize, R, D)
    need(g, g_off, (R, D), itemsize, "layernorm_backward", "output gradient")
    need(x, x_off, (R, D), itemsize, "layernorm_backward", "input")
    need(mean, 0, (R,), itemsize, "layernorm_backward", "mean")
    need(rstd, 0, (R,), itemsize, "layernorm_backward", "rstd")
    if w is not None:
        need(w, w_off, (D,), itemsize, "layernorm_backward", "weight")
    need(dx, 0, (R, D), itemsize, "layernorm_backward", "input gradient")
    if dw is not None:
        need(dw, 0, (D,), itemsize, "layernorm_backward", "weight gradient")
    if db is not None:
        need(db, 0, (D,), itemsize, "layernorm_backward", "bias gradient")
    # at most one part a row, and at most PART_SUMS_MAX sums in all (a single long row
    # takes one part, not 64 of its width)
    cdef int parts = <int>min(max(R * D // PART_VALUES, 1), 64, max(R, 1),
                              max(PART_SUMS_MAX // max(D, 1), 1))
    cdef int nt = threads_timed(R * D, R * D * LN_BACK_NS)
    cdef Py_ssize_t j, width = D if (dw is not None or db is not None) else 0
    cdef int part, k
    cdef double* acc = <double*>calloc(max(2 * parts * width, 1), sizeof(double))
    if acc == NULL:
        raise MemoryError(f"layernorm_backward: {2 * parts * D} doubles of partial sums")
    cdef char* gp = at(g, g_off, itemsize)
    cdef char* xp = at(x, x_off, itemsize)
    cdef char* wp = at(w, w_off, itemsize)
    cdef double* dwp
    cdef double* dbp
    cdef double sw, sb
    cdef bint want_w = dw is not None, want_b = db is not None
    try:
        with nogil:
            for part in prange(parts, num_threads=min(nt, parts), schedule='static'):
                arrived(threadid())
                dwp = acc + 2 * part * width if want_w else NULL
                dbp = acc + (2 * part + 1) * width if want_b else NULL
                back_rows(gp, xp, wp, mean.ptr, rstd.ptr, dx.ptr, dwp, dbp,
                          R * part // parts, R * (part + 1) // parts, D, itemsize)
            for j in range(width):
                sw = 0
                sb = 0
                for k in range(parts):
                    sw = sw + acc[2 * k * width + j]
                    sb = sb + acc[(2 * k + 1) * width + j]
                if want_w:
                    if itemsize == 4:
                        (<float*>dw.ptr)[j] = <float>sw
                    else:
                        (<double*>dw.ptr)[j] = sw
                if want_b:
                    if itemsize == 4:
                        (<float*>db.ptr)[j] = <float>sb
                    else:
                        (<double*>db.ptr)[j] = sb
    finally:
        free(acc)


# one row's loop, y = f(x) or dx = f(y, g), for each_row and each_row_back
ctypedef void (*row_f32)(const float*, float*, Py_ssize_t) noexcept nogil
ctypedef void (*row_f64)(const double*, double*, Py_ssize_t) noexcept nogil
ctypedef void (*back_f32)(const float*, const float*, float*, Py_ssize_t) noexcept nogil
ctypedef void (*back_f64)(const double*, const double*, double*, Py_ssize_t) noexcept nogil


cdef int each_row(str kernel, Buffer x, Py_ssize_t x_off, Buffer y, Py_ssize_t R, Py_ssize_t D,
                  int itemsize, double ns, row_f32 f32, row_f64 f64) except -1:
    """y (R, D) = the row loop of each row of x (compact from item x_off); y compact; ns:
    one thread's time per value (threads_timed)."""
    check_rows(kernel, itemsize, R, D)
    need(x, x_off, (R, D), itemsize, kernel, "input")
    need(y, 0, (R, D), itemsize, kernel, "output")
    cdef char* xp = at(x, x_off, itemsize)
    cdef Py_ssize_t i
    cdef int nt = threads_timed(R * D, R * D * ns)
    with nogil:
        if itemsize == 4:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                f32(<float*>xp + i * D, <float*>y.ptr + i * D, D)
        else:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                f64(<double*>xp + i * D, <double*>y.ptr + i * D, D)
    return 0


cdef int each_row_back(str kernel, str output, Buffer y, Py_ssize_t y_off, Buffer g,
                       Py_ssize_t g_off, Buffer dx, Py_ssize_t R, Py_ssize_t D, int itemsize,
                       double ns, back_f32 f32, back_f64 f64) except -1:
    """dx (R, D) = the row loop of each row of the forward's output y and its gradient g
    (compact from items y_off and g_off); dx compact."""
    check_rows(kernel, itemsize, R, D)
    need(y, y_off, (R, D), itemsize, kernel, output)
    need(g, g_off, (R, D), itemsize, kernel, "output gradient")
    need(dx, 0, (R, D), itemsize, kernel, "input gradient")
    cdef char* yp = at(y, y_off, itemsize)
    cdef char* gp = at(g, g_off, itemsize)
    cdef Py_ssize_t i
    cdef int nt = threads_timed(R * D, R * D * ns)
    with nogil:
        if itemsize == 4:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                f32(<float*>yp + i * D, <float*>gp + i * D, <float*>dx.ptr + i * D, D)
        else:
            for i in prange(R, num_threads=nt, schedule='static'):
                arrived(threadid())
                f64(<double*>yp + i * D, <double*>gp + i * D, <double*>dx.ptr + i * D, D)
    return 0


def softmax(Buffer x, Py_ssize_t x_off, Buffer y, Py_ssize_t R, Py_ssize_t D, int itemsize):
    """y (R, D) = softmax of each row of x (compact from item x_off); y compact."""
    each_row("softmax", x, x_off, y, R, D, itemsize, SOFTMAX_NS, mn_softmax_only_f32,
             mn_softmax_only_f64)


def softmax_backward(Buffer y, Py_ssize_t y_off, Buffer g, Py_ssize_t g_off, Buffer dx,
                     Py_ssize_t R, Py_ssize_t D, int itemsize):
    """dx (R, D) = y * (g - rowsum(g * y)) for the softmax output y and its gradient g
    (compact from items y_off and g_off); dx compact."""
    each_row_back("softmax_backward", "softmax output", y, y_off, g, g_off, dx, R, D, itemsize,
                  SOFTMAX_BACK_NS, mn_softmax_back_row_f32, mn_softmax_back_row_f64)


def log_softmax(Buffer x, Py_ssize_t x_off, Buffer y, Py_ssize_t R, Py_ssize_t D, int itemsize):
    """y (R, D) = x - logsumexp of each row of x (compact from item x_off); y compact."""
    each_row("log_softmax", x, x_off, y, R, D, itemsize, SOFTMAX_NS, mn_log_softmax_row_f32,
             mn_log_softmax_row_f64)


def log_softmax_backward(Buffer y, Py_ssize_t y_off, Buffer g, Py_ssize_t g_off, Buffer dx,
                         Py_ssize_t R, Py_ssize_t D, int itemsize):
    """dx (R, D) = g - exp(y) * rowsum(g) for the log-softmax output y and its gradient g
    (compact from items y_off and g_off); dx compact."""
    each_row_back("log_softmax_backward", "log-softmax output", y, y_off, g, g_off, dx, R, D,
                  itemsize, SOFTMAX_NS, mn_log_softmax_back_row_f32, mn_log_softmax_back_row_f64)
