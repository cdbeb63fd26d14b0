/* GEMM micro-kernels: C[MR x NR] (+)= A_panel[kc x MR]^T * B_panel[kc x NR].
 * Written with GCC vector extensions so the MR x NR accumulator tile lives in
 * vector registers whatever the ISA (AVX-512, AVX2, SSE): setup.py compiles these
 * kernels once per ISA (_kern.h), and mininet_ext._isa picks a set at import. */
#ifndef MN_GEMM_H
#define MN_GEMM_H
#include <stddef.h>
#include <string.h>
#include "_tr16.h"
typedef ptrdiff_t mn_idx;

#if defined(__AVX512F__)
#define MN_VBYTES 64
#define MN_MR 12          /* 12 x 2 zmm accumulators + 2 B vectors + 1 broadcast <= 32 */
#elif defined(__AVX__)
#define MN_VBYTES 32
#define MN_MR 6           /* 6 x 2 ymm accumulators of 16 registers */
#else
#define MN_VBYTES 16
#define MN_MR 4
#endif

typedef float mn_vf __attribute__((vector_size(MN_VBYTES)));
typedef double mn_vd __attribute__((vector_size(MN_VBYTES)));
typedef float mn_vf_u __attribute__((vector_size(MN_VBYTES), aligned(4)));
typedef double mn_vd_u __attribute__((vector_size(MN_VBYTES), aligned(8)));

#define MN_VF (MN_VBYTES / 4)
#define MN_VD (MN_VBYTES / 8)
#define MN_NR_F (2 * MN_VF)
#define MN_NR_D (2 * MN_VD)

static inline int mn_gemm_mr(void) { return MN_MR; }
static inline int mn_gemm_nr(int itemsize) { return itemsize == 4 ? MN_NR_F : MN_NR_D; }

/* The MR x 2W register tile c stored to C (rows ldc apart), or added with accumulate. */
#define MN_STORE_TILE(VU, W, MR)                                                   \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++) {                                                 \
        VU* d0 = (VU*)(C + i * ldc);                                               \
        VU* d1 = (VU*)(C + i * ldc + W);                                           \
        if (accumulate) { *d0 += c[i][0]; *d1 += c[i][1]; }                        \
        else { *d0 = c[i][0]; *d1 = c[i][1]; }                                     \
    }

/* The packed kernels fetch B's rows MN_KPF k-steps (2 KB of an AVX-512 float32 panel)
 * ahead: a B panel all but fills L1 (KC x NR floats: 43 KB of 48 at K = 1024), so its
 * rows come from L2 (then the A panels streaming past evicted parts of it between uses;
 * since session 18 the tiles run A-panel-major and B panels stream past the A panel held
 * in L1); fetching them early took 2-5% off the 256 x 1024 x 1024 products of an MLP
 * step (Sapphire Rapids Xeon, one thread, distances 16 and 32 alike, 8 less). Fetching
 * A's panel too, read sequentially, gained nothing more. Not measured on Zen 4. */
#define MN_KPF 16
/* A row of two vectors spans one 64-byte line where a vector is 32 bytes (AVX2 float32),
 * so the second fetch is only issued where the row spans two (AVX-512, or doubles). */
#define MN_KPREFETCH_B(b, W) {                                                     \
    __builtin_prefetch(b, 0, 3);                                                   \
    if ((W) * sizeof(*(b)) >= 64) __builtin_prefetch((b) + (W), 0, 3);             \
}

/* One k step of the micro-kernel: row p of B (two vectors) against MR values of A. */
#define MN_KERNEL_STEP(V, VB, W, MR, AS, LDB, PF, p)                               \
{                                                                                  \
    V b0 = *(const VB*)(B + (p) * (LDB)), b1 = *(const VB*)(B + (p) * (LDB) + W);  \
    if (PF) MN_KPREFETCH_B(B + ((p) + MN_KPF) * (LDB), W)                           \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++) {                                                 \
        /* scalar * vector: gcc folds the broadcast into the FMA's load */         \
        c[i][0] += A[(p) * (AS) + i] * b0;                                         \
        c[i][1] += A[(p) * (AS) + i] * b1;                                         \
    }                                                                              \
}

/* The micro-kernel's body: MR rows of A (A(i, p) = A[p * AS + i]) times two vectors of
 * B per k (row p at B + p * LDB, loaded as VB: the aligned V from packed panels, the
 * unaligned VU from B read in place), accumulated in registers, then stored to C.
 * With PF (the packed kernel), the first 3 MR k steps also fetch toward L2 the C lines
 * of the tile to the right (the same rows, the next 2W columns), which the driver's
 * A-panel-major order runs next: C's lines then come from L2 when that tile starts
 * instead of memory or L3, where 36 fetches at once filled the line-fill buffers. */
