/* One row of the fused softmax cross-entropy, written so gcc vectorises it: the max
 * as a simd max-reduction, then exp through glibc's vector math (libmvec: `omp simd`
 * lets gcc call the 16-wide expf) with the sum reduced in double. A NaN in the row
 * (which the max may skip) makes its exp, so the sum, the loss and every probability
 * NaN, as PyTorch. The loss is log(s) - (z[y] - m), never log(s) + m - z[y]: with
 * |z| ~ 1e17 (1e9 in double already loses digits) m - z[y] cancels log(s) away. */
#ifndef MN_XENT_H
#define MN_XENT_H
#include "_vecmath.h"
#include <stddef.h>
#include <stdint.h>

#define MN_DEF_XENT_ROW(NAME, T, EXP)                                              \
static double NAME(const T* __restrict z, int64_t y, T* __restrict p, ptrdiff_t C) \
{                                                                                  \
    T m = z[0];                                                                    \
    _Pragma("omp simd reduction(max:m)")                                           \
    for (ptrdiff_t j = 0; j < C; j++)                                              \
        m = z[j] > m ? z[j] : m;                                                   \
    double s = 0;                                                                  \
    _Pragma("omp simd reduction(+:s)")                                             \
    for (ptrdiff_t j = 0; j < C; j++) {                                            \
        T e = EXP(z[j] - m);                                                       \
        p[j] = e;                                                                  \
        s += e;                                                                    \
    }                                                                              \
    T inv = (T)(1.0 / s);                                                          \
    for (ptrdiff_t j = 0; j < C; j++) p[j] *= inv;                                 \
    return log(s) - ((double)z[y] - (double)m);                                    \
}

MN_DEF_XENT_ROW(mn_xent_row_f32, float, expf)
MN_DEF_XENT_ROW(mn_xent_row_f64, double, exp)
#endif
