/* bfloat16 GEMM pieces (mixed precision): C (fp32) (+)= A * B with A and B read as
 * float32, rounded to bfloat16 (round to nearest even) while packed, and products
 * accumulated in float32.
 *
 * With AVX512_BF16 the panels hold bf16 k-pairs, the layout vdpbf16ps reads: a B
 * panel is, per pair q of k, NR columns of (B[2q, j], B[2q+1, j]); an A panel is, per
 * q, MR rows of (A[i, 2q], A[i, 2q+1]), each pair broadcast as one 32-bit lane. An
 * odd K is padded with a zero k. Every other ISA runs the "converted fp32 path": the
 * same rounding, the values kept as float32 in the fp32 panel layout, and the fp32
 * micro-kernel. The rounding is integer arithmetic in both (not vcvtneps2bf16, which
 * flushes denormal inputs to zero), so the bf16 inputs agree bit for bit across ISAs;
 * only the order of the float32 sums differs. (The AMX kernels, _amx.h, are the
 * exception: there the tiles read bf16 denormals as zero, and the packing does too.)
 *
 * Panel strides, shared with the driver (matmul.pyx): with kp = kc rounded up to even,
 * an A panel is MN_MR_BF16 * kp elements of MN_BF16_ESIZE bytes, a B panel
 * MN_NR_BF16 * kp. */
#ifndef MN_BF16_H
#define MN_BF16_H
#include <stdint.h>
#include <string.h>
#include "_gemm.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#define MN_BF16_NATIVE 1
#define MN_MR_BF16 12     /* 12 x 2 zmm accumulators, as the fp32 kernel */
#define MN_NR_BF16 32
#define MN_BF16_ESIZE 2
#else
#define MN_BF16_NATIVE 0
#define MN_MR_BF16 MN_MR
#define MN_NR_BF16 MN_NR_F
#define MN_BF16_ESIZE 4
#endif

/* The bf16 bits of f, rounded to nearest even; a NaN stays a (quiet) NaN. */
static inline uint32_t mn_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* f rounded to the nearest bf16 value, as a float32. */
static inline float mn_bf16_round(float f)
{
    uint32_t b = mn_bf16_bits(f) << 16;
    float r;
    memcpy(&r, &b, 4);
    return r;
}

/* d[i] = round(s[i]) for n floats (in place allowed): mn_bf16_round without a branch, so
 * that it vectorizes (the branchy form ran scalar: 5% of a bf16 CNN training step). */
static void mn_round_bf16(const float* s, float* d, mn_idx n)
{
    for (mn_idx i = 0; i < n; i++) {
        uint32_t u, r;
        memcpy(&u, s + i, 4);
        r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        r = (u & 0x7fffffffu) > 0x7f800000u ? (u & 0xffff0000u) | 0x00400000u : r;
        memcpy(d + i, &r, 4);
    }
}

#if MN_BF16_NATIVE
/* Two floats as one 32-bit lane of bf16 (lo: the even k). */
static inline uint32_t mn_bf16_pair(float lo, float hi)
{
    return mn_bf16_bits(lo) | (mn_bf16_bits(hi) << 16);
}

/* All panels of an mc x kc block of A (A(i, p) = A[i * rs + p * cs]), zero past mc rows
 * and past kc. */
static void mn_pack_a_bf16(const float* __restrict A, mn_idx rs, mn_idx cs, mn_idx mc,
                           mn_idx kc, void* __restrict outv)
{
    uint32_t* out = (uint32_t*)outv;
    mn_idx kq = (kc + 1) / 2, npan = (mc + MN_MR_BF16 - 1) / MN_MR_BF16;
    for (mn_idx panel = 0; panel < npan; panel++) {
        uint32_t* dst = out + panel * MN_MR_BF16 * kq;
        const float* a = A + panel * MN_MR_BF16 * rs;
        mn_idx rows = mc - panel * MN_MR_BF16;
        if (rows > MN_MR_BF16) rows = MN_MR_BF16;
        mn_idx q = 0;
        if (rows == MN_MR_BF16 && cs == 1) {
            /* the common row-major case: the MR rows are read together (their misses
               overlap), each row two floats at a time */
            for (; q < kc / 2; q++) {
                _Pragma("GCC unroll 16")
                for (int i = 0; i < MN_MR_BF16; i++)
                    dst[q * MN_MR_BF16 + i] = mn_bf16_pair(a[i * rs + 2 * q], a[i * rs + 2 * q + 1]);
            }
        }
        for (; q < kq; q++) {
            for (mn_idx i = 0; i < MN_MR_BF16; i++) {
                float lo = 0, hi = 0;
                if (i < rows) {
                    lo = a[i * rs + 2 * q * cs];
                    if (2 * q + 1 < kc) hi = a[i * rs + (2 * q + 1) * cs];
                }
                dst[q * MN_MR_BF16 + i] = mn_bf16_pair(lo, hi);
            }
        }
    }
}

/* All panels of a kc x nc block of B (B(p, j) = B[p * rs + j * cs]), zero past nc
 * columns and past kc. */