#define MN_KERNEL_BODY(V, VB, VU, W, MR, AS, LDB, PF)                              \
{                                                                                  \
    V c[MR][2];                                                                    \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++) {                                                 \
        c[i][0] = (V){0}; c[i][1] = (V){0};                                        \
        /* C's tile is read (or written) only after the k loop, rows ldc apart: */   \
        /* fetch it now, or the C loads stall (9% of a 2048^3 on a Xeon) */          \
        __builtin_prefetch(C + i * ldc, 1, 3);                                     \
        __builtin_prefetch(C + i * ldc + W, 1, 3);                                 \
        __builtin_prefetch(C + i * ldc + 2 * W - 1, 1, 3);                         \
    }                                                                              \
    mn_idx p = 0;                                                                  \
    if (PF && kc >= 3 * MR) {                                                      \
        for (int i = 0; i < MR; i++, p += 3) {                                     \
            const char* next = (const char*)(C + i * ldc + 2 * W);                 \
            MN_KERNEL_STEP(V, VB, W, MR, AS, LDB, PF, p)                           \
            __builtin_prefetch(next, 0, 2);                                        \
            MN_KERNEL_STEP(V, VB, W, MR, AS, LDB, PF, p + 1)                       \
            __builtin_prefetch(next + W * sizeof(*C), 0, 2);                       \
            MN_KERNEL_STEP(V, VB, W, MR, AS, LDB, PF, p + 2)                       \
            __builtin_prefetch(next + (2 * W - 1) * sizeof(*C), 0, 2);             \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 4")                                                        \
    for (; p < kc; p++) MN_KERNEL_STEP(V, VB, W, MR, AS, LDB, PF, p)               \
    MN_STORE_TILE(VU, W, MR)                                                       \
}

#define MN_DEF_KERNEL(NAME, T, V, VU, W, NR, MR)                                   \
static void NAME(mn_idx kc, const T* __restrict A, const T* __restrict B,          \
                 T* C, mn_idx ldc, int accumulate)                                 \
MN_KERNEL_BODY(V, V, VU, W, MR, MR, NR, 1)

#if MN_VBYTES == 16 && MN_MR == 4 && defined(__SSE2__)
#include "_gemm_sse2.h"
#else
MN_DEF_KERNEL(mn_kernel_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, MN_MR)
MN_DEF_KERNEL(mn_kernel_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, MN_MR)
#endif

/* The blocked product's micro-kernel with A "pre-broadcast": each A value stored as a whole
 * vector (W copies), A(i, p) = A[(p * MR + i) * W + lane], so C[MR x NR] (+)= A * B runs
 * on plain vector loads, multiplies and adds. Only the generic path takes it: SSE2 has
 * no broadcast load and no FMA, so the other kernels spend shuffles (broadcasts or
 * rotations) on the same pipes as the arithmetic, and two-operand SSE needs a register
 * copy per product besides. Here a row costs a load, a copy, 2 multiplies and 2 adds; a
 * 6 x 8 tile (12 accumulators + 2 B vectors + 2 products = 16 xmm registers) kept about
 * 95% of the mul + add peak in L1 against 80% for the rotating 4 x 8 one (Zen 4). The
 * cost: the packed A block is W times larger (matmul.pyx gives this path a smaller MC). */
#define MN_DEF_KERNEL_BC(NAME, T, V, VU, W, MR)                                    \
static void NAME(mn_idx kc, const T* __restrict A, const T* __restrict B,          \
                 T* C, mn_idx ldc, int accumulate)                                 \
{                                                                                  \
    V c[MR][2];                                                                    \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++) {                                                 \
        c[i][0] = (V){0}; c[i][1] = (V){0};                                        \
        __builtin_prefetch(C + i * ldc, 1, 3);                                     \
        __builtin_prefetch(C + i * ldc + 2 * W - 1, 1, 3);                         \
    }                                                                              \
    _Pragma("GCC unroll 2")                                                        \
    for (mn_idx p = 0; p < kc; p++) {                                              \
        V b0 = *(const V*)(B + p * 2 * W), b1 = *(const V*)(B + p * 2 * W + W);    \
        _Pragma("GCC unroll 16")                                                   \
        for (int i = 0; i < MR; i++) {                                             \
            V a = *(const V*)(A + (p * MR + i) * W);                               \
            c[i][0] += a * b0;                                                     \
            c[i][1] += a * b1;                                                     \
        }                                                                          \
    }                                                                              \
    MN_STORE_TILE(VU, W, MR)                                                       \
}

/* Packs A (mc x kc, any strides) for that kernel: panels of MR rows, zero past mc,
 * out[((panel * kc + p) * MR + i) * W + lane] = A(panel * MR + i, p). */
#define MN_DEF_PACK_A_BC(NAME, T, V, W, MR)                                        \
static void NAME(const T* __restrict A, mn_idx rs, mn_idx cs, mn_idx mc, mn_idx kc, \
                 T* __restrict out)                                                \
{                                                                                  \
    for (mn_idx r0 = 0; r0 < mc; r0 += MR) {                                       \
        int rows = mc - r0 < MR ? (int)(mc - r0) : MR;                             \
        T* o = out + r0 * kc * W;                                                  \
        const T* a = A + r0 * rs;                                                  \
        if (cs == 1) {   /* row-major: read along the rows */                      \
            for (int i = 0; i < rows; i++)                                         \
                for (mn_idx p = 0; p < kc; p++)                                    \
                    *(V*)(o + (p * MR + i) * W) = (V){0} + a[i * rs + p];          \
        } else {                                                                   \
            for (mn_idx p = 0; p < kc; p++)                                        \
                for (int i = 0; i < rows; i++)                                     \
                    *(V*)(o + (p * MR + i) * W) = (V){0} + a[i * rs + p * cs];     \
        }                                                                          \
        for (mn_idx p = 0; p < kc; p++)                                            \
            for (int i = rows; i < MR; i++) *(V*)(o + (p * MR + i) * W) = (V){0};  \
    }                                                                              \
}

#if MN_VBYTES == 16 && MN_MR == 4 && defined(__SSE2__)
#define MN_GEMM_BC 1
#define MN_MR_BC 6
#else
#define MN_GEMM_BC 0
#define MN_MR_BC MN_MR
#endif
static inline int mn_gemm_bc(void) { return MN_GEMM_BC; }
static inline int mn_gemm_mr_bc(void) { return MN_MR_BC; }
#if MN_GEMM_BC
MN_DEF_KERNEL_BC(mn_kernel_bc_f32, float, mn_vf, mn_vf_u, MN_VF, MN_MR_BC)
MN_DEF_KERNEL_BC(mn_kernel_bc_f64, double, mn_vd, mn_vd_u, MN_VD, MN_MR_BC)
MN_DEF_PACK_A_BC(mn_pack_a_bc_f32, float, mn_vf, MN_VF, MN_MR_BC)
MN_DEF_PACK_A_BC(mn_pack_a_bc_f64, double, mn_vd, MN_VD, MN_MR_BC)
#else   /* unused there (matmul.pyx packs and multiplies as usual): 1 copy per value */
#define mn_kernel_bc_f32 mn_kernel_f32
#define mn_kernel_bc_f64 mn_kernel_f64
typedef float mn_f1 __attribute__((vector_size(4)));
typedef double mn_d1 __attribute__((vector_size(8)));
MN_DEF_PACK_A_BC(mn_pack_a_bc_f32, float, mn_f1, 1, MN_MR_BC)
MN_DEF_PACK_A_BC(mn_pack_a_bc_f64, double, mn_d1, 1, MN_MR_BC)
#endif

/* Packs MR full rows of a row-major A (rows rs apart, columns contiguous) into a panel:
 * out[p * MR + i] = A[i * rs + p]. All MR rows are read at once, so their cache misses
 * overlap (row by row, a 2048^3 product spent 7% of its time packing A). */
#define MN_DEF_PACK_A_ROWS(NAME, T)                                                \
static void NAME(const T* __restrict A, mn_idx rs, mn_idx kc, T* __restrict out)   \
{                                                                                  \
    for (mn_idx p = 0; p < kc; p++) {                                              \
        _Pragma("GCC unroll 16")                                                   \
        for (int i = 0; i < MN_MR; i++) out[p * MN_MR + i] = A[i * rs + p];        \
    }                                                                              \
}
MN_DEF_PACK_A_ROWS(mn_pack_a_rows_f32, float)
MN_DEF_PACK_A_ROWS(mn_pack_a_rows_f64, double)

/* Packs nc columns of a transposed B (B(p, j) = B[j * cs + p]: each column contiguous,
 * as W^T in an input gradient g @ W^T) into NR-wide panels, out[panel][p][j], zero past
 * nc. W x W blocks (W: the vector's lanes) are read as W columns' vectors and transposed
 * in registers, so each store writes a whole vector (a cache line with AVX-512); one
 * scalar store per value, NR apart, cost more than the product's FMAs. A k tail of
 * fewer than W values is copied value by value. */
#define MN_DEF_PACK_B_T(NAME, T, V, VU, W, NR, TR)                                 \
static void NAME(const T* __restrict B, mn_idx cs, mn_idx kc, mn_idx nc,           \
                 T* __restrict out)                                                \
{                                                                                  \
    for (mn_idx j0 = 0; j0 < nc; j0 += NR) {                                       \
        T* o = out + j0 * kc;   /* panel j0 / NR */                                \
        mn_idx cols = nc - j0 < NR ? nc - j0 : NR;                                 \
        for (int h = 0; h < NR; h += W) {                                          \
            const T* b = B + (j0 + h) * cs;                                        \
            int n = cols - h <= 0 ? 0 : cols - h >= W ? W : (int)(cols - h);       \
            mn_idx p = 0;                                                          \
            for (; p + W <= kc; p += W) {                                          \
                V r[W];                                                            \
                if (n == W) {                                                      \
                    _Pragma("GCC unroll 16")                                       \
                    for (int i = 0; i < W; i++) r[i] = *(const VU*)(b + i * cs + p); \
                } else {   /* a partial panel: zero columns past nc */            \
                    for (int i = 0; i < W; i++)                                    \
                        r[i] = i < n ? (V)*(const VU*)(b + i * cs + p) : (V){0};   \
                }                                                                  \
                TR(r);                                                             \
                _Pragma("GCC unroll 16")                                           \
                for (int q = 0; q < W; q++) *(VU*)(o + (p + q) * NR + h) = r[q];   \
            }                                                                      \
            for (; p < kc; p++)                                                    \
                for (int i = 0; i < W; i++) o[p * NR + h + i] = i < n ? b[i * cs + p] : 0; \
        }                                                                          \
    }                                                                              \
}
typedef int mn_vfi __attribute__((vector_size(MN_VBYTES)));
typedef long long mn_vdi __attribute__((vector_size(MN_VBYTES)));
#if MN_VF == 16
MN_DEF_TR16(mn_tr_vf, mn_vf, mn_vfi)
#elif MN_VF == 8
MN_DEF_TR8(mn_tr_vf, mn_vf, mn_vfi)
#else
MN_DEF_TR4(mn_tr_vf, mn_vf, mn_vfi)
#endif
#if MN_VD == 8
MN_DEF_TR8(mn_tr_vd, mn_vd, mn_vdi)
#elif MN_VD == 4
MN_DEF_TR4(mn_tr_vd, mn_vd, mn_vdi)
#else
MN_DEF_TR2(mn_tr_vd, mn_vd, mn_vdi)
#endif
MN_DEF_PACK_B_T(mn_pack_b_t_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, mn_tr_vf)
MN_DEF_PACK_B_T(mn_pack_b_t_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, mn_tr_vd)

/* A shorter kernel (2/3 of MR rows) for row counts that MR divides badly, such as
 * 16, 32 or 64 output channels of a convolution with MR = 12. */
#define MN_MR_SHORT (MN_MR * 2 / 3)
static inline int mn_gemm_mr_short(void) { return MN_MR_SHORT; }
MN_DEF_KERNEL(mn_kernel_short_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, MN_MR_SHORT)
MN_DEF_KERNEL(mn_kernel_short_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, MN_MR_SHORT)

/* C[MR x NR] += A * B over npan pairs of panels: in pair s, A's rows are rows of
 * another packed B panel, A(i, p) = As[i * NR + p] with As = A + s * astride, and
 * B(p, j) = Bs[p * NR + j] with Bs = B + s * bstride, p < NR. The convolution weight
 * gradient multiplies packed column panels (taps x pixels) by the output grad's
 * transpose this way, without re-packing them; the broadcasts read from L1 either way. */
#define MN_DEF_KERNEL_AT(NAME, T, V, VU, W, NR)                                    \
static void NAME(mn_idx npan, const T* __restrict A, mn_idx astride,               \
                 const T* __restrict B, mn_idx bstride, T* C, mn_idx ldc)          \
{                                                                                  \
    V c[MN_MR][2];                                                                 \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MN_MR; i++) { c[i][0] = (V){0}; c[i][1] = (V){0}; }        \
    for (mn_idx s = 0; s < npan; s++) {                                            \
        const T* As = A + s * astride;                                             \
        const T* Bs = B + s * bstride;                                             \
        for (mn_idx p = 0; p < NR; p++) {                                          \
            V b0 = *(const V*)(Bs + p * NR), b1 = *(const V*)(Bs + p * NR + W);    \
            _Pragma("GCC unroll 16")                                               \
            for (int i = 0; i < MN_MR; i++) {                                      \
                c[i][0] += As[i * NR + p] * b0;                                    \
                c[i][1] += As[i * NR + p] * b1;                                    \
            }                                                                      \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MN_MR; i++) {                                              \
        *(VU*)(C + i * ldc) += c[i][0];                                            \
        *(VU*)(C + i * ldc + W) += c[i][1];                                        \
    }                                                                              \
}

/* The same with B one vector wide (NR/2 columns, B rows of that length): for the
 * weight gradient of convolutions with at most NR/2 output channels per group, where
 * the full-width kernel would spend half of every FMA on padding. */
#define MN_DEF_KERNEL_AT_HALF(NAME, T, V, VU, W, NR)                               \
static void NAME(mn_idx npan, const T* __restrict A, mn_idx astride,               \
                 const T* __restrict B, mn_idx bstride, T* C, mn_idx ldc)          \
{                                                                                  \
    V c[MN_MR];                                                                    \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MN_MR; i++) c[i] = (V){0};                                 \
    for (mn_idx s = 0; s < npan; s++) {                                            \
        const T* As = A + s * astride;                                             \
        const T* Bs = B + s * bstride;                                             \
        for (mn_idx p = 0; p < NR; p++) {                                          \
            V b0 = *(const V*)(Bs + p * W);                                        \
            _Pragma("GCC unroll 16")                                               \
            for (int i = 0; i < MN_MR; i++) c[i] += As[i * NR + p] * b0;           \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MN_MR; i++) *(VU*)(C + i * ldc) += c[i];                   \
}

/* C[MR x NR] (+)= A_panel[kc x MR]^T * B[kc x NR] with B read in place, rows ldb
 * apart (unaligned loads): for products with few rows (M <= 4 MR, e.g. a recurrent
 * step's h @ W_hh) each B element is used M times, and packing B cost more than the
 * multiply. */
#define MN_DEF_KERNEL_SB(NAME, T, V, VU, W, MR)                                    \
static void NAME(mn_idx kc, const T* __restrict A, const T* __restrict B,          \
                 mn_idx ldb, T* C, mn_idx ldc, int accumulate)                     \
MN_KERNEL_BODY(V, VU, VU, W, MR, MN_MR, ldb, 0)  /* A: a packed MN_MR-row panel, MR rows used */

MN_DEF_KERNEL_SB(mn_kernel_sb_f32, float, mn_vf, mn_vf_u, MN_VF, MN_MR)
MN_DEF_KERNEL_SB(mn_kernel_sb_f64, double, mn_vd, mn_vd_u, MN_VD, MN_MR)
/* the short height, for a last row panel of at most MN_MR_SHORT rows (16 = 12 + 4) */
MN_DEF_KERNEL_SB(mn_kernel_sb_short_f32, float, mn_vf, mn_vf_u, MN_VF, MN_MR_SHORT)
MN_DEF_KERNEL_SB(mn_kernel_sb_short_f64, double, mn_vd, mn_vd_u, MN_VD, MN_MR_SHORT)

/* C[MR x NV*W] (+)= A[MR x kc] * B_panel[kc x NR] with A read in place through its
 * strides (A(i, p) = A[i * ars + p * acs]) instead of a packed panel: for narrow
 * products (N <= 2 NR) packing A costs as much as multiplying it. NV = 1 is the
 * half-width kernel for an N edge of at most NR/2 columns (B rows still NR apart). */
#define MN_DEF_KERNEL_SA(NAME, T, V, VU, W, NR, NV, MR)                            \
static void NAME(mn_idx kc, const T* __restrict A, mn_idx ars, mn_idx acs,         \
                 const T* __restrict B, T* C, mn_idx ldc, int accumulate)          \
{                                                                                  \
    V c[MR][NV];                                                                   \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++)                                                   \
        for (int v = 0; v < NV; v++) c[i][v] = (V){0};                             \
    for (mn_idx p = 0; p < kc; p++) {                                              \
        V b[NV];                                                                   \
        for (int v = 0; v < NV; v++) b[v] = *(const V*)(B + p * NR + v * W);       \
        const T* a = A + p * acs;                                                  \
        _Pragma("GCC unroll 16")                                                   \
        for (int i = 0; i < MR; i++)                                               \
            for (int v = 0; v < NV; v++) c[i][v] += a[i * ars] * b[v];             \
    }                                                                              \
    _Pragma("GCC unroll 16")                                                       \
    for (int i = 0; i < MR; i++)                                                   \
        for (int v = 0; v < NV; v++) {                                             \
            VU* d = (VU*)(C + i * ldc + v * W);                                    \
            if (accumulate) *d += c[i][v]; else *d = c[i][v];                      \
        }                                                                          \
}

