# cython: boundscheck=False, wraparound=False, cdivision=True
"""Direct convolution for layers with few input channels (a network's first layer).

Layouts as CPUDevice.conv2d's: x (N, C, H, W), w (K, C, kh, kw), y (N, K, OH, OW), all
compact from their offsets; one group.

With C*kh*kw taps and few channels, im2col's matrix is as large as the input times the
taps, and the implicit GEMM's panels see short runs. Here a tile of output pixels keeps
its K sums in registers and takes one tap after another: the pixel's input value,
broadcast, times the tap's K weights (_conv_direct.h). The input rows a band of tiles
reads are first copied with their padding into a small per-thread buffer, so no tap
tests for padding and the band stays in L1. Threads take (image, band) jobs.

forward(): column strides 1..4 (one kernel each). weight_grad(): any stride, column
dilation 1 (see its section below). Both return False where they do not apply, and the
caller runs another path.
"""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.string cimport memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport (threads_for, chunk_items, mn_claims, mn_claim, claims_start,
                               mn_claims_free)
from mininet_ext._check cimport check_itemsize, need

cdef extern from "_conv_direct.h" nogil:
    ctypedef void (*mn_cd_fn_f32)(Py_ssize_t, const Py_ssize_t*, const float*, Py_ssize_t,
                            const float*, const float*, float*)
    ctypedef void (*mn_cd_fn_f64)(Py_ssize_t, const Py_ssize_t*, const double*, Py_ssize_t,
                            const double*, const double*, double*)
    int mn_cd_rw()
    int mn_cd_rh(int nv)
    int mn_cd_lanes(int itemsize)
    int mn_cd_nv(int itemsize, Py_ssize_t K)
    mn_cd_fn_f32 mn_cd_pick_f32(int nv, int s)
    mn_cd_fn_f64 mn_cd_pick_f64(int nv, int s)
    void mn_cd_fill_f32(const float* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t iy0, Py_ssize_t rows, Py_ssize_t pw, Py_ssize_t Wb,
                        Py_ssize_t plane, float* buf, int fresh)
    void mn_cd_fill_f64(const double* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t iy0, Py_ssize_t rows, Py_ssize_t pw, Py_ssize_t Wb,
                        Py_ssize_t plane, double* buf, int fresh)
    void mn_cd_dw_f32(int nv, int rows, Py_ssize_t npix, const Py_ssize_t* poff,
                      const float* dyT, const float* img, Py_ssize_t rowstep, float* io)
    void mn_cd_dw_f64(int nv, int rows, Py_ssize_t npix, const Py_ssize_t* poff,
                      const double* dyT, const double* img, Py_ssize_t rowstep, double* io)
    void mn_cd_pixel_major_f32(const float* g, Py_ssize_t K, Py_ssize_t npix, int kt,
                               float* dyT)
    void mn_cd_pixel_major_f64(const double* g, Py_ssize_t K, Py_ssize_t npix, int kt,
                               double* dyT)
    void mn_cd_store_f32(const float* tb, int nh, int nw, int nk, int kt, float* y,
                         Py_ssize_t kstride, Py_ssize_t rstride, int relu)
    void mn_cd_store_f64(const double* tb, int nh, int nw, int nk, int kt, double* y,
                         Py_ssize_t kstride, Py_ssize_t rstride, int relu)
    ctypedef void (*mn_cm_fn_f32)(Py_ssize_t, const Py_ssize_t*, const float*, Py_ssize_t,
                                  const float*, const float*, float*, Py_ssize_t, Py_ssize_t,
                                  int, int, int, int)
    ctypedef void (*mn_cm_fn_f64)(Py_ssize_t, const Py_ssize_t*, const double*, Py_ssize_t,
                                  const double*, const double*, double*, Py_ssize_t,
                                  Py_ssize_t, int, int, int, int)
    int mn_cm_ok()
    int mn_cm_r()
    int mn_cm_rh(int nv)
    mn_cm_fn_f32 mn_cm_pick_f32(int nv)
    mn_cm_fn_f64 mn_cm_pick_f64(int nv)

cdef Py_ssize_t RW = mn_cd_rw()          # tile columns (output pixels of a row)
cdef Py_ssize_t MAX_STRIDE = 4           # column strides with a kernel
cdef Py_ssize_t BAND_BYTES = 24576       # a band's padded input: well inside L1 (32 KB)
cdef Py_ssize_t ALIGN = 64


cdef struct Plan:
    Py_ssize_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW
    Py_ssize_t RH, NV, kt, KB, ntaps     # tile rows, vectors, channels a tile, K blocks
    Py_ssize_t rowtiles, coltiles, nbands, Hb, Wb, plane
    Py_ssize_t wsize, bufsize, tbsize    # packed weights, per-thread band and tile items


