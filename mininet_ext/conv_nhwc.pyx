# cython: boundscheck=False, wraparound=False, cdivision=True
"""Channels-last (NHWC) convolution as an indirect GEMM: no layout copy, no column matrix.

Layouts: input x (N, H, W, C), weight w (kh, kw, C, K), output y (N, OH, OW, K), all
compact from their offsets. Seen so, the weight is a (kh*kw*C) x K matrix whose rows for
tap t = i*kw + j are t*C .. t*C + C, and output pixel m's row of the im2col matrix is, tap
by tap, a run of C contiguous input values (an input pixel's channels). A 1x1 stride-1
convolution is the plain GEMM (N*H*W x C) @ (C x K), and y is NHWC as it comes out.

- forward: tiles of MR output pixels x NR output channels (_conv_nhwc.h). Each pixel
  reads each tap's C values in place through its own pointer (a shared zero run on
  padding), so the pixels of a tile may span image rows and images: a 2x2 or 1x1 map
  fills whole tiles. A float32 x may be NCHW as it stands (x_nchw): each tap's C values
  are then a map apart, read by the strided kernel, and no relayout runs. Pixels go by border classes (_border_classes): those whose taps
  inside the image are the same share tiles, and a tile runs only those taps, so no
  padding is multiplied (a 4x4 map under a padded 3x3 filter: 16% of the work; 2x2: 31%)
  and no run crosses the image's side (no copies).
- input grad: the same kernel over input pixels, each reading dy (K values per output
  pixel) at the taps that reach it, with the filters as (kh*kw*K) x C. Pixels are taken
  stride phase by phase (h % sh, w % sw), so every pixel of a tile has the same taps and
  no tap multiplies a hole of the strided output. Each dx pixel is one tile row: no
  scatter, no overlap between threads.
- weight grad: per live tap, dW_t (C x K) += X_t^T @ dy over chunks of output pixels: the
  tap's C input values per pixel and dy's K values are copied (contiguous runs) into the
  project's packed panels and multiplied by the dispatched micro-kernel (mn_kernel, _isa.h).
  Threads own pixel ranges and sum private partials at the end.

Stride, padding and dilation per axis; one group; float32 and float64.
relayout: the blocked transposes NCHW <-> NHWC and (K, C, kh, kw) <-> (kh, kw, C, K) that
CPUDevice's NCHW convolutions use around these kernels where they run them (_nhwc_wins).
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange, threadid
from cython cimport floating
import functools
from libc.string cimport memset, memcpy
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for, mn_claims, mn_claim, claims_start, mn_claims_free
from mininet_ext._check cimport check_itemsize, need

from mininet_ext import _isa

cdef extern from "_conv_nhwc.h" nogil:
    int mn_nh_mr()
    int mn_nh_nr(int itemsize)
    void mn_nh_kernel_f32(Py_ssize_t nseg, Py_ssize_t len, const float** P,
                          const Py_ssize_t* boff, const float* B, float* C)
    void mn_nh_kernel_f64(Py_ssize_t nseg, Py_ssize_t len, const double** P,
                          const Py_ssize_t* boff, const double* B, double* C)
    void mn_nh_kernel_f32_s(Py_ssize_t nseg, Py_ssize_t len, const float** P,
                            const Py_ssize_t* boff, const float* B, float* C, Py_ssize_t cs)
    int mn_rl_width(int itemsize)
    void mn_rl_block4(const unsigned int* src, unsigned int* dst, Py_ssize_t ni,
                      Py_ssize_t nj, Py_ssize_t sj, Py_ssize_t di)
    void mn_rl_block8(const unsigned long long* src, unsigned long long* dst, Py_ssize_t ni,
                      Py_ssize_t nj, Py_ssize_t sj, Py_ssize_t di)
    void mn_rl_runs4(const unsigned int* src, unsigned int* dst, Py_ssize_t b0,
                     Py_ssize_t b1, Py_ssize_t I, Py_ssize_t sb, Py_ssize_t sj)

cdef extern from "_isa.h":
    int mn_isa_bind(const void* table) except -1

cdef extern from "_isa.h" nogil:
    int mn_gemm_mr()
    int mn_gemm_mr_short()
    int mn_gemm_nr(int itemsize)
    void mn_kernel_f32(Py_ssize_t kc, const float* A, const float* B, float* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_f64(Py_ssize_t kc, const double* A, const double* B, double* C,
                       Py_ssize_t ldc, int accumulate)
    void mn_kernel_short_f32(Py_ssize_t kc, const float* A, const float* B, float* C,
                             Py_ssize_t ldc, int accumulate)
    void mn_kernel_short_f64(Py_ssize_t kc, const double* A, const double* B, double* C,
                             Py_ssize_t ldc, int accumulate)

mn_isa_bind(PyCapsule_GetPointer(_isa.KERNELS, "mininet_ext.kernels"))
cdef Py_ssize_t MR = mn_nh_mr()          # indirect tile rows (pixels)
cdef Py_ssize_t GMR = mn_gemm_mr()       # weight grad: the dispatched GEMM tile rows
cdef Py_ssize_t GMR_SHORT = mn_gemm_mr_short()
cdef Py_ssize_t MC = 256                 # weight grad: output pixels per packed chunk
cdef Py_ssize_t DW_MIN_SHARE = 64        # weight grad: output pixels a thread takes at least
cdef Py_ssize_t GROUP_ITEMS = 16384      # forward/dx: input values a group of tiles reads
cdef int CHUNKS_PER_THREAD = 4           # forward/dx: chunks of tiles handed out a thread
# Runs of whole kernel rows (kw*C values) or of single taps (C values)? Rows make longer
# inner loops but (weight grad) copy the runs that cross the image's sides. Forward, rows
# against taps (2 threads, Zen 4, medians of 9), when its runs were copied too: C = 1..16
# 0.54-0.91x the time, C = 32 at 16x16 0.77x but at 4x4 1.33x, C = 64 at 8x8 1.51x. Since
# the border classes (no copies) a tie at 1 thread: 0.98-1.02x for C = 16..64. Weight
# grad: rows 0.22-0.72x up to C = 32, 0.95-1.03x at C = 64.
cdef bint fwd_rows(Geo* g):
    return g.C <= 16 or (g.C <= 32 and g.OW >= 8)


cdef bint dw_rows(Geo* g):
    return g.C < 64


cdef struct Geo:
    Py_ssize_t N, H, W, C, K, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW
    Py_ssize_t cs   # the forward's input: 1 (NHWC), or H*W (NCHW, float32: x_nchw)


cdef struct Seg:
    # one run of a tile's rows: kernel row i, columns j .. j + nj (nj > 1: dilation 1, so
    # the nj*C input values are contiguous); its first row of the packed B: boffs[s]
    Py_ssize_t i, j, nj


cdef struct Phase:
    # input grad: pixels h = a + sh*u, w = b + sw*v (u < hq, v < wq) of every image;
    # forward: a border class, output pixels oh = a + u, ow = b + v whose taps inside the
    # image are the same. The taps (runs of ln values): segs[s0 .. s0 + ns]; tiles b0 ..
    # b0 + ceil(N*hq*wq / MR)
    Py_ssize_t a, b, hq, wq, s0, ns, b0, ln


cdef inline Py_ssize_t round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


def tile_sizes():
    """(MR, NR float32, NR float64) of the indirect tile, and the weight grad's GEMM MR."""
    return MR, mn_nh_nr(4), mn_nh_nr(8), GMR


