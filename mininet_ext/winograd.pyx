# cython: boundscheck=False, wraparound=False, cdivision=True
"""3x3 stride-1 convolution by Winograd's F(4x4, 3x3): 36 multiplications per 4x4 output
tile and channel pair where the direct product takes 144, so 4x fewer GEMM flops. 5x5
stride-1 ones (ksize=5) by F(2x2, 5x5): 36 per 2x2 tile against 100, 2.78x fewer; the same
6x6 patches, input transform and 36 GEMMs, only the filter and output transforms differ
(_winograd5_t.h).

The output is cut into 4x4 tiles, each read as a 6x6 input patch (tiles overlap by 2).
Tiles are processed in blocks of nb (a few micro-kernel widths): the block's patches
are transformed (B^T d B) straight into the micro-kernel's packed B layout, one GEMM per
transform position xi (36 of them: [K x C] @ [C x nb]) runs on the kernel table's
micro-kernels (_isa.h), and the products are transformed back (A^T m A), the bias added
(and with relu=True max(0, .) taken: a fused ReLU, no second pass over the output),
and stored. The filters are transformed (G g G^T) once per call, into packed A panels.

Workspace: per thread one block's V (36 x C x nb) and M (36 x K x nb), a few MB at most
(workspace_bytes); plus the transformed filters (36 x K x C). Threads take whole blocks.
The weight gradient (weight_grad) runs the same transforms the other way round:
dW[k, c] = G^T [sum over tiles (A dY_k A^T) .* (B^T d_c B)] G, 36 GEMMs [K x tiles] @
[tiles x C] per block of tiles into each thread's own sums (36 x K x C), which are added
and transformed back (6x6 -> 3x3) at the end (weight_grad_workspace_bytes).
Kernels: _winograd.h, _winograd_t.h. Inputs are compact NCHW, float32 (check_f32).

forward_cl and weight_grad_cl run F(2x2, 5x5) with channels in the vectors instead of
tiles (_winograd5_cl.h, float32): each band of an image's rows transposed channels-last,
whole-vector transforms, the products folded into the output transform as they leave the
registers. At 12-96 channels they beat the tile-major layout above, whose gathers and
scatters move a value at a time (CPUDevice's rules: mininet/backend/cpu.py _wcl_fits).
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.string cimport memset, memcpy
from cython.parallel cimport prange, threadid
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport need

from mininet_ext import _isa

cdef extern from "_isa.h":
    int mn_isa_bind(const void* table) except -1

cdef extern from "_winograd.h" nogil:
    int mn_gemm_mr()
    int mn_gemm_mr_short()
    int mn_gemm_nr(int itemsize)
    int ROW_PAD "WINO_ROW_PAD"
    ctypedef struct wino_geom:
        Py_ssize_t N, C, H, W, K, OH, OW, ph, pw, th, tw, T, nb, kp
        int nr, mr, r, m
    ctypedef struct wrow_geom:
        Py_ssize_t N, C, H, W, K, OH, OW, ph, pw, S, Hp, Hq, ni, nbt, kp
        int nr, mr
    void wrow_filters_f32(const float* w, float* U, Py_ssize_t K, Py_ssize_t C, int mr,
                          int flip, Py_ssize_t p0, Py_ssize_t p1)
    void wrow_block_f32(const wrow_geom* g, const float* x, const float* U, const float* bias,
                        float* out, Py_ssize_t n0, Py_ssize_t ni, float* T, float* P, float* M,
                        float* O, Py_ssize_t* tab, int relu)
    void wino_filters_f32(const float* w, float* U, Py_ssize_t K, Py_ssize_t C, int mr,
                          int flip, Py_ssize_t p0, Py_ssize_t p1)
    void wino_block_f32(const wino_geom* g, const float* x, const float* U, const float* bias,
                        float* out, Py_ssize_t t0, float* V, float* M, float* D, float* O,
                        Py_ssize_t* tn, Py_ssize_t* ty, Py_ssize_t* tx, int relu)
    void wino_filters5_f32(const float* w, float* U, Py_ssize_t K, Py_ssize_t C, int mr,
                           int flip, Py_ssize_t p0, Py_ssize_t p1)
    void wino_wgrad_out5_f32(const float* dU, int nt, Py_ssize_t per, Py_ssize_t kp,
                             Py_ssize_t cp, Py_ssize_t C, Py_ssize_t k0, Py_ssize_t k1,
                             float* dw)
    void wino_wgrad_block_f32(const wino_geom* g, const float* x, const float* dy,
                              Py_ssize_t t0, Py_ssize_t cnt, Py_ssize_t cp, float* VT,
                              float* GT, float* dU, float* D)
    void wino_wgrad_out_f32(const float* dU, int nt, Py_ssize_t per, Py_ssize_t kp,
                            Py_ssize_t cp, Py_ssize_t K, Py_ssize_t C, Py_ssize_t k0,
                            Py_ssize_t k1, float* dw)

cdef extern from "_winograd.h" nogil:
    ctypedef struct wcl_geom:
        Py_ssize_t N, C, H, W, K, OH, OW, ph, pw, th, tw, CP, KP, rows, mt, xw
    int wcl_lanes()
    int wcl_mt()
    Py_ssize_t wcl_ws_items(const wcl_geom* g)
    void wcl_band(const wcl_geom* g, const float* x, const float* U, const float* bias,
                  float* out, Py_ssize_t n, Py_ssize_t ty0, Py_ssize_t nrow, int relu,
                  float* ws)
    Py_ssize_t wcl_wgrad_items(const wcl_geom* g)
    void wcl_wgrad_band(const wcl_geom* g, const float* x, const float* dy, Py_ssize_t n,
                        Py_ssize_t ty0, Py_ssize_t nrow, float* dU, float* ws)

mn_isa_bind(PyCapsule_GetPointer(_isa.KERNELS, "mininet_ext.kernels"))

# One block's V and M (the bulk of a thread's workspace) stay under this many bytes when
# the channels allow (at least one micro-kernel width of tiles): they then sit in L2/L3.
cdef Py_ssize_t BLOCK_BYTES = 2 << 20
# Blocks of at most this many micro-kernel widths of tiles.
cdef Py_ssize_t MAX_PANELS = 4


cdef Py_ssize_t round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


cdef int pick_mr(Py_ssize_t K) noexcept nogil:
    """The taller kernel unless the shorter one (2/3 as tall) pads K less: 32 or 64
    channels fit 8-row panels exactly, 12-row ones waste 1/9."""
    cdef int mr = mn_gemm_mr(), ms = mn_gemm_mr_short()
    return ms if round_up(K, ms) < round_up(K, mr) else mr


cdef wino_geom make_geom(tuple xshape, Py_ssize_t K, tuple pad, int itemsize, int threads,
                        int ksize=3):
    cdef wino_geom g
    g.N, g.C, g.H, g.W = xshape
    g.K = K
    g.ph, g.pw = pad
    g.r, g.m = ksize, 7 - ksize   # 6x6 patches: 4x4 outputs of 3x3 filters, 2x2 of 5x5
    g.OH, g.OW = g.H + 2 * g.ph - ksize + 1, g.W + 2 * g.pw - ksize + 1
    g.th, g.tw = (g.OH + g.m - 1) // g.m, (g.OW + g.m - 1) // g.m
    g.T = g.N * g.th * g.tw
    g.nr, g.mr = mn_gemm_nr(itemsize), pick_mr(K)
    if g.mr > 16:   # wino_filters' panel buffers
        raise RuntimeError(f"winograd conv: micro-kernel height {g.mr} above 16")
    g.kp = round_up(K, g.mr)
    cdef Py_ssize_t per_panel = 36 * (g.C + g.kp) * g.nr * itemsize
    cdef Py_ssize_t panels = max(1, min(MAX_PANELS, BLOCK_BYTES // max(per_panel, 1)))
    # enough blocks for every thread
    panels = max(1, min(panels, (g.T + threads * g.nr - 1) // max(threads * g.nr, 1)))
    g.nb = panels * g.nr
    return g


cdef Py_ssize_t thread_items(wino_geom* g) noexcept nogil:
    """Items of one thread's workspace: V, M, the patches D and outputs O of one panel
    (the tile tables come after, as Py_ssize_t)."""
    return 36 * (g.C * g.nb + ROW_PAD) + 36 * (g.kp * g.nb + ROW_PAD) + 36 * g.nr + 16 * g.nr


def workspace_bytes(tuple xshape, Py_ssize_t K, tuple pad=(1, 1), int itemsize=4,
                    int threads=1, int ksize=3):
    """Bytes of scratch memory forward() takes for this shape: the transformed filters
    plus each thread's block workspace."""
    check_ksize(ksize, "winograd conv")
    check_f32(itemsize, "winograd conv")
    cdef wino_geom g = make_geom(xshape, K, pad, itemsize, max(threads, 1), ksize)
    return (36 * g.kp * g.C * itemsize
            + max(threads, 1) * (thread_items(&g) * itemsize + 3 * g.nb * sizeof(Py_ssize_t)))


