/* Winograd F(4x4, 3x3) kernels for one element type: _winograd.h includes this file
 * with WT float and WS f32 (the template takes double as well). F(2x2, 5x5) shares
 * everything but the filter and output transforms (_winograd5_t.h); g->r picks them.
 *
 * Layouts (nb tiles per block, nr = the GEMM micro-kernel's width, mr its height):
 *   U[xi][k panel][c][mr]       transformed filters, packed as the kernel's A panels
 *   V[xi][tile panel][c][nr]    transformed input tiles, packed as the kernel's B panels
 *   M[xi][k][nb]                the 36 products, row-major (ldc = nb)
 * xi = 0..35 runs over the 6x6 transform positions. */

#define WN(name) WCAT(WCAT(name, _), WS)
typedef WT WN(wvec) __attribute__((vector_size(WINO_VBYTES), aligned(sizeof(WT))));
#define WL ((int)(WINO_VBYTES / sizeof(WT)))   /* lanes per vector */

/* G g G^T of each 3x3 filter, into U's packed panels (k >= K: zero rows). flip: w holds
 * the (C, K, 3, 3) weights of the convolution whose input gradient this is, so filter
 * (k, c) is w[c, k] rotated by 180 degrees. k runs over panels p0..p1; the loops run
 * across a panel's mr filters, so U's stores are mr long and the arithmetic vectorises. */
static inline __attribute__((always_inline)) void
WN(wino_filters_)(const WT* w, WT* U, mn_idx K, mn_idx C, const int mr, int flip, mn_idx p0,
                  mn_idx p1)
{
    /* a panel's mr <= 16 filters side by side in the lanes of 16-wide vectors */
    typedef WT V __attribute__((vector_size(16 * sizeof(WT))));
    mn_idx kp = (K + mr - 1) / mr * mr, xs = kp * C;
    const WT q = (WT)1 / 4, s6 = (WT)1 / 6, s12 = (WT)1 / 12, s24 = (WT)1 / 24;
    for (mn_idx p = p0; p < p1; p++)
        for (mn_idx c = 0; c < C; c++) {
            WT gs[9][16] __attribute__((aligned(64))) = {{0}};
            for (int i = 0; i < mr; i++) {
                mn_idx k = p * mr + i;
                if (k >= K)
                    break;
                for (int a = 0; a < 9; a++)
                    gs[a][i] = flip ? w[(c * K + k) * 9 + 8 - a] : w[(k * C + c) * 9 + a];
            }
            V g[9], t[18];
            for (int a = 0; a < 9; a++)
                memcpy(&g[a], gs[a], sizeof(V));
            for (int s = 0; s < 3; s++) {   /* t = G g (6x3) */
                V g0 = g[s], g1 = g[3 + s], g2 = g[6 + s];
                t[0 * 3 + s] = g0 * q;
                t[1 * 3 + s] = -(g0 + g1 + g2) * s6;
                t[2 * 3 + s] = -(g0 - g1 + g2) * s6;
                t[3 * 3 + s] = g0 * s24 + g1 * s12 + g2 * s6;
                t[4 * 3 + s] = g0 * s24 - g1 * s12 + g2 * s6;
                t[5 * 3 + s] = g2;
            }
            WT* u = U + p * mr * C + c * mr;
            for (int a = 0; a < 6; a++) {   /* u = t G^T (6x6), mr lanes of each */
                V g0 = t[a * 3], g1 = t[a * 3 + 1], g2 = t[a * 3 + 2];
                V r[6] = {g0 * q, -(g0 + g1 + g2) * s6, -(g0 - g1 + g2) * s6,
                          g0 * s24 + g1 * s12 + g2 * s6, g0 * s24 - g1 * s12 + g2 * s6, g2};
                for (int b = 0; b < 6; b++)
                    memcpy(u + (a * 6 + b) * xs, &r[b], mr * sizeof(WT));
            }
        }
}

/* wino_filters_ with the panel height a constant, so that its loops across the panel
 * become whole vector operations (with a runtime height gcc left them scalar: the
 * transform cost 1/6 of a 4x4-map layer's forward) */
