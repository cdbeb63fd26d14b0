/* Small products without packing (the AVX-512 kernel sets only: MN_SMALL_OK, which the
 * kernel table passes on as small_ok): C = A @ B for operands that fit in
 * L1/L2, where copying A and B into panels costs as much as multiplying them (64^3,
 * the 100 x 100 x 10 of an MLP's output layer). A is read in place through its strides
 * (each element broadcast into an FMA), B's rows in place with masked loads, and C's
 * column edges are written with masked stores, so no edge is padded or copied. */
#ifndef MN_GEMM_SMALL_H
#define MN_GEMM_SMALL_H
#include <stddef.h>
typedef ptrdiff_t mn_idx;

#if defined(__AVX512F__)
#include <immintrin.h>
#define MN_SMALL_OK 1
#define MN_SMALL_MR 12

/* C[R x cols] = A[R x K] * B[K x cols], cols <= NV * W (masks m0, m1 cover them).
 * Rows of A are reached from four bases (rows 0, 3, 6, 9) plus 0, 1 or 2 row strides,
 * so the loop needs 4 pointers and 2 strides rather than one register per row. */
#define MN_DEF_SMALL_KERNEL(NAME, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, R, NV)   \
static inline void NAME(mn_idx K, const T* __restrict A, mn_idx ars, mn_idx acs,        \
                        const T* __restrict B, mn_idx ldb, T* __restrict C, mn_idx ldc,   \
                        MASK m0, MASK m1)                                                 \
{                                                                                         \
    V c[R][NV];                                                                           \
    const T* base[4];                                                                     \
    mn_idx ars2 = 2 * ars;                                                                \
    _Pragma("GCC unroll 16")                                                              \
    for (int i = 0; i < R; i++)                                                           \
        for (int v = 0; v < NV; v++) c[i][v] = ZERO();                                    \
    _Pragma("GCC unroll 4")                                                               \
    for (int g = 0; g < 4; g++) base[g] = A + 3 * g * ars;                                \
    for (mn_idx p = 0; p < K; p++) {                                                      \
        V b[NV];                                                                          \
        b[0] = LOADM(m0, B + p * ldb);                                                    \
        if (NV > 1) b[NV - 1] = LOADM(m1, B + p * ldb + W);                               \
        _Pragma("GCC unroll 16")                                                          \
        for (int i = 0; i < R; i++) {                                                     \
            const T* a = base[i / 3];                                                     \
            V ai = SET1(i % 3 == 0 ? a[0] : i % 3 == 1 ? a[ars] : a[ars2]);               \
            for (int v = 0; v < NV; v++) c[i][v] = FMA(ai, b[v], c[i][v]);                \
        }                                                                                 \
        _Pragma("GCC unroll 4")                                                           \
        for (int g = 0; g < 4; g++) base[g] += acs;                                       \
    }                                                                                     \
    _Pragma("GCC unroll 16")                                                              \
    for (int i = 0; i < R; i++) {                                                         \
        STOREM(C + i * ldc, m0, c[i][0]);                                                 \
        if (NV > 1) STOREM(C + i * ldc + W, m1, c[i][NV - 1]);                            \
    }                                                                                     \
}

