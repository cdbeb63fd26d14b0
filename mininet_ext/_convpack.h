/* Window copies for the implicit-GEMM convolution (convgemm.pyx).
 * copy: d[t] = s[t] for lo <= t < hi, 0 for the other t < len.
 * add:  d[t] += s[t] for lo <= t < hi.
 * Only s[lo..hi) is read. With AVX-512 each 16 (f32) / 8 (f64) lanes are one
 * masked load and one masked store: masked-off lanes are neither read nor
 * written, so the zero fill and the bounds come free. */
#include <stddef.h>
#include "_gemm.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
typedef ptrdiff_t mn_cidx;

static inline unsigned mn_lane_mask(mn_cidx lo, mn_cidx hi)
{
    /* bits lo..hi-1 set (0 <= lo, hi <= 16) */
    return hi > lo ? ((1u << hi) - 1u) & ~((1u << lo) - 1u) : 0u;
}

static inline mn_cidx mn_max0(mn_cidx v) { return v > 0 ? v : 0; }

#if defined(__AVX512F__)
#define MN_DEF_WINDOW(T, SUF, L, MASKT, LOADZ, STORE, LOAD, ADD)                     \
static inline void mn_copy_window_##SUF(T* d, const T* s, mn_cidx len, mn_cidx lo,     \
                                        mn_cidx hi)                                    \
{                                                                                      \
    for (mn_cidx t = 0; t < len; t += L) {                                             \
        mn_cidx n = len - t < L ? len - t : L;                                         \
        mn_cidx a = mn_max0(lo - t), b = hi - t < n ? hi - t : n;                      \
        MASKT ld = (MASKT)mn_lane_mask(a, b < a ? a : b);                              \
        STORE(d + t, (MASKT)mn_lane_mask(0, n), LOADZ(ld, s + t));                     \
    }                                                                                  \
}                                                                                      \
static inline void mn_add_window_##SUF(T* d, const T* s, mn_cidx lo, mn_cidx hi)       \
{                                                                                      \
    for (mn_cidx t = lo; t < hi; t += L) {                                             \
        mn_cidx n = hi - t < L ? hi - t : L;                                           \
        MASKT m = (MASKT)mn_lane_mask(0, n);                                           \
        STORE(d + t, m, ADD(LOADZ(m, d + t), LOADZ(m, s + t)));                        \
    }                                                                                  \
}
MN_DEF_WINDOW(float, f32, 16, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
              _mm512_loadu_ps, _mm512_add_ps)
MN_DEF_WINDOW(double, f64, 8, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
              _mm512_loadu_pd, _mm512_add_pd)
#else
#define MN_DEF_WINDOW(T, SUF)                                                          \
static inline void mn_copy_window_##SUF(T* d, const T* s, mn_cidx len, mn_cidx lo,     \
                                        mn_cidx hi)                                    \
{                                                                                      \
    for (mn_cidx t = 0; t < len; t++) d[t] = (t >= lo && t < hi) ? s[t] : (T)0;        \
}                                                                                      \
static inline void mn_add_window_##SUF(T* d, const T* s, mn_cidx lo, mn_cidx hi)       \
{                                                                                      \
    for (mn_cidx t = lo; t < hi; t++) d[t] += s[t];                                    \
}
MN_DEF_WINDOW(float, f32)
MN_DEF_WINDOW(double, f64)
#endif

/* One full panel row (NR items, the micro-kernel's width): copy, or add into d.
 * Written with the kernel's vector type: left to itself gcc uses 256-bit moves here. */
static inline void mn_copy_row_f32(float* d, const float* s)
{
    for (int t = 0; t < MN_NR_F; t += MN_VF) *(mn_vf_u*)(d + t) = *(const mn_vf_u*)(s + t);
}
static inline void mn_copy_row_f64(double* d, const double* s)
{
    for (int t = 0; t < MN_NR_D; t += MN_VD) *(mn_vd_u*)(d + t) = *(const mn_vd_u*)(s + t);
}
static inline void mn_add_row_f32(float* d, const float* s)
{
    for (int t = 0; t < MN_NR_F; t += MN_VF) *(mn_vf_u*)(d + t) += *(const mn_vf_u*)(s + t);
}
static inline void mn_add_row_f64(double* d, const double* s)
{
    for (int t = 0; t < MN_NR_D; t += MN_VD) *(mn_vd_u*)(d + t) += *(const mn_vd_u*)(s + t);
}
