/* One row of the fused softmax cross-entropy, written so gcc vectorises it: the max
 * as a simd max-reduction, then exp through glibc's vector math (libmvec: `omp simd`
 * lets gcc call the 16-wide expf) with the sum reduced in double. A NaN in the row
 * (which the max may skip) makes its exp, so the sum, the loss and every probability
 * NaN, as PyTorch. The loss is log(s) - (z[y] - m), never log(s) + m - z[y]: with
 * |z| ~ 1e17 (1e9 in double already loses digits) m - z[y] cancels log(s) away. */
#ifndef MN_XENT_H
#define MN_XENT_H
#include "_rows.h"
#include "_vecmath.h"
#include <stddef.h>
#include <stdint.h>

/* A block of up to W rows with few classes (C <= MN_XENT_SMALL_C, MNIST's 10): the block
 * is transposed into a local (C, W) tile so that every step runs across W rows at once,
 * one vector exp per class instead of one per row (a row at a time, C = 10 filled no
 * vector: each exp was a libm call and a 100 x 10 batch took ~10 us). Returns the sum of
 * the rows' losses; the same steps as the row kernel, in the same precision. */
#define MN_XENT_SMALL_C 32
#define MN_DEF_XENT_BLOCK(NAME, T, EXP, LOG, W)                                    \
static double NAME(const T* __restrict z, const int64_t* __restrict y,             \
                   T* __restrict p, ptrdiff_t C, ptrdiff_t R)                      \
{                                                                                  \
    T t[MN_XENT_SMALL_C][W], m[W], zy[W];                                         \
    double s[W], l[W], total = 0;                                                  \
    for (ptrdiff_t j = 0; j < C; j++)                                              \
        for (ptrdiff_t r = 0; r < W; r++)                                          \
            t[j][r] = r < R ? z[r * C + j] : (T)0;                                 \
    for (ptrdiff_t r = 0; r < W; r++) {                                            \
        m[r] = t[0][r];                                                            \
        zy[r] = r < R ? z[r * C + y[r]] : (T)0;                                    \
        s[r] = 0;                                                                  \
    }                                                                              \
    for (ptrdiff_t j = 0; j < C; j++)                                              \
        _Pragma("omp simd")                                                        \
        for (ptrdiff_t r = 0; r < W; r++)                                          \
            m[r] = t[j][r] > m[r] ? t[j][r] : m[r];                                \
    for (ptrdiff_t j = 0; j < C; j++)                                              \
        _Pragma("omp simd")                                                        \
        for (ptrdiff_t r = 0; r < W; r++) {                                        \
            T e = EXP(t[j][r] - m[r]);                                             \
            t[j][r] = e;                                                           \
            s[r] += e;                                                             \
        }                                                                          \
    _Pragma("omp simd")                                                            \
    for (ptrdiff_t r = 0; r < W; r++)                                              \
        l[r] = LOG(s[r]) - ((double)zy[r] - (double)m[r]);                         \
    for (ptrdiff_t r = 0; r < R; r++) {                                            \
        T inv = (T)(1.0 / s[r]);                                                   \
        for (ptrdiff_t j = 0; j < C; j++)                                          \
            p[r * C + j] = t[j][r] * inv;                                          \
        total += l[r];                                                             \
    }                                                                              \
    return total;                                                                  \
}

/* one row: p = softmax(z) (_rows.h), its loss log(s) - (z[y] - m) */
#define MN_DEF_XENT_ROW(NAME, T, SOFTMAX)                                          \
static double NAME(const T* __restrict z, int64_t y, T* __restrict p, ptrdiff_t C) \
{                                                                                  \
    T m;                                                                           \
    double s = SOFTMAX(z, p, C, &m);                                               \
    return log(s) - ((double)z[y] - (double)m);                                    \
}

/* Rows [0, R) of a batch: the sum of their losses, probabilities written to p. */
#define MN_DEF_XENT_ROWS(NAME, T, ROW, BLOCK, W)                                   \
static double NAME(const T* z, const int64_t* y, T* p, ptrdiff_t C, ptrdiff_t R)   \
{                                                                                  \
    double total = 0;                                                              \
    if (C <= MN_XENT_SMALL_C) {                                                    \
        for (ptrdiff_t i = 0; i < R; i += W)                                       \
            total += BLOCK(z + i * C, y + i, p + i * C, C, R - i < W ? R - i : W); \
        return total;                                                              \
    }                                                                              \
    for (ptrdiff_t i = 0; i < R; i++)                                              \
        total += ROW(z + i * C, y[i], p + i * C, C);                               \
    return total;                                                                  \
}

MN_DEF_XENT_ROW(mn_xent_row_f32, float, mn_softmax_row_f32)
MN_DEF_XENT_ROW(mn_xent_row_f64, double, mn_softmax_row_f64)
MN_DEF_XENT_BLOCK(mn_xent_block_f32, float, expf, log, 16)
MN_DEF_XENT_BLOCK(mn_xent_block_f64, double, exp, log, 8)
MN_DEF_XENT_ROWS(mn_xent_rows_f32, float, mn_xent_row_f32, mn_xent_block_f32, 16)
MN_DEF_XENT_ROWS(mn_xent_rows_f64, double, mn_xent_row_f64, mn_xent_block_f64, 8)
#endif
