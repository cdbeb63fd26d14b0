# cython: boundscheck=False, wraparound=False, cdivision=True
"""C = A @ B, BLIS style: pack panels of A (MC x KC) and B (KC x NC) into
contiguous zero-padded buffers, then sweep an MR x NR register micro-kernel
(_gemm.h) over them. Any strides in A and B (packing absorbs transposes).
The micro-kernels, and MR and NR with them, come from the kernel set chosen at
import (_isa.h, mininet_ext._isa)."""
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange, threadid, parallel
from cython cimport floating
from libc.string cimport memcpy, memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport size_threads, threads_for, threads_timed, arrived, finished
from mininet_ext._omp cimport mn_claims, mn_claims_init, mn_claims_free, mn_claims_reset, mn_claim
from mininet_ext._check cimport check_itemsize, need, need_strided

from mininet_ext import _isa

cdef extern from "_isa.h":
    int mn_isa_bind(const void* table) except -1

cdef extern from "_isa.h" nogil:
    const char* mn_kernel_isa()
    int mn_gemm_mr()
    int mn_gemm_nr(int itemsize)
    void mn_kernel_f32(Py_ssize_t kc, const float* A, const float* B, float* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_f64(Py_ssize_t kc, const double* A, const double* B, double* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_pack_a_rows_f32(const float* A, Py_ssize_t rs, Py_ssize_t kc, float* out)
    void mn_pack_a_rows_f64(const double* A, Py_ssize_t rs, Py_ssize_t kc, double* out)
    void mn_pack_b_t_f32(const float* B, Py_ssize_t cs, Py_ssize_t kc, Py_ssize_t nc, float* out)
    void mn_pack_b_t_f64(const double* B, Py_ssize_t cs, Py_ssize_t kc, Py_ssize_t nc,
                         double* out)
    int mn_gemm_bc()
    int mn_gemm_mr_bc()
    void mn_kernel_bc_f32(Py_ssize_t kc, const float* A, const float* B, float* C,
                          Py_ssize_t ldc, int accumulate)
    void mn_kernel_bc_f64(Py_ssize_t kc, const double* A, const double* B, double* C,
                          Py_ssize_t ldc, int accumulate)
    void mn_pack_a_bc_f32(const float* A, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t mc,
                          Py_ssize_t kc, float* out)
    void mn_pack_a_bc_f64(const double* A, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t mc,
                          Py_ssize_t kc, double* out)
    void mn_kernel_sb_f32(Py_ssize_t kc, const float* A, const float* B, Py_ssize_t ldb,
                          float* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sb_f64(Py_ssize_t kc, const double* A, const double* B, Py_ssize_t ldb,
                          double* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_f32(Py_ssize_t kc, const float* A, Py_ssize_t ars, Py_ssize_t acs,
                          const float* B, float* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_f64(Py_ssize_t kc, const double* A, Py_ssize_t ars, Py_ssize_t acs,
                          const double* B, double* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_half_f32(Py_ssize_t kc, const float* A, Py_ssize_t ars, Py_ssize_t acs,
                               const float* B, float* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_half_f64(Py_ssize_t kc, const double* A, Py_ssize_t ars, Py_ssize_t acs,
                               const double* B, double* C, Py_ssize_t ldc, int accumulate)
    int mn_gemm_mr_short()
    void mn_kernel_sa_short_f32(Py_ssize_t kc, const float* A, Py_ssize_t ars, Py_ssize_t acs,
                                const float* B, float* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_short_f64(Py_ssize_t kc, const double* A, Py_ssize_t ars, Py_ssize_t acs,
                                const double* B, double* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sa_short_half_f32(Py_ssize_t kc, const float* A, Py_ssize_t ars,
                                     Py_ssize_t acs, const float* B, float* C, Py_ssize_t ldc,
                                     int accumulate)
    void mn_kernel_sa_short_half_f64(Py_ssize_t kc, const double* A, Py_ssize_t ars,
                                     Py_ssize_t acs, const double* B, double* C, Py_ssize_t ldc,
                                     int accumulate)
    void mn_kernel_sb_short_f32(Py_ssize_t kc, const float* A, const float* B, Py_ssize_t ldb,
                                float* C, Py_ssize_t ldc, int accumulate)
    void mn_kernel_sb_short_f64(Py_ssize_t kc, const double* A, const double* B, Py_ssize_t ldb,
                                double* C, Py_ssize_t ldc, int accumulate)
    void mn_tail_dot_f32(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc, const float* A,
                         Py_ssize_t ars, const float* Bt, float* C, Py_ssize_t ldc, int accumulate)
    void mn_tail_dot_f64(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc, const double* A,
                         Py_ssize_t ars, const double* Bt, double* C, Py_ssize_t ldc,
                         int accumulate)
    void mn_tail_lane_f32(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc, const float* A,
                          Py_ssize_t acs, const float* B, Py_ssize_t ldb, float* C,
                          Py_ssize_t ldc, int accumulate)
    void mn_tail_lane_f64(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc, const double* A,
                          Py_ssize_t acs, const double* B, Py_ssize_t ldb, double* C,
                          Py_ssize_t ldc, int accumulate)

    int mn_small_ok()
    void mn_gemm_small_f32(Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t ars,
                           Py_ssize_t acs, const float* B, Py_ssize_t ldb, float* C,
                           Py_ssize_t ldc, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t jp0,
                           Py_ssize_t jp1)
    void mn_gemm_small_f64(Py_ssize_t N, Py_ssize_t K, const double* A, Py_ssize_t ars,
                           Py_ssize_t acs, const double* B, Py_ssize_t ldb, double* C,
                           Py_ssize_t ldc, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t jp0,
                           Py_ssize_t jp1)

cdef extern from *:
    """
    /* the team of the enclosing parallel region (1 and no-op in a serial build) */
    #ifdef _OPENMP
    #include <omp.h>
    static int mn_team_size(void) { return omp_get_num_threads(); }
    static void mn_team_barrier(void) { _Pragma("omp barrier") }
    #else
    static int mn_team_size(void) { return 1; }
    static void mn_team_barrier(void) { }
    #endif
    """
    int mn_team_size() noexcept nogil
    void mn_team_barrier() noexcept nogil

cdef extern from *:
    """
    /* pack_b fetches a row-major B's rows this many rows ahead toward L2 */
    #define MN_PF_ROWS 4
    #define mn_prefetch_l2(p) __builtin_prefetch((p), 0, 2)
    """
    int MN_PF_ROWS
    void mn_prefetch_l2(const void* p) noexcept nogil

mn_isa_bind(PyCapsule_GetPointer(_isa.KERNELS, "mininet_ext.kernels"))
cdef int MR = mn_gemm_mr()
cdef int MR_SHORT = mn_gemm_mr_short()   # the edge height for a last panel of few rows
# Cache blocking: a KC x NR panel of B streams through L1, the MC x KC block of A
# stays in L2, the KC x NC block of B in L3. KC 384 / NC 2048 beat 256 / 4096 by 0-8%
# on a Zen 4 EPYC (2048^3, 100000x784x100, the 256x700x10000 of an LM's decoder) and
# matched them elsewhere (bench/RESULTS.md, session 5).
cdef Py_ssize_t MC = 192, KC = 384, NC = 2048
# The generic path's blocked product packs A pre-broadcast (BC: a vector per value, in
# panels of MRB rows, _gemm.h): its A block is 4 times larger, so it takes fewer rows.
cdef bint BC = mn_gemm_bc()
cdef int MRB = mn_gemm_mr_bc()
if BC:
    MC = 48
cdef Py_ssize_t SMALL = 8 * 8 * 8      # flops/2 below which the plain loops beat the call overhead
# Operands of at most this many elements (A and B together, 128 KB in float32: L2)
# are multiplied in place, without packing, where the CPU has the masked kernels.
cdef Py_ssize_t INPLACE_MAX = 32768
cdef bint INPLACE_OK = mn_small_ok()


def kernel_isa():
    """The kernel set this module's GEMM calls (see mininet_ext._isa.active())."""
    return mn_kernel_isa().decode()


def blocking():
    """Block sizes; a_panel_l1: the largest packed A panel (bytes) the tiles keep in L1;
    b_group: the bytes of B panels an A panel meets before the next one (micro_tiles)."""
    return {"mr": MR, "nr_f32": mn_gemm_nr(4), "nr_f64": mn_gemm_nr(8), "mc": MC, "kc": KC, "nc": NC,
            "mr_blocked": MRB, "pre_broadcast": bool(BC), "a_panel_l1": A_PANEL_L1,
            "b_group": B_GROUP_L2}


# Block sizes beyond any operand a Buffer can hold; the cap keeps the rounding and the
# K-split test (4 KC threads) clear of overflow.
cdef Py_ssize_t BLOCK_MAX = 1 << 30


cdef int check_blocks(str name, Py_ssize_t mc, Py_ssize_t kc, Py_ssize_t nc) except -1:
    if mc < 1 or kc < 1 or nc < 1:
        raise ValueError(f"{name}: block sizes must be positive, got mc={mc}, kc={kc}, nc={nc}")
    if mc > BLOCK_MAX or kc > BLOCK_MAX or nc > BLOCK_MAX:
        raise ValueError(f"{name}: block sizes must be at most {BLOCK_MAX}, "
                         f"got mc={mc}, kc={kc}, nc={nc}")
    return 0


def set_blocking(Py_ssize_t mc, Py_ssize_t kc, Py_ssize_t nc, b_group=None):
    """Change the cache block sizes (for tuning); mc is rounded up to a multiple of the
    blocked product's MR (blocking()["mr_blocked"]) and nc to one of the float32 NR (a
    multiple of the float64 one), so that only the last block of a product has partial
    micro-panels. b_group: the bytes of B panels an A panel meets in turn (at least one
    panel; unchanged when None). Not while another thread multiplies."""
    global MC, KC, NC, B_GROUP_L2
    check_blocks("set_blocking", mc, kc, nc)
    if b_group is not None and not (1 <= b_group <= BLOCK_MAX):
        raise ValueError(f"set_blocking: b_group must be 1 to {BLOCK_MAX} bytes, got {b_group}")
    cdef Py_ssize_t nr = mn_gemm_nr(4)
    if b_group is not None:
        B_GROUP_L2 = b_group
    MC = (mc + MRB - 1) // MRB * MRB
    KC = kc
    NC = (nc + nr - 1) // nr * nr


cdef void pack_a(const floating* A, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t mc, Py_ssize_t kc,
                 floating* out, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of MR rows: out[panel][p][i] = A[i, p], zero past mc."""
    cdef Py_ssize_t panel, i, p, rows
    cdef floating* dst
    cdef const floating* src
    if rs == 1 and cs != 1:   # A transposed (x.T in a weight gradient)
        pack_a_t(A, cs, mc, kc, out, p0, p1)
        return
    for panel in range(p0, p1):
        dst = out + panel * MR * kc
        rows = mc - panel * MR
        if rows > MR:
            rows = MR
        if cs == 1 and rows == MR:
            if floating is float:
                mn_pack_a_rows_f32(A + panel * MR * rs, rs, kc, dst)
            else:
                mn_pack_a_rows_f64(A + panel * MR * rs, rs, kc, dst)
            continue
        # along p, so the panel is written in order (row by row, each store was MR items
        # from the last: the zero rows of a 4-row edge were 5% of a 100 x 784 x 100)
        src = A + panel * MR * rs
        for p in range(kc):
            for i in range(rows):
                dst[p * MR + i] = src[i * rs + p * cs]
            for i in range(rows, MR):
                dst[p * MR + i] = 0


cdef void pack_a_t(const floating* A, Py_ssize_t cs, Py_ssize_t mc, Py_ssize_t kc,
                   floating* out, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """pack_a's panels p0..p1 of a transposed A (A(i, p) = A[i + p * cs], x.T in a weight
    gradient), along whole rows of x (p outer) so that reads are sequential: panel by
    panel, each p read a new cache line cs items on (4 KB for 1024 features), beyond the
    stride prefetcher's reach: 0.94x the time of a 1024 x 256 x 1024 x.T @ g, 0.92x at
    1024^3 (Xeon, one thread)."""
    cdef Py_ssize_t p, panel, i, rows
    cdef floating* dst
    cdef const floating* src
    for p in range(kc):
        src = A + p * cs
        for panel in range(p0, p1):
            dst = out + panel * MR * kc + p * MR
            rows = mc - panel * MR
            if rows >= MR:   # constant sizes are copied inline
                if MR == 12:
                    memcpy(dst, src + panel * MR, 12 * sizeof(floating))
                elif MR == 6:
                    memcpy(dst, src + panel * MR, 6 * sizeof(floating))
                else:
                    memcpy(dst, src + panel * MR, MR * sizeof(floating))
                continue
            for i in range(rows):
                dst[i] = src[panel * MR + i]
            for i in range(rows, MR):
                dst[i] = 0


cdef void pack_b(const floating* B, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t kc, Py_ssize_t nc,
                 floating* out, int nr, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of nr columns: out[panel][p][j] = B[p, j], zero past nc."""
    cdef Py_ssize_t panel, j, p, cols
    cdef floating* dst
    cdef const floating* src
    if cs == 1 and rs != 1:
        # row-major B: along whole rows of the block, so reads are sequential (panel by
        # panel, each row's few floats were a cache miss: rows of a 1024-wide B are
        # 4 KB apart, beyond the stride prefetcher's reach). Each row of a 1024-wide B is
        # a page of its own, where the hardware's streams stop; each panel's lines
        # MN_PF_ROWS rows on are fetched as it is copied (1024^3 on two threads, Xeon
        # model 207, perf: the copy's share 3.3-3.5% -> 2.4-2.8%; 2 to 16 rows alike)
        for p in range(kc):
            src = B + p * rs
            for panel in range(p0, p1):
                dst = out + panel * nr * kc + p * nr
                cols = nc - panel * nr
                if p + MN_PF_ROWS < kc:
                    mn_prefetch_l2(src + MN_PF_ROWS * rs + panel * nr)
                    mn_prefetch_l2(src + MN_PF_ROWS * rs + panel * nr + nr - 1)
                if cols >= nr:
                    # a constant size is copied inline (vector moves); memcpy of nr items
                    # was a call per 128 bytes (1024^3, two threads: 1.75% of the time)
                    if nr * sizeof(floating) == 128:
                        memcpy(dst, src + panel * nr, 128)
                    elif nr * sizeof(floating) == 64:
                        memcpy(dst, src + panel * nr, 64)
                    else:
                        memcpy(dst, src + panel * nr, nr * sizeof(floating))
                    continue
                for j in range(cols):
                    dst[j] = src[panel * nr + j]
                for j in range(cols, nr):
                    dst[j] = 0
        return
    if rs == 1 and cs != 1:
        # B transposed (W.T in an input gradient): blocks of columns transposed in
        # registers (_gemm.h); panels p0..p1 are columns p0 nr .. min(p1 nr, nc)
        cols = min(nc, p1 * nr) - p0 * nr
        if cols > 0:
            if floating is float:
                mn_pack_b_t_f32(B + p0 * nr * cs, cs, kc, cols, out + p0 * nr * kc)
            else:
                mn_pack_b_t_f64(B + p0 * nr * cs, cs, kc, cols, out + p0 * nr * kc)
        return
    for panel in range(p0, p1):
        dst = out + panel * nr * kc
        cols = nc - panel * nr
        if cols > nr:
            cols = nr
        for p in range(kc):
            src = B + p * rs + panel * nr * cs
            if cs == 1:
                for j in range(cols):
                    dst[p * nr + j] = src[j]
            else:
                for j in range(cols):
                    dst[p * nr + j] = src[j * cs]
            for j in range(cols, nr):
                dst[p * nr + j] = 0


# the largest packed A panel (MR x KC items) micro_tiles keeps in L1: half of the L1 data
# cache (48 KB on the Xeons, 32 KB on Zen 4), 16 KB where the size is not known
cdef extern from *:
    """
    #include <unistd.h>
    static long mn_half_l1d_bytes(void) {
        long l1 = 0;
    #ifdef _SC_LEVEL1_DCACHE_SIZE
        l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    #endif
        return l1 > 0 ? l1 / 2 : 16 * 1024;
    }
    static long mn_l2_bytes(void) {
        long l2 = 0;
    #ifdef _SC_LEVEL2_CACHE_SIZE
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    #endif
        return l2 > 0 ? l2 : 1024 * 1024;
    }
    """
    long mn_half_l1d_bytes()
    long mn_l2_bytes()

cdef Py_ssize_t A_PANEL_L1 = mn_half_l1d_bytes()
# The B panels an A panel meets before the next A panel takes its place (A-panel-major
# tiles): at most this many bytes of them, so that they come back from L2 for every A
# panel of the block, which the whole KC x NC block of B (3 MB at KC 384, NC 2048) did not.
cdef Py_ssize_t B_GROUP_L2 = mn_l2_bytes() * 3 // 8


cdef void micro_tiles(const floating* Ap, const floating* Bp, floating* C, Py_ssize_t ldc,
                      Py_ssize_t mc, Py_ssize_t nc, Py_ssize_t kc, int nr,
                      int accumulate) noexcept nogil:
    """The micro-tiles of a packed block, A-panel-major where an A panel fits half of L1
    (A_PANEL_L1): it stays in L1 while a group of B panels (B_GROUP_L2 bytes, from L2)
    streams past, then the next A panel meets the same group. Without the groups, every A
    panel met all of a 3 MB block of B from L3: in-process A/B, Xeon model 167 (2 MB L2),
    2048^3 took 0.96x the time with them on one thread and two, 1024^3 and 256 x 1024 x
    1024 (B blocks of 1.4 MB) a tie. B-panel-major kept a B panel (KC x NR, 48 KB with
    AVX-512 float32: all of a 48 KB L1) for the A panels to stream through and evict.
    float32, Xeon model 207 (48 KB L1), in-process A/B: A-major took 0.92-0.97x the time
    from 256 x 1024 x 1024 to 2048^3 on one thread, 0.96-0.99x on two; with the AVX2
    kernels 0.91-0.98x. float64 AVX-512 panels (12 x 384 doubles, 36 KB)
    stay B-major: A-major took 1.04-1.07x there. On Zen 4 (32 KB L1) the 18 KB float32
    panels stay B-major, the order that reached 86-89% of its peak there (A-major not
    measured on it)."""
    cdef Py_ssize_t npn = (nc + nr - 1) // nr, mp = (mc + MR - 1) // MR, ip, jp, j0, group
    if MR * kc * <Py_ssize_t>sizeof(floating) > A_PANEL_L1:
        for jp in range(npn):
            for ip in range(mp):
                one_tile(Ap, Bp, C, ldc, mc, nc, kc, nr, accumulate, ip, jp)
        return
    group = max(1, B_GROUP_L2 // (nr * kc * <Py_ssize_t>sizeof(floating)))
    j0 = 0
    while j0 < npn:
        for ip in range(mp):
            for jp in range(j0, min(j0 + group, npn)):
                one_tile(Ap, Bp, C, ldc, mc, nc, kc, nr, accumulate, ip, jp)
        j0 += group


cdef inline void one_tile(const floating* Ap, const floating* Bp, floating* C, Py_ssize_t ldc,
                          Py_ssize_t mc, Py_ssize_t nc, Py_ssize_t kc, int nr, int accumulate,
                          Py_ssize_t ip, Py_ssize_t jp) noexcept nogil:
    """Micro-tile (ip, jp) of a packed block: the kernel on C in place, or an edge tile
    computed aside and written back."""
    cdef floating tile[16 * 64]
    cdef Py_ssize_t rows = mc - ip * MR, cols = nc - jp * nr
    if rows >= MR and cols >= nr:
        if floating is float:
            mn_kernel_f32(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, C + ip * MR * ldc + jp * nr,
                          ldc, accumulate)
        else:
            mn_kernel_f64(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, C + ip * MR * ldc + jp * nr,
                          ldc, accumulate)
        return
    # edge tile: compute the padded tile aside (half width when the edge allows: a
    # packed panel is A read with row stride 1 and column stride MR), write back
    rows = rows if rows < MR else MR
    cols = cols if cols < nr else nr
    sa_kernel(kc, Ap + ip * MR * kc, 1, MR, Bp + jp * nr * kc, tile, nr, 0, cols <= nr // 2,
              rows <= MR_SHORT)
    write_tile(tile, nr, C + ip * MR * ldc + jp * nr, ldc, rows, cols, accumulate)


cdef inline void sa_kernel(Py_ssize_t kc, const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                           const floating* B, floating* C, Py_ssize_t ldc, int accumulate,
                           bint half, bint few=False) noexcept nogil:
    """The in-place-A kernel: MR rows, or MR_SHORT (few) for a last panel of few rows;
    NR columns, or NR/2 (half)."""
    if floating is float:
        if few and half:
            mn_kernel_sa_short_half_f32(kc, A, ars, acs, B, C, ldc, accumulate)
        elif few:
            mn_kernel_sa_short_f32(kc, A, ars, acs, B, C, ldc, accumulate)
        elif half:
            mn_kernel_sa_half_f32(kc, A, ars, acs, B, C, ldc, accumulate)
        else:
            mn_kernel_sa_f32(kc, A, ars, acs, B, C, ldc, accumulate)
    else:
        if few and half:
            mn_kernel_sa_short_half_f64(kc, A, ars, acs, B, C, ldc, accumulate)
        elif few:
            mn_kernel_sa_short_f64(kc, A, ars, acs, B, C, ldc, accumulate)
        elif half:
            mn_kernel_sa_half_f64(kc, A, ars, acs, B, C, ldc, accumulate)
        else:
            mn_kernel_sa_f64(kc, A, ars, acs, B, C, ldc, accumulate)


cdef inline void write_tile(const floating* tile, Py_ssize_t ldt, floating* C, Py_ssize_t ldc,
                            Py_ssize_t rows, Py_ssize_t cols, int accumulate) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(cols):
            if accumulate:
                C[i * ldc + j] += tile[i * ldt + j]
            else:
                C[i * ldc + j] = tile[i * ldt + j]


cdef inline Py_ssize_t k_step(Py_ssize_t K) noexcept nogil:
    """KC blocks of equal size: 784 = 4 x 196, not 3 x 256 + 16 (a 16-deep block pays
    a whole C tile update for little work)."""
    cdef Py_ssize_t nblocks = (K + KC - 1) // KC
    return (K + nblocks - 1) // nblocks if nblocks > 0 else KC


# gemm_direct computes the tail columns every TAIL_ROWS row panels (96 rows of 392 floats:
# 150 KB of A, still in L2), keeping the last call at least a vector of rows
cdef Py_ssize_t TAIL_ROWS = 8

cdef enum:
    NO_TAIL = 0
    DOT_TAIL = 1    # A row-major: dot products along K (tail_dot)
    LANE_TAIL = 2   # A transposed: A's rows in the vector lanes (tail_lane)


cdef inline int tail_kind(Py_ssize_t N, Py_ssize_t K, Py_ssize_t rows, int nr, Py_ssize_t ars,
                          Py_ssize_t acs) noexcept nogil:
    """How gemm_direct computes a last column panel of at most nr/4 columns (N > nr) for
    `rows` rows: with the long dimension in the vector lanes when A's layout allows (for
    A's rows in the lanes, at least a vector of them), else the half kernel.
    The dot products pay a sum across lanes per output, so they need K blocks of at least
    16 vectors (8 nr items): at 4 vectors (512 x 64 x 40) they took 1.6x the half kernel's
    time, at 8 (128 x 128 x 200) 1.05x."""
    cdef Py_ssize_t cols = N % nr
    if N < nr or cols == 0 or cols > nr // 4:
        return NO_TAIL
    if acs == 1 and k_step(K) >= 8 * nr:
        return DOT_TAIL
    if ars == 1 and rows >= nr // 2:
        return LANE_TAIL
    return NO_TAIL


cdef void pack_tail_t(const floating* B, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t kc,
                      Py_ssize_t cols, floating* out) noexcept nogil:
    """out[j * kc + p] = B[p, j]: a few columns of B, each a contiguous row (tail_dot)."""
    cdef Py_ssize_t p, j
    for p in range(kc):
        for j in range(cols):
            out[j * kc + p] = B[p * rs + j * cs]


cdef void tail_cols(int kind, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc,
                    const floating* A, Py_ssize_t ars, Py_ssize_t acs, const floating* Bt,
                    int nr, floating* C, Py_ssize_t ldc, int accumulate) noexcept nogil:
    """C's last `cols` columns for `rows` rows from A (this K block) and the tail's packing."""
    if kind == DOT_TAIL:
        if floating is float:
            mn_tail_dot_f32(rows, cols, kc, A, ars, Bt, C, ldc, accumulate)
        else:
            mn_tail_dot_f64(rows, cols, kc, A, ars, Bt, C, ldc, accumulate)
    else:
        if floating is float:
            mn_tail_lane_f32(rows, cols, kc, A, acs, Bt, nr, C, ldc, accumulate)
        else:
            mn_tail_lane_f64(rows, cols, kc, A, acs, Bt, nr, C, ldc, accumulate)


cdef void gemm_direct(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                      const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                      floating* C, Py_ssize_t ldc, floating* Bp, floating* Aedge,
                      Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """Rows i0..i1 of C = A @ B for narrow products (N <= 2 NR): B packed per K block, A
    read in place by the micro-kernel (only a last partial row panel is packed, so no
    read passes the end of A)."""
    cdef floating tile[16 * 64]
    cdef int nr = mn_gemm_nr(sizeof(floating))
    cdef Py_ssize_t npan = (N + nr - 1) // nr, kstep = k_step(K), pc, kc, ip, jp, rows, cols
    cdef Py_ssize_t rs, cs, nfull = npan, n0 = (npan - 1) * nr, t0
    cdef const floating* Ai
    cdef bint half
    cdef int tail = tail_kind(N, K, i1 - i0, nr, ars, acs)
    if tail != NO_TAIL:
        nfull = npan - 1   # the last panel's columns go to tail_cols
    pc = 0
    while pc < K:
        kc = K - pc if K - pc < kstep else kstep
        if tail == DOT_TAIL:   # the tail transposed into the last panel's space
            pack_b(B + pc * brs, brs, bcs, kc, n0, Bp, nr, 0, nfull)
            pack_tail_t(B + pc * brs + n0 * bcs, brs, bcs, kc, N - n0, Bp + n0 * kc)
        else:
            pack_b(B + pc * brs, brs, bcs, kc, N, Bp, nr, 0, npan)
        ip = t0 = i0
        while ip < i1:
            if tail != NO_TAIL and ip >= t0 + TAIL_ROWS * MR and i1 - ip >= nr // 2:
                # the tail of the rows just done, while their A is still in cache (called
                # once for all rows, it read a 100000 x 784 A from memory twice: 0.87x numpy)
                tail_cols(tail, ip - t0, N - n0, kc, A + t0 * ars + pc * acs, ars, acs,
                          Bp + n0 * kc, nr, C + t0 * ldc + n0, ldc, pc > 0)
                t0 = ip
            rows = i1 - ip if i1 - ip < MR else MR
            Ai, rs, cs = A + ip * ars + pc * acs, ars, acs
            if rows < MR:
                pack_a(Ai, ars, acs, rows, kc, Aedge, 0, 1)
                Ai, rs, cs = Aedge, 1, MR
            for jp in range(nfull):
                cols = N - jp * nr if N - jp * nr < nr else nr
                half = cols <= nr // 2
                if rows == MR and cols == (nr // 2 if half else nr):
                    sa_kernel(kc, Ai, rs, cs, Bp + jp * nr * kc, C + ip * ldc + jp * nr, ldc,
                              pc > 0, half)
                else:
                    sa_kernel(kc, Ai, rs, cs, Bp + jp * nr * kc, tile, nr, 0, half,
                              rows <= MR_SHORT)
                    write_tile(tile, nr, C + ip * ldc + jp * nr, ldc, rows, cols, pc > 0)
            ip += MR
        if tail != NO_TAIL:
            tail_cols(tail, i1 - t0, N - n0, kc, A + t0 * ars + pc * acs, ars, acs,
                      Bp + n0 * kc, nr, C + t0 * ldc + n0, ldc, pc > 0)
        pc += kc


cdef void gemm_rows(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                    const floating* B, Py_ssize_t brs, floating* C, Py_ssize_t ldc,
                    floating* Ap, floating* Bedge, Py_ssize_t jp0, Py_ssize_t jp1) noexcept nogil:
    """Column panels jp0..jp1 of C = A @ B for few rows (M <= 4 MR) and B with unit column
    stride: A (all M rows) packed per K block, B read in place by the micro-kernel; only a
    last partial column panel is packed (no read past a row of B)."""
    cdef floating tile[16 * 64]
    cdef int nr = mn_gemm_nr(sizeof(floating))
    cdef Py_ssize_t mp = (M + MR - 1) // MR, kstep = k_step(K), pc, kc, ip, jp, rows, cols
    pc = 0
    while pc < K:
        kc = K - pc if K - pc < kstep else kstep
        pack_a(A + pc * acs, ars, acs, M, kc, Ap, 0, mp)
        for jp in range(jp0, jp1):
            cols = N - jp * nr if N - jp * nr < nr else nr
            if cols < nr:
                pack_b(B + pc * brs + jp * nr, brs, 1, kc, cols, Bedge, nr, 0, 1)
            for ip in range(mp):
                rows = M - ip * MR if M - ip * MR < MR else MR
                if cols == nr and rows == MR:
                    if floating is float:
                        mn_kernel_sb_f32(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr, brs,
                                         C + ip * MR * ldc + jp * nr, ldc, pc > 0)
                    else:
                        mn_kernel_sb_f64(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr, brs,
                                         C + ip * MR * ldc + jp * nr, ldc, pc > 0)
                    continue
                if cols == nr and rows <= MR_SHORT:
                    if floating is float:
                        mn_kernel_sb_short_f32(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr,
                                               brs, tile, nr, 0)
                    else:
                        mn_kernel_sb_short_f64(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr,
                                               brs, tile, nr, 0)
                elif cols == nr:
                    if floating is float:
                        mn_kernel_sb_f32(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr, brs,
                                         tile, nr, 0)
                    else:
                        mn_kernel_sb_f64(kc, Ap + ip * MR * kc, B + pc * brs + jp * nr, brs,
                                         tile, nr, 0)
                else:
                    sa_kernel(kc, Ap + ip * MR * kc, 1, MR, Bedge, tile, nr, 0, cols <= nr // 2,
                              rows <= MR_SHORT)
                write_tile(tile, nr, C + ip * MR * ldc + jp * nr, ldc, rows, cols, pc > 0)
        pc += kc


cdef void micro_tiles_bc(const floating* Ap, const floating* Bp, floating* C, Py_ssize_t ldc,
                         Py_ssize_t mc, Py_ssize_t nc, Py_ssize_t kc, int nr,
                         int accumulate) noexcept nogil:
    """micro_tiles for pre-broadcast A panels (MRB rows, nr/2 copies per value); edge
    tiles run the full kernel into a tile aside (the panels are zero-padded)."""
    cdef floating tile[16 * 64]
    cdef Py_ssize_t mp = (mc + MRB - 1) // MRB, npan = (nc + nr - 1) // nr, ip, jp, rows, cols
    cdef Py_ssize_t astride = MRB * kc * (nr // 2)
    cdef floating* c
    cdef floating* d
    cdef Py_ssize_t ld
    for jp in range(npan):   # B-panel-major: a B panel stays in L1
        cols = min(nc - jp * nr, nr)
        for ip in range(mp):
            rows = min(mc - ip * MRB, MRB)
            c = C + ip * MRB * ldc + jp * nr
            d, ld = c, ldc
            if rows < MRB or cols < nr:
                d, ld = tile, nr
            if floating is float:
                mn_kernel_bc_f32(kc, Ap + ip * astride, Bp + jp * nr * kc, d, ld,
                                 accumulate and d == c)
            else:
                mn_kernel_bc_f64(kc, Ap + ip * astride, Bp + jp * nr * kc, d, ld,
                                 accumulate and d == c)
            if d != c:
                write_tile(tile, nr, c, ldc, rows, cols, accumulate)


cdef inline Py_ssize_t even_rows(Py_ssize_t M, int t, int team) noexcept nogil:
    """Where thread t's rows of C start (t = team: M): equal shares in multiples of 4 rows,
    so each thread may end on a short panel (the edge kernel) rather than one thread
    taking a whole panel more: 1024 rows on two threads by 12-row panels were 516 + 508
    (43 panels against 42 and a 4-row one), now 512 + 512 (42 and an 8-row one each)."""
    if t >= team:
        return M
    return M * t // team // 4 * 4


# B panels a claim packs in gemm_shared (along the rows of the block: 1 KB a row of
# B with AVX-512 float32 panels)
cdef Py_ssize_t B_CHUNK = 8


cdef inline Py_ssize_t b_chunks(Py_ssize_t N, Py_ssize_t jc, int nr) noexcept nogil:
    """The claims (B_CHUNK panels) of a KC x NC block of B at column jc."""
    cdef Py_ssize_t nc = N - jc if N - jc < NC else NC
    return ((nc + nr - 1) // nr + B_CHUNK - 1) // B_CHUNK


cdef void gemm_shared(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                      const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                      floating* C, Py_ssize_t ldc, floating* Ap, floating* Bp,
                      Py_ssize_t bpsize, mn_claims* cl, int tid, int team) noexcept nogil:
    """Thread tid of a team's blocked product: the team packs each KC x NC block of B
    together into a shared buffer, then each thread multiplies its own slice of C's row
    panels by all of it, with its own packed A. Against each thread packing the B (or A)
    it needs, no operand is packed twice and the threads read one B block from L3. Every
    thread runs the same jc / pc loops, whatever its share of rows, so the barriers match.
    With claims (cl: two, for alternate blocks) the blocks alternate between two buffers
    (Bp, Bp + bpsize) and their panels are claimed B_CHUNK at a time: a thread done with
    one block's products packs the next at once, more of it when the other is late, and
    one barrier a block (the block is packed) is all the team waits at. Without, a static
    half each between two barriers (nobody still reads the buffer; it is packed). A team
    of one (tid 0) is gemm_blocked, with no barriers (gemm_sliced's threads call it on
    their own)."""
    cdef int nr = mn_gemm_nr(sizeof(floating))
    cdef Py_ssize_t kstep = k_step(K), jc, pc, ic, nc, kc, mc, npan, c, blk = 0
    cdef Py_ssize_t r0 = even_rows(M, tid, team), r1 = even_rows(M, tid + 1, team)
    cdef floating* buf = Bp
    jc = 0
    while jc < N:
        nc = N - jc if N - jc < NC else NC
        npan = (nc + nr - 1) // nr
        pc = 0
        while pc < K:
            kc = K - pc if K - pc < kstep else kstep
            if team > 1 and cl != NULL:
                buf = Bp + (blk & 1) * bpsize   # last read by block blk - 2
                while True:
                    c = mn_claim(&cl[blk & 1], tid)
                    if c < 0:
                        break
                    pack_b(B + pc * brs + jc * bcs, brs, bcs, kc, nc, buf, nr, c * B_CHUNK,
                           min((c + 1) * B_CHUNK, npan))
                if tid == 0:
                    # the claims of block blk + 1: nobody claims block blk - 1's any more
                    # (all passed its barrier), nobody claims these before the barrier
                    if pc + kc < K:
                        mn_claims_reset(&cl[(blk + 1) & 1], b_chunks(N, jc, nr))
                    elif jc + NC < N:
                        mn_claims_reset(&cl[(blk + 1) & 1], b_chunks(N, jc + NC, nr))
                mn_team_barrier()   # the whole block is packed
            else:
                if team > 1:
                    mn_team_barrier()   # nobody still reads the previous block
                pack_b(B + pc * brs + jc * bcs, brs, bcs, kc, nc, Bp, nr, npan * tid // team,
                       npan * (tid + 1) // team)
                if team > 1:
                    mn_team_barrier()   # the whole block is packed
            ic = r0
            while ic < r1:
                mc = r1 - ic if r1 - ic < MC else MC
                a_block(A + ic * ars + pc * acs, ars, acs, mc, kc, Ap, buf,
                        C + ic * ldc + jc, ldc, nc, nr, pc > 0)
                ic += MC
            pc += kc
            blk += 1
        jc += NC


cdef void gemm_blocked(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                       const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                       floating* C, Py_ssize_t ldc, floating* Ap, floating* Bp) noexcept nogil:
    """One thread's product: NC x KC blocks of B packed, MC x KC blocks of A packed, the
    micro-kernel swept over them (threads split C between them, see gemm_sliced): the
    shared product's loops for a team of one."""
    gemm_shared(M, N, K, A, ars, acs, B, brs, bcs, C, ldc, Ap, Bp, 0, NULL, 0, 1)


cdef inline void a_block(const floating* A, Py_ssize_t ars, Py_ssize_t acs, Py_ssize_t mc,
                         Py_ssize_t kc, floating* Ap, const floating* Bp, floating* C,
                         Py_ssize_t ldc, Py_ssize_t nc, int nr, int accumulate) noexcept nogil:
    """Packs an mc x kc block of A and multiplies it by a packed kc x nc block of B."""
    cdef Py_ssize_t mpan
    if BC:
        if floating is float:
            mn_pack_a_bc_f32(A, ars, acs, mc, kc, Ap)
        else:
            mn_pack_a_bc_f64(A, ars, acs, mc, kc, Ap)
        micro_tiles_bc(Ap, Bp, C, ldc, mc, nc, kc, nr, accumulate)
        return
    mpan = (mc + MR - 1) // MR
    pack_a(A, ars, acs, mc, kc, Ap, 0, mpan)
    micro_tiles(Ap, Bp, C, ldc, mc, nc, kc, nr, accumulate)


cdef void gemm_small(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                     const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                     floating* C, Py_ssize_t ldc) noexcept nogil:
    """Plain i-k-j loops: for tiny products packing costs more than it saves; with unit
    column stride in B the inner loop vectorises (a matrix-vector product)."""
    cdef Py_ssize_t i, j, p
    cdef floating a
    cdef floating* c
    cdef const floating* b
    if bcs == 1:
        for i in range(M):
            c = C + i * ldc
            for j in range(N):
                c[j] = 0
            for p in range(K):
                a = A[i * ars + p * acs]
                b = B + p * brs
                for j in range(N):
                    c[j] += a * b[j]
        return
    for i in range(M):
        for j in range(N):
            C[i * ldc + j] = 0
        for p in range(K):
            a = A[i * ars + p * acs]
            for j in range(N):
                C[i * ldc + j] += a * B[p * brs + j * bcs]


cdef void gemm_ksplit(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                      const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                      floating* C, floating* part, floating* Ap, floating* Bp,
                      Py_ssize_t apsize, Py_ssize_t bpsize, int parts, int nt,
                      bint direct) noexcept nogil:
    """C as the sum of `parts` products over slices of K, the first written into C and
    the others into partials, then added into C by rows, in one parallel region of nt
    threads. Thin products (few output tiles, long K, e.g. conv weight gradients) pack
    both operands per slice (gemm_blocked); narrow ones with few rows (direct: x @ W1 of
    an MLP, 100 x 784 x 100) read A in place and pack only the slice's rows of B, where
    split by rows every thread packed all of B (on two cores both read all of it; now
    each reads its own half, the half its optimizer step also keeps). `parts` is fixed
    by the size and sets the rounding; the nt threads (timing may give one on the narrow
    split) share the slices, so the sums do not depend on how many ran them."""
    cdef Py_ssize_t t, k0, k1, i, r0, r1
    cdef floating* dst
    cdef int u
    with parallel(num_threads=nt):
        for t in prange(parts, schedule='static'):
            arrived(threadid())
            k0 = K * t // parts
            k1 = K * (t + 1) // parts
            dst = C if t == 0 else part + (t - 1) * M * N
            if direct:
                gemm_direct(M, N, k1 - k0, A + k0 * acs, ars, acs, B + k0 * brs, brs, bcs,
                            dst, N, Bp + t * bpsize, Ap + t * apsize, 0, M)
            else:
                gemm_blocked(M, N, k1 - k0, A + k0 * acs, ars, acs, B + k0 * brs, brs, bcs,
                             dst, N, Ap + t * apsize, Bp + t * bpsize)
            finished(threadid())
        # every partial written before any is added (Cython's worksharing loops are
        # nowait: the barrier gcc places for their lastprivates is not one to rely on)
        mn_team_barrier()
        for t in prange(parts, schedule='static'):
            r0 = M * N * t // parts
            r1 = M * N * (t + 1) // parts
            for u in range(1, parts):
                for i in range(r0, r1):
                    C[i] = C[i] + part[(u - 1) * M * N + i]


cdef void gemm_sliced(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                      const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                      floating* C, floating* Ap, floating* Bp,
                      Py_ssize_t apsize, Py_ssize_t bpsize, int nt, bint direct) noexcept nogil:
    """Each thread computes whole micro-panels of C, a slice of its rows or columns,
    with its own packing, in one parallel region: fork/join per cache block cost more
    than the packing a thread repeats (B's K x N, or A's M x K, once per thread). The
    split is the dimension whose micro-panels divide more evenly over the threads;
    narrow products (direct) split rows and read A in place."""
    cdef int nr = mn_gemm_nr(sizeof(floating)), t
    cdef int mr = MRB if BC and not direct else MR   # the row panels gemm_blocked packs
    cdef Py_ssize_t mp = (M + mr - 1) // mr, npn = (N + nr - 1) // nr, p0, p1, a, b
    # the larger share of panels one thread gets, compared as fractions
    cdef Py_ssize_t share_cols = ((npn + nt - 1) // nt) * mp, share_rows = ((mp + nt - 1) // nt) * npn
    cdef int tid
    # rows with one shared packed B (gemm_shared) unless that splits the tiles 1/16 less
    # evenly than columns do (1/8 with pre-broadcast A, which a column split would pack
    # whole in every thread: nr/2 times B's size)
    cdef mn_claims cl[2]
    cdef mn_claims* claims = cl
    cdef int failed
    if not direct and share_rows * (8 if BC else 16) <= share_cols * (9 if BC else 17):
        # two buffers of B (the nt >= 2 threads' packing space), claims for alternate
        # blocks (out of memory: the static split)
        failed = mn_claims_init(&cl[0], b_chunks(N, 0, nr), nt)
        failed |= mn_claims_init(&cl[1], 0, nt)   # both allocate (both are freed)
        if failed:
            claims = NULL
        with parallel(num_threads=nt):
            tid = threadid()
            arrived(tid)
            gemm_shared(M, N, K, A, ars, acs, B, brs, bcs, C, N, Ap + tid * apsize, Bp,
                        bpsize, claims, tid, mn_team_size())
            finished(tid)
        mn_claims_free(&cl[0])
        mn_claims_free(&cl[1])
        return
    # here a packed product splits columns (rows split less evenly, else gemm_shared ran)
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        if not direct:
            p0, p1 = npn * t // nt, npn * (t + 1) // nt
            a, b = p0 * nr, min(p1 * nr, N)
            if b > a:
                gemm_blocked(M, b - a, K, A, ars, acs, B + a * bcs, brs, bcs, C + a, N,
                             Ap + t * apsize, Bp + t * bpsize)
        else:
            p0, p1 = mp * t // nt, mp * (t + 1) // nt
            a, b = p0 * mr, min(p1 * mr, M)
            if b > a:
                gemm_direct(M, N, K, A, ars, acs, B, brs, bcs, C, N, Bp + t * bpsize,
                            Ap + t * apsize, a, b)
        finished(threadid())


cdef void gemm_rows_split(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                          const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                          const floating* B, Py_ssize_t brs, floating* C, floating* Ap,
                          floating* Bp, Py_ssize_t apsize, Py_ssize_t bpsize, int nt) noexcept nogil:
    """gemm_rows with the column panels split over the threads (each packs its own A)."""
    cdef int nr = mn_gemm_nr(sizeof(floating)), t
    cdef Py_ssize_t npn = (N + nr - 1) // nr
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        gemm_rows(M, N, K, A, ars, acs, B, brs, C, N, Ap + t * apsize, Bp + t * bpsize,
                  npn * t // nt, npn * (t + 1) // nt)
        finished(threadid())


cdef void inplace_part(Py_ssize_t N, Py_ssize_t K, const floating* A, Py_ssize_t ars,
                       Py_ssize_t acs, const floating* B, Py_ssize_t ldb, floating* C,
                       Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t jp0, Py_ssize_t jp1) noexcept nogil:
    if floating is float:
        mn_gemm_small_f32(N, K, A, ars, acs, B, ldb, C, N, i0, i1, jp0, jp1)
    else:
        mn_gemm_small_f64(N, K, A, ars, acs, B, ldb, C, N, i0, i1, jp0, jp1)


cdef void gemm_inplace(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                       const floating* B, Py_ssize_t brs, floating* C, int nt) noexcept nogil:
    """Small products with both operands read in place (_gemm_small.h). Threads take
    column panels when that splits the work as evenly as rows do (48 columns are a
    32 + 16 split), else slices of rows in multiples of 4 (the kernels' heights)."""
    cdef int nr = mn_gemm_nr(sizeof(floating)), t
    cdef Py_ssize_t npn = (N + nr - 1) // nr, nvec = (2 * N + nr - 1) // nr, i0, i1
    # the largest share of one thread each way, in rows x vectors of columns
    cdef Py_ssize_t by_cols = min((npn + nt - 1) // nt * 2, nvec) * M
    cdef Py_ssize_t by_rows = ((M + 4 * nt - 1) // (4 * nt) * 4) * nvec
    if nt == 1:
        inplace_part(N, K, A, ars, acs, B, brs, C, 0, M, 0, npn)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        arrived(threadid())
        if by_cols <= by_rows:
            inplace_part(N, K, A, ars, acs, B, brs, C, 0, M, npn * t // nt, npn * (t + 1) // nt)
        else:
            i0 = min((M * t // nt + 2) // 4 * 4, M)
            i1 = M if t == nt - 1 else min((M * (t + 1) // nt + 2) // 4 * 4, M)
            inplace_part(N, K, A, ars, acs, B, brs, C, i0, i1, 0, npn)
        finished(threadid())


cdef void transpose_into(const floating* src, floating* dst, Py_ssize_t rows,
                         Py_ssize_t cols) noexcept nogil:
    """dst (cols x rows) = src (rows x cols)^T, in 32 x 32 blocks."""
    cdef Py_ssize_t i0, j0, i, j
    for i0 in range(0, rows, 32):
        for j0 in range(0, cols, 32):
            for j in range(j0, min(j0 + 32, cols)):
                for i in range(i0, min(i0 + 32, rows)):
                    dst[j * rows + i] = src[i * cols + j]


cdef inline int swap_inner_path(Py_ssize_t M, Py_ssize_t N, Py_ssize_t ars,
                                int nr) noexcept nogil:
    """The path of SWAP_PATH's inner product C^T = B^T @ A^T (N x M): pack_sizes sizes
    its buffers for this same path. Few rows of C^T (a thin C) with A^T row-major (A
    transposed, x.T in a weight gradient): A^T read in place by the few-rows path."""
    if N <= 4 * MR and ars == 1 and M >= nr:
        return ROWS_PATH
    return DIRECT_PATH if M <= 8 * nr else BLOCKED_PATH


cdef void gemm_one(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                   const floating* B, Py_ssize_t brs, Py_ssize_t bcs, floating* C,
                   floating* Ap, floating* Bp, floating* part, Py_ssize_t apsize,
                   Py_ssize_t bpsize, int nt, int path, int run) noexcept nogil:
    """One product C (M x N, compact) on the path gemm() chose: nt shares of the work (the
    packing buffers', the K splits' partial sums), run by `run` threads on the narrow K
    split (timing may give one), by nt on the others."""
    if K == 0:
        memset(C, 0, M * N * sizeof(floating))
    elif path == SMALL_PATH:
        gemm_small(M, N, K, A, ars, acs, B, brs, bcs, C, N)
    elif path == INPLACE_PATH:
        gemm_inplace(M, N, K, A, ars, acs, B, brs, C, nt)
    elif path == SWAP_PATH:
        # C^T = B^T @ A^T into `part`, then transposed into C: B^T is row-major, so it is
        # read in place as the narrow product's A (few rows of C = few columns of C^T)
        gemm_one(N, M, K, B, bcs, brs, A, acs, ars, part, Ap, Bp, part + M * N, apsize,
                 bpsize, nt, swap_inner_path(M, N, ars, mn_gemm_nr(sizeof(floating))), nt)
        transpose_into(part, C, N, M)
    elif path == KSPLIT_DIRECT_PATH:
        gemm_ksplit(M, N, K, A, ars, acs, B, brs, bcs, C, part, Ap, Bp, apsize, bpsize, nt,
                    run, True)
    elif path == KSPLIT_PATH:
        gemm_ksplit(M, N, K, A, ars, acs, B, brs, bcs, C, part, Ap, Bp, apsize, bpsize, nt,
                    nt, False)
    elif nt > 1 and path == ROWS_PATH:
        gemm_rows_split(M, N, K, A, ars, acs, B, brs, C, Ap, Bp, apsize, bpsize, nt)
    elif nt > 1:
        gemm_sliced(M, N, K, A, ars, acs, B, brs, bcs, C, Ap, Bp, apsize, bpsize, nt,
                    path == DIRECT_PATH)
    elif path == DIRECT_PATH:
        gemm_direct(M, N, K, A, ars, acs, B, brs, bcs, C, N, Bp, Ap, 0, M)
    elif path == ROWS_PATH:
        gemm_rows(M, N, K, A, ars, acs, B, brs, C, N, Ap, Bp, 0,
                  (N + mn_gemm_nr(sizeof(floating)) - 1) // mn_gemm_nr(sizeof(floating)))
    else:
        gemm_blocked(M, N, K, A, ars, acs, B, brs, bcs, C, N, Ap, Bp)


cdef enum:
    SMALL_PATH = 0
    KSPLIT_PATH = 1
    DIRECT_PATH = 2
    BLOCKED_PATH = 3
    ROWS_PATH = 4
    SWAP_PATH = 5
    INPLACE_PATH = 6
    KSPLIT_DIRECT_PATH = 7


# one thread's ns per multiply-add, float32 (19-24 ps from 64^3 to 256^3 and at 100x784x100
# on a Zen 4 EPYC): threads_timed weighs it against the measured cost of waking the team
cdef double GEMM_NS = 0.02
# the most items of partial sums the narrow K split keeps (1 MB of floats): past it the
# rows split, which packs B a K block at a time, holds less
cdef Py_ssize_t KSD_PARTS = 262144


cdef int choose_path(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ars, Py_ssize_t brs,
                     Py_ssize_t bcs, int nr, int nt) noexcept nogil:
    if M * N * K <= SMALL or K == 0:
        return SMALL_PATH
    if nt > 1 and M <= MC and N <= NC and K >= 4 * KC * nt:
        return KSPLIT_PATH   # one output block but a long K: split K over the threads
    if INPLACE_OK and bcs == 1 and M >= 4 and M * K + K * N <= INPLACE_MAX:
        return INPLACE_PATH  # small: both operands read in place, no packing
    if M <= 4 * MR and brs == 1 and bcs != 1 and N >= 4 * MR:
        return SWAP_PATH     # few rows times a transposed B (h @ W.T): C^T = W @ h^T
    if N <= nr // 2 and M >= 8 * MR and ars == 1:
        # a thin C times A transposed (the logits' weight gradient x.T @ g, N = 10):
        # C^T = g.T @ x has few rows and x row-major, read in place by the full-width
        # kernel (ROWS_PATH), where C's half-width kernel used N of its nr / 2 lanes
        # and took one broadcast per multiply; 0.55x the time at 1024 x 256 x 10 (Xeon)
        return SWAP_PATH
    if M < 4 and bcs == 1:
        return SMALL_PATH    # a row or three (matrix-vector): the unit-stride plain loops
    if M <= 4 * MR and bcs == 1 and N >= nr:
        return ROWS_PATH     # few rows: B read in place, each element is used only M times
    if N <= 8 * nr and nt > 1 and M < K and K >= 128 * nt and (nt - 1) * M * N <= KSD_PARTS:
        # narrow with a longer K than M (an MLP's x @ W1): split K, not rows, so that each
        # thread packs and reads its own slice of B instead of all of it
        return KSPLIT_DIRECT_PATH
    if N <= 8 * nr:
        return DIRECT_PATH   # narrow: A read in place
    return BLOCKED_PATH


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef void pack_sizes(int path, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int nr,
                     Py_ssize_t ars, Py_ssize_t* apsize, Py_ssize_t* bpsize) noexcept nogil:
    """Packing space one thread needs on `path` (items): the most its loops write into
    packed A and B, whatever the block sizes (a K block is at most min(KC, K) deep).
    The narrow path packs all of B's columns and the few-rows path all of A's rows,
    whatever NC and MC: sizing them from min(NC, N) and min(MC, M) overran the heap
    once a block was set smaller than the operand."""
    cdef Py_ssize_t kc = min(KC, K)
    if path == SMALL_PATH or path == INPLACE_PATH:
        apsize[0] = bpsize[0] = 0
    elif path == SWAP_PATH:   # C^T (N x M) = B^T @ A^T, on the inner path gemm_one takes
        pack_sizes(swap_inner_path(M, N, ars, nr), N, M, K, nr, ars, apsize, bpsize)
    elif path == DIRECT_PATH or path == KSPLIT_DIRECT_PATH:
        # all N columns of B per K block (of a slice of K), one partial row panel of A
        apsize[0] = MR * kc
        bpsize[0] = round_up(N, nr) * kc
    elif path == ROWS_PATH:   # all M rows of A per K block, one partial column panel of B
        apsize[0] = round_up(M, MR) * kc
        bpsize[0] = nr * kc
    elif BC:   # the same with A pre-broadcast: nr/2 copies of each value, MRB-row panels
        apsize[0] = round_up(min(MC, M), MRB) * kc * (nr // 2)
        bpsize[0] = round_up(min(NC, N), nr) * kc
    else:   # blocked, K split: an MC x KC block of A, a KC x NC block of B
        apsize[0] = round_up(min(MC, M), MR) * kc
        bpsize[0] = round_up(min(NC, N), nr) * kc


PATH_NAMES = ("small", "ksplit", "direct", "blocked", "rows", "swap", "inplace",
              "ksplit_direct")


def path_of(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ars, Py_ssize_t acs,
            Py_ssize_t brs, Py_ssize_t bcs, int itemsize=4):
    """The name of the path gemm() takes for an M x K by K x N product with these
    strides (in items) at the present thread setting: for tests and for reading a
    profile. Where it splits its work, timing may still run it on one thread
    (threads_timed), except on the split of a long K ("ksplit")."""
    check_itemsize(itemsize, "path_of")
    if M < 0 or N < 0 or K < 0:
        raise ValueError(f"path_of: sizes must be >= 0, got {M} x {K} by {K} x {N}")
    cdef int nr = mn_gemm_nr(itemsize)
    return PATH_NAMES[choose_path(M, N, K, ars, brs, bcs, nr, size_threads(M * N * K // 64))]


def gemm(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs,
         Buffer B, Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs,
         Buffer C, Py_ssize_t c_off, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int itemsize,
         const long long[::1] a_batch=None, const long long[::1] b_batch=None):
    """C[b] = A[b] @ B[b] for each batch b (C compact, batch b at c_off + b*M*N).
    a_batch/b_batch hold each batch's extra offset in items (None: one product)."""
    gemm_core(A, a_off, ars, acs, B, b_off, brs, bcs, C, c_off, M, N, K, itemsize, a_batch,
              b_batch)


def gemm_new(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs,
             Buffer B, Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs,
             Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int itemsize):
    """One product A @ B into a new compact M x N buffer, which it returns: a 2-D matmul's
    allocation and product in one call (a 64^3 product takes ~4.5 us, and the separate
    allocation's Python call ~0.2 of them)."""
    cdef Buffer C = Buffer(M * N * itemsize)
    gemm_core(A, a_off, ars, acs, B, b_off, brs, bcs, C, 0, M, N, K, itemsize, None, None)
    return C


cdef int gemm_core(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs,
                   Buffer B, Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs,
                   Buffer C, Py_ssize_t c_off, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   int itemsize, const long long[::1] a_batch,
                   const long long[::1] b_batch) except -1:
    cdef Py_ssize_t nbatch = 1 if a_batch is None else a_batch.shape[0], b, ao, bo
    if b_batch is not None and b_batch.shape[0] != nbatch:
        raise ValueError("gemm: batch offset arrays differ in length")
    if M == 0 or N == 0 or nbatch == 0:
        return 0
    cdef int nr = mn_gemm_nr(itemsize)
    cdef int nt = threads_for(M * N * K // 64)
    cdef int path = choose_path(M, N, K, ars, brs, bcs, nr, nt)
    # no packing to repeat per thread on the in-place path, but the team's wake-up still
    # costs: a second thread paid from 48^3 on a Zen 4 EPYC, from about 81^3 (2^19
    # multiply-adds) on a Xeon (64^3: 5.5 us on one thread, 6.5-8 on two); and above
    # those floors only while waking the team costs less than its share saves
    # except for the K splits' count of slices, whose partial sums (hence rounding) follow
    # it: that count must not depend on timing. The narrow K split keeps its nt slices
    # whatever timing says and runs them on one thread where waking the others costs
    # more than they save; the long one runs them on nt threads.
    cdef int run = nt
    if path == KSPLIT_DIRECT_PATH:
        run = min(threads_timed(M * N * K // 64, M * N * K * GEMM_NS), nt)
    elif path != KSPLIT_PATH:
        nt = run = threads_timed(M * N * K // (8 if path == INPLACE_PATH else 64),
                                 M * N * K * GEMM_NS)
    cdef Py_ssize_t apsize, bpsize
    pack_sizes(path, M, N, K, nr, ars, &apsize, &bpsize)
    if nt == 1 and nbatch > 1 and b_batch is not None:
        # products too small to split (attention's per-head scores): threads take whole
        # batches instead, one at a time each
        gemm_batches(A, a_off, ars, acs, B, b_off, brs, bcs, C, c_off, M, N, K,
                     itemsize, a_batch, b_batch, path, apsize, bpsize)
        return 0
    cdef Py_ssize_t partsize = ((nt - 1) * M * N if path == KSPLIT_PATH or
                                path == KSPLIT_DIRECT_PATH else
                                (nt + 1) * M * N if path == SWAP_PATH else 0)
    # packing space per thread; K-split partial products, or C^T then the inner
    # product's own partials (SWAP_PATH); none for the unpacked paths
    cdef Buffer apack = Buffer(nt * apsize * itemsize) if apsize else None
    cdef Buffer bpack = Buffer(nt * bpsize * itemsize) if bpsize else None
    cdef Buffer part = Buffer(partsize * itemsize) if partsize else None
    cdef char* ap = <char*>apack.ptr if apsize else NULL
    cdef char* bp = <char*>bpack.ptr if bpsize else NULL
    cdef char* pp = <char*>part.ptr if partsize else NULL
    with nogil:
        for b in range(nbatch):
            ao = a_off + (0 if a_batch is None else a_batch[b])
            bo = b_off + (0 if b_batch is None else b_batch[b])
            if itemsize == 4:
                gemm_one(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs, bcs,
                         <float*>C.ptr + c_off + b * M * N, <float*>ap, <float*>bp,
                         <float*>pp, apsize, bpsize, nt, path, run)
            else:
                gemm_one(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs, bcs,
                         <double*>C.ptr + c_off + b * M * N, <double*>ap, <double*>bp,
                         <double*>pp, apsize, bpsize, nt, path, run)
    return 0


cdef gemm_batches(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs, Buffer B,
                  Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs, Buffer C, Py_ssize_t c_off,
                  Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int itemsize,
                  const long long[::1] a_batch, const long long[::1] b_batch, int path,
                  Py_ssize_t apsize, Py_ssize_t bpsize):
    """gemm's batches of one-thread products, split over the threads (each its own
    packing space and partial sums); the same sums as one after another."""
    cdef Py_ssize_t nbatch = a_batch.shape[0], b, ao, bo
    cdef Py_ssize_t work = nbatch * M * N * K
    cdef int nt = min(threads_timed(work // 64, work * GEMM_NS), nbatch), t
    cdef Py_ssize_t partsize = 2 * M * N if path == SWAP_PATH else 0
    cdef Buffer apack = Buffer(nt * apsize * itemsize) if apsize else None
    cdef Buffer bpack = Buffer(nt * bpsize * itemsize) if bpsize else None
    cdef Buffer part = Buffer(nt * partsize * itemsize) if partsize else None
    cdef char* ap = <char*>apack.ptr if apsize else NULL
    cdef char* bp = <char*>bpack.ptr if bpsize else NULL
    cdef char* pp = <char*>part.ptr if partsize else NULL
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            arrived(threadid())
            for b in range(nbatch * t // nt, nbatch * (t + 1) // nt):
                ao = a_off + a_batch[b]
                bo = b_off + b_batch[b]
                if itemsize == 4:
                    gemm_one(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs,
                             bcs, <float*>C.ptr + c_off + b * M * N, <float*>ap + t * apsize,
                             <float*>bp + t * bpsize, <float*>pp + t * partsize, apsize,
                             bpsize, 1, path, 1)
                else:
                    gemm_one(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs,
                             bcs, <double*>C.ptr + c_off + b * M * N,
                             <double*>ap + t * apsize, <double*>bp + t * bpsize,
                             <double*>pp + t * partsize, apsize, bpsize, 1, path, 1)


cdef void simple_rows(const float* A, const float* B, float* C, Py_ssize_t M, Py_ssize_t N,
                      Py_ssize_t K, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    cdef Py_ssize_t ii, kk, jj, i, p, j
    cdef float a
    ii = i0
    while ii < i1:
        kk = 0
        while kk < K:
            jj = 0
            while jj < N:
                for i in range(ii, min(ii + 64, i1)):
                    for p in range(kk, min(kk + 64, K)):
                        a = A[i * K + p]
                        for j in range(jj, min(jj + 64, N)):
                            C[i * N + j] += a * B[p * N + j]
                jj += 64
            kk += 64
        ii += 64


def matmul_simple(Buffer A, Buffer B, Buffer C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K):
    """Reference for the benchmark: the course's cache-tiled loop (64 x 64 tiles,
    no packing, no register tiling), compact float32, C must start zeroed."""
    cdef int nt = threads_for(M * N * K // 2), t
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            simple_rows(<float*>A.ptr, <float*>B.ptr, <float*>C.ptr, M, N, K,
                        M * t // nt, M * (t + 1) // nt)


# bfloat16 mixed precision ------------------------------------------------------------
# C (float32) = A @ B with A and B read as float32 and rounded to bfloat16 (nearest
# even) while packed, products accumulated in float32 (_bf16.h): vdpbf16ps on CPUs with
# AVX512_BF16, the fp32 micro-kernel on rounded values elsewhere, or AMX tiles (_amx.h)
# where the CPU and OS allow them. One blocked path for every shape (no small/narrow
# special cases): edges go through a padded tile.
cdef extern from "_isa.h" nogil:
    ctypedef void (*bf16_pack_a_t)(const float* A, Py_ssize_t rs, Py_ssize_t cs,
                                   Py_ssize_t mc, Py_ssize_t kc, void* out)
    ctypedef void (*bf16_pack_b_t)(const float* B, Py_ssize_t rs, Py_ssize_t cs,
                                   Py_ssize_t kc, Py_ssize_t nc, void* out)
    ctypedef void (*bf16_kernel_t)(Py_ssize_t kc, const void* A, const void* B, float* C,
                                   Py_ssize_t ldc, int accumulate)
    ctypedef void (*bf16_hook_t)()
    ctypedef struct mn_amx_conv:
        Py_ssize_t N, C, H, W, K, kh, kw, ph, pw, OH, OW
        Py_ssize_t step, nsteps, Qp, Hp, Wp, cw, nch, nkb, nrp
        Py_ssize_t OWg, wcp, wch, Wt, nkb2, ncb2, Kw, Cw
    ctypedef void (*conv_pack_x_t)(const float* x, const mn_amx_conv* g, void* xb,
                                   Py_ssize_t n0, Py_ssize_t n1)
    ctypedef void (*conv_pack_w_t)(const float* w, const mn_amx_conv* g, int flip, void* wb)
    ctypedef void (*conv_units_t)(const mn_amx_conv* g, const void* xb, const void* wb,
                                  float* y, Py_ssize_t u0, Py_ssize_t u1)
    ctypedef struct mn_bf16_kernels:
        int abi
        const char* name
        int mr, nr, kstep, esize
        bf16_pack_a_t pack_a
        bf16_pack_b_t pack_b
        bf16_kernel_t kernel
        bf16_hook_t begin
        bf16_hook_t end
        conv_pack_x_t conv_pack_x
        conv_pack_w_t conv_pack_w
        conv_units_t conv_units
        conv_pack_x_t wgrad_pack_g
        conv_pack_x_t wgrad_pack_x
        conv_units_t wgrad_units
    mn_bf16_kernels mn_bf16_table_set()
    void mn_round_bf16(const float* s, float* d, Py_ssize_t n)
    int MN_KERNELS_ABI


ctypedef struct Bf16Set:
    mn_bf16_kernels k
    Py_ssize_t mc, kc, nc      # cache blocks: mc a multiple of mr, kc of kstep, nc of nr


cdef Bf16Set TABLE16, AMX16
TABLE16.k = mn_bf16_table_set()
# A bf16 panel is half the bytes of a float32 one: a K block twice as deep (fewer
# passes over C) with half as many rows keeps A's MC x KC block at the fp32 path's L2
# footprint. 96/768 beat 192/384 by 0-15% at 1024^3 and 2048^3 on one thread of a
# (shared, noisy) Zen 4 EPYC; two threads were within the noise.
TABLE16.mc, TABLE16.kc, TABLE16.nc = 96, 768, 2048
AMX16.k.abi = 0   # bound on first use (amx_set)
AMX16.mc, AMX16.kc, AMX16.nc = 256, 256, 2048


cdef Bf16Set* amx_set() except NULL:
    """The AMX kernels, bound on first use; RuntimeError (why not) where unavailable."""
    cdef const mn_bf16_kernels* k
    if AMX16.k.abi == 0:
        cap, why = _isa.amx()
        if cap is None:
            raise RuntimeError(f"bf16 GEMM: the AMX kernels cannot run here: {why}")
        k = <const mn_bf16_kernels*>PyCapsule_GetPointer(cap, "mininet_ext.amx")
        if k.abi != MN_KERNELS_ABI:
            raise ImportError("mininet_ext: the AMX kernels come from another build: rebuild")
        AMX16.k = k[0]
    return &AMX16


cdef Bf16Set* bf16_set(str kernels) except NULL:
    if kernels == "amx":
        return amx_set()
    if kernels == "table":
        return &TABLE16
    raise ValueError(f"gemm_bf16: kernels must be 'table' or 'amx', got {kernels!r}")


def amx_available():
    """(True, what) where the AMX bf16 kernels can run in this process, else (False, why
    not); asks the OS for the tile state on the first call."""
    cap, why = _isa.amx()
    return cap is not None, why


def bf16_info(str kernels="table"):
    """A bf16 kernel set's micro-tile, k granularity, packed element size, blocks and
    name ("vdpbf16ps", "fp32" or "amx"); native: the table's set runs vdpbf16ps."""
    cdef Bf16Set* s = bf16_set(kernels)
    return {"kernels": s.k.name.decode(), "mr": s.k.mr, "nr": s.k.nr, "kstep": s.k.kstep,
            "esize": s.k.esize, "native": TABLE16.k.esize == 2,
            "mc": s.mc, "kc": s.kc, "nc": s.nc}


def set_blocking_bf16(Py_ssize_t mc, Py_ssize_t kc, Py_ssize_t nc, str kernels="table"):
    """Change a bf16 kernel set's cache blocks (for tuning); mc is rounded up to a
    multiple of its MR, kc to its k granularity (whole k-pairs, or AMX's 32), nc to a
    multiple of its NR."""
    cdef Bf16Set* s = bf16_set(kernels)
    check_blocks("set_blocking_bf16", mc, kc, nc)
    s.mc, s.kc, s.nc = round_up(mc, s.k.mr), round_up(kc, s.k.kstep), round_up(nc, s.k.nr)


cdef inline Py_ssize_t k_step16(const Bf16Set* s, Py_ssize_t K) noexcept nogil:
    """Equal K blocks (as k_step), each a whole number of the set's k granularity."""
    cdef Py_ssize_t nblocks = (K + s.kc - 1) // s.kc, step
    step = (K + nblocks - 1) // nblocks if nblocks > 0 else s.kc
    return round_up(step, s.k.kstep)


cdef void bf16_blocked(const Bf16Set* s, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const float* A, Py_ssize_t ars, Py_ssize_t acs,
                       const float* B, Py_ssize_t brs, Py_ssize_t bcs,
                       float* C, Py_ssize_t ldc, char* Ap, char* Bp) noexcept nogil:
    """One thread's bf16 product: as gemm_blocked, with the set's packing and kernel."""
    cdef float tile[32 * 32]   # the largest micro-tile (AMX's)
    cdef Py_ssize_t kstep = k_step16(s, K), jc, pc, ic, nc, kc, mc, kp, npan, mpan
    cdef Py_ssize_t ip, jp, rows, cols, astride, bstride
    cdef Py_ssize_t MR = s.k.mr, NR = s.k.nr
    cdef float* c
    jc = 0
    while jc < N:
        nc = min(N - jc, s.nc)
        npan = (nc + NR - 1) // NR
        pc = 0
        while pc < K:
            kc = min(K - pc, kstep)
            kp = round_up(kc, s.k.kstep)
            astride, bstride = MR * kp * s.k.esize, NR * kp * s.k.esize   # panel bytes
            s.k.pack_b(B + pc * brs + jc * bcs, brs, bcs, kc, nc, Bp)
            ic = 0
            while ic < M:
                mc = min(M - ic, s.mc)
                mpan = (mc + MR - 1) // MR
                s.k.pack_a(A + ic * ars + pc * acs, ars, acs, mc, kc, Ap)
                for jp in range(npan):   # B-panel-major: a B panel stays in L1
                    cols = min(nc - jp * NR, NR)
                    for ip in range(mpan):
                        rows = min(mc - ip * MR, MR)
                        c = C + (ic + ip * MR) * ldc + jc + jp * NR
                        if rows == MR and cols == NR:
                            s.k.kernel(kc, Ap + ip * astride, Bp + jp * bstride, c, ldc, pc > 0)
                        else:   # edge: the padded tile aside, then the real part
                            s.k.kernel(kc, Ap + ip * astride, Bp + jp * bstride, tile, NR, 0)
                            write_tile(tile, NR, c, ldc, rows, cols, pc > 0)
                ic += s.mc
            pc += kc
        jc += s.nc


cdef void bf16_part(const Bf16Set* s, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const float* A, Py_ssize_t ars, Py_ssize_t acs,
                    const float* B, Py_ssize_t brs, Py_ssize_t bcs,
                    float* C, Py_ssize_t ldc, char* Ap, char* Bp) noexcept nogil:
    """bf16_blocked between the set's per-thread begin and end hooks."""
    if s.k.begin != NULL:
        s.k.begin()
    bf16_blocked(s, M, N, K, A, ars, acs, B, brs, bcs, C, ldc, Ap, Bp)
    if s.k.end != NULL:
        s.k.end()


cdef void bf16_sliced(const Bf16Set* s, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const float* A, Py_ssize_t ars, Py_ssize_t acs,
                      const float* B, Py_ssize_t brs, Py_ssize_t bcs, float* C,
                      char* Ap, char* Bp, Py_ssize_t apsize, Py_ssize_t bpsize,
                      int nt) noexcept nogil:
    """Threads take slices of C's column or row panels, each with its own packing (as
    gemm_sliced): every thread packs all of the other operand, so the slices run along
    the larger of M and N (a 100000x784x100 product split by columns converted all of A
    in each thread), unless that divides less evenly by more than a panel a thread."""
    cdef Py_ssize_t MR = s.k.mr, NR = s.k.nr
    cdef Py_ssize_t mp = (M + MR - 1) // MR, npn = (N + NR - 1) // NR, p0, p1, a, b
    cdef Py_ssize_t cols_work = ((npn + nt - 1) // nt) * mp   # the busiest thread's tiles
    cdef Py_ssize_t rows_work = ((mp + nt - 1) // nt) * npn
    cdef bint by_cols = cols_work <= rows_work if N > M else cols_work + mp < rows_work
    cdef int t
    if nt == 1:
        bf16_part(s, M, N, K, A, ars, acs, B, brs, bcs, C, N, Ap, Bp)
        return
    for t in prange(nt, num_threads=nt, schedule='static'):
        if by_cols:
            p0, p1 = npn * t // nt, npn * (t + 1) // nt
            a, b = p0 * NR, min(p1 * NR, N)
            if b > a:
                bf16_part(s, M, b - a, K, A, ars, acs, B + a * bcs, brs, bcs, C + a, N,
                          Ap + t * apsize, Bp + t * bpsize)
        else:
            p0, p1 = mp * t // nt, mp * (t + 1) // nt
            a, b = p0 * MR, min(p1 * MR, M)
            if b > a:
                bf16_part(s, b - a, N, K, A + a * ars, ars, acs, B, brs, bcs, C + a * N, N,
                          Ap + t * apsize, Bp + t * bpsize)


cdef int _bf16_reach(Buffer X, Py_ssize_t off, const long long[::1] batch, tuple shape,
                     tuple strides, str name) except -1:
    """Every batch's (shape, strides) view of X from off (+ its batch offset) lies in X:
    the lowest and the highest batch offsets bound them all."""
    cdef Py_ssize_t i, lo = 0, hi = 0
    if batch is not None and batch.shape[0] > 0:
        lo = hi = batch[0]
        for i in range(batch.shape[0]):
            lo = min(lo, batch[i])
            hi = max(hi, batch[i])
    need_strided(X, off + lo, shape, strides, 4, "gemm_bf16", name)
    need_strided(X, off + hi, shape, strides, 4, "gemm_bf16", name)
    return 0


def gemm_bf16(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs,
              Buffer B, Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs,
              Buffer C, Py_ssize_t c_off, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
              const long long[::1] a_batch=None, const long long[::1] b_batch=None,
              str kernels="table"):
    """C[b] = A[b] @ B[b] in bf16 mixed precision, float32 buffers (offsets and strides
    in items, C compact; batches as gemm). kernels: "table" (the kernel set's own:
    vdpbf16ps or the converted fp32 path) or "amx" (RuntimeError where unavailable)."""
    cdef Bf16Set* s = bf16_set(kernels)
    cdef Py_ssize_t nbatch = 1 if a_batch is None else a_batch.shape[0], bt, ao, bo
    if b_batch is not None and b_batch.shape[0] != nbatch:
        raise ValueError("gemm_bf16: batch offset arrays differ in length")
    if M < 0 or N < 0 or K < 0:
        raise ValueError(f"gemm_bf16: negative size ({M}, {N}, {K})")
    if M == 0 or N == 0 or nbatch == 0:
        return
    _bf16_reach(A, a_off, a_batch, (M, K), (ars, acs), "A")
    _bf16_reach(B, b_off, b_batch, (K, N), (brs, bcs), "B")
    need(C, c_off, (nbatch, M, N), 4, "gemm_bf16", "C")
    cdef int nt = threads_for(M * N * K // 64)
    cdef Py_ssize_t kp = round_up(min(k_step16(s, K), K), s.k.kstep)
    # packing bytes per thread, rounded to cache lines
    cdef Py_ssize_t apsize = round_up(round_up(min(s.mc, M), s.k.mr) * kp * s.k.esize, 64)
    cdef Py_ssize_t bpsize = round_up(round_up(min(s.nc, N), s.k.nr) * kp * s.k.esize, 64)
    cdef Buffer apack = Buffer(nt * apsize) if K else None
    cdef Buffer bpack = Buffer(nt * bpsize) if K else None
    cdef char* ap = apack.ptr if K else NULL
    cdef char* bp = bpack.ptr if K else NULL
    cdef float* c
    with nogil:
        for bt in range(nbatch):
            ao = a_off + (0 if a_batch is None else a_batch[bt])
            bo = b_off + (0 if b_batch is None else b_batch[bt])
            c = <float*>C.ptr + c_off + bt * M * N
            if K == 0:
                memset(c, 0, M * N * sizeof(float))
            else:
                bf16_sliced(s, M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo,
                            brs, bcs, c, ap, bp, apsize, bpsize, nt)


# Convolutions on AMX tiles (_amx.h: stride 1, no dilation, one group, no im2col) -----
cdef mn_amx_conv amx_geometry(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t K, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                              Py_ssize_t pw) noexcept:
    cdef mn_amx_conv g
    cdef Py_ssize_t Q = (C + 1) // 2
    g.N, g.C, g.H, g.W, g.K, g.kh, g.kw, g.ph, g.pw = N, C, H, W, K, kh, kw, ph, pw
    g.OH, g.OW = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
    g.nsteps = (Q + 15) // 16                # steps of at most 16 pairs (a tile's rows),
    g.step = (Q + g.nsteps - 1) // g.nsteps  # as even as they go
    g.Qp = g.nsteps * g.step
    g.Hp, g.Wp = H + 2 * ph + 1, W + 2 * pw  # (+1: an odd OH's phantom row)
    g.nch = (g.OW + 15) // 16                # chunks of at most 16 columns,
    g.cw = (g.OW + g.nch - 1) // g.nch       # as even as they go
    g.nkb = (K + 31) // 32 if K >= 32 else 1
    g.nrp = (g.OH + 1) // 2
    cdef Py_ssize_t pairs = (g.OW + 1) // 2   # the weight gradient's pixel pairs a row
    g.wch = (pairs + 15) // 16
    g.wcp = (pairs + g.wch - 1) // g.wch
    g.OWg = 2 * g.wcp * g.wch
    g.Wt = g.OWg // 2 + kw // 2 + 1
    g.Kw, g.Cw = round_up(K, 16), round_up(C, 16)
    g.nkb2, g.ncb2 = (g.Kw + 31) // 32, (g.Cw + 31) // 32
    return g


def amx_conv_fits(Py_ssize_t C, Py_ssize_t K, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                  Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw):
    """Whether conv_bf16_amx takes this stride-1 layer: K >= 16 output channels (a tile's
    rows), a non-empty output, padding >= 0, and the tile sizes within palette 1."""
    return (K >= 16 and C >= 1 and ph >= 0 and pw >= 0 and kh >= 1 and kw >= 1
            and H + 2 * ph - kh + 1 >= 1 and W + 2 * pw - kw + 1 >= 1)


def conv_bf16_amx(Buffer x, Py_ssize_t x_off, Buffer w, Py_ssize_t w_off, Buffer y,
                  Py_ssize_t y_off, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                  Py_ssize_t K, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                  bint flip=False):
    """y (N, K, OH, OW) = the stride-1 convolution of x (N, C, H, W) with w (K, C, kh, kw),
    padding (ph, pw), in bf16 mixed precision on AMX tiles (compact float32 buffers).
    flip: w is (C, K, kh, kw) and the product runs with it transposed and its taps
    flipped: with x an output gradient and padding kh - 1 - ph, that is the input
    gradient. RuntimeError where AMX cannot run; ValueError for a layer it does not take."""
    cdef Bf16Set* s = amx_set()
    if N < 0 or C < 0 or H < 0 or W < 0:
        raise ValueError(f"conv_bf16_amx: negative size ({N}, {C}, {H}, {W})")
    if not amx_conv_fits(C, K, H, W, kh, kw, ph, pw):
        raise ValueError(f"conv_bf16_amx: the AMX convolution takes K >= 16 output channels, "
                         f"padding >= 0 and a non-empty output; got C={C}, K={K}, "
                         f"{H}x{W}, kernel {kh}x{kw}, padding ({ph}, {pw})")
    cdef mn_amx_conv g = amx_geometry(N, C, H, W, K, kh, kw, ph, pw)
    need(x, x_off, (N, C, H, W), 4, "conv_bf16_amx", "x")
    need(w, w_off, (C, K, kh, kw) if flip else (K, C, kh, kw), 4, "conv_bf16_amx", "w")
    need(y, y_off, (N, K, g.OH, g.OW), 4, "conv_bf16_amx", "y")
    if N == 0:
        return
    cdef Buffer xb = Buffer(N * g.Qp * g.Hp * g.Wp * 4)
    cdef Buffer wb = Buffer(kh * kw * g.nsteps * K * 64)
    cdef Py_ssize_t units = N * g.nkb * g.nrp, n, t
    cdef int nt = threads_for(N * K * g.OH * g.OW * C * kh * kw // 512)
    cdef const float* xp = <float*>x.ptr + x_off
    cdef float* yp = <float*>y.ptr + y_off
    with nogil:
        s.k.conv_pack_w(<float*>w.ptr + w_off, &g, flip, wb.ptr)
        for n in prange(N, num_threads=nt, schedule='static'):
            s.k.conv_pack_x(xp, &g, xb.ptr, n, n + 1)
        for t in prange(nt, num_threads=nt, schedule='static'):
            s.k.conv_units(&g, xb.ptr, wb.ptr, yp, units * t // nt, units * (t + 1) // nt)


def conv_bf16_amx_wgrad(Buffer gr, Py_ssize_t g_off, Buffer x, Py_ssize_t x_off, Buffer dw,
                        Py_ssize_t dw_off, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t K, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                        Py_ssize_t pw):
    """dw (K, C, kh, kw) = the weight gradient of conv_bf16_amx's product from its output
    gradient gr (N, K, OH, OW) and input x (N, C, H, W), both read as bf16 values, float32
    sums, on AMX tiles (compact float32 buffers; at least 16 input and output channels)."""
    cdef Bf16Set* s = amx_set()
    if N < 0 or C < 16 or K < 16 or not amx_conv_fits(C, K, H, W, kh, kw, ph, pw):
        raise ValueError(f"conv_bf16_amx_wgrad: the AMX weight gradient takes 16+ input and "
                         f"output channels, padding >= 0 and a non-empty output; got N={N}, "
                         f"C={C}, K={K}, {H}x{W}, kernel {kh}x{kw}, padding ({ph}, {pw})")
    cdef mn_amx_conv g = amx_geometry(N, C, H, W, K, kh, kw, ph, pw)
    need(gr, g_off, (N, K, g.OH, g.OW), 4, "conv_bf16_amx_wgrad", "g")
    need(x, x_off, (N, C, H, W), 4, "conv_bf16_amx_wgrad", "x")
    need(dw, dw_off, (K, C, kh, kw), 4, "conv_bf16_amx_wgrad", "dw")
    cdef Py_ssize_t T = kh * kw, n, t, k, c
    cdef float* out = <float*>dw.ptr + dw_off
    if N == 0:
        with nogil:
            memset(out, 0, K * C * T * sizeof(float))
        return
    # each thread takes whole images, one at a time: its copies of one image (in L2
    # through every unit) and its own sums, added up in thread order at the end
    cdef mn_amx_conv g1 = g
    g1.N = 1
    cdef int nt = threads_for(N * K * g.OH * g.OW * C * T // 512)
    nt = min(nt, N)
    cdef Py_ssize_t gbs = round_up(g.Kw * g.OH * g.OWg * 2, 64)
    cdef Py_ssize_t xts = round_up(2 * (H + 2 * ph) * g.Wt * g.Cw * 4 + 16 * (2 * g.Wt + 34) * 4,
                                   64)
    cdef Py_ssize_t scs = T * g.Kw * g.Cw, i
    cdef Buffer gb = Buffer(nt * gbs)
    cdef Buffer xt = Buffer(nt * xts)
    cdef Buffer scratch = Buffer(nt * scs * 4)
    cdef float* sc = <float*>scratch.ptr
    cdef const float* gp = <float*>gr.ptr + g_off
    cdef const float* xp = <float*>x.ptr + x_off
    with nogil:
        memset(sc, 0, nt * scs * sizeof(float))
        for t in prange(nt, num_threads=nt, schedule='static'):
            for n in range(N * t // nt, N * (t + 1) // nt):
                s.k.wgrad_pack_g(gp + n * K * g.OH * g.OW, &g1, gb.ptr + t * gbs, 0, 1)
                s.k.wgrad_pack_x(xp + n * C * H * W, &g1, xt.ptr + t * xts, 0, 1)
                s.k.wgrad_units(&g1, gb.ptr + t * gbs, xt.ptr + t * xts, sc + t * scs, 0, 1)
        for t in range(1, nt):
            for i in range(scs):
                sc[i] += sc[t * scs + i]
        for k in range(K):   # dw[tap][Kw][Cw] -> (K, C, kh, kw)
            for c in range(C):
                for t in range(T):
                    out[(k * C + c) * T + t] = sc[(t * g.Kw + k) * g.Cw + c]


def round_bf16(Buffer src, Py_ssize_t s_off, Buffer dst, Py_ssize_t d_off, Py_ssize_t n):
    """dst[d_off:d_off+n] = src[s_off:s_off+n] rounded to bfloat16 values (nearest even),
    kept as float32 (compact float32 buffers; in place allowed)."""
    if n <= 0:
        return
    need(src, s_off, (n,), 4, "round_bf16", "src")
    need(dst, d_off, (n,), 4, "round_bf16", "dst")
    cdef int nt = threads_for(n // 4), t
    cdef Py_ssize_t a, b
    cdef const float* s = <float*>src.ptr + s_off
    cdef float* d = <float*>dst.ptr + d_off
    with nogil:
        if nt == 1:
            mn_round_bf16(s, d, n)
        else:
            for t in prange(nt, num_threads=nt, schedule='static'):
                a, b = n * t // nt // 16 * 16, (n * (t + 1) // nt // 16 * 16 if t < nt - 1 else n)
                mn_round_bf16(s + a, d + a, b - a)


# one-thread products for other modules' parallel regions (matmul.pxd) ------------------
cdef inline Py_ssize_t serial_parts(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ars,
                                    Py_ssize_t brs, Py_ssize_t bcs, int itemsize,
                                    int* path, Py_ssize_t* apsize,
                                    Py_ssize_t* bpsize) noexcept nogil:
    """The one-thread path and its packing sizes; apsize rounded up to 64 bytes, so that
    the packed B after it stays aligned for the kernels' aligned loads."""
    cdef int nr = mn_gemm_nr(itemsize)
    path[0] = choose_path(M, N, K, ars, brs, bcs, nr, 1)
    pack_sizes(path[0], M, N, K, nr, ars, apsize, bpsize)
    apsize[0] = round_up(apsize[0], 64 // itemsize)
    return apsize[0] + bpsize[0] + (2 * M * N if path[0] == SWAP_PATH else 0)


cdef Py_ssize_t serial_items(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ars,
                             Py_ssize_t brs, Py_ssize_t bcs, int itemsize) noexcept nogil:
    """Items of scratch gemm_serial needs for this product (packing; C^T on SWAP_PATH)."""
    cdef int path
    cdef Py_ssize_t apsize, bpsize
    return serial_parts(M, N, K, ars, brs, bcs, itemsize, &path, &apsize, &bpsize)


cdef void gemm_serial(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                      Py_ssize_t ars, Py_ssize_t acs, const floating* B, Py_ssize_t brs,
                      Py_ssize_t bcs, floating* C, floating* work) noexcept nogil:
    """C (M x N, compact) = A @ B on the calling thread, in work's serial_items items
    (64-byte aligned); the path and sums gemm() takes on one thread."""
    cdef int path
    cdef Py_ssize_t apsize, bpsize
    serial_parts(M, N, K, ars, brs, bcs, sizeof(floating), &path, &apsize, &bpsize)
    if M == 0 or N == 0:
        return
    gemm_one(M, N, K, A, ars, acs, B, brs, bcs, C, work, work + apsize,
             work + apsize + bpsize, apsize, bpsize, 1, path, 1)


cdef void gemm_serial_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                          Py_ssize_t ars, Py_ssize_t acs, const float* B, Py_ssize_t brs,
                          Py_ssize_t bcs, float* C, float* work) noexcept nogil:
    gemm_serial(M, N, K, A, ars, acs, B, brs, bcs, C, work)


cdef void gemm_serial_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                          Py_ssize_t ars, Py_ssize_t acs, const double* B, Py_ssize_t brs,
                          Py_ssize_t bcs, double* C, double* work) noexcept nogil:
    gemm_serial(M, N, K, A, ars, acs, B, brs, bcs, C, work)
