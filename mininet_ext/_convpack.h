/* Window copies for the implicit-GEMM convolution (convgemm.pyx).
 * copy: d[t] = s[t] for lo <= t < hi, 0 for the other t < len.
 * add:  d[t] += s[t] for lo <= t < hi.
 * Only s[lo..hi) is read. With AVX-512 each 16 (f32) / 8 (f64) lanes are one
 * masked load and one masked store: masked-off lanes are neither read nor
 * written, so the zero fill and the bounds come free. */
#include <stddef.h>
#include <string.h>
#include "_gemm.h"
#include "_isa.h"   /* mn_run */
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

/* The padded gather of a column panel and its adjoint, whole loops (one call through the
 * kernel table per panel, not per tap):
 * copy_rows: d[r][:] = s[toff[r] ...] for the n taps r (rows NR apart);
 * add_rows:  d[toff[r] ...] += tile[r][:] over the taps r = (c, i, j) of cg channels and a
 * kh x kw kernel, channel innermost: windows of taps (i, j) and (i, j+1) overlap in one
 * plane, and a load right after an overlapping, misaligned store stalls (no store
 * forwarding); windows of different channels never overlap. */
#define MN_DEF_ROWS(T, SUF, NR)                                                        \
static void mn_copy_rows_##SUF(T* d, const T* s, const mn_cidx* toff, mn_cidx n)       \
{                                                                                      \
    for (mn_cidx r = 0; r < n; r++) mn_copy_row_##SUF(d + r * NR, s + toff[r]);        \
}                                                                                      \
static void mn_add_rows_##SUF(T* d, const T* tile, const mn_cidx* toff, mn_cidx cg,    \
                              mn_cidx kh, mn_cidx kw)                                  \
{                                                                                      \
    for (mn_cidx j = 0; j < kw; j++)                                                   \
        for (mn_cidx i = 0; i < kh; i++)                                               \
            for (mn_cidx c = 0; c < cg; c++) {                                         \
                mn_cidx r = (c * kh + i) * kw + j;                                     \
                mn_add_row_##SUF(d + toff[r], tile + r * NR);                          \
            }                                                                          \
}                                                                                      \
/* d[q][k] = s[k * P + q] for k < kn, 0 for kn <= k < kb (q < P): a block of the     \
 * output grad, pixel-major, padded to kb channels (mn_gather_t_*) */                 \
static void mn_gather_t_scalar_##SUF(T* d, const T* s, mn_cidx P, mn_cidx kn, mn_cidx kb) \
{                                                                                      \
    for (mn_cidx q = 0; q < P; q++) {                                                  \
        for (mn_cidx k = 0; k < kn; k++) d[q * kb + k] = s[k * P + q];                 \
        for (mn_cidx k = kn; k < kb; k++) d[q * kb + k] = 0;                           \
    }                                                                                  \
}
MN_DEF_ROWS(float, f32, MN_NR_F)
MN_DEF_ROWS(double, f64, MN_NR_D)

/* The gather above by L x L blocks transposed in registers (_tr16.h) where kb is a
 * multiple of L: 10% of the MNIST CNN's weight gradient as scalar loads and stores. */
