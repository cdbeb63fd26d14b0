/* One batch row of an LSTM step's gates, written so gcc vectorises it (exp and tanh
 * through libmvec, see _vecmath.h). The row's four gate blocks i f g o hold n units
 * each, zs apart (z's own row: zs = n; a thread's column block of the sequence kernel:
 * zs = its unit count); with x, x's blocks (xs apart) are added to z's. act: the
 * activations kept for backward, sigmoid(i) sigmoid(f) tanh(g) sigmoid(o) and tanh(c'),
 * blocks as apart. NaN in z or c propagates to h' and c'. */
#ifndef MN_LSTM_H
#define MN_LSTM_H
#include "_vecmath.h"
#include <stddef.h>

#define MN_LSTM_FWD_LOOP(T, EXP, TANH, PRE)                                               \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T i = (T)1 / ((T)1 + EXP(-PRE(0)));                                               \
        T f = (T)1 / ((T)1 + EXP(-PRE(1)));                                               \
        T g = TANH(PRE(2));                                                               \
        T o = (T)1 / ((T)1 + EXP(-PRE(3)));                                               \
        T cn = f * c[j] + i * g;                                                          \
        T t = TANH(cn);                                                                   \
        act[j] = i; act[as + j] = f; act[2 * as + j] = g; act[3 * as + j] = o;            \
        act[4 * as + j] = t;                                                              \
        c_new[j] = cn;                                                                    \
        h_new[j] = o * t;                                                                 \
    }

#define MN_LSTM_Z(k) z[(k) * zs + j]
#define MN_LSTM_ZX(k) (z[(k) * zs + j] + x[(k) * xs + j])

#define MN_LSTM_BWD_LOOP(T, DH)                                                           \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T i = act[j], f = act[as + j], g = act[2 * as + j], o = act[3 * as + j];          \
        T t = act[4 * as + j];                                                            \
        T dhj = DH;                                                                       \
        T dct = dc[j] + dhj * o * ((T)1 - t * t);                                         \
        dz[j] = dct * g * i * ((T)1 - i);                                                 \
        dz[zs + j] = dct * c[j] * f * ((T)1 - f);                                         \
        dz[2 * zs + j] = dct * i * ((T)1 - g * g);                                        \
        dz[3 * zs + j] = dhj * t * o * ((T)1 - o);                                        \
        dc_prev[j] = dct * f;                                                             \
    }
#define MN_LSTM_DH dh[j]
#define MN_LSTM_DH2 (dh[j] + dh2[j])

#define MN_DEF_LSTM(SUF, T, EXP, TANH)                                                    \
static void mn_lstm_fwd_rows_##SUF(const T* __restrict z, ptrdiff_t zs,                   \
                                   const T* __restrict x, ptrdiff_t xs,                   \
                                   const T* __restrict c, T* __restrict act, ptrdiff_t as, \
                                   T* __restrict c_new, T* __restrict h_new, ptrdiff_t n) \
{                                                                                         \
    if (x) { MN_LSTM_FWD_LOOP(T, EXP, TANH, MN_LSTM_ZX) }                                 \
    else { MN_LSTM_FWD_LOOP(T, EXP, TANH, MN_LSTM_Z) }                                    \
}                                                                                         \
static void mn_lstm_fwd_##SUF(const T* z, const T* c, T* act, T* c_new, T* h_new,         \
                              ptrdiff_t n)                                                \
{                                                                                         \
    mn_lstm_fwd_rows_##SUF(z, n, NULL, 0, c, act, n, c_new, h_new, n);                    \
}                                                                                         \
/* dz (4 blocks zs apart) and dc_prev (n) of one row from dh' (+ dh2 when given: the    \
 * output's own gradient), dc' and what forward kept (act blocks as apart) */            \
static void mn_lstm_bwd_rows_##SUF(const T* __restrict act, ptrdiff_t as,                 \
                                   const T* __restrict c, const T* __restrict dh,         \
                                   const T* __restrict dh2, const T* __restrict dc,       \
                                   T* __restrict dz, ptrdiff_t zs, T* __restrict dc_prev,  \
                                   ptrdiff_t n)                                           \
{                                                                                         \
    if (dh2) { MN_LSTM_BWD_LOOP(T, MN_LSTM_DH2) }                                         \
    else { MN_LSTM_BWD_LOOP(T, MN_LSTM_DH) }                                              \
}                                                                                         \
static void mn_lstm_bwd_##SUF(const T* act, const T* c, const T* dh, const T* dc, T* dz,  \
                              T* dc_prev, ptrdiff_t n)                                    \
{                                                                                         \
    mn_lstm_bwd_rows_##SUF(act, n, c, dh, NULL, dc, dz, n, dc_prev, n);                   \
}

MN_DEF_LSTM(f32, float, expf, tanhf)
MN_DEF_LSTM(f64, double, exp, tanh)
#endif
