# cython: boundscheck=False, wraparound=False, cdivision=True
"""Convolution and pooling kernels.

Layout: the column matrix of im2col is (C*kh*kw, N, OH, OW), rows ordered
(c, i, j). Then one GEMM, W (K, C*kh*kw) @ col, gives every image at once
(N*OH*OW columns: wide enough to feed the micro-kernel even when OH*OW is
small), and a group's rows are a contiguous block. The GEMM's (K, N, OH, OW)
result goes to PyTorch's (N, K, OH, OW) in one pass that also adds the bias
(to_nchw); its adjoint (from_nchw) also sums the bias gradient.

Padding, stride and dilation live in the index math: out-of-image taps read
as zero and nothing padded is ever materialised.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._convgeom cimport Geom, out_range, make_geom
from mininet_ext._check cimport check_itemsize, need, need_strided

# im2col / col2im ---------------------------------------------------------------
cdef inline void im2col_strip(const floating* src_nc, Py_ssize_t sy, Py_ssize_t sx,
                              floating* dst, Geom* g, Py_ssize_t i, Py_ssize_t lo, Py_ssize_t hi,
                              Py_ssize_t x0) noexcept nogil:
    """col[r, n, :, :] for kernel row i from image n's channel c (src_nc); outputs lo..hi
    of each row read the image, the rest are padding."""
    cdef Py_ssize_t oh, ow, ih
    cdef floating* d
    cdef const floating* src
    for oh in range(g.OH):
        d = dst + oh * g.OW
        ih = oh * g.sh - g.ph + i * g.dh
        if ih < 0 or ih >= g.H:
            for ow in range(g.OW):
                d[ow] = 0
            continue
        src = src_nc + ih * sy
        for ow in range(lo):
            d[ow] = 0
        if sx == 1 and g.sw == 1:
            for ow in range(lo, hi):
                d[ow] = src[ow + x0]
        else:
            for ow in range(lo, hi):
                d[ow] = src[(ow * g.sw + x0) * sx]
        for ow in range(hi, g.OW):
            d[ow] = 0


cdef void im2col_task(const floating* x, Py_ssize_t sn, Py_ssize_t sc, Py_ssize_t sy,
                      Py_ssize_t sx, floating* col, Geom* g, Py_ssize_t task) noexcept nogil:
    """One (row, image) strip: col[r, n, :, :] for r = (c, i, j)."""
    cdef Py_ssize_t n = task % g.N, r = task // g.N
    cdef Py_ssize_t j = r % g.kw, i = (r // g.kw) % g.kh, c = r // (g.kw * g.kh)
    cdef Py_ssize_t lo, hi
    out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &lo, &hi)
    im2col_strip(x + n * sn + c * sc, sy, sx, col + task * g.OH * g.OW, g, i, lo, hi,
                 j * g.dw - g.pw)


cdef void col2im_plane(const floating* col, floating* dx, Geom* g, Py_ssize_t plane) noexcept nogil:
    """dx[n, c] = sum of every column entry that im2col read from it (scatter-add)."""
    cdef Py_ssize_t n = plane % g.N, c = plane // g.N
    cdef Py_ssize_t i, j, oh, ow, ih, lo, hi, x0, r
    cdef floating* dst
    cdef floating* out = dx + (n * g.C + c) * g.H * g.W
    cdef const floating* src
    for ih in range(g.H * g.W):
        out[ih] = 0
    for i in range(g.kh):
        for j in range(g.kw):
            r = (c * g.kh + i) * g.kw + j
            out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &lo, &hi)
            x0 = j * g.dw - g.pw
            for oh in range(g.OH):
                ih = oh * g.sh - g.ph + i * g.dh
                if ih < 0 or ih >= g.H:
                    continue
                src = col + ((r * g.N + n) * g.OH + oh) * g.OW
                dst = out + ih * g.W
                if g.sw == 1:
                    for ow in range(lo, hi):
                        dst[ow + x0] += src[ow]
                else:
                    for ow in range(lo, hi):
                        dst[ow * g.sw + x0] += src[ow]


# Small outputs (a ResNet's 4x4..1x1 maps): a task per (row, image) moves a few
# elements for its index math, so instead a task is one row (c, i, j) and the
# innermost loop runs over the images, at constant strides in x and col.
DEF SMALL_PIXELS = 64

cdef void im2col_row(const floating* x, Py_ssize_t sn, Py_ssize_t sc, Py_ssize_t sy,
                     Py_ssize_t sx, floating* col, Geom* g, Py_ssize_t r) noexcept nogil:
    cdef Py_ssize_t j = r % g.kw, i = (r // g.kw) % g.kh, c = r // (g.kw * g.kh)
    cdef Py_ssize_t P = g.OH * g.OW, oh, ow, ih, iw, n, lo, hi
    cdef floating* dst
    cdef const floating* src
    if P > 4:   # a few rows of pixels per image: image by image, the range found once
        out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &lo, &hi)
        for n in range(g.N):
            im2col_strip(x + n * sn + c * sc, sy, sx, col + (r * g.N + n) * P, g, i, lo, hi,
                         j * g.dw - g.pw)
        return
    for oh in range(g.OH):    # 1 to 4 pixels: pixel by pixel, the images innermost
        ih = oh * g.sh - g.ph + i * g.dh
        for ow in range(g.OW):
            iw = ow * g.sw - g.pw + j * g.dw
            dst = col + r * g.N * P + oh * g.OW + ow
            if ih < 0 or ih >= g.H or iw < 0 or iw >= g.W:
                for n in range(g.N):
                    dst[n * P] = 0
            else:
                src = x + c * sc + ih * sy + iw * sx
                for n in range(g.N):
                    dst[n * P] = src[n * sn]


cdef void col2im_channel(const floating* col, floating* dx, Geom* g, Py_ssize_t c) noexcept nogil:
    """dx[:, c] from every column entry read from channel c (this task alone writes it),
    the images innermost: for outputs of 1 or 2 pixels (one strip per image is too
    short to pay for its index math)."""
    cdef Py_ssize_t P = g.OH * g.OW, HW = g.H * g.W, CHW = g.C * g.H * g.W
    cdef Py_ssize_t i, j, oh, ow, ih, iw, n, q
    cdef floating* dst
    cdef const floating* src
    for n in range(g.N):
        for q in range(HW):
            dx[n * CHW + c * HW + q] = 0
    for i in range(g.kh):
        for j in range(g.kw):
            for oh in range(g.OH):
                ih = oh * g.sh - g.ph + i * g.dh
                if ih < 0 or ih >= g.H:
                    continue
                for ow in range(g.OW):
                    iw = ow * g.sw - g.pw + j * g.dw
                    if iw < 0 or iw >= g.W:
                        continue
                    src = col + ((c * g.kh + i) * g.kw + j) * g.N * P + oh * g.OW + ow
                    dst = dx + c * HW + ih * g.W + iw
                    for n in range(g.N):
                        dst[n * CHW] += src[n * P]


DEF MAX_KW = 32

cdef void col2im_image(const floating* col, floating* dx, Geom* g, Py_ssize_t n) noexcept nogil:
    """dx[n] from every column entry read from image n (this task alone writes it); the
    column ranges per kernel column are found once, rows are added contiguously."""
    cdef Py_ssize_t P = g.OH * g.OW, c, i, j, oh, ow, ih, x0, q
    cdef Py_ssize_t lo[MAX_KW]
    cdef Py_ssize_t hi[MAX_KW]
    cdef floating* out = dx + n * g.C * g.H * g.W
    cdef floating* drow
    cdef const floating* src
    for j in range(g.kw):
        out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &lo[j], &hi[j])
    for q in range(g.C * g.H * g.W):
        out[q] = 0
    for c in range(g.C):
        for i in range(g.kh):
            for oh in range(g.OH):
                ih = oh * g.sh - g.ph + i * g.dh
                if ih < 0 or ih >= g.H:
                    continue
                drow = out + (c * g.H + ih) * g.W
                for j in range(g.kw):
                    src = col + (((c * g.kh + i) * g.kw + j) * g.N + n) * P + oh * g.OW
                    x0 = j * g.dw - g.pw
                    for ow in range(lo[j], hi[j]):
                        drow[ow * g.sw + x0] += src[ow]


cdef void im2col_all(const floating* x, Py_ssize_t sn, Py_ssize_t sc, Py_ssize_t sy,
                     Py_ssize_t sx, floating* col, Geom* g, int nt) noexcept nogil:
    cdef Py_ssize_t t
    if g.OH * g.OW < SMALL_PIXELS:     # a task per row (c, i, j)
        for t in prange(g.C * g.kh * g.kw, num_threads=nt, schedule='static'):
            im2col_row(x, sn, sc, sy, sx, col, g, t)
    else:                              # a task per (row, image) strip
        for t in prange(g.C * g.kh * g.kw * g.N, num_threads=nt, schedule='static'):
            im2col_task(x, sn, sc, sy, sx, col, g, t)


def im2col(Buffer x, Py_ssize_t x_off, tuple x_strides, tuple x_shape, Buffer col, tuple kernel,
           tuple stride, tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """col (C*kh*kw, N, OH, OW), compact, from x (N, C, H, W) with any strides."""
    cdef Geom g = make_geom(x_shape, kernel, stride, pad, dil, OH, OW)
    check_itemsize(itemsize, "im2col")
    need_strided(x, x_off, x_shape, x_strides, itemsize, "im2col", "input")
    need(col, 0, (g.C * g.kh * g.kw, g.N, OH, OW), itemsize, "im2col", "columns")
    cdef Py_ssize_t sn, sc, sy, sx
    sn, sc, sy, sx = x_strides
    cdef int nt = threads_for(g.C * g.kh * g.kw * g.N * g.OH * g.OW)
    with nogil:
        if itemsize == 4:
            im2col_all(<float*>x.ptr + x_off, sn, sc, sy, sx, <float*>col.ptr, &g, nt)
        else:
            im2col_all(<double*>x.ptr + x_off, sn, sc, sy, sx, <double*>col.ptr, &g, nt)


cdef void col2im_all(const floating* col, floating* dx, Geom* g, int nt) noexcept nogil:
    cdef Py_ssize_t t
    if g.OH * g.OW <= 2:               # a task per channel, the images innermost
        for t in prange(g.C, num_threads=nt, schedule='static'):
            col2im_channel(col, dx, g, t)
    elif g.OH * g.OW < SMALL_PIXELS and g.kw <= MAX_KW:   # a task per image
        for t in prange(g.N, num_threads=nt, schedule='static'):
            col2im_image(col, dx, g, t)
    else:                              # a task per (image, channel) plane
        for t in prange(g.N * g.C, num_threads=nt, schedule='static'):
            col2im_plane(col, dx, g, t)


def col2im(Buffer col, Buffer dx, tuple x_shape, tuple kernel, tuple stride, tuple pad,
           tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """dx (N, C, H, W), compact, overwritten with the adjoint of im2col applied to col.
    Each task owns the part of dx it writes, so the scatter-add needs no atomics."""
    cdef Geom g = make_geom(x_shape, kernel, stride, pad, dil, OH, OW)
    check_itemsize(itemsize, "col2im")
    need(col, 0, (g.C * g.kh * g.kw, g.N, OH, OW), itemsize, "col2im", "columns")
    need(dx, 0, x_shape, itemsize, "col2im", "input gradient")
    cdef int nt = threads_for(g.N * g.C * g.kh * g.kw * g.OH * g.OW)
    with nogil:
        if itemsize == 4:
            col2im_all(<float*>col.ptr, <float*>dx.ptr, &g, nt)
        else:
            col2im_all(<double*>col.ptr, <double*>dx.ptr, &g, nt)


# (K, N, P) <-> (N, K, P) with the bias ---------------------------------------------
cdef void to_nchw_row(const floating* y, const floating* b, floating* out, Py_ssize_t K,
                      Py_ssize_t N, Py_ssize_t P, Py_ssize_t row, bint relu) noexcept nogil:
    cdef Py_ssize_t n = row // K, k = row % K, p
    cdef const floating* src = y + (k * N + n) * P
    cdef floating* dst = out + row * P
    cdef floating bias = b[k] if b != NULL else 0
    if relu:
        for p in range(P):
            dst[p] = max(src[p] + bias, 0)
    else:
        for p in range(P):
            dst[p] = src[p] + bias


def to_nchw(Buffer y, Buffer bias, Py_ssize_t b_off, Buffer out, Py_ssize_t K, Py_ssize_t N,
            Py_ssize_t P, int itemsize, bint relu=False):
    """out[n, k, p] = y[k, n, p] + bias[k] (bias may be None), max(0, .) of it with relu;
    y and out compact."""
    check_itemsize(itemsize, "to_nchw")
    need(y, 0, (K, N, P), itemsize, "to_nchw", "GEMM result")
    need(out, 0, (N, K, P), itemsize, "to_nchw", "output")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, "to_nchw", "bias")
    cdef Py_ssize_t row
    cdef int nt = threads_for(N * K * P)
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    with nogil:
        if itemsize == 4:
            for row in prange(N * K, num_threads=nt, schedule='static'):
                to_nchw_row(<float*>y.ptr, <float*>bp, <float*>out.ptr, K, N, P, row, relu)
        else:
            for row in prange(N * K, num_threads=nt, schedule='static'):
                to_nchw_row(<double*>y.ptr, <double*>bp, <double*>out.ptr, K, N, P, row, relu)


def bias_planes(Buffer y, Py_ssize_t y_off, Buffer bias, Py_ssize_t b_off, Py_ssize_t N,
                Py_ssize_t K, Py_ssize_t P, int itemsize, bint relu=False):
    """In place on compact y (N, K, P) from item y_off: y[n, k, :] += bias[k] (bias may
    be None), max(0, .) of it with relu: to_nchw's epilogue for a product that is already
    NCHW (to_nchw_row with one image, out = y)."""
    check_itemsize(itemsize, "bias_planes")
    need(y, y_off, (N, K, P), itemsize, "bias_planes", "output")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, "bias_planes", "bias")
    cdef Py_ssize_t plane, n
    cdef int nt = threads_for(N * K * P)
    cdef char* yp = y.ptr + y_off * itemsize
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    with nogil:
        if itemsize == 4:
            for plane in prange(N * K, num_threads=nt, schedule='static'):
                n = plane // K
                to_nchw_row(<float*>yp + n * K * P, <float*>bp, <float*>yp + n * K * P, K, 1,
                            P, plane - n * K, relu)
        else:
            for plane in prange(N * K, num_threads=nt, schedule='static'):
                n = plane // K
                to_nchw_row(<double*>yp + n * K * P, <double*>bp, <double*>yp + n * K * P, K,
                            1, P, plane - n * K, relu)


cdef void from_nchw_chan(const floating* g, floating* out, floating* db, Py_ssize_t K,
                         Py_ssize_t N, Py_ssize_t P, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t n, p
    cdef double s = 0
    cdef const floating* src
    cdef floating* dst
    for n in range(N):
        src = g + (n * K + k) * P
        dst = out + (k * N + n) * P
        for p in range(P):
            dst[p] = src[p]
            s += src[p]
    if db != NULL:
        db[k] = <floating>s


def from_nchw(Buffer g, Py_ssize_t g_off, Buffer out, Buffer db, Py_ssize_t K, Py_ssize_t N,
              Py_ssize_t P, int itemsize):
    """out[k, n, p] = g[n, k, p]; db[k] = sum of g[:, k, :] (db may be None). g compact."""
    check_itemsize(itemsize, "from_nchw")
    need(g, g_off, (N, K, P), itemsize, "from_nchw", "output gradient")
    need(out, 0, (K, N, P), itemsize, "from_nchw", "result")
    if db is not None:
        need(db, 0, (K,), itemsize, "from_nchw", "bias gradient")
    cdef Py_ssize_t k
    cdef int nt = threads_for(N * K * P)
    cdef char* dbp = NULL if db is None else db.ptr
    with nogil:
        if itemsize == 4:
            for k in prange(K, num_threads=nt, schedule='static'):
                from_nchw_chan(<float*>g.ptr + g_off, <float*>out.ptr, <float*>dbp, K, N, P, k)
        else:
            for k in prange(K, num_threads=nt, schedule='static'):
                from_nchw_chan(<double*>g.ptr + g_off, <double*>out.ptr, <double*>dbp, K, N, P, k)


# pooling: x compact (planes, H, W); padding taps never win a max / count as 0 --------
cdef void maxpool_plane(const floating* x, floating* out, int64_t* idx, Geom* geom,
                        Py_ssize_t plane) noexcept nogil:
    # a local copy of the geometry: out and idx stores could alias *geom (idx is int64),
    # which would make the compiler reload every field after every store
    cdef Geom g = geom[0]
    cdef Py_ssize_t oh, ow, i, j, ih, lo, hi, k
    cdef bint better
    cdef floating v
    cdef const floating* src = x + plane * g.H * g.W
    cdef floating* best
    cdef int64_t* at
    cdef Py_ssize_t jlo[16]
    cdef Py_ssize_t jhi[16]
    cdef bint table = g.kw <= 16      # the column ranges, without a division per row
    if table:
        for j in range(g.kw):
            out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &jlo[j], &jhi[j])
    for oh in range(g.OH):
        # taps outer, output columns inner: each column's max is its own chain of selects,
        # so the loop vectorises (one window at a time is a serial chain, ~8 cycles a tap)
        best = out + (plane * g.OH + oh) * g.OW
        at = idx + (plane * g.OH + oh) * g.OW
        for ow in range(g.OW):
            best[ow] = 0
            at[ow] = -1
        for i in range(g.kh):
            ih = oh * g.sh - g.ph + i * g.dh
            if ih < 0 or ih >= g.H:
                continue
            for j in range(g.kw):
                if table:
                    lo, hi = jlo[j], jhi[j]
                else:
                    out_range(j * g.dw, g.sw, g.pw, g.W, g.OW, &lo, &hi)
                k = ih * g.W + j * g.dw - g.pw
                for ow in range(lo, hi):
                    v = src[k + ow * g.sw]
                    # the first tap, a larger value, or a NaN (the last NaN wins, as PyTorch)
                    better = (at[ow] < 0) | (v > best[ow]) | (v != v)
                    at[ow] = k + ow * g.sw if better else at[ow]
                    best[ow] = v if better else best[ow]


cdef extern from "_pool.h" nogil:
    void mn_maxpool2_row_f32(const float* r0, const float* r1, float* o, int64_t* at,
                             Py_ssize_t n, int64_t base, int64_t W)
    void mn_maxpool2_row_f64(const double* r0, const double* r1, double* o, int64_t* at,
                             Py_ssize_t n, int64_t base, int64_t W)
    int mn_has_nan_f32(const float* x, Py_ssize_t n)
    int mn_has_nan_f64(const double* x, Py_ssize_t n)
    int MN_SHORT_ROW
    void mn_maxpool2_short_f32(const float* x, float* o, int64_t* at, Py_ssize_t OH,
                               Py_ssize_t OW, int64_t W)
    void mn_maxpool2_short_f64(const double* x, double* o, int64_t* at, Py_ssize_t OH,
                               Py_ssize_t OW, int64_t W)


cdef void maxpool2_plane(const floating* x, floating* out, int64_t* idx, Geom* geom,
                         Py_ssize_t plane) noexcept nogil:
    """2x2 windows, stride 2, no padding (the common pool): every window lies inside the
    image, so rows go to the vectorised row kernel of _pool.h; a plane holding a NaN
    takes the general kernel (NaN wins there, as in PyTorch)."""
    cdef Py_ssize_t oh, W = geom.W, OW = geom.OW
    cdef const floating* src = x + plane * geom.H * W
    cdef int nan
    if floating is float:
        nan = mn_has_nan_f32(src, geom.H * W)
    else:
        nan = mn_has_nan_f64(src, geom.H * W)
    if nan:
        maxpool_plane(x, out, idx, geom, plane)
        return
    cdef floating* o = out + plane * geom.OH * OW
    cdef int64_t* at = idx + plane * geom.OH * OW
    if OW < MN_SHORT_ROW:
        if floating is float:
            mn_maxpool2_short_f32(src, o, at, geom.OH, OW, W)
        else:
            mn_maxpool2_short_f64(src, o, at, geom.OH, OW, W)
        return
    for oh in range(geom.OH):
        if floating is float:
            mn_maxpool2_row_f32(src + 2 * oh * W, src + (2 * oh + 1) * W, o + oh * OW,
                                at + oh * OW, OW, 2 * oh * W, W)
        else:
            mn_maxpool2_row_f64(src + 2 * oh * W, src + (2 * oh + 1) * W, o + oh * OW,
                                at + oh * OW, OW, 2 * oh * W, W)


cdef void maxpool_back_plane(const floating* gout, const int64_t* idx, floating* dx, Geom* g,
                             Py_ssize_t plane) noexcept nogil:
    cdef Py_ssize_t k, o = plane * g.OH * g.OW
    cdef floating* dst = dx + plane * g.H * g.W
    for k in range(g.H * g.W):
        dst[k] = 0
    for k in range(g.OH * g.OW):
        if idx[o + k] >= 0:
            dst[idx[o + k]] += gout[o + k]


cdef void avgpool_plane(const floating* x, floating* out, Geom* g, Py_ssize_t plane,
                        bint backward) noexcept nogil:
    """Forward: out = window mean (divisor kh*kw, padding counted as zeros, as
    PyTorch's default). Backward (x is the output grad, out is dx): the adjoint."""
    cdef Py_ssize_t oh, ow, i, j, ih, iw
    cdef floating scale = 1.0 / (g.kh * g.kw)
    cdef const floating* src
    cdef floating* dst
    if backward:
        src = x + plane * g.OH * g.OW
        dst = out + plane * g.H * g.W
        memset(dst, 0, g.H * g.W * sizeof(floating))
    else:
        src = x + plane * g.H * g.W
        dst = out + plane * g.OH * g.OW
        memset(dst, 0, g.OH * g.OW * sizeof(floating))
    for oh in range(g.OH):
        for i in range(g.kh):
            ih = oh * g.sh - g.ph + i * g.dh
            if ih < 0 or ih >= g.H:
                continue
            for ow in range(g.OW):
                for j in range(g.kw):
                    iw = ow * g.sw - g.pw + j * g.dw
                    if iw < 0 or iw >= g.W:
                        continue
                    if backward:
                        dst[ih * g.W + iw] += src[oh * g.OW + ow] * scale
                    else:
                        dst[oh * g.OW + ow] += src[ih * g.W + iw] * scale


def maxpool(Buffer x, Buffer out, Buffer idx, tuple x_shape, tuple kernel, tuple stride,
            tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """out, idx (N, C, OH, OW): window max and its flat index in the (H, W) plane."""
    cdef Geom g = make_geom(x_shape, kernel, stride, pad, dil, OH, OW)
    check_itemsize(itemsize, "max_pool2d")
    need(x, 0, x_shape, itemsize, "max_pool2d", "input")
    need(out, 0, (g.N, g.C, OH, OW), itemsize, "max_pool2d", "output")
    need(idx, 0, (g.N, g.C, OH, OW), 8, "max_pool2d", "argmax")
    cdef Py_ssize_t t, nplane = g.N * g.C
    cdef int nt = threads_for(nplane * OH * OW * g.kh * g.kw)
    cdef bint two = kernel == (2, 2) and stride == (2, 2) and pad == (0, 0) and dil == (1, 1)
    if two and (2 * OH > g.H or 2 * OW > g.W):   # the 2x2 path reads without bounds checks
        raise ValueError(f"max_pool2d: a {OH}x{OW} output of 2x2 windows needs an input of at "
                         f"least {2 * OH}x{2 * OW}, got {g.H}x{g.W}")
    with nogil:
        if itemsize == 4 and two:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool2_plane(<float*>x.ptr, <float*>out.ptr, <int64_t*>idx.ptr, &g, t)
        elif two:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool2_plane(<double*>x.ptr, <double*>out.ptr, <int64_t*>idx.ptr, &g, t)
        elif itemsize == 4:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool_plane(<float*>x.ptr, <float*>out.ptr, <int64_t*>idx.ptr, &g, t)
        else:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool_plane(<double*>x.ptr, <double*>out.ptr, <int64_t*>idx.ptr, &g, t)


def maxpool_backward(Buffer gout, Buffer idx, Buffer dx, tuple x_shape, Py_ssize_t OH,
                     Py_ssize_t OW, int itemsize):
    """dx (N, C, H, W): each output grad added at its argmax (overlapping windows add)."""
    cdef Geom g = make_geom(x_shape, (1, 1), (1, 1), (0, 0), (1, 1), OH, OW)
    check_itemsize(itemsize, "max_pool2d backward")
    need(gout, 0, (g.N, g.C, OH, OW), itemsize, "max_pool2d backward", "output gradient")
    need(idx, 0, (g.N, g.C, OH, OW), 8, "max_pool2d backward", "argmax")
    need(dx, 0, x_shape, itemsize, "max_pool2d backward", "input gradient")
    cdef Py_ssize_t t, nplane = g.N * g.C
    cdef int nt = threads_for(nplane * (OH * OW + g.H * g.W))
    with nogil:
        if itemsize == 4:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool_back_plane(<float*>gout.ptr, <int64_t*>idx.ptr, <float*>dx.ptr, &g, t)
        else:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                maxpool_back_plane(<double*>gout.ptr, <int64_t*>idx.ptr, <double*>dx.ptr, &g, t)


def avgpool(Buffer src, Buffer dst, tuple x_shape, tuple kernel, tuple stride, tuple pad,
            Py_ssize_t OH, Py_ssize_t OW, bint backward, int itemsize):
    """Forward: dst (N, C, OH, OW) from src (N, C, H, W). Backward: dst is dx, src the
    output grad."""
    cdef Geom g = make_geom(x_shape, kernel, stride, pad, (1, 1), OH, OW)
    check_itemsize(itemsize, "avg_pool2d")
    need(dst if backward else src, 0, x_shape, itemsize, "avg_pool2d", "input (gradient)")
    need(src if backward else dst, 0, (g.N, g.C, OH, OW), itemsize, "avg_pool2d",
         "output (gradient)")
    cdef Py_ssize_t t, nplane = g.N * g.C
    cdef int nt = threads_for(nplane * OH * OW * g.kh * g.kw)
    with nogil:
        if itemsize == 4:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                avgpool_plane(<float*>src.ptr, <float*>dst.ptr, &g, t, backward)
        else:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                avgpool_plane(<double*>src.ptr, <double*>dst.ptr, &g, t, backward)


cdef void gather_plane(const floating* h, const int64_t* idx, floating* out, Geom* g,
                       Py_ssize_t plane) noexcept nogil:
    cdef Py_ssize_t k, o = plane * g.OH * g.OW
    cdef const floating* src = h + plane * g.H * g.W
    for k in range(g.OH * g.OW):
        out[o + k] = src[idx[o + k]] if idx[o + k] >= 0 else 0


def maxpool_gather(Buffer h, Buffer idx, Buffer out, tuple x_shape, Py_ssize_t OH,
                   Py_ssize_t OW, int itemsize):
    """out[o] = h[argmax[o]] per plane: the adjoint of maxpool_backward."""
    cdef Geom g = make_geom(x_shape, (1, 1), (1, 1), (0, 0), (1, 1), OH, OW)
    check_itemsize(itemsize, "max_pool2d gather")
    need(h, 0, x_shape, itemsize, "max_pool2d gather", "input")
    need(idx, 0, (g.N, g.C, OH, OW), 8, "max_pool2d gather", "argmax")
    need(out, 0, (g.N, g.C, OH, OW), itemsize, "max_pool2d gather", "output")
    cdef Py_ssize_t t, nplane = g.N * g.C
    cdef int nt = threads_for(nplane * OH * OW)
    with nogil:
        if itemsize == 4:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                gather_plane(<float*>h.ptr, <int64_t*>idx.ptr, <float*>out.ptr, &g, t)
        else:
            for t in prange(nplane, num_threads=nt, schedule='static'):
                gather_plane(<double*>h.ptr, <int64_t*>idx.ptr, <double*>out.ptr, &g, t)