static void WN(wino_filters)(const WT* w, WT* U, mn_idx K, mn_idx C, int mr, int flip,
                             mn_idx p0, mn_idx p1)
{
    switch (mr) {
    case 16: WN(wino_filters_)(w, U, K, C, 16, flip, p0, p1); break;
    case 12: WN(wino_filters_)(w, U, K, C, 12, flip, p0, p1); break;
    case 8: WN(wino_filters_)(w, U, K, C, 8, flip, p0, p1); break;
    case 6: WN(wino_filters_)(w, U, K, C, 6, flip, p0, p1); break;
    case 4: WN(wino_filters_)(w, U, K, C, 4, flip, p0, p1); break;
    default: WN(wino_filters_)(w, U, K, C, mr, flip, p0, p1);
    }
}

/* B^T d B for nr tiles at once: d[36][nr] (the 6x6 patches, position-major) -> v rows
 * xi at v + xi * vs, each nr long. Vectors (V, of L lanes) run across tiles, so every
 * step is plain adds and multiplies on whole vectors. */
#ifndef WINO_IN_BODY   /* this file is included once per element type */
#define WINO_IN_BODY(V, L)                                                          \
    for (int j = 0; j < nr; j += (L)) {                                             \
        V t[36];                                                                    \
        for (int s = 0; s < 6; s++) {   /* t = B^T d, column s */                   \
            V d0 = *(const V*)(d + (0 * 6 + s) * nr + j);                           \
            V d1 = *(const V*)(d + (1 * 6 + s) * nr + j);                           \
            V d2 = *(const V*)(d + (2 * 6 + s) * nr + j);                           \
            V d3 = *(const V*)(d + (3 * 6 + s) * nr + j);                           \
            V d4 = *(const V*)(d + (4 * 6 + s) * nr + j);                           \
            V d5 = *(const V*)(d + (5 * 6 + s) * nr + j);                           \
            WINO_BT(t + s, 6, d0, d1, d2, d3, d4, d5);                              \
        }                                                                           \
        for (int r = 0; r < 6; r++) {   /* v = t B, row r */                        \
            V o[6];                                                                 \
            WINO_BT(o, 1, t[r * 6], t[r * 6 + 1], t[r * 6 + 2], t[r * 6 + 3],       \
                    t[r * 6 + 4], t[r * 6 + 5]);                                    \
            for (int q = 0; q < 6; q++) *(V*)(v + (r * 6 + q) * vs + j) = o[q];     \
        }                                                                           \
    }
#endif

static void WN(wino_in)(const WT* restrict d, WT* restrict v, mn_idx vs, int nr)
{
    typedef WN(wvec) V;
    WINO_IN_BODY(V, WL)
}

/* wino_in with 64-byte vectors, where they divide nr (wino_in_any) */
static void WN(wino_in64)(const WT* restrict d, WT* restrict v, mn_idx vs, int nr)
{
    typedef WT V __attribute__((vector_size(64), aligned(sizeof(WT))));
    WINO_IN_BODY(V, (int)(64 / sizeof(WT)))
}


/* wino_in with the widest vectors that divide nr: with AVX-512 on a Xeon, 64-byte ones
 * halve the transform's time (Zen 4 splits them into two 32-byte halves: the same) */
static inline void WN(wino_in_any)(const WT* restrict d, WT* restrict v, mn_idx vs, int nr)
{
#if defined(__AVX512F__)
    if (nr % (int)(64 / sizeof(WT)) == 0) {
        WN(wino_in64)(d, v, vs, nr);
        return;
    }
#endif
    WN(wino_in)(d, v, vs, nr);
}

