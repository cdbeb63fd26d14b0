/* Adam's float32 update with AVX-512 (optim.pyx's adam_range; other builds and float64
 * keep its plain loop). The plain loop, vectorised by gcc, divides by sqrt(v) vscale + eps
 * and takes that square root: both run on the one divider unit (vdivps and vsqrtps zmm,
 * about 10 cycles each a vector), which then bounds the loop. Here the division is a
 * reciprocal estimate (vrcp14ps, 14 bits) refined by one Newton step, within about an
 * ulp of the quotient; only the square root stays on the divider. The last partial
 * vector is masked, so every element takes the same arithmetic. */
#ifndef MN_ADAM_H
#define MN_ADAM_H
#include <stddef.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define MN_ADAM_VEC 1

/* One vector of 16 elements (k: the lanes to load and store; all for a whole vector). */
static inline void mn_adam_vec16(float* p, const float* g, float* m, float* v, __mmask16 k,
                                 __m512 vb1, __m512 vb2, __m512 vc1, __m512 vc2, __m512 vl2,
                                 __m512 vdecay, __m512 vstep, __m512 vvs, __m512 veps)
{
    const __m512 one = _mm512_set1_ps(1.0f), inf = _mm512_set1_ps(__builtin_inff());
    __m512 pv, gv, mv, vv;
    if (k == (__mmask16)0xFFFF) {   /* plain loads and stores for the whole vectors */
        pv = _mm512_loadu_ps(p); gv = _mm512_loadu_ps(g);
        mv = _mm512_loadu_ps(m); vv = _mm512_loadu_ps(v);
    } else {
        pv = _mm512_maskz_loadu_ps(k, p); gv = _mm512_maskz_loadu_ps(k, g);
        mv = _mm512_maskz_loadu_ps(k, m); vv = _mm512_maskz_loadu_ps(k, v);
    }
    __m512 d = _mm512_fmadd_ps(vl2, pv, gv);                            /* g + l2 p */
    mv = _mm512_fmadd_ps(vb1, mv, _mm512_mul_ps(vc1, d));               /* b1 m + c1 d */
    vv = _mm512_fmadd_ps(vb2, vv, _mm512_mul_ps(_mm512_mul_ps(vc2, d), d));
    __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vv), vvs, veps);
    __m512 r = _mm512_rcp14_ps(den);
    r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(den, r, one), r);          /* one Newton step */
    /* 1/inf: the step's inf * 0 made a NaN where the quotient m / inf is 0 */
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(den, inf, _CMP_EQ_OQ), _mm512_setzero_ps());
    pv = _mm512_fnmadd_ps(_mm512_mul_ps(vstep, mv), r, _mm512_mul_ps(pv, vdecay));
    if (k == (__mmask16)0xFFFF) {
        _mm512_storeu_ps(p, pv); _mm512_storeu_ps(m, mv); _mm512_storeu_ps(v, vv);
    } else {
        _mm512_mask_storeu_ps(p, k, pv); _mm512_mask_storeu_ps(m, k, mv);
        _mm512_mask_storeu_ps(v, k, vv);
    }
}

static void mn_adam_f32(float* p, const float* g, float* m, float* v, ptrdiff_t i0,
                        ptrdiff_t i1, float step, float vscale, float b1, float b2, float eps,
                        float c1, float c2, float decay, float l2)
{
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
    const __m512 vc1 = _mm512_set1_ps(c1), vc2 = _mm512_set1_ps(c2);
    const __m512 vl2 = _mm512_set1_ps(l2), vdecay = _mm512_set1_ps(decay);
    const __m512 vstep = _mm512_set1_ps(step), vvs = _mm512_set1_ps(vscale);
    const __m512 veps = _mm512_set1_ps(eps);
    ptrdiff_t i = i0;
    for (; i + 16 <= i1; i += 16)
        mn_adam_vec16(p + i, g + i, m + i, v + i, (__mmask16)0xFFFF, vb1, vb2, vc1, vc2, vl2,
                      vdecay, vstep, vvs, veps);
    if (i < i1)
        mn_adam_vec16(p + i, g + i, m + i, v + i, (__mmask16)((1u << (i1 - i)) - 1), vb1, vb2,
                      vc1, vc2, vl2, vdecay, vstep, vvs, veps);
}
#else
#define MN_ADAM_VEC 0
static void mn_adam_f32(float* p, const float* g, float* m, float* v, ptrdiff_t i0,
                        ptrdiff_t i1, float step, float vscale, float b1, float b2, float eps,
                        float c1, float c2, float decay, float l2)
{   /* not called: optim.pyx runs its own loop where MN_ADAM_VEC is 0 */
    (void)p; (void)g; (void)m; (void)v; (void)i0; (void)i1; (void)step; (void)vscale;
    (void)b1; (void)b2; (void)eps; (void)c1; (void)c2; (void)decay; (void)l2;
}
#endif
#endif
