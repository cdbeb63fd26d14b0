/* Winograd F(4x4, 3x3) and F(2x2, 5x5) convolution kernels (winograd.pyx drives them): the transforms
 * in float (_winograd_t.h, written for any WT) around the GEMM micro-kernels of the kernel table
 * (_isa.h), which the including module binds. */
#ifndef MN_WINOGRAD_H
#define MN_WINOGRAD_H
#include <string.h>
#include "_isa.h"
#include "_tr16.h"

/* 32-byte vectors: every ISA's micro-kernel width (nr: 8..32 floats, 4..16 doubles) is a
 * multiple of them, and Zen 4 runs a 512-bit operation as two 256-bit halves anyway. */
#define WINO_VBYTES 32
/* Input channels per micro-kernel call: one B panel (KC x nr) stays in L1. */
#define WINO_KC 256
/* Padding after each of a block's 36 V and M rows (items; 64 bytes or more), so that the
 * rows do not share L1 sets (wino_block) */
#define WINO_ROW_PAD 16
/* Widest zero-padded strip of image rows the gather builds for edge tiles (items) */
#define WINO_STRIP 256
#define WCAT_(a, b) a##b
#define WCAT(a, b) WCAT_(a, b)

typedef struct wino_geom {
    mn_idx N, C, H, W, K, OH, OW, ph, pw;
    mn_idx th, tw, T;      /* m x m output tiles down, across, in all */
    mn_idx nb, kp;         /* tiles per block (a multiple of nr); K rounded up to mr */
    int nr, mr;            /* micro-kernel width and height */
    int r, m;              /* filter size (3 or 5) and output tile size (4 or 2): 6x6 patches */
} wino_geom;

/* The row-wise F(4, 5) kernels' geometry (_winograd_row_t.h): S segments of 4 output
 * pixels per output row, Hp = OH + 4 padded input rows (Hq: rounded up to 8), S * Hp tiles
 * per image (rows past OH computed and dropped); blocks of ni images, nbt tiles (ni * S *
 * Hp rounded up to nr). */
typedef struct wrow_geom {
    mn_idx N, C, H, W, K, OH, OW, ph, pw;
    mn_idx S, Hp, Hq, ni, nbt, kp;
    int nr, mr;
} wrow_geom;

#if defined(__AVX512F__)
#include <immintrin.h>
/* wino_gather for float F(4x4, 3x3) on maps at most 26 wide (the padded strip of a row
 * of tiles fits two vectors): a run of tiles side by side in one row of tiles, 4 pixels
 * apart, takes each of its 36 patch positions as one two-vector permute of the six
 * zero-padded image rows under it (lane l: column 4 l + s) and one masked store of the
 * run's lanes, where the scalar gather moved each value on its own (36 loads and stores
 * a tile, a third of the 64,32,16,16 layer's Winograd time on a Xeon). */
static void wino_gather4_f32v(const float* x, const wino_geom* g, mn_idx c, const mn_idx* tn,
                              const mn_idx* ty, const mn_idx* tx, float* restrict d, int nr)
{
    mn_idx H = g->H, W = g->W, pw = g->pw, sn = -1, sy = 0;
    float strip[6 * 32] __attribute__((aligned(64)));
    const __m512i step = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48,
                                           52, 56, 60);
    /* strip lanes q = pw .. pw + W of each row hold the image row (the rest zero) */
    unsigned long long in = (W >= 64 ? ~0ULL : ((1ULL << W) - 1)) << pw;
    __mmask16 mlo = (__mmask16)in, mhi = (__mmask16)(in >> 16);
    for (int j = 0; j < nr;) {
        if (tn[j] < 0) {   /* past the last tile (they come last): zero */
            for (int q = 0; q < 36; q++)
                for (int l = j; l < nr; l++) d[q * nr + l] = 0;
            break;
        }
        int L = 1;
        while (j + L < nr && tn[j + L] == tn[j] && ty[j + L] == ty[j] &&
               tx[j + L] == tx[j] + 4 * L)
            L++;
        if (tn[j] != sn || ty[j] != sy) {
            sn = tn[j];
            sy = ty[j];
            const float* src = x + (sn * g->C + c) * H * W - pw;
            for (int r = 0; r < 6; r++) {
                mn_idx y = sy + r;
                int ok = y >= 0 && y < H;
                const float* row = src + y * W;
                _mm512_store_ps(strip + r * 32, ok ? _mm512_maskz_loadu_ps(mlo, row)
                                                   : _mm512_setzero_ps());
                _mm512_store_ps(strip + r * 32 + 16, ok ? _mm512_maskz_loadu_ps(mhi, row + 16)
                                                        : _mm512_setzero_ps());
            }
        }
        __mmask16 m = (__mmask16)((1u << L) - 1u);
        __m512i base = _mm512_add_epi32(step, _mm512_set1_epi32((int)(tx[j] + pw)));
        for (int r = 0; r < 6; r++) {
            __m512 lo = _mm512_load_ps(strip + r * 32), hi = _mm512_load_ps(strip + r * 32 + 16);
            for (int s = 0; s < 6; s++) {
                __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(s));
                _mm512_mask_storeu_ps(d + (r * 6 + s) * nr + j, m,
                                      _mm512_permutex2var_ps(lo, idx, hi));
            }
        }
        j += L;
    }
}
#endif

