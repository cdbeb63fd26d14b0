# cython: boundscheck=False, wraparound=False, cdivision=True
"""C = A @ B, BLIS style: pack panels of A (MC x KC) and B (KC x NC) into
contiguous zero-padded buffers, then sweep an MR x NR register micro-kernel
(_gemm.h) over them. Any strides in A and B (packing absorbs transposes)."""
from cython.parallel cimport prange
from cython cimport floating
from libc.string cimport memset
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for, num_threads

cdef extern from "_gemm.h" nogil:
    int mn_gemm_mr()
    int mn_gemm_nr(int itemsize)
    void mn_kernel_f32(Py_ssize_t kc, const float* A, const float* B, float* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_f64(Py_ssize_t kc, const double* A, const double* B, double* C, Py_ssize_t ldc,
                       int accumulate)

cdef int MR = mn_gemm_mr()
# Cache blocking: a KC x NR panel of B stays in L1 (48 KiB here), the MC x KC
# block of A in L2, the KC x NC block of B in L3.
cdef Py_ssize_t MC = 192, KC = 256, NC = 4096
cdef Py_ssize_t SMALL = 32 * 32 * 32   # flops/2 below which packing does not pay
cdef Py_ssize_t SLICED = 1 << 24       # flops/2 up to which gemm_sliced serves multi-threaded calls


def blocking():
    return {"mr": MR, "nr_f32": mn_gemm_nr(4), "nr_f64": mn_gemm_nr(8), "mc": MC, "kc": KC, "nc": NC}


def set_blocking(Py_ssize_t mc, Py_ssize_t kc, Py_ssize_t nc):
    """Change the cache block sizes (for tuning); mc is rounded to a multiple of MR."""
    global MC, KC, NC
    if mc < 1 or kc < 1 or nc < 1:
        raise ValueError("set_blocking: sizes must be positive")
    MC = (mc + MR - 1) // MR * MR
    KC = kc
    NC = nc


cdef void pack_a(const floating* A, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t mc, Py_ssize_t kc,
                 floating* out, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of MR rows: out[panel][p][i] = A[i, p], zero past mc."""
    cdef Py_ssize_t panel, i, p, rows
    cdef floating* dst
    cdef const floating* src
    for panel in range(p0, p1):
        dst = out + panel * MR * kc
        rows = mc - panel * MR
        if rows > MR:
            rows = MR
        for i in range(rows):
            src = A + (panel * MR + i) * rs
            for p in range(kc):
                dst[p * MR + i] = src[p * cs]
        for i in range(rows, MR):
            for p in range(kc):
                dst[p * MR + i] = 0


cdef void pack_b(const floating* B, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t kc, Py_ssize_t nc,
                 floating* out, int nr, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of nr columns: out[panel][p][j] = B[p, j], zero past nc."""
    cdef Py_ssize_t panel, j, p, cols
    cdef floating* dst
    cdef const floating* src
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


cdef void micro_tiles(const floating* Ap, const floating* Bp, floating* C, Py_ssize_t ldc,
                      Py_ssize_t mc, Py_ssize_t nc, Py_ssize_t kc, int nr, int accumulate,
                      Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """Micro-tiles t0..t1, numbered B-panel-major so a B panel stays in L1."""
    cdef floating tile[16 * 64]
    cdef Py_ssize_t mp = (mc + MR - 1) // MR, t, ip, jp, i, j, rows, cols
    for t in range(t0, t1):
        jp = t // mp
        ip = t - jp * mp
        rows = mc - ip * MR
        cols = nc - jp * nr
        if rows >= MR and cols >= nr:
            if floating is float:
                mn_kernel_f32(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, C + ip * MR * ldc + jp * nr,
                              ldc, accumulate)
            else:
                mn_kernel_f64(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, C + ip * MR * ldc + jp * nr,
                              ldc, accumulate)
            continue
        # edge tile: compute the padded tile aside, write back the valid part
        if floating is float:
            mn_kernel_f32(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, tile, nr, 0)
        else:
            mn_kernel_f64(kc, Ap + ip * MR * kc, Bp + jp * nr * kc, tile, nr, 0)
        rows = rows if rows < MR else MR
        cols = cols if cols < nr else nr
        for i in range(rows):
            for j in range(cols):
                if accumulate:
                    C[(ip * MR + i) * ldc + jp * nr + j] += tile[i * nr + j]
                else:
                    C[(ip * MR + i) * ldc + jp * nr + j] = tile[i * nr + j]


cdef void gemm_blocked(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                       const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                       floating* C, Py_ssize_t ldc, floating* Ap, floating* Bp, int nt) noexcept nogil:
    cdef int nr = mn_gemm_nr(sizeof(floating))
    cdef Py_ssize_t jc, pc, ic, nc, kc, mc, npan, mpan, ntiles, t
    jc = 0
    while jc < N:
        nc = N - jc if N - jc < NC else NC
        npan = (nc + nr - 1) // nr
        pc = 0
        while pc < K:
            kc = K - pc if K - pc < KC else KC
            if nt == 1:
                pack_b(B + pc * brs + jc * bcs, brs, bcs, kc, nc, Bp, nr, 0, npan)
            else:
                for t in prange(nt, num_threads=nt, schedule='static'):
                    pack_b(B + pc * brs + jc * bcs, brs, bcs, kc, nc, Bp, nr,
                           npan * t // nt, npan * (t + 1) // nt)
            ic = 0
            while ic < M:
                mc = M - ic if M - ic < MC else MC
                mpan = (mc + MR - 1) // MR
                ntiles = mpan * npan
                if nt == 1:
                    pack_a(A + ic * ars + pc * acs, ars, acs, mc, kc, Ap, 0, mpan)
                    micro_tiles(Ap, Bp, C + ic * ldc + jc, ldc, mc, nc, kc, nr, pc > 0, 0, ntiles)
                else:
                    for t in prange(nt, num_threads=nt, schedule='static'):
                        pack_a(A + ic * ars + pc * acs, ars, acs, mc, kc, Ap,
                               mpan * t // nt, mpan * (t + 1) // nt)
                    for t in prange(nt, num_threads=nt, schedule='static'):
                        micro_tiles(Ap, Bp, C + ic * ldc + jc, ldc, mc, nc, kc, nr, pc > 0,
                                    ntiles * t // nt, ntiles * (t + 1) // nt)
                ic += MC
            pc += KC
        jc += NC


cdef void gemm_small(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                     const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                     floating* C, Py_ssize_t ldc) noexcept nogil:
    """Plain i-k-j loops: for tiny products packing costs more than it saves."""
    cdef Py_ssize_t i, j, p
    cdef floating a
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
                      Py_ssize_t apsize, Py_ssize_t bpsize, int nt) noexcept nogil:
    """Thin products (few output tiles, long K, e.g. conv weight gradients): each
    thread multiplies one slice of K into its own partial C, then the partials are
    summed. One parallel region instead of several per KC block."""
    cdef Py_ssize_t t, k0, k1, i
    cdef floating s
    for t in prange(nt, num_threads=nt, schedule='static'):
        k0 = K * t // nt
        k1 = K * (t + 1) // nt
        gemm_blocked(M, N, k1 - k0, A + k0 * acs, ars, acs, B + k0 * brs, brs, bcs,
                     part + t * M * N, N, Ap + t * apsize, Bp + t * bpsize, 1)
    for i in range(M * N):
        s = part[i]
        for t in range(1, nt):
            s = s + part[t * M * N + i]
        C[i] = s


cdef void gemm_sliced(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t ars, Py_ssize_t acs,
                      const floating* B, Py_ssize_t brs, Py_ssize_t bcs,
                      floating* C, floating* Ap, floating* Bp,
                      Py_ssize_t apsize, Py_ssize_t bpsize, int nt) noexcept nogil:
    """Small products (e.g. 100x784x100): each thread computes whole micro-panels of C, a
    slice of its columns or rows, with its own packing. One parallel region instead of
    three per KC block, whose fork/join cost rivals the arithmetic at this size; the split
    is the dimension whose micro-panels divide more evenly over the threads."""
    cdef int nr = mn_gemm_nr(sizeof(floating)), t
    cdef Py_ssize_t mp = (M + MR - 1) // MR, npn = (N + nr - 1) // nr, p0, p1, a, b
    # the larger share of panels one thread gets, compared as fractions
    cdef bint by_cols = ((npn + nt - 1) // nt) * mp <= ((mp + nt - 1) // nt) * npn
    for t in prange(nt, num_threads=nt, schedule='static'):
        if by_cols:
            p0, p1 = npn * t // nt, npn * (t + 1) // nt
            a, b = p0 * nr, min(p1 * nr, N)
            if b > a:
                gemm_blocked(M, b - a, K, A, ars, acs, B + a * bcs, brs, bcs, C + a, N,
                             Ap + t * apsize, Bp + t * bpsize, 1)
        else:
            p0, p1 = mp * t // nt, mp * (t + 1) // nt
            a, b = p0 * MR, min(p1 * MR, M)
            if b > a:
                gemm_blocked(b - a, N, K, A + a * ars, ars, acs, B, brs, bcs, C + a * N, N,
                             Ap + t * apsize, Bp + t * bpsize, 1)


def gemm(Buffer A, Py_ssize_t a_off, Py_ssize_t ars, Py_ssize_t acs,
         Buffer B, Py_ssize_t b_off, Py_ssize_t brs, Py_ssize_t bcs,
         Buffer C, Py_ssize_t c_off, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int itemsize,
         const long long[::1] a_batch=None, const long long[::1] b_batch=None):
    """C[b] = A[b] @ B[b] for each batch b (C compact, batch b at c_off + b*M*N).
    a_batch/b_batch hold each batch's extra offset in items (None: one product)."""
    cdef Py_ssize_t nbatch = 1 if a_batch is None else a_batch.shape[0], b, ao, bo
    if b_batch is not None and b_batch.shape[0] != nbatch:
        raise ValueError("gemm: batch offset arrays differ in length")
    if M == 0 or N == 0 or nbatch == 0:
        return
    cdef int nr = mn_gemm_nr(itemsize)
    cdef int nt = threads_for(M * N * K // 64)
    cdef bint small = M * N * K <= SMALL or K == 0
    cdef Py_ssize_t kc = KC if K > KC else K
    cdef Py_ssize_t mcap = (min(MC, M) + MR - 1) // MR * MR
    cdef Py_ssize_t ncap = (min(NC, N) + nr - 1) // nr * nr
    # one output block but a long K: split K over the threads instead
    cdef bint ksplit = not small and nt > 1 and M <= MC and N <= NC and K >= 4 * KC * nt
    cdef bint sliced = not small and not ksplit and nt > 1 and M * N * K <= SLICED
    cdef int copies = nt if ksplit or sliced else 1
    cdef Buffer apack = Buffer(1 if small else copies * mcap * kc * itemsize)
    cdef Buffer bpack = Buffer(1 if small else copies * ncap * kc * itemsize)
    cdef Buffer part = Buffer(nt * M * N * itemsize if ksplit else 1)
    with nogil:
        for b in range(nbatch):
            ao = a_off + (0 if a_batch is None else a_batch[b])
            bo = b_off + (0 if b_batch is None else b_batch[b])
            if K == 0:
                memset(C.ptr + (c_off + b * M * N) * itemsize, 0, M * N * itemsize)
            elif ksplit and itemsize == 4:
                gemm_ksplit(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs, bcs,
                            <float*>C.ptr + c_off + b * M * N, <float*>part.ptr,
                            <float*>apack.ptr, <float*>bpack.ptr, mcap * kc, ncap * kc, nt)
            elif ksplit:
                gemm_ksplit(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs, bcs,
                            <double*>C.ptr + c_off + b * M * N, <double*>part.ptr,
                            <double*>apack.ptr, <double*>bpack.ptr, mcap * kc, ncap * kc, nt)
            elif sliced and itemsize == 4:
                gemm_sliced(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs, bcs,
                            <float*>C.ptr + c_off + b * M * N, <float*>apack.ptr,
                            <float*>bpack.ptr, mcap * kc, ncap * kc, nt)
            elif sliced:
                gemm_sliced(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs, bcs,
                            <double*>C.ptr + c_off + b * M * N, <double*>apack.ptr,
                            <double*>bpack.ptr, mcap * kc, ncap * kc, nt)
            elif small and itemsize == 4:
                gemm_small(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs, bcs,
                           <float*>C.ptr + c_off + b * M * N, N)
            elif small:
                gemm_small(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs, bcs,
                           <double*>C.ptr + c_off + b * M * N, N)
            elif itemsize == 4:
                gemm_blocked(M, N, K, <float*>A.ptr + ao, ars, acs, <float*>B.ptr + bo, brs, bcs,
                             <float*>C.ptr + c_off + b * M * N, N, <float*>apack.ptr,
                             <float*>bpack.ptr, nt)
            else:
                gemm_blocked(M, N, K, <double*>A.ptr + ao, ars, acs, <double*>B.ptr + bo, brs, bcs,
                             <double*>C.ptr + c_off + b * M * N, N, <double*>apack.ptr,
                             <double*>bpack.ptr, nt)


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
    cdef int nt = threads_for(M * N * K // 64), t
    with nogil:
        for t in prange(nt, num_threads=nt, schedule='static'):
            simple_rows(<float*>A.ptr, <float*>B.ptr, <float*>C.ptr, M, N, K,
                        M * t // nt, M * (t + 1) // nt)
