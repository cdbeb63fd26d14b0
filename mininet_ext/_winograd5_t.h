/* Winograd F(2x2, 5x5) transforms for one element type, included by _winograd_t.h (WT,
 * WS, WN, WL and the vector type defined there).
 *
 * The same six points as F(4x4, 3x3): 0, 1, -1, 2, -2 and infinity. Only the split of the
 * six coefficients between the output (2 of them) and the filter (5) changes, so the input
 * transform B^T d B is the 3x3 path's (wino_in) and only these differ:
 *   G (6x5), the filter's values at the points (scaled as the 3x3 path scales them):
 *     [ 1/4     0      0      0      0   ]
 *     [-1/6   -1/6   -1/6   -1/6   -1/6  ]
 *     [-1/6    1/6   -1/6    1/6   -1/6  ]
 *     [ 1/24   1/12   1/6    1/3    2/3  ]
 *     [ 1/24  -1/12   1/6   -1/3    2/3  ]
 *     [ 0      0      0      0      1    ]
 *   A^T (2x6), the output's values:  [1 1 1 1 1 0], [0 1 -1 2 -2 1].
 * 36 products per 2x2 output tile and channel pair against 100 taps: 2.78x fewer. */

/* G g of one filter column: g0..g4 -> t[0..5 * ts]. */
#define W5_G(t, ts, g0, g1, g2, g3, g4) do {                                         \
        WT e_ = (g0) + (g2) + (g4), o_ = (g1) + (g3);                                   \
        WT E_ = (g0) * s24 + (g2) * s6 + (g4) * s23, O_ = (g1) * s12 + (g3) * s3;        \
        (t)[0 * (ts)] = (g0) * q;                                                       \
        (t)[1 * (ts)] = -(e_ + o_) * s6;                                                \
        (t)[2 * (ts)] = -(e_ - o_) * s6;                                                \
        (t)[3 * (ts)] = E_ + O_;                                                        \
        (t)[4 * (ts)] = E_ - O_;                                                        \
        (t)[5 * (ts)] = (g4);                                                           \
    } while (0)

/* G g G^T of each 5x5 filter into U's packed panels, as wino_filters does for 3x3 (flip:
 * w is (C, K, 5, 5) and filter (k, c) is w[c, k] rotated by 180 degrees). */
static void WN(wino_filters5)(const WT* w, WT* U, mn_idx K, mn_idx C, int mr, int flip,
                              mn_idx p0, mn_idx p1)
{
    mn_idx kp = (K + mr - 1) / mr * mr, xs = kp * C;
    const WT q = (WT)1 / 4, s3 = (WT)1 / 3, s6 = (WT)1 / 6, s12 = (WT)1 / 12,
             s23 = (WT)2 / 3, s24 = (WT)1 / 24;
    WT g[25], t[30], u[36];
    for (mn_idx p = p0; p < p1; p++)
        for (mn_idx c = 0; c < C; c++)
            for (int i = 0; i < mr; i++) {
                mn_idx k = p * mr + i;
                for (int a = 0; a < 25; a++)
                    g[a] = k >= K ? 0 : flip ? w[(c * K + k) * 25 + 24 - a]
                                             : w[(k * C + c) * 25 + a];
                for (int s = 0; s < 5; s++)   /* t = G g (6x5), column s */
                    W5_G(t + s, 5, g[s], g[5 + s], g[10 + s], g[15 + s], g[20 + s]);
                for (int a = 0; a < 6; a++)   /* u = t G^T (6x6), row a */
                    W5_G(u + a * 6, 1, t[a * 5], t[a * 5 + 1], t[a * 5 + 2], t[a * 5 + 3],
                         t[a * 5 + 4]);
                WT* dst = U + p * mr * C + c * mr + i;
                for (int xi = 0; xi < 36; xi++) dst[xi * xs] = u[xi];
            }
}
#undef W5_G

/* A^T m A for nr tiles: m rows xi at m + xi * ms -> o[4][nr], plus the bias b. */
static void WN(wino_out5)(const WT* restrict m, mn_idx ms, WT* restrict o, int nr, WT b)
{
    typedef WN(wvec) V;
    for (int j = 0; j < nr; j += WL) {
        V t[12];
        for (int s = 0; s < 6; s++) {   /* t = A^T m (2x6), column s */
#define WLD(r) (*(const V*)(m + ((r) * 6 + s) * ms + j))
            V m0 = WLD(0), m1 = WLD(1), m2 = WLD(2), m3 = WLD(3), m4 = WLD(4), m5 = WLD(5);
#undef WLD
            t[s] = m0 + m1 + m2 + m3 + m4;
            t[6 + s] = m1 - m2 + 2 * (m3 - m4) + m5;
        }
        for (int r = 0; r < 2; r++) {   /* o = t A (2x2), row r */
            V m0 = t[r * 6], m1 = t[r * 6 + 1], m2 = t[r * 6 + 2];
            V m3 = t[r * 6 + 3], m4 = t[r * 6 + 4], m5 = t[r * 6 + 5];
            *(V*)(o + (r * 2 + 0) * nr + j) = m0 + m1 + m2 + m3 + m4 + b;
            *(V*)(o + (r * 2 + 1) * nr + j) = m1 - m2 + 2 * (m3 - m4) + m5 + b;
        }
    }
}

