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
(2 of 16 for the CNN's 14x14 layer). Other strides split the padded copy into
stride phases (plan_phases), where output pixels are again one window per tap.

- forward: out[:, panel] = W @ cols(panel), W packed once into MR-row panels
  (panels run on from one image into the next, so small maps fill them)
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
# This file: the plan (geometry, tap tables, scratch), the size checks and the Python entry
# points. Its parts, pulled in by Cython `include` in this order: convgemm_kernels.pxi (the
# micro-kernels of the chosen kernel set), convgemm_pack.pxi (panel tables, gather/scatter,
# weight packing), convgemm_drivers.pxi (per-thread loops of the panel path) and
# convgemm_rows.pxi (the pixel-major tap-table path).
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.string cimport memcpy, memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport (threads_for, chunk_items, channel_block, mn_claims, mn_claim,
                               claims_start, mn_claims_free)
from mininet_ext._convgeom cimport Geom, clamp, make_geom
from mininet_ext._check cimport check_itemsize, need

from mininet_ext import _isa

# The kernel set and its wrappers (part 1), then the plan structs the other parts use.
include "convgemm_kernels.pxi"


def kernel_isa():
    """The kernel set this module's convolutions call (see mininet_ext._isa.active())."""
    return mn_kernel_isa().decode()


cdef struct Conv:
    Geom g
    Py_ssize_t G, K, Cg, Kg, R, P       # groups, out channels, per group, taps/group, OH*OW
    Py_ssize_t Wp, plane, L, padsize    # padded rows: width, channel stride, OH*Wp, buffer
    Py_ssize_t Hq                       # phased: rows of one phase (Wp: its row length)
    bint phased                         # stride > 1: the copy is split into stride phases
    bint relu                           # forward: max(0, .) taken as the output is written
    Py_ssize_t fmr                      # forward micro-kernel rows (MR or MR_SHORT)
    Py_ssize_t* toff                    # padded: per tap r, its offset from the pixel's window
    Py_ssize_t* tofr                    # the same in forward_rows' order (tap_tables)
    Py_ssize_t* place                   # tap r's place in forward_rows' order (tap_tables)
    Py_ssize_t* phrow                   # phased: image row ih's phase row, in a channel plane
    Py_ssize_t* phcol                   # phased: image column iw's phase and column
    Py_ssize_t phh, phw                 # phased: image rows and columns some output reads
    int tab_nv, tab_mr                  # pixel-major forward: channel vectors, tile rows (0: off)
    int tab_kw                          # its taps' run length for a sliding kernel (0: none)
    int wg_nv, wg_mr, wg_kw             # the tap-major weight grad's tile and run length (a
                                        # sliding kernel's, or the forward's two-vector one)
    bint tab_skip                       # forward_rows skips kernel rows on vertical padding



cdef struct Panel:
    # NR pixels q..q+NR of one image's padded-row numbering (q = oh*Wp + ow): tap r reads
    # the window at q + toff[r] of the padded (or phased) copy. segs: the panel columns that
    # are real output pixels (ow < OW).
    Py_ssize_t q
    Run* segs
    int nsegs


cdef extern from "_phase.h" nogil:
    void mn_phase_plane_f32(float* ph, float* x, const Py_ssize_t* rowoff,
                            const Py_ssize_t* dcol, Py_ssize_t hn, Py_ssize_t wn, Py_ssize_t w,
                            int deal)
    void mn_phase_plane_f64(double* ph, double* x, const Py_ssize_t* rowoff,
                            const Py_ssize_t* dcol, Py_ssize_t hn, Py_ssize_t wn, Py_ssize_t w,
                            int deal)
    int mn_phase_deal_f32(float* ph, const float* x, const Py_ssize_t* rowoff, Py_ssize_t hn,
                          Py_ssize_t wn, Py_ssize_t w, Py_ssize_t pw, Py_ssize_t sw,
                          Py_ssize_t area)
    void mn_cross_rows_f32(float* d, const float* a, const float* b, const Py_ssize_t* toff,
                           Py_ssize_t n, Py_ssize_t nr, Py_ssize_t t)
    void mn_cross_rows_f64(double* d, const double* a, const double* b,
                           const Py_ssize_t* toff, Py_ssize_t n, Py_ssize_t nr, Py_ssize_t t)


include "convgemm_pack.pxi"
include "convgemm_drivers.pxi"
include "convgemm_rows.pxi"


# Strided convolutions: the padded image split into stride phases --------------------------
# Phase (a, b) of a channel holds the padded pixels (row*sh + a, col*sw + b) at (row, col),
# Hq x Wp of them. Output pixel (oh, ow) under tap (i, j) reads padded (oh*sh + i*dh,
# ow*sw + j*dw): phase (i*dh % sh, j*dw % sw) at (oh + i*dh // sh, ow + j*dw // sw). So
# output pixels q = oh*Wp + ow again read one contiguous window per tap, as at stride 1:
# the same panel gathers and pixel-major kernels run, with no per-element index math.
# Only the rows and columns some output reads are kept (Hq = OH + (kh-1)*dh // sh).
cdef void plan_phases(Conv* cv, Py_ssize_t nr) noexcept nogil:
    cdef Geom* g = &cv.g
    cv.Wp = g.OW + (g.kw - 1) * g.dw // g.sw
    cv.Hq = g.OH + (g.kh - 1) * g.dh // g.sh
    cv.plane = g.sh * g.sw * cv.Hq * cv.Wp
    # the last panel reads up to NR past the last output row, and a tap at most Wp past
    # its phase's end (the dropped columns)
    cv.padsize = round_up(g.C * cv.plane + cv.Wp + nr, nr)
    # padded row a = ih + ph is kept while a // sh < Hq, column b = iw + pw while b // sw < Wp
    cv.phh = clamp(cv.Hq * g.sh - g.ph, 0, g.H)
    cv.phw = clamp(cv.Wp * g.sw - g.pw, 0, g.W)


cdef void phase_tables(Conv* cv) noexcept nogil:
    """Where image row ih and column iw land in a channel's phased copy (copy_phases)."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t ih, iw, a, b, area = cv.Hq * cv.Wp
    for ih in range(cv.phh):
        a = ih + g.ph
        cv.phrow[ih] = (a % g.sh) * g.sw * area + a // g.sh * cv.Wp
    for iw in range(cv.phw):
        b = iw + g.pw
        cv.phcol[iw] = (b % g.sw) * area + b // g.sw


cdef Py_ssize_t tap_offset(Conv* cv, Py_ssize_t c, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    """Where tap (c, i, j) reads for output pixel 0, in the padded (or phased) copy."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t a = i * g.dh, b = j * g.dw
    if not cv.phased:
        return c * cv.plane + a * cv.Wp + b
    return (c * cv.plane + ((a % g.sh) * g.sw + b % g.sw) * cv.Hq * cv.Wp
            + a // g.sh * cv.Wp + b // g.sw)


# Python entry points ----------------------------------------------------------------------
cdef class _Plan:
    """Geometry, tap tables, thread count and per-thread scratch for one call."""
    cdef Conv cv
    cdef Buffer tabs, pmem
    cdef Py_ssize_t nr, pbytes
    cdef int nt

    def __init__(self, tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
                 tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
        cdef Conv* cv = &self.cv
        cdef Py_ssize_t r
        cv.g = make_geom(xshape, kernel, stride, pad, dil, OH, OW)
        if groups < 1 or cv.g.C % groups or K % groups:
            raise ValueError(f"conv: groups {groups} must divide channels {cv.g.C} and {K}")
        self.nr = mn_gemm_nr(itemsize)
        cv.G, cv.K = groups, K
        cv.Cg, cv.Kg = cv.g.C // groups, K // groups
        cv.R = cv.Cg * cv.g.kh * cv.g.kw
        cv.P = OH * OW
        cv.fmr = MR_SHORT if round_up(cv.Kg, MR_SHORT) < round_up(cv.Kg, MR) else MR
        cv.relu = False
        cv.phased = cv.g.sh > 1 or cv.g.sw > 1
        if cv.phased:
            plan_phases(cv, self.nr)
        else:
            # Rows of W + pw: a row's right padding is the next row's left padding (every
            # row starts with pw zeros, and reads past a row's end wrap into them), so fewer
            # computed-and-dropped columns (OH*Wp - OH*OW) than with W + 2*pw
            cv.Wp = max(cv.g.W + cv.g.pw, OW)
            cv.Hq = cv.g.H + 2 * cv.g.ph
            cv.plane = cv.Hq * cv.Wp
            # the last panel of a padded image reads up to NR + (kw-1)*dw past the last
            # plane; rounded to NR so the per-thread blocks after it stay aligned
            cv.padsize = round_up(cv.g.C * cv.plane + (cv.g.kw - 1) * cv.g.dw + self.nr,
                                  self.nr)
        cv.L = OH * cv.Wp
        self.tabs = Buffer(max(3 * cv.R + cv.g.H + cv.g.W, 1) * sizeof(Py_ssize_t))
        cv.toff = <Py_ssize_t*>self.tabs.ptr
        cv.tofr = cv.toff + cv.R
        cv.place = cv.tofr + cv.R
        cv.phrow = cv.place + cv.R
        cv.phcol = cv.phrow + cv.g.H
        if cv.phased:
            phase_tables(cv)
        choose_tab(cv, self.nr // 2)
        cv.tab_skip = cv.tab_mr != 0 and skip_pays(cv)
        tap_tables(cv)
        self.nt = max(1, min(threads_for(cv.g.N * cv.P * cv.R * K // 64), cv.g.N))
        self.pbytes = panel_bytes(cv, self.nr)
        self.pmem = Buffer(self.nt * self.pbytes)

    cdef Py_ssize_t pad_items(self):
        return self.cv.padsize


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


def row_slide(tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
              tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """(channel vectors, tile height, run length) of the pixel-major forward's tiles: the
    run length kw where a sliding-run kernel takes the taps, else 0; (0, 0, 0) when the
    forward does not take this path."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    return pl.cv.tab_nv, pl.cv.tab_mr, pl.cv.tab_kw


def wgrad_slide(tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
                tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """(channel vectors, taps a tile, run length) of the tap-major weight gradient's tiles,
    as row_slide gives the forward's."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    return pl.cv.wg_nv, pl.cv.wg_mr, pl.cv.wg_kw


def row_skip(tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
             tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """Whether the pixel-major forward skips the kernel rows on vertical padding."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    return bool(pl.cv.tab_skip)


# Images per chunk of a pass (forward, input gradient), claimed by the threads (_claim.h:
# each its own contiguous share first, so a layer called again finds its images in the
# same core's caches; MNIST CNN conv2, 2 threads, Xeon model 167, op level: forward 1524
# -> 1454 us, forward + backward 5909 -> 5634 against chunks taken as threads come free):
# about CHUNKS_PER_THREAD chunks a thread, so a thread slowed by
# its core (another process on it, a busy SMT sibling on a shared host) leaves its
# share to the others instead of holding the pass. Each image is still computed whole
# by one thread with its own scratch: the output does not depend on who took it. Chunks
# against one equal run a thread, MNIST conv2 forward, 2 threads, Xeon model 207, one
# process, interleaved: median 1947 -> 1793 us, mean 1997 -> 1881; next to a busy
# process, mean 4623 -> 4316.
# A weight gradient sums each chunk into its own partial dw (then all of them in chunk
# order: the same bits whoever took a chunk), so its chunks are fewer and their partials
# held to DW_PARTIALS_BYTES.
cdef enum:
    CHUNKS_PER_THREAD = 8
    DW_CHUNKS_PER_THREAD = 4
    DW_PARTIALS_BYTES = 4 << 20


cdef inline Py_ssize_t chunk_images(Py_ssize_t N, int nt) noexcept nogil:
    return chunk_items(N, nt, CHUNKS_PER_THREAD)


cdef inline Py_ssize_t dw_chunk_images(Py_ssize_t N, int nt, Py_ssize_t part_bytes) noexcept nogil:
    """chunk_images for a weight gradient whose partial dw is part_bytes."""
    return chunk_items(N, nt, min(<Py_ssize_t>DW_CHUNKS_PER_THREAD,
                                  DW_PARTIALS_BYTES // max(nt * part_bytes, 1)))


cdef void forward_by_rows(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, char* bp,
                          Buffer out, _Plan pl, int itemsize):
    """forward() on the pixel-major path (choose_tab)."""
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t kb = cv.tab_nv * (pl.nr // 2), N = cv.g.N, c
    cdef Py_ssize_t padsz = pl.pad_items()
    cdef Py_ssize_t each = padsz + round_up(tab_tile_items(cv, kb, itemsize), pl.nr)
    cdef int nt = pl.nt, t
    cdef Py_ssize_t step = chunk_images(N, nt), nch = (N + step - 1) // step
    cdef Buffer wt = Buffer(max((cv.K + kb - 1) // kb * cv.R * kb, 1) * itemsize)
    cdef Buffer work = Buffer(nt * each * itemsize, True)
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        if itemsize == 4:
            pack_w_cols(<float*>w.ptr + w_off, cv, kb, <float*>wt.ptr)
        else:
            pack_w_cols(<double*>w.ptr + w_off, cv, kb, <double*>wt.ptr)
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                if itemsize == 4:
                    forward_rows(<float*>x.ptr + x_off, <float*>wt.ptr, <float*>bp, <float*>out.ptr,
                                 cv, c * step, min(N, (c + 1) * step), <float*>work.ptr + t * each,
                                 <float*>work.ptr + t * each + padsz, kb)
                else:
                    forward_rows(<double*>x.ptr + x_off, <double*>wt.ptr, <double*>bp,
                                 <double*>out.ptr, cv, c * step, min(N, (c + 1) * step),
                                 <double*>work.ptr + t * each, <double*>work.ptr + t * each + padsz,
                                 kb)
                c = mn_claim(&cl, t)
    mn_claims_free(&cl)


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias, Py_ssize_t b_off,
            Buffer out, tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
            tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize, bint relu=False):
    """out (N, K, OH, OW) = conv(x, w) + bias, with relu max(0, .) of it; x, w compact
    (bias may be None)."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    pl.cv.relu = relu
    check_sizes(pl, x, x_off, w, w_off, out, 0, itemsize, "conv2d")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, "conv2d", "bias")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t nr = pl.nr, kgp = round_up(cv.Kg, cv.fmr), N = cv.g.N, c
    cdef int nt = pl.nt, t
    cdef Py_ssize_t step = chunk_images(N, nt), nch = (N + step - 1) // step
    if N * cv.P == 0 or K == 0:
        return
    cdef Py_ssize_t padsz = pl.pad_items(), colsz = min(KC, max(cv.R, 1)) * nr
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    if cv.tab_mr:
        forward_by_rows(x, x_off, w, w_off, bp, out, pl, itemsize)
        return
    # two image copies (panels span images), the column panel with nr of slack
    # (pack_cols_cross), the output tile
    colsz += nr
    cdef Py_ssize_t each = 2 * padsz + colsz + kgp * nr
    cdef Buffer wp = Buffer(max(cv.G * kgp * cv.R, 1) * itemsize)
    cdef Buffer work = Buffer(nt * each * itemsize, True)
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        if itemsize == 4:
            pack_w(<float*>w.ptr + w_off, cv, <float*>wp.ptr)
        else:
            pack_w(<double*>w.ptr + w_off, cv, <double*>wp.ptr)
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                if itemsize == 4:
                    forward_images(<float*>x.ptr + x_off, <float*>wp.ptr, <float*>bp,
                                   <float*>out.ptr, cv, c * step, min(N, (c + 1) * step),
                                   <float*>work.ptr + t * each,
                                   <float*>work.ptr + t * each + 2 * padsz,
                                   <float*>work.ptr + t * each + 2 * padsz + colsz,
                                   pl.pmem.ptr + t * pl.pbytes, nr)
                else:
                    forward_images(<double*>x.ptr + x_off, <double*>wp.ptr, <double*>bp,
                                   <double*>out.ptr, cv, c * step, min(N, (c + 1) * step),
                                   <double*>work.ptr + t * each,
                                   <double*>work.ptr + t * each + 2 * padsz,
                                   <double*>work.ptr + t * each + 2 * padsz + colsz,
                                   pl.pmem.ptr + t * pl.pbytes, nr)
                c = mn_claim(&cl, t)
    mn_claims_free(&cl)


def weight_grad_rows_(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                      _Plan pl, int itemsize):
    """weight_grad() on the tap-major path (the pixel-major forward's geometry)."""
    check_sizes(pl, x, x_off, dw, 0, dy, dy_off, itemsize, "conv2d weight gradient")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t kb = cv.wg_nv * (pl.nr // 2), mr = cv.wg_mr, N = cv.g.N, c, r, k, kk, blk
    cdef Py_ssize_t rp = round_up(cv.R, mr), nblk = (cv.K + kb - 1) // kb
    cdef Py_ssize_t partsz = nblk * rp * kb, padsz = pl.pad_items()
    cdef Py_ssize_t each = padsz + round_up(cv.P * kb, pl.nr)
    cdef int nt = pl.nt, t
    cdef Py_ssize_t step = dw_chunk_images(N, nt, partsz * itemsize), i
    cdef Py_ssize_t nch = (N + step - 1) // step
    cdef Buffer part = Buffer(max(nch * partsz, 1) * itemsize)   # zeroed chunk by chunk
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize, True)
    cdef Buffer tabs = Buffer(max(rp, 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* toffp = <Py_ssize_t*>tabs.ptr
    # the taps in forward_rows' order (tap_tables): with tab_skip kernel row by kernel row,
    # so that a tile's taps share one or two kernel rows and skip the output rows on
    # which they read only padding (weight_grad_rows)
    for r in range(rp):
        toffp[r] = cv.tofr[r] if r < cv.R else cv.tofr[0]
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                # each chunk's partial zeroed by the thread that sums into it (in its
                # cache, in parallel: one memset of all of them was serial)
                memset(part.ptr + c * partsz * itemsize, 0, partsz * itemsize)
                if itemsize == 4:
                    weight_grad_rows(<float*>x.ptr + x_off, <float*>dy.ptr + dy_off,
                                     <float*>part.ptr + c * partsz, cv, toffp, c * step,
                                     min(N, (c + 1) * step), <float*>work.ptr + t * each,
                                     <float*>work.ptr + t * each + padsz, kb, rp)
                else:
                    weight_grad_rows(<double*>x.ptr + x_off, <double*>dy.ptr + dy_off,
                                     <double*>part.ptr + c * partsz, cv, toffp, c * step,
                                     min(N, (c + 1) * step), <double*>work.ptr + t * each,
                                     <double*>work.ptr + t * each + padsz, kb, rp)
                c = mn_claim(&cl, t)
        if itemsize == 4:
            add_partials(<float*>part.ptr, nch, partsz)
        else:
            add_partials(<double*>part.ptr, nch, partsz)
        for blk in range(nblk):
            for kk in range(min(kb, cv.K - blk * kb)):
                k = blk * kb + kk
                for r in range(cv.R):
                    i = (blk * rp + cv.place[r]) * kb + kk
                    if itemsize == 4:
                        (<float*>dw.ptr)[k * cv.R + r] = (<float*>part.ptr)[i]
                    else:
                        (<double*>dw.ptr)[k * cv.R + r] = (<double*>part.ptr)[i]
    mn_claims_free(&cl)


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
    cdef Py_ssize_t N = cv.g.N, c
    cdef int nt = pl.nt, t
    cdef Py_ssize_t partsz = cv.G * rp * kgn, padsz = pl.pad_items(), colsz = CHUNK * rp * nr
    cdef Py_ssize_t each = padsz + colsz + CHUNK * kgn * nr
    cdef Py_ssize_t step = dw_chunk_images(N, nt, partsz * itemsize)
    cdef Py_ssize_t nch = (N + step - 1) // step
    cdef Buffer part = Buffer(max(nch * partsz, 1) * itemsize)   # zeroed chunk by chunk
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize, True)
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                memset(part.ptr + c * partsz * itemsize, 0, partsz * itemsize)   # as above
                if itemsize == 4:
                    weight_grad_images(<float*>x.ptr + x_off, <float*>dy.ptr + dy_off,
                                       <float*>part.ptr + c * partsz, cv, c * step,
                                       min(N, (c + 1) * step), <float*>work.ptr + t * each,
                                       <float*>work.ptr + t * each + padsz,
                                       <float*>work.ptr + t * each + padsz + colsz,
                                       pl.pmem.ptr + t * pl.pbytes, nr)
                else:
                    weight_grad_images(<double*>x.ptr + x_off, <double*>dy.ptr + dy_off,
                                       <double*>part.ptr + c * partsz, cv, c * step,
                                       min(N, (c + 1) * step), <double*>work.ptr + t * each,
                                       <double*>work.ptr + t * each + padsz,
                                       <double*>work.ptr + t * each + padsz + colsz,
                                       pl.pmem.ptr + t * pl.pbytes, nr)
                c = mn_claim(&cl, t)
        if itemsize == 4:
            sum_partials(<float*>part.ptr, <float*>dw.ptr, cv, nch, nr)
        else:
            sum_partials(<double*>part.ptr, <double*>dw.ptr, cv, nch, nr)
    mn_claims_free(&cl)


def input_grad(Buffer dy, Py_ssize_t dy_off, Buffer w, Py_ssize_t w_off, Buffer dx,
               tuple xshape, Py_ssize_t K, Py_ssize_t groups, tuple kernel, tuple stride,
               tuple pad, tuple dil, Py_ssize_t OH, Py_ssize_t OW, int itemsize):
    """dx (N, C, H, W) from the output grad dy (N, K, OH, OW) and weight w, compact."""
    cdef _Plan pl = _Plan(xshape, K, groups, kernel, stride, pad, dil, OH, OW, itemsize)
    check_sizes(pl, dx, 0, w, w_off, dy, dy_off, itemsize, "conv2d input gradient")
    cdef Conv* cv = &pl.cv
    cdef Py_ssize_t nr = pl.nr, rp = round_up(cv.R, MR), N = cv.g.N, c
    cdef int nt = pl.nt, t
    cdef Py_ssize_t step = chunk_images(N, nt), nch = (N + step - 1) // step
    cdef Py_ssize_t padsz = pl.pad_items(), bsz = max(cv.Kg, 1) * nr
    cdef Py_ssize_t each = padsz + bsz + rp * nr
    cdef Buffer wtp = Buffer(max(cv.G * rp * cv.Kg, 1) * itemsize)
    cdef Buffer work = Buffer(max(nt * each, 1) * itemsize)
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        if itemsize == 4:
            pack_wt(<float*>w.ptr + w_off, cv, <float*>wtp.ptr)
        else:
            pack_wt(<double*>w.ptr + w_off, cv, <double*>wtp.ptr)
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                if itemsize == 4:
                    input_grad_images(<float*>dy.ptr + dy_off, <float*>wtp.ptr, <float*>dx.ptr, cv,
                                      c * step, min(N, (c + 1) * step), <float*>work.ptr + t * each,
                                      <float*>work.ptr + t * each + padsz,
                                      <float*>work.ptr + t * each + padsz + bsz,
                                      pl.pmem.ptr + t * pl.pbytes, nr)
                else:
                    input_grad_images(<double*>dy.ptr + dy_off, <double*>wtp.ptr, <double*>dx.ptr,
                                      cv, c * step, min(N, (c + 1) * step),
                                      <double*>work.ptr + t * each,
                                      <double*>work.ptr + t * each + padsz,
                                      <double*>work.ptr + t * each + padsz + bsz,
                                      pl.pmem.ptr + t * pl.pbytes, nr)
                c = mn_claim(&cl, t)
    mn_claims_free(&cl)


def bias_grad(Buffer dy, Py_ssize_t dy_off, Buffer db, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
              int itemsize):
    """db[k] = sum of dy (N, K, P) over n and p."""
    check_itemsize(itemsize, "conv2d bias gradient")
    need(dy, dy_off, (N, K, P), itemsize, "conv2d bias gradient", "output gradient")
    need(db, 0, (K,), itemsize, "conv2d bias gradient", "bias gradient")
    cdef int nt = threads_for(N * K * P)
    cdef Py_ssize_t blk = channel_block(K, P, nt, SUM_BLOCK_MAX), b, nb = (K + blk - 1) // blk
    with nogil:
        for b in prange(nb, num_threads=nt, schedule='static'):
            if itemsize == 4:
                channel_sums(<float*>dy.ptr + dy_off, <float*>db.ptr, N, K, P, b * blk,
                             min(K, (b + 1) * blk))
            else:
                channel_sums(<double*>dy.ptr + dy_off, <double*>db.ptr, N, K, P, b * blk,
                             min(K, (b + 1) * blk))
