/* Winograd F(2x2, 5x5) with channels in the vectors (float32; winograd.forward_cl).
 *
 * The tile-major F(2x2, 5x5) (wino_block) runs its vectors across tiles: every tile's
 * 6x6 patch is gathered position by position, 2 pixels apart, and every 2x2 output
 * scattered back pixel by pixel. At 16-32 channels those moves cost more than the 36
 * GEMMs (MNIST's 100x16x14x14 -> 32: gather 36%, scatter 16%, GEMM 21% of its time).
 * Here the vectors run across channels instead. One work item is a band of tile rows
 * of one image, taken chunk by chunk of mt tiles (row by row; the last chunk's slots
 * past the band are zero, their outputs dropped):
 *   xp[y][x][CP]   the band's zero-padded input rows, channels last (lanes c >= C zero):
 *                  a transpose of the image's rows in 16 x 16 register blocks
 *   V[xi][j][CP]   B^T d B of the chunk's tiles: 36 whole-vector loads from xp a tile
 *   S[a][s][j][2L] V[xi] (tiles x C) @ U[xi] (C x KP), 2 filter vectors at a time: each
 *                  tile's channel value broadcast against the filters, the accumulators
 *                  in registers, folded at once into the first half of the output
 *                  transform (A^T m: 12 sums for 36 products), so V and S stay in L1
 *   O[p][KP]       the second half (s A) + bias (max(0, .) with relu): the band's output
 *                  pixels, filters last, then transposed into out's K planes
 * U[xi][panel][c][L] holds G g G^T of the filters (wino_filters5 with L-row panels).
 * CP and KP are C and K rounded up to the lanes L of a vector. Tried: the six products
 * of a transform column summed in registers (4 tiles x 2 vectors, 8 accumulators, no
 * fold through memory) ran 1.1-1.25x this kernel's time on MNIST's conv2 (Xeon model
 * 207), the accumulators' latency exposed over a 16-channel reduction. */
#ifndef MN_WINOGRAD5_CL_H
#define MN_WINOGRAD5_CL_H

#if defined(__AVX512F__)
#define WCL_VBYTES 64
#define WCL_MT 7    /* tiles a chunk (a micro-kernel call): 14 accumulators */
#elif defined(__AVX__)
#define WCL_VBYTES 32
#define WCL_MT 6    /* 12 accumulators of 16 ymm */
#else
#define WCL_VBYTES 16
#define WCL_MT 6
#endif
#define WCL_L ((int)(WCL_VBYTES / 4))
typedef float wcl_v __attribute__((vector_size(WCL_VBYTES), aligned(4)));
typedef int wcl_iv __attribute__((vector_size(WCL_VBYTES), aligned(4)));

typedef struct wcl_geom {
    mn_idx N, C, H, W, K, OH, OW, ph, pw;
    mn_idx th, tw;    /* 2x2 tiles down and across */
    mn_idx CP, KP;    /* C and K rounded up to WCL_L */
    mn_idx rows;      /* tile rows a band */
    mn_idx mt;        /* tiles a chunk: WCL_MT, or 2 WCL_MT where KP is one vector */
    mn_idx xw;        /* xp's width: 2 * tw + 4 */
} wcl_geom;

static inline int wcl_lanes(void) { return WCL_L; }
static inline int wcl_mt(void) { return WCL_MT; }

/* dst[i * di + j] = src[j * sj + i] for i < ni, j < nj: 16 x 16 blocks through registers
 * (_tr16.h), the edges value by value. */
static void wcl_transpose(const float* src, mn_idx sj, float* restrict dst, mn_idx di,
                          mn_idx ni, mn_idx nj)
{
    mn_idx i0 = 0, j0 = 0;
    for (; i0 + 16 <= ni; i0 += 16) {
        for (j0 = 0; j0 + 16 <= nj; j0 += 16) {
            mn_tr16f r[16];
            for (int j = 0; j < 16; j++) memcpy(&r[j], src + (j0 + j) * sj + i0, 64);
            mn_tr16_f32(r);
            for (int i = 0; i < 16; i++) memcpy(dst + (i0 + i) * di + j0, &r[i], 64);
        }
        for (mn_idx i = i0; i < i0 + 16; i++)
            for (mn_idx j = j0; j < nj; j++) dst[i * di + j] = src[j * sj + i];
    }
    for (mn_idx i = i0; i < ni; i++)
        for (mn_idx j = 0; j < nj; j++) dst[i * di + j] = src[j * sj + i];
}

