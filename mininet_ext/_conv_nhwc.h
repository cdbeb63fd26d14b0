/* Indirect-GEMM tile for channels-last (NHWC) convolution (mininet_ext/conv_nhwc.pyx).
 *
 * C[MR x NR] = sum over segments s < nseg, c < len of P[s*MR + i][c] * B[(boff[s] + c)*NR + j]
 *
 * Each output row i reads, per segment (one filter tap), a run of `len` contiguous values
 * through its own pointer P[s*MR + i]: an input pixel's C channels in NHWC, or a zero run
 * where the tap falls on padding. So no column matrix is built and no A panel is packed:
 * the rows of a tile may come from different image rows or images (small maps fill whole
 * tiles). B is one NR-wide column panel, packed once per call. mn_nh_kernel_f32_s reads
 * the run with a stride (an NCHW input: one channel's map apart).
 *
 * Compiled with the module's flags (-march=native; the baseline SSE2 width under
 * MININET_PORTABLE): the vector width and MR follow from them. MR * NV accumulators,
 * NV B vectors and MR row pointers must fit the registers. */
#ifndef MN_CONV_NHWC_H
#define MN_CONV_NHWC_H
#include <stddef.h>
typedef ptrdiff_t mn_idx;

#if defined(__AVX512F__)
#define MN_NH_VBYTES 64
#define MN_NH_MR 8        /* 16 zmm accumulators; 8 row pointers leave room for the rest */
#elif defined(__AVX__)
#define MN_NH_VBYTES 32
#define MN_NH_MR 4
#else
#define MN_NH_VBYTES 16
#define MN_NH_MR 4
#endif

typedef float mn_nh_vf __attribute__((vector_size(MN_NH_VBYTES)));
typedef double mn_nh_vd __attribute__((vector_size(MN_NH_VBYTES)));
#define MN_NH_NR_F (2 * MN_NH_VBYTES / 4)
#define MN_NH_NR_D (2 * MN_NH_VBYTES / 8)

static inline int mn_nh_mr(void) { return MN_NH_MR; }
static inline int mn_nh_nr(int itemsize) { return itemsize == 4 ? MN_NH_NR_F : MN_NH_NR_D; }

/* The tile's body: A's value c of segment s for row i is a[i][c * (CS)]; CS is 1 (NHWC:
 * an input pixel's channels contiguous) or the strided kernel's cs (NCHW: one channel's
 * map apart). */
#define MN_NH_BODY(T, V, W, CS)                                                     \
    V acc[MN_NH_MR][2];                                                             \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MN_NH_MR; i++) { acc[i][0] = (V){0}; acc[i][1] = (V){0}; }  \
    for (mn_idx s = 0; s < nseg; s++) {                                             \
        const T* a[MN_NH_MR];                                                       \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < MN_NH_MR; i++) a[i] = P[s * MN_NH_MR + i];              \
        /* B's rows by a bumped pointer: indexing b[c * 2W] made gcc sign-round each    \
         * address (lea, cmovns, and) inside the loop */                             \
        const V* b = (const V*)(B + boff[s] * 2 * W);                               \
        mn_idx o = 0;                                                               \
        _Pragma("GCC unroll 2")                                                     \
        for (mn_idx c = 0; c < len; c++, b += 2, o += (CS)) {                       \
            V b0 = b[0], b1 = b[1];                                                 \
            _Pragma("GCC unroll 16")                                                \
            for (int i = 0; i < MN_NH_MR; i++) {                                    \
                acc[i][0] += a[i][o] * b0;                                          \
                acc[i][1] += a[i][o] * b1;                                          \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MN_NH_MR; i++) {                                            \
        *(V*)(C + i * 2 * W) = acc[i][0];                                           \
        *(V*)(C + i * 2 * W + W) = acc[i][1];                                       \
    }

#define MN_NH_KERNEL(NAME, T, V, W)                                                 \
static void NAME(mn_idx nseg, mn_idx len, const T* const* P, const mn_idx* boff,    \
                 const T* B, T* __restrict C)                                       \
{                                                                                   \
    MN_NH_BODY(T, V, W, 1)                                                          \
}

/* float32 NCHW input (forward, small maps): the relayout it saves wrote lines the other
 * thread had read, at 3x the time of a local copy on a 2-core Zen 4 */
static void mn_nh_kernel_f32_s(mn_idx nseg, mn_idx len, const float* const* P,
                               const mn_idx* boff, const float* B, float* __restrict C,
                               mn_idx cs)
{
    MN_NH_BODY(float, mn_nh_vf, MN_NH_VBYTES / 4, cs)
}

MN_NH_KERNEL(mn_nh_kernel_f32, float, mn_nh_vf, MN_NH_VBYTES / 4)
MN_NH_KERNEL(mn_nh_kernel_f64, double, mn_nh_vd, MN_NH_VBYTES / 8)
/* Relayout block (NCHW <-> NHWC around the kernels above): dst[i*di + j] = src[j*sj + i]
 * for i < ni, j < nj (both <= the lanes W of a vector). The ni source values of each j
 * are contiguous: load nj vectors, transpose them in registers (log2 W stages, each
 * swapping the off-diagonal h x h blocks of every 2h x 2h block by two shuffles a pair
 * of rows), store ni vectors. A scalar walk moved one value a cycle; this moves a vector
 * in a few. Words, not floats: a copy moves bits (float32 = 4 bytes, float64 = 8). */
typedef unsigned int mn_rl_v4 __attribute__((vector_size(MN_NH_VBYTES)));
typedef unsigned long long mn_rl_v8 __attribute__((vector_size(MN_NH_VBYTES)));
static inline int mn_rl_width(int itemsize) { return MN_NH_VBYTES / itemsize; }

/* One stage: rows i and i + h (bit h of i clear) trade their off-diagonal h x h blocks. */
#define MN_RL_STAGE(V, W, r, h)                                                     \
    do {                                                                            \
        V lo_, hi_;                                                                 \
        _Pragma("GCC unroll 16")                                                    \
        for (int k = 0; k < (W); k++) {                                             \
            lo_[k] = (k & (h)) ? (W) + k - (h) : k;                                 \
            hi_[k] = (k & (h)) ? (W) + k : k + (h);                                 \
        }                                                                           \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < (W); i++) {                                             \
            if (i & (h)) continue;                                                  \
            V a_ = r[i], b_ = r[i + (h)];                                           \
            r[i] = __builtin_shuffle(a_, b_, lo_);                                  \
            r[i + (h)] = __builtin_shuffle(a_, b_, hi_);                            \
        }                                                                           \
    } while (0)

