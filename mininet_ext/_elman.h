/* One batch row of an Elman RNN step for rnn.pyx's sequence kernels: h' = tanh(hp + x)
 * (with relu: hp + x where positive, else 0; NaN stays NaN, as ops.relu), hp the row's
 * h W_hh and x the projected input x W_ih + b_ih + b_hh. Backward: dz = (dh + dh2) times
 * the derivative taken from h' (1 - h'^2, or h' > 0), dh the carried gradient and dh2 the
 * output's own. Written so gcc vectorises it (tanh through libmvec, _vecmath.h). */
#ifndef MN_ELMAN_H
#define MN_ELMAN_H
#include "_vecmath.h"
#include <stddef.h>

#define MN_DEF_ELMAN(SUF, T, TANH)                                                        \
static void mn_elman_fwd_rows_##SUF(const T* __restrict hp, const T* __restrict x,        \
                                    T* __restrict h_new, ptrdiff_t n, int relu)           \
{                                                                                         \
    if (relu) {                                                                           \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            T z = x[j] + hp[j];                                                           \
            h_new[j] = z < 0 ? (T)0 : z;                                                  \
        }                                                                                 \
    } else {                                                                              \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t j = 0; j < n; j++) h_new[j] = TANH(x[j] + hp[j]);                  \
    }                                                                                     \
}                                                                                         \
static void mn_elman_bwd_rows_##SUF(const T* __restrict h_new, const T* __restrict dh,    \
                                    const T* __restrict dh2, T* __restrict dz,            \
                                    ptrdiff_t n, int relu)                                \
{                                                                                         \
    if (relu) {                                                                           \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t j = 0; j < n; j++)                                                 \
            dz[j] = h_new[j] > 0 ? dh[j] + dh2[j] : (T)0;                                 \
    } else {                                                                              \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t j = 0; j < n; j++)                                                 \
            dz[j] = (dh[j] + dh2[j]) * ((T)1 - h_new[j] * h_new[j]);                      \
    }                                                                                     \
}

MN_DEF_ELMAN(f32, float, tanhf)
MN_DEF_ELMAN(f64, double, tanh)
#endif
