# cython: boundscheck=False, wraparound=False, cdivision=True
"""Convolution as an implicit GEMM: no column matrix is ever materialised.

Each image's output pixels are cut into panels of NR (the micro-kernel's width:
32 floats). For each panel the column entries it needs (taps (c, i, j) x NR
pixels) are gathered straight from the input into the GEMM's packed B layout, so
the gather *is* the packing, and everything a panel touches stays in L1/L2.
im2col + GEMM instead writes and re-reads a (C*kh*kw) x (N*OH*OW) matrix (31 MB
for the MNIST CNN's second layer at batch 100) several times per step, which
made the convolution memory bound.

Stride 1 (the common case): each image is first copied into a zero-padded
buffer whose rows are W + pw long, and pixels are numbered q = oh*Wp + ow in
that row width. A tap then reads one contiguous NR-wide window per panel (one
vector copy), at the price of computing and dropping the columns ow >= OW
(2 of 16 for the CNN's 14x14 layer). Other strides gather run by run along
output rows, clipping at the image borders.

- forward: out[:, panel] = W @ cols(panel), W packed once into MR-row panels
  (or 2/3 MR rows when that wastes fewer, e.g. 32 channels); the tile goes to
  NCHW with the bias added.
- weight grad: dW^T += cols(panel) @ dy(panel)^T over chunks of CHUNK panels,
  with the column panels' rows used directly as the micro-kernel's A operand
  (mn_kernel_at); each thread sums into a private dW^T, then they are added.
- input grad: dcols(panel) = W^T @ dy(panel), scattered into dx (the adjoint
  of the gather).

Threads own whole images, so their scatters never overlap. Groups are
contiguous channel blocks, each its own implicit GEMM. Inputs are compact NCHW.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange
from cython cimport floating
from libc.string cimport memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._convgeom cimport Geom, clamp, out_range, make_geom
from mininet_ext._check cimport check_itemsize, need

from mininet_ext import _isa

# The micro-kernels and window copies below come from the kernel set chosen at import
# (_isa.h, mininet_ext._isa), and MR and NR with them.
cdef extern from "_isa.h":
    int mn_isa_bind(const void* table) except -1
    # panel columns jj..jj+len; off: their first output pixel (oh*OW + ow) in the image
    ctypedef struct Run "mn_run":
        Py_ssize_t jj, len, off

cdef extern from "_isa.h" nogil:
    const char* mn_kernel_isa()
    int mn_gemm_mr()
    int mn_gemm_mr_short()
    int mn_gemm_nr(int itemsize)
    void mn_kernel_short_f32(Py_ssize_t kc, const float* A, const float* B, float* C,
                             Py_ssize_t ldc, int accumulate)
    void mn_kernel_short_f64(Py_ssize_t kc, const double* A, const double* B, double* C,
                             Py_ssize_t ldc, int accumulate)
    void mn_kernel_f32(Py_ssize_t kc, const float* A, const float* B, float* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_f64(Py_ssize_t kc, const double* A, const double* B, double* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_at_f32(Py_ssize_t npan, const float* A, Py_ssize_t astride, const float* B,
                          Py_ssize_t bstride, float* C, Py_ssize_t ldc)
    void mn_kernel_at_f64(Py_ssize_t npan, const double* A, Py_ssize_t astride, const double* B,
                          Py_ssize_t bstride, double* C, Py_ssize_t ldc)
    void mn_kernel_at_half_f32(Py_ssize_t npan, const float* A, Py_ssize_t astride,
                               const float* B, Py_ssize_t bstride, float* C, Py_ssize_t ldc)
    void mn_kernel_at_half_f64(Py_ssize_t npan, const double* A, Py_ssize_t astride,
                               const double* B, Py_ssize_t bstride, double* C, Py_ssize_t ldc)

    int mn_tab_mr(int nv, int taller)
    void mn_tab_kernel_f32(int nv, int mr, Py_ssize_t kc, const float* A, const Py_ssize_t* toff,
                           const float* B, float* C)
    void mn_tab_kernel_f64(int nv, int mr, Py_ssize_t kc, const double* A,
                           const Py_ssize_t* toff, const double* B, double* C)

    void mn_wg_kernel_f32(int nv, int mr, Py_ssize_t oh_n, Py_ssize_t ow_n, Py_ssize_t wp,
                          const float* A, const Py_ssize_t* toff, const float* B, float* C)
    void mn_wg_kernel_f64(int nv, int mr, Py_ssize_t oh_n, Py_ssize_t ow_n, Py_ssize_t wp,
                          const double* A, const Py_ssize_t* toff, const double* B, double* C)

    void mn_copy_window_f32(float* d, const float* s, Py_ssize_t len, Py_ssize_t lo, Py_ssize_t hi)
    void mn_copy_window_f64(double* d, const double* s, Py_ssize_t len, Py_ssize_t lo,
                            Py_ssize_t hi)
    void mn_add_window_f32(float* d, const float* s, Py_ssize_t lo, Py_ssize_t hi)
    void mn_add_window_f64(double* d, const double* s, Py_ssize_t lo, Py_ssize_t hi)
    void mn_copy_rows_f32(float* d, const float* s, const Py_ssize_t* toff, Py_ssize_t n)
    void mn_copy_rows_f64(double* d, const double* s, const Py_ssize_t* toff, Py_ssize_t n)
    void mn_add_rows_f32(float* d, const float* tile, const Py_ssize_t* toff, Py_ssize_t cg,
                         Py_ssize_t kh, Py_ssize_t kw)
    void mn_add_rows_f64(double* d, const double* tile, const Py_ssize_t* toff, Py_ssize_t cg,
                         Py_ssize_t kh, Py_ssize_t kw)
    void mn_gather_t_f32(float* d, const float* s, Py_ssize_t P, Py_ssize_t kn, Py_ssize_t kb)
    void mn_gather_t_f64(double* d, const double* s, Py_ssize_t P, Py_ssize_t kn, Py_ssize_t kb)
    void mn_pack_rows_f32(float* d, const float* dy, Py_ssize_t P, Py_ssize_t kg,
                          const Run* segs, int nsegs)
    void mn_pack_rows_f64(double* d, const double* dy, Py_ssize_t P, Py_ssize_t kg,
                          const Run* segs, int nsegs)
    void mn_tile_to_nchw_f32(const float* tile, Py_ssize_t kb, Py_ssize_t cnt, Py_ssize_t kn,
                             const float* bias, float* dst, Py_ssize_t P)

mn_isa_bind(PyCapsule_GetPointer(_isa.KERNELS, "mininet_ext.kernels"))
cdef Py_ssize_t MR = mn_gemm_mr()
cdef Py_ssize_t MR_SHORT = mn_gemm_mr_short()
cdef Py_ssize_t KC = 256     # taps per forward B panel: KC x NR floats stay in L1
cdef Py_ssize_t CHUNK = 8    # pixel panels per weight-grad micro-kernel call (kc = CHUNK*NR)


def kernel_isa():
    """The kernel set this module's convolutions call (see mininet_ext._isa.active())."""
    return mn_kernel_isa().decode()



