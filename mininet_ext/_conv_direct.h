/* Direct convolution tile for layers with few input channels (mininet_ext/conv_direct.pyx).
 *
 * A tile is RH output rows x RW output columns x NV vectors of output channels. Its
 * accumulators start at the bias; for every filter tap t (c, i, j) each pixel's input
 * value is broadcast and multiplied into the tap's weight vectors, so one FMA does W
 * output channels of one pixel and no column matrix is built:
 *
 *     acc[h][r][v] += img[toff[t] + h * rowstep + r * S] * wp[t][v]
 *
 * img is a zero-padded copy of the input rows the tile reads (the caller's), so no tap
 * tests for padding. The column stride S is a compile-time constant (one kernel per
 * stride 1..4): the RW pixels of a row are then constant displacements from one pointer.
 *
 * Compiled with the module's flags (-march=native; SSE2 under MININET_PORTABLE): the
 * vector width, RW and the accumulator count follow from them. */
#ifndef MN_CONV_DIRECT_H
#define MN_CONV_DIRECT_H
#include <stddef.h>
#include "_tr16.h"
typedef ptrdiff_t mn_idx;

#if defined(__AVX512F__)
#define MN_CD_VBYTES 64
#define MN_CD_RW 8        /* 16 accumulators of 32 registers: 2 rows x 8, or 8 x 2 vectors */
#define MN_CD_RH1 2
#elif defined(__AVX__)
#define MN_CD_VBYTES 32
#define MN_CD_RW 4        /* 16 registers: 12 accumulators, 3 rows x 4, or 4 x 2 vectors */
#define MN_CD_RH1 3
#else
#define MN_CD_VBYTES 16
#define MN_CD_RW 4
#define MN_CD_RH1 3
#endif
#define MN_CD_RH2 1       /* rows of a tile with two vectors of channels */

typedef float mn_cd_vf __attribute__((vector_size(MN_CD_VBYTES)));
typedef double mn_cd_vd __attribute__((vector_size(MN_CD_VBYTES)));

static inline int mn_cd_rw(void) { return MN_CD_RW; }
static inline int mn_cd_rh(int nv) { return nv == 1 ? MN_CD_RH1 : MN_CD_RH2; }
static inline int mn_cd_lanes(int itemsize) { return MN_CD_VBYTES / itemsize; }

/* Vectors of channels a tile: float32 under AVX-512 takes one (2 x 8 pixels x 16
 * channels, the tile mn_cd_store_f32 transposes in registers); else two where K needs. */
static inline int mn_cd_nv(int itemsize, mn_idx K)
{
#if defined(__AVX512F__)
    if (itemsize == 4) return 1;
#endif
    return K > MN_CD_VBYTES / itemsize ? 2 : 1;
}

