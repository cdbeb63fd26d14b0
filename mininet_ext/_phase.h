/* One channel of an image dealt out to (or gathered back from) the stride phases of the
 * phased copy of a strided convolution (convgemm.pyx, plan_phases): image pixel (ih, iw)
 * goes to ph[rowoff[ih] + dcol[iw]], for the rows ih < hn and columns iw < wn that some
 * output reads (both prefixes: a pixel's phase column (iw + pw) / sw only grows with iw).
 * deal:    ph[rowoff[ih] + dcol[iw]] = x[ih * w + iw]
 * collect: x[ih * w + iw] = ph[rowoff[ih] + dcol[iw]] (the caller zeroes the rest of x).
 * Scalar loops through two small tables: the rows of the small maps this path runs
 * (ResNet9's 32 and 8 pixels wide) are too short for vector permutes, whose per-row
 * edge handling cost as much as the GEMM for a 3-channel 7x7 stride-4 layer. Scatter
 * and gather instructions are slower here than scalar moves (AMD Zen 4), hence no
 * vectorising. */
#include <stddef.h>
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