# geometry and checks ------------------------------------------------------------------------
cdef Geo make_geo(tuple xshape, tuple wshape, tuple stride, tuple pad, tuple dil,
                  str kernel) except *:
    cdef Geo g
    if len(xshape) != 4 or len(wshape) != 4:
        raise ValueError(f"{kernel}: input {xshape} must be (N, H, W, C) and weight {wshape} "
                         f"(kh, kw, C, K)")
    g.N, g.H, g.W, g.C = xshape
    g.kh, g.kw = wshape[0], wshape[1]
    g.K = wshape[3]
    if wshape[2] != g.C:
        raise ValueError(f"{kernel}: input has {g.C} channels (N, H, W, C = {xshape}) but the "
                         f"weight (kh, kw, C, K = {wshape}) expects {wshape[2]}")
    g.sh, g.sw = stride
    g.ph, g.pw = pad
    g.dh, g.dw = dil
    if min(g.N, g.H, g.W, g.C, g.K) < 0:
        raise ValueError(f"{kernel}: negative size in input {xshape} or weight {wshape}")
    if g.kh < 1 or g.kw < 1:
        raise ValueError(f"{kernel}: kernel {g.kh}x{g.kw} must be at least 1x1")
    if min(g.sh, g.sw, g.dh, g.dw) < 1 or min(g.ph, g.pw) < 0:
        raise ValueError(f"{kernel}: stride {stride} and dilation {dil} must be >= 1, "
                         f"padding {pad} >= 0")
    g.cs = 1
    g.OH = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) // g.sh + 1
    g.OW = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) // g.sw + 1
    if g.H + 2 * g.ph < g.dh * (g.kh - 1) + 1 or g.W + 2 * g.pw < g.dw * (g.kw - 1) + 1:
        raise ValueError(f"{kernel}: kernel {g.kh}x{g.kw} (dilation {dil}) is larger than the "
                         f"padded input {g.H + 2 * g.ph}x{g.W + 2 * g.pw}")
    return g


def out_shape(tuple xshape, tuple wshape, tuple stride, tuple pad, tuple dil):
    """(N, OH, OW, K) of the NHWC convolution of x (N, H, W, C) by w (kh, kw, C, K)."""
    cdef Geo g = make_geo(xshape, wshape, stride, pad, dil, "conv2d_nhwc")
    return (g.N, g.OH, g.OW, g.K)


cdef int check_buffers(Geo* g, Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off,
                       Buffer y, Py_ssize_t y_off, int itemsize, str kernel) except -1:
    """x (N, H, W, C), w (kh, kw, C, K), y (N, OH, OW, K) fit their buffers (for the
    gradients: dx is x, dw is w, dy is y)."""
    check_itemsize(itemsize, kernel)
    need(x, x_off, (g.N, g.H, g.W, g.C), itemsize, kernel, "input (N, H, W, C)")
    need(w, w_off, (g.kh, g.kw, g.C, g.K), itemsize, kernel, "weight (kh, kw, C, K)")
    need(y, y_off, (g.N, g.OH, g.OW, g.K), itemsize, kernel, "output (N, OH, OW, K)")
    return 0


def _reads_inside(Py_ssize_t tap, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                  Py_ssize_t n_out):
    """Some output o < n_out reads inside the input at o*stride - pad + tap."""
    return any(0 <= o * stride - pad + tap < size for o in range(n_out))


cdef class Taps:
    """A list of taps (Segs) and, beside it, each one's first row in the packed B."""
    cdef Buffer sbuf, bbuf
    cdef Seg* segs
    cdef Py_ssize_t* boffs
    cdef Py_ssize_t n

    cdef Py_ssize_t nj

    def __init__(self, list taps, Py_ssize_t rows_per_tap, Py_ssize_t kw, Py_ssize_t nj=1):
        # taps: (i, j) pairs of runs nj taps long, or (i, j, nj) triples
        self.n, self.nj = len(taps), nj
        self.sbuf = Buffer(max(self.n, 1) * sizeof(Seg))
        self.bbuf = Buffer(max(self.n, 1) * sizeof(Py_ssize_t))
        self.segs, self.boffs = <Seg*>self.sbuf.ptr, <Py_ssize_t*>self.bbuf.ptr
        for s, tap in enumerate(taps):
            self.segs[s].i, self.segs[s].j = tap[0], tap[1]
            self.segs[s].nj = tap[2] if len(tap) > 2 else nj
            self.boffs[s] = (tap[0] * kw + tap[1]) * rows_per_tap


cdef Taps live_taps(Geo* g, Py_ssize_t rows_per_tap, object by_rows):
    """The taps some output pixel reads inside the image (the others read only padding):
    one Seg per tap, or with by_rows one per kernel row (kw taps, kw*C contiguous values),
    when every column is live and the dilation is 1."""
    rows = [i for i in range(g.kh) if _reads_inside(i * g.dh, g.sh, g.ph, g.H, g.OH)]
    cols = [j for j in range(g.kw) if _reads_inside(j * g.dw, g.sw, g.pw, g.W, g.OW)]
    if by_rows and g.dw == 1 and g.kw > 1 and len(cols) == g.kw:
        return Taps([(i, 0) for i in rows], rows_per_tap, g.kw, g.kw)
    return Taps([(i, j) for i in rows for j in cols], rows_per_tap, g.kw)


# the indirect tiles ---------------------------------------------------------------------------
cdef inline void nh_kernel(Py_ssize_t nseg, Py_ssize_t len, const floating** P,
                           const Py_ssize_t* boff, const floating* B, floating* C,
                           Py_ssize_t cs) noexcept nogil:
    if floating is float:
        if cs != 1:
            mn_nh_kernel_f32_s(nseg, len, P, boff, B, C, cs)
        else:
            mn_nh_kernel_f32(nseg, len, P, boff, B, C)
    else:
        mn_nh_kernel_f64(nseg, len, P, boff, B, C)


