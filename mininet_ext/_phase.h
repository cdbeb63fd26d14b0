/* One channel of an image dealt out to (or gathered back from) the stride phases of the
 * phased copy of a strided convolution (convgemm.pyx, plan_phases): image pixel (ih, iw)
 * goes to ph[rowoff[ih] + dcol[iw]], for the rows ih < hn and columns iw < wn that some
 * output reads (both prefixes: a pixel's phase column (iw + pw) / sw only grows with iw).
 * deal:    ph[rowoff[ih] + dcol[iw]] = x[ih * w + iw]
 * collect: x[ih * w + iw] = ph[rowoff[ih] + dcol[iw]] (the caller zeroes the rest of x).
 * Scalar loops through two small tables (about 1.5 cycles a pixel): the general case and
 * the collect. Scatter and gather instructions are slower here than scalar moves (AMD
 * Zen 4), hence no auto-vectorising. The float deal at column strides 2 and 4 has a
 * permute path below (mn_phase_deal_f32) whose column bounds and masks are worked out
 * once per phase, not per row (per-row edge handling cost as much as the copy). */
#include <stddef.h>
#include <string.h>
typedef ptrdiff_t mn_pidx;

#define MN_DEF_PHASE(T, SUF)                                                           \
__attribute__((optimize("no-tree-vectorize")))                                          \
static void mn_phase_plane_##SUF(T* ph, T* x, const mn_pidx* rowoff, const mn_pidx* dcol, \
                                 mn_pidx hn, mn_pidx wn, mn_pidx w, int deal)          \
{                                                                                      \
    for (mn_pidx ih = 0; ih < hn; ih++) {                                              \
        T* d = ph + rowoff[ih];                                                        \
        T* s = x + ih * w;                                                             \
        if (deal)                                                                      \
            for (mn_pidx iw = 0; iw < wn; iw++) d[dcol[iw]] = s[iw];                   \
        else                                                                           \
            for (mn_pidx iw = 0; iw < wn; iw++) s[iw] = d[dcol[iw]];                   \
    }                                                                                  \
}

MN_DEF_PHASE(float, f32)
MN_DEF_PHASE(double, f64)

/* A column panel across two images (convgemm forward, panels spanning images): row r of
 * d (nr wide) gets a[toff[r] + i] in columns i < t and b[toff[r] + i - t] in the others.
 * Both copies are whole nr-wide rows (fixed-size moves, no masks): b's row is written at
 * column t and its tail spills into the next row's first t columns, which that row's own
 * copy of a then overwrites; d needs nr items of slack past its n rows. */
#define MN_CROSS_CASE(T, NRC)                                                          \
    case NRC:                                                                          \
        for (mn_pidx r = 0; r < n; r++) {                                              \
            memcpy(d + r * NRC, a + toff[r], NRC * sizeof(T));                         \
            memcpy(d + r * NRC + t, b + toff[r], NRC * sizeof(T));                     \
        }                                                                              \
        return;

#define MN_DEF_CROSS(T, SUF)                                                           \
static void mn_cross_rows_##SUF(T* d, const T* a, const T* b, const mn_pidx* toff,     \
                                mn_pidx n, mn_pidx nr, mn_pidx t)                      \
{                                                                                      \
    switch (nr) {                                                                      \
    MN_CROSS_CASE(T, 8) MN_CROSS_CASE(T, 16) MN_CROSS_CASE(T, 32)                      \
    default:                                                                           \
        for (mn_pidx r = 0; r < n; r++)                                                \
            for (mn_pidx i = 0; i < nr; i++)                                           \
                d[r * nr + i] = i < t ? a[toff[r] + i] : b[toff[r] + i - t];           \
    }                                                                                  \
}

MN_DEF_CROSS(float, f32)
MN_DEF_CROSS(double, f64)

/* The deal for float and column strides 2 and 4 with AVX-512: per image row and column
 * phase b, the phase's columns c_lo..c_hi read image columns c*sw + b - pw, 32/sw of them
 * per two (masked) 16-lane loads picked out by one two-source permute and written by one
 * masked store: about 0.1 cycle per pixel where the scalar table loop takes 1.5 (it was a
 * quarter of the 3-channel 7x7 stride-4 layer's time). rowoff as in mn_phase_plane; area:
 * one phase's rows x columns. Returns 0 (nothing done) where it does not apply. */
#if defined(__AVX512F__)
#include <immintrin.h>
static int mn_phase_deal_f32(float* ph, const float* x, const mn_pidx* rowoff, mn_pidx hn,
                             mn_pidx wn, mn_pidx w, mn_pidx pw, mn_pidx sw, mn_pidx area)
{
    if (sw != 2 && sw != 4) return 0;
    int idx[16] = {0};
    for (int i = 0; i * sw < 32 && i < 16; i++) idx[i] = (int)(i * sw);
    const __m512i pick = _mm512_loadu_si512(idx);
    const mn_pidx per = 32 / sw;
    /* the column bounds and masks hold for every row: rows innermost, no division there */
    for (mn_pidx b = 0; b < sw; b++) {
        mn_pidx lo = (pw - b + sw - 1) / sw, hi = (wn + pw - b + sw - 1) / sw;
        for (mn_pidx c = lo; c < hi; c += per) {
            mn_pidx o = c * sw + b - pw, left = w - o, n = hi - c < per ? hi - c : per;
            __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1u);
            __mmask16 m1 = left >= 32 ? 0xffff
                         : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
            __mmask16 ms = (__mmask16)((1u << n) - 1u);
            float* d = ph + b * area + c;
            const float* s = x + o;
            for (mn_pidx ih = 0; ih < hn; ih++) {
                __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, s + ih * w), pick,
                                                  _mm512_maskz_loadu_ps(m1, s + ih * w + 16));
                _mm512_mask_storeu_ps(d + rowoff[ih], ms, v);
            }
        }
    }
    return 1;
}
#else
static int mn_phase_deal_f32(float* ph, const float* x, const mn_pidx* rowoff, mn_pidx hn,
                             mn_pidx wn, mn_pidx w, mn_pidx pw, mn_pidx sw, mn_pidx area)
{
    (void)ph; (void)x; (void)rowoff; (void)hn; (void)wn; (void)w; (void)pw; (void)sw;
    (void)area;
    return 0;
}
#endif
