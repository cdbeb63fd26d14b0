/* wino_gout_ of _winograd_t.h with its vectors across the filters WGOUT_VB bytes wide,
 * named WGOUT_NAME: included twice per element type (16 and 32 bytes). The transform of
 * a panel of 8 float filters in one 32-byte vector instead of two 16-byte ones halves
 * its arithmetic and stores (wino_gout was 40% of the 64,32,16,16 layer's Winograd
 * weight gradient on a Xeon). */
static inline __attribute__((always_inline)) void
WN(WGOUT_NAME)(const WT* dy, const wino_geom* g, mn_idx n, mn_idx k0, mn_idx y0, mn_idx x0,
               WT* restrict m, mn_idx ms, const int mr)
{
    typedef WT V4 __attribute__((vector_size(WGOUT_VB), aligned(sizeof(WT))));
    const int L = (int)(WGOUT_VB / sizeof(WT));   /* lanes; the last vector may be part-used */
    mn_idx OH = g->OH, OW = g->OW, K = g->K;
    int rows = OH - y0 < 4 ? (int)(OH - y0) : 4, cols = OW - x0 < 4 ? (int)(OW - x0) : 4;
    WT o[16][16] __attribute__((aligned(64)));
#if defined(__AVX512F__)
    if (sizeof(WT) == 4 && mr == 8 && rows == 4 && cols == 4 && k0 + 8 <= K) {
        wino_gout_gather8((const float*)dy + ((n * K + k0) * OH + y0) * OW + x0, OH * OW, OW,
                          (float*)o);
        goto transform;
    }
#endif
    for (int i = 0; i < mr; i++) {
        mn_idx k = k0 + i;
        const WT* src = dy + ((n * K + k) * OH + y0) * OW + x0;
        if (k < K && rows == 4 && cols == 4) {   /* a whole tile */
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) o[a * 4 + b][i] = src[a * OW + b];
            continue;
        }
        for (int a = 0; a < 16; a++) o[a][i] = 0;
        if (k >= K) continue;
        for (int a = 0; a < rows; a++)
            for (int b = 0; b < cols; b++) o[a * 4 + b][i] = src[a * OW + b];
    }
#if defined(__AVX512F__)
transform:
#endif
    for (int i = 0; i < mr; i += L) {
        V4 t[24];
        for (int b = 0; b < 4; b++) {   /* t = A o (6x4), column b */
            V4 y0_ = *(V4*)&o[b][i], y1 = *(V4*)&o[4 + b][i], y2 = *(V4*)&o[8 + b][i],
               y3 = *(V4*)&o[12 + b][i];
            V4 p = y0_ + y2, q = y1 + y3, r = y1 + 4 * y3;   /* (A y) rows */
            t[0 * 4 + b] = y0_;
            t[1 * 4 + b] = p + q;
            t[2 * 4 + b] = p - q;
            t[3 * 4 + b] = y0_ + 4 * y2 + 2 * r;
            t[4 * 4 + b] = y0_ + 4 * y2 - 2 * r;
            t[5 * 4 + b] = y3;
        }
        for (int a = 0; a < 6; a++) {   /* m = t A^T (6x6), row a */
            V4 z0 = t[a * 4], z1 = t[a * 4 + 1], z2 = t[a * 4 + 2], z3 = t[a * 4 + 3];
            V4 p = z0 + z2, q = z1 + z3, r = z1 + 4 * z3;
#define WST(q_, v_) do { V4 v__ = (v_); WT* p__ = m + (a * 6 + (q_)) * ms + i;       \
            if (i + L <= mr) *(V4*)p__ = v__;                                            \
            else for (int l = 0; l < mr - i; l++) p__[l] = v__[l]; } while (0)
            WST(0, z0);
            WST(1, p + q);
            WST(2, p - q);
            WST(3, z0 + 4 * z2 + 2 * r);
            WST(4, z0 + 4 * z2 - 2 * r);
            WST(5, z3);
#undef WST
        }
    }
}

