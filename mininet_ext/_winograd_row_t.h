/* Winograd F(4, 5) along image rows, for 5x5 stride-1 filters with few channels, for one
 * element type: included by _winograd_t.h (WT, WS, WN, WL, the vector type).
 *
 * Each output row is cut into segments of 4 pixels; a segment of output row y takes the 8
 * input pixels under it from each of the 5 input rows y .. y + 4. Along the row the 5-tap
 * filter row and the 8 pixels are transformed (points 0, 1, -1, 2, -2, 1/2, -1/2 and
 * infinity) so that 8 products give the segment's 4 outputs where the direct sum takes 20:
 * 8 GEMMs (one per transform position xi) of [K x 5C] @ [5C x tiles], 2.5x fewer
 * multiply-adds than the direct 5x5 sum. Across the rows the sum stays direct, so a
 * transformed input row serves the five output rows above it: it is transformed once per
 * image (T), where the 2-D F(2x2, 5x5) transforms a 6x6 patch per 2x2 tile, which at 16-32
 * channels cost more than its GEMMs saved.
 *
 *   B^T (8x8), the input's values:           G (8x5), the filter's:
 *   [-1    0  21/4     0 -21/4     0  1  0]   [ -1     0     0     0     0  ]
 *   [ 0    1     1 -17/4 -17/4     1  1  0]   [-2/9  -2/9  -2/9  -2/9  -2/9 ]
 *   [ 0   -1     1  17/4 -17/4    -1  1  0]   [-2/9   2/9  -2/9   2/9  -2/9 ]
 *   [ 0  1/2   1/4  -5/2  -5/4     2  1  0]   [1/90  1/45  2/45  4/45  8/45 ]
 *   [ 0 -1/2   1/4   5/2  -5/4    -2  1  0]   [1/90 -1/45  2/45 -4/45  8/45 ]
 *   [ 0    2     4  -5/2    -5   1/2  1  0]   [32/45 16/45 8/45  4/45  2/45 ]
 *   [ 0   -2     4   5/2    -5  -1/2  1  0]   [32/45 -16/45 8/45 -4/45 2/45 ]
 *   [ 0   -1     0  21/4     0 -21/4  0  1]   [  0     0     0     0     1  ]
 *   A^T (4x8), the output's: rows [1 1 1 1 1 1 1 0], [0 1 -1 2 -2 1/2 -1/2 0],
 *   [0 1 1 4 4 1/4 1/4 0], [0 1 -1 8 -8 1/8 -1/8 1]; out = A^T [(G g) .* (B^T d)].
 *
 * Layouts (a block: ni whole images; tile t = (image, segment s, output row y) at
 * t = (image * S + s) * Hp + y, so that rows y = OH .. Hp - 1 are tiles too, computed and
 * dropped: 4 of every Hp, the price of reading the GEMM's B straight from T):
 *   T[xi][c][image][s][Hp]          the block's transformed input rows (padded rows)
 *   U[xi][k panel][kr * C + c][mr]  transformed filter rows, packed as the kernel's A panels
 *   M[xi][k][nbt]                   the 8 products, row-major
 * Tile t's B value for reduction index kr * C + c is T[xi][c][t + kr]: for each kr the
 * kernel reads C rows of B a plane apart (kernel_sb), no packing. */

#ifndef WROW_G_TABLE
#define WROW_G_TABLE
static const double wrow_G[8][5] = {
    {-1, 0, 0, 0, 0},
    {-2.0 / 9, -2.0 / 9, -2.0 / 9, -2.0 / 9, -2.0 / 9},
    {-2.0 / 9, 2.0 / 9, -2.0 / 9, 2.0 / 9, -2.0 / 9},
    {1.0 / 90, 1.0 / 45, 2.0 / 45, 4.0 / 45, 8.0 / 45},
    {1.0 / 90, -1.0 / 45, 2.0 / 45, -4.0 / 45, 8.0 / 45},
    {32.0 / 45, 16.0 / 45, 8.0 / 45, 4.0 / 45, 2.0 / 45},
    {32.0 / 45, -16.0 / 45, 8.0 / 45, -4.0 / 45, 2.0 / 45},
    {0, 0, 0, 0, 1},
};
#endif

