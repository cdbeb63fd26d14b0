/* The generic (SSE2) GEMM micro-kernels, C[4 x NR] (+)= A_panel[kc x 4]^T * B_panel[kc x NR],
 * included by _gemm.h in place of the vector-extension ones when the vectors are 128-bit.
 *
 * SSE2 has no broadcast from memory and no FMA: the broadcast kernel spends a shuffle per
 * row per step (movss + shufps) beside its multiplies and adds, and those shuffles run on
 * the same pipes, capping it near 80% of the multiply + add peak. Here the A vector of a
 * step (its 4 rows) is rotated instead (pshufd), and each rotation multiplies both B
 * vectors: lane l of accumulator c[r][v] gathers A(row (l + r) % 4) * B(col 4v + l).
 * 3 shuffles per 16 multiply/adds for float32 (2 per 16 for float64, 2 lanes); the
 * accumulators are put back in row order once, after the k loop. Every C element is
 * still the same sum in the same order as in the broadcast kernel.
 * matmul.pyx's blocked product runs _gemm.h's pre-broadcast kernel (kernel_bc: A packed
 * as whole vectors, no shuffles, 6 x 8) instead; these serve the convolutions and the
 * other GEMM paths, whose A panels hold one copy of each value. */
#ifndef MN_GEMM_SSE2_H
#define MN_GEMM_SSE2_H
#include <emmintrin.h>

static inline __m128 mn_rot_ps(__m128 a, int r)
{
    __m128i x = _mm_castps_si128(a);
    switch (r) {   /* lane l <- lane (l + r) % 4 */
    case 1: return _mm_castsi128_ps(_mm_shuffle_epi32(x, 0x39));
    case 2: return _mm_castsi128_ps(_mm_shuffle_epi32(x, 0x4E));
    default: return _mm_castsi128_ps(_mm_shuffle_epi32(x, 0x93));
    }
}

static void mn_kernel_f32(mn_idx kc, const float* __restrict A, const float* __restrict B,
                          float* C, mn_idx ldc, int accumulate)
{
    __m128 c[4][2];
    for (int i = 0; i < 4; i++) {
        c[i][0] = c[i][1] = _mm_setzero_ps();
        __builtin_prefetch(C + i * ldc, 1, 3);   /* as in _gemm.h: C is touched last */
        __builtin_prefetch(C + i * ldc + 7, 1, 3);
    }
    _Pragma("GCC unroll 2")
    for (mn_idx p = 0; p < kc; p++) {
        __m128 a = _mm_loadu_ps(A + 4 * p);   /* (B panels are aligned, A's need not be) */
        __m128 b0 = _mm_load_ps(B + 8 * p), b1 = _mm_load_ps(B + 8 * p + 4);
        __m128 ar[4] = {a, mn_rot_ps(a, 1), mn_rot_ps(a, 2), mn_rot_ps(a, 3)};
        _Pragma("GCC unroll 4")
        for (int r = 0; r < 4; r++) {
            c[r][0] = _mm_add_ps(c[r][0], _mm_mul_ps(ar[r], b0));
            c[r][1] = _mm_add_ps(c[r][1], _mm_mul_ps(ar[r], b1));
        }
    }
    float t[4][8] __attribute__((aligned(16)));
    for (int r = 0; r < 4; r++) {
        _mm_store_ps(t[r], c[r][0]);
        _mm_store_ps(t[r] + 4, c[r][1]);
    }
    for (int i = 0; i < 4; i++) {
        float* d = C + i * ldc;
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++) {
            float x = t[(i - j) & 3][j];   /* rotation r = (row - lane) mod 4 */
            d[j] = accumulate ? d[j] + x : x;
        }
    }
}

/* float64: the 4 rows are two vectors (rows 0-1, 2-3), each swapped once per step;
 * lane l of c[h][r][v] gathers A(row 2h + (l + r) % 2) * B(col 2v + l). */
static void mn_kernel_f64(mn_idx kc, const double* __restrict A, const double* __restrict B,
                          double* C, mn_idx ldc, int accumulate)
{
    __m128d c[2][2][2];
    for (int i = 0; i < 4; i++) {
        __builtin_prefetch(C + i * ldc, 1, 3);
        __builtin_prefetch(C + i * ldc + 3, 1, 3);
    }
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 2; r++) c[h][r][0] = c[h][r][1] = _mm_setzero_pd();
    _Pragma("GCC unroll 2")
    for (mn_idx p = 0; p < kc; p++) {
        __m128d b0 = _mm_load_pd(B + 4 * p), b1 = _mm_load_pd(B + 4 * p + 2);
        _Pragma("GCC unroll 2")
        for (int h = 0; h < 2; h++) {
            __m128d a = _mm_loadu_pd(A + 4 * p + 2 * h);
            __m128d as = _mm_shuffle_pd(a, a, 1);
            c[h][0][0] = _mm_add_pd(c[h][0][0], _mm_mul_pd(a, b0));
            c[h][0][1] = _mm_add_pd(c[h][0][1], _mm_mul_pd(a, b1));
            c[h][1][0] = _mm_add_pd(c[h][1][0], _mm_mul_pd(as, b0));
            c[h][1][1] = _mm_add_pd(c[h][1][1], _mm_mul_pd(as, b1));
        }
    }
    double t[2][2][4] __attribute__((aligned(16)));
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 2; r++) {
            _mm_store_pd(t[h][r], c[h][r][0]);
            _mm_store_pd(t[h][r] + 2, c[h][r][1]);
        }
    for (int i = 0; i < 4; i++) {
        double* d = C + i * ldc;
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) {
            double x = t[i >> 1][(i - j) & 1][j];   /* rotation (row - lane) mod 2 */
            d[j] = accumulate ? d[j] + x : x;
        }
    }
}
#endif