cdef int check_f32(int itemsize, str what) except -1:
    """float32 only: float64 convolutions run the implicit GEMM (mininet/backend/cpu.py),
    whose products are exact to float64's rounding where Winograd's transforms lose a few
    digits; it also kept the float64 kernels, a fifth of this module, out of each build."""
    if itemsize != 4:
        raise ValueError(f"{what}: float32 only (itemsize 4), got itemsize {itemsize}; "
                         f"float64 convolutions take the implicit GEMM")
    return 0


cdef check_ksize(int ksize, str what):
    if ksize != 3 and ksize != 5:
        raise ValueError(f"{what}: filter size {ksize}x{ksize}; Winograd runs 3x3 and 5x5 only")


cdef tuple out_map(tuple xshape, Py_ssize_t K, tuple pad, str what, int ksize=3):
    """(N, C, OH, OW) of a ksize x ksize stride-1 convolution of an (N, C, H, W) input
    padded by pad; a bad shape, channel count, padding or filter size, or a kernel larger
    than the padded input, is a ValueError naming `what`."""
    check_ksize(ksize, what)
    if len(xshape) != 4 or len(pad) != 2 or min(xshape) < 0 or K < 0 or min(pad) < 0:
        raise ValueError(f"{what}: bad input shape {xshape}, channels {K} or padding {pad}")
    n, c, h, wd = xshape
    oh, ow = h + 2 * pad[0] - ksize + 1, wd + 2 * pad[1] - ksize + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: a {ksize}x{ksize} kernel does not fit the input {xshape} "
                         f"padded by {pad}")
    return n, c, oh, ow