cdef const floating* spill_run(const floating* x, Geo* g, Py_ssize_t n, Py_ssize_t h,
                               Py_ssize_t w, Py_ssize_t nj, floating* d) noexcept nogil:
    """d = the nj*C values of input row h from column w on, zeros outside the image."""
    cdef Py_ssize_t jj
    for jj in range(nj):
        if 0 <= w + jj < g.W:
            memcpy(d + jj * g.C, x + ((n * g.H + h) * g.W + w + jj) * g.C, g.C * sizeof(floating))
        else:
            memset(d + jj * g.C, 0, g.C * sizeof(floating))
    return d


cdef void fwd_pointers(const floating* x, const floating* zero, Geo* g, Phase* ph,
                       const Seg* segs, Py_ssize_t q0, const floating** P,
                       Py_ssize_t* rows) noexcept nogil:
    """Tile of border class ph's output pixels q0 .. q0 + MR: per run s and pixel i, where
    its run of input values starts (inside the image by the class's construction). The
    pixel steps along the class's columns, rows, images: three divisions a tile, not a
    pixel (they were a fifth of a small layer's forward)."""
    cdef Py_ssize_t i, s, q, cnt = g.N * ph.hq * ph.wq
    cdef Py_ssize_t n = q0 // (ph.hq * ph.wq), u = (q0 // ph.wq) % ph.hq, v = q0 % ph.wq
    cdef Py_ssize_t off[64]   # a run's offset from the pixel's corner (ns <= kh*kw <= 64)
    cdef const Seg* sg = segs + ph.s0
    cdef const floating* corner
    cdef bint near = ph.ns <= 64
    # NHWC: a pixel's C values at (pixel) * C; NCHW (cs = H*W): its first channel's value
    # at the pixel, image n at n * C * H * W (pc: a pixel's step)
    cdef Py_ssize_t pc = g.C if g.cs == 1 else 1
    cdef Py_ssize_t img = g.H * g.W * g.C
    if near:
        for s in range(ph.ns):
            off[s] = (sg[s].i * g.dh * g.W + sg[s].j * g.dw) * pc
    for i in range(MR):
        q = q0 + i
        if q >= cnt:
            rows[i] = -1
            for s in range(ph.ns):
                P[s * MR + i] = zero
            continue
        rows[i] = (n * g.OH + ph.a + u) * g.OW + ph.b + v
        corner = x + n * img + (((ph.a + u) * g.sh - g.ph) * g.W + (ph.b + v) * g.sw
                                - g.pw) * pc
        for s in range(ph.ns):
            if near:
                P[s * MR + i] = corner + off[s]
            else:
                P[s * MR + i] = corner + (sg[s].i * g.dh * g.W + sg[s].j * g.dw) * pc
        v += 1
        if v == ph.wq:
            v = 0
            u += 1
            if u == ph.hq:
                u = 0
                n += 1


