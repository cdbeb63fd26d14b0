/* One batch row of a GRU step (PyTorch's gates r, z, n) for rnn.pyx's sequence kernels,
 * written so gcc vectorises it (exp and tanh through libmvec, _vecmath.h). hp: the row's
 * h W_hh, three blocks of n units hs apart; b: b_hh's three blocks (bs apart) or NULL;
 * x: the projected input x W_ih + b_ih, blocks xs apart. act keeps r, z, n and
 * h W_hn + b_hn (four blocks as apart) for backward. The same steps and order as the
 * composite: r = sigmoid(x_r + (hp_r + b_r)), z likewise, n = tanh(x_n + r (hp_n + b_n)),
 * h' = n + z (h - n). */
#ifndef MN_GRU_H
#define MN_GRU_H
#include "_vecmath.h"
#include <stddef.h>

#define MN_GRU_FWD_LOOP(T, EXP, TANH, HP)                                                 \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T r = (T)1 / ((T)1 + EXP(-(x[j] + HP(0))));                                       \
        T z = (T)1 / ((T)1 + EXP(-(x[xs + j] + HP(1))));                                  \
        T hn = HP(2);                                                                     \
        T g = TANH(x[2 * xs + j] + r * hn);                                               \
        act[j] = r; act[as + j] = z; act[2 * as + j] = g; act[3 * as + j] = hn;          \
        h_new[j] = g + z * (h[j] - g);                                                    \
    }
#define MN_GRU_HP(k) hp[(k) * hs + j]
#define MN_GRU_HPB(k) (hp[(k) * hs + j] + b[(k) * bs + j])

#define MN_DEF_GRU(SUF, T, EXP, TANH)                                                     \
static void mn_gru_fwd_rows_##SUF(const T* __restrict hp, ptrdiff_t hs,                   \
                                  const T* __restrict b, ptrdiff_t bs,                    \
                                  const T* __restrict x, ptrdiff_t xs,                    \
                                  const T* __restrict h, T* __restrict act, ptrdiff_t as,  \
                                  T* __restrict h_new, ptrdiff_t n)                       \
{                                                                                         \
    if (b) { MN_GRU_FWD_LOOP(T, EXP, TANH, MN_GRU_HPB) }                                  \
    else { MN_GRU_FWD_LOOP(T, EXP, TANH, MN_GRU_HP) }                                     \
}                                                                                         \
/* From dh' (dh + dh2: the carried gradient and the output's own) and what forward     \
 * kept: dxp (the gradient of x, three blocks ds apart), dhp (that of h W_hh + b_hh,    \
 * the same layout) and keep = dh' z, the part of h's gradient not through W_hh */      \
static void mn_gru_bwd_rows_##SUF(const T* __restrict act, ptrdiff_t as,                  \
                                  const T* __restrict h, const T* __restrict dh,          \
                                  const T* __restrict dh2, T* __restrict dxp,             \
                                  T* __restrict dhp, ptrdiff_t ds, T* __restrict keep,    \
                                  ptrdiff_t n)                                            \
{                                                                                         \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T r = act[j], z = act[as + j], g = act[2 * as + j], hn = act[3 * as + j];         \
        T d = dh[j] + dh2[j];                                                             \
        T dg = d * ((T)1 - z) * ((T)1 - g * g);                                           \
        T dr = dg * hn * r * ((T)1 - r);                                                  \
        T dz = d * (h[j] - g) * z * ((T)1 - z);                                           \
        dxp[j] = dr; dxp[ds + j] = dz; dxp[2 * ds + j] = dg;                              \
        dhp[j] = dr; dhp[ds + j] = dz; dhp[2 * ds + j] = dg * r;                          \
        keep[j] = d * z;                                                                  \
    }                                                                                     \
}

MN_DEF_GRU(f32, float, expf, tanhf)
MN_DEF_GRU(f64, double, exp, tanh)
#endif