cdef struct Conv:
    Geom g
    Py_ssize_t G, K, Cg, Kg, R, P       # groups, out channels, per group, taps/group, OH*OW
    Py_ssize_t Wp, plane, L, padsize    # padded rows: width, channel stride, OH*Wp, buffer
    bint padded                         # stride 1: gather from a padded copy of each image
    Py_ssize_t fmr                      # forward micro-kernel rows (MR or MR_SHORT)
    Py_ssize_t* owlo                    # per tap column j: outputs ow that read inside the image
    Py_ssize_t* owhi
    Py_ssize_t* toff                    # padded: per tap r, its offset from the pixel's window
    Py_ssize_t* tofr                    # the same in forward_rows' order (tab_place)
    int tab_nv, tab_mr                  # pixel-major forward: channel vectors, tile rows (0: off)
    bint tab_skip                       # forward_rows skips kernel rows on vertical padding



cdef struct Panel:
    # NR output pixels of one image. Gather side: runs whose input columns are contiguous,
    # with per-run tables computed once per panel (used by every group and tap block).
    # Output side: segs, the panel columns that are real output pixels.
    Run* runs
    Run* segs
    int nruns, nsegs
    Py_ssize_t* rowoff    # [u, i]: offset of input row (channel 0) in the source, -1: outside
    Py_ssize_t* lo        # [u, j]: run columns [lo, hi) read inside the image
    Py_ssize_t* hi
    Py_ssize_t* col0      # [u, j]: input column read by run column 0 (may be < 0)


cdef inline Py_ssize_t round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


cdef inline void kernel(Py_ssize_t kc, const floating* A, const floating* B, floating* C,
                        Py_ssize_t ldc, int accumulate) noexcept nogil:
    if floating is float:
        mn_kernel_f32(kc, A, B, C, ldc, accumulate)
    else:
        mn_kernel_f64(kc, A, B, C, ldc, accumulate)


cdef inline void fwd_kernel(Py_ssize_t mr, Py_ssize_t kc, const floating* A, const floating* B,
                            floating* C, Py_ssize_t ldc, int accumulate) noexcept nogil:
    if mr == MR:
        kernel(kc, A, B, C, ldc, accumulate)
    elif floating is float:
        mn_kernel_short_f32(kc, A, B, C, ldc, accumulate)
    else:
        mn_kernel_short_f64(kc, A, B, C, ldc, accumulate)