/* The band's padded input rows (tile rows ty0..ty0 + nrow): xp[y][x][CP] = image row
 * 2 ty0 + y - ph, column x - pw, zero outside the image and in lanes c >= C. tmp holds
 * the image rows transposed (pixels x CP). */
static void wcl_rows_in(const wcl_geom* g, const float* x, mn_idx n, mn_idx ty0, mn_idx nrow,
                        float* restrict xp, float* restrict tmp)
{
    mn_idx CP = g->CP, xw = g->xw, yp0 = 2 * ty0, yp1 = yp0 + 2 * nrow + 4;
    mn_idx ya = yp0 - g->ph, yb = yp1 - g->ph;
    if (ya < 0) ya = 0;
    if (yb > g->H) yb = g->H;
    size_t row = (size_t)xw * CP * sizeof(float);
    if (yb <= ya) {
        memset(xp, 0, (size_t)(yp1 - yp0) * row);
        return;
    }
    /* zero only what the image rows leave: the rows above and below, and each image
     * row's padding columns */
    mn_idx W = g->W, pix = (yb - ya) * W, r0 = ya + g->ph - yp0, r1 = yb + g->ph - yp0;
    memset(xp, 0, (size_t)r0 * row);
    memset(xp + r1 * xw * CP, 0, (size_t)(yp1 - yp0 - r1) * row);
    for (mn_idx r = r0; r < r1; r++) {
        memset(xp + r * xw * CP, 0, (size_t)g->pw * CP * sizeof(float));
        memset(xp + (r * xw + g->pw + W) * CP, 0, (size_t)(xw - g->pw - W) * CP * sizeof(float));
    }
    if (g->C < CP)
        memset(tmp, 0, (size_t)pix * CP * sizeof(float));
    wcl_transpose(x + (n * g->C * g->H + ya) * W, g->H * W, tmp, CP, pix, g->C);
    for (mn_idx y = ya; y < yb; y++)
        memcpy(xp + ((y + g->ph - yp0) * xw + g->pw) * CP, tmp + (y - ya) * W * CP,
               (size_t)W * CP * sizeof(float));
}

/* B^T d B of the band's tiles t0 + j, j < slots (zero past its T tiles), into V: tile j's
 * transform position xi at V + j ts + xi vs (the forward: [xi][j][CP], the weight
 * gradient: [j][xi][CP]). */
static void wcl_tiles_in(const wcl_geom* g, const float* xp, mn_idx t0, mn_idx T,
                         mn_idx slots, mn_idx ts, mn_idx vs, float* restrict V)
{
    mn_idx CP = g->CP, xw = g->xw, tw = g->tw;
    for (mn_idx j = 0; j < slots; j++) {
        mn_idx t = t0 + j;
        if (t >= T) {
            for (int xi = 0; xi < 36; xi++) memset(V + xi * vs + j * ts, 0, CP * sizeof(float));
            continue;
        }
        const float* p = xp + (2 * (t / tw) * xw + 2 * (t % tw)) * CP;
        for (mn_idx cv = 0; cv < CP; cv += WCL_L) {
            wcl_v u[36];
            for (int s = 0; s < 6; s++) {   /* u = B^T d, column s */
#define WCL_D(r) (*(const wcl_v*)(p + ((r) * xw + s) * CP + cv))
                WINO_BT(u + s, 6, WCL_D(0), WCL_D(1), WCL_D(2), WCL_D(3), WCL_D(4), WCL_D(5));
#undef WCL_D
            }
            float* v = V + j * ts + cv;
            for (int r = 0; r < 6; r++) {   /* v = u B, row r */
                wcl_v o[6];
                WINO_BT(o, 1, u[r * 6], u[r * 6 + 1], u[r * 6 + 2], u[r * 6 + 3], u[r * 6 + 4],
                       u[r * 6 + 5]);
                for (int q = 0; q < 6; q++) *(wcl_v*)(v + (r * 6 + q) * vs) = o[q];
            }
        }
    }
}