/* The weight gradient's output side: the 2x2 output-grad tile at (y0, x0) of image n,
 * filters k0..k0+mr (past K or the output's edge: zero), as A dY A^T: rows xi at
 * m + xi * ms, mr long. */
static void WN(wino_gout5)(const WT* dy, const wino_geom* g, mn_idx n, mn_idx k0, mn_idx y0,
                           mn_idx x0, WT* restrict m, mn_idx ms, int mr)
{
    mn_idx OH = g->OH, OW = g->OW, K = g->K;
    int rows = OH - y0 < 2 ? (int)(OH - y0) : 2, cols = OW - x0 < 2 ? (int)(OW - x0) : 2;
    for (int i = 0; i < mr; i++) {
        mn_idx k = k0 + i;
        WT o[4] = {0, 0, 0, 0}, t[12];
        if (k < K) {
            const WT* src = dy + ((n * K + k) * OH + y0) * OW + x0;
            for (int a = 0; a < rows; a++)
                for (int b = 0; b < cols; b++) o[a * 2 + b] = src[a * OW + b];
        }
        for (int b = 0; b < 2; b++) {   /* t = A o (6x2), column b: o's values at the points */
            WT y0_ = o[b], y1 = o[2 + b];
            t[0 * 2 + b] = y0_;
            t[1 * 2 + b] = y0_ + y1;
            t[2 * 2 + b] = y0_ - y1;
            t[3 * 2 + b] = y0_ + 2 * y1;
            t[4 * 2 + b] = y0_ - 2 * y1;
            t[5 * 2 + b] = y1;
        }
        for (int a = 0; a < 6; a++) {   /* m = t A^T (6x6), row a */
            WT z0 = t[a * 2], z1 = t[a * 2 + 1];
            WT* dst = m + a * 6 * ms + i;
            dst[0 * ms] = z0;
            dst[1 * ms] = z0 + z1;
            dst[2 * ms] = z0 - z1;
            dst[3 * ms] = z0 + 2 * z1;
            dst[4 * ms] = z0 - 2 * z1;
            dst[5 * ms] = z1;
        }
    }
}

/* G^T z of one column (6 values, stride zs) -> o[0..4 * os]. */
#define W5_GT(o, os, z, zs) do {                                                     \
        WT z0_ = (z)[0], z1_ = (z)[(zs)], z2_ = (z)[2 * (zs)], z3_ = (z)[3 * (zs)],     \
           z4_ = (z)[4 * (zs)], z5_ = (z)[5 * (zs)];                                     \
        WT p_ = z1_ + z2_, m_ = z2_ - z1_, P_ = z3_ + z4_, M_ = z3_ - z4_;                \
        (o)[0] = z0_ * q - p_ * s6 + P_ * s24;                                          \
        (o)[(os)] = m_ * s6 + M_ * s12;                                                 \
        (o)[2 * (os)] = (P_ - p_) * s6;                                                 \
        (o)[3 * (os)] = m_ * s6 + M_ * s3;                                              \
        (o)[4 * (os)] = P_ * s23 - p_ * s6 + z5_;                                       \
    } while (0)

/* dw[k, c] (K, C, 5, 5) = G^T (sum of the nt thread sums dU, each per items apart) G, for
 * the filters k0..k1. */
static void WN(wino_wgrad_out5)(const WT* dU, int nt, mn_idx per, mn_idx kp, mn_idx cp,
                                mn_idx C, mn_idx k0, mn_idx k1, WT* dw)
{
    const WT q = (WT)1 / 4, s3 = (WT)1 / 3, s6 = (WT)1 / 6, s12 = (WT)1 / 12,
             s23 = (WT)2 / 3, s24 = (WT)1 / 24;
    for (mn_idx k = k0; k < k1; k++)
        for (mn_idx c = 0; c < C; c++) {
            WT z[36], t[30];
            for (int xi = 0; xi < 36; xi++) {
                const WT* s = dU + xi * kp * cp + k * cp + c;
                WT acc = 0;
                for (int i = 0; i < nt; i++) acc += s[i * per];
                z[xi] = acc;
            }
            for (int b = 0; b < 6; b++)   /* t = G^T z (5x6), column b */
                W5_GT(t + b, 6, z + b, 6);
            WT* o = dw + (k * C + c) * 25;
            for (int a = 0; a < 5; a++)   /* o = t G (5x5), row a */
                W5_GT(o + a * 5, 1, t + a * 6, 1);
        }
}
#undef W5_GT