static void mn_pack_b_bf16(const float* __restrict B, mn_idx rs, mn_idx cs, mn_idx kc,
                           mn_idx nc, void* __restrict outv)
{
    uint32_t* out = (uint32_t*)outv;
    mn_idx kq = (kc + 1) / 2, npan = (nc + MN_NR_BF16 - 1) / MN_NR_BF16;
    for (mn_idx q = 0; q < kq; q++) {
        /* two rows of B at a time, along whole rows (sequential reads) */
        const float* r0 = B + 2 * q * rs;
        const float* r1 = r0 + rs;
        int has1 = 2 * q + 1 < kc;
        for (mn_idx panel = 0; panel < npan; panel++) {
            uint32_t* dst = out + panel * MN_NR_BF16 * kq + q * MN_NR_BF16;
            mn_idx j0 = panel * MN_NR_BF16, cols = nc - j0;
            if (cols >= MN_NR_BF16 && cs == 1 && has1) {
                for (int j = 0; j < MN_NR_BF16; j++)
                    dst[j] = mn_bf16_pair(r0[j0 + j], r1[j0 + j]);
                continue;
            }
            for (mn_idx j = 0; j < MN_NR_BF16; j++) {
                float lo = 0, hi = 0;
                if (j < cols) {
                    lo = r0[(j0 + j) * cs];
                    if (has1) hi = r1[(j0 + j) * cs];
                }
                dst[j] = mn_bf16_pair(lo, hi);
            }
        }
    }
}

/* C[MR x NR] (+)= A_panel * B_panel over kc (rounded up to pairs): vdpbf16ps adds
 * a[2q] b[2q] + a[2q+1] b[2q+1] to each fp32 lane. */
static void mn_kernel_bf16(mn_idx kc, const void* Av, const void* Bv, float* C, mn_idx ldc,
                           int accumulate)
{
    const uint32_t* A = (const uint32_t*)Av;
    const uint32_t* B = (const uint32_t*)Bv;
    mn_idx kq = (kc + 1) / 2;
    __m512 c[MN_MR_BF16][2];
    _Pragma("GCC unroll 16")
    for (int i = 0; i < MN_MR_BF16; i++) {
        c[i][0] = _mm512_setzero_ps(); c[i][1] = _mm512_setzero_ps();
        __builtin_prefetch(C + i * ldc, 1, 3);
        __builtin_prefetch(C + i * ldc + 16, 1, 3);
        __builtin_prefetch(C + i * ldc + 31, 1, 3);
    }
    _Pragma("GCC unroll 2")
    for (mn_idx q = 0; q < kq; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(B + q * MN_NR_BF16);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(B + q * MN_NR_BF16 + 16);
        _Pragma("GCC unroll 16")
        for (int i = 0; i < MN_MR_BF16; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[q * MN_MR_BF16 + i]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
        }
    }
    _Pragma("GCC unroll 16")
    for (int i = 0; i < MN_MR_BF16; i++) {
        float* d = C + i * ldc;
        if (accumulate) {
            c[i][0] = _mm512_add_ps(c[i][0], _mm512_loadu_ps(d));
            c[i][1] = _mm512_add_ps(c[i][1], _mm512_loadu_ps(d + 16));
        }
        _mm512_storeu_ps(d, c[i][0]);
        _mm512_storeu_ps(d + 16, c[i][1]);
    }
}
#else
/* The converted fp32 path: the fp32 panel layouts of rounded values (panel strides
 * still from kp, so the driver needs no case of its own). */
static void mn_pack_a_bf16(const float* __restrict A, mn_idx rs, mn_idx cs, mn_idx mc,
                           mn_idx kc, void* __restrict outv)
{
    float* out = (float*)outv;
    mn_idx kp = (kc + 1) / 2 * 2, npan = (mc + MN_MR_BF16 - 1) / MN_MR_BF16;
    for (mn_idx panel = 0; panel < npan; panel++) {
        float* dst = out + panel * MN_MR_BF16 * kp;
        const float* a = A + panel * MN_MR_BF16 * rs;
        mn_idx rows = mc - panel * MN_MR_BF16;
        if (rows > MN_MR_BF16) rows = MN_MR_BF16;
        for (mn_idx p = 0; p < kc; p++)
            for (mn_idx i = 0; i < MN_MR_BF16; i++)
                dst[p * MN_MR_BF16 + i] = i < rows ? mn_bf16_round(a[i * rs + p * cs]) : 0.0f;
    }
}

static void mn_pack_b_bf16(const float* __restrict B, mn_idx rs, mn_idx cs, mn_idx kc,
                           mn_idx nc, void* __restrict outv)
{
    float* out = (float*)outv;
    mn_idx kp = (kc + 1) / 2 * 2, npan = (nc + MN_NR_BF16 - 1) / MN_NR_BF16;
    for (mn_idx p = 0; p < kc; p++) {
        const float* r = B + p * rs;
        for (mn_idx panel = 0; panel < npan; panel++) {
            float* dst = out + panel * MN_NR_BF16 * kp + p * MN_NR_BF16;
            mn_idx j0 = panel * MN_NR_BF16;
            for (mn_idx j = 0; j < MN_NR_BF16; j++)
                dst[j] = j0 + j < nc ? mn_bf16_round(r[(j0 + j) * cs]) : 0.0f;
        }
    }
}

static void mn_kernel_bf16(mn_idx kc, const void* A, const void* B, float* C, mn_idx ldc,
                           int accumulate)
{
    mn_kernel_f32(kc, (const float*)A, (const float*)B, C, ldc, accumulate);
}
#endif
#endif