#define MN_DEF_SMALL_SET(SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO)               \
MN_DEF_SMALL_KERNEL(mn_small_12x2_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 12, 2) \
MN_DEF_SMALL_KERNEL(mn_small_8x2_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 8, 2) \
MN_DEF_SMALL_KERNEL(mn_small_4x2_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 4, 2) \
MN_DEF_SMALL_KERNEL(mn_small_2x2_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 2, 2) \
MN_DEF_SMALL_KERNEL(mn_small_1x2_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 1, 2) \
MN_DEF_SMALL_KERNEL(mn_small_12x1_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 12, 1) \
MN_DEF_SMALL_KERNEL(mn_small_8x1_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 8, 1) \
MN_DEF_SMALL_KERNEL(mn_small_4x1_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 4, 1) \
MN_DEF_SMALL_KERNEL(mn_small_2x1_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 2, 1) \
MN_DEF_SMALL_KERNEL(mn_small_1x1_##SUF, T, V, MASK, W, SET1, FMA, LOADM, STOREM, ZERO, 1, 1) \
                                                                                          \
/* Rows i0..i1 of C's column panels jp0..jp1 (2 W columns each): 12-row tiles, then the \
 * remainder as 8 + 4 + 2 + 1 rows. */                                                    \
static void mn_gemm_small_##SUF(mn_idx N, mn_idx K, const T* A, mn_idx ars, mn_idx acs,  \
                                const T* B, mn_idx ldb, T* C, mn_idx ldc,                 \
                                mn_idx i0, mn_idx i1, mn_idx jp0, mn_idx jp1)             \
{                                                                                         \
    for (mn_idx jp = jp0; jp < jp1; jp++) {                                               \
        mn_idx j = jp * 2 * W, cols = N - j < 2 * W ? N - j : 2 * W;                      \
        MASK m0 = (MASK)(cols >= W ? (MASK)~0 : (MASK)((1u << cols) - 1));                \
        MASK m1 = (MASK)(cols >= 2 * W ? (MASK)~0 : cols > W ? (MASK)((1u << (cols - W)) - 1) : 0); \
        const T* Bj = B + j;                                                              \
        mn_idx i = i0;                                                                    \
        for (; i + 12 <= i1; i += 12) {                                                   \
            const T* Ai = A + i * ars;                                                    \
            if (cols > W) mn_small_12x2_##SUF(K, Ai, ars, acs, Bj, ldb, C + i * ldc + j, ldc, m0, m1); \
            else mn_small_12x1_##SUF(K, Ai, ars, acs, Bj, ldb, C + i * ldc + j, ldc, m0, m1); \
        }                                                                                 \
        for (int r = 8; r >= 1; r /= 2) {                                                 \
            if (i1 - i < r) continue;                                                     \
            const T* Ai = A + i * ars;                                                    \
            T* Ci = C + i * ldc + j;                                                      \
            if (cols > W) {                                                               \
                if (r == 8) mn_small_8x2_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else if (r == 4) mn_small_4x2_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else if (r == 2) mn_small_2x2_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else mn_small_1x2_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1);       \
            } else {                                                                      \
                if (r == 8) mn_small_8x1_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else if (r == 4) mn_small_4x1_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else if (r == 2) mn_small_2x1_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1); \
                else mn_small_1x1_##SUF(K, Ai, ars, acs, Bj, ldb, Ci, ldc, m0, m1);       \
            }                                                                             \
            i += r;                                                                       \
        }                                                                                 \
    }                                                                                     \
}

MN_DEF_SMALL_SET(f32, float, __m512, __mmask16, 16, _mm512_set1_ps, _mm512_fmadd_ps,
                 _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps, _mm512_setzero_ps)
MN_DEF_SMALL_SET(f64, double, __m512d, __mmask8, 8, _mm512_set1_pd, _mm512_fmadd_pd,
                 _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd, _mm512_setzero_pd)

#else
#define MN_SMALL_OK 0
#define MN_SMALL_MR 12
#define MN_DEF_SMALL_STUB(SUF, T)                                                         \
static void mn_gemm_small_##SUF(mn_idx N, mn_idx K, const T* A, mn_idx ars, mn_idx acs,  \
                                const T* B, mn_idx ldb, T* C, mn_idx ldc,                 \
                                mn_idx i0, mn_idx i1, mn_idx jp0, mn_idx jp1)             \
{ __builtin_trap(); /* never chosen: mn_small_ok() is 0 without AVX-512 */ }
MN_DEF_SMALL_STUB(f32, float)
MN_DEF_SMALL_STUB(f64, double)
#endif

static inline int mn_small_ok(void) { return MN_SMALL_OK; }
#endif
