/* The bf16 GEMM on AMX tiles (Intel AMX-TILE + AMX-BF16: Sapphire Rapids and later):
 * the same contract as _bf16.h's kernels (float32 in, inputs rounded to bfloat16 while
 * packed, float32 sums, float32 out), for the avx512bf16 kernel set when the compiler
 * takes -mamx-tile -mamx-bf16 (setup.py defines MN_AMX then). Whether the CPU has AMX
 * and the OS lets this process use it is decided at run time (_isa.pyx); nothing here
 * runs before that.
 *
 * One tdpbf16ps multiplies a 16 x 32 bf16 tile of A by a 32 x 16 tile of B into a
 * 16 x 16 float32 tile of C: 8192 multiply-adds, against 32 for a vdpbf16ps. The micro-
 * kernel holds a 32 x 32 block of C in four tiles (0-3) and, per step of 32 k, loads two
 * A tiles (4, 5) and two B tiles (6, 7): all eight tile registers.
 *
 * Packed panels, per step s of 32 k (kc rounded up to a multiple of 32, zeros past kc
 * and past the last row or column), 2 KB each:
 *   A panel (32 rows): rows 0-15 then 16-31, each row the 32 bf16 of k = 32s..32s+31
 *     in order (one tile row: 64 bytes);
 *   B panel (32 columns): columns 0-15 then 16-31, each as 16 tile rows q (the k pair
 *     32s + 2q, 32s + 2q + 1), a row holding per column the pair (B[2q, j], B[2q+1, j])
 *     as one 32-bit lane: the pair layout tdpbf16ps reads.
 * The rounding is vcvtne2ps2bf16 (nearest even; NaN stays NaN). It reads float32
 * denormals as zero; tdpbf16ps reads bf16 denormals as zero anyway (and flushes denormal
 * sums), so the only inputs this path loses beyond the other paths' are the float32
 * denormals within 2^-134 of 2^-126 (bits 0x007f8000-0x007fffff), which round up to the
 * normal 2^-126 there and to zero here. */
#ifndef MN_AMX_H
#define MN_AMX_H
#if defined(MN_AMX) && defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define MN_AMX_OK 1
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "_tr16.h"
#include "_isa.h"   /* mn_amx_conv */

#define MN_AMX_MR 32
#define MN_AMX_NR 32
#define MN_AMX_KS 32          /* k per step: the bf16 in a 64-byte tile row */
#define MN_AMX_STEP 2048      /* bytes of one step of a panel (two 1 KB tiles) */

typedef int32_t mn_amx_vi __attribute__((vector_size(64)));
MN_DEF_TR16(mn_amx_tr16, mn_amx_vi, mn_amx_vi)

/* The tile configuration (palette 1): eight tiles of 16 rows x 64 bytes. Each thread
 * loads it before its first tile instruction (mn_amx_begin) and releases the tiles
 * after its last (mn_amx_end): a thread holding tiles makes every context switch save
 * 8 KB more. */
typedef struct __attribute__((packed)) mn_amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} mn_amx_cfg;

/* A constant in memory, not a local: gcc's _tile_loadconfig tells the compiler that it
 * reads 8 bytes, and the stores to a local's tile sizes were dropped as dead. */
static const mn_amx_cfg mn_amx_config = {
    1, 0, {0},
    {64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0},
    {16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0}
};

static void mn_amx_begin(void) { _tile_loadconfig(&mn_amx_config); }

static void mn_amx_end(void) { _tile_release(); }

/* 32 bf16 of x[0..n) (n <= 32, zero past n) in k order: x[2q] the low half of lane q. */
static inline __m512i mn_amx_row32(const float* x, mn_idx n)
{
    __m512 lo, hi;
    if (n >= 32) {
        lo = _mm512_loadu_ps(x);
        hi = _mm512_loadu_ps(x + 16);
    } else {
        lo = _mm512_maskz_loadu_ps(n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1), x);
        hi = n > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (n - 16)) - 1), x + 16)
                    : _mm512_setzero_ps();
    }
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* 16 pairs (lo[i], hi[i]) as 32-bit lanes of bf16: lo the low half. */
static inline __m512i mn_amx_pairs(__m512 lo, __m512 hi)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                         25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                                         19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* Tile row q of a pair layout: (x[2q * st], x[(2q + 1) * st]) for 16 lanes (m: the live
 * ones; zeros past kn rows). */