/* A^T m A for nr tiles: m rows xi at m + xi * ms -> o[16][nr], plus the bias b. */
static void WN(wino_out)(const WT* restrict m, mn_idx ms, WT* restrict o, int nr, WT b)
{
    typedef WN(wvec) V;
    for (int j = 0; j < nr; j += WL) {
        V t[24];
        for (int s = 0; s < 6; s++) {   /* t = A^T m, column s */
#define WLD(r) (*(const V*)(m + ((r) * 6 + s) * ms + j))
            V m0 = WLD(0), m1 = WLD(1), m2 = WLD(2), m3 = WLD(3), m4 = WLD(4), m5 = WLD(5);
#undef WLD
            V a = m1 + m2, d = m1 - m2, e = m3 + m4, f = m3 - m4;
            t[0 * 6 + s] = m0 + a + e;
            t[1 * 6 + s] = d + 2 * f;
            t[2 * 6 + s] = a + 4 * e;
            t[3 * 6 + s] = d + 8 * f + m5;
        }
        for (int r = 0; r < 4; r++) {   /* o = t A, row r */
            V m0 = t[r * 6], m1 = t[r * 6 + 1], m2 = t[r * 6 + 2];
            V m3 = t[r * 6 + 3], m4 = t[r * 6 + 4], m5 = t[r * 6 + 5];
            V a = m1 + m2, d = m1 - m2, e = m3 + m4, f = m3 - m4;
            *(V*)(o + (r * 4 + 0) * nr + j) = m0 + a + e + b;
            *(V*)(o + (r * 4 + 1) * nr + j) = d + 2 * f + b;
            *(V*)(o + (r * 4 + 2) * nr + j) = a + 4 * e + b;
            *(V*)(o + (r * 4 + 3) * nr + j) = d + 8 * f + m5 + b;
        }
    }
}

#include "_winograd5_t.h"
#include "_winograd_row_t.h"

/* The 6x6 input patches of nr tiles into d[36][nr]; tiles past the last (tn[j] < 0) and
 * pixels outside the image (the padding) read as zero. */
/* wino_gather where every tile is a whole image (one tile per image: a map of at most
 * 6x6 padded pixels, as ResNet's 4x4 maps): the tiles' patches all start at (-ph, -pw),
 * so the rows and columns inside are the same for the panel and the copy runs position
 * by position, nr tiles long, with no per-tile bounds and no memset (the padding ring's
 * rows are zeroed as they come). The tiles of a panel are consecutive images. */
static void WN(wino_gather_images)(const WT* x, const wino_geom* g, mn_idx c,
                                   const mn_idx* tn, WT* restrict d, int nr)
{
    mn_idx H = g->H, W = g->W, y0 = -g->ph, x0 = -g->pw, hw = H * W, chw = g->C * hw;
    int n = 0;   /* tiles in use: past the last one tn < 0, and those come last */
    while (n < nr && tn[n] >= 0) n++;
    const WT* src = n ? x + (tn[0] * g->C + c) * hw : x;
    /* the images' channel c side by side first, one run each: read straight from x, the
     * nr runs C * H * W apart (2 KB for 32 channels of 4x4) fell into two L1 sets and
     * missed L1 on every position */
    WT buf[32 * 36];
    if (n * hw <= 32 * 36) {
        for (int j = 0; j < n; j++) memcpy(buf + j * hw, src + j * chw, hw * sizeof(WT));
        src = buf;
        chw = hw;
    }
    for (int r = 0; r < 6; r++) {
        mn_idx y = y0 + r;
        for (int s = 0; s < 6; s++) {
            mn_idx xx = x0 + s;
            WT* dst = d + (r * 6 + s) * nr;
            int j = 0;
            if (y >= 0 && y < H && xx >= 0 && xx < W) {
                const WT* p = src + y * W + xx;
                for (; j < n; j++) dst[j] = p[j * chw];
            }
            for (; j < nr; j++) dst[j] = 0;
        }
    }
}

/* Rows y0..y0+6 of image n's channel c, zero-padded: strip[r][q] = x(y0 + r, q - pw),
 * zero outside the image, q < wq. Plain loops, kept from becoming memcpy/memset calls:
 * the rows are a few vectors long (18 floats for a 16x16 map), and libc's calls for
 * them cost more than the gather they save. */
static void __attribute__((optimize("no-tree-loop-distribute-patterns")))
WN(wino_strip)(const WT* x, const wino_geom* g, mn_idx n, mn_idx c, mn_idx y0,
               WT* restrict strip, mn_idx wq)
{
    mn_idx H = g->H, W = g->W, pw = g->pw;
    mn_idx in = wq - pw < W ? wq - pw : W;   /* image columns inside the strip */
    const WT* src = x + (n * g->C + c) * H * W;
    for (int r = 0; r < 6; r++) {
        WT* restrict row = strip + r * wq;
        mn_idx y = y0 + r;
        if (y < 0 || y >= H || in <= 0) {
            for (mn_idx q = 0; q < wq; q++) row[q] = 0;
            continue;
        }
        const WT* restrict s = src + y * W;
        for (mn_idx q = 0; q < pw; q++) row[q] = 0;
        for (mn_idx q = 0; q < in; q++) row[pw + q] = s[q];
        for (mn_idx q = pw + in; q < wq; q++) row[q] = 0;
    }
}