#if defined(__AVX512F__)
/* The whole 4x4 output-grad tiles of 8 float filters (tile rows ld apart, filters plane
 * apart) into o[16][16] as o[a * 4 + b][i] = filter i's (a, b): each filter's tile as one
 * vector of four 16-byte rows, then a 16 x 16 transpose in registers (four stages of
 * two-source shuffles; rows 8..15 zero) whose rows' low halves are stored, instead of
 * 128 scalar loads and stores (wino_gout's copy). */
typedef float wino_v16f __attribute__((vector_size(64)));
typedef int wino_v16i __attribute__((vector_size(64)));

static inline void wino_tr16_stage(wino_v16f* r, int s, wino_v16i lo, wino_v16i hi)
{
    for (int i = 0; i < 16; i++)
        if (!(i & s)) {
            wino_v16f a = r[i], b = r[i + s];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i + s] = __builtin_shuffle(a, b, hi);
        }
}

static inline void wino_gout_gather8(const float* src, mn_idx plane, mn_idx ld,
                                     float* restrict o)
{
    const wino_v16i lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const wino_v16i hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const wino_v16i lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
    const wino_v16i hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
    const wino_v16i lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const wino_v16i hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const wino_v16i lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
    const wino_v16i hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
    wino_v16f r[16];
    for (int i = 0; i < 8; i++) {
        const float* p = src + i * plane;
        __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(p));
        v = _mm512_insertf32x4(v, _mm_loadu_ps(p + ld), 1);
        v = _mm512_insertf32x4(v, _mm_loadu_ps(p + 2 * ld), 2);
        v = _mm512_insertf32x4(v, _mm_loadu_ps(p + 3 * ld), 3);
        r[i] = (wino_v16f)v;
        r[i + 8] = (wino_v16f){0};
    }
    wino_tr16_stage(r, 8, lo8, hi8);
    wino_tr16_stage(r, 4, lo4, hi4);
    wino_tr16_stage(r, 2, lo2, hi2);
    wino_tr16_stage(r, 1, lo1, hi1);
    for (int q = 0; q < 16; q++)
        _mm256_store_ps(o + q * 16, _mm512_castps512_ps256((__m512)r[q]));
}
#endif

/* B^T of six values d0..d5 (points 0, 1, -1, 2, -2, infinity) into o[0], o[os], ...
 * o[5 os]: the input transform of every 6x6-patch Winograd here (wino_in,
 * _winograd5_cl.h), applied to columns, then rows. */
#define WINO_BT(o, os, d0, d1, d2, d3, d4, d5) do {                                 \
        (o)[0 * (os)] = 4 * (d0) - 5 * (d2) + (d4);                                 \
        (o)[1 * (os)] = (d4) + (d3) - 4 * ((d1) + (d2));                            \
        (o)[2 * (os)] = (d4) - (d3) + 4 * ((d1) - (d2));                            \
        (o)[3 * (os)] = (d4) - (d2) + 2 * ((d3) - (d1));                            \
        (o)[4 * (os)] = (d4) - (d2) - 2 * ((d3) - (d1));                            \
        (o)[5 * (os)] = 4 * (d1) - 5 * (d3) + (d5);                                 \
    } while (0)

/* float32 only (winograd.pyx's check_f32): float64 convolutions take the implicit GEMM */
#define WT float
#define WS f32
#define WI int   /* an integer of WT's size (shuffle indices) */
#include "_winograd_t.h"
#undef WT
#undef WS
#undef WI
#include "_winograd5_cl.h"
#endif