static inline __m512i mn_amx_pair_rows(const float* x, mn_idx st, __mmask16 m, mn_idx kn, int q)
{
    __m512 lo = 2 * q < kn ? _mm512_maskz_loadu_ps(m, x + 2 * q * st) : _mm512_setzero_ps();
    __m512 hi = 2 * q + 1 < kn ? _mm512_maskz_loadu_ps(m, x + (2 * q + 1) * st)
                               : _mm512_setzero_ps();
    return mn_amx_pairs(lo, hi);
}

/* v (16 vectors of 16 32-bit lanes) transposed and stored as 16 rows of 64 bytes. */
static inline void mn_amx_tr_store(mn_amx_vi* v, uint32_t* dst)
{
    mn_amx_tr16(v);
    for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + 16 * i, (__m512i)v[i]);
}

static inline float mn_amx_at(const float* X, mn_idx rs, mn_idx cs, mn_idx i, mn_idx p,
                              mn_idx rows, mn_idx kc)
{
    return i < rows && p < kc ? X[i * rs + p * cs] : 0.0f;
}

/* One 16-row half of an A panel's step: `rows` rows (zeros past them) and kn k (zeros
 * past 32 or kn) from A, read in columns (A(i, p) = A[i + p * cs]): 32 vectors of 16 rows,
 * paired along k and transposed so that each row holds its own k. */
static void mn_amx_pack_a_cols(const float* A, mn_idx cs, mn_idx rows, mn_idx kn,
                               uint32_t* dst)
{
    if (rows <= 0) {   /* the panel's second half past the last row */
        memset(dst, 0, 1024);
        return;
    }
    __mmask16 m = rows >= 16 ? 0xffff : (__mmask16)((1u << rows) - 1);
    mn_amx_vi v[16];
    for (int q = 0; q < 16; q++) v[q] = (mn_amx_vi)mn_amx_pair_rows(A, cs, m, kn, q);
    mn_amx_tr_store(v, dst);
}

/* All panels of an mc x kc block of A (A(i, p) = A[i * rs + p * cs]). */
static void mn_amx_pack_a(const float* __restrict A, mn_idx rs, mn_idx cs, mn_idx mc,
                          mn_idx kc, void* __restrict outv)
{
    mn_idx nk = (kc + MN_AMX_KS - 1) / MN_AMX_KS, npan = (mc + MN_AMX_MR - 1) / MN_AMX_MR;
    for (mn_idx panel = 0; panel < npan; panel++) {
        char* out = (char*)outv + panel * nk * MN_AMX_STEP;
        mn_idx i0 = panel * MN_AMX_MR, rows = mc - i0;
        if (rows > MN_AMX_MR) rows = MN_AMX_MR;
        if (cs == 1) {   /* rows of A are runs of k: a tile row each, read in order */
            for (mn_idx i = 0; i < MN_AMX_MR; i++) {
                const float* a = A + (i0 + i) * rs;
                for (mn_idx s = 0; s < nk; s++) {
                    __m512i* d = (__m512i*)(out + s * MN_AMX_STEP + i * 64);
                    _mm512_storeu_si512(d, i < rows ? mn_amx_row32(a + s * MN_AMX_KS,
                                                                   kc - s * MN_AMX_KS)
                                                    : _mm512_setzero_si512());
                }
            }
        } else if (rs == 1) {   /* columns of A are runs of rows: transposed in registers */
            for (mn_idx s = 0; s < nk; s++)
                for (mn_idx h = 0; h < 2; h++)
                    mn_amx_pack_a_cols(A + i0 + 16 * h + s * MN_AMX_KS * cs, cs,
                                       rows - 16 * h, kc - s * MN_AMX_KS,
                                       (uint32_t*)(out + s * MN_AMX_STEP + h * 1024));
        } else {
            for (mn_idx s = 0; s < nk; s++)
                for (mn_idx i = 0; i < MN_AMX_MR; i++) {
                    float x[32];
                    for (int k = 0; k < 32; k++)
                        x[k] = mn_amx_at(A + i0 * rs, rs, cs, i, s * MN_AMX_KS + k, rows, kc);
                    _mm512_storeu_si512(out + s * MN_AMX_STEP + i * 64, mn_amx_row32(x, 32));
                }
        }
    }
}