static void WN(wino_gather)(const WT* x, const wino_geom* g, mn_idx c, const mn_idx* tn,
                            const mn_idx* ty, const mn_idx* tx, WT* restrict d, int nr)
{
    mn_idx H = g->H, W = g->W;
    if (g->th == 1 && g->tw == 1) {
        WN(wino_gather_images)(x, g, c, tn, d, nr);
        return;
    }
#if defined(__AVX512F__)
    if (sizeof(WT) == 4 && g->m == 4 && (g->tw - 1) * 4 + 6 <= 32 && g->pw < 32) {
        wino_gather4_f32v((const float*)x, g, c, tn, ty, tx, (float*)d, nr);
        return;
    }
#endif
    /* (float F(4x4, 3x3) with AVX-512 on maps up to 26 wide: wino_gather4_f32v above)
     * Tiles reaching into the padding copy their patch from a zero-padded strip of the
     * six image rows under their row of tiles (wino_strip, built once per row of tiles),
     * with fixed bounds: per-tile bounds and index arithmetic made the edge tiles (12 of
     * 16 on a 16x16 map) a third of the 64,32,16,16 layer's time on a Xeon. Strips wider
     * than WINO_STRIP take the bounded copy. Tiles past the last, and every tile where
     * some take the bounded copy, zero the whole d first (one contiguous fill: zeroing
     * tile by tile, 36 stores nr apart, was vectorised into scatters and cost more than
     * the GEMM on small maps). */
    WT strip[6 * WINO_STRIP];
    mn_idx wq = (g->tw - 1) * g->m + 6, sn = -1, sy = 0;
    int use_strip = wq <= WINO_STRIP, zero = 0;
    for (int j = 0; j < nr; j++)
        zero |= tn[j] < 0 || (!use_strip && (ty[j] < 0 || tx[j] < 0 || ty[j] + 6 > H ||
                                             tx[j] + 6 > W));
    if (zero)
        memset(d, 0, 36 * (size_t)nr * sizeof(WT));
    for (int j = 0; j < nr; j++) {
        mn_idx y0 = ty[j], x0 = tx[j];
        if (g->m == 2 && tn[j] >= 0 && y0 >= 0 && x0 >= 0 && y0 + 6 <= H && x0 + 6 <= W) {
            /* 5x5 filters: a run of inside tiles side by side in one row of tiles, 2 pixels
             * apart. Copied position by position, each a stride-2 read along an image row
             * into nr-long rows of d (vectorisable), not patch by patch (a transpose) */
            int L = 1;
            while (j + L < nr && tn[j + L] == tn[j] && ty[j + L] == y0 &&
                   tx[j + L] == x0 + 2 * L && x0 + 2 * L + 6 <= W)
                L++;
            const WT* src = x + ((tn[j] * g->C + c) * H + y0) * W + x0;
            for (int r = 0; r < 6; r++)
                for (int s = 0; s < 6; s++) {
                    const WT* row = src + r * W + s;
                    WT* dst = d + (r * 6 + s) * nr + j;
                    for (int l = 0; l < L; l++) dst[l] = row[2 * l];
                }
            j += L - 1;
            continue;
        }
        if (tn[j] < 0)   /* zero: edges */
            continue;
        const WT* src = x + (tn[j] * g->C + c) * H * W;
        if (y0 >= 0 && x0 >= 0 && y0 + 6 <= H && x0 + 6 <= W) {   /* inside: no checks */
            src += y0 * W + x0;
            for (int r = 0; r < 6; r++)
                for (int s = 0; s < 6; s++) d[(r * 6 + s) * nr + j] = src[r * W + s];
            continue;
        }
        if (use_strip) {   /* an edge tile, from its row's strip */
            if (tn[j] != sn || y0 != sy) {
                WN(wino_strip)(x, g, tn[j], c, y0, strip, wq);
                sn = tn[j];
                sy = y0;
            }
            const WT* p = strip + x0 + g->pw;
            for (int r = 0; r < 6; r++)
                for (int s = 0; s < 6; s++) d[(r * 6 + s) * nr + j] = p[r * wq + s];
            continue;
        }
        /* an edge tile (zeros already: edges): the rows r0..r1, columns s0..s1 inside */
        int r0 = y0 < 0 ? (int)-y0 : 0, r1 = H - y0 < 6 ? (int)(H - y0) : 6;
        int s0 = x0 < 0 ? (int)-x0 : 0, s1 = W - x0 < 6 ? (int)(W - x0) : 6;
        for (int r = r0; r < r1; r++)
            for (int s = s0; s < s1; s++) d[(r * 6 + s) * nr + j] = src[(y0 + r) * W + x0 + s];
    }
}