#define MN_RL_STAGES(V, W, r)                                                       \
    do {                                                                            \
        if (W >= 16) MN_RL_STAGE(V, W, r, 8 % (W));                                 \
        if (W >= 8) MN_RL_STAGE(V, W, r, 4 % (W));                                  \
        if (W >= 4) MN_RL_STAGE(V, W, r, 2 % (W));                                  \
        if (W >= 2) MN_RL_STAGE(V, W, r, 1 % (W));                                  \
    } while (0)

/* A whole block and an edge block are two functions: sharing one array r with the
 * edge's memcpy calls kept r on the stack (perf: the shuffles read and wrote it there). */
#define MN_RL_BLOCK(NAME, T, V, W)                                                  \
static inline void NAME##_full(const T* src, T* __restrict dst, mn_idx sj, mn_idx di) \
{                                                                                   \
    V r[W];                                                                         \
    _Pragma("GCC unroll 16")                                                        \
    for (int j = 0; j < W; j++) __builtin_memcpy(&r[j], src + j * sj, sizeof(V));   \
    MN_RL_STAGES(V, W, r);                                                          \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < W; i++) __builtin_memcpy(dst + i * di, &r[i], sizeof(V));   \
}                                                                                   \
static void NAME##_edge(const T* src, T* __restrict dst, mn_idx ni, mn_idx nj,      \
                        mn_idx sj, mn_idx di)                                       \
{                                                                                   \
    V r[W];                                                                         \
    for (int j = 0; j < W; j++) {                                                   \
        r[j] = (V){0};                                                              \
        if (j < nj)                                                                 \
            __builtin_memcpy(&r[j], src + j * sj, (size_t)ni * sizeof(T));          \
    }                                                                               \
    MN_RL_STAGES(V, W, r);                                                          \
    for (mn_idx i = 0; i < ni; i++)                                                 \
        __builtin_memcpy(dst + i * di, &r[i], (size_t)nj * sizeof(T));              \
}                                                                                   \
static inline void NAME(const T* src, T* __restrict dst, mn_idx ni, mn_idx nj,      \
                        mn_idx sj, mn_idx di)                                       \
{                                                                                   \
    if (ni == W && nj == W)                                                         \
        NAME##_full(src, dst, sj, di);                                              \
    else                                                                            \
        NAME##_edge(src, dst, ni, nj, sj, di);                                      \
}

MN_RL_BLOCK(mn_rl_block4, unsigned int, mn_rl_v4, MN_NH_VBYTES / 4)
MN_RL_BLOCK(mn_rl_block8, unsigned long long, mn_rl_v8, MN_NH_VBYTES / 8)

/* The relayout of 4-value runs (dst[b][i][j] = src[b][j][i] for j < 4: a 2x2 map's
 * pixels, channels in the source's rows), batches b0..b1: 4 x 4 blocks through
 * registers, each block's four destination rows one 64-byte run. Blocks of a vector's
 * width leave 12 of 16 rows empty here, and the strided walk moved a value at a time
 * (NHWC -> NCHW of 64 x 64 channels of 2x2: 18 us a call, 1 ns a value). */
typedef unsigned int mn_rl_q4 __attribute__((vector_size(16), aligned(4)));
typedef int mn_rl_qi4 __attribute__((vector_size(16)));
#include "_tr16.h"
MN_DEF_TR4(mn_rl_tr4, mn_rl_q4, mn_rl_qi4)
static void mn_rl_runs4(const unsigned int* src, unsigned int* dst, mn_idx b0, mn_idx b1,
                        mn_idx I, mn_idx sb, mn_idx sj)
{
    for (mn_idx b = b0; b < b1; b++) {
        const unsigned int* s = src + b * sb;
        unsigned int* d = dst + b * I * 4;
        mn_idx i = 0;
        for (; i + 4 <= I; i += 4) {
            mn_rl_q4 r[4];
            for (int j = 0; j < 4; j++) r[j] = *(const mn_rl_q4*)(s + j * sj + i);
            mn_rl_tr4(r);
            for (int q = 0; q < 4; q++) *(mn_rl_q4*)(d + (i + q) * 4) = r[q];
        }
        for (; i < I; i++)
            for (int j = 0; j < 4; j++) d[i * 4 + j] = s[j * sj + i];
    }
}
#endif