/* One 16-column tile of a B panel's step: `cols` columns (zeros past them) and kn k from
 * B, read in columns (B(p, j) = B[p + j * cs]): each column's 32 k are one run, paired in
 * place; the 16 columns are transposed into the 16 pair rows. */
static void mn_amx_pack_b_cols(const float* B, mn_idx cs, mn_idx cols, mn_idx kn,
                               uint32_t* dst)
{
    mn_amx_vi v[16];
    for (mn_idx j = 0; j < 16; j++)
        v[j] = j < cols ? (mn_amx_vi)mn_amx_row32(B + j * cs, kn) : (mn_amx_vi){0};
    mn_amx_tr_store(v, dst);
}

/* All panels of a kc x nc block of B (B(p, j) = B[p * rs + j * cs]). */
static void mn_amx_pack_b(const float* __restrict B, mn_idx rs, mn_idx cs, mn_idx kc,
                          mn_idx nc, void* __restrict outv)
{
    mn_idx nk = (kc + MN_AMX_KS - 1) / MN_AMX_KS, npan = (nc + MN_AMX_NR - 1) / MN_AMX_NR;
    for (mn_idx s = 0; s < nk; s++) {
        mn_idx kn = kc - s * MN_AMX_KS;   /* k left from this step on */
        for (mn_idx panel = 0; panel < npan; panel++) {
            char* out = (char*)outv + panel * nk * MN_AMX_STEP + s * MN_AMX_STEP;
            for (mn_idx h = 0; h < 2; h++) {
                mn_idx j0 = panel * MN_AMX_NR + 16 * h, cols = nc - j0;
                uint32_t* dst = (uint32_t*)(out + h * 1024);
                const float* b = B + s * MN_AMX_KS * rs + j0 * cs;
                if (cols <= 0) {
                    memset(dst, 0, 1024);
                } else if (cs == 1) {   /* two rows of B per tile row, 16 columns each */
                    __mmask16 m = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
                    for (int q = 0; q < 16; q++)
                        _mm512_storeu_si512(dst + 16 * q, mn_amx_pair_rows(b, rs, m, kn, q));
                } else if (rs == 1) {
                    mn_amx_pack_b_cols(b, cs, cols, kn, dst);
                } else {
                    for (int q = 0; q < 16; q++) {
                        float lo[16], hi[16];
                        for (int j = 0; j < 16; j++) {
                            lo[j] = mn_amx_at(b, rs, cs, 2 * q, j, kn, cols);
                            hi[j] = mn_amx_at(b, rs, cs, 2 * q + 1, j, kn, cols);
                        }
                        _mm512_storeu_si512(dst + 16 * q,
                                            mn_amx_pairs(_mm512_loadu_ps(lo), _mm512_loadu_ps(hi)));
                    }
                }
            }
        }
    }
}

/* C[32 x 32] (+)= A_panel * B_panel over kc (whole steps of 32 k; the padding is zeros).
 * The calling thread has loaded the tile configuration (mn_amx_begin). */