/* The 4x4 outputs of nr tiles, o[16][nr], into out's channel k, clipped at its edges
 * (2x2 ones, o[4][nr], for 5x5 filters). */
static void WN(wino_scatter)(const WT* o, const wino_geom* g, mn_idx k, const mn_idx* tn,
                             const mn_idx* ty, const mn_idx* tx, WT* out, int nr)
{
    mn_idx OH = g->OH, OW = g->OW;
    int tm = g->m;
    for (int j = 0; j < nr; j++) {
        if (tn[j] < 0) continue;
        /* ty, tx: the patch's corner in input coordinates; the output tile starts at
         * that corner plus the padding */
        mn_idx y0 = ty[j] + g->ph, x0 = tx[j] + g->pw;
        WT* dst = out + (tn[j] * g->K + k) * OH * OW + y0 * OW + x0;
        int rows = OH - y0 < tm ? (int)(OH - y0) : tm, cols = OW - x0 < tm ? (int)(OW - x0) : tm;
        if (tm == 4 && rows == 4 && cols == 4) {   /* a whole tile: fixed loops, unrolled */
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) dst[a * OW + b] = o[(a * 4 + b) * nr + j];
            continue;
        }
        if (tm == 2 && rows == 2 && cols == 2) {
            dst[0] = o[j];
            dst[1] = o[nr + j];
            dst[OW] = o[2 * nr + j];
            dst[OW + 1] = o[3 * nr + j];
            continue;
        }
        for (int a = 0; a < rows; a++)
            for (int b = 0; b < cols; b++) dst[a * OW + b] = o[(a * tm + b) * nr + j];
    }
}

/* The output transform of nr tiles (A^T m A plus the bias) into o, then max(0, .) if
 * relu: the fused activation, applied while the tile is in registers/L1. */
static void WN(wino_out_any)(const wino_geom* g, const WT* m, mn_idx ms, WT* restrict o,
                             int nr, WT b, int relu)
{
    int n = g->m * g->m * nr;
    if (g->r == 5)
        WN(wino_out5)(m, ms, o, nr, b);
    else
        WN(wino_out)(m, ms, o, nr, b);
    if (relu)   /* written so that NaN stays NaN, as PyTorch's relu keeps it */
        for (int i = 0; i < n; i++) o[i] = o[i] < 0 ? (WT)0 : o[i];
}

/* One block of nb tiles starting at tile t0: gather and transform the input, 36 GEMMs
 * through the micro-kernel, transform back and store. V, M, D, O and the tile tables
 * tn, ty, tx (nb each) are this thread's workspace. */