/* One transform position xi = 6 r + s of the chunk: the product V[xi] (WCL_MT tiles x C)
 * @ U[xi] (C x NV vectors, panels ps apart), accumulated in registers, then folded into
 * the first half of the output transform, S_a[s] = sum over r of A^T[a][r] M[6 r + s]
 * (A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 1]): s0 and s1 (rows ss apart) are set at the first
 * r that reaches them (r = 0 and r = 1) and added to after; r = 5 leaves s0 alone. So the
 * 36 products of a tile never leave L1 (12 sums against 36 products a filter vector). */
#define WCL_KERNEL(NAME, MT, NV, VS)                                                \
static void NAME(mn_idx C, const float* restrict v, mn_idx vstride, const float* restrict u, \
                 mn_idx ps, float* restrict s0, float* restrict s1, int r)           \
{                                                                                   \
    wcl_v acc[MT][NV];                                                          \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MT; i++)                                                \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) acc[i][q] = (wcl_v){0};                        \
    for (mn_idx c = 0; c < C; c++) {                                                \
        wcl_v b[NV];                                                                \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) b[q] = *(const wcl_v*)(u + q * ps + c * WCL_L); \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < MT; i++) {                                          \
            float a = v[i * ((VS) ? (VS) : vstride) + c];                           \
            _Pragma("GCC unroll 2")                                                 \
            for (int q = 0; q < NV; q++) acc[i][q] += a * b[q];                     \
        }                                                                           \
    }                                                                               \
    const float a1 = r == 1 ? 1.0f : r == 2 ? -1.0f : r == 3 ? 2.0f : r == 4 ? -2.0f : 1.0f; \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MT; i++)                                                \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) {                                              \
            wcl_v* p0 = (wcl_v*)(s0 + i * WCL_KV + q * WCL_L);                      \
            wcl_v* p1 = (wcl_v*)(s1 + i * WCL_KV + q * WCL_L);                      \
            if (r == 0) *p0 = acc[i][q];                                            \
            else if (r < 5) *p0 += acc[i][q];                                       \
            if (r == 1) *p1 = acc[i][q];                                            \
            else if (r > 1) *p1 += a1 * acc[i][q];                                  \
        }                                                                           \
}
/* the sums' rows: 2 vectors of filters a tile (a chunk's filter vectors run in pairs) */
#define WCL_KV (2 * WCL_L)
WCL_KERNEL(wcl_kernel_2, WCL_MT, 2, 0)
WCL_KERNEL(wcl_kernel_1, WCL_MT, 1, 0)
WCL_KERNEL(wcl_kernel_1w, 2 * WCL_MT, 1, 0)   /* KP one vector: twice the tiles */
WCL_KERNEL(wcl_kernel_1w32, 2 * WCL_MT, 1, 32)
#undef WCL_KERNEL

/* The chunk's outputs for filters k0..k0 + 2 L: S (12 sums, [a][s][tile][2 L]) through the
 * second half of the output transform, plus the bias (max(0, .) with relu; NaN stays
 * NaN), into O[p][KP + k0], p the band's output pixel (row 2 (t / tw) + a, column
 * 2 (t % tw) + b), clipped at the output's edges (rows past orow). */
static void wcl_tiles_out(const wcl_geom* g, const float* S, const float* bias, mn_idx t0,
                          mn_idx T, mn_idx orow, mn_idx k0, int relu, float* restrict O)
{
    mn_idx KP = g->KP, tw = g->tw, OW = g->OW, ss = g->mt * WCL_KV;
    int nv = KP - k0 >= WCL_KV ? 2 : 1;
    for (int j = 0; j < g->mt && t0 + j < T; j++) {
        mn_idx t = t0 + j, y0 = 2 * (t / tw), x0 = 2 * (t % tw);
        int rows = orow - y0 < 2 ? (int)(orow - y0) : 2, cols = OW - x0 < 2 ? (int)(OW - x0) : 2;
        for (int q = 0; q < nv; q++) {
            wcl_v b = *(const wcl_v*)(bias + k0 + q * WCL_L);
            for (int a = 0; a < rows; a++) {   /* o = s A (2x2), row a */
#define WCL_Z(c) (*(const wcl_v*)(S + (a * 6 + (c)) * ss + j * WCL_KV + q * WCL_L))
                wcl_v z0 = WCL_Z(0), z1 = WCL_Z(1), z2 = WCL_Z(2), z3 = WCL_Z(3),
                      z4 = WCL_Z(4), z5 = WCL_Z(5);
#undef WCL_Z
                wcl_v o[2] = {z0 + z1 + z2 + z3 + z4 + b, z1 - z2 + 2 * (z3 - z4) + z5 + b};
                for (int c = 0; c < cols; c++) {
                    if (relu)
                        o[c] = (wcl_v)((wcl_iv)o[c] & ~(wcl_iv)(o[c] < 0));
                    *(wcl_v*)(O + ((y0 + a) * OW + x0 + c) * KP + k0 + q * WCL_L) = o[c];
                }
            }
        }
    }
}