#if defined(__AVX512F__)
#define MN_DEF_GATHER_T(T, SUF, L, VT, MASKT, LOADZ, TR)                               \
static void mn_gather_t_##SUF(T* d, const T* s, mn_cidx P, mn_cidx kn, mn_cidx kb)     \
{                                                                                      \
    if (kb % L) { mn_gather_t_scalar_##SUF(d, s, P, kn, kb); return; }                 \
    for (mn_cidx q0 = 0; q0 < P; q0 += L) {                                            \
        mn_cidx nq = P - q0 < L ? P - q0 : L;                                          \
        MASKT m = (MASKT)mn_lane_mask(0, nq);                                          \
        for (mn_cidx k0 = 0; k0 < kb; k0 += L) {                                       \
            VT r[L];                                                                   \
            for (int k = 0; k < L; k++)                                                \
                r[k] = k0 + k < kn ? (VT)LOADZ(m, s + (k0 + k) * P + q0) : (VT){0};    \
            TR(r);                                                                     \
            for (mn_cidx q = 0; q < nq; q++) memcpy(d + (q0 + q) * kb + k0, &r[q], sizeof(VT)); \
        }                                                                              \
    }                                                                                  \
}
MN_DEF_GATHER_T(float, f32, 16, mn_tr16f, __mmask16, _mm512_maskz_loadu_ps, mn_tr16_f32)
MN_DEF_GATHER_T(double, f64, 8, mn_tr8d, __mmask8, _mm512_maskz_loadu_pd, mn_tr8_f64)
#else
static void mn_gather_t_f32(float* d, const float* s, mn_cidx P, mn_cidx kn, mn_cidx kb)
{
    mn_gather_t_scalar_f32(d, s, P, kn, kb);
}
static void mn_gather_t_f64(double* d, const double* s, mn_cidx P, mn_cidx kn, mn_cidx kb)
{
    mn_gather_t_scalar_f64(d, s, P, kn, kb);
}
#endif

/* d[k][jj] = dy[k * P + pixel of column jj] for k < kg (one image's output grad), zero in
 * the NR-wide rows' columns that are not output pixels: segs are the runs that are. */
#define MN_DEF_PACK_ROWS(T, SUF, NR)                                                   \
static void mn_pack_rows_##SUF(T* d, const T* dy, mn_cidx P, mn_cidx kg,               \
                               const mn_run* segs, int nsegs)                          \
{                                                                                      \
    memset(d, 0, (size_t)kg * NR * sizeof(T));                                         \
    for (mn_cidx k = 0; k < kg; k++)                                                   \
        for (int u = 0; u < nsegs; u++)                                                \
            mn_copy_window_##SUF(d + k * NR + segs[u].jj, dy + k * P + segs[u].off,    \
                                 segs[u].len, 0, segs[u].len);                         \
}
MN_DEF_PACK_ROWS(float, f32, MN_NR_F)
MN_DEF_PACK_ROWS(double, f64, MN_NR_D)


/* Pixel-major convolution tiles into NCHW: dst[k * P + i] = tile[i * kb + k] + bias[k]
 * for i < cnt pixels, k < kn channels (kb a multiple of 16). A scalar transpose cost as
 * much as the tile's FMAs; here 16 x 16 blocks are transposed in vector registers
 * (_tr16.h: 64 shuffles for 256 elements). Sixteen channels at a time over all the
 * pixels: 16 output planes written side by side, not 32 (kb), took the RGB 3x3 layer
 * (64x3x32x32 -> 32) from 1.99 to 1.56 ms on one thread (Xeon, a 4 KB plane: every
 * store of a pixel block lands in the same L1 set). Staging a span per channel in L1
 * and copying it out, one plane at a time, was slower (2.4 ms), as were streaming
 * stores. */
static void mn_tile_to_nchw_f32(const float* tile, mn_cidx kb, mn_cidx cnt, mn_cidx kn,
                                const float* bias, float* dst, mn_cidx P)
{
    for (mn_cidx k0 = 0; k0 < kn; k0 += 16) {
        mn_cidx nk = kn - k0 < 16 ? kn - k0 : 16;
        for (mn_cidx i0 = 0; i0 < cnt; i0 += 16) {
            mn_cidx ni = cnt - i0 < 16 ? cnt - i0 : 16;
            mn_tr16f r[16];
            for (int i = 0; i < 16; i++) {
                if (i < ni) memcpy(&r[i], tile + (i0 + i) * kb + k0, sizeof(mn_tr16f));
                else r[i] = (mn_tr16f){0};
            }
            mn_tr16_f32(r);
            for (mn_cidx k = 0; k < nk; k++) {
                mn_tr16f v = r[k] + (bias ? bias[k0 + k] : 0.0f);
                float* d = dst + (k0 + k) * P + i0;
                if (ni == 16) {
                    memcpy(d, &v, sizeof(mn_tr16f));
                } else {
#if defined(__AVX512F__)
                    _mm512_mask_storeu_ps(d, (__mmask16)((1u << ni) - 1u), (__m512)v);
#else
                    for (mn_cidx i = 0; i < ni; i++) d[i] = v[i];
#endif
                }
            }
        }
    }
}