MN_DEF_KERNEL_SA(mn_kernel_sa_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, 2, MN_MR)
MN_DEF_KERNEL_SA(mn_kernel_sa_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, 2, MN_MR)
MN_DEF_KERNEL_SA(mn_kernel_sa_half_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, 1, MN_MR)
MN_DEF_KERNEL_SA(mn_kernel_sa_half_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, 1, MN_MR)
/* short heights for last row panels of at most MN_MR_SHORT rows: 4 leftover rows (16,
 * 64 = 5 x 12 + 4) cost 2/3 of a full-height tile instead of all of it */
MN_DEF_KERNEL_SA(mn_kernel_sa_short_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, 2, MN_MR_SHORT)
MN_DEF_KERNEL_SA(mn_kernel_sa_short_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, 2, MN_MR_SHORT)
MN_DEF_KERNEL_SA(mn_kernel_sa_short_half_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F, 1, MN_MR_SHORT)
MN_DEF_KERNEL_SA(mn_kernel_sa_short_half_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D, 1, MN_MR_SHORT)

/* A narrow product's last few columns (N mod NR <= NR/4: 100 = 3 x 32 + 4). The half
 * kernel spends a whole vector, and a broadcast per FMA, on them: 4 columns cost 0.6 of
 * a full 32-column panel (perf, 100 x 784 x 100 on a Xeon). These two put the long
 * dimension in the vector lanes instead, all lanes useful.
 * tail_dot: A row-major (A(i, p) = A[i * ars + p]), the tail of B packed transposed
 * (Bt(j, p) = Bt[j * kc + p]): C[i, j] (+)= the dot product of row i and column j, in
 * vectors along p, summed across lanes at the end; MN_TAIL_R rows x 4 columns at a
 * time (rows and columns past the edge repeat the last one, computed and not stored). */