/* One work item: tile rows ty0..ty0 + nrow of image n, into out (N, K, OH, OW), chunk by
 * chunk of WCL_MT tiles: V (36 x WCL_MT x CP) and the sums S (12 x WCL_MT x 2 L) stay in
 * L1 while U streams from L2. ws: the calling thread's workspace (wcl_ws_items), bias:
 * KP values (zero past K). */
static void wcl_band(const wcl_geom* g, const float* x, const float* U, const float* bias,
                     float* out, mn_idx n, mn_idx ty0, mn_idx nrow, int relu, float* ws)
{
    mn_idx C = g->C, CP = g->CP, KP = g->KP, xw = g->xw, ps = C * WCL_L;
    mn_idx T = nrow * g->tw, mt = g->mt, ss = mt * WCL_KV;
    float* xp = ws;
    float* tmp = xp + (2 * g->rows + 4) * xw * CP;
    float* V = tmp + (2 * g->rows + 4) * g->W * CP;
    float* S = V + 36 * mt * CP;
    float* O = S + 12 * ss;
    mn_idx oy0 = 2 * ty0, orow = g->OH - oy0 < 2 * nrow ? g->OH - oy0 : 2 * nrow;
    wcl_rows_in(g, x, n, ty0, nrow, xp, tmp);
    for (mn_idx t0 = 0; t0 < T; t0 += mt) {
        wcl_tiles_in(g, xp, t0, T, mt, CP, mt * CP, V);
        for (mn_idx k0 = 0; k0 < KP; k0 += WCL_KV) {
            for (int xi = 0; xi < 36; xi++) {
                const float* u = U + xi * KP * C + k0 / WCL_L * ps;
                const float* v = V + xi * mt * CP;
                float* s0 = S + (xi % 6) * ss;
                if (mt != WCL_MT && CP == 32)
                    wcl_kernel_1w32(C, v, CP, u, ps, s0, s0 + 6 * ss, xi / 6);
                else if (mt != WCL_MT)
                    wcl_kernel_1w(C, v, CP, u, ps, s0, s0 + 6 * ss, xi / 6);
                else if (KP - k0 >= WCL_KV)
                    wcl_kernel_2(C, v, CP, u, ps, s0, s0 + 6 * ss, xi / 6);
                else
                    wcl_kernel_1(C, v, CP, u, ps, s0, s0 + 6 * ss, xi / 6);
            }
            wcl_tiles_out(g, S, bias, t0, T, orow, k0, relu, O);
        }
    }
    wcl_transpose(O, KP, out + (n * g->K * g->OH + oy0) * g->OW, g->OH * g->OW, g->K,
                  orow * g->OW);
}

/* Items of one thread's workspace (wcl_band's parts). */
static inline mn_idx wcl_ws_items(const wcl_geom* g)
{
    return (2 * g->rows + 4) * (g->xw + g->W) * g->CP + 36 * g->mt * g->CP
           + 12 * g->mt * WCL_KV + 2 * g->rows * g->OW * g->KP;
}

/* ---- the weight gradient: dW[k, c] = G^T [sum over tiles (A dY_k A^T) .* (B^T d_c B)] G,
 * the sums dU[xi][c][KP] per thread (wino_wgrad_out5, with the channel and filter axes
 * swapped, adds the threads' and transforms them back). One work item is a band of tile
 * rows of one image, all its tiles at once, tile-major (a tile's transforms side by side):
 *   V[t][xi][CP]   B^T d B (wcl_tiles_in on the band's padded rows)
 *   Y[t][r][b][KP] A y of each tile's 2x2 output-grad block y (zero past the edges): the
 *                  first half of A y A^T, 12 vectors where the whole takes 36
 * then per xi = 6 r + s, dU[xi] += V[xi]^T (A y A^T)[xi]: the second half (y's row r at
 * point s, one add or FMA a vector) taken as the products run, each tile's channel value
 * broadcast against vectors of filters, the sums over the band's tiles in registers.
 * (Storing all 36 of A y A^T, to broadcast its filter values against vectors of
 * channels, spent a fifth of the weight gradient's time on the stores: 226 KB an MNIST
 * conv2 image.) */