/* G along each filter row, into U's packed panels p0..p1 (k >= K: zero rows). flip: w holds
 * the (C, K, 5, 5) weights of the convolution whose input gradient this is, so filter
 * (k, c) is w[c, k] rotated by 180 degrees. */
static void WN(wrow_filters)(const WT* w, WT* U, mn_idx K, mn_idx C, int mr, int flip,
                             mn_idx p0, mn_idx p1)
{
    mn_idx kp = (K + mr - 1) / mr * mr, kc5 = 5 * C, xs = kp * kc5;
    for (mn_idx p = p0; p < p1; p++)
        for (int kr = 0; kr < 5; kr++)
            for (mn_idx c = 0; c < C; c++)
                for (int i = 0; i < mr; i++) {
                    mn_idx k = p * mr + i;
                    double g[5];
                    for (int q = 0; q < 5; q++)
                        g[q] = k >= K ? 0 : flip ? w[(c * K + k) * 25 + (4 - kr) * 5 + 4 - q]
                                                 : w[(k * C + c) * 25 + kr * 5 + q];
                    WT* dst = U + (p * kc5 + kr * C + c) * mr + i;
                    for (int xi = 0; xi < 8; xi++) {
                        double u = 0;
                        for (int q = 0; q < 5; q++) u += wrow_G[xi][q] * g[q];
                        dst[xi * xs] = (WT)u;
                    }
                }
}

/* B^T d across rows r .. r + lanes of the plane P (columns Hq apart) into t (xi rows xs
 * apart), on vectors or scalars (VT) */
#define WROW_IN_AT(VT, r) do {                                                          \
        VT d0, d1, d2, d3, d4, d5, d6, d7;                                              \
        memcpy(&d0, d + 0 * Hq + (r), sizeof(VT)); memcpy(&d1, d + 1 * Hq + (r), sizeof(VT)); \
        memcpy(&d2, d + 2 * Hq + (r), sizeof(VT)); memcpy(&d3, d + 3 * Hq + (r), sizeof(VT)); \
        memcpy(&d4, d + 4 * Hq + (r), sizeof(VT)); memcpy(&d5, d + 5 * Hq + (r), sizeof(VT)); \
        memcpy(&d6, d + 6 * Hq + (r), sizeof(VT)); memcpy(&d7, d + 7 * Hq + (r), sizeof(VT)); \
        VT e1 = d2 + d6 - a17 * d4, o1 = d1 + d5 - a17 * d3;                             \
        VT e2 = qt * d2 + d6 - a54 * d4, o2 = h * d1 + 2 * d5 - a5 * d3;                  \
        VT e3 = 4 * d2 + d6 - 5 * d4, o3 = 2 * d1 + h * d5 - a5 * d3;                     \
        VT v_[8] = {d6 - d0 + a21 * (d2 - d4), e1 + o1, e1 - o1, e2 + o2, e2 - o2,         \
                    e3 + o3, e3 - o3, d7 - d1 + a21 * (d3 - d5)};                        \
        for (int xi_ = 0; xi_ < 8; xi_++) memcpy(t + xi_ * xs + (r), &v_[xi_], sizeof(VT)); \
    } while (0)

/* Image n's input rows, transformed, into the block's T at image slot i. P is scratch for
 * one channel's zero-padded plane, transposed (P[col][r], columns Hq apart), so that the
 * transform runs across rows on whole vectors. */
