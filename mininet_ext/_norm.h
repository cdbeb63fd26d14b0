/* Batch norm's per-row loops (mininet_ext/norm.pyx), in C so that the sums vectorise:
 * `omp simd reduction` lets the compiler split a sum into vector lanes (reassociate),
 * which plain C forbids without -ffast-math; a scalar double sum runs one add per add
 * latency. Without OpenMP the pragma is ignored and the loops run scalar, same values
 * up to rounding. Sums are taken in double; the shift k (the channel's first value)
 * keeps E[(x-k)^2] - E[x-k]^2 free of cancellation for any sane data. */
#ifndef MN_NORM_H
#define MN_NORM_H
#include <stddef.h>

#define MN_DEF_NORM(T, SFX)                                                              \
/* s += sum(r - k), q += sum((r - k)^2) over r[0:n] */                                  \
static inline void mn_bn_sums_##SFX(const T* r, ptrdiff_t n, double k, double* s,      \
                                     double* q)                                          \
{                                                                                        \
    double a = 0, b = 0;                                                                 \
    _Pragma("omp simd reduction(+:a,b)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        double v = (double)r[i] - k;                                                     \
        a += v;                                                                          \
        b += v * v;                                                                      \
    }                                                                                    \
    *s += a;                                                                             \
    *q += b;                                                                             \
}                                                                                        \
/* sg += sum(g), sgx += sum(g * xhat) over [0:n] */                                     \
static inline void mn_bn_grad_sums_##SFX(const T* g, const T* xh, ptrdiff_t n,         \
                                          double* sg, double* sgx)                       \
{                                                                                        \
    double a = 0, b = 0;                                                                 \
    _Pragma("omp simd reduction(+:a,b)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        a += (double)g[i];                                                               \
        b += (double)g[i] * (double)xh[i];                                               \
    }                                                                                    \
    *sg += a;                                                                            \
    *sgx += b;                                                                           \
}                                                                                        \
/* xhat = (x - m) * iv, y = xhat * w + b over [0:n] */                                  \
static inline void mn_bn_normalise_##SFX(const T* __restrict x, T* __restrict xh,       \
                                          T* __restrict y, ptrdiff_t n, T m, T iv, T w,  \
                                          T b)                                           \
{                                                                                        \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        T t = (x[i] - m) * iv;                                                           \
        xh[i] = t;                                                                       \
        y[i] = t * w + b;                                                                \
    }                                                                                    \
}                                                                                        \
/* dx = a * (n g - sg - xhat * sgx) over [0:n] */                                       \
static inline void mn_bn_dx_##SFX(const T* __restrict g, const T* __restrict xh,        \
                                   T* __restrict dx, ptrdiff_t n, T a, T fn, T sg,       \
                                   T sgx)                                                \
{                                                                                        \
    for (ptrdiff_t i = 0; i < n; i++)                                                    \
        dx[i] = a * (fn * g[i] - sg - xh[i] * sgx);                                      \
}

MN_DEF_NORM(float, f32)
MN_DEF_NORM(double, f64)
#endif