cdef void dx_pointers(const floating* dy, const floating* zero, Geo* g, Phase* ph,
                      const Seg* segs, Py_ssize_t q0, const floating** P,
                      Py_ssize_t* rows) noexcept nogil:
    """Tile of phase ph's input pixels q0 .. q0 + MR: per tap and pixel, the output pixel
    (K values of dy) that the tap connects it to."""
    cdef Py_ssize_t i, s, q, n, h, w, oh, ow, hw = ph.hq * ph.wq, cnt = g.N * ph.hq * ph.wq
    for i in range(MR):
        q = q0 + i
        rows[i] = -1
        if q < cnt:
            n = q // hw
            h = ph.a + g.sh * ((q // ph.wq) % ph.hq)
            w = ph.b + g.sw * (q % ph.wq)
            rows[i] = (n * g.H + h) * g.W + w
        for s in range(ph.ns):
            P[s * MR + i] = zero
            if q < cnt:
                # exact divisions: the phase holds only the taps with matching remainders
                oh = (h + g.ph - segs[ph.s0 + s].i * g.dh) // g.sh
                ow = (w + g.pw - segs[ph.s0 + s].j * g.dw) // g.sw
                if 0 <= oh < g.OH and 0 <= ow < g.OW:
                    P[s * MR + i] = dy + ((n * g.OH + oh) * g.OW + ow) * g.K


cdef void write_tile(const floating* tile, Py_ssize_t nr, const Py_ssize_t* rows, floating* out,
                     Py_ssize_t ld, Py_ssize_t c0, Py_ssize_t cols, const floating* bias,
                     bint relu) noexcept nogil:
    """out[rows[i], c0 + j] = tile[i, j] (+ bias[c0 + j], max(0, .) with relu), j < cols."""
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* o
    for i in range(MR):
        if rows[i] < 0:
            continue
        o = out + rows[i] * ld + c0
        if bias == NULL and not relu:
            memcpy(o, tile + i * nr, cols * sizeof(floating))
            continue
        for j in range(cols):
            v = tile[i * nr + j]
            if bias != NULL:
                v = v + bias[c0 + j]
            if relu and not v >= 0:   # NaN stays NaN, as relu
                v = 0 if v < 0 else v
            o[j] = v


cdef void run_tiles(const floating* src, const floating* zero, const floating* bp, Geo* g,
                    const Seg* segs, const Py_ssize_t* boffs, Py_ssize_t nseg, Py_ssize_t run,
                    Phase* phases, Py_ssize_t nph, Py_ssize_t t0, Py_ssize_t t1,
                    Py_ssize_t group, const floating** P, Py_ssize_t* rows, floating* tile,
                    floating* spill, floating* out, const floating* bias, bint relu,
                    bint dx) noexcept nogil:
    """One thread's tiles t0 .. t1: forward (dx False: output pixels, C values a tap, K
    columns) or input grad (dx: phase by phase input pixels, K values a tap, C columns).
    Tiles go by groups whose pointer tables are built once and reused for every column
    panel, so a panel of B is read from cache by the whole group."""
    cdef Py_ssize_t nr = mn_nh_nr(sizeof(floating)), cols = g.C if dx else g.K
    cdef Py_ssize_t npan = (cols + nr - 1) // nr
    cdef Py_ssize_t bsize = g.kh * g.kw * (g.K if dx else g.C) * nr, width = nseg * MR
    cdef Py_ssize_t ga = t0, gb, t, jp, p = 0, p0 = 0
    cdef Phase* ph = NULL
    while ga < t1:
        gb = min(ga + group, t1)
        # the phase (dx) or border class (forward) of tile ga; tiles go up, so do they
        while p0 + 1 < nph and phases[p0 + 1].b0 <= ga:
            p0 += 1
        p = p0
        for t in range(ga, gb):
            while p + 1 < nph and phases[p + 1].b0 <= t:
                p += 1
            ph = &phases[p]
            if dx:
                dx_pointers(src, zero, g, ph, segs, (t - ph.b0) * MR, P + (t - ga) * width,
                            rows + (t - ga) * MR)
            else:
                fwd_pointers(src, zero, g, ph, segs, (t - ph.b0) * MR, P + (t - ga) * width,
                             rows + (t - ga) * MR)
        for jp in range(npan):
            p = p0
            for t in range(ga, gb):
                while p + 1 < nph and phases[p + 1].b0 <= t:
                    p += 1
                nh_kernel(phases[p].ns, phases[p].ln, P + (t - ga) * width,
                          boffs + phases[p].s0, bp + jp * bsize, tile, g.cs)
                write_tile(tile, nr, rows + (t - ga) * MR, out, cols, jp * nr,
                           min(nr, cols - jp * nr), bias, relu)
        ga = gb


# weight packing (once per call) ---------------------------------------------------------------
cdef void pack_w_forward(const floating* w, Geo* g, floating* bp, Py_ssize_t st,
                         Py_ssize_t sc, Py_ssize_t sk, Py_ssize_t jp0,
                         Py_ssize_t jp1) noexcept nogil:
    """bp[jp][t*C + c][j] = w[t, c, k] with k = jp*NR + j, read at t*st + c*sc + k*sk: the
    (kh*kw*C) x K weight cut into NR-wide column panels, zero past K; panels jp0..jp1
    (the threads share them: packed by the calling thread alone, with a division a row,
    ResNet9's 64x32x4x4 -> 64 /2 forward took 108-116 us a call, now 85-89)."""
    cdef Py_ssize_t nr = mn_nh_nr(sizeof(floating)), R = g.kh * g.kw * g.C
    cdef Py_ssize_t jp, r, j, k, t, c, at
    cdef floating* dst
    for jp in range(jp0, jp1):
        r = 0
        for t in range(g.kh * g.kw):
            for c in range(g.C):
                at = t * st + c * sc
                dst = bp + (jp * R + r) * nr
                for j in range(nr):
                    k = jp * nr + j
                    dst[j] = w[at + k * sk] if k < g.K else 0
                r += 1


cdef void pack_w_input_grad(const floating* w, Geo* g, floating* bp, Py_ssize_t st,
                            Py_ssize_t sc, Py_ssize_t sk, Py_ssize_t jp0,
                            Py_ssize_t jp1) noexcept nogil:
    """bp[jp][t*K + k][j] = w[t, c, k] with c = jp*NR + j (strides as pack_w_forward's):
    per tap the transposed filter (K x C), in NR-wide column panels over C, zero past C;
    panels jp0..jp1."""
    cdef Py_ssize_t nr = mn_nh_nr(sizeof(floating)), T = g.kh * g.kw
    cdef Py_ssize_t jp, t, k, j, c
    for jp in range(jp0, jp1):
        for t in range(T):
            for k in range(g.K):
                for j in range(nr):
                    c = jp * nr + j
                    bp[((jp * T + t) * g.K + k) * nr + j] = \
                        w[t * st + c * sc + k * sk] if c < g.C else 0


cdef tuple w_strides(Geo* g, bint kcrs):
    """(tap, channel, filter) strides of the weight: (kh, kw, C, K), or PyTorch's
    (K, C, kh, kw) read in place (kcrs: no relayout pass before the kernel)."""
    cdef Py_ssize_t T = g.kh * g.kw
    if kcrs:
        return (1, T, g.C * T)
    return (g.C * g.K, g.K, 1)


# weight gradient ----------------------------------------------------------------------------
cdef inline void gemm_tile(Py_ssize_t mr, Py_ssize_t kc, const floating* A, const floating* B,
                           floating* C, Py_ssize_t ldc) noexcept nogil:
    """C[mr x NR] += A_panel^T B_panel (the dispatched kernels of _isa.h)."""
    if floating is float:
        if mr == GMR:
            mn_kernel_f32(kc, A, B, C, ldc, 1)
        else:
            mn_kernel_short_f32(kc, A, B, C, ldc, 1)
    else:
        if mr == GMR:
            mn_kernel_f64(kc, A, B, C, ldc, 1)
        else:
            mn_kernel_short_f64(kc, A, B, C, ldc, 1)


cdef inline void copy_run(floating* d, const floating* s, Py_ssize_t n,
                          Py_ssize_t width) noexcept nogil:
    """d[:width] = s[:n] then zeros (s NULL: all zeros)."""
    if s != NULL and n > 0:
        memcpy(d, s, n * sizeof(floating))
    else:
        n = 0
    if width > n:
        memset(d + n, 0, (width - n) * sizeof(floating))


cdef void pack_dy_rows(const floating* dy, Py_ssize_t m0, Py_ssize_t cnt, Py_ssize_t K,
                       Py_ssize_t nr, Py_ssize_t npan, floating* dyp) noexcept nogil:
    """dyp[jp][m][j] = dy[m0 + m, jp*nr + j] (zero past K): packed B panels."""
    cdef Py_ssize_t m, jp
    for m in range(cnt):
        for jp in range(npan):
            copy_run(dyp + (jp * MC + m) * nr, dy + (m0 + m) * K + jp * nr,
                     min(nr, K - jp * nr), nr)


cdef void pack_tap_rows(const floating* x, Geo* g, const Seg* sg, Py_ssize_t m0,
                        Py_ssize_t cnt, Py_ssize_t mr, Py_ssize_t ncb, floating* xp,
                        floating* spill) noexcept nogil:
    """xp[cb][m][i] = value cb*mr + i of run sg (nj*C input values) for output pixel
    m0 + m, zero on padding and past the run: packed A panels, copied from contiguous
    runs (one that crosses the image's side goes through spill first)."""
    cdef Py_ssize_t m, cb, n, oh, ow, h, w, p, run = sg.nj * g.C
    cdef const floating* src
    cdef const floating* part
    for m in range(cnt):
        p = m0 + m
        n = p // (g.OH * g.OW)
        oh = (p // g.OW) % g.OH
        ow = p % g.OW
        h = oh * g.sh - g.ph + sg.i * g.dh
        w = ow * g.sw - g.pw + sg.j * g.dw
        src = NULL
        if h < 0 or h >= g.H or w + (sg.nj - 1) * g.dw < 0 or w >= g.W:
            src = NULL
        elif w >= 0 and w + (sg.nj - 1) * g.dw < g.W:
            src = x + ((n * g.H + h) * g.W + w) * g.C
        else:   # nj > 1 (dilation 1)
            src = spill_run(x, g, n, h, w, sg.nj, spill)
        for cb in range(ncb):
            part = NULL
            if src != NULL:
                part = src + cb * mr
            copy_run(xp + (cb * MC + m) * mr, part, min(mr, run - cb * mr), mr)


cdef void weight_grad_rows(const floating* x, const floating* dy, floating* part, Geo* g,
                           const Seg* segs, Py_ssize_t nseg, Py_ssize_t m0, Py_ssize_t m1,
                           Py_ssize_t mr, Py_ssize_t cp, Py_ssize_t kp, floating* xp,
                           floating* dyp, floating* spill) noexcept nogil:
    """part[s][c][k] += sum over output pixels m0 .. m1 of x(run s, value c) * dy[m, k]."""
    cdef Py_ssize_t nr = mn_gemm_nr(sizeof(floating)), ncb = cp // mr, npan = kp // nr
    cdef Py_ssize_t c0 = m0, cnt, s, cb, jp
    while c0 < m1:
        cnt = min(MC, m1 - c0)
        pack_dy_rows(dy, c0, cnt, g.K, nr, npan, dyp)
        for s in range(nseg):
            pack_tap_rows(x, g, &segs[s], c0, cnt, mr, ncb, xp, spill)
            for cb in range(ncb):
                for jp in range(npan):
                    gemm_tile(mr, cnt, xp + cb * MC * mr, dyp + jp * MC * nr,
                              part + (s * cp + cb * mr) * kp + jp * nr, kp)
        c0 += cnt


cdef void sum_partials(const floating* part, floating* dw, Geo* g, const Seg* segs,
                       Py_ssize_t nseg, Py_ssize_t cp, Py_ssize_t kp, int nt) noexcept nogil:
    """dw[run s, value c, k] = sum over threads of part[t][s][c][k] (dw zeroed beforehand)."""
    cdef Py_ssize_t psize = nseg * cp * kp, s, c, k, base
    cdef int t
    cdef floating v
    for s in range(nseg):
        base = (segs[s].i * g.kw + segs[s].j) * g.C
        for c in range(segs[s].nj * g.C):
            for k in range(g.K):
                v = 0
                for t in range(nt):
                    v = v + part[t * psize + (s * cp + c) * kp + k]
                dw[(base + c) * g.K + k] = v


# Python entry points ----------------------------------------------------------------------------
cdef Py_ssize_t lined(Py_ssize_t nbytes):
    """Round a per-thread scratch size to whole cache lines (keeps vectors aligned)."""
    return round_up(max(nbytes, 1), 64)


cdef int check_bias(Buffer bias, Py_ssize_t b_off, Geo* g, int itemsize) except -1:
    if bias is not None:
        need(bias, b_off, (g.K,), itemsize, "conv2d_nhwc", "bias (K,)")
    return 0


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
            Py_ssize_t b_off, Buffer out, Py_ssize_t out_off, tuple xshape, tuple wshape,
            tuple stride, tuple pad, tuple dil, int itemsize, bint relu=False, by_rows=None,
            bint w_kcrs=False, bint x_nchw=False):
    """out (N, OH, OW, K) = conv(x (N, H, W, C), w (kh, kw, C, K)) + bias, max(0, .) of it
    with relu; compact buffers from their offsets (bias may be None). by_rows: runs of
    whole kernel rows (True), of single taps (False), or chosen by C (None). w_kcrs: w's
    buffer holds (K, C, kh, kw) (wshape still names (kh, kw, C, K)). x_nchw (float32):
    x's buffer holds (N, C, H, W) (xshape still names (N, H, W, C)); runs are single taps,
    C values a map apart."""
    cdef Geo g = make_geo(xshape, wshape, stride, pad, dil, "conv2d_nhwc")
    check_buffers(&g, x, x_off, w, w_off, out, out_off, itemsize, "conv2d_nhwc")
    check_bias(bias, b_off, &g, itemsize)
    if x_nchw and itemsize != 4:
        raise ValueError(f"conv2d_nhwc: an NCHW input (x_nchw) is float32 only (itemsize 4), "
                         f"got itemsize {itemsize}")
    cdef Py_ssize_t M = g.N * g.OH * g.OW
    if M == 0 or g.K == 0:
        return
    if x_nchw:
        g.cs = g.H * g.W
        by_rows = False
    rows = fwd_rows(&g) if by_rows is None else bool(by_rows)
    taps, phases, nph, ntiles, width, ln = _border_classes(
        (g.N, g.H, g.W, g.C, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw), rows)
    return run(x, x_off, w, w_off, bias, b_off, out, out_off, &g, taps, phases, nph,
               ntiles, width, ln, itemsize, relu, False, w_strides(&g, w_kcrs))


def _live_ranges(Py_ssize_t n_out, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d,
                 Py_ssize_t size):
    """One axis's output positions in runs (first, count, first tap, end tap) whose taps
    inside the input, i*d + o*s - p in [0, size), are the same range of i."""
    out = []
    for o in range(n_out):
        base = o * s - p
        lo = min(k, max(0, (-base + d - 1) // d))
        hi = max(lo, min(k, (size - base + d - 1) // d))
        if out and out[len(out) - 1][2:] == [lo, hi]:   # (wraparound is off)
            out[len(out) - 1][1] += 1
        else:
            out.append([o, 1, lo, hi])
    return out


@functools.lru_cache(maxsize=256)   # a model runs the same few layers every step
def _border_classes(tuple geo, bint by_rows):
    """The forward's output pixels in border classes: pixels whose taps inside the image
    are the same, so no tile multiplies padding and no run crosses the image's side. Per
    class its taps (single taps, or with by_rows runs of a kernel row's live taps, kw*C
    contiguous values at dilation 1), and its tiles. Returns (Taps, Phase buffer, classes,
    tiles, the most runs of a class, the longest run)."""
    N, H, W, C, kh, kw, sh, sw, ph, pw, dh, dw = geo
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = by_rows and dw == 1 and kw > 1
    taps, plist = [], []
    ntiles = 0
    for a, hq, i0, i1 in _live_ranges(OH, kh, sh, ph, dh, H):
        for b, wq, j0, j1 in _live_ranges(OW, kw, sw, pw, dw, W):
            if rows:
                runs = [(i, j0, j1 - j0) for i in range(i0, i1)] if j1 > j0 else []
                ln = (j1 - j0) * C
            else:
                runs = [(i, j, 1) for i in range(i0, i1) for j in range(j0, j1)]
                ln = C
            plist.append((a, b, hq, wq, len(taps), len(runs), ntiles, ln))
            taps += runs
            ntiles += (N * hq * wq + MR - 1) // MR
    cdef Buffer phases = Buffer(len(plist) * sizeof(Phase))
    cdef Phase* php = <Phase*>phases.ptr
    for q, (a, b, hq, wq, s0, ns, b0, ln) in enumerate(plist):
        php[q].a, php[q].b, php[q].hq, php[q].wq = a, b, hq, wq
        php[q].s0, php[q].ns, php[q].b0, php[q].ln = s0, ns, b0, ln
    return (Taps(taps, C, kw), phases, len(plist), ntiles, max(1, max(c[5] for c in plist)),
            max(1, max(c[7] for c in plist)))


cdef void split_by_work(const Phase* php, Py_ssize_t nph, Py_ssize_t ntiles, int nt,
                        Py_ssize_t* cut) noexcept:
    """cut[t] .. cut[t + 1]: thread t's tiles, of about equal work. The classes' tiles
    differ (a 4x4 map's corner class runs 2 of 3 kernel rows over 2 of 3 columns): an
    even count gave one of 2 threads 19% more than half the work."""
    cdef Py_ssize_t p, k, t = 1, nb
    cdef double total = 0, done = 0, cost
    for p in range(nph):
        nb = (php[p + 1].b0 if p + 1 < nph else ntiles) - php[p].b0
        total += nb * (php[p].ns * php[p].ln + 64.0)   # 64: a tile's pointers and store
    cut[0] = 0
    for p in range(nph):
        nb = (php[p + 1].b0 if p + 1 < nph else ntiles) - php[p].b0
        cost = php[p].ns * php[p].ln + 64.0
        for k in range(nb):
            done += cost
            while t < nt and done >= total * t / nt:
                cut[t] = php[p].b0 + k + 1
                t += 1
    while t <= nt:
        cut[t] = ntiles
        t += 1


cdef run(Buffer src, Py_ssize_t s_off, Buffer w, Py_ssize_t w_off, Buffer bias, Py_ssize_t b_off,
         Buffer out, Py_ssize_t out_off, Geo* g, Taps taps, Buffer phases, Py_ssize_t nph,
         Py_ssize_t ntiles, Py_ssize_t width, Py_ssize_t run_len, int itemsize, bint relu,
         bint dx, tuple wst):
    """The forward (dx False) or the input grad on the indirect tiles: pack the weight,
    split the tiles over the threads."""
    cdef Py_ssize_t nr = mn_nh_nr(itemsize)
    cdef Py_ssize_t cols = g.C if dx else g.K, npan = (cols + nr - 1) // nr
    cdef Py_ssize_t bsize = npan * g.kh * g.kw * run_len * nr
    cdef Py_ssize_t group = max(1, min(64, GROUP_ITEMS // max(MR * width * run_len, 1)))
    cdef int nt = max(1, min(threads_for(ntiles * MR * width * run_len * cols // 64), ntiles))
    cdef Py_ssize_t pstep = lined(group * max(width, 1) * MR * sizeof(void*))
    cdef Py_ssize_t rstep = lined(group * MR * sizeof(Py_ssize_t))
    cdef Py_ssize_t tstep = lined(MR * nr * itemsize)
    cdef Py_ssize_t sstep = 0   # (a spill area no tile uses now)
    cdef Py_ssize_t step = pstep + rstep + tstep + sstep
    cdef Buffer bp = Buffer(max(bsize, 1) * itemsize)
    cdef Buffer zero = Buffer(max(run_len, 1) * itemsize, True)
    # the pointer of a tile's rows past its class's pixels (their outputs are dropped): a
    # zero run, or with a strided input (cs > 1) the input itself, which holds all of the
    # C values a map apart that such a row reads
    cdef char* zp = zero.ptr if g.cs == 1 else src.ptr + s_off * itemsize
    cdef Buffer scratch = Buffer(nt * step)
    cdef char* sp = scratch.ptr
    cdef char* bias_p = NULL if bias is None else bias.ptr + b_off * itemsize
    cdef Phase* php = NULL if phases is None else <Phase*>phases.ptr
    # the tiles cut into CHUNKS_PER_THREAD chunks of equal work a thread, claimed by the
    # threads (_claim.h: each its own share first, then what another has left; a tile's
    # outputs are its own: the same bits whoever takes it). Chunks handed out as threads
    # come free against one run a thread, in one process, interleaved, 2 threads (Xeon
    # model 207), median us: 64x16x8x8 -> 32 /2 forward 105 -> 95, 64x32x4x4 -> 64 /2 123
    # -> 120; claims against those chunks (Xeon model 167): within 1%
    cdef int t, c, nch = nt * CHUNKS_PER_THREAD if nt > 1 else 1
    nch = <int>min(nch, max(ntiles, 1))
    cdef Py_ssize_t st = wst[0], sc = wst[1], sk = wst[2]
    cdef Buffer cuts = Buffer((nch + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* cut = <Py_ssize_t*>cuts.ptr
    split_by_work(php, nph, ntiles, nch, cut)
    cdef mn_claims cl
    cdef int u
    claims_start(&cl, nch, nt)
    with nogil:
        # the weight's column panels shared by the threads
        for u in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4 and dx:
                pack_w_input_grad(<float*>w.ptr + w_off, g, <float*>bp.ptr, st, sc, sk,
                                  npan * u // nt, npan * (u + 1) // nt)
            elif itemsize == 4:
                pack_w_forward(<float*>w.ptr + w_off, g, <float*>bp.ptr, st, sc, sk,
                               npan * u // nt, npan * (u + 1) // nt)
            elif dx:
                pack_w_input_grad(<double*>w.ptr + w_off, g, <double*>bp.ptr, st, sc, sk,
                                  npan * u // nt, npan * (u + 1) // nt)
            else:
                pack_w_forward(<double*>w.ptr + w_off, g, <double*>bp.ptr, st, sc, sk,
                               npan * u // nt, npan * (u + 1) // nt)
        for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
            t = threadid()
            c = mn_claim(&cl, t)
            while c >= 0:
                if itemsize == 4:
                    run_tiles(<float*>src.ptr + s_off, <float*>zp, <float*>bp.ptr, g,
                              taps.segs, taps.boffs, width, run_len, php, nph, cut[c], cut[c + 1],
                              group, <const float**>(sp + t * step),
                              <Py_ssize_t*>(sp + t * step + pstep),
                              <float*>(sp + t * step + pstep + rstep),
                              <float*>(sp + t * step + pstep + rstep + tstep),
                              <float*>out.ptr + out_off, <float*>bias_p, relu, dx)
                else:
                    run_tiles(<double*>src.ptr + s_off, <double*>zp, <double*>bp.ptr, g,
                              taps.segs, taps.boffs, width, run_len, php, nph, cut[c], cut[c + 1],
                              group, <const double**>(sp + t * step),
                              <Py_ssize_t*>(sp + t * step + pstep),
                              <double*>(sp + t * step + pstep + rstep),
                              <double*>(sp + t * step + pstep + rstep + tstep),
                              <double*>out.ptr + out_off, <double*>bias_p, relu, dx)
                c = mn_claim(&cl, t)
    mn_claims_free(&cl)


def _phase_taps(Py_ssize_t a, Py_ssize_t n_in, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p,
                Py_ssize_t d, Py_ssize_t n_out):
    """Taps i of one axis that connect input phase a (positions a + s*u < n_in) to some
    output o < n_out: o*s - p + i*d = a + s*u."""
    return [i for i in range(k) if (a + p - i * d) % s == 0 and
            any(0 <= (a + s * u + p - i * d) // s < n_out for u in range((n_in - a + s - 1) // s))]


def input_grad(Buffer dy, Py_ssize_t dy_off, Buffer w, Py_ssize_t w_off, Buffer dx,
               Py_ssize_t dx_off, tuple xshape, tuple wshape, tuple stride, tuple pad,
               tuple dil, int itemsize, bint w_kcrs=False):
    """dx (N, H, W, C) from the output grad dy (N, OH, OW, K) and w (kh, kw, C, K); w_kcrs
    as forward's."""
    cdef Geo g = make_geo(xshape, wshape, stride, pad, dil, "conv2d_nhwc input gradient")
    check_buffers(&g, dx, dx_off, w, w_off, dy, dy_off, itemsize, "conv2d_nhwc input gradient")
    if g.N * g.H * g.W == 0 or g.C == 0:
        return
    taps, plist = [], []
    ntiles = 0
    for a in range(min(g.sh, g.H)):
        rows = _phase_taps(a, g.H, g.kh, g.sh, g.ph, g.dh, g.OH)
        for b in range(min(g.sw, g.W)):
            cols = _phase_taps(b, g.W, g.kw, g.sw, g.pw, g.dw, g.OW)
            hq, wq = (g.H - a + g.sh - 1) // g.sh, (g.W - b + g.sw - 1) // g.sw
            plist.append((a, b, hq, wq, len(taps), len(rows) * len(cols), ntiles, g.K))
            taps += [(i, j) for i in rows for j in cols]
            ntiles += (g.N * hq * wq + MR - 1) // MR
    cdef Buffer phases = Buffer(len(plist) * sizeof(Phase))
    cdef Phase* php = <Phase*>phases.ptr
    for p, (a, b, hq, wq, s0, ns, b0, ln) in enumerate(plist):
        php[p].a, php[p].b, php[p].hq, php[p].wq = a, b, hq, wq
        php[p].s0, php[p].ns, php[p].b0, php[p].ln = s0, ns, b0, ln
    width = max(ph[5] for ph in plist)
    return run(dy, dy_off, w, w_off, None, 0, dx, dx_off, &g, Taps(taps, g.K, g.kw), phases,
               len(plist), ntiles, width, g.K, itemsize, False, True, w_strides(&g, w_kcrs))


def weight_grad(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                Py_ssize_t dw_off, tuple xshape, tuple wshape, tuple stride, tuple pad,
                tuple dil, int itemsize, by_rows=None):
    """dw (kh, kw, C, K) from the output grad dy (N, OH, OW, K) and x (N, H, W, C);
    by_rows as forward's."""
    cdef Geo g = make_geo(xshape, wshape, stride, pad, dil, "conv2d_nhwc weight gradient")
    check_buffers(&g, x, x_off, dw, dw_off, dy, dy_off, itemsize, "conv2d_nhwc weight gradient")
    cdef Py_ssize_t M = g.N * g.OH * g.OW, total = g.kh * g.kw * g.C * g.K
    if total == 0:
        return
    cdef Taps taps = live_taps(&g, 0, dw_rows(&g) if by_rows is None else by_rows)
    cdef Py_ssize_t run = taps.nj * g.C
    cdef Py_ssize_t mr = GMR_SHORT if round_up(run, GMR_SHORT) < round_up(run, GMR) else GMR
    cdef Py_ssize_t nr = mn_gemm_nr(itemsize), cp = round_up(run, mr), kp = round_up(g.K, nr)
    cdef Py_ssize_t psize = taps.n * cp * kp
    # the work counts a run's nj*C values (with whole kernel rows, C alone undercounted it
    # kw-fold and kept ResNet9's 8x8 layer on one thread), and a thread's share of pixels
    # may be less than a chunk (its 4x4 layer has 256): 2 threads, Xeon model 207, weight
    # grad with its copies 272 -> 195 us (8x8) and 255 -> 225 us (4x4); op-level forward +
    # backward 849 -> 682 us and 776 -> 726 us
    cdef int nt = max(1, min(threads_for(M * taps.n * run * g.K // 64), M // DW_MIN_SHARE))
    cdef Py_ssize_t xstep = lined(cp * MC * itemsize), ystep = lined(kp * MC * itemsize)
    cdef Py_ssize_t step = xstep + ystep + lined(run * itemsize)
    cdef Buffer part = Buffer(max(nt * psize, 1) * itemsize, True)
    cdef Buffer work = Buffer(nt * step)
    cdef char* wp = work.ptr
    cdef int t
    with nogil:
        memset(dw.ptr + dw_off * itemsize, 0, total * itemsize)
        if M == 0 or taps.n == 0:
            nt = 0
        for t in prange(nt, num_threads=max(nt, 1), schedule='static'):
            if itemsize == 4:
                weight_grad_rows(<float*>x.ptr + x_off, <float*>dy.ptr + dy_off,
                                 <float*>part.ptr + t * psize, &g, taps.segs, taps.n,
                                 M * t // nt, M * (t + 1) // nt, mr, cp, kp,
                                 <float*>(wp + t * step), <float*>(wp + t * step + xstep),
                                 <float*>(wp + t * step + xstep + ystep))
            else:
                weight_grad_rows(<double*>x.ptr + x_off, <double*>dy.ptr + dy_off,
                                 <double*>part.ptr + t * psize, &g, taps.segs, taps.n,
                                 M * t // nt, M * (t + 1) // nt, mr, cp, kp,
                                 <double*>(wp + t * step), <double*>(wp + t * step + xstep),
                                 <double*>(wp + t * step + xstep + ystep))
        if nt > 0:
            if itemsize == 4:
                sum_partials(<float*>part.ptr, <float*>(dw.ptr + dw_off * itemsize), &g,
                             taps.segs, taps.n, cp, kp, nt)
            else:
                sum_partials(<double*>part.ptr, <double*>(dw.ptr + dw_off * itemsize), &g,
                             taps.segs, taps.n, cp, kp, nt)


def bias_grad(Buffer dy, Py_ssize_t dy_off, Buffer db, Py_ssize_t db_off, Py_ssize_t M,
              Py_ssize_t K, int itemsize):
    """db[k] = sum over the M pixels of dy (M, K) (NHWC rows), summed in double."""
    check_itemsize(itemsize, "conv2d_nhwc bias gradient")
    need(dy, dy_off, (M, K), itemsize, "conv2d_nhwc bias gradient", "output gradient (M, K)")
    need(db, db_off, (K,), itemsize, "conv2d_nhwc bias gradient", "bias gradient (K,)")
    cdef Py_ssize_t m, k
    cdef Buffer acc = Buffer(max(K, 1) * sizeof(double), True)
    cdef double* a = <double*>acc.ptr
    with nogil:
        for m in range(M):
            for k in range(K):
                if itemsize == 4:
                    a[k] += (<float*>dy.ptr)[dy_off + m * K + k]
                else:
                    a[k] += (<double*>dy.ptr)[dy_off + m * K + k]
        for k in range(K):
            if itemsize == 4:
                (<float*>db.ptr)[db_off + k] = <float>a[k]
            else:
                (<double*>db.ptr)[db_off + k] = a[k]


# layout copies around the NHWC kernels (CPUDevice's NCHW switch) -------------------------------
cdef Py_ssize_t TILE = 16   # a 16 x 16 block of floats: 16 cache lines read, 16 written


ctypedef fused word:
    unsigned int
    unsigned long long


cdef void copy_block(const word* src, word* dst, Py_ssize_t b, Py_ssize_t i0, Py_ssize_t i1,
                     Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t sb, Py_ssize_t si,
                     Py_ssize_t sj, Py_ssize_t db, Py_ssize_t di) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(i0, i1):
        for j in range(j0, j1):
            dst[b * db + i * di + j] = src[b * sb + i * si + j * sj]


cdef void copy_blocks(const word* src, word* dst, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t I,
                      Py_ssize_t J, Py_ssize_t sb, Py_ssize_t si, Py_ssize_t sj,
                      Py_ssize_t db, Py_ssize_t di) noexcept nogil:
    """Blocks t0 .. t1 of TILE x TILE (batch-major, then rows, then columns)."""
    cdef Py_ssize_t ti = (I + TILE - 1) // TILE, tj = (J + TILE - 1) // TILE, t, b, r, c
    for t in range(t0, t1):
        b = t // (ti * tj)
        r = (t // tj) % ti * TILE
        c = t % tj * TILE
        copy_block(src, dst, b, r, min(r + TILE, I), c, min(c + TILE, J), sb, si, sj, db, di)


cdef void transpose_blocks(const char* src, char* dst, Py_ssize_t t0, Py_ssize_t t1,
                           Py_ssize_t I, Py_ssize_t J, Py_ssize_t sb, Py_ssize_t sj,
                           Py_ssize_t db, Py_ssize_t di, int itemsize) noexcept nogil:
    """copy_blocks where the source runs along i (si = 1): blocks of W x W words, W a
    vector's lanes, transposed in registers (_conv_nhwc.h, mn_rl_block*)."""
    cdef Py_ssize_t W = mn_rl_width(itemsize)
    cdef Py_ssize_t ti = (I + W - 1) // W, tj = (J + W - 1) // W, t, b, r, c, at_src, at_dst
    for t in range(t0, t1):
        b = t // (ti * tj)
        r = (t // tj) % ti * W
        c = t % tj * W
        at_src = (b * sb + c * sj + r) * itemsize
        at_dst = (b * db + r * di + c) * itemsize
        if itemsize == 4:
            mn_rl_block4(<const unsigned int*>(src + at_src), <unsigned int*>(dst + at_dst),
                         min(W, I - r), min(W, J - c), sj, di)
        else:
            mn_rl_block8(<const unsigned long long*>(src + at_src),
                         <unsigned long long*>(dst + at_dst), min(W, I - r), min(W, J - c),
                         sj, di)


def relayout(Buffer src, Py_ssize_t s_off, Buffer dst, Py_ssize_t d_off, Py_ssize_t B,
             Py_ssize_t I, Py_ssize_t J, Py_ssize_t sb, Py_ssize_t si, Py_ssize_t sj,
             int itemsize):
    """dst[b*I*J + i*J + j] = src[b*sb + i*si + j*sj] (b < B, i < I, j < J), by blocks:
    the transposes NCHW <-> NHWC and (K, C, kh, kw) <-> (kh, kw, C, K) read and write
    whole cache lines where a strided walk wrote one value a line."""
    check_itemsize(itemsize, "conv2d_nhwc relayout")
    need(dst, d_off, (B, I, J), itemsize, "conv2d_nhwc relayout", "destination")
    if B * I * J == 0:
        return
    last = (B - 1) * sb + (I - 1) * si + (J - 1) * sj
    if min(sb, si, sj) < 0 or (s_off + last + 1) * itemsize > src.nbytes:
        raise ValueError("conv2d_nhwc relayout: the source strides reach past its buffer")
    # the NCHW <-> NHWC transposes (the source runs along i) by vector blocks, where
    # whole blocks are the rule: (64, 16, 8, 8) -> NHWC 35 -> 16 us, (64, 32, 4, 4) 19 ->
    # 11 us at 1 thread; an edge block (a 2x2 map's 4 pixels) is no faster than the walk
    cdef bint vec = si == 1 and min(I, J) >= mn_rl_width(itemsize)
    cdef Py_ssize_t tile = mn_rl_width(itemsize) if vec else TILE
    cdef Py_ssize_t nb = B * ((I + tile - 1) // tile) * ((J + tile - 1) // tile)
    cdef int nt = max(1, min(threads_for(B * I * J // 16), nb)), t
    if si == 1 and J == 4 and itemsize == 4 and I >= 4:   # a 2x2 map's pixels
        nt = max(1, min(threads_for(B * I * J // 16), B))
        with nogil:
            for t in prange(nt, num_threads=nt, schedule='static'):
                mn_rl_runs4(<const unsigned int*>src.ptr + s_off,
                            <unsigned int*>dst.ptr + d_off, B * t // nt, B * (t + 1) // nt,
                            I, sb, sj)
        return
    if vec:
        with nogil:
            for t in prange(nt, num_threads=nt, schedule='static'):
                transpose_blocks(<const char*>src.ptr + s_off * itemsize,
                                 <char*>dst.ptr + d_off * itemsize, nb * t // nt,
                                 nb * (t + 1) // nt, I, J, sb, sj, I * J, J, itemsize)
        return
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            if itemsize == 4:
                copy_blocks(<unsigned int*>src.ptr + s_off, <unsigned int*>dst.ptr + d_off,
                            nb * t // nt, nb * (t + 1) // nt, I, J, sb, si, sj, I * J, J)
            else:
                copy_blocks(<unsigned long long*>src.ptr + s_off,
                            <unsigned long long*>dst.ptr + d_off, nb * t // nt,
                            nb * (t + 1) // nt, I, J, sb, si, sj, I * J, J)