/* Y[t] of the band's T tiles (12 KP items a tile) from gp[p][KP], the band's output-grad
 * pixels, filters last (p = row * OW + column; rows from orow on are past the output). */
static void wcl_ay(const wcl_geom* g, const float* gp, mn_idx T, mn_idx orow,
                   float* restrict Y)
{
    mn_idx KP = g->KP, tw = g->tw, OW = g->OW;
    for (mn_idx t = 0; t < T; t++) {
        mn_idx y0 = 2 * (t / tw), x0 = 2 * (t % tw);
        int rows = orow - y0 < 2 ? (int)(orow - y0) : 2, cols = OW - x0 < 2 ? (int)(OW - x0) : 2;
        const float* p = gp + (y0 * OW + x0) * KP;
        float* o = Y + t * 12 * KP;
        for (mn_idx kv = 0; kv < KP; kv += WCL_L) {
            /* y's four values, zero past the output's edges (a tile holds (0, 0) always) */
            wcl_v y00 = *(const wcl_v*)(p + kv), y01 = {0}, y10 = {0}, y11 = {0};
            if (cols > 1)
                y01 = *(const wcl_v*)(p + KP + kv);
            if (rows > 1) {
                y10 = *(const wcl_v*)(p + OW * KP + kv);
                if (cols > 1)
                    y11 = *(const wcl_v*)(p + (OW + 1) * KP + kv);
            }
            /* m = A y (6x2): y's values at the points, column by column */
            wcl_v m[12] = {y00, y01, y00 + y10, y01 + y11, y00 - y10, y01 - y11,
                           y00 + 2 * y10, y01 + 2 * y11, y00 - 2 * y10, y01 - 2 * y11,
                           y10, y11};
            for (int q = 0; q < 12; q++) *(wcl_v*)(o + q * KP + kv) = m[q];
        }
    }
}

/* du[i][q L ..] += sum over t < T of v[t][i] * (m[t] A^T)[S][q L ..], the filter values
 * of point S (a constant: (1, 0), (1, 1), (1, -1), (1, 2), (1, -2), (0, 1)) from m's two
 * columns (at m0 + t mstride and mc on): CB channels (rows ds apart) by NV vectors of
 * filters, the sums over the tiles in registers. */