#if defined(__AVX512F__)
#define MN_TAIL_R 4       /* 4 x 4 accumulators + 4 + 1 operands of 32 registers */
#else
#define MN_TAIL_R 2       /* 2 x 4 + 4 + 2 of 16 */
#endif
/* One vector of K at q: B's 4 columns (BV: how the vector of column j is loaded) times
 * MN_TAIL_R rows of A, into c. */
#define MN_TAIL_DOT_STEP(V, VU, q, BV)                                             \
{                                                                                  \
    V bv[4];                                                                       \
    for (int j = 0; j < 4; j++) bv[j] = BV;                                        \
    _Pragma("GCC unroll 16")                                                       \
    for (int r = 0; r < MN_TAIL_R; r++) {                                          \
        V av = *(const VU*)(a[r] + (q));                                           \
        for (int j = 0; j < 4; j++) c[r][j] += av * bv[j];                         \
    }                                                                              \
}
#define MN_DEF_TAIL_DOT(NAME, T, V, VU, IV, W)                                     \
static void NAME(mn_idx rows, mn_idx cols, mn_idx kc, const T* __restrict A,       \
                 mn_idx ars, const T* __restrict Bt, T* C, mn_idx ldc, int accumulate) \
{                                                                                  \
    /* K past the whole vectors: one more vector ending at kc, its lanes already   \
     * counted zeroed in B (plain loops when K is shorter than a vector) */        \
    mn_idx kv = kc / W * W, rem = kc - kv, kl = kc >= W ? kc - W : 0;             \
    IV keep;                                                                       \
    for (int l = 0; l < W; l++) keep[l] = l >= W - rem ? -1 : 0;                  \
    for (mn_idx i0 = 0; i0 < rows; i0 += MN_TAIL_R) {                              \
        const T* a[MN_TAIL_R];                                                     \
        for (int r = 0; r < MN_TAIL_R; r++)                                        \
            a[r] = A + (i0 + r < rows ? i0 + r : rows - 1) * ars;                  \
        for (mn_idx j0 = 0; j0 < cols; j0 += 4) {                                  \
            const T* b[4];                                                         \
            for (int j = 0; j < 4; j++) b[j] = Bt + (j0 + j < cols ? j0 + j : cols - 1) * kc; \
            V c[MN_TAIL_R][4];                                                     \
            _Pragma("GCC unroll 16")                                               \
            for (int r = 0; r < MN_TAIL_R; r++)                                    \
                for (int j = 0; j < 4; j++) c[r][j] = (V){0};                      \
            for (mn_idx p = 0; p < kv; p += W)                                     \
                MN_TAIL_DOT_STEP(V, VU, p, *(const VU*)(b[j] + p))                  \
            if (rem && kc >= W)                                                    \
                MN_TAIL_DOT_STEP(V, VU, kl, (V)((IV)(*(const VU*)(b[j] + kl)) & keep)) \
            for (int r = 0; r < MN_TAIL_R && i0 + r < rows; r++)                   \
                for (int j = 0; j < 4 && j0 + j < cols; j++) {                     \
                    T s = 0;                                                       \
                    for (int l = 0; l < W; l++) s += c[r][j][l];                   \
                    for (mn_idx p = kv; p < kc && kc < W; p++) s += a[r][p] * b[j][p]; \
                    T* d = C + (i0 + r) * ldc + j0 + j;                            \
                    *d = accumulate ? *d + s : s;                                  \
                }                                                                  \
        }                                                                          \
    }                                                                              \
}