static void WN(wino_block)(const wino_geom* g, const WT* x, const WT* U, const WT* bias,
                           WT* out, mn_idx t0, WT* V, WT* M, WT* D, WT* O, mn_idx* tn,
                           mn_idx* ty, mn_idx* tx, int relu)
{
    mn_idx nb = g->nb, C = g->C, K = g->K, kp = g->kp, tpi = g->th * g->tw;
    int nr = g->nr, mr = g->mr, tm = g->m;
    /* V's and M's 36 rows WINO_ROW_PAD items longer than they need: at C * nb items
     * apart (a multiple of 4 KB for 32 or 64 channels) they all fell into the same L1
     * sets, and the transforms, which touch all 36 rows at once, missed L1 */
    mn_idx vs = C * nb + WINO_ROW_PAD, ms = kp * nb + WINO_ROW_PAD;
    for (mn_idx j = 0; j < nb; j++) {
        mn_idx t = t0 + j, r = t % tpi;
        tn[j] = t < g->T ? t / tpi : -1;
        ty[j] = tm * (r / g->tw) - g->ph;
        tx[j] = tm * (r % g->tw) - g->pw;
    }
    for (mn_idx c = 0; c < C; c++)
        for (mn_idx jp = 0; jp < nb; jp += nr) {
            WN(wino_gather)(x, g, c, tn + jp, ty + jp, tx + jp, D, nr);
            WN(wino_in_any)(D, V + jp * C + c * nr, vs, nr);
        }
    for (int xi = 0; xi < 36; xi++) {
        const WT* u = U + xi * kp * C;
        const WT* v = V + xi * vs;
        WT* m = M + xi * ms;
        for (mn_idx jp = 0; jp < nb; jp += nr)
            for (mn_idx c0 = 0; c0 < C; c0 += WINO_KC) {
                mn_idx kc = C - c0 < WINO_KC ? C - c0 : WINO_KC;
                for (mn_idx k0 = 0; k0 < kp; k0 += mr) {
                    if (mr == mn_gemm_mr())
                        WCAT(mn_kernel_, WS)(kc, u + k0 * C + c0 * mr, v + jp * C + c0 * nr,
                                             m + k0 * nb + jp, nb, c0 > 0);
                    else
                        WCAT(mn_kernel_short_, WS)(kc, u + k0 * C + c0 * mr, v + jp * C + c0 * nr,
                                                   m + k0 * nb + jp, nb, c0 > 0);
                }
            }
    }
    for (mn_idx k = 0; k < K; k++)
        for (mn_idx jp = 0; jp < nb; jp += nr) {
            WN(wino_out_any)(g, M + k * nb + jp, ms, O, nr, bias ? bias[k] : (WT)0,
                             relu);
            WN(wino_scatter)(O, g, k, tn + jp, ty + jp, tx + jp, out, nr);
        }
}

/* ---- the weight gradient: dW[k, c] = G^T [sum over tiles (A dY_k A^T) .* (B^T d_c B)] G.
 * Per block of tiles (nb a layout stride, cnt <= nb of them used):
 *   VT[xi][c panel][tile][nr]   B^T d B of every tile, channels across the lanes (B panels)
 *   GT[xi][k panel][tile][mr]   A dY A^T of every tile, filters across the lanes (A panels)
 *   dU[xi][kp][cp]              this thread's sums, += GT_xi @ VT_xi (inner dimension: tiles)
 * cp: C rounded up to nr. */

/* The 6x6 input patch at (y0, x0) of image n, channels c0..c0+nr (past C: zero), into
 * d[36][nr]; pixels outside the image read as zero. A patch on the image's edge reads
 * every position through offsets clamped into the image and keeps the value where the
 * position is inside (a select, so padding stays 0 next to an inf or NaN): fixed 6 x 6
 * loops and no memset, where per-channel bounded loops and the fill were a fifth of the
 * 64,32,16,16 layer's Winograd weight gradient on a Xeon (12 of its 16 tiles touch the
 * padding). */
