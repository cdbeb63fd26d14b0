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
}                                                                                        \
/* the ReLU-fused forms: y = max(xhat * w + b, 0), NaN kept (as relu); mask from y     */ \
static inline void mn_bn_normalise_relu_##SFX(const T* __restrict x, T* __restrict xh,  \
                                               T* __restrict y, ptrdiff_t n, T m, T iv,  \
                                               T w, T b)                                 \
{                                                                                        \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        T t = (x[i] - m) * iv;                                                           \
        T v = t * w + b;                                                                 \
        xh[i] = t;                                                                       \
        y[i] = v < 0 ? 0 : v;                                                            \
    }                                                                                    \
}                                                                                        \
static inline void mn_bn_grad_sums_relu_##SFX(const T* g, const T* xh, const T* y,     \
                                               ptrdiff_t n, double* sg, double* sgx)     \
{                                                                                        \
    double a = 0, b = 0;                                                                 \
    _Pragma("omp simd reduction(+:a,b)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        double gi = y[i] > 0 ? (double)g[i] : 0.0;                                       \
        a += gi;                                                                         \
        b += gi * (double)xh[i];                                                         \
    }                                                                                    \
    *sg += a;                                                                            \
    *sgx += b;                                                                           \
}                                                                                        \
static inline void mn_bn_dx_relu_##SFX(const T* __restrict g, const T* __restrict xh,   \
                                        const T* __restrict y, T* __restrict dx,         \
                                        ptrdiff_t n, T a, T fn, T sg, T sgx)             \
{                                                                                        \
    for (ptrdiff_t i = 0; i < n; i++) {                                                  \
        T gi = y[i] > 0 ? g[i] : 0;                                                      \
        dx[i] = a * (fn * gi - sg - xh[i] * sgx);                                        \
    }                                                                                    \
}                                                                                        \
/* Column forms for small maps (inner < a few dozen): one row of C * inner values per   */ \
/* sample, per-column constants in arrays, so every loop runs the whole row in vector   */ \
/* lanes instead of a reduction over a handful of values per channel.                   */ \
/* s[j] += r[j] - k[j], q[j] += (r[j] - k[j])^2 */                                      \
static inline void mn_bn_col_sums_##SFX(const T* __restrict r, const T* __restrict k,   \
                                         double* __restrict s, double* __restrict q,     \
                                         ptrdiff_t n)                                    \
{                                                                                        \
    for (ptrdiff_t j = 0; j < n; j++) {                                                  \
        double v = (double)r[j] - (double)k[j];                                          \
        s[j] += v;                                                                       \
        q[j] += v * v;                                                                   \
    }                                                                                    \
}                                                                                        \
/* xh = (x - m) * iv, y = xh * w + b (relu: max(y, 0)), constants per column */         \
static inline void mn_bn_col_normalise_##SFX(const T* __restrict x, T* __restrict xh,   \
        T* __restrict y, const T* __restrict m, const T* __restrict iv,                  \
        const T* __restrict w, const T* __restrict b, ptrdiff_t n, int relu)             \
{                                                                                        \
    if (relu) {                                                                          \
        for (ptrdiff_t j = 0; j < n; j++) {                                              \
            T t = (x[j] - m[j]) * iv[j];                                                 \
            T v = t * w[j] + b[j];                                                       \
            xh[j] = t;                                                                   \
            y[j] = v < 0 ? 0 : v;                                                        \
        }                                                                                \
        return;                                                                          \
    }                                                                                    \
    for (ptrdiff_t j = 0; j < n; j++) {                                                  \
        T t = (x[j] - m[j]) * iv[j];                                                     \
        xh[j] = t;                                                                       \
        y[j] = t * w[j] + b[j];                                                          \
    }                                                                                    \
}                                                                                        \
/* sg[j] += g', sgx[j] += g' xh, g' = g (masked by y > 0 when y is given) */            \
static inline void mn_bn_col_grad_sums_##SFX(const T* __restrict g,                     \
        const T* __restrict xh, const T* __restrict y, double* __restrict sg,            \
        double* __restrict sgx, ptrdiff_t n)                                             \
{                                                                                        \
    if (y) {                                                                             \
        for (ptrdiff_t j = 0; j < n; j++) {                                              \
            double gj = y[j] > 0 ? (double)g[j] : 0.0;                                   \
            sg[j] += gj;                                                                 \
            sgx[j] += gj * (double)xh[j];                                                \
        }                                                                                \
        return;                                                                          \
    }                                                                                    \
    for (ptrdiff_t j = 0; j < n; j++) {                                                  \
        sg[j] += (double)g[j];                                                           \
        sgx[j] += (double)g[j] * (double)xh[j];                                          \
    }                                                                                    \
}                                                                                        \
/* dx = a * (fn g' - sg - xh sgx), constants per column */                              \
static inline void mn_bn_col_dx_##SFX(const T* __restrict g, const T* __restrict xh,    \
        const T* __restrict y, T* __restrict dx, const T* __restrict a,                  \
        const T* __restrict sg, const T* __restrict sgx, T fn, ptrdiff_t n)              \
{                                                                                        \
    if (y) {                                                                             \
        for (ptrdiff_t j = 0; j < n; j++) {                                              \
            T gj = y[j] > 0 ? g[j] : 0;                                                  \
            dx[j] = a[j] * (fn * gj - sg[j] - xh[j] * sgx[j]);                           \
        }                                                                                \
        return;                                                                          \
    }                                                                                    \
    for (ptrdiff_t j = 0; j < n; j++)                                                    \
        dx[j] = a[j] * (fn * g[j] - sg[j] - xh[j] * sgx[j]);                             \
}

MN_DEF_NORM(float, f32)
MN_DEF_NORM(double, f64)
#endif
