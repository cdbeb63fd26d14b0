/* One row's loops for mininet_ext/rows.pyx (and the softmax for losses.pyx's _xent.h):
 * layer norm and softmax over the last dim of a compact (R, D) array. In C so that the
 * sums vectorise (`omp simd reduction` lets gcc split them into lanes) and exp goes
 * through libmvec (_vecmath.h). Sums are taken in double; the layer norm's variance is
 * the mean of squares about the mean (two passes over a row that sits in L1), so no
 * cancellation. w or b NULL: no weight / no bias. */
#ifndef MN_ROWS_H
#define MN_ROWS_H
#include "_vecmath.h"
#include <math.h>
#include <stddef.h>

#define MN_DEF_ROWS(T, SFX, EXP)                                                         \
/* mean and 1 / sqrt(var + eps) of r[0:n] (biased variance) */                          \
static inline void mn_ln_stats_##SFX(const T* r, ptrdiff_t n, double eps, T* mean,     \
                                      T* rstd)                                           \
{                                                                                        \
    double s = 0, q = 0, m;                                                              \
    _Pragma("omp simd reduction(+:s)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) s += r[i];                                         \
    m = s / (double)n;                                                                   \
    _Pragma("omp simd reduction(+:q)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        double v = (double)r[i] - m;                                                     \
        q += v * v;                                                                      \
    }                                                                                    \
    *mean = (T)m;                                                                        \
    *rstd = (T)(1.0 / sqrt(q / (double)n + eps));                                        \
}                                                                                        \
/* y = (x - m) * rs * w + b */                                                          \
static inline void mn_ln_row_##SFX(const T* __restrict x, const T* __restrict w,        \
                                    const T* __restrict b, T* __restrict y, ptrdiff_t n, \
                                    T m, T rs)                                           \
{                                                                                        \
    if (w && b) {                                                                        \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - m) * rs * w[i] + b[i];          \
    } else if (w) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - m) * rs * w[i];                 \
    } else if (b) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - m) * rs + b[i];                 \
    } else {                                                                             \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - m) * rs;                        \
    }                                                                                    \
}                                                                                        \
/* dx = rs * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w, xhat = (x - m) * rs; \
 * and, where dw / db are given, dw += g * xhat, db += g (in double) */                 \
static inline void mn_ln_back_row_##SFX(const T* __restrict g, const T* __restrict x,   \
                                         const T* __restrict w, T* __restrict dx,        \
                                         double* __restrict dw, double* __restrict db,   \
                                         ptrdiff_t n, T m, T rs)                         \
{                                                                                        \
    double a = 0, c = 0;                                                                 \
    if (w) {                                                                             \
        _Pragma("omp simd reduction(+:a,c)")                                             \
        for (ptrdiff_t i = 0; i < n; i++) {                                              \
            double gw = (double)g[i] * (double)w[i];                                     \
            a += gw;                                                                     \
            c += gw * (double)((x[i] - m) * rs);                                         \
        }                                                                                \
    } else {                                                                             \
        _Pragma("omp simd reduction(+:a,c)")                                             \
        for (ptrdiff_t i = 0; i < n; i++) {                                              \
            a += (double)g[i];                                                           \
            c += (double)g[i] * (double)((x[i] - m) * rs);                               \
        }                                                                                \
    }                                                                                    \
    T ma = (T)(a / (double)n), mc = (T)(c / (double)n);                                  \
    if (w) {                                                                             \
        for (ptrdiff_t i = 0; i < n; i++)                                                \
            dx[i] = rs * (g[i] * w[i] - ma - (x[i] - m) * rs * mc);                      \
    } else {                                                                             \
        for (ptrdiff_t i = 0; i < n; i++)                                                \
            dx[i] = rs * (g[i] - ma - (x[i] - m) * rs * mc);                             \
    }                                                                                    \
    if (dw)                                                                              \
        for (ptrdiff_t i = 0; i < n; i++) dw[i] += (double)g[i] * (double)((x[i] - m) * rs); \
    if (db)                                                                              \
        for (ptrdiff_t i = 0; i < n; i++) db[i] += (double)g[i];                         \
}                                                                                        \
/* y = exp(x - max x) / sum; returns the sum, the max in *max unless NULL (the          \
 * cross-entropy's log-sum-exp, _xent.h). A NaN in the row (which the max may skip)    \
 * makes its exp, so the sum and every output, NaN, as the ops' version */             \
MN_WIDE static inline double mn_softmax_row_##SFX(const T* __restrict x, T* __restrict y, \
                                           ptrdiff_t n, T* max)                          \
{                                                                                        \
    T m = n ? x[0] : (T)0;                                                               \
    double s = 0;                                                                        \
    _Pragma("omp simd reduction(max:m)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;                           \
    _Pragma("omp simd reduction(+:s)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        T e = EXP(x[i] - m);                                                             \
        y[i] = e;                                                                        \
        s += e;                                                                          \
    }                                                                                    \
    T inv = (T)(1.0 / s);                                                                \
    for (ptrdiff_t i = 0; i < n; i++) y[i] *= inv;                                       \
    if (max) *max = m;                                                                   \
    return s;                                                                            \
}                                                                                        \
/* dx = y * (g - sum(g * y)) */                                                          \
static inline void mn_softmax_back_row_##SFX(const T* __restrict y, const T* __restrict g, \
                                              T* __restrict dx, ptrdiff_t n)             \
{                                                                                        \
    double s = 0;                                                                        \
    _Pragma("omp simd reduction(+:s)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) s += (double)g[i] * (double)y[i];                  \
    T t = (T)s;                                                                          \
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = y[i] * (g[i] - t);                         \
}                                                                                        \
/* y = x - (max + log(sum(exp(x - max)))): no log of a rounded-down 0 */                \
MN_WIDE static inline void mn_log_softmax_row_##SFX(const T* __restrict x, T* __restrict y, \
                                                 ptrdiff_t n)                            \
{                                                                                        \
    T m = n ? x[0] : (T)0;                                                               \
    double s = 0;                                                                        \
    _Pragma("omp simd reduction(max:m)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;                           \
    _Pragma("omp simd reduction(+:s)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) s += EXP(x[i] - m);                                \
    T lse = (T)((double)m + log(s));                                                     \
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] - lse;                                 \
}                                                                                        \
/* dx = g - exp(y) * sum(g) */                                                           \
MN_WIDE static inline void mn_log_softmax_back_row_##SFX(const T* __restrict y,          \
                                                      const T* __restrict g,             \
                                                      T* __restrict dx, ptrdiff_t n)     \
{                                                                                        \
    double s = 0;                                                                        \
    _Pragma("omp simd reduction(+:s)")                                                   \
    for (ptrdiff_t i = 0; i < n; i++) s += g[i];                                         \
    T t = (T)s;                                                                          \
    _Pragma("omp simd")                                                                  \
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = g[i] - EXP(y[i]) * t;                      \
}

MN_DEF_ROWS(float, f32, expf)
MN_DEF_ROWS(double, f64, exp)
#endif