static inline __attribute__((always_inline)) void
WN(wino_gather_c_)(const WT* x, const wino_geom* g, mn_idx n, mn_idx c0, mn_idx y0,
                   mn_idx x0, WT* restrict d, const int nr)
{
    mn_idx H = g->H, W = g->W, C = g->C;
    int r0 = y0 < 0 ? (int)-y0 : 0, r1 = H - y0 < 6 ? (int)(H - y0) : 6;
    int s0 = x0 < 0 ? (int)-x0 : 0, s1 = W - x0 < 6 ? (int)(W - x0) : 6;
    int inside = r0 == 0 && s0 == 0 && r1 == 6 && s1 == 6;
    if (r1 <= r0 || s1 <= s0) {   /* no pixel inside */
        memset(d, 0, 36 * (size_t)nr * sizeof(WT));
        return;
    }
    if (c0 + nr > C)   /* one contiguous fill for the lanes past C (see wino_gather) */
        memset(d, 0, 36 * (size_t)nr * sizeof(WT));
    mn_idx ro[6], co[6];
    int rin[6], cin[6];
    for (int r = 0; r < 6; r++) {
        rin[r] = r >= r0 && r < r1;
        ro[r] = (r < r0 ? r0 : r >= r1 ? r1 - 1 : r) * W;
    }
    for (int s = 0; s < 6; s++) {
        cin[s] = s >= s0 && s < s1;
        co[s] = s < s0 ? s0 : s >= s1 ? s1 - 1 : s;
    }
    for (int i = 0; i < nr; i++) {
        mn_idx c = c0 + i;
        if (c >= C) continue;
        const WT* src = x + ((n * C + c) * H + y0) * W + x0;
        if (inside) {
            for (int r = 0; r < 6; r++)
                for (int s = 0; s < 6; s++) d[(r * 6 + s) * nr + i] = src[r * W + s];
            continue;
        }
        for (int r = 0; r < 6; r++)
            for (int s = 0; s < 6; s++) {
                WT v = src[ro[r] + co[s]];
                d[(r * 6 + s) * nr + i] = rin[r] && cin[s] ? v : (WT)0;
            }
    }
}

/* The 4x4 output-grad tile at (y0, x0) of image n, filters k0..k0+mr (past K or past the
 * output's edge: zero), transformed to A dY A^T: rows xi at m + xi * ms, mr long. */
#define WGOUT_VB 16
#define WGOUT_NAME wino_gout16_
#include "_winograd_gout_t.h"
#undef WGOUT_VB
#undef WGOUT_NAME
#define WGOUT_VB 32
#define WGOUT_NAME wino_gout32_
#include "_winograd_gout_t.h"
#undef WGOUT_VB
#undef WGOUT_NAME

/* The two above with the lane counts of the ISAs' micro-kernels as constants, so that
 * their loops across the lanes vectorise. */
static void WN(wino_gather_c)(const WT* x, const wino_geom* g, mn_idx n, mn_idx c0,
                              mn_idx y0, mn_idx x0, WT* restrict d, int nr)
{
    switch (nr) {
    case 32: WN(wino_gather_c_)(x, g, n, c0, y0, x0, d, 32); break;
    case 16: WN(wino_gather_c_)(x, g, n, c0, y0, x0, d, 16); break;
    case 8: WN(wino_gather_c_)(x, g, n, c0, y0, x0, d, 8); break;
    default: WN(wino_gather_c_)(x, g, n, c0, y0, x0, d, nr);
    }
}

static void WN(wino_gout)(const WT* dy, const wino_geom* g, mn_idx n, mn_idx k0,
                          mn_idx y0, mn_idx x0, WT* restrict m, mn_idx ms, int mr)
{
    /* 32-byte vectors where they divide the panel (8 floats, 4 or 12 doubles) */
    switch (mr) {
    case 12:
        if (12 * sizeof(WT) % 32 == 0) WN(wino_gout32_)(dy, g, n, k0, y0, x0, m, ms, 12);
        else WN(wino_gout16_)(dy, g, n, k0, y0, x0, m, ms, 12);
        break;
    case 8: WN(wino_gout32_)(dy, g, n, k0, y0, x0, m, ms, 8); break;
    case 6: WN(wino_gout16_)(dy, g, n, k0, y0, x0, m, ms, 6); break;
    case 4:
        if (4 * sizeof(WT) % 32 == 0) WN(wino_gout32_)(dy, g, n, k0, y0, x0, m, ms, 4);
        else WN(wino_gout16_)(dy, g, n, k0, y0, x0, m, ms, 4);
        break;
    default: WN(wino_gout16_)(dy, g, n, k0, y0, x0, m, ms, mr);
    }
}

/* One block: cnt tiles from t0 transformed into VT and GT, then dU += GT_xi @ VT_xi for
 * the 36 positions through the micro-kernel. D: 36 x nr scratch. */