#define WCL_WKERNEL(NAME, CB, NV, S)                                                \
static void NAME(mn_idx T, const float* restrict m0, mn_idx mc, mn_idx mstride,      \
                 const float* restrict v, mn_idx vstride, float* restrict du, mn_idx ds) \
{                                                                                   \
    wcl_v acc[CB][NV];                                                              \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < CB; i++)                                                    \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) acc[i][q] = (wcl_v){0};                        \
    for (mn_idx t = 0; t < T; t++) {                                                \
        wcl_v b[NV];                                                                \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) {                                              \
            const float* m = m0 + t * mstride + q * WCL_L;                          \
            wcl_v z0 = *(const wcl_v*)m, z1 = *(const wcl_v*)(m + mc);              \
            b[q] = (S) == 0 ? z0 : (S) == 1 ? z0 + z1 : (S) == 2 ? z0 - z1 :          \
                   (S) == 3 ? z0 + 2 * z1 : (S) == 4 ? z0 - 2 * z1 : z1;              \
        }                                                                           \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < CB; i++) {                                              \
            float a = v[t * vstride + i];                                           \
            _Pragma("GCC unroll 2")                                                 \
            for (int q = 0; q < NV; q++) acc[i][q] += a * b[q];                     \
        }                                                                           \
    }                                                                               \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < CB; i++)                                                    \
        _Pragma("GCC unroll 2")                                                     \
        for (int q = 0; q < NV; q++) *(wcl_v*)(du + i * ds + q * WCL_L) += acc[i][q]; \
}
#if defined(__AVX512F__)
#define WCL_WACC 16   /* accumulators of the weight-gradient kernels */
#elif defined(__AVX__)
#define WCL_WACC 8
#else
#define WCL_WACC 4
#endif
#define WCL_WKERNELS(S)                                                             \
    WCL_WKERNEL(wcl_wkernel_2_##S, WCL_WACC / 2, 2, S)                              \
    WCL_WKERNEL(wcl_wkernel_1_##S, WCL_WACC, 1, S)
WCL_WKERNELS(0) WCL_WKERNELS(1) WCL_WKERNELS(2) WCL_WKERNELS(3) WCL_WKERNELS(4)
WCL_WKERNELS(5)
#undef WCL_WKERNELS
#undef WCL_WKERNEL

typedef void (*wcl_wkernel_fn)(mn_idx, const float*, mn_idx, mn_idx, const float*, mn_idx,
                               float*, mn_idx);
static const wcl_wkernel_fn wcl_wkernels_2[6] = {wcl_wkernel_2_0, wcl_wkernel_2_1,
    wcl_wkernel_2_2, wcl_wkernel_2_3, wcl_wkernel_2_4, wcl_wkernel_2_5};
static const wcl_wkernel_fn wcl_wkernels_1[6] = {wcl_wkernel_1_0, wcl_wkernel_1_1,
    wcl_wkernel_1_2, wcl_wkernel_1_3, wcl_wkernel_1_4, wcl_wkernel_1_5};

/* One work item of the weight gradient: tile rows ty0..ty0 + nrow of image n, added into
 * dU (this thread's sums); ws: the rest of this thread's workspace (wcl_wgrad_items). */
static void wcl_wgrad_band(const wcl_geom* g, const float* x, const float* dy, mn_idx n,
                           mn_idx ty0, mn_idx nrow, float* dU, float* ws)
{
    mn_idx CP = g->CP, KP = g->KP, tw = g->tw, OW = g->OW, slots = g->rows * tw;
    mn_idx T = nrow * tw, oy0 = 2 * ty0, orow = g->OH - oy0 < 2 * nrow ? g->OH - oy0 : 2 * nrow;
    float* xp = ws;
    float* tmp = xp + (2 * g->rows + 4) * g->xw * CP;
    float* gp = tmp + (2 * g->rows + 4) * g->W * CP;
    float* V = gp + 2 * g->rows * OW * KP;
    float* Y = V + 36 * slots * CP;
    wcl_rows_in(g, x, n, ty0, nrow, xp, tmp);
    wcl_tiles_in(g, xp, 0, T, slots, 36 * CP, CP, V);
    if (g->K < KP)
        memset(gp, 0, (size_t)orow * OW * KP * sizeof(float));
    wcl_transpose(dy + (n * g->K * g->OH + oy0) * OW, g->OH * OW, gp, KP, orow * OW, g->K);
    wcl_ay(g, gp, T, orow, Y);
    for (int xi = 0; xi < 36; xi++) {
        int r = xi / 6, s = xi % 6;
        const float* vx = V + xi * CP;
        const float* my = Y + 2 * r * KP;
        float* dx = dU + xi * CP * KP;
        for (mn_idx k0 = 0; k0 < KP; k0 += 2 * WCL_L) {
            if (KP - k0 >= 2 * WCL_L) {
                for (mn_idx c0 = 0; c0 < CP; c0 += WCL_WACC / 2)
                    wcl_wkernels_2[s](T, my + k0, KP, 12 * KP, vx + c0, 36 * CP,
                                      dx + c0 * KP + k0, KP);
            } else {
                for (mn_idx c0 = 0; c0 < CP; c0 += WCL_WACC)
                    wcl_wkernels_1[s](T, my + k0, KP, 12 * KP, vx + c0, 36 * CP,
                                      dx + c0 * KP + k0, KP);
            }
        }
    }
}

/* Items of one thread's weight-gradient workspace: its sums dU, then wcl_wgrad_band's. */
static inline mn_idx wcl_wgrad_items(const wcl_geom* g)
{
    mn_idx slots = g->rows * g->tw;
    return 36 * g->KP * g->CP + (2 * g->rows + 4) * (g->xw + g->W) * g->CP
           + 2 * g->rows * g->OW * g->KP + slots * (36 * g->CP + 12 * g->KP);
}
#endif