cdef tuple forward_checks(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off,
                          Buffer bias, Py_ssize_t b_off, Buffer out, tuple xshape,
                          Py_ssize_t K, tuple pad, int itemsize, bint flip, int ksize,
                          str what):
    """(N, C, OH, OW) of a forward call whose buffers hold its arrays, else a ValueError
    naming `what` and the array."""
    check_f32(itemsize, what)
    n, c, oh, ow = out_map(xshape, K, pad, what, ksize)
    need(x, x_off, xshape, itemsize, what, "input")
    need(w, w_off, (c, K, ksize, ksize) if flip else (K, c, ksize, ksize), itemsize, what,
         "weight")
    need(out, 0, (n, K, oh, ow), itemsize, what, "output")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, what, "bias")
    return n, c, oh, ow


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
            Py_ssize_t b_off, Buffer out, tuple xshape, Py_ssize_t K, tuple pad,
            int itemsize, bint flip=False, bint relu=False, int ksize=3):
    """out (N, K, OH, OW) = conv(x, w, stride 1, padding pad) + bias, then max(0, .) if
    relu; r = ksize (3 or 5), OH = H + 2ph - r + 1. x (N, C, H, W) and w compact; w is
    (K, C, r, r), or with flip (C, K, r, r) used rotated by 180 degrees with its two
    channel axes swapped (the input gradient's filters); bias (K,) or None."""
    n, c, oh, ow = forward_checks(x, x_off, w, w_off, bias, b_off, out, xshape, K, pad,
                                  itemsize, flip, ksize, "winograd conv")
    if n * K * oh * ow == 0:
        return
    if c == 0:
        raise ValueError("winograd conv: zero input channels (use the general path)")
    cdef int nt = threads_for(n * K * oh * ow * c * 4)
    cdef wino_geom g = make_geom(xshape, K, pad, itemsize, nt, ksize)
    cdef Py_ssize_t blocks = (g.T + g.nb - 1) // g.nb, per = thread_items(&g), panels
    nt = <int>min(nt, blocks)
    panels = g.kp // g.mr
    cdef Buffer ubuf = Buffer(36 * g.kp * g.C * itemsize)
    cdef Buffer work = Buffer(nt * per * itemsize)
    cdef Buffer tabs = Buffer(nt * 3 * g.nb * sizeof(Py_ssize_t))
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    cdef int t
    cdef Py_ssize_t b
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            run_filters(&g, w.ptr + w_off * itemsize, ubuf.ptr, flip,
                        panels * t // nt, panels * (t + 1) // nt, itemsize)
        # blocks handed out as threads come free (a block's outputs are its own: the
        # same bits whoever takes it), so a thread slowed by its core leaves the rest
        # to the others. Against every nt-th block per thread, in one process,
        # interleaved, 2 threads (Xeon model 207), median / mean us: 64x64x8x8 -> 128
        # 1957 / 2246 -> 1886 / 2052, 64x32x16x16 -> 64 2214 / 2955 -> 1979 / 2449,
        # 8x64x56x56 -> 64 6131 / 6195 -> 5220 / 5424. Work claims (_claim.h, each
        # thread its own contiguous share first) measured no faster here and slower on
        # the smallest maps in one phase of the VM, equal in a later one (Xeon model 167,
        # 2 threads, op level: 64x32x4x4 -> 32, two blocks, 83.5 -> 98.8 us, then about
        # 100 both; 64x64x8x8 -> 128 and 64x32x16x16 -> 64 within 1%)
        for b in prange(blocks, num_threads=nt, schedule='dynamic'):
            t = threadid()
            run_block(&g, x.ptr + x_off * itemsize, ubuf.ptr, bp, out.ptr,
                      work.ptr + t * per * itemsize, <Py_ssize_t*>tabs.ptr + t * 3 * g.nb, b,
                      itemsize, relu)


cdef void run_filters(wino_geom* g, char* w, char* U, int flip, Py_ssize_t p0,
                      Py_ssize_t p1, int itemsize) noexcept nogil:
    """The filter transform of the K panels p0..p1, 3x3 or 5x5."""
    if g.r == 5:
        wino_filters5_f32(<float*>w, <float*>U, g.K, g.C, g.mr, flip, p0, p1)
    else:
        wino_filters_f32(<float*>w, <float*>U, g.K, g.C, g.mr, flip, p0, p1)


cdef void run_block(wino_geom* g, char* x, char* U, char* bias, char* out, char* ws,
                    Py_ssize_t* tab, Py_ssize_t b, int itemsize, int relu) noexcept nogil:
    """Block b of tiles, in the calling thread's scratch ws and tab."""
    cdef Py_ssize_t v = 0, m = 36 * (g.C * g.nb + ROW_PAD), d = m + 36 * (g.kp * g.nb + ROW_PAD)
    cdef Py_ssize_t o = d + 36 * g.nr
    wino_block_f32(g, <float*>x, <float*>U, <float*>bias, <float*>out, b * g.nb,
                   <float*>ws + v, <float*>ws + m, <float*>ws + d, <float*>ws + o,
                   tab, tab + g.nb, tab + 2 * g.nb, relu)


# the weight gradient ------------------------------------------------------------------
# One block's transformed tiles (VT and GT) stay under this many bytes, in L2/L3 ...
cdef Py_ssize_t WGRAD_BLOCK_BYTES = 4 << 20
# ... and a block holds at most this many tiles (the GEMMs' inner dimension).
cdef Py_ssize_t WGRAD_MAX_TILES = 256


cdef wino_geom wgrad_geom(tuple xshape, Py_ssize_t K, tuple pad, int itemsize, int threads,
                          Py_ssize_t* cp, int ksize=3):
    """The forward's geometry with nb re-chosen: tiles per block of the weight gradient."""
    cdef wino_geom g = make_geom(xshape, K, pad, itemsize, threads, ksize)
    cp[0] = round_up(g.C, g.nr)
    cdef Py_ssize_t per_tile = 36 * (cp[0] + g.kp) * itemsize
    cdef Py_ssize_t nb = max(8, min(WGRAD_MAX_TILES, WGRAD_BLOCK_BYTES // per_tile))
    # enough blocks for every thread
    nb = max(1, min(nb, (g.T + threads - 1) // max(threads, 1)))
    g.nb = nb
    return g


cdef Py_ssize_t wgrad_items(wino_geom* g, Py_ssize_t cp) noexcept nogil:
    """Items of one thread's weight-gradient workspace: its sums dU, one block's VT and
    GT, one patch panel D."""
    return 36 * g.kp * cp + 36 * cp * g.nb + 36 * g.kp * g.nb + 36 * g.nr


def weight_grad_workspace_bytes(tuple xshape, Py_ssize_t K, tuple pad=(1, 1),
                                int itemsize=4, int threads=1, int ksize=3):
    """Bytes of scratch memory weight_grad() takes for this shape: per thread its own
    sums of the 36 products (36 x K x C) and one block of transformed tiles."""
    check_ksize(ksize, "winograd weight grad")
    check_f32(itemsize, "winograd weight grad")
    cdef Py_ssize_t cp
    cdef wino_geom g = wgrad_geom(xshape, K, pad, itemsize, max(threads, 1), &cp, ksize)
    return max(threads, 1) * wgrad_items(&g, cp) * itemsize


def weight_grad(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                tuple xshape, Py_ssize_t K, tuple pad, int itemsize, int ksize=3):
    """dw (K, C, r, r) = the weight gradient of out = conv(x, w, stride 1, padding pad),
    r = ksize (3 or 5), given dy = d loss / d out (N, K, OH, OW); x (N, C, H, W) and dy
    compact. Threads take blocks of tiles, each summing its own 36 products; the sums are
    added and transformed back at the end."""
    check_f32(itemsize, "winograd weight grad")
    n, c, oh, ow = out_map(xshape, K, pad, "winograd weight grad", ksize)
    need(x, x_off, xshape, itemsize, "winograd weight grad", "input")
    need(dy, dy_off, (n, K, oh, ow), itemsize, "winograd weight grad", "output grad")
    need(dw, 0, (K, c, ksize, ksize), itemsize, "winograd weight grad", "weight grad")
    if K * c == 0:
        return
    cdef int nt = threads_for(n * K * oh * ow * c * 4)
    cdef Py_ssize_t cp
    cdef wino_geom g = wgrad_geom(xshape, K, pad, itemsize, nt, &cp, ksize)
    cdef Py_ssize_t blocks = (g.T + g.nb - 1) // g.nb
    nt = <int>max(1, min(nt, blocks))
    cdef Py_ssize_t per = wgrad_items(&g, cp)
    cdef Buffer work = Buffer(nt * per * itemsize)
    cdef int t
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            wgrad_blocks(&g, x.ptr + x_off * itemsize, dy.ptr + dy_off * itemsize, cp,
                         work.ptr + t * per * itemsize, t, nt, blocks, itemsize)
        for t in prange(nt, num_threads=nt, schedule='static'):
            if g.r == 5:
                wino_wgrad_out5_f32(<float*>work.ptr, nt, per, g.kp, cp, g.C,
                                    K * t // nt, K * (t + 1) // nt, <float*>dw.ptr)
            else:
                wino_wgrad_out_f32(<float*>work.ptr, nt, per, g.kp, cp, K, g.C,
                                   K * t // nt, K * (t + 1) // nt, <float*>dw.ptr)


cdef void wgrad_blocks(wino_geom* g, char* x, char* dy, Py_ssize_t cp, char* ws, int t,
                       int nt, Py_ssize_t blocks, int itemsize) noexcept nogil:
    """Thread t's blocks t, t + nt, ... summed into its dU (the start of ws, zeroed here)."""
    cdef Py_ssize_t b = t, du = 0, vt = 36 * g.kp * cp, gt = vt + 36 * cp * g.nb
    cdef Py_ssize_t d = gt + 36 * g.kp * g.nb, cnt
    memset(ws, 0, vt * itemsize)
    while b < blocks:
        cnt = min(g.nb, g.T - b * g.nb)
        wino_wgrad_block_f32(g, <float*>x, <float*>dy, b * g.nb, cnt, cp,
                             <float*>ws + vt, <float*>ws + gt, <float*>ws + du,
                             <float*>ws + d)
        b += nt


# the row-wise F(4, 5) forward (_winograd_row_t.h) -----------------------------------
# A block is whole images, with at most this many tiles (4-pixel output segments) when an
# image has fewer: its 8 products (8 x K x tiles) and transformed rows then stay in L2.
cdef Py_ssize_t ROWS_MAX_TILES = 256


cdef wrow_geom rows_geom(tuple xshape, Py_ssize_t K, tuple pad, int itemsize, int threads):
    cdef wrow_geom g
    g.N, g.C, g.H, g.W = xshape
    g.K = K
    g.ph, g.pw = pad
    g.OH, g.OW = g.H + 2 * g.ph - 4, g.W + 2 * g.pw - 4
    g.S, g.Hp = (g.OW + 3) // 4, g.OH + 4
    g.Hq = round_up(g.Hp, 8)   # whole vectors (8 floats)
    # the strided-B kernels read A panels of the full height (the short one uses the
    # first rows of it: a last panel of few filters)
    g.nr, g.mr = mn_gemm_nr(itemsize), mn_gemm_mr()
    g.kp = round_up(K, g.mr)
    # images per block: up to ROWS_MAX_TILES tiles, and two blocks a thread at least
    g.ni = max(1, min(ROWS_MAX_TILES // max(g.S * g.Hp, 1),
                      (g.N + 2 * threads - 1) // (2 * threads)))
    # tiles: Hp rows of each segment (those past OH are computed and dropped)
    g.nbt = round_up(g.ni * g.S * g.Hp, g.nr)
    return g


cdef Py_ssize_t rows_part(wrow_geom* g, int part) noexcept nogil:
    """Items of a thread's workspace parts, each rounded up to 64 bytes' worth: 0 the
    transformed rows T (with slack: the last panel's B reads run past the block's tiles),
    1 the transposed plane P, 2 the products M, 3 one panel's outputs O; 4 the tiles'
    output offsets (2 x nbt Py_ssize_t, counted in items)."""
    cdef Py_ssize_t n
    if part == 0:
        n = g.ni * 8 * g.C * g.S * g.Hp + g.nbt - g.ni * g.S * g.Hp + 8
    elif part == 1:
        n = (4 * g.S + 4) * g.Hq
    elif part == 2:
        n = 8 * (g.kp * g.nbt + ROW_PAD)
    elif part == 3:
        n = 4 * g.nr
    else:
        n = 2 * g.nbt * 2   # Py_ssize_t: two (or one) items each
    return round_up(n, 16)


cdef Py_ssize_t rows_items(wrow_geom* g) noexcept nogil:
    return (rows_part(g, 0) + rows_part(g, 1) + rows_part(g, 2) + rows_part(g, 3)
            + rows_part(g, 4))


def rows_workspace_bytes(tuple xshape, Py_ssize_t K, tuple pad=(2, 2), int itemsize=4,
                         int threads=1):
    """Bytes of scratch memory forward_rows() takes for this shape: the transformed
    filters plus each thread's block workspace."""
    check_f32(itemsize, "winograd rows conv")
    cdef wrow_geom g = rows_geom(xshape, K, pad, itemsize, max(threads, 1))
    return (8 * g.kp * 5 * g.C + max(threads, 1) * rows_items(&g)) * itemsize


def forward_rows(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
                 Py_ssize_t b_off, Buffer out, tuple xshape, Py_ssize_t K, tuple pad,
                 int itemsize, bint flip=False, bint relu=False):
    """forward() of a 5x5 filter by F(4, 5) along the rows (the sums across rows direct):
    out (N, K, OH, OW) = conv(x, w, stride 1, padding pad) + bias, then max(0, .) if relu.
    x (N, C, H, W) and w compact; w (K, C, 5, 5), or with flip (C, K, 5, 5) rotated by 180
    degrees with its channel axes swapped (the input gradient's filters); bias (K,) or
    None. Threads take blocks of whole images."""
    n, c, oh, ow = forward_checks(x, x_off, w, w_off, bias, b_off, out, xshape, K, pad,
                                  itemsize, flip, 5, "winograd rows conv")
    if n * K * oh * ow == 0:
        return
    if c == 0:
        raise ValueError("winograd rows conv: zero input channels (use the general path)")
    cdef int nt = threads_for(n * K * oh * ow * c * 4)
    cdef wrow_geom g = rows_geom(xshape, K, pad, itemsize, nt)
    cdef Py_ssize_t blocks = (g.N + g.ni - 1) // g.ni, per = rows_items(&g)
    nt = <int>min(nt, blocks)
    cdef Py_ssize_t panels = g.kp // g.mr
    cdef Buffer ubuf = Buffer(8 * g.kp * 5 * g.C * itemsize)
    cdef Buffer work = Buffer(nt * per * itemsize)
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    cdef int t
    cdef Py_ssize_t b
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            wrow_filters_f32(<float*>(w.ptr + w_off * itemsize), <float*>ubuf.ptr, g.K,
                             g.C, g.mr, flip, panels * t // nt, panels * (t + 1) // nt)
        for b in prange(blocks, num_threads=nt, schedule='dynamic'):
            t = threadid()
            run_rows_block(&g, x.ptr + x_off * itemsize, ubuf.ptr, bp, out.ptr,
                           work.ptr + t * per * itemsize, b, itemsize, relu)


cdef void run_rows_block(wrow_geom* g, char* x, char* U, char* bias, char* out, char* ws,
                         Py_ssize_t b, int itemsize, int relu) noexcept nogil:
    """Block b of images, in the calling thread's scratch ws."""
    cdef Py_ssize_t n0 = b * g.ni, ni = min(g.ni, g.N - b * g.ni)
    cdef Py_ssize_t p = rows_part(g, 0), r = p + rows_part(g, 1)
    cdef Py_ssize_t o = r + rows_part(g, 2), tb = o + rows_part(g, 3)
    wrow_block_f32(g, <float*>x, <float*>U, <float*>bias, <float*>out, n0, ni,
                   <float*>ws, <float*>ws + p, <float*>ws + r, <float*>ws + o,
                   <Py_ssize_t*>(<float*>ws + tb), relu)


# F(2x2, 5x5) with channels in the vectors (_winograd5_cl.h) ------------------------------
# A band's padded input rows and outputs (most of a thread's workspace) stay under this
# many bytes, in L2, where a tile row allows.
cdef Py_ssize_t CL_BAND_BYTES = 512 << 10


cdef wcl_geom cl_geom(tuple xshape, Py_ssize_t K, tuple pad):
    """The forward's geometry: tiles, lanes, the chunk size, and even bands of tile rows
    whose padded input, transposed input and output rows stay under CL_BAND_BYTES (at
    least one tile row)."""
    cdef wcl_geom g
    cdef Py_ssize_t lanes = wcl_lanes(), bands
    g.N, g.C, g.H, g.W = xshape
    g.K = K
    g.ph, g.pw = pad
    g.OH, g.OW = g.H + 2 * g.ph - 4, g.W + 2 * g.pw - 4
    g.th, g.tw = (g.OH + 1) // 2, (g.OW + 1) // 2
    g.CP, g.KP = round_up(g.C, lanes), round_up(K, lanes)
    g.mt = wcl_mt() * (2 if g.KP == lanes else 1)
    g.xw = 2 * g.tw + 4
    g.rows = max(1, min(g.th, CL_BAND_BYTES // (8 * ((g.xw + g.W) * g.CP + g.OW * g.KP))))
    bands = (g.th + g.rows - 1) // g.rows
    g.rows = (g.th + bands - 1) // bands   # even bands
    return g


def cl_workspace_bytes(tuple xshape, Py_ssize_t K, tuple pad=(2, 2), int threads=1):
    """Bytes of scratch memory forward_cl() takes for this shape: the transformed filters
    plus each thread's band workspace."""
    out_map(xshape, K, pad, "winograd cl conv", 5)
    cdef wcl_geom g = cl_geom(xshape, K, pad)
    return 4 * (36 * g.KP * g.C + g.KP + max(threads, 1) * round_up(wcl_ws_items(&g), 16))


def forward_cl(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
               Py_ssize_t b_off, Buffer out, tuple xshape, Py_ssize_t K, tuple pad,
               int itemsize, bint flip=False, bint relu=False):
    """forward() of a 5x5 float32 filter by F(2x2, 5x5) with channels in the vectors
    (_winograd5_cl.h): out (N, K, OH, OW) = conv(x, w, stride 1, padding pad) + bias, then
    max(0, .) if relu. x (N, C, H, W) and w compact; w (K, C, 5, 5), or with flip
    (C, K, 5, 5) rotated by 180 degrees with its channel axes swapped (the input
    gradient's filters); bias (K,) or None. Threads take bands of tile rows of an image."""
    n, c, oh, ow = forward_checks(x, x_off, w, w_off, bias, b_off, out, xshape, K, pad,
                                  itemsize, flip, 5, "winograd cl conv")
    if n * K * oh * ow == 0:
        return
    if c == 0:
        raise ValueError("winograd cl conv: zero input channels (use the general path)")
    cdef int nt = threads_for(n * K * oh * ow * c * 4)
    cdef wcl_geom g = cl_geom(xshape, K, pad)
    cdef Py_ssize_t bands = (g.th + g.rows - 1) // g.rows, items = n * bands
    cdef Py_ssize_t per = round_up(wcl_ws_items(&g), 16), lanes = wcl_lanes()
    cdef Py_ssize_t panels = g.KP // lanes
    nt = <int>min(nt, items)
    cdef Buffer ubuf = Buffer(36 * g.KP * g.C * 4)
    cdef Buffer bbuf = Buffer(g.KP * 4, zero=True)
    cdef Buffer work = Buffer(nt * per * 4)
    if bias is not None:
        memcpy(bbuf.ptr, bias.ptr + b_off * 4, K * 4)
    cdef float* U = <float*>ubuf.ptr
    cdef float* xs = <float*>(x.ptr + x_off * 4)
    cdef float* ws = <float*>work.ptr
    cdef int t
    cdef Py_ssize_t b, band
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            wino_filters5_f32(<float*>(w.ptr + w_off * 4), U, g.K, g.C, <int>lanes, flip,
                              panels * t // nt, panels * (t + 1) // nt)
        for b in prange(items, num_threads=nt, schedule='dynamic'):
            t = threadid()
            band = b % bands
            wcl_band(&g, xs, U, <float*>bbuf.ptr, <float*>out.ptr, b // bands,
                     band * g.rows, min(g.rows, g.th - band * g.rows), relu, ws + t * per)


# A band's transformed tiles V and GY (most of a thread's weight-gradient workspace) stay
# under this many bytes, in L2, where a tile row allows.
cdef Py_ssize_t CL_WGRAD_BAND_BYTES = 512 << 10


cdef wcl_geom cl_wgrad_geom(tuple xshape, Py_ssize_t K, tuple pad):
    """cl_geom with bands sized for the weight gradient (all of a band's tiles at once)."""
    cdef wcl_geom g = cl_geom(xshape, K, pad)
    cdef Py_ssize_t bands
    g.rows = max(1, min(g.th, CL_WGRAD_BAND_BYTES // (36 * (g.CP + g.KP) * 4 * g.tw)))
    bands = (g.th + g.rows - 1) // g.rows
    g.rows = (g.th + bands - 1) // bands   # even bands
    return g


def cl_weight_grad_workspace_bytes(tuple xshape, Py_ssize_t K, tuple pad=(2, 2),
                                   int threads=1):
    """Bytes of scratch memory weight_grad_cl() takes for this shape: per thread its own
    sums of the 36 products (36 x K x C) and one band's transformed tiles."""
    out_map(xshape, K, pad, "winograd cl weight grad", 5)
    cdef wcl_geom g = cl_wgrad_geom(xshape, K, pad)
    return 4 * max(threads, 1) * round_up(wcl_wgrad_items(&g), 16)


def weight_grad_cl(Buffer dy, Py_ssize_t dy_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                   tuple xshape, Py_ssize_t K, tuple pad, int itemsize):
    """dw (K, C, 5, 5) = the weight gradient of out = conv(x, w, stride 1, padding pad),
    given dy = d loss / d out (N, K, OH, OW), by F(2x2, 5x5) with channels in the vectors
    (_winograd5_cl.h); float32, x (N, C, H, W) and dy compact. Threads take bands of tile
    rows of an image, each summing its own 36 products; the sums are added and
    transformed back at the end."""
    check_f32(itemsize, "winograd cl weight grad")
    n, c, oh, ow = out_map(xshape, K, pad, "winograd cl weight grad", 5)
    need(x, x_off, xshape, itemsize, "winograd cl weight grad", "input")
    need(dy, dy_off, (n, K, oh, ow), itemsize, "winograd cl weight grad", "output grad")
    need(dw, 0, (K, c, 5, 5), itemsize, "winograd cl weight grad", "weight grad")
    if K * c == 0:
        return
    cdef int nt = threads_for(n * K * oh * ow * c * 4)
    cdef wcl_geom g = cl_wgrad_geom(xshape, K, pad)
    cdef Py_ssize_t bands = (g.th + g.rows - 1) // g.rows, items = n * bands
    cdef Py_ssize_t per = round_up(wcl_wgrad_items(&g), 16), sums = 36 * g.KP * g.CP
    nt = <int>max(1, min(nt, items))
    cdef Buffer work = Buffer(nt * per * 4)
    cdef Buffer swapped = Buffer(K * c * 25 * 4)   # dw with its two channel axes swapped
    cdef float* dwt = <float*>swapped.ptr
    cdef float* dws = <float*>dw.ptr
    cdef Py_ssize_t k, ci, C = c
    cdef float* xs = <float*>(x.ptr + x_off * 4)
    cdef float* dys = <float*>(dy.ptr + dy_off * 4)
    cdef float* ws = <float*>work.ptr
    cdef int t
    cdef Py_ssize_t b, band
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            memset(ws + t * per, 0, sums * 4)
        for b in prange(items, num_threads=nt, schedule='dynamic'):
            t = threadid()
            band = b % bands
            wcl_wgrad_band(&g, xs, dys, b // bands, band * g.rows,
                           min(g.rows, g.th - band * g.rows), ws + t * per,
                           ws + t * per + sums)
        # the sums are dU[xi][c][k]: transformed back with the axes' roles swapped, into
        # (C, K, 5, 5), then each 5x5 block moved to its place in dw (K, C, 5, 5)
        for t in prange(nt, num_threads=nt, schedule='static'):
            wino_wgrad_out5_f32(ws, nt, per, g.CP, g.KP, K, C * t // nt, C * (t + 1) // nt,
                                dwt)
        for k in range(K):
            for ci in range(C):
                memcpy(dws + (k * C + ci) * 25, dwt + (ci * K + k) * 25, 25 * 4)
