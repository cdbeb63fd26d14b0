/* One image row dealt out to (or gathered back from) the column phases of the phased
 * copy of a strided convolution (convgemm.pyx, plan_phases): padded column b = iw + pw
 * goes to phase b % sw at column b / sw, for the phase columns col < wp.
 * deal:    ph[(b % sw) * area + b / sw] = row[iw]
 * collect: row[iw] = ph[(b % sw) * area + b / sw], 0 where that column is not kept.
 * The columns every phase keeps run as one loop per fixed stride (2, 3, 4), which gcc
 * turns into vector loads and permutes: a strided scalar loop cost as much as the GEMM
 * for a 3-channel 7x7 stride-4 layer. */
#include <stddef.h>
typedef ptrdiff_t mn_pidx;

#define MN_PHASE_BODY(SW, BODY)                                                        \
    for (mn_pidx p = 0; p < SW; p++)                                                   \
        for (mn_pidx col = c0; col < c1; col++) { BODY; }

#define MN_DEF_PHASE(T, SUF)                                                           \
static void mn_phase_row_##SUF(T* ph, T* row, mn_pidx w, mn_pidx pw, mn_pidx sw,       \
                               mn_pidx wp, mn_pidx area, int deal)                     \
{                                                                                      \
    /* columns col where every phase p reads iw = col*sw + p - pw inside [0, w) */     \
    mn_pidx c0 = (pw + sw - 1) / sw, c1 = (w + pw) / sw;                               \
    if (c1 > wp) c1 = wp;                                                              \
    if (c0 > c1) c0 = c1;                                                              \
    if (!deal)                                                                         \
        for (mn_pidx iw = 0; iw < w; iw++) row[iw] = 0;                                \
    for (mn_pidx col = 0; col < wp; col++) {   /* the edge columns, scalar */          \
        if (col == c0) col = c1;                                                       \
        if (col >= wp) break;                                                          \
        for (mn_pidx p = 0; p < sw; p++) {                                             \
            mn_pidx iw = col * sw + p - pw;                                            \
            if (iw < 0 || iw >= w) continue;                                           \
            if (deal) ph[p * area + col] = row[iw];                                    \
            else row[iw] = ph[p * area + col];                                         \
        }                                                                              \
    }                                                                                  \
    T* r = row - pw;                                                                   \
    if (deal) {                                                                        \
        switch (sw) {                                                                  \
        case 2: MN_PHASE_BODY(2, ph[p * area + col] = r[col * 2 + p]) break;           \
        case 3: MN_PHASE_BODY(3, ph[p * area + col] = r[col * 3 + p]) break;           \
        case 4: MN_PHASE_BODY(4, ph[p * area + col] = r[col * 4 + p]) break;           \
        default: MN_PHASE_BODY(sw, ph[p * area + col] = r[col * sw + p])               \
        }                                                                              \
    } else {                                                                           \
        switch (sw) {                                                                  \
        case 2: MN_PHASE_BODY(2, r[col * 2 + p] = ph[p * area + col]) break;           \
        case 3: MN_PHASE_BODY(3, r[col * 3 + p] = ph[p * area + col]) break;           \
        case 4: MN_PHASE_BODY(4, r[col * 4 + p] = ph[p * area + col]) break;           \
        default: MN_PHASE_BODY(sw, r[col * sw + p] = ph[p * area + col])               \
        }                                                                              \
    }                                                                                  \
}

MN_DEF_PHASE(float, f32)
MN_DEF_PHASE(double, f64)
