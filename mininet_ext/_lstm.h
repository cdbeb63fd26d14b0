/* One batch row of an LSTM step's gates, written so gcc vectorises it (exp and tanh
 * through libmvec, see _vecmath.h). z: the row's gate pre-activations, i f g o blocks
 * of n; act: the activations kept for backward, sigmoid(i) sigmoid(f) tanh(g) sigmoid(o)
 * and tanh(c'), blocks of n. NaN in z or c propagates to h' and c'. */
#ifndef MN_LSTM_H
#define MN_LSTM_H
#include "_vecmath.h"
#include <stddef.h>

#define MN_DEF_LSTM(SUF, T, EXP, TANH)                                                    \
static void mn_lstm_fwd_##SUF(const T* __restrict z, const T* __restrict c,               \
                              T* __restrict act, T* __restrict c_new, T* __restrict h_new, \
                              ptrdiff_t n)                                                 \
{                                                                                         \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T i = (T)1 / ((T)1 + EXP(-z[j]));                                                 \
        T f = (T)1 / ((T)1 + EXP(-z[n + j]));                                             \
        T g = TANH(z[2 * n + j]);                                                         \
        T o = (T)1 / ((T)1 + EXP(-z[3 * n + j]));                                         \
        T cn = f * c[j] + i * g;                                                          \
        T t = TANH(cn);                                                                   \
        act[j] = i; act[n + j] = f; act[2 * n + j] = g; act[3 * n + j] = o;               \
        act[4 * n + j] = t;                                                               \
        c_new[j] = cn;                                                                    \
        h_new[j] = o * t;                                                                 \
    }                                                                                     \
}                                                                                         \
/* dz (4n) and dc_prev (n) of one row from dh', dc' and what forward kept */            \
static void mn_lstm_bwd_##SUF(const T* __restrict act, const T* __restrict c,             \
                              const T* __restrict dh, const T* __restrict dc,             \
                              T* __restrict dz, T* __restrict dc_prev, ptrdiff_t n)       \
{                                                                                         \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T i = act[j], f = act[n + j], g = act[2 * n + j], o = act[3 * n + j];             \
        T t = act[4 * n + j];                                                             \
        T dct = dc[j] + dh[j] * o * ((T)1 - t * t);                                       \
        dz[j] = dct * g * i * ((T)1 - i);                                                 \
        dz[n + j] = dct * c[j] * f * ((T)1 - f);                                          \
        dz[2 * n + j] = dct * i * ((T)1 - g * g);                                         \
        dz[3 * n + j] = dh[j] * t * o * ((T)1 - o);                                       \
        dc_prev[j] = dct * f;                                                             \
    }                                                                                     \
}

MN_DEF_LSTM(f32, float, expf, tanhf)
MN_DEF_LSTM(f64, double, exp, tanh)
#endif