cdef inline Py_ssize_t cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t lined(Py_ssize_t nbytes) noexcept nogil:
    return cdiv(nbytes, ALIGN) * ALIGN


cdef Py_ssize_t band_count(Py_ssize_t full, int itemsize, Py_ssize_t N, Py_ssize_t work,
                           Py_ssize_t rowtiles) noexcept nogil:
    """Bands of row tiles an image is cut into: each band's padded input (full: the
    whole image's, in items) small enough for L1, and enough jobs (band, image) for the
    threads a layer of `work` multiply-adds gets."""
    cdef Py_ssize_t n = max(cdiv(full * itemsize, BAND_BYTES), cdiv(threads_for(work // 64),
                                                                    max(N, 1)))
    return min(n, rowtiles)


cdef inline Py_ssize_t job_chunk(Py_ssize_t jobs, int nt) noexcept nogil:
    """Jobs (band, image) per chunk of the forwards' claims (_claim.h): about 8 chunks a
    thread, so a thread slowed by its core leaves the end of its share to the others (a
    job's outputs are its own: the same bits whoever takes it). Claims against chunks
    taken as threads come free (schedule='dynamic'), op level, 2 threads (Xeon model
    167): 7x7 /4 112.4 -> 102.0 us (each thread reads and writes the same images call
    after call). Dynamic chunks against the equal run a
    thread it replaces, in one process, interleaved, 2 threads (Xeon model 207), median /
    mean us: 64x3x32x32 -> 32 3x3 (channel-major) 781 / 832 -> 750 / 768, and in
    a noisy phase 2094 / 2015 -> 927 / 1434; 64x3x32x32 -> 16 3x3 /2 147 / 155 -> 143 /
    150; 7x7 /4 157-160 / 187-230 -> 165-168 / 184-214."""
    return chunk_items(jobs, nt, 8)


cdef inline Py_ssize_t chunk_count(Py_ssize_t jobs, int nt) noexcept nogil:
    """The chunks of job_chunk's size."""
    cdef Py_ssize_t per = job_chunk(jobs, nt)
    return (jobs + per - 1) // per


cdef int forward_team(Py_ssize_t work, Py_ssize_t jobs) noexcept nogil:
    """Threads for a forward of `work` multiply-adds in `jobs` jobs."""
    return <int>max(1, min(threads_for(work // 64), jobs))


cdef Py_ssize_t head_bytes(Py_ssize_t wsize, Py_ssize_t nbias, Py_ssize_t ntaps,
                           Py_ssize_t itemsize) noexcept nogil:
    """The shared head of a forward's scratch, each part line-aligned: the packed
    weights (wsize items), the bias (nbias) and the tap table; the threads' parts follow."""
    return lined(wsize * itemsize) + lined(nbias * itemsize) + lined(ntaps * sizeof(Py_ssize_t))


def out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


cdef int make_plan(Plan* p, tuple xshape, Py_ssize_t K, tuple ksize, tuple stride, tuple pad,
                   tuple dil, int itemsize) except -1:
    """Fill the sizes; p.nbands = 0 when the kernel does not apply (a stride, a padding)."""
    p.N, p.C, p.H, p.W = xshape
    p.K = K
    p.kh, p.kw = ksize
    p.sh, p.sw = stride
    p.ph, p.pw = pad
    p.dh, p.dw = dil
    if min(p.N, p.C, p.H, p.W, K, p.kh, p.kw) < 0:
        raise ValueError(f"conv2d_direct: negative size in input {xshape}, K {K}, "
                         f"kernel {ksize}")
    if min(p.sh, p.sw, p.dh, p.dw) < 1:
        raise ValueError(f"conv2d_direct: stride {stride} and dilation {dil} must be >= 1")
    p.OH = out_size(p.H, p.kh, p.sh, p.ph, p.dh)
    p.OW = out_size(p.W, p.kw, p.sw, p.pw, p.dw)
    p.nbands = 0
    if p.sw > MAX_STRIDE or min(p.ph, p.pw) < 0 or p.OH < 1 or p.OW < 1 or \
            min(p.C, p.kh, p.kw, p.H, p.W) < 1:
        return 0
    cdef Py_ssize_t lanes = mn_cd_lanes(itemsize)
    p.NV = mn_cd_nv(itemsize, K)
    p.RH = mn_cd_rh(p.NV)
    p.kt = p.NV * lanes
    p.KB = cdiv(K, p.kt)
    p.ntaps = p.C * p.kh * p.kw
    p.rowtiles, p.coltiles = cdiv(p.OH, p.RH), cdiv(p.OW, RW)
    p.Wb = (p.coltiles * RW - 1) * p.sw + (p.kw - 1) * p.dw + 1
    # bands of row tiles: small enough for L1, and enough jobs for the threads
    cdef Py_ssize_t full = p.C * ((p.rowtiles * p.RH - 1) * p.sh + (p.kh - 1) * p.dh + 1) * p.Wb
    p.nbands = band_count(full, itemsize, p.N, p.N * p.OH * p.OW * K * p.ntaps, p.rowtiles)
    cdef Py_ssize_t tiles = cdiv(p.rowtiles, p.nbands)
    p.Hb = (tiles * p.RH - 1) * p.sh + (p.kh - 1) * p.dh + 1
    p.plane = p.Hb * p.Wb
    p.wsize = p.KB * p.ntaps * p.kt
    p.bufsize = p.C * p.plane
    p.tbsize = p.RH * RW * p.kt
    return 0


cdef void pack_weights(const floating* w, const floating* bias, Plan* p, floating* wp,
                       floating* bp) noexcept nogil:
    """wp[kb][t][l] = w[kb*kt + l][t] (t: the C*kh*kw taps in order), bp[kb][l] = the
    bias; zeros past K."""
    cdef Py_ssize_t kb, t, l, k
    for kb in range(p.KB):
        for l in range(p.kt):
            k = kb * p.kt + l
            bp[kb * p.kt + l] = bias[k] if (k < p.K and bias != NULL) else 0
            for t in range(p.ntaps):
                wp[(kb * p.ntaps + t) * p.kt + l] = w[k * p.ntaps + t] if k < p.K else 0


cdef void store_tile(const floating* tb, Plan* p, floating* y, Py_ssize_t oy, Py_ssize_t ox,
                     Py_ssize_t kb, bint relu) noexcept nogil:
    """y[kb*kt + k][oy + h][ox + r] = tb[h*RW + r][k] for the tile's pixels inside the map."""
    cdef int nh = min(p.RH, p.OH - oy), nw = min(RW, p.OW - ox)
    cdef int nk = min(p.kt, p.K - kb * p.kt)
    y = y + (kb * p.kt * p.OH + oy) * p.OW + ox
    if floating is float:
        mn_cd_store_f32(tb, nh, nw, nk, p.kt, y, p.OH * p.OW, p.OW, relu)
    else:
        mn_cd_store_f64(tb, nh, nw, nk, p.kt, y, p.OH * p.OW, p.OW, relu)


cdef void run_jobs(const floating* x, Plan* p, const floating* wp, const floating* bp,
                   const Py_ssize_t* toff, floating* buf, floating* tb, floating* y,
                   Py_ssize_t j0, Py_ssize_t j1, bint relu) noexcept nogil:
    """Jobs j0 .. j1 (job = band * N + image): pad the band's input rows into buf, run its
    tiles. A thread's jobs run band by band, so the padding's zeros are written once a
    band (the positions are the same for every image)."""
    cdef Py_ssize_t j, n, b, t0, t1, ty, tx, kb, last = -1, iy0, rows
    cdef const floating* img
    cdef mn_cd_fn_f32 k32 = mn_cd_pick_f32(<int>p.NV, <int>p.sw)
    cdef mn_cd_fn_f64 k64 = mn_cd_pick_f64(<int>p.NV, <int>p.sw)
    for j in range(j0, j1):
        b, n = j // p.N, j % p.N
        t0, t1 = p.rowtiles * b // p.nbands, p.rowtiles * (b + 1) // p.nbands
        if t1 == t0:
            continue
        iy0 = t0 * p.RH * p.sh - p.ph
        rows = ((t1 - t0) * p.RH - 1) * p.sh + (p.kh - 1) * p.dh + 1
        if floating is float:
            mn_cd_fill_f32(x + n * p.C * p.H * p.W, p.C, p.H, p.W, iy0, rows, p.pw, p.Wb,
                           p.plane, buf, b != last)
        else:
            mn_cd_fill_f64(x + n * p.C * p.H * p.W, p.C, p.H, p.W, iy0, rows, p.pw, p.Wb,
                           p.plane, buf, b != last)
        last = b
        for ty in range(t0, t1):
            for tx in range(p.coltiles):
                img = buf + (ty - t0) * p.RH * p.sh * p.Wb + tx * RW * p.sw
                for kb in range(p.KB):
                    if floating is float:
                        k32(p.ntaps, toff, img, p.sh * p.Wb, wp + kb * p.ntaps * p.kt,
                            bp + kb * p.kt, tb)
                    else:
                        k64(p.ntaps, toff, img, p.sh * p.Wb, wp + kb * p.ntaps * p.kt,
                            bp + kb * p.kt, tb)
                    store_tile(tb, p, y + n * p.K * p.OH * p.OW, ty * p.RH, tx * RW, kb, relu)


cdef void tap_offsets(Py_ssize_t* toff, Py_ssize_t C, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t plane, Py_ssize_t rowstep, Py_ssize_t colstep) noexcept nogil:
    """toff[tap (c, i, j)] = where the tap reads in a band, from a tile's first pixel."""
    cdef Py_ssize_t c, i, j
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                toff[(c * kh + i) * kw + j] = c * plane + i * rowstep + j * colstep


cdef int check_io(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
                  Py_ssize_t b_off, Buffer out, Py_ssize_t out_off, tuple xshape,
                  Py_ssize_t K, tuple ksize, Py_ssize_t OH, Py_ssize_t OW,
                  int itemsize) except -1:
    """A clear error unless every buffer holds its array (the forwards' arguments)."""
    n, c, h, wd = xshape
    need(x, x_off, (n, c, h, wd), itemsize, "conv2d_direct", "input")
    need(w, w_off, (K, c) + tuple(ksize), itemsize, "conv2d_direct", "weight")
    if bias is not None:
        need(bias, b_off, (K,), itemsize, "conv2d_direct", "bias")
    need(out, out_off, (n, K, OH, OW), itemsize, "conv2d_direct", "output")
    return 0


cdef void forward_all(const floating* x, const floating* w, const floating* bias, floating* y,
                      Plan* p, char* scratch, Py_ssize_t step, int nt, bint relu,
                      mn_claims* cl) noexcept nogil:
    """Pack the weights (scratch's head), then the threads claim chunks of jobs (cl:
    job_chunk's chunks)."""
    cdef floating* wp = <floating*>scratch
    cdef floating* bp = <floating*>(scratch + lined(p.wsize * sizeof(floating)))
    cdef Py_ssize_t* toff = <Py_ssize_t*>(<char*>bp + lined(p.KB * p.kt * sizeof(floating)))
    cdef char* priv = scratch + head_bytes(p.wsize, p.KB * p.kt, p.ntaps, sizeof(floating))
    cdef Py_ssize_t jobs = p.N * p.nbands, per = job_chunk(jobs, nt), c
    cdef int t, u
    pack_weights(w, bias, p, wp, bp)
    tap_offsets(toff, p.C, p.kh, p.kw, p.plane, p.dh * p.Wb, p.dw)
    for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
        t = threadid()
        c = mn_claim(cl, t)
        while c >= 0:
            run_jobs(x, p, wp, bp, toff, <floating*>(priv + t * step),
                     <floating*>(priv + t * step + lined(p.bufsize * sizeof(floating))), y,
                     c * per, min(jobs, (c + 1) * per), relu)
            c = mn_claim(cl, t)


def forward(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
            Py_ssize_t b_off, Buffer out, Py_ssize_t out_off, tuple xshape, Py_ssize_t K,
            tuple ksize, tuple stride, tuple pad, tuple dil, int itemsize, bint relu=False):
    """out (N, K, OH, OW) = conv(x (N, C, H, W), w (K, C, kh, kw)) + bias, max(0, .) of it
    with relu; compact buffers from their offsets (bias may be None). Returns False, having
    done nothing, where no kernel applies (a column stride above 4, negative padding)."""
    check_itemsize(itemsize, "conv2d_direct")
    cdef Plan p
    make_plan(&p, xshape, K, ksize, stride, pad, dil, itemsize)
    if p.nbands == 0:
        return False
    check_io(x, x_off, w, w_off, bias, b_off, out, out_off, xshape, K, ksize, p.OH, p.OW,
             itemsize)
    if p.N == 0 or K == 0:
        return True
    cdef Py_ssize_t jobs = p.N * p.nbands
    cdef int nt = forward_team(p.N * p.OH * p.OW * K * p.ntaps, jobs)
    cdef Py_ssize_t head = head_bytes(p.wsize, p.KB * p.kt, p.ntaps, itemsize)
    cdef Py_ssize_t step = lined(p.bufsize * itemsize) + lined(p.tbsize * itemsize)
    cdef Buffer scratch = Buffer(head + nt * step)
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    cdef mn_claims cl
    claims_start(&cl, chunk_count(jobs, nt), nt)
    with nogil:
        if itemsize == 4:
            forward_all(<float*>x.ptr + x_off, <float*>w.ptr + w_off, <float*>bp,
                        <float*>out.ptr + out_off, &p, scratch.ptr, step, nt, relu, &cl)
        else:
            forward_all(<double*>x.ptr + x_off, <double*>w.ptr + w_off, <double*>bp,
                        <double*>out.ptr + out_off, &p, scratch.ptr, step, nt, relu, &cl)
    mn_claims_free(&cl)
    return True


# channel-major forward (stride 1) -----------------------------------------------------
# The same bands of padded input rows and (band, image) jobs as forward(), but tiles of
# RH output rows x NV vectors of pixels x MN_CM_R channels whose pixels are vector loads
# (a row's pixels read consecutive inputs at stride 1) and whose weights are broadcast:
# the sums come out in NCHW order and are stored as they are (_conv_direct.h,
# MN_CM_KERNEL). A job runs its channel blocks one after another over the whole band, so
# the output is written a few planes at a time.

def cm_available():
    """Whether this build has the channel-major kernel (AVX-512 compiled in)."""
    return bool(mn_cm_ok())


cdef struct CPlan:
    Py_ssize_t N, C, H, W, K, kh, kw, ph, pw, OH, OW
    Py_ssize_t NV, RH, R, lanes, KB, ntaps, rowtiles, coltiles, nbands, Hb, Wb, plane
    Py_ssize_t wsize, bufsize


cdef int make_cplan(CPlan* p, tuple xshape, Py_ssize_t K, tuple ksize, tuple pad,
                    int itemsize) except -1:
    """Fill the sizes; p.nbands = 0 when the kernel does not apply."""
    p.N, p.C, p.H, p.W = xshape
    p.K = K
    p.kh, p.kw = ksize
    p.ph, p.pw = pad
    if min(p.N, p.C, p.H, p.W, K, p.kh, p.kw) < 0:
        raise ValueError(f"conv2d_direct: negative size in input {xshape}, K {K}, "
                         f"kernel {ksize}")
    p.OH, p.OW = p.H + 2 * p.ph - p.kh + 1, p.W + 2 * p.pw - p.kw + 1
    p.nbands = 0
    if not mn_cm_ok() or min(p.ph, p.pw) < 0 or p.OH < 1 or p.OW < 1 or \
            min(p.C, p.kh, p.kw, p.H, p.W) < 1:
        return 0
    p.lanes = mn_cd_lanes(itemsize)
    p.NV = 2 if p.OW > p.lanes else 1
    p.RH = mn_cm_rh(<int>p.NV)
    p.R = mn_cm_r()
    p.KB = cdiv(K, p.R)
    p.ntaps = p.C * p.kh * p.kw
    p.rowtiles, p.coltiles = cdiv(p.OH, p.RH), cdiv(p.OW, p.NV * p.lanes)
    p.Wb = p.coltiles * p.NV * p.lanes + p.kw - 1
    cdef Py_ssize_t full = p.C * (p.rowtiles * p.RH + p.kh - 1) * p.Wb
    p.nbands = band_count(full, itemsize, p.N, p.N * p.OH * p.OW * K * p.ntaps, p.rowtiles)
    p.Hb = cdiv(p.rowtiles, p.nbands) * p.RH + p.kh - 1
    p.plane = p.Hb * p.Wb
    p.wsize = p.KB * p.ntaps * p.R
    p.bufsize = p.C * p.plane
    return 0


cdef void pack_cm(const floating* w, const floating* bias, CPlan* p, floating* wr,
                  floating* br) noexcept nogil:
    """wr[kb][t][r] = w[kb*R + r][t], br[kb][r] = the bias; zeros past K."""
    cdef Py_ssize_t kb, t, r, k
    for kb in range(p.KB):
        for r in range(p.R):
            k = kb * p.R + r
            br[kb * p.R + r] = bias[k] if (k < p.K and bias != NULL) else 0
            for t in range(p.ntaps):
                wr[(kb * p.ntaps + t) * p.R + r] = w[k * p.ntaps + t] if k < p.K else 0


cdef void cm_jobs(const floating* x, CPlan* p, const floating* wr, const floating* br,
                  const Py_ssize_t* toff, floating* buf, floating* y, Py_ssize_t j0,
                  Py_ssize_t j1, bint relu) noexcept nogil:
    """Jobs j0 .. j1 (job = band * N + image): pad the band's rows into buf, then each
    channel block over all its tiles."""
    cdef Py_ssize_t j, n, b, t0, t1, ty, tx, kb, last = -1, px = p.NV * p.lanes
    cdef Py_ssize_t P = p.OH * p.OW
    cdef const floating* img
    cdef floating* yk
    cdef int nk
    cdef mn_cm_fn_f32 k32 = mn_cm_pick_f32(<int>p.NV)
    cdef mn_cm_fn_f64 k64 = mn_cm_pick_f64(<int>p.NV)
    for j in range(j0, j1):
        b, n = j // p.N, j % p.N
        t0, t1 = p.rowtiles * b // p.nbands, p.rowtiles * (b + 1) // p.nbands
        if t1 == t0:
            continue
        if floating is float:
            mn_cd_fill_f32(x + n * p.C * p.H * p.W, p.C, p.H, p.W, t0 * p.RH - p.ph,
                           (t1 - t0) * p.RH + p.kh - 1, p.pw, p.Wb, p.plane, buf, b != last)
        else:
            mn_cd_fill_f64(x + n * p.C * p.H * p.W, p.C, p.H, p.W, t0 * p.RH - p.ph,
                           (t1 - t0) * p.RH + p.kh - 1, p.pw, p.Wb, p.plane, buf, b != last)
        last = b
        for kb in range(p.KB):
            nk = <int>min(p.R, p.K - kb * p.R)
            yk = y + (n * p.K + kb * p.R) * P
            for ty in range(t0, t1):
                for tx in range(p.coltiles):
                    img = buf + (ty - t0) * p.RH * p.Wb + tx * px
                    if floating is float:
                        k32(p.ntaps, toff, img, p.Wb, wr + kb * p.ntaps * p.R, br + kb * p.R,
                            yk + ty * p.RH * p.OW + tx * px, P, p.OW, nk,
                            <int>min(p.RH, p.OH - ty * p.RH), <int>min(px, p.OW - tx * px),
                            relu)
                    else:
                        k64(p.ntaps, toff, img, p.Wb, wr + kb * p.ntaps * p.R, br + kb * p.R,
                            yk + ty * p.RH * p.OW + tx * px, P, p.OW, nk,
                            <int>min(p.RH, p.OH - ty * p.RH), <int>min(px, p.OW - tx * px),
                            relu)


cdef void cm_all(const floating* x, const floating* w, const floating* bias, floating* y,
                 CPlan* p, char* scratch, Py_ssize_t step, int nt, bint relu,
                 mn_claims* cl) noexcept nogil:
    """Pack the weights (scratch's head), then the threads claim chunks of jobs."""
    cdef floating* wr = <floating*>scratch
    cdef floating* br = <floating*>(scratch + lined(p.wsize * sizeof(floating)))
    cdef Py_ssize_t* toff = <Py_ssize_t*>(<char*>br + lined(p.KB * p.R * sizeof(floating)))
    cdef char* priv = scratch + head_bytes(p.wsize, p.KB * p.R, p.ntaps, sizeof(floating))
    cdef Py_ssize_t jobs = p.N * p.nbands, per = job_chunk(jobs, nt), c
    cdef int t, u
    pack_cm(w, bias, p, wr, br)
    tap_offsets(toff, p.C, p.kh, p.kw, p.plane, p.Wb, 1)
    for u in prange(nt, num_threads=nt, schedule='static', chunksize=1):
        t = threadid()
        c = mn_claim(cl, t)
        while c >= 0:
            cm_jobs(x, p, wr, br, toff, <floating*>(priv + t * step), y, c * per,
                    min(jobs, (c + 1) * per), relu)
            c = mn_claim(cl, t)


def forward_cm(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer bias,
               Py_ssize_t b_off, Buffer out, Py_ssize_t out_off, tuple xshape, Py_ssize_t K,
               tuple ksize, tuple pad, int itemsize, bint relu=False):
    """forward() for stride 1 and no dilation on the channel-major kernel. Returns False,
    having done nothing, where it does not apply (a build without AVX-512, a negative
    padding)."""
    check_itemsize(itemsize, "conv2d_direct")
    cdef CPlan p
    make_cplan(&p, xshape, K, ksize, pad, itemsize)
    if p.nbands == 0:
        return False
    check_io(x, x_off, w, w_off, bias, b_off, out, out_off, xshape, K, ksize, p.OH, p.OW,
             itemsize)
    if p.N == 0 or K == 0:
        return True
    cdef Py_ssize_t jobs = p.N * p.nbands
    cdef int nt = forward_team(p.N * p.OH * p.OW * K * p.ntaps, jobs)
    cdef Py_ssize_t head = head_bytes(p.wsize, p.KB * p.R, p.ntaps, itemsize)
    cdef Py_ssize_t step = lined(p.bufsize * itemsize)
    cdef Buffer scratch = Buffer(head + nt * step)
    cdef char* bp = NULL if bias is None else bias.ptr + b_off * itemsize
    cdef mn_claims cl
    claims_start(&cl, chunk_count(jobs, nt), nt)
    with nogil:
        if itemsize == 4:
            cm_all(<float*>x.ptr + x_off, <float*>w.ptr + w_off, <float*>bp,
                   <float*>out.ptr + out_off, &p, scratch.ptr, step, nt, relu, &cl)
        else:
            cm_all(<double*>x.ptr + x_off, <double*>w.ptr + w_off, <double*>bp,
                   <double*>out.ptr + out_off, &p, scratch.ptr, step, nt, relu, &cl)
    mn_claims_free(&cl)
    return True


# weight gradient -------------------------------------------------------------------------
# dw[k][c][i][j] = sum over images and output pixels of dy[k][pixel] * x_padded[c][tap's
# input for the pixel]. Per image: its padded input (as the forward's band, whole), dy
# made pixel-major (a pixel's K values one vector), then for each block of RI kernel rows
# x RW kernel columns of one channel, a pass over the pixels (mn_cd_dw_*). Threads take
# runs of images and keep private sums, added at the end.

cdef struct DPlan:
    Py_ssize_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, OH, OW, npix
    Py_ssize_t NV, RI, kt, KB, ngi, ngj, Hb, Wb, plane, bsize, nblocks


cdef int make_dplan(DPlan* p, tuple xshape, Py_ssize_t K, tuple ksize, tuple stride,
                    tuple pad, tuple dil, int itemsize) except -1:
    """Fill the sizes; p.nblocks = -1 when the kernel does not apply (a column dilation,
    a negative padding)."""
    cdef Py_ssize_t dw
    p.N, p.C, p.H, p.W = xshape
    p.K = K
    p.kh, p.kw = ksize
    p.sh, p.sw = stride
    p.ph, p.pw = pad
    p.dh, dw = dil
    if min(p.N, p.C, p.H, p.W, K, p.kh, p.kw) < 0:
        raise ValueError(f"conv2d_direct weight grad: negative size in input {xshape}, K {K}, "
                         f"kernel {ksize}")
    if min(p.sh, p.sw, p.dh, dw) < 1:
        raise ValueError(f"conv2d_direct weight grad: stride {stride} and dilation {dil} "
                         "must be >= 1")
    p.OH = out_size(p.H, p.kh, p.sh, p.ph, p.dh)
    p.OW = out_size(p.W, p.kw, p.sw, p.pw, dw)
    p.nblocks = -1
    if dw != 1 or min(p.ph, p.pw) < 0 or p.OH < 1 or p.OW < 1 or \
            min(p.C, p.kh, p.kw, p.H, p.W) < 1:
        return 0
    p.npix = p.OH * p.OW
    p.NV = mn_cd_nv(itemsize, K)
    p.RI = mn_cd_rh(p.NV)
    p.kt = p.NV * mn_cd_lanes(itemsize)
    p.KB = cdiv(K, p.kt)
    p.ngi, p.ngj = cdiv(p.kh, p.RI), cdiv(p.kw, RW)
    # the blocks' columns past the filter read inside the buffer (and are dropped)
    p.Hb = (p.OH - 1) * p.sh + (p.kh - 1) * p.dh + 1
    p.Wb = (p.OW - 1) * p.sw + p.ngj * RW
    p.plane = p.Hb * p.Wb
    p.bsize = p.RI * RW * p.kt
    p.nblocks = p.KB * p.C * p.ngi * p.ngj
    return 0


cdef void dw_images(const floating* g, const floating* x, DPlan* p, const Py_ssize_t* poff,
                    floating* buf, floating* dyT, floating* part, Py_ssize_t n0,
                    Py_ssize_t n1) noexcept nogil:
    """part (this thread's sums, zeroed by the caller) += images n0 .. n1's products."""
    cdef Py_ssize_t n, kb, c, ig, jg, blk
    cdef int rows
    cdef const floating* img
    for n in range(n0, n1):
        if floating is float:
            mn_cd_fill_f32(x + n * p.C * p.H * p.W, p.C, p.H, p.W, -p.ph, p.Hb, p.pw, p.Wb,
                           p.plane, buf, n == n0)
        else:
            mn_cd_fill_f64(x + n * p.C * p.H * p.W, p.C, p.H, p.W, -p.ph, p.Hb, p.pw, p.Wb,
                           p.plane, buf, n == n0)
        if floating is float:   # a pixel's K values one vector
            mn_cd_pixel_major_f32(g + n * p.K * p.npix, p.K, p.npix, <int>p.kt, dyT)
        else:
            mn_cd_pixel_major_f64(g + n * p.K * p.npix, p.K, p.npix, <int>p.kt, dyT)
        for kb in range(p.KB):
            for c in range(p.C):
                for ig in range(p.ngi):
                    for jg in range(p.ngj):
                        blk = ((kb * p.C + c) * p.ngi + ig) * p.ngj + jg
                        img = buf + c * p.plane + ig * p.RI * p.dh * p.Wb + jg * RW
                        rows = <int>min(p.RI, p.kh - ig * p.RI)
                        if floating is float:
                            mn_cd_dw_f32(<int>p.NV, rows, p.npix, poff,
                                         dyT + kb * p.npix * p.kt, img, p.dh * p.Wb,
                                         part + blk * p.bsize)
                        else:
                            mn_cd_dw_f64(<int>p.NV, rows, p.npix, poff,
                                         dyT + kb * p.npix * p.kt, img, p.dh * p.Wb,
                                         part + blk * p.bsize)


cdef void dw_sum(DPlan* p, const floating* parts, Py_ssize_t pstride, int nt,
                 floating* dw) noexcept nogil:
    """dw[k][c][i][j] = the threads' sums at tap (c, i, j), channel k."""
    cdef Py_ssize_t k, c, i, j, blk, at
    cdef int t
    cdef floating s
    for k in range(p.K):
        for c in range(p.C):
            for i in range(p.kh):
                for j in range(p.kw):
                    blk = (((k // p.kt) * p.C + c) * p.ngi + i // p.RI) * p.ngj + j // RW
                    at = blk * p.bsize + ((i % p.RI) * RW + j % RW) * p.kt + k % p.kt
                    s = 0
                    for t in range(nt):
                        s = s + parts[t * pstride + at]
                    dw[((k * p.C + c) * p.kh + i) * p.kw + j] = s


cdef void weight_grad_all(const floating* g, const floating* x, floating* dw, DPlan* p,
                          char* scratch, Py_ssize_t step, int nt) noexcept nogil:
    """Scratch: the pixel offsets, then per thread its buffer, dyT and sums (sums first, so
    dw_sum finds them a step apart)."""
    cdef Py_ssize_t* poff = <Py_ssize_t*>scratch
    cdef char* priv = scratch + lined(p.npix * sizeof(Py_ssize_t))
    cdef Py_ssize_t q, psz = lined(p.nblocks * p.bsize * sizeof(floating))
    cdef Py_ssize_t dsz = lined(p.KB * p.npix * p.kt * sizeof(floating))
    cdef int t
    cdef char* mine
    for q in range(p.npix):
        poff[q] = (q // p.OW) * p.sh * p.Wb + (q % p.OW) * p.sw
    for t in prange(nt, num_threads=nt, schedule='static'):
        mine = priv + t * step
        memset(mine, 0, psz + dsz)
        dw_images(g, x, p, poff, <floating*>(mine + psz + dsz), <floating*>(mine + psz),
                  <floating*>mine, p.N * t // nt, p.N * (t + 1) // nt)
    dw_sum(p, <floating*>priv, step // sizeof(floating), nt, dw)


def weight_grad(Buffer g, Py_ssize_t g_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                Py_ssize_t dw_off, tuple xshape, Py_ssize_t K, tuple ksize, tuple stride,
                tuple pad, tuple dil, int itemsize):
    """dw (K, C, kh, kw) = the weight gradient of the convolution of x (N, C, H, W) given
    the output grad g (N, K, OH, OW); compact buffers from their offsets. Returns False,
    having done nothing, where the kernel does not apply (a column dilation, negative
    padding)."""
    check_itemsize(itemsize, "conv2d_direct weight grad")
    cdef DPlan p
    make_dplan(&p, xshape, K, ksize, stride, pad, dil, itemsize)
    if p.nblocks < 0:
        return False
    n, c, h, wd = xshape
    need(g, g_off, (n, K, p.OH, p.OW), itemsize, "conv2d_direct weight grad", "output grad")
    need(x, x_off, (n, c, h, wd), itemsize, "conv2d_direct weight grad", "input")
    need(dw, dw_off, (K, c) + tuple(ksize), itemsize, "conv2d_direct weight grad",
         "weight grad")
    if K == 0:
        return True
    cdef int nt = max(1, min(threads_for(p.N * p.npix * K * p.C * p.kh * p.kw // 64), p.N))
    cdef Py_ssize_t step = lined(p.nblocks * p.bsize * itemsize) + \
        lined(p.KB * p.npix * p.kt * itemsize) + lined(p.C * p.plane * itemsize)
    cdef Buffer scratch = Buffer(lined(p.npix * sizeof(Py_ssize_t)) + nt * step)
    with nogil:
        if itemsize == 4:
            weight_grad_all(<float*>g.ptr + g_off, <float*>x.ptr + x_off,
                            <float*>dw.ptr + dw_off, &p, scratch.ptr, step, nt)
        else:
            weight_grad_all(<double*>g.ptr + g_off, <double*>x.ptr + x_off,
                            <double*>dw.ptr + dw_off, &p, scratch.ptr, step, nt)
    return True