/* tail_lane: A transposed in place (A(i, p) = A[i + p * acs], x.T in a weight gradient),
 * B's tail in its packed panel (B(p, j) = B[p * ldb + j]): C[i..i+W, j] (+)= sum over p of
 * a vector of A's rows times one broadcast of B, MN_TAIL_R vectors of rows x 4 columns
 * at a time, then single vectors. */
#define MN_DEF_TAIL_LANE(NAME, T, V, VU, W)                                        \
static void NAME(mn_idx rows, mn_idx cols, mn_idx kc, const T* __restrict A,       \
                 mn_idx acs, const T* __restrict B, mn_idx ldb, T* C, mn_idx ldc,  \
                 int accumulate)                                                   \
{                                                                                  \
    mn_idx rv = rows / (MN_TAIL_R * W) * (MN_TAIL_R * W), i, p;                    \
    for (mn_idx i0 = 0; i0 < rv; i0 += MN_TAIL_R * W) {                            \
        for (mn_idx j0 = 0; j0 < cols; j0 += 4) {                                  \
            mn_idx jj[4];                                                          \
            for (int j = 0; j < 4; j++) jj[j] = j0 + j < cols ? j0 + j : cols - 1; \
            V c[MN_TAIL_R][4];                                                     \
            _Pragma("GCC unroll 16")                                               \
            for (int r = 0; r < MN_TAIL_R; r++)                                    \
                for (int j = 0; j < 4; j++) c[r][j] = (V){0};                      \
            for (p = 0; p < kc; p++) {                                             \
                const T* a = A + i0 + p * acs;                                     \
                const T* b = B + p * ldb;                                          \
                V av[MN_TAIL_R];                                                   \
                for (int r = 0; r < MN_TAIL_R; r++) av[r] = *(const VU*)(a + r * W); \
                _Pragma("GCC unroll 16")                                           \
                for (int j = 0; j < 4; j++) {                                      \
                    T bj = b[jj[j]];                                               \
                    for (int r = 0; r < MN_TAIL_R; r++) c[r][j] += av[r] * bj;     \
                }                                                                  \
            }                                                                      \
            for (int r = 0; r < MN_TAIL_R; r++)                                    \
                for (int j = 0; j < 4 && j0 + j < cols; j++)                       \
                    for (int l = 0; l < W; l++) {                                  \
                        T* d = C + (i0 + r * W + l) * ldc + j0 + j;                \
                        *d = accumulate ? *d + c[r][j][l] : c[r][j][l];            \
                    }                                                              \
        }                                                                          \
    }                                                                              \
    /* whole vectors left, one at a time; then one more ending at the last row, storing \
     * only its rows not yet done (plain loops when there are fewer rows than lanes) */ \
    for (mn_idx e = rv; e < rows && rows >= W; e += W) {                           \
        mn_idx s0 = e + W <= rows ? e : rows - W;                                  \
        for (mn_idx j0 = 0; j0 < cols; j0 += 4) {                                  \
            mn_idx jj[4];                                                          \
            for (int j = 0; j < 4; j++) jj[j] = j0 + j < cols ? j0 + j : cols - 1; \
            V c[4] = {(V){0}, (V){0}, (V){0}, (V){0}};                             \
            for (p = 0; p < kc; p++) {                                             \
                V av = *(const VU*)(A + s0 + p * acs);                             \
                for (int j = 0; j < 4; j++) c[j] += av * B[p * ldb + jj[j]];       \
            }                                                                      \
            for (int j = 0; j < 4 && j0 + j < cols; j++)                           \
                for (int l = (int)(e - s0); l < W; l++) {                          \
                    T* d = C + (s0 + l) * ldc + j0 + j;                            \
                    *d = accumulate ? *d + c[j][l] : c[j][l];                      \
                }                                                                  \
        }                                                                          \
    }                                                                              \
    for (i = rows >= W ? rows : rv; i < rows; i++)                                 \
        for (mn_idx j = 0; j < cols; j++) {                                        \
            T s = 0;                                                               \
            for (p = 0; p < kc; p++) s += A[i + p * acs] * B[p * ldb + j];         \
            T* d = C + i * ldc + j;                                                \
            *d = accumulate ? *d + s : s;                                          \
        }                                                                          \
}

MN_DEF_TAIL_DOT(mn_tail_dot_f32, float, mn_vf, mn_vf_u, mn_vfi, MN_VF)
MN_DEF_TAIL_DOT(mn_tail_dot_f64, double, mn_vd, mn_vd_u, mn_vdi, MN_VD)
MN_DEF_TAIL_LANE(mn_tail_lane_f32, float, mn_vf, mn_vf_u, MN_VF)
MN_DEF_TAIL_LANE(mn_tail_lane_f64, double, mn_vd, mn_vd_u, MN_VD)

/* Pixel-major convolution forward: C[MR x NV*W] = sum_p A(i, p) * B[p][:], where the
 * A operand is read straight from a padded image through a tap table,
 * A(i, p) = A[toff[p] + i] (i: MR consecutive output pixels of one row, p: tap), and
 * B is W^T packed as rows of NV*W output channels. No column panel is gathered; MR
 * is chosen per layer so that output rows split into whole tiles (MR = OW = 14 or
 * 16, two tiles of 14 for 28), and NV vectors cover the channels (16 or 32 floats).
 * C rows are NV*W apart;
 * with ADD the tile is added to C (the taps summed in chunks that stay in L1).
 * The window's pointer is formed once per tap (the empty asm keeps it in a register):
 * folded into each FMA's broadcast operand as base + index*4 + disp, Intel cores
 * split every such FMA into two uops at rename (indexed operands of three-source
 * instructions are not kept micro-fused). On a Sapphire Rapids Xeon the one-vector
 * tile (14 x 16 floats, 800 taps) ran at 110 GFLOPS that way with the other core
 * busy, 152 with the pointer formed once (180 -> 190 on an idle core; peak 217). */
#define MN_DEF_KERNEL_TAB(NAME, T, V, W, MR, NV) MN_DEF_KERNEL_SLIDE(NAME, T, V, W, MR, NV, 1)

