/* 2x2 / stride-2 max pooling of one output row, written so gcc vectorises it: taps in
 * row-major order, a strictly larger value wins, so the first of equal values stays
 * (as PyTorch). at[] gets the flat plane index. NaN needs the general kernel's rule
 * (a NaN wins, the last one if several, as PyTorch), whose masks gcc does not
 * vectorise here: planes that hold a NaN (mn_has_nan) take the general kernel. */
#ifndef MN_POOL_H
#define MN_POOL_H
#include <stddef.h>
#include <stdint.h>

#define MN_TAKE(v, kv) { k = v > best ? (kv) : k; best = v > best ? v : best; }

#define MN_DEF_MAXPOOL2(NAME, HASNAN, T)                                           \
static void NAME(const T* __restrict r0, const T* __restrict r1, T* __restrict o,  \
                 int64_t* __restrict at, ptrdiff_t n, int64_t base, int64_t W)     \
{                                                                                  \
    for (ptrdiff_t ow = 0; ow < n; ow++) {                                         \
        T best = r0[2 * ow], v;                                                    \
        int64_t k = base + 2 * ow;                                                 \
        v = r0[2 * ow + 1]; MN_TAKE(v, base + 2 * ow + 1)                          \
        v = r1[2 * ow];     MN_TAKE(v, base + W + 2 * ow)                          \
        v = r1[2 * ow + 1]; MN_TAKE(v, base + W + 2 * ow + 1)                      \
        o[ow] = best;                                                              \
        at[ow] = k;                                                                \
    }                                                                              \
}                                                                                  \
static int HASNAN(const T* x, ptrdiff_t n)                                         \
{                                                                                  \
    int any = 0;                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) any |= x[i] != x[i];                         \
    return any;                                                                    \
}

MN_DEF_MAXPOOL2(mn_maxpool2_row_f32, mn_has_nan_f32, float)
MN_DEF_MAXPOOL2(mn_maxpool2_row_f64, mn_has_nan_f64, double)

/* Short rows (under 16 outputs: an 8x8 or 16x16 map) are too short for the vector loop
 * above, whose scalar remainder branches on every compare: on random data half of those
 * mispredict (~7x the time of the vector path per output). This loop over the whole
 * plane selects with masks instead (same rule: a strictly larger value wins). */
#define MN_SHORT_ROW 16
#define MN_TAKE_MASKED(v, kv) {                                                    \
    int64_t m = -(int64_t)(v > best);                                              \
    k ^= (k ^ (kv)) & m;                                                           \
    best = v > best ? v : best; }
#define MN_DEF_MAXPOOL2_SHORT(NAME, T)                                             \
static void NAME(const T* __restrict x, T* __restrict o, int64_t* __restrict at,   \
                 ptrdiff_t OH, ptrdiff_t OW, int64_t W)                            \
{                                                                                  \
    for (ptrdiff_t oh = 0; oh < OH; oh++) {                                        \
        const T* r0 = x + 2 * oh * W;                                              \
        const T* r1 = r0 + W;                                                      \
        int64_t base = 2 * oh * W;                                                 \
        for (ptrdiff_t ow = 0; ow < OW; ow++) {                                    \
            T best = r0[2 * ow], v;                                                \
            int64_t k = base + 2 * ow;                                             \
            v = r0[2 * ow + 1]; MN_TAKE_MASKED(v, base + 2 * ow + 1)               \
            v = r1[2 * ow];     MN_TAKE_MASKED(v, base + W + 2 * ow)               \
            v = r1[2 * ow + 1]; MN_TAKE_MASKED(v, base + W + 2 * ow + 1)           \
            o[oh * OW + ow] = best;                                                \
            at[oh * OW + ow] = k;                                                  \
        }                                                                          \
    }                                                                              \
}

MN_DEF_MAXPOOL2_SHORT(mn_maxpool2_short_f32, float)
MN_DEF_MAXPOOL2_SHORT(mn_maxpool2_short_f64, double)
#endif