/* out[h*RW + r][v*W ...] = the tile; bias: NV*W values (zeros where there is none) */
#define MN_CD_KERNEL(NAME, T, V, W, S, RH, NV)                                        \
static void NAME(mn_idx ntaps, const mn_idx* toff, const T* img, mn_idx rowstep,      \
                 const T* wp, const T* bias, T* __restrict out)                       \
{                                                                                     \
    V acc[RH][MN_CD_RW][NV];                                                          \
    _Pragma("GCC unroll 16")                                                          \
    for (int h = 0; h < RH; h++)                                                      \
        _Pragma("GCC unroll 16")                                                      \
        for (int r = 0; r < MN_CD_RW; r++)                                            \
            _Pragma("GCC unroll 2")                                                   \
            for (int v = 0; v < NV; v++) acc[h][r][v] = *(const V*)(bias + v * W);    \
    const T* row[RH];     /* one base per row: the pixels are displacements from it */ \
    _Pragma("GCC unroll 16")                                                          \
    for (int h = 0; h < RH; h++) row[h] = img + h * rowstep;                          \
    for (mn_idx t = 0; t < ntaps; t++) {                                              \
        mn_idx o = toff[t];                                                           \
        V w[NV];                                                                      \
        _Pragma("GCC unroll 2")                                                       \
        for (int v = 0; v < NV; v++) w[v] = *(const V*)(wp + (t * NV + v) * W);       \
        const T* at[RH];  /* formed once a tap: see MN_DEF_KERNEL_SLIDE (_gemm.h) */   \
        _Pragma("GCC unroll 16")                                                      \
        for (int h = 0; h < RH; h++) {                                                \
            at[h] = row[h] + o;                                                       \
            __asm__("" : "+r"(at[h]));                                                \
        }                                                                             \
        _Pragma("GCC unroll 16")                                                      \
        for (int h = 0; h < RH; h++)                                                  \
            _Pragma("GCC unroll 16")                                                  \
            for (int r = 0; r < MN_CD_RW; r++) {                                      \
                T a = at[h][r * S];                                                   \
                _Pragma("GCC unroll 2")                                               \
                for (int v = 0; v < NV; v++) acc[h][r][v] += a * w[v];                \
            }                                                                         \
    }                                                                                 \
    _Pragma("GCC unroll 16")                                                          \
    for (int h = 0; h < RH; h++)                                                      \
        _Pragma("GCC unroll 16")                                                      \
        for (int r = 0; r < MN_CD_RW; r++)                                            \
            _Pragma("GCC unroll 2")                                                   \
            for (int v = 0; v < NV; v++)                                              \
                *(V*)(out + ((h * MN_CD_RW + r) * NV + v) * W) = acc[h][r][v];        \
}