cdef inline void kernel_at(bint half, Py_ssize_t npan, const floating* A, Py_ssize_t astride,
                           const floating* B, Py_ssize_t bstride, floating* C,
                           Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        if half:
            mn_kernel_at_half_f32(npan, A, astride, B, bstride, C, ldc)
        else:
            mn_kernel_at_f32(npan, A, astride, B, bstride, C, ldc)
    else:
        if half:
            mn_kernel_at_half_f64(npan, A, astride, B, bstride, C, ldc)
        else:
            mn_kernel_at_f64(npan, A, astride, B, bstride, C, ldc)


cdef inline Py_ssize_t dw_block(Conv* cv, Py_ssize_t nr) noexcept nogil:
    """Output channels per weight-grad micro-kernel call: NR, or NR/2 (one vector) when a
    group has no more than that, so the kernel does not multiply padding."""
    return nr // 2 if cv.Kg <= nr // 2 else nr


cdef inline void copy_window(floating* d, const floating* s, Py_ssize_t n, Py_ssize_t lo,
                             Py_ssize_t hi) noexcept nogil:
    if floating is float:
        mn_copy_window_f32(d, s, n, lo, hi)
    else:
        mn_copy_window_f64(d, s, n, lo, hi)




cdef inline void add_window(floating* d, const floating* s, Py_ssize_t lo,
                            Py_ssize_t hi) noexcept nogil:
    if floating is float:
        mn_add_window_f32(d, s, lo, hi)
    else:
        mn_add_window_f64(d, s, lo, hi)


# panels -------------------------------------------------------------------------------------
cdef Py_ssize_t panel_bytes(Conv* cv, Py_ssize_t nr) noexcept nogil:
    return nr * (2 * sizeof(Run) + (cv.g.kh + 3 * cv.g.kw) * sizeof(Py_ssize_t))


cdef void panel_init(Panel* pn, char* mem, Conv* cv, Py_ssize_t nr) noexcept nogil:
    pn.runs = <Run*>mem
    pn.segs = pn.runs + nr
    pn.rowoff = <Py_ssize_t*>(mem + 2 * nr * sizeof(Run))
    pn.lo = pn.rowoff + nr * cv.g.kh
    pn.hi = pn.lo + nr * cv.g.kw
    pn.col0 = pn.hi + nr * cv.g.kw


cdef void map_rows(Conv* cv, Py_ssize_t q, Py_ssize_t cols, Panel* pn) noexcept nogil:
    """Pixels q..q+cols of an image, any stride: one run per output row (at most cols), reading
    the unpadded image; out-of-image taps read as zero."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t jj = 0, oh, ow, i, j, ih
    cdef Run* run
    cdef int u = 0
    while jj < cols:
        run = &pn.runs[u]
        oh = q // g.OW
        ow = q - oh * g.OW
        run.len = min(g.OW - ow, cols - jj)
        run.jj, run.off = jj, q
        pn.segs[u] = run[0]
        for i in range(g.kh):
            ih = oh * g.sh - g.ph + i * g.dh
            pn.rowoff[u * g.kh + i] = ih * g.W if 0 <= ih < g.H else -1
        for j in range(g.kw):
            pn.lo[u * g.kw + j] = clamp(cv.owlo[j] - ow, 0, run.len)
            pn.hi[u * g.kw + j] = clamp(cv.owhi[j] - ow, pn.lo[u * g.kw + j], run.len)
            pn.col0[u * g.kw + j] = ow * g.sw - g.pw + j * g.dw
        jj += run.len
        q += run.len
        u += 1
    pn.nruns = pn.nsegs = u


cdef void map_padded(Conv* cv, Py_ssize_t q, Py_ssize_t nr, Panel* pn) noexcept nogil:
    """Stride 1: pixels q..q+nr of the padded-row space (q = oh*Wp + ow) read one contiguous
    window per tap from the padded image; the columns with ow < OW are the output pixels."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t i, j, t = 0, oh, ow, n
    cdef int u = 0
    pn.runs[0].jj, pn.runs[0].len, pn.runs[0].off = 0, nr, 0
    pn.nruns = 1
    for i in range(g.kh):
        pn.rowoff[i] = q + i * g.dh * cv.Wp
    for j in range(g.kw):
        pn.lo[j], pn.hi[j], pn.col0[j] = 0, nr, j * g.dw
    while t < nr and q + t < cv.L:
        oh = (q + t) // cv.Wp
        ow = q + t - oh * cv.Wp
        n = min(cv.Wp - ow, nr - t)
        if ow < g.OW:
            pn.segs[u].jj, pn.segs[u].len, pn.segs[u].off = t, min(n, g.OW - ow), oh * g.OW + ow
            u += 1
        t += n
    pn.nsegs = u


cdef inline void next_tap(Geom* g, Py_ssize_t* c, Py_ssize_t* i, Py_ssize_t* j) noexcept nogil:
    """Advance tap (c, i, j) in row-major order."""
    j[0] += 1
    if j[0] == g.kw:
        j[0] = 0
        i[0] += 1
        if i[0] == g.kh:
            i[0] = 0
            c[0] += 1


cdef void pack_cols(const floating* src, Py_ssize_t plane, Conv* cv, Panel* pn, Py_ssize_t c0,
                    Py_ssize_t r0, Py_ssize_t r1, floating* dst, Py_ssize_t nr) noexcept nogil:
    """dst[r - r0, jj] = the value tap r (channels from c0; taps (c, i, j) row-major) reads for
    panel column jj from src (one image, channel stride plane); zero outside the image."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t r, c, i, j, t, ro, a, b, sw = g.sw
    cdef int u
    cdef floating* d
    cdef const floating* s
    if cv.padded:     # one full-width window per tap
        if floating is float:
            mn_copy_rows_f32(dst, src + c0 * plane + pn.rowoff[0], cv.toff + r0, r1 - r0)
        else:
            mn_copy_rows_f64(dst, src + c0 * plane + pn.rowoff[0], cv.toff + r0, r1 - r0)
        return
    c, i, j = r0 // (g.kh * g.kw), (r0 // g.kw) % g.kh, r0 % g.kw
    for r in range(r0, r1):
        for u in range(pn.nruns):
            d = dst + (r - r0) * nr + pn.runs[u].jj
            ro = pn.rowoff[u * g.kh + i]
            a, b = pn.lo[u * g.kw + j], pn.hi[u * g.kw + j]
            s = src + ro + (c0 + c) * plane + pn.col0[u * g.kw + j]
            if ro < 0:
                copy_window(d, d, pn.runs[u].len, 0, 0)     # all zero, nothing read
            elif sw == 1:
                copy_window(d, s, pn.runs[u].len, a, b)
            else:
                copy_window(d, d, pn.runs[u].len, 0, 0)
                for t in range(a, b):
                    d[t] = s[t * sw]
        next_tap(g, &c, &i, &j)


cdef void scatter_cols(const floating* tile, floating* dst, Py_ssize_t plane, Conv* cv, Panel* pn,
                       Py_ssize_t c0, Py_ssize_t nr) noexcept nogil:
    """The adjoint of pack_cols over all R taps: dst[...] += tile[r, jj]."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t r, c, i, j, t, ro, a, b, sw = g.sw
    cdef int u
    cdef const floating* s
    cdef floating* d
    if cv.padded:   # tap by tap, channel innermost (_convpack.h says why)
        if floating is float:
            mn_add_rows_f32(dst + c0 * plane + pn.rowoff[0], tile, cv.toff, cv.Cg, g.kh, g.kw)
        else:
            mn_add_rows_f64(dst + c0 * plane + pn.rowoff[0], tile, cv.toff, cv.Cg, g.kh, g.kw)
        return
    c = i = j = 0
    for r in range(cv.R):
        for u in range(pn.nruns):
            ro = pn.rowoff[u * g.kh + i]
            if ro < 0:
                continue
            a, b = pn.lo[u * g.kw + j], pn.hi[u * g.kw + j]
            s = tile + r * nr + pn.runs[u].jj
            d = dst + ro + (c0 + c) * plane + pn.col0[u * g.kw + j]
            if sw == 1:
                add_window(d, s, a, b)
            else:
                for t in range(a, b):
                    d[t * sw] += s[t]
        next_tap(g, &c, &i, &j)


cdef void pack_rows(const floating* dy, Conv* cv, Panel* pn, Py_ssize_t k0, floating* dst,
                    Py_ssize_t nr) noexcept nogil:
    """dst[k, jj] = dy[k0 + k, pixel of column jj] (one image's (K, OH*OW) grad), zero in the
    columns that are not output pixels."""
    if floating is float:
        mn_pack_rows_f32(dst, dy + k0 * cv.P, cv.P, cv.Kg, pn.segs, pn.nsegs)
    else:
        mn_pack_rows_f64(dst, dy + k0 * cv.P, cv.P, cv.Kg, pn.segs, pn.nsegs)


cdef void pack_rows_t(const floating* dy, Conv* cv, Panel* pn, Py_ssize_t k0, floating* dst,
                      Py_ssize_t nr) noexcept nogil:
    """dst[kb, jj, kk] = dy[k0 + kb*nb + kk, pixel of column jj]: the transposed panel in B
    layout, nb = dw_block channels per block; zero in padding channels and non-pixel
    columns."""
    cdef Py_ssize_t k, t, nb = dw_block(cv, nr)
    cdef int u
    cdef const floating* s
    cdef floating* d
    memset(dst, 0, round_up(cv.Kg, nb) * nr * sizeof(floating))
    for k in range(cv.Kg):
        for u in range(pn.nsegs):
            s = dy + (k0 + k) * cv.P + pn.segs[u].off
            d = dst + (k // nb) * nb * nr + pn.segs[u].jj * nb + k % nb
            for t in range(pn.segs[u].len):
                d[t * nb] = s[t]


cdef void write_out(const floating* tile, const floating* bias, floating* out, Conv* cv,
                    Panel* pn, Py_ssize_t k0, Py_ssize_t nr) noexcept nogil:
    """out[k0 + k, pixel of column jj] = tile[k, jj] + bias[k0 + k] (one image's output)."""
    cdef Py_ssize_t k, t
    cdef int u
    cdef floating b
    cdef const floating* s
    cdef floating* d
    for k in range(cv.Kg):
        b = bias[k0 + k] if bias != NULL else 0
        for u in range(pn.nsegs):
            d = out + (k0 + k) * cv.P + pn.segs[u].off
            s = tile + k * nr + pn.segs[u].jj
            for t in range(pn.segs[u].len):
                d[t] = s[t] + b


# weights, packed once per call -------------------------------------------------------------
cdef void pack_w(const floating* w, Conv* cv, floating* out) noexcept nogil:
    """Forward A operand: per group and KC block of taps, fmr-row panels of W (rows past Kg
    zero). Block (grp, pc) starts at (grp*Kg_pad*R + pc*Kg_pad), panel ip at + ip*fmr*kc."""
    cdef Py_ssize_t mr = cv.fmr, kgp = round_up(cv.Kg, cv.fmr), grp, pc, kc, ip, p, i, row
    cdef floating* d
    for grp in range(cv.G):
        pc = 0
        while pc < cv.R:
            kc = min(KC, cv.R - pc)
            for ip in range(kgp // mr):
                d = out + grp * kgp * cv.R + pc * kgp + ip * mr * kc
                for p in range(kc):
                    for i in range(mr):
                        row = ip * mr + i
                        d[p * mr + i] = w[(grp * cv.Kg + row) * cv.R + pc + p] if row < cv.Kg else 0
            pc += kc


cdef void pack_wt(const floating* w, Conv* cv, floating* out) noexcept nogil:
    """Input-grad A operand: per group, MR-row panels of W^T (R x Kg; rows past R zero)."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), grp, ip, k, i, r
    cdef floating* d
    for grp in range(cv.G):
        for ip in range(rp // MR):
            d = out + grp * rp * cv.Kg + ip * MR * cv.Kg
            for k in range(cv.Kg):
                for i in range(MR):
                    r = ip * MR + i
                    d[k * MR + i] = w[(grp * cv.Kg + k) * cv.R + r] if r < cv.R else 0


# per-thread drivers: each thread owns whole images ----------------------------------------
cdef void copy_interior(const floating* src, floating* dst, Conv* cv,
                        bint into_padded) noexcept nogil:
    """One image from its own layout into the padded buffer's interior, or back (the
    adjoint's last step). The padded buffer's borders and tail are never written."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t c, ih, iw, u, p
    cdef const floating* s
    cdef floating* d
    for c in range(g.C):
        for ih in range(g.H):
            u = (c * g.H + ih) * g.W
            p = c * cv.plane + (ih + g.ph) * cv.Wp + g.pw
            s = src + (u if into_padded else p)
            d = dst + (p if into_padded else u)
            for iw in range(g.W):
                d[iw] = s[iw]


cdef inline Py_ssize_t src_plane(Conv* cv) noexcept nogil:
    """Channel stride of what the gathers read (padded buffer or the image itself)."""
    return cv.plane if cv.padded else cv.g.H * cv.g.W


cdef inline Py_ssize_t pixel_end(Conv* cv) noexcept nogil:
    """Pixels of one image in panel numbering (padded rows or OH*OW)."""
    return cv.L if cv.padded else cv.P


cdef inline const floating* image_source(const floating* x, Py_ssize_t n, floating* xpad,
                                         Conv* cv) noexcept nogil:
    """What the gathers read for image n: the padded copy (made here) or the image."""
    cdef const floating* src = x + n * cv.g.C * cv.g.H * cv.g.W
    if not cv.padded:
        return src
    copy_interior(src, xpad, cv, True)
    return xpad


cdef inline Py_ssize_t next_panel(Conv* cv, Py_ssize_t q, Py_ssize_t nr, Panel* pn) noexcept nogil:
    """Map the panel starting at pixel q of the current image; returns the next q."""
    if cv.padded:
        map_padded(cv, q, nr, pn)
        return q + nr
    map_rows(cv, q, min(nr, cv.P - q), pn)
    return q + min(nr, cv.P - q)


cdef void forward_images(const floating* x, const floating* wp, const floating* bias,
                         floating* out, Conv* cv, Py_ssize_t n0, Py_ssize_t n1, floating* xpad,
                         floating* colp, floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    cdef Py_ssize_t mr = cv.fmr, kgp = round_up(cv.Kg, cv.fmr), n, q, grp, pc, kc, ip
    cdef Py_ssize_t plane = src_plane(cv)
    cdef const floating* src
    cdef const floating* a
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        q = 0
        while q < pixel_end(cv):
            q = next_panel(cv, q, nr, &pn)
            for grp in range(cv.G):
                if cv.R == 0:
                    memset(tile, 0, kgp * nr * sizeof(floating))
                pc = 0
                while pc < cv.R:
                    kc = min(KC, cv.R - pc)
                    pack_cols(src, plane, cv, &pn, grp * cv.Cg, pc, pc + kc, colp, nr)
                    a = wp + grp * kgp * cv.R + pc * kgp
                    for ip in range(kgp // mr):
                        fwd_kernel(mr, kc, a + ip * mr * kc, colp, tile + ip * mr * nr, nr, pc > 0)
                    pc += kc
                write_out(tile, bias, out + n * cv.K * cv.P, cv, &pn, grp * cv.Kg, nr)


cdef void weight_grad_chunk(floating* part, Conv* cv, Py_ssize_t grp, Py_ssize_t npan,
                            floating* colp, floating* dyt, Py_ssize_t nr) noexcept nogil:
    """part[grp] += the chunk's npan packed (column panel, transposed grad panel) products."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), nb = dw_block(cv, nr), kgn = round_up(cv.Kg, nb)
    cdef Py_ssize_t ip, jb
    cdef floating* c
    for ip in range(rp // MR):
        c = part + (grp * rp + ip * MR) * kgn
        for jb in range(kgn // nb):
            kernel_at(nb < nr, npan, colp + ip * MR * nr, rp * nr, dyt + jb * nb * nr, kgn * nr,
                      c + jb * nb, kgn)


cdef void weight_grad_images(const floating* x, const floating* dy, floating* part, Conv* cv,
                             Py_ssize_t n0, Py_ssize_t n1, floating* xpad, floating* colp,
                             floating* dyt, char* pmem, Py_ssize_t nr) noexcept nogil:
    """part (G, R_pad, Kg_nr) += these images' dW^T, CHUNK panels per micro-kernel call
    (colp: CHUNK x (R_pad x NR), dyt: CHUNK x (Kg_nr x NR)). colp must start zeroed: its
    rows past R and stale columns meet zero rows of dyt."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr))
    cdef Py_ssize_t n, q, grp, s
    cdef Py_ssize_t plane = src_plane(cv), end = pixel_end(cv)
    cdef const floating* src
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for grp in range(cv.G):
            q = 0
            while q < end:
                s = 0
                while s < CHUNK and q < end:
                    q = next_panel(cv, q, nr, &pn)
                    pack_cols(src, plane, cv, &pn, grp * cv.Cg, 0, cv.R, colp + s * rp * nr, nr)
                    pack_rows_t(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg,
                                dyt + s * kgn * nr, nr)
                    s += 1
                weight_grad_chunk(part, cv, grp, s, colp, dyt, nr)


cdef void input_grad_images(const floating* dy, const floating* wtp, floating* dx, Conv* cv,
                            Py_ssize_t n0, Py_ssize_t n1, floating* dxpad, floating* bpan,
                            floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    cdef Py_ssize_t chw = cv.g.C * cv.g.H * cv.g.W, rp = round_up(cv.R, MR), n, q, grp, ip
    cdef Py_ssize_t plane = src_plane(cv), end = pixel_end(cv)
    cdef floating* dst
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        dst = dxpad if cv.padded else dx + n * chw
        memset(dst, 0, (cv.padsize if cv.padded else chw) * sizeof(floating))
        q = 0
        while q < end:
            q = next_panel(cv, q, nr, &pn)
            for grp in range(cv.G):
                pack_rows(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg, bpan, nr)
                for ip in range(rp // MR):
                    kernel(cv.Kg, wtp + grp * rp * cv.Kg + ip * MR * cv.Kg, bpan,
                           tile + ip * MR * nr, nr, 0)
                scatter_cols(tile, dst, plane, cv, &pn, grp * cv.Cg, nr)
        if cv.padded:
            copy_interior(dxpad, dx + n * chw, cv, False)


# Python entry points ----------------------------------------------------------------------
cdef void choose_tab(Conv* cv, Py_ssize_t vw) noexcept nogil:
    """The pixel-major forward (forward_rows) for stride 1 and one group, enough output
    channels to fill the vectors, and when an output row splits into whole tiles of one of the kernel heights with at most 1/8 of the
    computed pixels dropped (OW = 14 or 28: none); the panel path drops (Wp - OW) / Wp."""
    cdef int nv = 1 if cv.K <= vw else 2, mr, best = 0, taller
    cdef Py_ssize_t tiles, waste, best_waste = 0
    cv.tab_nv = cv.tab_mr = 0
    # the channels must fill at least half the vectors (one output channel would waste
    # 15 of 16 lanes: the panel path suits it better)
    if not cv.padded or cv.G != 1 or cv.g.OW < 1 or 2 * cv.K < nv * vw:
        return
    for taller in range(2):
        mr = mn_tab_mr(nv, 1 - taller)
        tiles = (cv.g.OW + mr - 1) // mr
        waste = tiles * mr - cv.g.OW
        if waste * 8 <= tiles * mr and (best == 0 or waste < best_waste):
            best, best_waste = mr, waste
    if best:
        cv.tab_nv, cv.tab_mr = nv, best


cdef inline Py_ssize_t tab_place(Conv* cv, Py_ssize_t r) noexcept nogil:
    """Tap r = (c, kh, kw) of the weights' order at its place in forward_rows' order: the
    same, or with tab_skip (kh, c, kw), where the taps of the kernel rows inside the image
    are one contiguous range (a channel's taps in one kernel row still read neighbouring
    pixels, but a channel's kernel rows are C*kw taps apart: worse L1 reuse, so only
    where the skipped rows pay for it)."""
    cdef Py_ssize_t kw = cv.g.kw, khw = cv.g.kh * kw
    if not cv.tab_skip:
        return r
    return (r % khw // kw * cv.Cg + r // khw) * kw + r % kw


cdef void pack_w_cols(const floating* w, Conv* cv, Py_ssize_t kb, floating* out) noexcept nogil:
    """W^T in blocks of kb output channels, taps in forward_rows' order:
    out[blk][tab_place(r)][kk] = w[blk*kb + kk, r], 0 past K."""
    cdef Py_ssize_t blk, r, kk, k, rr, nblk = (cv.K + kb - 1) // kb
    for blk in range(nblk):
        for r in range(cv.R):
            rr = tab_place(cv, r)
            for kk in range(kb):
                k = blk * kb + kk
                out[(blk * cv.R + rr) * kb + kk] = w[k * cv.R + r] if k < cv.K else 0


cdef inline Py_ssize_t inside_rows(Geom* g, Py_ssize_t oh, Py_ssize_t* lo) noexcept nogil:
    """The kernel rows lo.. lo+count (count returned) that output row oh reads inside the
    image; those above or below it read only padding zeros."""
    cdef Py_ssize_t kh, ih, hi = 0
    lo[0] = g.kh
    for kh in range(g.kh):
        ih = oh * g.sh - g.ph + kh * g.dh
        if 0 <= ih < g.H:
            lo[0] = min(lo[0], kh)
            hi = kh + 1
    return max(hi - lo[0], 0)


cdef inline void row_taps(Conv* cv, Py_ssize_t oh, Py_ssize_t* start, Py_ssize_t* count) noexcept nogil:
    """The taps forward_rows multiplies for output row oh: all of them, or with tab_skip
    those of its inside_rows (a 5x5 kernel on a 14x14 map with padding 2: 91%)."""
    cdef Py_ssize_t lo
    if not cv.tab_skip:
        start[0], count[0] = 0, cv.R
        return
    count[0] = inside_rows(&cv.g, oh, &lo) * cv.g.kw * cv.Cg
    start[0] = lo * cv.g.kw * cv.Cg


cdef bint skip_pays(Conv* cv) noexcept nogil:
    """Whether the kernel rows on vertical padding are at least 1/16 of all (8.6% for
    the CNN's 14x14 5x5 layer, 1.2% for a 56x56 3x3 one)."""
    cdef Py_ssize_t oh, lo, skipped = 0
    for oh in range(cv.g.OH):
        skipped += cv.g.kh - inside_rows(&cv.g, oh, &lo)
    return skipped * 16 >= cv.g.OH * cv.g.kh


cdef void forward_rows(const floating* x, const floating* wt, const floating* bias,
                       floating* out, Conv* cv, Py_ssize_t n0, Py_ssize_t n1, floating* xpad,
                       floating* tile, Py_ssize_t kb) noexcept nogil:
    """Pixel-major forward of images n0..n1: per output row, tiles of tab_mr pixels x kb
    channels straight from the padded image through the tap table (no gather), each
    tile transposed into NCHW with the bias added."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.tab_mr, nv = cv.tab_nv
    cdef Py_ssize_t n, blk, oh, ow0, k, kn, i, cnt, nblk = (cv.K + kb - 1) // kb
    cdef const floating* src
    cdef floating* dst
    cdef floating b
    cdef Py_ssize_t tap0, ntap
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for blk in range(nblk):
            kn = min(kb, cv.K - blk * kb)
            for oh in range(g.OH):
                row_taps(cv, oh, &tap0, &ntap)
                ow0 = 0
                while ow0 < g.OW:
                    if floating is float:
                        mn_tab_kernel_f32(nv, mr, ntap, src + oh * cv.Wp + ow0, cv.tofr + tap0,
                                          wt + (blk * cv.R + tap0) * kb, tile)
                    else:
                        mn_tab_kernel_f64(nv, mr, ntap, src + oh * cv.Wp + ow0, cv.tofr + tap0,
                                          wt + (blk * cv.R + tap0) * kb, tile)
                    cnt = min(mr, g.OW - ow0)
                    dst = out + (n * cv.K + blk * kb) * cv.P + oh * g.OW + ow0
                    if floating is float and kb % 16 == 0:   # vector transpose
                        mn_tile_to_nchw_f32(tile, kb, cnt, kn,
                                            bias + blk * kb if bias != NULL else NULL, dst, cv.P)
                    else:
                        for k in range(kn):
                            b = bias[blk * kb + k] if bias != NULL else 0
                            for i in range(cnt):
                                dst[k * cv.P + i] = tile[i * kb + k] + b
                    ow0 += mr


cdef class _Plan:
    """Geometry, tap tables, thread count and per-thread scratch for one call."""
    cdef Conv cv
    cdef Buffer tabs, pmem
    cdef Py_ssize_t nr, pbytes
    cdef int nt

    def __init__(self, tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
                 tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
        cdef Conv* cv = &self.cv
        cdef Py_ssize_t j, r
        cv.g = make_geom(xshape, kernel, stride, pad, dil, OH, OW)
        if groups < 1 or cv.g.C % groups or K % groups:
            raise ValueError(f"conv: groups {groups} must divide channels {cv.g.C} and {K}")
        self.nr = mn_gemm_nr(itemsize)
        cv.G, cv.K = groups, K
        cv.Cg, cv.Kg = cv.g.C // groups, K // groups
        cv.R = cv.Cg * cv.g.kh * cv.g.kw
        cv.P = OH * OW
        cv.fmr = MR_SHORT if round_up(cv.Kg, MR_SHORT) < round_up(cv.Kg, MR) else MR
        cv.padded = cv.g.sh == 1 and cv.g.sw == 1
        # Rows of W + pw: a row's right padding is the next row's left padding (every row
        # starts with pw zeros, and reads past a row's end wrap into them), so fewer
        # computed-and-dropped columns (OH*Wp - OH*OW) than with W + 2*pw
        cv.Wp = max(cv.g.W + cv.g.pw, OW)
        cv.plane = (cv.g.H + 2 * cv.g.ph) * cv.Wp
        cv.L = OH * cv.Wp
        # the last panel of a padded image reads up to NR + (kw-1)*dw past the last plane;
        # rounded to NR so the per-thread blocks after it stay aligned for the micro-kernel
        cv.padsize = round_up(cv.g.C * cv.plane + (cv.g.kw - 1) * cv.g.dw + self.nr, self.nr)
        self.tabs = Buffer(max(2 * cv.g.kw + 2 * cv.R, 1) * sizeof(Py_ssize_t))
        cv.owlo = <Py_ssize_t*>self.tabs.ptr
        cv.owhi = cv.owlo + cv.g.kw
        cv.toff = cv.owhi + cv.g.kw
        cv.tofr = cv.toff + cv.R
        for j in range(cv.g.kw):
            out_range(j * cv.g.dw, cv.g.sw, cv.g.pw, cv.g.W, OW, &cv.owlo[j], &cv.owhi[j])
        choose_tab(cv, self.nr // 2)
        cv.tab_skip = cv.tab_mr != 0 and skip_pays(cv)
        for r in range(cv.R):
            cv.toff[r] = ((r // (cv.g.kh * cv.g.kw)) * cv.plane
                          + (r // cv.g.kw) % cv.g.kh * cv.g.dh * cv.Wp + r % cv.g.kw * cv.g.dw)
            cv.tofr[tab_place(cv, r)] = cv.toff[r]
        self.nt = max(1, min(threads_for(cv.g.N * cv.P * cv.R * K // 64), cv.g.N))
        self.pbytes = panel_bytes(cv, self.nr)
        self.pmem = Buffer(self.nt * self.pbytes)

    cdef Py_ssize_t pad_items(self):
        return self.cv.padsize if self.cv.padded else 0


cdef int check_sizes(_Plan pl, Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer y,
                     Py_ssize_t y_off, int itemsize, str kernel) except -1:
    """Buffers of the shapes the plan's geometry names: x (N, C, H, W), w (K, C/groups, kh,
    kw) and y (N, K, OH, OW), each from its offset (for the gradients: dy is y, dx is x, dw
    is w); an output no larger than the input gives (the padded paths read taps unchecked)."""
    cdef Geom* g = &pl.cv.g
    check_itemsize(itemsize, kernel)
    if g.kh < 1 or g.kw < 1 or g.ph < 0 or g.pw < 0:
        raise ValueError(f"{kernel}: kernel {g.kh}x{g.kw} must be at least 1x1 and padding "
                         f"({g.ph}, {g.pw}) >= 0")
    for size, k, st, p, d, o, name in ((g.H, g.kh, g.sh, g.ph, g.dh, g.OH, "height"),
                                        (g.W, g.kw, g.sw, g.pw, g.dw, g.OW, "width")):
        span = size + 2 * p - d * (k - 1)
        most = (span - 1) // st + 1 if span >= 1 else 0
        if o < 0 or o > most:
            raise ValueError(f"{kernel}: output {name} {o} does not fit an input {name} of "
                             f"{size} (at most {most} with kernel {k}, stride {st}, padding {p}, "
                             f"dilation {d})")
    need(x, x_off, (g.N, g.C, g.H, g.W), itemsize, kernel, "input (N, C, H, W)")
    need(w, w_off, (pl.cv.K, pl.cv.Cg, g.kh, g.kw), itemsize, kernel, "weight (K, C/groups, kh, kw)")
    need(y, y_off, (g.N, pl.cv.K, g.OH, g.OW), itemsize, kernel, "output (N, K, OH, OW)")
    return 0


def row_tiles(tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
              tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """The pixel-major forward's tile height for this convolution, 0 when it is not used."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    return pl.cv.tab_mr


def row_skip(tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
             tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """Whether the pixel-major forward skips the kernel rows on vertical padding."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    return bool(pl.cv.tab_skip)


cdef void forward_by_rows(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, char* bp,
                          Buffer out, _Plan pl, int itemsize):
    """forward() on the pixel-major path (choose_tab)."""
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t kb = cv.tab_nv * (pl.nr // 2), N = cv.g.N, t
    cdef Py_ssize_t padsz = pl.pad_items(), each = padsz + round_up(cv.tab_mr * kb, pl.nr)
    cdef int nt = pl.nt
    cdef Buffer wt = Buffer(max((cv.K + kb - 1) // kb * cv.R * kb, 1) * itemsize)
    cdef Buffer work = Buffer(nt * each * itemsize, True)
    with nogil:
        if itemsize == 4:
            pack_w_cols(<float*>w.ptr + w_off, cv, kb, <float*>wt.ptr)
        else:
            pack_w_cols(<double*>w.ptr + w_off, cv, kb, <double*>wt.ptr)
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                forward_rows(<float*>x.ptr + x_off, <float*>wt.ptr, <float*>bp, <float*>out.ptr,
                             cv, N * t // nt, N * (t + 1) // nt, <float*>work.ptr + t * each,
                             <float*>work.ptr + t * each + padsz, kb)
            else:
                forward_rows(<double*>x.ptr + x_off, <double*>wt.ptr, <double*>bp,
                             <double*>out.ptr, cv, N * t // nt, N * (t + 1) // nt,
                             <double*>work.ptr + t * each, <double*>work.ptr + t * each + padsz,
                             kb)


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias, Py_ssize_t b_off,
            Buffer out, tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
            tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """out (N, K, OH, OW) = conv(x, w) + bias; x, w compact (bias may be None)."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    check_sizes(pl, x, x_off, w, w_off, out, 0, itemsize, "conv2d")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, "conv2d", "bias")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t nr = pl.nr, kgp = round_up(cv.Kg, cv.fmr), N = cv.g.N, t
    cdef int nt = pl.nt
    if N * cv.P == 0 or K == 0:
        return
    cdef Py_ssize_t padsz = pl.pad_items(), colsz = min(KC, max(cv.R, 1)) * nr
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    if cv.tab_mr:
        forward_by_rows(x, x_off, w, w_off, bp, out, pl, itemsize)
        return
    cdef Py_ssize_t each = padsz + colsz + kgp * nr
    cdef Buffer wp = Buffer(max(cv.G * kgp * cv.R, 1) * itemsize)
    cdef Buffer work = Buffer(nt * each * itemsize, True)
    with nogil:
        if itemsize == 4:
            pack_w(<float*>w.ptr + w_off, cv, <float*>wp.ptr)
        else:
            pack_w(<double*>w.ptr + w_off, cv, <double*>wp.ptr)
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                forward_images(<float*>x.ptr + x_off, <float*>wp.ptr, <float*>bp, <float*>out.ptr,
                               cv, N * t // nt, N * (t + 1) // nt, <float*>work.ptr + t * each,
                               <float*>work.ptr + t * each + padsz,
                               <float*>work.ptr + t * each + padsz + colsz,
                               pl.pmem.ptr + t * pl.pbytes, nr)
            else:
                forward_images(<double*>x.ptr + x_off, <double*>wp.ptr, <double*>bp,
                               <double*>out.ptr, cv, N * t // nt, N * (t + 1) // nt,
                               <double*>work.ptr + t * each, <double*>work.ptr + t * each + padsz,
                               <double*>work.ptr + t * each + padsz + colsz,
                               pl.pmem.ptr + t * pl.pbytes, nr)


cdef void sum_partials(const floating* part, floating* dw, Conv* cv, int nt,
                       Py_ssize_t nr) noexcept nogil:
    """dw[grp*Kg + k, r] = sum over threads of part[t, grp, r, k]."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr)), grp, k, r
    cdef Py_ssize_t size = cv.G * rp * kgn
    cdef int t
    cdef floating s
    for grp in range(cv.G):
        for k in range(cv.Kg):
            for r in range(cv.R):
                s = 0
                for t in range(nt):
                    s = s + part[t * size + (grp * rp + r) * kgn + k]
                dw[(grp * cv.Kg + k) * cv.R + r] = s


cdef void weight_grad_rows(const floating* x, const floating* dy, floating* part, Conv* cv,
                           const Py_ssize_t* toffp, Py_ssize_t n0, Py_ssize_t n1,
                           floating* xpad, floating* dyt, Py_ssize_t kb,
                           Py_ssize_t rp) noexcept nogil:
    """part[blk, r, kk] += dW[blk*kb + kk, r] over images n0..n1, tap-major: tiles of
    tab_mr taps x kb channels summed over the real output pixels (no column panels).
    toffp: the tap table padded to rp taps (extra rows repeat tap 0; discarded)."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.tab_mr, nv = cv.tab_nv
    cdef Py_ssize_t n, blk, rb, kn, nblk = (cv.K + kb - 1) // kb
    cdef const floating* src
    cdef const floating* d
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for blk in range(nblk):
            kn = min(kb, cv.K - blk * kb)
            d = dy + (n * cv.K + blk * kb) * cv.P    # the output grad, pixel-major
            if floating is float:
                mn_gather_t_f32(dyt, d, cv.P, kn, kb)
            else:
                mn_gather_t_f64(dyt, d, cv.P, kn, kb)
            rb = 0
            while rb < cv.R:
                if floating is float:
                    mn_wg_kernel_f32(nv, mr, g.OH, g.OW, cv.Wp, src, toffp + rb, dyt,
                                     part + (blk * rp + rb) * kb)
                else:
                    mn_wg_kernel_f64(nv, mr, g.OH, g.OW, cv.Wp, src, toffp + rb, dyt,
                                     part + (blk * rp + rb) * kb)
                rb += mr


def weight_grad_rows_(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                      _Plan pl, int itemsize):
    """weight_grad() on the tap-major path (the pixel-major forward's geometry)."""
    check_sizes(pl, x, x_off, dw, 0, dy, dy_off, itemsize, "conv2d weight gradient")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t kb = cv.tab_nv * (pl.nr // 2), mr = cv.tab_mr, N = cv.g.N, t, r, k, blk
    cdef Py_ssize_t rp = round_up(cv.R, mr), nblk = (cv.K + kb - 1) // kb
    cdef Py_ssize_t partsz = nblk * rp * kb, padsz = pl.pad_items()
    cdef Py_ssize_t each = padsz + round_up(cv.P * kb, pl.nr)
    cdef int nt = pl.nt, i
    cdef Buffer part = Buffer(max(nt * partsz, 1) * itemsize, True)
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize, True)
    cdef Buffer tabs = Buffer(max(rp, 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* toffp = <Py_ssize_t*>tabs.ptr
    cdef double s
    for r in range(rp):
        toffp[r] = cv.toff[r] if r < cv.R else cv.toff[0]
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                weight_grad_rows(<float*>x.ptr + x_off, <float*>dy.ptr + dy_off,
                                 <float*>part.ptr + t * partsz, cv, toffp, N * t // nt,
                                 N * (t + 1) // nt, <float*>work.ptr + t * each,
                                 <float*>work.ptr + t * each + padsz, kb, rp)
            else:
                weight_grad_rows(<double*>x.ptr + x_off, <double*>dy.ptr + dy_off,
                                 <double*>part.ptr + t * partsz, cv, toffp, N * t // nt,
                                 N * (t + 1) // nt, <double*>work.ptr + t * each,
                                 <double*>work.ptr + t * each + padsz, kb, rp)
        for k in range(cv.K):
            blk = k // kb
            for r in range(cv.R):
                s = 0
                for i in range(nt):
                    if itemsize == 4:
                        s = s + (<float*>part.ptr)[i * partsz + (blk * rp + r) * kb + k % kb]
                    else:
                        s = s + (<double*>part.ptr)[i * partsz + (blk * rp + r) * kb + k % kb]
                if itemsize == 4:
                    (<float*>dw.ptr)[k * cv.R + r] = <float>s
                else:
                    (<double*>dw.ptr)[k * cv.R + r] = s


def weight_grad(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
                tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """dw (K, C/groups, kh, kw) from the output grad dy (N, K, OH, OW) and input x, compact."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    check_sizes(pl, x, x_off, dw, 0, dy, dy_off, itemsize, "conv2d weight gradient")
    cdef Conv* cv = &pl.cv
    if cv.tab_mr and cv.g.N * cv.P > 0:
        weight_grad_rows_(dy, dy_off, x, x_off, dw, pl, itemsize)
        return
    cdef Py_ssize_t nr = pl.nr, rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr))
    cdef Py_ssize_t N = cv.g.N, t
    cdef int nt = pl.nt
    cdef Py_ssize_t partsz = cv.G * rp * kgn, padsz = pl.pad_items(), colsz = CHUNK * rp * nr
    cdef Py_ssize_t each = padsz + colsz + CHUNK * kgn * nr
    cdef Buffer part = Buffer(max(nt * partsz, 1) * itemsize, True)
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize, True)
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                weight_grad_images(<float*>x.ptr + x_off, <float*>dy.ptr + dy_off,
                                   <float*>part.ptr + t * partsz, cv, N * t // nt,
                                   N * (t + 1) // nt, <float*>work.ptr + t * each,
                                   <float*>work.ptr + t * each + padsz,
                                   <float*>work.ptr + t * each + padsz + colsz,
                                   pl.pmem.ptr + t * pl.pbytes, nr)
            else:
                weight_grad_images(<double*>x.ptr + x_off, <double*>dy.ptr + dy_off,
                                   <double*>part.ptr + t * partsz, cv, N * t // nt,
                                   N * (t + 1) // nt, <double*>work.ptr + t * each,
                                   <double*>work.ptr + t * each + padsz,
                                   <double*>work.ptr + t * each + padsz + colsz,
                                   pl.pmem.ptr + t * pl.pbytes, nr)
        if itemsize == 4:
            sum_partials(<float*>part.ptr, <float*>dw.ptr, cv, nt, nr)
        else:
            sum_partials(<double*>part.ptr, <double*>dw.ptr, cv, nt, nr)


def input_grad(Buffer dy, Py_ssize_t dy_off, Buffer w, Py_ssize_t w_off, Buffer dx,
               tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
               tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """dx (N, C, H, W) from the output grad dy (N, K, OH, OW) and weight w, compact."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    check_sizes(pl, dx, 0, w, w_off, dy, dy_off, itemsize, "conv2d input gradient")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t nr = pl.nr, rp = round_up(cv.R, MR), N = cv.g.N, t
    cdef int nt = pl.nt
    cdef Py_ssize_t padsz = pl.pad_items(), bsz = max(cv.Kg, 1) * nr
    cdef Py_ssize_t each = padsz + bsz + rp * nr
    cdef Buffer wtp = Buffer(max(cv.G * rp * cv.Kg, 1) * itemsize)
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize)
    with nogil:
        if itemsize == 4:
            pack_wt(<float*>w.ptr + w_off, cv, <float*>wtp.ptr)
        else:
            pack_wt(<double*>w.ptr + w_off, cv, <double*>wtp.ptr)
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                input_grad_images(<float*>dy.ptr + dy_off, <float*>wtp.ptr, <float*>dx.ptr, cv,
                                  N * t // nt, N * (t + 1) // nt, <float*>work.ptr + t * each,
                                  <float*>work.ptr + t * each + padsz,
                                  <float*>work.ptr + t * each + padsz + bsz,
                                  pl.pmem.ptr + t * pl.pbytes, nr)
            else:
                input_grad_images(<double*>dy.ptr + dy_off, <double*>wtp.ptr, <double*>dx.ptr,
                                  cv, N * t // nt, N * (t + 1) // nt,
                                  <double*>work.ptr + t * each,
                                  <double*>work.ptr + t * each + padsz,
                                  <double*>work.ptr + t * each + padsz + bsz,
                                  pl.pmem.ptr + t * pl.pbytes, nr)


cdef void channel_sum(const floating* dy, floating* db, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
                      Py_ssize_t k) noexcept nogil:
    # 16 independent partial sums per row, so the compiler can vectorise the loop
    cdef floating acc[16]
    cdef const floating* row
    cdef double s = 0
    cdef Py_ssize_t n, p, l
    for n in range(N):
        row = dy + (n * K + k) * P
        for l in range(16):
            acc[l] = 0
        for p in range(P // 16):
            for l in range(16):
                acc[l] += row[p * 16 + l]
        for p in range(P // 16 * 16, P):
            s += row[p]
        for l in range(16):
            s += acc[l]
    db[k] = <floating>s


def bias_grad(Buffer dy, Py_ssize_t dy_off, Buffer db, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
              int itemsize):
    """db[k] = sum of dy (N, K, P) over n and p."""
    check_itemsize(itemsize, "conv2d bias gradient")
    need(dy, dy_off, (N, K, P), itemsize, "conv2d bias gradient", "output gradient")
    need(db, 0, (K,), itemsize, "conv2d bias gradient", "bias gradient")
    cdef Py_ssize_t k
    cdef int nt = threads_for(N * K * P)
    with nogil:
        for k in prange(K, num_threads=nt, schedule='static'):
            if itemsize == 4:
                channel_sum(<float*>dy.ptr + dy_off, <float*>db.ptr, N, K, P, k)
            else:
                channel_sum(<double*>dy.ptr + dy_off, <double*>db.ptr, N, K, P, k)