static void __attribute__((optimize("no-tree-loop-distribute-patterns")))
WN(wrow_in)(const WT* x, const wrow_geom* g, mn_idx n, mn_idx i, WT* restrict T,
            WT* restrict P)
{
    typedef WN(wvec) V;
    mn_idx H = g->H, W = g->W, C = g->C, S = g->S, Hp = g->Hp, Hq = g->Hq, ph = g->ph,
           pw = g->pw;
    mn_idx Wq = 4 * S + 4, plane = g->ni * S * Hp, xs = C * plane;
    const WT h = (WT)0.5, qt = (WT)0.25, a21 = (WT)5.25, a17 = (WT)4.25, a5 = (WT)2.5,
             a54 = (WT)1.25;
    for (mn_idx c = 0; c < C; c++) {
        const WT* src = x + (n * C + c) * H * W;
        /* the plane transposed: zero, then the image's pixels at (pw + x, ph + y) */
        for (mn_idx q = 0; q < Wq * Hq; q++) P[q] = 0;
        mn_idx wi = W < Wq - pw ? W : Wq - pw, hi = H < Hq - ph ? H : Hq - ph;
        for (mn_idx y = 0; y < hi; y++)
            for (mn_idx xx = 0; xx < wi; xx++) P[(xx + pw) * Hq + y + ph] = src[y * W + xx];
        for (mn_idx s = 0; s < S; s++) {
            const WT* d = P + 4 * s * Hq;
            WT* t = T + c * plane + (i * S + s) * Hp;
            mn_idx r = 0;
            for (; r + WL <= Hp; r += WL) WROW_IN_AT(V, r);
            if (r < Hp && Hp >= WL)   /* the last vector ends at the row's end */
                WROW_IN_AT(V, Hp - WL);
            else
                for (; r < Hp; r++) WROW_IN_AT(WT, r);
        }
    }
}
#undef WROW_IN_AT

/* A^T of the 8 products of nr tiles (rows xi at m + xi * ms) -> o[4][nr], plus the bias,
 * then max(0, .) if relu (NaN stays NaN, as PyTorch's relu keeps it). */
static void WN(wrow_out)(const WT* restrict m, mn_idx ms, WT* restrict o, int nr, WT bias,
                         int relu)
{
    typedef WN(wvec) V;
    const WT h = (WT)0.5, qt = (WT)0.25, e8 = (WT)0.125;
    for (int j = 0; j < nr; j += WL) {
#define WLD(xi) (*(const V*)(m + (xi) * ms + j))
        V m0 = WLD(0), m1 = WLD(1), m2 = WLD(2), m3 = WLD(3);
        V m4 = WLD(4), m5 = WLD(5), m6 = WLD(6), m7 = WLD(7);
#undef WLD
        V a = m1 + m2, d = m1 - m2, e = m3 + m4, f = m3 - m4, p = m5 + m6, q = m5 - m6;
        V o0 = m0 + a + e + p + bias, o1 = d + 2 * f + h * q + bias;
        V o2 = a + 4 * e + qt * p + bias, o3 = d + 8 * f + e8 * q + m7 + bias;
        *(V*)(o + j) = o0;
        *(V*)(o + nr + j) = o1;
        *(V*)(o + 2 * nr + j) = o2;
        *(V*)(o + 3 * nr + j) = o3;
    }
    if (relu)
        for (int i = 0; i < 4 * nr; i++) o[i] = o[i] < 0 ? (WT)0 : o[i];
}

typedef WT WN(v4) __attribute__((vector_size(4 * sizeof(WT)), aligned(sizeof(WT))));
typedef WI WN(i4) __attribute__((vector_size(4 * sizeof(WT))));
MN_DEF_TR4(WN(wrow_tr4), WN(v4), WN(i4))

/* n tiles' outputs o[4][nr] into out at their offsets off (negative: a row past the map,
 * dropped), cols[j] of each 4 inside the row. Four whole tiles at a time go through a 4x4
 * transpose in registers and leave as one 4-wide store each, where four scalar stores
 * per tile were a fifth of the layer's time (MNIST's 100x16x14x14 -> 32). */