/* The pixel-major forward for runs of KW taps on neighbouring pixels (one kernel row of
 * one channel, stride 1, no dilation: toff[p + k] = toff[p] + k for the run at p): the
 * tile's MR pixels read MR + KW - 1 image values in a run, and each, broadcast once,
 * meets the KW taps' weight vectors held in registers (c[j - k] += a[j] * b[k]), where
 * MN_DEF_KERNEL_TAB broadcasts MR values per tap, MR * KW a run. Fewer loads per FMA
 * (0.33 against 0.57 for 14 x 32 floats): on the Xeon (model 167, one core, operands
 * in L1) 14 x 16 floats with 5-tap runs ran at 93% of the FMA peak, MN_DEF_KERNEL_TAB's
 * 14 x 32 at 84% and 14 x 16 at 80%. Needs MR * NV + KW * NV + 1 registers: AVX-512.
 * KW = 1 is MN_DEF_KERNEL_TAB. */
#define MN_DEF_KERNEL_SLIDE(NAME, T, V, W, MR, NV, KW)                             \
static void NAME(mn_idx kc, const T* __restrict A, const mn_idx* __restrict toff,  \
                 const T* __restrict B, T* __restrict C, int add)                  \
{                                                                                  \
    V c[MR][NV];                                                                   \
    _Pragma("GCC unroll 32")                                                       \
    for (int i = 0; i < MR; i++)                                                   \
        for (int v = 0; v < NV; v++)                                               \
            c[i][v] = add ? *(const V*)(C + i * NV * W + v * W) : (V){0};          \
    for (mn_idx p = 0; p < kc; p += KW) {                                          \
        const T* a = A + toff[p];                                                  \
        __asm__("" : "+r"(a));                                                     \
        V b[KW][NV];                                                               \
        _Pragma("GCC unroll 8")                                                    \
        for (int k = 0; k < KW; k++)                                               \
            for (int v = 0; v < NV; v++) b[k][v] = *(const V*)(B + (p + k) * NV * W + v * W); \
        _Pragma("GCC unroll 40")                                                   \
        for (int j = 0; j < MR + KW - 1; j++) {                                    \
            T x = a[j];                                                            \
            _Pragma("GCC unroll 8")                                                \
            for (int k = 0; k < KW; k++)                                           \
                if (j - k >= 0 && j - k < MR)                                      \
                    for (int v = 0; v < NV; v++) c[j - k][v] += x * b[k][v];       \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 32")                                                       \
    for (int i = 0; i < MR; i++)                                                   \
        for (int v = 0; v < NV; v++) *(V*)(C + i * NV * W + v * W) = c[i][v];      \
}

/* The tile heights per channel width, sized to the vector registers (accumulators +
 * B vectors + a broadcast): 32 registers with AVX-512, 16 otherwise. With AVX-512 the
 * one-vector heights fit 14- and 16-pixel rows (16 x 16 floats: 32-channel layers at
 * 16x16 run as two blocks of 16 channels where no two-vector height fits; a 28-pixel
 * tile served only 28-wide rows, which two 14-pixel tiles cover as well). */
#if defined(__AVX512F__)
#define MN_TAB_1A 16
#define MN_TAB_1B 14
#define MN_TAB_2A 14
#define MN_TAB_2B 12
#else
#define MN_TAB_1A 14
#define MN_TAB_1B 12
#define MN_TAB_2A 7
#define MN_TAB_2B 6
#endif

/* 1 where one-vector tiles in several channel blocks beat the two-vector ones (the
 * table's tab_one): AVX2, whose 16 registers hold two-vector tiles of only 7 or 6 pixels
 * (in L1, Xeon model 167: 14 x 8 floats at 90% of the AVX2 peak, 7 x 16 at 71%). Not
 * SSE2, where the MNIST CNN's 5x5 layer ran 20% slower on one-vector tiles. */
#if defined(__AVX2__) && !defined(__AVX512F__)
#define MN_TAB_ONE 1
#else
#define MN_TAB_ONE 0
#endif

MN_DEF_KERNEL_TAB(mn_tab_1a_f32, float, mn_vf, MN_VF, MN_TAB_1A, 1)
MN_DEF_KERNEL_TAB(mn_tab_1b_f32, float, mn_vf, MN_VF, MN_TAB_1B, 1)
MN_DEF_KERNEL_TAB(mn_tab_2a_f32, float, mn_vf, MN_VF, MN_TAB_2A, 2)
MN_DEF_KERNEL_TAB(mn_tab_2b_f32, float, mn_vf, MN_VF, MN_TAB_2B, 2)
MN_DEF_KERNEL_TAB(mn_tab_1a_f64, double, mn_vd, MN_VD, MN_TAB_1A, 1)
MN_DEF_KERNEL_TAB(mn_tab_1b_f64, double, mn_vd, MN_VD, MN_TAB_1B, 1)
MN_DEF_KERNEL_TAB(mn_tab_2a_f64, double, mn_vd, MN_VD, MN_TAB_2A, 2)
MN_DEF_KERNEL_TAB(mn_tab_2b_f64, double, mn_vd, MN_VD, MN_TAB_2B, 2)

/* Sliding-run kernels where the registers hold them (MN_DEF_KERNEL_SLIDE): one vector of
 * channels at both heights, kw 3 and 5; two vectors at the shorter height, kw 3. The
 * table's tab_slide[nv - 1][taller] has bit kw set for each. */
#if defined(__AVX512F__)
#define MN_TAB_SLIDE_1 ((1 << 3) | (1 << 5))
#define MN_TAB_SLIDE_2B (1 << 3)
#define MN_DEF_SLIDES(T, V, W, SUF)                                                \
MN_DEF_KERNEL_SLIDE(mn_slide_1a3_##SUF, T, V, W, MN_TAB_1A, 1, 3)                  \
MN_DEF_KERNEL_SLIDE(mn_slide_1a5_##SUF, T, V, W, MN_TAB_1A, 1, 5)                  \
MN_DEF_KERNEL_SLIDE(mn_slide_1b3_##SUF, T, V, W, MN_TAB_1B, 1, 3)                  \
MN_DEF_KERNEL_SLIDE(mn_slide_1b5_##SUF, T, V, W, MN_TAB_1B, 1, 5)                  \
MN_DEF_KERNEL_SLIDE(mn_slide_2b3_##SUF, T, V, W, MN_TAB_2B, 2, 3)
MN_DEF_SLIDES(float, mn_vf, MN_VF, f32)
MN_DEF_SLIDES(double, mn_vd, MN_VD, f64)
/* returns from the dispatch where a sliding kernel ran (nv: 1 or 2 vectors, kw: the
 * run length) */
#define MN_TAB_SLIDE_CALL(SUF, nv, mr, kw, kc, A, toff, B, C, add)                 \
    if (nv == 1 && kw == 5) {                                                      \
        if (mr == MN_TAB_1A) mn_slide_1a5_##SUF(kc, A, toff, B, C, add);           \
        else mn_slide_1b5_##SUF(kc, A, toff, B, C, add);                           \
        return;                                                                    \
    }                                                                              \
    if (nv == 1 && kw == 3) {                                                      \
        if (mr == MN_TAB_1A) mn_slide_1a3_##SUF(kc, A, toff, B, C, add);           \
        else mn_slide_1b3_##SUF(kc, A, toff, B, C, add);                           \
        return;                                                                    \
    }                                                                              \
    if (nv == 2 && kw == 3 && mr == MN_TAB_2B) {                                   \
        mn_slide_2b3_##SUF(kc, A, toff, B, C, add);                                \
        return;                                                                    \
    }
#else
#define MN_TAB_SLIDE_1 0
#define MN_TAB_SLIDE_2B 0
#define MN_TAB_SLIDE_CALL(SUF, nv, mr, kw, kc, A, toff, B, C, add) (void)kw;
#endif

/* Tap-major convolution weight gradient, the pixel-major forward's adjoint in W:
 * C[MR taps x NV*W channels] += sum over output pixels (oh, ow) of
 * A[oh * wp + ow + toff[i]] (the padded image under tap i) * B[(oh * ow_n + ow)][:]
 * (the output grad, transposed to pixel-major rows of NV*W channels). Only real
 * output pixels are visited; C rows are NV*W apart and are added to. */
#define MN_DEF_KERNEL_WG(NAME, T, V, W, MR, NV)                                    \
static void NAME(mn_idx oh_n, mn_idx ow_n, mn_idx wp, const T* __restrict A,       \
                 const mn_idx* __restrict toff, const T* __restrict B, T* C)       \
{                                                                                  \
    V c[MR][NV];                                                                   \
    mn_idx to[MR];                                                                 \
    _Pragma("GCC unroll 32")                                                       \
    for (int i = 0; i < MR; i++) {                                                 \
        to[i] = toff[i];                                                           \
        for (int v = 0; v < NV; v++) c[i][v] = (V){0};                             \
    }                                                                              \
    for (mn_idx oh = 0; oh < oh_n; oh++) {                                         \
        const T* a = A + oh * wp;                                                  \
        const T* b = B + oh * ow_n * NV * W;                                       \
        for (mn_idx ow = 0; ow < ow_n; ow++) {                                     \
            V bv[NV];                                                              \
            for (int v = 0; v < NV; v++) bv[v] = *(const V*)(b + ow * NV * W + v * W); \
            _Pragma("GCC unroll 32")                                               \
            for (int i = 0; i < MR; i++)                                           \
                for (int v = 0; v < NV; v++) c[i][v] += a[ow + to[i]] * bv[v];     \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 32")                                                       \
    for (int i = 0; i < MR; i++)                                                   \
        for (int v = 0; v < NV; v++) *(V*)(C + i * NV * W + v * W) += c[i][v];     \
}

MN_DEF_KERNEL_WG(mn_wg_1a_f32, float, mn_vf, MN_VF, MN_TAB_1A, 1)
MN_DEF_KERNEL_WG(mn_wg_1b_f32, float, mn_vf, MN_VF, MN_TAB_1B, 1)
MN_DEF_KERNEL_WG(mn_wg_2a_f32, float, mn_vf, MN_VF, MN_TAB_2A, 2)
MN_DEF_KERNEL_WG(mn_wg_2b_f32, float, mn_vf, MN_VF, MN_TAB_2B, 2)
MN_DEF_KERNEL_WG(mn_wg_1a_f64, double, mn_vd, MN_VD, MN_TAB_1A, 1)
MN_DEF_KERNEL_WG(mn_wg_1b_f64, double, mn_vd, MN_VD, MN_TAB_1B, 1)
MN_DEF_KERNEL_WG(mn_wg_2a_f64, double, mn_vd, MN_VD, MN_TAB_2A, 2)
MN_DEF_KERNEL_WG(mn_wg_2b_f64, double, mn_vd, MN_VD, MN_TAB_2B, 2)

/* The tap-major weight gradient for runs of KW taps on neighbouring pixels (RUNS runs, a
 * tile of RUNS * KW taps x NV vectors of channels; toff[r * KW] the run's first tap): P
 * output pixels' grad vectors held in registers, each image value of a run's P + KW - 1
 * broadcast once against them (c[r][k] += a[m] * d[m - k]), where MN_DEF_KERNEL_WG
 * broadcasts MR values per pixel against NV vectors. One vector, 3 runs of 5 taps, 7
 * pixels (0.38 loads per FMA): 89% of the FMA peak (Xeon model 167, one core, in L1),
 * against 79% for MN_DEF_KERNEL_WG's 14 taps x 32 floats and 63% for 14 x 16. A row's
 * last ow_n % P pixels go one at a time. */
#define MN_DEF_KERNEL_WG_SLIDE(NAME, T, V, W, RUNS, KW, NV, P)                     \
static void NAME(mn_idx oh_n, mn_idx ow_n, mn_idx wp, const T* __restrict A,       \
                 const mn_idx* __restrict toff, const T* __restrict B, T* C)       \
{                                                                                  \
    V c[RUNS][KW][NV];                                                             \
    mn_idx to[RUNS];                                                               \
    _Pragma("GCC unroll 8")                                                        \
    for (int r = 0; r < RUNS; r++) {                                               \
        to[r] = toff[r * KW];                                                      \
        for (int k = 0; k < KW; k++)                                               \
            for (int v = 0; v < NV; v++) c[r][k][v] = (V){0};                      \
    }                                                                              \
    for (mn_idx oh = 0; oh < oh_n; oh++) {                                         \
        const T* a = A + oh * wp;                                                  \
        const T* b = B + oh * ow_n * NV * W;                                       \
        mn_idx ow = 0;                                                             \
        for (; ow + P <= ow_n; ow += P) {                                          \
            V d[P][NV];                                                            \
            _Pragma("GCC unroll 16")                                               \
            for (int p = 0; p < P; p++)                                            \
                for (int v = 0; v < NV; v++)                                       \
                    d[p][v] = *(const V*)(b + (ow + p) * NV * W + v * W);          \
            _Pragma("GCC unroll 8")                                                \
            for (int r = 0; r < RUNS; r++) {                                       \
                const T* ar = a + ow + to[r];                                      \
                _Pragma("GCC unroll 16")                                           \
                for (int m = 0; m < P + KW - 1; m++) {                             \
                    T x = ar[m];                                                   \
                    _Pragma("GCC unroll 8")                                        \
                    for (int k = 0; k < KW; k++)                                   \
                        if (m - k >= 0 && m - k < P)                               \
                            for (int v = 0; v < NV; v++) c[r][k][v] += x * d[m - k][v]; \
                }                                                                  \
            }                                                                      \
        }                                                                          \
        for (; ow < ow_n; ow++) {                                                  \
            V d[NV];                                                               \
            for (int v = 0; v < NV; v++) d[v] = *(const V*)(b + ow * NV * W + v * W); \
            _Pragma("GCC unroll 8")                                                \
            for (int r = 0; r < RUNS; r++)                                         \
                _Pragma("GCC unroll 8")                                            \
                for (int k = 0; k < KW; k++)                                       \
                    for (int v = 0; v < NV; v++) c[r][k][v] += a[ow + to[r] + k] * d[v]; \
        }                                                                          \
    }                                                                              \
    _Pragma("GCC unroll 8")                                                        \
    for (int r = 0; r < RUNS; r++)                                                 \
        for (int k = 0; k < KW; k++)                                               \
            for (int v = 0; v < NV; v++)                                           \
                *(V*)(C + (r * KW + k) * NV * W + v * W) += c[r][k][v];            \
}

/* The sliding weight-gradient kernels (AVX-512): one vector of channels, 15-tap tiles
 * (3 runs of 5 or 5 of 3), 7 pixels at a time where they split the row (OW 14, 28), else
 * 8 (OW 16, 32). The table's wg_slide has bit kw set for each, wg_slide_mr their height. */
#if defined(__AVX512F__)
#define MN_WG_SLIDE ((1 << 3) | (1 << 5))
#define MN_WG_SLIDE_MR 15
#define MN_DEF_WG_SLIDES(T, V, W, SUF)                                             \
MN_DEF_KERNEL_WG_SLIDE(mn_wgs_5p7_##SUF, T, V, W, 3, 5, 1, 7)                      \
MN_DEF_KERNEL_WG_SLIDE(mn_wgs_5p8_##SUF, T, V, W, 3, 5, 1, 8)                      \
MN_DEF_KERNEL_WG_SLIDE(mn_wgs_3p7_##SUF, T, V, W, 5, 3, 1, 7)                      \
MN_DEF_KERNEL_WG_SLIDE(mn_wgs_3p8_##SUF, T, V, W, 5, 3, 1, 8)
MN_DEF_WG_SLIDES(float, mn_vf, MN_VF, f32)
MN_DEF_WG_SLIDES(double, mn_vd, MN_VD, f64)
#define MN_WG_SLIDE_CALL(SUF, nv, kw, oh_n, ow_n, wp, A, toff, B, C)                \
    if (nv == 1 && kw == 5) {                                                      \
        if (ow_n % 7 == 0) mn_wgs_5p7_##SUF(oh_n, ow_n, wp, A, toff, B, C);        \
        else mn_wgs_5p8_##SUF(oh_n, ow_n, wp, A, toff, B, C);                      \
        return;                                                                    \
    }                                                                              \
    if (nv == 1 && kw == 3) {                                                      \
        if (ow_n % 7 == 0) mn_wgs_3p7_##SUF(oh_n, ow_n, wp, A, toff, B, C);        \
        else mn_wgs_3p8_##SUF(oh_n, ow_n, wp, A, toff, B, C);                      \
        return;                                                                    \
    }
#else
#define MN_WG_SLIDE 0
#define MN_WG_SLIDE_MR 0
#define MN_WG_SLIDE_CALL(SUF, nv, kw, oh_n, ow_n, wp, A, toff, B, C) (void)kw;
#endif

/* nv: 1 or 2 vectors of channels, plus kw << MN_TAB_KW_SHIFT for a sliding kernel (the
 * table's wg_slide; mr then wg_slide_mr) */
#define MN_DEF_WG_DISPATCH(NAME, T, SUF)                                           \
static void NAME(int nv, int mr, mn_idx oh_n, mn_idx ow_n, mn_idx wp, const T* A,  \
                 const mn_idx* toff, const T* B, T* C)                             \
{                                                                                  \
    int kw = nv >> MN_TAB_KW_SHIFT;                                                \
    nv &= 3;                                                                       \
    MN_WG_SLIDE_CALL(SUF, nv, kw, oh_n, ow_n, wp, A, toff, B, C)                   \
    if (nv == 1 && mr == MN_TAB_1A) mn_wg_1a_##SUF(oh_n, ow_n, wp, A, toff, B, C); \
    else if (nv == 1) mn_wg_1b_##SUF(oh_n, ow_n, wp, A, toff, B, C);               \
    else if (mr == MN_TAB_2A) mn_wg_2a_##SUF(oh_n, ow_n, wp, A, toff, B, C);       \
    else mn_wg_2b_##SUF(oh_n, ow_n, wp, A, toff, B, C);                            \
}

/* The tile heights on offer for nv vectors of channels (a: the taller). */
static inline int mn_tab_mr(int nv, int taller) {
    return nv == 1 ? (taller ? MN_TAB_1A : MN_TAB_1B) : (taller ? MN_TAB_2A : MN_TAB_2B);
}

/* nv: 1 or 2 vectors of channels, plus MN_TAB_ADD to add the tile to C, plus kw <<
 * MN_TAB_KW_SHIFT where the taps come in runs of kw neighbouring pixels and the table's
 * tab_slide has a kernel for them (kc a multiple of kw) */
#define MN_TAB_ADD 4
#define MN_TAB_KW_SHIFT 3
#define MN_DEF_TAB_DISPATCH(NAME, T, SUF)                                          \
static void NAME(int nv, int mr, mn_idx kc, const T* A, const mn_idx* toff,        \
                 const T* B, T* C)                                                 \
{                                                                                  \
    int add = (nv & MN_TAB_ADD) != 0, kw = nv >> MN_TAB_KW_SHIFT;                  \
    nv &= 3;                                                                       \
    MN_TAB_SLIDE_CALL(SUF, nv, mr, kw, kc, A, toff, B, C, add)                     \
    if (nv == 1 && mr == MN_TAB_1A) mn_tab_1a_##SUF(kc, A, toff, B, C, add);       \
    else if (nv == 1) mn_tab_1b_##SUF(kc, A, toff, B, C, add);                     \
    else if (mr == MN_TAB_2A) mn_tab_2a_##SUF(kc, A, toff, B, C, add);             \
    else mn_tab_2b_##SUF(kc, A, toff, B, C, add);                                  \
}
MN_DEF_TAB_DISPATCH(mn_tab_kernel_f32, float, f32)
MN_DEF_TAB_DISPATCH(mn_tab_kernel_f64, double, f64)
MN_DEF_WG_DISPATCH(mn_wg_kernel_f32, float, f32)
MN_DEF_WG_DISPATCH(mn_wg_kernel_f64, double, f64)

MN_DEF_KERNEL_AT_HALF(mn_kernel_at_half_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F)
MN_DEF_KERNEL_AT_HALF(mn_kernel_at_half_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D)

MN_DEF_KERNEL_AT(mn_kernel_at_f32, float, mn_vf, mn_vf_u, MN_VF, MN_NR_F)
MN_DEF_KERNEL_AT(mn_kernel_at_f64, double, mn_vd, mn_vd_u, MN_VD, MN_NR_D)
#endif