static void WN(wino_wgrad_block)(const wino_geom* g, const WT* x, const WT* dy, mn_idx t0,
                                 mn_idx cnt, mn_idx cp, WT* VT, WT* GT, WT* dU, WT* D)
{
    mn_idx nb = g->nb, kp = g->kp, tpi = g->th * g->tw;
    int nr = g->nr, mr = g->mr, tm = g->m;
    /* channel panels outside, tiles inside: one panel's rows of the image stay in L1
     * from one tile to the next */
    for (mn_idx c0 = 0; c0 < cp; c0 += nr)
        for (mn_idx j = 0; j < cnt; j++) {
            mn_idx t = t0 + j, n = t / tpi, r = t % tpi;
            WN(wino_gather_c)(x, g, n, c0, tm * (r / g->tw) - g->ph,
                              tm * (r % g->tw) - g->pw, D, nr);
            WN(wino_in_any)(D, VT + c0 * nb + j * nr, cp * nb, nr);
        }
    for (mn_idx k0 = 0; k0 < kp; k0 += mr)
        for (mn_idx j = 0; j < cnt; j++) {
            mn_idx t = t0 + j, n = t / tpi, r = t % tpi;
            if (g->r == 5)
                WN(wino_gout5)(dy, g, n, k0, 2 * (r / g->tw), 2 * (r % g->tw),
                               GT + k0 * nb + j * mr, kp * nb, mr);
            else
                WN(wino_gout)(dy, g, n, k0, 4 * (r / g->tw), 4 * (r % g->tw),
                              GT + k0 * nb + j * mr, kp * nb, mr);
        }
    for (int xi = 0; xi < 36; xi++) {
        const WT* gt = GT + xi * kp * nb;
        const WT* vt = VT + xi * cp * nb;
        WT* du = dU + xi * kp * cp;
        for (mn_idx c0 = 0; c0 < cp; c0 += nr)
            for (mn_idx k0 = 0; k0 < kp; k0 += mr) {
                if (mr == mn_gemm_mr())
                    WCAT(mn_kernel_, WS)(cnt, gt + k0 * nb, vt + c0 * nb, du + k0 * cp + c0,
                                         cp, 1);
                else
                    WCAT(mn_kernel_short_, WS)(cnt, gt + k0 * nb, vt + c0 * nb,
                                               du + k0 * cp + c0, cp, 1);
            }
    }
}

/* dw[k, c] (K, C, 3, 3) = G^T (sum of the nt thread sums dU, each per items apart) G, for
 * the filters k0..k1. */
static void WN(wino_wgrad_out)(const WT* dU, int nt, mn_idx per, mn_idx kp, mn_idx cp,
                               mn_idx K, mn_idx C, mn_idx k0, mn_idx k1, WT* dw)
{
    const WT q = (WT)1 / 4, s6 = (WT)1 / 6, s12 = (WT)1 / 12, s24 = (WT)1 / 24;
    (void)K;
    for (mn_idx k = k0; k < k1; k++)
        for (mn_idx c = 0; c < C; c++) {
            WT z[36], t[18];
            for (int xi = 0; xi < 36; xi++) {
                const WT* s = dU + xi * kp * cp + k * cp + c;
                WT acc = 0;
                for (int i = 0; i < nt; i++) acc += s[i * per];
                z[xi] = acc;
            }
            for (int b = 0; b < 6; b++) {   /* t = G^T z (3x6), column b */
                WT z0 = z[b], z1 = z[6 + b], z2 = z[12 + b], z3 = z[18 + b], z4 = z[24 + b],
                   z5 = z[30 + b];
                t[0 * 6 + b] = z0 * q - (z1 + z2) * s6 + (z3 + z4) * s24;
                t[1 * 6 + b] = (z2 - z1) * s6 + (z3 - z4) * s12;
                t[2 * 6 + b] = (z3 + z4 - z1 - z2) * s6 + z5;
            }
            WT* o = dw + (k * C + c) * 9;
            for (int a = 0; a < 3; a++) {   /* o = t G (3x3), row a */
                WT z0 = t[a * 6], z1 = t[a * 6 + 1], z2 = t[a * 6 + 2], z3 = t[a * 6 + 3],
                   z4 = t[a * 6 + 4], z5 = t[a * 6 + 5];
                o[a * 3 + 0] = z0 * q - (z1 + z2) * s6 + (z3 + z4) * s24;
                o[a * 3 + 1] = (z2 - z1) * s6 + (z3 - z4) * s12;
                o[a * 3 + 2] = (z3 + z4 - z1 - z2) * s6 + z5;
            }
        }
}

#undef WL
#undef WN