#define MN_CD_STRIDES(T, V, W, NV, RH, SUF)                                           \
    MN_CD_KERNEL(mn_cd_##SUF##_s1, T, V, W, 1, RH, NV)                                \
    MN_CD_KERNEL(mn_cd_##SUF##_s2, T, V, W, 2, RH, NV)                                \
    MN_CD_KERNEL(mn_cd_##SUF##_s3, T, V, W, 3, RH, NV)                                \
    MN_CD_KERNEL(mn_cd_##SUF##_s4, T, V, W, 4, RH, NV)

MN_CD_STRIDES(float, mn_cd_vf, (MN_CD_VBYTES / 4), 1, MN_CD_RH1, f32_v1)
MN_CD_STRIDES(float, mn_cd_vf, (MN_CD_VBYTES / 4), 2, MN_CD_RH2, f32_v2)
MN_CD_STRIDES(double, mn_cd_vd, (MN_CD_VBYTES / 8), 1, MN_CD_RH1, f64_v1)
MN_CD_STRIDES(double, mn_cd_vd, (MN_CD_VBYTES / 8), 2, MN_CD_RH2, f64_v2)

typedef void (*mn_cd_fn_f32)(mn_idx, const mn_idx*, const float*, mn_idx, const float*,
                             const float*, float*);
typedef void (*mn_cd_fn_f64)(mn_idx, const mn_idx*, const double*, mn_idx, const double*,
                             const double*, double*);

/* The kernel for nv vectors (1, 2) and column stride s (1..4); NULL for another stride. */
static inline mn_cd_fn_f32 mn_cd_pick_f32(int nv, int s)
{
    static const mn_cd_fn_f32 tab[2][4] = {
        {mn_cd_f32_v1_s1, mn_cd_f32_v1_s2, mn_cd_f32_v1_s3, mn_cd_f32_v1_s4},
        {mn_cd_f32_v2_s1, mn_cd_f32_v2_s2, mn_cd_f32_v2_s3, mn_cd_f32_v2_s4}};
    return (nv >= 1 && nv <= 2 && s >= 1 && s <= 4) ? tab[nv - 1][s - 1] : NULL;
}

static inline mn_cd_fn_f64 mn_cd_pick_f64(int nv, int s)
{
    static const mn_cd_fn_f64 tab[2][4] = {
        {mn_cd_f64_v1_s1, mn_cd_f64_v1_s2, mn_cd_f64_v1_s3, mn_cd_f64_v1_s4},
        {mn_cd_f64_v2_s1, mn_cd_f64_v2_s2, mn_cd_f64_v2_s3, mn_cd_f64_v2_s4}};
    return (nv >= 1 && nv <= 2 && s >= 1 && s <= 4) ? tab[nv - 1][s - 1] : NULL;
}
/* buf[c][rr][cc] = x[c][iy0 + rr][cc - pw] for rr < rows, cc < Wb: the padded input
 * rows of a band. Zeros are written only when fresh: a buffer that last held the same
 * band of another image has them in place (they are the same positions). */
#define MN_CD_FILL(NAME, T)                                                            \
__attribute__((optimize("no-tree-loop-distribute-patterns")))  /* no memcpy call a row */ \
static void NAME(const T* x, mn_idx C, mn_idx H, mn_idx W, mn_idx iy0, mn_idx rows,    \
                 mn_idx pw, mn_idx Wb, mn_idx plane, T* __restrict buf, int fresh)      \
{                                                                                      \
    mn_idx left = pw < Wb ? pw : Wb;                                                   \
    mn_idx mid = (W + pw < Wb ? W + pw : Wb) - left;                                   \
    if (mid < 0) mid = 0;                                                              \
    for (mn_idx c = 0; c < C; c++)                                                     \
        for (mn_idx rr = 0; rr < rows; rr++) {                                         \
            T* d = buf + c * plane + rr * Wb;                                          \
            mn_idx iy = iy0 + rr;                                                      \
            if (iy < 0 || iy >= H) {                                                   \
                if (fresh)                                                             \
                    for (mn_idx cc = 0; cc < Wb; cc++) d[cc] = 0;                      \
                continue;                                                              \
            }                                                                          \
            if (fresh) {                                                               \
                for (mn_idx cc = 0; cc < left; cc++) d[cc] = 0;                        \
                for (mn_idx cc = left + mid; cc < Wb; cc++) d[cc] = 0;                 \
            }                                                                          \
            const T* src = x + (c * H + iy) * W;                                       \
            for (mn_idx cc = 0; cc < mid; cc++) d[left + cc] = src[cc];                \
        }                                                                              \
}
MN_CD_FILL(mn_cd_fill_f32, float)
MN_CD_FILL(mn_cd_fill_f64, double)

/* y[k * kstride + h * rstride + r] = tile[h*RW + r][k] (max(0, .) with relu) for
 * k < nk, h < nh, r < nw: the tile's pixels inside the map, channel planes of NCHW. */
#define MN_CD_STORE(NAME, T)                                                           \
static void NAME##_any(const T* tb, int nh, int nw, int nk, int kt, T* y,              \
                       mn_idx kstride, mn_idx rstride, int relu)                       \
{                                                                                      \
    for (int k = 0; k < nk; k++)                                                       \
        for (int h = 0; h < nh; h++) {                                                 \
            T* d = y + k * kstride + h * rstride;                                      \
            const T* s = tb + h * MN_CD_RW * kt + k;                                   \
            if (relu)                                                                  \
                for (int r = 0; r < nw; r++) { T v = s[r * kt]; d[r] = v > 0 ? v : 0; } \
            else                                                                       \
                for (int r = 0; r < nw; r++) d[r] = s[r * kt];                         \
        }                                                                              \
}
MN_CD_STORE(mn_cd_store_f32, float)
MN_CD_STORE(mn_cd_store_f64, double)

static inline void mn_cd_store_f64(const double* tb, int nh, int nw, int nk, int kt,
                                   double* y, mn_idx kstride, mn_idx rstride, int relu)
{
    mn_cd_store_f64_any(tb, nh, nw, nk, kt, y, kstride, rstride, relu);
}

#if defined(__AVX512F__)
typedef int mn_cd_vi __attribute__((vector_size(64)));
/* 16 x 16 float32 blocks transposed in registers (_tr16.h) */
MN_DEF_TR16(mn_cd_t16, mn_cd_vf, mn_cd_vi)

/* A whole 16-pixel x 16-channel tile: each channel's two rows of 8 pixels stored at once */
static void mn_cd_store16_f32(const float* tb, float* y, mn_idx kstride, mn_idx rstride,
                              int relu)
{
    mn_cd_vf v[16];
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 16; i++) v[i] = *(const mn_cd_vf*)(tb + 16 * i);
    mn_cd_t16(v);
    _Pragma("GCC unroll 16")
    for (int k = 0; k < 16; k++) {
        mn_cd_vf r = v[k];
        if (relu) r = (mn_cd_vf)((mn_cd_vi)r & (r > 0));   /* the mask is -1 where r > 0 */
        __builtin_memcpy(y + k * kstride, &r, 32);
        __builtin_memcpy(y + k * kstride + rstride, (const char*)&r + 32, 32);
    }
}
#endif

static inline void mn_cd_store_f32(const float* tb, int nh, int nw, int nk, int kt, float* y,
                                   mn_idx kstride, mn_idx rstride, int relu)
{
#if defined(__AVX512F__)
    if (nh == 2 && nw == 8 && nk == 16 && kt == 16) {
        mn_cd_store16_f32(tb, y, kstride, rstride, relu);
        return;
    }
#endif
    mn_cd_store_f32_any(tb, nh, nw, nk, kt, y, kstride, rstride, relu);
}
/* dyT[kb][p][l] = g[kb*kt + l][p] for k = kb*kt + l < K, p < npix: an image's output
 * grad made pixel-major (the lanes past K are left as they are). */
#define MN_CD_PM_ANY(NAME, T)                                                          \
static void NAME(const T* g, mn_idx K, mn_idx npix, int kt, T* dyT, mn_idx kfrom,      \
                 mn_idx pfrom)                                                         \
{   /* only the k >= kfrom or p >= pfrom part */                                       \
    for (mn_idx k = 0; k < K; k++)                                                     \
        for (mn_idx p = k < kfrom ? pfrom : 0; p < npix; p++)                          \
            dyT[((k / kt) * npix + p) * kt + k % kt] = g[k * npix + p];                \
}
MN_CD_PM_ANY(mn_cd_pm_any_f32, float)
MN_CD_PM_ANY(mn_cd_pm_any_f64, double)

static inline void mn_cd_pixel_major_f32(const float* g, mn_idx K, mn_idx npix, int kt,
                                         float* dyT)
{
    mn_idx kfrom = 0, pfrom = 0;
#if defined(__AVX512F__)
    if (kt == 16) {   /* whole 16 x 16 blocks in registers */
        kfrom = K / 16 * 16;
        pfrom = npix / 16 * 16;
        for (mn_idx k0 = 0; k0 < kfrom; k0 += 16)
            for (mn_idx p0 = 0; p0 < pfrom; p0 += 16) {
                mn_cd_vf v[16];
                _Pragma("GCC unroll 16")
                for (int i = 0; i < 16; i++)
                    __builtin_memcpy(&v[i], g + (k0 + i) * npix + p0, 64);
                mn_cd_t16(v);
                _Pragma("GCC unroll 16")
                for (int i = 0; i < 16; i++)
                    *(mn_cd_vf*)(dyT + ((k0 / 16) * npix + p0 + i) * 16) = v[i];
            }
    }
#endif
    mn_cd_pm_any_f32(g, K, npix, kt, dyT, kfrom, pfrom);
}

static inline void mn_cd_pixel_major_f64(const double* g, mn_idx K, mn_idx npix, int kt,
                                         double* dyT)
{
    mn_cd_pm_any_f64(g, K, npix, kt, dyT, 0, 0);
}

/* Weight gradient tile: RI kernel rows x RJ kernel columns (consecutive taps of one
 * channel, dilation 1 along the columns) x NV vectors of output channels, summed over
 * npix output pixels:
 *
 *     acc[i][j][v] += img[i * rowstep + poff[p] + j] * dyT[p][v]
 *
 * dyT holds the output grad pixel-major (a pixel's K values contiguous); acc is read
 * from and written back to io (the thread's running sums). */
#define MN_CD_DW_KERNEL(NAME, T, V, W, RI, NV)                                         \
static void NAME(mn_idx npix, const mn_idx* poff, const T* dyT, const T* img,          \
                 mn_idx rowstep, T* __restrict io)                                     \
{                                                                                      \
    V acc[RI][MN_CD_RW][NV];                                                           \
    const T* row[RI];                                                                  \
    _Pragma("GCC unroll 16")                                                           \
    for (int i = 0; i < RI; i++) {                                                     \
        row[i] = img + i * rowstep;                                                    \
        _Pragma("GCC unroll 16")                                                       \
        for (int j = 0; j < MN_CD_RW; j++)                                             \
            _Pragma("GCC unroll 2")                                                    \
            for (int v = 0; v < NV; v++)                                               \
                acc[i][j][v] = *(const V*)(io + ((i * MN_CD_RW + j) * NV + v) * W);    \
    }                                                                                  \
    for (mn_idx p = 0; p < npix; p++) {                                                \
        mn_idx o = poff[p];                                                            \
        V d[NV];                                                                       \
        _Pragma("GCC unroll 2")                                                        \
        for (int v = 0; v < NV; v++) d[v] = *(const V*)(dyT + (p * NV + v) * W);       \
        const T* at[RI];  /* formed once a pixel, as in MN_CD_KERNEL */                \
        _Pragma("GCC unroll 16")                                                       \
        for (int i = 0; i < RI; i++) {                                                 \
            at[i] = row[i] + o;                                                        \
            __asm__("" : "+r"(at[i]));                                                 \
        }                                                                              \
        _Pragma("GCC unroll 16")                                                       \
        for (int i = 0; i < RI; i++)                                                   \
            _Pragma("GCC unroll 16")                                                   \
            for (int j = 0; j < MN_CD_RW; j++) {                                       \
                T a = at[i][j];                                                        \
                _Pragma("GCC unroll 2")                                                \
                for (int v = 0; v < NV; v++) acc[i][j][v] += a * d[v];                 \
            }                                                                          \
    }                                                                                  \
    _Pragma("GCC unroll 16")                                                           \
    for (int i = 0; i < RI; i++)                                                       \
        _Pragma("GCC unroll 16")                                                       \
        for (int j = 0; j < MN_CD_RW; j++)                                             \
            _Pragma("GCC unroll 2")                                                    \
            for (int v = 0; v < NV; v++)                                               \
                *(V*)(io + ((i * MN_CD_RW + j) * NV + v) * W) = acc[i][j][v];          \
}
MN_CD_DW_KERNEL(mn_cd_dw_f32_v1, float, mn_cd_vf, (MN_CD_VBYTES / 4), MN_CD_RH1, 1)
MN_CD_DW_KERNEL(mn_cd_dw_f32_v2, float, mn_cd_vf, (MN_CD_VBYTES / 4), MN_CD_RH2, 2)
MN_CD_DW_KERNEL(mn_cd_dw_f64_v1, double, mn_cd_vd, (MN_CD_VBYTES / 8), MN_CD_RH1, 1)
MN_CD_DW_KERNEL(mn_cd_dw_f64_v2, double, mn_cd_vd, (MN_CD_VBYTES / 8), MN_CD_RH2, 2)
MN_CD_DW_KERNEL(mn_cd_dw_f32_r1, float, mn_cd_vf, (MN_CD_VBYTES / 4), 1, 1)
MN_CD_DW_KERNEL(mn_cd_dw_f64_r1, double, mn_cd_vd, (MN_CD_VBYTES / 8), 1, 1)

/* A block of `rows` kernel rows (at most the tile's): a block cut short by the filter's
 * height runs row by row, rather than computing rows past the filter (7 of 8 at 7x7). */
#define MN_CD_DW_PICK(NAME, T, SUF)                                                    \
static inline void NAME(int nv, int rows, mn_idx npix, const mn_idx* poff, const T* dyT, \
                        const T* img, mn_idx rowstep, T* io)                           \
{                                                                                      \
    if (nv == 2) {                                                                     \
        mn_cd_dw_##SUF##_v2(npix, poff, dyT, img, rowstep, io);                        \
    } else if (rows == MN_CD_RH1) {                                                    \
        mn_cd_dw_##SUF##_v1(npix, poff, dyT, img, rowstep, io);                        \
    } else {                                                                           \
        const int step = MN_CD_RW * MN_CD_VBYTES / (int)sizeof(T);                     \
        for (int r = 0; r < rows; r++)                                                 \
            mn_cd_dw_##SUF##_r1(npix, poff, dyT, img + r * rowstep, rowstep,           \
                                io + r * step);                                        \
    }                                                                                  \
}
MN_CD_DW_PICK(mn_cd_dw_f32, float, f32)
MN_CD_DW_PICK(mn_cd_dw_f64, double, f64)

/* Channel-major tile for column stride 1 (the forward of mininet_ext/conv_direct.pyx's
 * forward_cm): RH output rows x NV vectors of W output pixels of a row x MN_CM_R
 * channels. Per tap t the tile's pixels are RH*NV vector loads of the padded band (the
 * pixels of a row are consecutive inputs when the stride is 1) and each channel's
 * weight is broadcast:
 *
 *     acc[h][v][r] += img[toff[t] + h * rowstep + v * W ...] * wr[t][r]
 *
 * so the sums land already in NCHW order: a tile is stored as rows of its channel
 * planes (lanes past ncols, rows past nh and channels past nk are not), with no
 * transpose after it (the pixel-major tiles' transpose cost the RGB 3x3 layer 37% of its
 * forward on a Xeon). AVX-512 only: 24 accumulators + 6 loaded vectors of 32 registers;
 * elsewhere mn_cm_ok() is 0 and the layer keeps the other paths. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define MN_CM_OK 1
#define MN_CM_R 4
typedef long long mn_cd_vl __attribute__((vector_size(64)));

#define MN_CM_KERNEL(NAME, T, V, VI, W, NV, RH, STOREM)                                \
static void NAME(mn_idx ntaps, const mn_idx* toff, const T* img, mn_idx rowstep,       \
                 const T* wr, const T* bias, T* y, mn_idx kstride, mn_idx rstride,      \
                 int nk, int nh, int ncols, int relu)                                  \
{                                                                                      \
    V acc[RH][NV][MN_CM_R];                                                            \
    _Pragma("GCC unroll 4")                                                            \
    for (int r = 0; r < MN_CM_R; r++) {                                                \
        V b = (V){0} + bias[r];                                                        \
        _Pragma("GCC unroll 8")                                                        \
        for (int h = 0; h < RH; h++)                                                   \
            _Pragma("GCC unroll 2")                                                    \
            for (int v = 0; v < NV; v++) acc[h][v][r] = b;                             \
    }                                                                                  \
    for (mn_idx t = 0; t < ntaps; t++) {                                               \
        const T* s = img + toff[t];                                                    \
        const T* w = wr + t * MN_CM_R;                                                 \
        V x[RH][NV];                                                                   \
        _Pragma("GCC unroll 8")                                                        \
        for (int h = 0; h < RH; h++)                                                   \
            _Pragma("GCC unroll 2")                                                    \
            for (int v = 0; v < NV; v++)                                               \
                __builtin_memcpy(&x[h][v], s + h * rowstep + v * W, sizeof(V));        \
        _Pragma("GCC unroll 4")                                                        \
        for (int r = 0; r < MN_CM_R; r++) {                                            \
            T wv = w[r];                                                               \
            _Pragma("GCC unroll 8")                                                    \
            for (int h = 0; h < RH; h++)                                               \
                _Pragma("GCC unroll 2")                                                \
                for (int v = 0; v < NV; v++) acc[h][v][r] += x[h][v] * wv;             \
        }                                                                              \
    }                                                                                  \
    for (int r = 0; r < nk; r++)                                                       \
        for (int h = 0; h < nh; h++) {                                                 \
            T* d = y + r * kstride + h * rstride;                                      \
            for (int v = 0; v < NV; v++) {                                             \
                V o = acc[h][v][r];                                                    \
                if (relu) o = (V)((VI)o & (VI)(o > 0));  /* -1 lanes where o > 0 */     \
                int n = ncols - v * W;                                                 \
                if (n >= W) __builtin_memcpy(d + v * W, &o, sizeof(V));                \
                else if (n > 0) STOREM(d + v * W, (1u << n) - 1u, o);                  \
            }                                                                          \
        }                                                                              \
}
#define MN_CM_STORE_F32(d, m, o) _mm512_mask_storeu_ps((d), (__mmask16)(m), (__m512)(o))
#define MN_CM_STORE_F64(d, m, o) _mm512_mask_storeu_pd((d), (__mmask8)(m), (__m512d)(o))
MN_CM_KERNEL(mn_cm_f32_v2, float, mn_cd_vf, mn_cd_vi, 16, 2, 3, MN_CM_STORE_F32)
MN_CM_KERNEL(mn_cm_f32_v1, float, mn_cd_vf, mn_cd_vi, 16, 1, 6, MN_CM_STORE_F32)
MN_CM_KERNEL(mn_cm_f64_v2, double, mn_cd_vd, mn_cd_vl, 8, 2, 3, MN_CM_STORE_F64)
MN_CM_KERNEL(mn_cm_f64_v1, double, mn_cd_vd, mn_cd_vl, 8, 1, 6, MN_CM_STORE_F64)
#define MN_CM_NAMES(SUF) {mn_cm_##SUF##_v1, mn_cm_##SUF##_v2}
#else
#define MN_CM_OK 0
#define MN_CM_R 4
#define MN_CM_STUB(NAME, T)                                                            \
static void NAME(mn_idx ntaps, const mn_idx* toff, const T* img, mn_idx rowstep,       \
                 const T* wr, const T* bias, T* y, mn_idx kstride, mn_idx rstride,      \
                 int nk, int nh, int ncols, int relu)                                  \
{ __builtin_trap(); /* never chosen: mn_cm_ok() is 0 */ }
MN_CM_STUB(mn_cm_f32_stub, float)
MN_CM_STUB(mn_cm_f64_stub, double)
#define MN_CM_NAMES(SUF) {mn_cm_##SUF##_stub, mn_cm_##SUF##_stub}
#endif

typedef void (*mn_cm_fn_f32)(mn_idx, const mn_idx*, const float*, mn_idx, const float*,
                             const float*, float*, mn_idx, mn_idx, int, int, int, int);
typedef void (*mn_cm_fn_f64)(mn_idx, const mn_idx*, const double*, mn_idx, const double*,
                             const double*, double*, mn_idx, mn_idx, int, int, int, int);
static inline int mn_cm_ok(void) { return MN_CM_OK; }
static inline int mn_cm_r(void) { return MN_CM_R; }
/* the tile's rows for nv vectors of pixels */
static inline int mn_cm_rh(int nv) { return nv == 2 ? 3 : 6; }
static inline mn_cm_fn_f32 mn_cm_pick_f32(int nv)
{
    static const mn_cm_fn_f32 tab[2] = MN_CM_NAMES(f32);
    return tab[nv == 2];
}
static inline mn_cm_fn_f64 mn_cm_pick_f64(int nv)
{
    static const mn_cm_fn_f64 tab[2] = MN_CM_NAMES(f64);
    return tab[nv == 2];
}
#endif