static void WN(wrow_store)(const WT* restrict o, int nr, int n, const mn_idx* off,
                           const mn_idx* cols, WT* out)
{
    typedef WN(v4) V4;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        if (off[j] >= 0 && off[j + 1] >= 0 && off[j + 2] >= 0 && off[j + 3] >= 0 &&
            (cols[j] & cols[j + 1] & cols[j + 2] & cols[j + 3]) == 4) {
            V4 r[4];
            for (int a = 0; a < 4; a++) memcpy(&r[a], o + a * nr + j, sizeof(V4));
            WN(wrow_tr4)(r);
            for (int a = 0; a < 4; a++) memcpy(out + off[j + a], &r[a], sizeof(V4));
            continue;
        }
        for (int l = j; l < j + 4; l++)
            if (off[l] >= 0)
                for (mn_idx a = 0; a < cols[l]; a++) out[off[l] + a] = o[a * nr + l];
    }
    for (; j < n; j++)
        if (off[j] >= 0)
            for (mn_idx a = 0; a < cols[j]; a++) out[off[j] + a] = o[a * nr + j];
}

/* One block: images n0 .. n0 + ni, their input rows transformed, 8 GEMMs through the
 * micro-kernel reading B straight from T, transformed back, biased and stored. T, P, M, O,
 * tab: this thread's workspace (winograd.pyx rows_items). */
static void WN(wrow_block)(const wrow_geom* g, const WT* x, const WT* U, const WT* bias,
                           WT* out, mn_idx n0, mn_idx ni, WT* T, WT* P, WT* M, WT* O,
                           mn_idx* tab, int relu)
{
    mn_idx C = g->C, K = g->K, kp = g->kp, nbt = g->nbt, kc5 = 5 * C, OH = g->OH,
           OW = g->OW, S = g->S, Hp = g->Hp, plane = g->ni * S * Hp, tt = ni * S * Hp;
    mn_idx ms = kp * nbt + WINO_ROW_PAD, us = kp * kc5, oplane = OH * OW;
    int nr = g->nr, mr = g->mr;
    /* each tile's first output (channel 0; -1: a row past the map), and how many of its 4
     * lie inside the row */
    mn_idx t = 0;
    for (mn_idx i = 0; i < ni; i++)
        for (mn_idx s = 0; s < S; s++)
            for (mn_idx y = 0; y < Hp; y++, t++) {
                tab[t] = y < OH ? (n0 + i) * K * oplane + y * OW + 4 * s : -1;
                tab[nbt + t] = OW - 4 * s < 4 ? OW - 4 * s : 4;
            }
    for (mn_idx i = 0; i < ni; i++)
        WN(wrow_in)(x, g, n0 + i, i, T, P);
    for (int xi = 0; xi < 8; xi++) {
        const WT* u = U + xi * us;
        const WT* v = T + xi * C * plane;
        WT* m = M + xi * ms;
        for (mn_idx jp = 0; jp < tt; jp += nr)
            for (mn_idx k0 = 0; k0 < kp; k0 += mr)
                for (int kr = 0; kr < 5; kr++)
                    for (mn_idx c0 = 0; c0 < C; c0 += WINO_KC) {
                        mn_idx kc = C - c0 < WINO_KC ? C - c0 : WINO_KC;
                        const WT* a = u + k0 * kc5 + (kr * C + c0) * mr;
                        const WT* b = v + c0 * plane + jp + kr;
                        int acc = kr > 0 || c0 > 0;
                        if (K - k0 > mn_gemm_mr_short())
                            WCAT(mn_kernel_sb_, WS)(kc, a, b, plane, m + k0 * nbt + jp, nbt,
                                                    acc);
                        else   /* a last panel of few filters (its A panel is mr tall) */
                            WCAT(mn_kernel_sb_short_, WS)(kc, a, b, plane, m + k0 * nbt + jp,
                                                          nbt, acc);
                    }
    }
    for (mn_idx k = 0; k < K; k++)
        for (mn_idx jp = 0; jp < tt; jp += nr) {
            WN(wrow_out)(M + k * nbt + jp, ms, O, nr, bias ? bias[k] : (WT)0, relu);
            int n = tt - jp < nr ? (int)(tt - jp) : nr;
            WN(wrow_store)(O, nr, n, tab + jp, tab + nbt + jp, out + k * oplane);
        }
}