static void mn_amx_kernel(mn_idx kc, const void* Av, const void* Bv, float* C, mn_idx ldc,
                          int accumulate)
{
    const char* A = (const char*)Av;
    const char* B = (const char*)Bv;
    mn_idx nk = (kc + MN_AMX_KS - 1) / MN_AMX_KS, ldb = ldc * 4;
    if (accumulate) {
        _tile_loadd(0, C, ldb);
        _tile_loadd(1, C + 16, ldb);
        _tile_loadd(2, C + 16 * ldc, ldb);
        _tile_loadd(3, C + 16 * ldc + 16, ldb);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (mn_idx s = 0; s < nk; s++) {
        const char* a = A + s * MN_AMX_STEP;
        const char* b = B + s * MN_AMX_STEP;
        _tile_loadd(4, a, 64);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + 1024, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a + 1024, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, C, ldb);
    _tile_stored(1, C + 16, ldb);
    _tile_stored(2, C + 16 * ldc, ldb);
    _tile_stored(3, C + 16 * ldc + 16, ldb);
}

/* Convolutions (stride 1, no dilation, one group) on the same tiles, without im2col.
 * The input is copied once to bf16, channel pairs interleaved and zero-padded:
 * xb[n][q][Hp][Wp][2] (q < Qp pairs; Hp holds one row more than the padded image, read
 * by the phantom second row when OH is 1: an odd OH's last pair overlaps OH - 2 instead).
 * For tap (r, s) the B tile of an output row oh, columns ow0.., is then ONE tileloadd at
 * xb[n][q0][oh + r][ow0 + s] with
 * a plane's stride: rows the step's channel pairs, columns cw pixels. The weights are
 * wb[tap][step][k][16 pairs][2]: an A tile is 16 output channels of one tap and step.
 * Four C tiles (2 output rows x 2 x 16 output channels) sum over taps and steps and are
 * stored straight into y (N, K, OH, OW). Edges overlap instead of shrinking a tile (one
 * tile configuration a layer): the last chunk of columns starts at OW - cw, the last 32
 * channels at K - 32 (or 0 and K - 16 when K < 32), the last row pair at OH - 2; the
 * overlapped outputs are computed twice, to the same bits. Needs K >= 16. */

/* This thread's tiles for a convolution: C (0-3) 16 rows of cbytes, A (4-5) 16 rows of
 * `pairs` k pairs, B (6-7) `pairs` rows of cbytes. */
static void mn_amx_configure(mn_idx pairs, mn_idx cbytes)
{
    mn_amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = t >= 6 ? (uint8_t)pairs : 16;
        cfg.colsb[t] = (uint16_t)(t == 4 || t == 5 ? 4 * pairs : cbytes);
    }
    /* the stores above must reach memory: _tile_loadconfig declares an 8-byte read */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* Images n0..n1 of x (N, C, H, W, compact) to xb. */
static void mn_amx_conv_pack_x(const float* x, const mn_amx_conv* g, void* xbv, mn_idx n0,
                               mn_idx n1)
{
    uint32_t* xb = (uint32_t*)xbv;   /* a pixel's channel pair: one 32-bit lane */
    mn_idx HW = g->H * g->W;
    for (mn_idx n = n0; n < n1; n++)
        for (mn_idx q = 0; q < g->Qp; q++) {
            uint32_t* plane = xb + (n * g->Qp + q) * g->Hp * g->Wp;
            memset(plane, 0, g->Hp * g->Wp * 4);
            if (2 * q >= g->C) continue;
            const float* c0 = x + (n * g->C + 2 * q) * HW;
            const float* c1 = 2 * q + 1 < g->C ? c0 + HW : NULL;
            for (mn_idx h = 0; h < g->H; h++) {
                uint32_t* d = plane + (h + g->ph) * g->Wp + g->pw;
                for (mn_idx w0 = 0; w0 < g->W; w0 += 16) {
                    mn_idx n16 = g->W - w0 < 16 ? g->W - w0 : 16;
                    __mmask16 m = (__mmask16)((1u << n16) - 1);
                    __m512 lo = _mm512_maskz_loadu_ps(m, c0 + h * g->W + w0);
                    __m512 hi = c1 ? _mm512_maskz_loadu_ps(m, c1 + h * g->W + w0)
                                   : _mm512_setzero_ps();
                    _mm512_mask_storeu_epi32(d + w0, m, mn_amx_pairs(lo, hi));
                }
            }
        }
}

/* The weights to wb. flip: w is (C, K, kh, kw), the weight of an input gradient read as
 * the forward weight of the transposed convolution (taps flipped, K and C swapped). */
static void mn_amx_conv_pack_w(const float* w, const mn_amx_conv* g, int flip, void* wbv)
{
    uint16_t* wb = (uint16_t*)wbv;
    mn_idx T = g->kh * g->kw;
    for (mn_idx t = 0; t < T; t++) {
        mn_idx r = t / g->kw, s = t % g->kw;
        for (mn_idx st = 0; st < g->nsteps; st++)
            for (mn_idx k = 0; k < g->K; k++) {
                uint16_t* d = wb + ((t * g->nsteps + st) * g->K + k) * 32;
                for (mn_idx j = 0; j < 32; j++) {
                    mn_idx c = 2 * (st * g->step) + j;   /* pair st*step + j/2, half j%2 */
                    float v = 0.0f;
                    if (j < 2 * g->step && c < g->C)
                        v = flip ? w[((c * g->K + k) * g->kh + g->kh - 1 - r) * g->kw + g->kw - 1 - s]
                                 : w[((k * g->C + c) * g->kh + r) * g->kw + s];
                    d[j] = (uint16_t)mn_bf16_bits(v);
                }
            }
    }
}

/* Work units u0..u1, u = (n * nkb + kb) * nrp + rp: image n, output channels from
 * 32 kb (overlapped at the end), rows 2 rp and 2 rp + 1 (overlapped at the end). */
static void mn_amx_conv_units(const mn_amx_conv* g, const void* xbv, const void* wbv,
                              float* y, mn_idx u0, mn_idx u1)
{
    const uint32_t* xb = (const uint32_t*)xbv;
    const uint16_t* wb = (const uint16_t*)wbv;
    mn_amx_configure(g->step, 4 * g->cw);
    mn_idx plane = g->Hp * g->Wp * 4, ys = g->OH * g->OW * 4, T = g->kh * g->kw;
    for (mn_idx u = u0; u < u1; u++) {
        mn_idx rp = u % g->nrp, kb = (u / g->nrp) % g->nkb, n = u / (g->nrp * g->nkb);
        mn_idx k0 = g->K >= 32 ? (32 * kb < g->K - 32 ? 32 * kb : g->K - 32) : 0;
        mn_idx k1 = g->K >= 32 ? k0 + 16 : g->K - 16;
        mn_idx oh = g->OH >= 2 ? (2 * rp < g->OH - 2 ? 2 * rp : g->OH - 2) : 0;
        for (mn_idx j = 0; j < g->nch; j++) {
            mn_idx ow0 = j * g->cw < g->OW - g->cw ? j * g->cw : g->OW - g->cw;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (mn_idx t = 0; t < T; t++) {
                mn_idx r = t / g->kw, s = t % g->kw;
                for (mn_idx st = 0; st < g->nsteps; st++) {
                    const uint32_t* b = xb + ((n * g->Qp + st * g->step) * g->Hp + oh + r) * g->Wp
                                        + ow0 + s;
                    const uint16_t* a = wb + (t * g->nsteps + st) * g->K * 32;
                    _tile_loadd(6, b, plane);
                    _tile_loadd(4, a + k0 * 32, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(5, a + k1 * 32, 64);
                    _tile_dpbf16ps(1, 5, 6);
                    _tile_loadd(7, b + g->Wp, plane);
                    _tile_dpbf16ps(2, 4, 7);
                    _tile_dpbf16ps(3, 5, 7);
                }
            }
            float* o = y + ((n * g->K + k0) * g->OH + oh) * g->OW + ow0;
            _tile_stored(0, o, ys);
            _tile_stored(1, o + (k1 - k0) * g->OH * g->OW, ys);
            if (g->OH >= 2) {
                _tile_stored(2, o + g->OW, ys);
                _tile_stored(3, o + (k1 - k0) * g->OH * g->OW + g->OW, ys);
            }
        }
    }
    _tile_release();
}

/* The weight gradient dw[k, c, r, s] = sum over images and output pixels of
 * g[n, k, oh, ow] x[n, c, oh + r - ph, ow + s - pw], on the same tiles: the sum over
 * pixels is the tiles' k. A tiles are 16 output channels x pixel pairs of one output row
 * of g, copied to bf16 as gb[n][k][OH][OWg] (rows zero-padded to OWg, whole chunks of
 * wcp pairs); B tiles are pixel pairs x 16 input channels, from the input copied as
 * pixel pairs with the channels innermost, xt[parity][n][Hp][Wt][Cw][2] (then room for
 * 16 padded rows of floats, 2 Wt + 34 each, that the copy is made through), pairs starting
 * at an even padded column (parity 0) or an odd one (parity 1, for odd s). Four C tiles
 * (32 k x 32 c of one tap) add an image's sums to dw[tap][Kw][Cw]. Channels are padded
 * to 16s with zeros (Kw, Cw) rather than overlapped as in the forward pass: overlapping
 * blocks would add their sums twice; a last lone block of 16 runs as both halves of its
 * pair and stores one. Where OW is odd or its pairs do not split into equal chunks, g's
 * rows are padded with zeros that meet real input pixels: an infinite input then gives
 * NaN (0 x inf) in taps that never read it, where float32 kernels give a finite sum. The
 * sums are taken per thread and added in thread order: the last bits depend on the
 * thread count, not on the run. */
static void mn_amx_wgrad_pack_g(const float* gr, const mn_amx_conv* g, void* gbv, mn_idx n0,
                                mn_idx n1)
{
    uint16_t* gb = (uint16_t*)gbv;
    /* rows that need no padding (OWg == OW) are converted as one row of the whole plane,
       in 32-float pieces (one masked conversion per 14-pixel row was 20% of the MNIST
       conv2 gradient's time) */
    int flat = g->OWg == g->OW;
    mn_idx rows = flat ? 1 : g->OH, len = flat ? g->OH * g->OW : g->OW;
    mn_idx dlen = flat ? g->OH * g->OW : g->OWg;
    for (mn_idx n = n0; n < n1; n++)
        for (mn_idx k = 0; k < g->Kw; k++)
            for (mn_idx oh = 0; oh < rows; oh++) {
                const float* src = gr + (n * g->K + k) * g->OH * g->OW + oh * len;
                uint16_t* d = gb + (n * g->Kw + k) * g->OH * g->OWg + oh * dlen;
                for (mn_idx w0 = 0; w0 < dlen; w0 += 32) {
                    mn_idx live = len - w0 > 0 && k < g->K ? len - w0 : 0;
                    mn_idx room = dlen - w0;
                    __m512i v = live > 0 ? mn_amx_row32(src + w0, live) : _mm512_setzero_si512();
                    _mm512_mask_storeu_epi16(d + w0, room >= 32 ? ~(__mmask32)0
                                             : (__mmask32)((1u << room) - 1), v);
                }
            }
}

static void mn_amx_wgrad_pack_x(const float* x, const mn_amx_conv* g, void* xtv, mn_idx n0,
                                mn_idx n1)
{
    uint16_t* xt = (uint16_t*)xtv;
    mn_idx Hp = g->H + 2 * g->ph, row = g->Wt * g->Cw * 2, copy = g->N * Hp * row;
    /* 16 padded input rows of floats past the two copies (zeros around and past each row:
       what the pairs read) */
    mn_idx tw = 2 * g->Wt + 34;
    float* tmp = (float*)(xt + 2 * copy);
    memset(tmp, 0, 16 * tw * sizeof(float));
    for (mn_idx n = n0; n < n1; n++) {
        memset(xt + n * Hp * row, 0, Hp * row * 2);
        memset(xt + copy + n * Hp * row, 0, Hp * row * 2);
        for (mn_idx c0 = 0; c0 < g->C; c0 += 16) {
            mn_idx cn = g->C - c0 < 16 ? g->C - c0 : 16;
            for (mn_idx h = 0; h < g->H; h++) {
                for (mn_idx i = 0; i < cn; i++)
                    memcpy(tmp + i * tw + g->pw, x + ((n * g->C + c0 + i) * g->H + h) * g->W,
                           g->W * sizeof(float));
                for (int par = 0; par < 2; par++) {
                    /* pair w' = (xpad[2w' + par], xpad[2w' + par + 1]): 16 channels x 16
                       pairs in registers, transposed to 16 rows of 16 channels' pairs */
                    uint32_t* d = (uint32_t*)(xt + par * copy + (n * Hp + h + g->ph) * row) + c0;
                    for (mn_idx w0 = 0; w0 < g->Wt; w0 += 16) {
                        mn_amx_vi v[16];
                        for (int i = 0; i < 16; i++)
                            v[i] = i < cn ? (mn_amx_vi)mn_amx_row32(tmp + i * tw + 2 * w0 + par, 32)
                                          : (mn_amx_vi){0};
                        mn_amx_tr16(v);
                        mn_idx nj = g->Wt - w0 < 16 ? g->Wt - w0 : 16;
                        for (mn_idx j = 0; j < nj; j++)
                            _mm512_storeu_si512(d + (w0 + j) * g->Cw, (__m512i)v[j]);
                    }
                }
            }
        }
    }
}

/* Images n0..n1 of the copies, every unit, added to dw[tap][K][C]: the caller copies one
 * image at a time (it stays in L2 through the units: unit after unit streaming all
 * images ran from L3 at 0.7-0.8x the float32 kernels' speed). */
static void mn_amx_wgrad_units(const mn_amx_conv* g, const void* gbv, const void* xtv,
                               float* dw, mn_idx n0, mn_idx n1)
{
    const uint16_t* gb = (const uint16_t*)gbv;
    const uint16_t* xt = (const uint16_t*)xtv;
    mn_amx_configure(g->wcp, 64);
    mn_idx Hp = g->H + 2 * g->ph, row = g->Wt * g->Cw * 2, copy = g->N * Hp * row;
    mn_idx gs = g->OH * g->OWg * 2, xs = g->Cw * 4, T = g->kh * g->kw;
    for (mn_idx n = n0; n < n1; n++)
        for (mn_idx u = 0; u < T * g->nkb2 * g->ncb2; u++) {
            mn_idx cb = u % g->ncb2, kb = (u / g->ncb2) % g->nkb2, t = u / (g->ncb2 * g->nkb2);
            mn_idx r = t / g->kw, s = t % g->kw;
            mn_idx k0 = 32 * kb, k1 = k0 + 16 < g->Kw ? k0 + 16 : k0;
            mn_idx c0 = 32 * cb, c1 = c0 + 16 < g->Cw ? c0 + 16 : c0;
            const uint16_t* xp = xt + (s & 1) * copy;
            float* o = dw + (t * g->Kw + k0) * g->Cw;
            _tile_loadd(0, o + c0, xs);
            _tile_loadd(1, o + c1, xs);
            _tile_loadd(2, o + (k1 - k0) * g->Cw + c0, xs);
            _tile_loadd(3, o + (k1 - k0) * g->Cw + c1, xs);
            for (mn_idx oh = 0; oh < g->OH; oh++)
                for (mn_idx j = 0; j < g->wch; j++) {
                    const uint16_t* a = gb + ((n * g->Kw + k0) * g->OH + oh) * g->OWg
                                        + j * 2 * g->wcp;
                    const uint16_t* b = xp + ((n * Hp + oh + r) * g->Wt + j * g->wcp + (s >> 1))
                                        * g->Cw * 2;
                    _tile_loadd(4, a, gs);
                    _tile_loadd(6, b + c0 * 2, xs);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(7, b + c1 * 2, xs);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_loadd(5, a + (k1 - k0) * g->OH * g->OWg, gs);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            _tile_stored(0, o + c0, xs);   /* (a lone block's twin halves: stored once) */
            if (c1 != c0) _tile_stored(1, o + c1, xs);
            if (k1 != k0) _tile_stored(2, o + (k1 - k0) * g->Cw + c0, xs);
            if (k1 != k0 && c1 != c0) _tile_stored(3, o + (k1 - k0) * g->Cw + c1, xs);
        }
    _tile_release();
}
#else
#define MN_AMX_OK 0
#endif
#endif
