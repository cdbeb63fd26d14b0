/* The kernel table: the GEMM and convolution kernels whose code depends on the vector
 * ISA (_gemm.h, _gemm_small.h, _convpack.h). setup.py compiles them once per ISA
 * (generic x86-64 or the target's default, AVX2+FMA, AVX-512, AVX-512 with BF16) into
 * the modules mininet_ext._kern_<isa> (_kern.h), each exporting one filled table;
 * _isa.pyx picks the one this CPU runs, once, at import (MININET_ISA overrides).
 *
 * matmul.pyx and convgemm.pyx include this header, bind the chosen table once
 * (mn_isa_bind) and call the kernels by their usual names: the macros at the end turn
 * mn_kernel_f32(...) into a call through the table. */
#ifndef MN_ISA_H
#define MN_ISA_H
#include <stddef.h>
typedef ptrdiff_t mn_idx;

/* Panel columns jj..jj+len; off: their first output pixel (oh*OW + ow) in the image
 * (convgemm.pyx's Run). */
typedef struct mn_run { mn_idx jj, len, off; } mn_run;

/* Raised whenever the table's layout changes: a stale _kern_*.so is refused. */
#define MN_KERNELS_ABI 12

/* X(name, parameters) for one element type T with suffix S. */
#define MN_KERNELS_T(X, T, S)                                                                \
    /* GEMM micro-kernels: packed A and B panels; shorter tiles; B or A read in place */    \
    X(kernel_##S, (mn_idx kc, const T* A, const T* B, T* C, mn_idx ldc, int accumulate))     \
    X(kernel_short_##S, (mn_idx kc, const T* A, const T* B, T* C, mn_idx ldc, int accumulate)) \
    X(pack_a_rows_##S, (const T* A, mn_idx rs, mn_idx kc, T* out))                           \
    /* a transposed B (columns contiguous, cs apart) packed into NR-wide panels */          \
    X(pack_b_t_##S, (const T* B, mn_idx cs, mn_idx kc, mn_idx nc, T* out))                   \
    /* the blocked product's kernel and packing where bc (pre-broadcast A, mr_bc rows) */ \
    X(kernel_bc_##S, (mn_idx kc, const T* A, const T* B, T* C, mn_idx ldc, int accumulate))  \
    X(pack_a_bc_##S, (const T* A, mn_idx rs, mn_idx cs, mn_idx mc, mn_idx kc, T* out))       \
    X(kernel_sb_##S, (mn_idx kc, const T* A, const T* B, mn_idx ldb, T* C, mn_idx ldc,       \
                      int accumulate))                                                       \
    X(kernel_sb_short_##S, (mn_idx kc, const T* A, const T* B, mn_idx ldb, T* C, mn_idx ldc, \
                            int accumulate))                                                 \
    X(kernel_sa_##S, (mn_idx kc, const T* A, mn_idx ars, mn_idx acs, const T* B, T* C,       \
                      mn_idx ldc, int accumulate))                                           \
    X(kernel_sa_half_##S, (mn_idx kc, const T* A, mn_idx ars, mn_idx acs, const T* B, T* C,  \
                           mn_idx ldc, int accumulate))                                      \
    X(kernel_sa_short_##S, (mn_idx kc, const T* A, mn_idx ars, mn_idx acs, const T* B, T* C, \
                            mn_idx ldc, int accumulate))                                     \
    X(kernel_sa_short_half_##S, (mn_idx kc, const T* A, mn_idx ars, mn_idx acs, const T* B,  \
                                 T* C, mn_idx ldc, int accumulate))                          \
    /* a narrow product's last few columns, the long dimension in the lanes (_gemm.h) */   \
    X(tail_dot_##S, (mn_idx rows, mn_idx cols, mn_idx kc, const T* A, mn_idx ars,            \
                     const T* Bt, T* C, mn_idx ldc, int accumulate))                         \
    X(tail_lane_##S, (mn_idx rows, mn_idx cols, mn_idx kc, const T* A, mn_idx acs,           \
                      const T* B, mn_idx ldb, T* C, mn_idx ldc, int accumulate))             \
    /* small products without packing (a trap where small_ok is 0) */                       \
    X(gemm_small_##S, (mn_idx N, mn_idx K, const T* A, mn_idx ars, mn_idx acs, const T* B,   \
                       mn_idx ldb, T* C, mn_idx ldc, mn_idx i0, mn_idx i1, mn_idx jp0,       \
                       mn_idx jp1))                                                          \
    /* convolution: weight-grad kernels, pixel-major tiles, window copies */                \
    X(kernel_at_##S, (mn_idx npan, const T* A, mn_idx astride, const T* B, mn_idx bstride,   \
                      T* C, mn_idx ldc))                                                     \
    X(kernel_at_half_##S, (mn_idx npan, const T* A, mn_idx astride, const T* B,              \
                           mn_idx bstride, T* C, mn_idx ldc))                                \
    X(tab_kernel_##S, (int nv, int mr, mn_idx kc, const T* A, const mn_idx* toff,            \
                       const T* B, T* C))                                                    \
    X(wg_kernel_##S, (int nv, int mr, mn_idx oh_n, mn_idx ow_n, mn_idx wp, const T* A,       \
                      const mn_idx* toff, const T* B, T* C))                                 \
    X(copy_window_##S, (T* d, const T* s, mn_idx len, mn_idx lo, mn_idx hi))                 \
    X(add_window_##S, (T* d, const T* s, mn_idx lo, mn_idx hi))                              \
    X(copy_rows_##S, (T* d, const T* s, const mn_idx* toff, mn_idx n))                       \
    X(add_rows_##S, (T* d, const T* tile, const mn_idx* toff, mn_idx cg, mn_idx kh, mn_idx kw)) \
    X(gather_t_##S, (T* d, const T* s, mn_idx P, mn_idx kn, mn_idx kb))                     \
    X(pack_rows_##S, (T* d, const T* dy, mn_idx P, mn_idx kg, const mn_run* segs, int nsegs))

#define MN_KERNELS(X)                                                                        \
    MN_KERNELS_T(X, float, f32)                                                              \
    MN_KERNELS_T(X, double, f64)                                                             \
    X(tile_to_nchw_f32, (const float* tile, mn_idx kb, mn_idx cnt, mn_idx kn,                \
                         const float* bias, float* dst, mn_idx P))                           \
    /* bfloat16 mixed precision (_bf16.h): fp32 in, bf16-rounded packing, fp32 out */        \
    X(pack_a_bf16, (const float* A, mn_idx rs, mn_idx cs, mn_idx mc, mn_idx kc, void* out))  \
    X(pack_b_bf16, (const float* B, mn_idx rs, mn_idx cs, mn_idx kc, mn_idx nc, void* out))  \
    X(kernel_bf16, (mn_idx kc, const void* A, const void* B, float* C, mn_idx ldc,           \
                    int accumulate))                                                         \
    X(round_bf16, (const float* s, float* d, mn_idx n))

typedef struct mn_kernels {
    int abi, size;           /* MN_KERNELS_ABI and sizeof(mn_kernels) of the module's build */
    const char* isa;         /* "generic", "avx2", "avx512", "avx512bf16" */
    int mr, mr_short;        /* micro-tile heights */
    int nr_f32, nr_f64;      /* micro-tile widths (two vectors) */
    int small_ok;            /* gemm_small_* exists (AVX-512's masked loads and stores) */
    int tab_mr[2][2];        /* pixel-major tile heights [vectors - 1][taller] */
    int tab_slide[2][2];     /* bit kw set: a sliding-run kernel for kw-tap runs at that
                                tile (tab_kernel_* with kw << MN_TAB_KW_SHIFT) */
    int wg_slide, wg_slide_mr;  /* bit kw set: a sliding weight-gradient kernel for kw-tap runs,
                                one vector of channels, wg_slide_mr taps a tile */
    int tab_one;             /* 1: one-vector tiles over two-vector ones where they fit */
    int mr_bf16, nr_bf16;    /* the bf16 micro-tile */
    int esize_bf16;          /* bytes per packed bf16-GEMM element: 2 (vdpbf16ps) or 4 */
    int bc, mr_bc;           /* the blocked product packs A pre-broadcast (a vector per value,
                                kernel_bc_*, pack_a_bc_*) in panels of mr_bc rows */
#define MN_FIELD(name, params) void (*name) params;
    MN_KERNELS(MN_FIELD)
#undef MN_FIELD
} mn_kernels;

/* A bf16 GEMM kernel set for the driver in matmul.pyx (bf16_blocked): the micro-tile,
 * the k granularity of packed panels (kc rounded up to a multiple of kstep), bytes per
 * packed element, the packing and the kernel; begin/end run in each thread around its
 * kernels (NULL where nothing is needed). The table's own (vdpbf16ps, or the converted
 * fp32 path) and, in an avx512bf16 set built with AMX, the AMX tiles (_amx.h), exported
 * by mininet_ext._kern_<isa> as the capsule "mininet_ext.amx". */
#define MN_AMX_CAPSULE "mininet_ext.amx"

/* A stride-1 convolution's geometry for the AMX convolution (_amx.h): x (N, C, H, W)
 * -> y (N, K, OH, OW), kernel kh x kw, padding ph, pw; the bf16 copies' layout: Qp
 * channel pairs (nsteps steps of `step` pairs, a tile's rows), planes of Hp x Wp pixel
 * pairs; outputs in chunks of cw columns (a tile's). matmul.pyx's amx_geometry fills it. */
typedef struct mn_amx_conv {
    mn_idx N, C, H, W, K, kh, kw, ph, pw, OH, OW;
    mn_idx step, nsteps, Qp, Hp, Wp, cw, nch, nkb, nrp;
    /* the weight gradient's: output rows padded to OWg pixels (wch chunks of wcp pixel
       pairs), the input's pixel-pair copies Wt pairs wide, blocks of 32 k and 32 c */
    mn_idx OWg, wcp, wch, Wt, nkb2, ncb2, Kw, Cw;   /* Kw, Cw: K, C up to 16s */
} mn_amx_conv;

typedef struct mn_bf16_kernels {
    int abi;                 /* MN_KERNELS_ABI */
    const char* name;        /* "vdpbf16ps", "fp32" or "amx" */
    int mr, nr, kstep, esize;
    void (*pack_a)(const float* A, mn_idx rs, mn_idx cs, mn_idx mc, mn_idx kc, void* out);
    void (*pack_b)(const float* B, mn_idx rs, mn_idx cs, mn_idx kc, mn_idx nc, void* out);
    void (*kernel)(mn_idx kc, const void* A, const void* B, float* C, mn_idx ldc,
                   int accumulate);
    void (*begin)(void);
    void (*end)(void);
    /* the AMX convolution (NULL in other sets): the bf16 copies of images n0..n1 and of
       the weights (flip: w is (C, K, kh, kw) and read flipped, for an input gradient),
       then work units u0..u1 (an image, 32 output channels, 2 output rows) */
    void (*conv_pack_x)(const float* x, const mn_amx_conv* g, void* xb, mn_idx n0, mn_idx n1);
    void (*conv_pack_w)(const float* w, const mn_amx_conv* g, int flip, void* wb);
    void (*conv_units)(const mn_amx_conv* g, const void* xb, const void* wb, float* y,
                       mn_idx u0, mn_idx u1);
    /* its weight gradient: g and x copied (images n0..n1), then those images' sums
       added to dw[tap][Kw][Cw] */
    void (*wgrad_pack_g)(const float* gr, const mn_amx_conv* g, void* gb, mn_idx n0, mn_idx n1);
    void (*wgrad_pack_x)(const float* x, const mn_amx_conv* g, void* xt, mn_idx n0, mn_idx n1);
    void (*wgrad_units)(const mn_amx_conv* g, const void* gb, const void* xt, float* dw,
                        mn_idx u0, mn_idx u1);
} mn_bf16_kernels;

/* The FMA peak kernel compiled with one kernel set's flags (the vector width and FMA of
 * that path), exported by mininet_ext._kern_<isa> as a second capsule, "mininet_ext.peak",
 * for `mininet bench peak --isa` (peak.pyx). fma_*: chains x <- x * a + b, n times each,
 * from x0 + j; returns the sum of all lanes of all chains (so nothing folds away). */
#define MN_PEAK_CAPSULE "mininet_ext.peak"
typedef struct mn_peak_kernels {
    int abi;                 /* MN_KERNELS_ABI */
    const char* isa;
    int vector_bits, chains, fused;
    double (*fma_f32)(long long n, float a, float b, float x0);
    double (*fma_f64)(long long n, double a, double b, double x0);
} mn_peak_kernels;

#ifndef MN_ISA   /* the callers' side; _kern.h defines MN_ISA and the kernels themselves */
static const mn_kernels* mn_k;

/* Bind the table from mininet_ext._isa (a capsule's pointer); 0, or -1 with a Python
 * error set when it came from another build. */
static int mn_isa_bind(const void* table)
{
    const mn_kernels* k = (const mn_kernels*)table;
    if (k == NULL) return -1;
    if (k->abi != MN_KERNELS_ABI || k->size != (int)sizeof(mn_kernels)) {
        PyErr_Format(PyExc_ImportError, "mininet_ext._kern_%s comes from another build of "
                     "mininet (kernel table ABI %d, expected %d): rebuild the extensions",
                     k->isa, k->abi, MN_KERNELS_ABI);
        return -1;
    }
    mn_k = k;
    return 0;
}

/* The table's own bf16 kernels as a set for the driver. */
static mn_bf16_kernels mn_bf16_table_set(void)
{
    mn_bf16_kernels s = {MN_KERNELS_ABI, mn_k->esize_bf16 == 2 ? "vdpbf16ps" : "fp32",
                         mn_k->mr_bf16, mn_k->nr_bf16, 2, mn_k->esize_bf16,
                         mn_k->pack_a_bf16, mn_k->pack_b_bf16, mn_k->kernel_bf16, NULL, NULL,
                         NULL, NULL, NULL, NULL, NULL, NULL};
    return s;
}

static inline const char* mn_kernel_isa(void) { return mn_k->isa; }
#define mn_gemm_mr() (mn_k->mr)
#define mn_gemm_mr_short() (mn_k->mr_short)
#define mn_gemm_nr(itemsize) ((itemsize) == 4 ? mn_k->nr_f32 : mn_k->nr_f64)
#define mn_small_ok() (mn_k->small_ok)
#define mn_tab_mr(nv, taller) (mn_k->tab_mr[(nv) == 1 ? 0 : 1][(taller) ? 1 : 0])
#define mn_tab_slide(nv, taller) (mn_k->tab_slide[(nv) == 1 ? 0 : 1][(taller) ? 1 : 0])
#define mn_wg_slide() (mn_k->wg_slide)
#define mn_tab_one() (mn_k->tab_one)
#define mn_wg_slide_mr() (mn_k->wg_slide_mr)

#define MN_K(name) (mn_k->name)
#define mn_kernel_f32 MN_K(kernel_f32)
#define mn_kernel_f64 MN_K(kernel_f64)
#define mn_kernel_short_f32 MN_K(kernel_short_f32)
#define mn_kernel_short_f64 MN_K(kernel_short_f64)
#define mn_pack_a_rows_f32 MN_K(pack_a_rows_f32)
#define mn_pack_a_rows_f64 MN_K(pack_a_rows_f64)
#define mn_pack_b_t_f32 MN_K(pack_b_t_f32)
#define mn_pack_b_t_f64 MN_K(pack_b_t_f64)
#define mn_gemm_bc() (mn_k->bc)
#define mn_gemm_mr_bc() (mn_k->mr_bc)
#define mn_kernel_bc_f32 MN_K(kernel_bc_f32)
#define mn_kernel_bc_f64 MN_K(kernel_bc_f64)
#define mn_pack_a_bc_f32 MN_K(pack_a_bc_f32)
#define mn_pack_a_bc_f64 MN_K(pack_a_bc_f64)
#define mn_kernel_sb_f32 MN_K(kernel_sb_f32)
#define mn_kernel_sb_f64 MN_K(kernel_sb_f64)
#define mn_kernel_sb_short_f32 MN_K(kernel_sb_short_f32)
#define mn_kernel_sb_short_f64 MN_K(kernel_sb_short_f64)
#define mn_kernel_sa_f32 MN_K(kernel_sa_f32)
#define mn_kernel_sa_f64 MN_K(kernel_sa_f64)
#define mn_kernel_sa_half_f32 MN_K(kernel_sa_half_f32)
#define mn_kernel_sa_half_f64 MN_K(kernel_sa_half_f64)
#define mn_kernel_sa_short_f32 MN_K(kernel_sa_short_f32)
#define mn_kernel_sa_short_f64 MN_K(kernel_sa_short_f64)
#define mn_kernel_sa_short_half_f32 MN_K(kernel_sa_short_half_f32)
#define mn_kernel_sa_short_half_f64 MN_K(kernel_sa_short_half_f64)
#define mn_tail_dot_f32 MN_K(tail_dot_f32)
#define mn_tail_dot_f64 MN_K(tail_dot_f64)
#define mn_tail_lane_f32 MN_K(tail_lane_f32)
#define mn_tail_lane_f64 MN_K(tail_lane_f64)
#define mn_gemm_small_f32 MN_K(gemm_small_f32)
#define mn_gemm_small_f64 MN_K(gemm_small_f64)
#define mn_kernel_at_f32 MN_K(kernel_at_f32)
#define mn_kernel_at_f64 MN_K(kernel_at_f64)
#define mn_kernel_at_half_f32 MN_K(kernel_at_half_f32)
#define mn_kernel_at_half_f64 MN_K(kernel_at_half_f64)
#define mn_tab_kernel_f32 MN_K(tab_kernel_f32)
#define mn_tab_kernel_f64 MN_K(tab_kernel_f64)
#define mn_wg_kernel_f32 MN_K(wg_kernel_f32)
#define mn_wg_kernel_f64 MN_K(wg_kernel_f64)
#define mn_copy_window_f32 MN_K(copy_window_f32)
#define mn_copy_window_f64 MN_K(copy_window_f64)
#define mn_add_window_f32 MN_K(add_window_f32)
#define mn_add_window_f64 MN_K(add_window_f64)
#define mn_copy_rows_f32 MN_K(copy_rows_f32)
#define mn_copy_rows_f64 MN_K(copy_rows_f64)
#define mn_add_rows_f32 MN_K(add_rows_f32)
#define mn_add_rows_f64 MN_K(add_rows_f64)
#define mn_gather_t_f32 MN_K(gather_t_f32)
#define mn_gather_t_f64 MN_K(gather_t_f64)
#define mn_pack_rows_f32 MN_K(pack_rows_f32)
#define mn_pack_rows_f64 MN_K(pack_rows_f64)
#define mn_tile_to_nchw_f32 MN_K(tile_to_nchw_f32)
#define mn_gemm_mr_bf16() (mn_k->mr_bf16)
#define mn_gemm_nr_bf16() (mn_k->nr_bf16)
#define mn_gemm_esize_bf16() (mn_k->esize_bf16)
#define mn_pack_a_bf16 MN_K(pack_a_bf16)
#define mn_pack_b_bf16 MN_K(pack_b_bf16)
#define mn_kernel_bf16 MN_K(kernel_bf16)
#define mn_round_bf16 MN_K(round_bf16)
#endif
#endif
