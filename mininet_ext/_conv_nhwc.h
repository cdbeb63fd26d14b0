/* Indirect-GEMM tile for channels-last (NHWC) convolution (mininet_ext/conv_nhwc.pyx).
 *
 * C[MR x NR] = sum over segments s < nseg, c < len of P[s*MR + i][c] * B[(boff[s] + c)*NR + j]
 *
 * Each output row i reads, per segment (one filter tap), a run of `len` contiguous values
 * through its own pointer P[s*MR + i]: an input pixel's C channels in NHWC, or a zero run
 * where the tap falls on padding. So no column matrix is built and no A panel is packed:
 * the rows of a tile may come from different image rows or images (small maps fill whole
 * tiles). B is one NR-wide column panel, packed once per call.
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

#define MN_NH_KERNEL(NAME, T, V, W)                                                 \
static void NAME(mn_idx nseg, mn_idx len, const T* const* P, const mn_idx* boff,    \
                 const T* B, T* __restrict C)                                       \
{                                                                                   \
    V acc[MN_NH_MR][2];                                                             \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MN_NH_MR; i++) { acc[i][0] = (V){0}; acc[i][1] = (V){0}; }  \
    for (mn_idx s = 0; s < nseg; s++) {                                             \
        const T* a[MN_NH_MR];                                                       \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < MN_NH_MR; i++) a[i] = P[s * MN_NH_MR + i];              \
        const T* b = B + boff[s] * 2 * W;                                           \
        _Pragma("GCC unroll 2")                                                     \
        for (mn_idx c = 0; c < len; c++) {                                          \
            V b0 = *(const V*)(b + c * 2 * W), b1 = *(const V*)(b + c * 2 * W + W); \
            _Pragma("GCC unroll 16")                                                \
            for (int i = 0; i < MN_NH_MR; i++) {                                    \
                acc[i][0] += a[i][c] * b0;                                          \
                acc[i][1] += a[i][c] * b1;                                          \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    _Pragma("GCC unroll 16")                                                        \
    for (int i = 0; i < MN_NH_MR; i++) {                                            \
        *(V*)(C + i * 2 * W) = acc[i][0];                                           \
        *(V*)(C + i * 2 * W + W) = acc[i][1];                                       \
    }                                                                               \
}

MN_NH_KERNEL(mn_nh_kernel_f32, float, mn_nh_vf, MN_NH_VBYTES / 4)
MN_NH_KERNEL(mn_nh_kernel_f64, double, mn_nh_vd, MN_NH_VBYTES / 8)
#endif
