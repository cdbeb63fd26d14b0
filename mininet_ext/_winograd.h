/* Winograd F(4x4, 3x3) and F(2x2, 5x5) convolution kernels (winograd.pyx drives them): the transforms
 * in float and double (_winograd_t.h) around the GEMM micro-kernels of the kernel table
 * (_isa.h), which the including module binds. */
#ifndef MN_WINOGRAD_H
#define MN_WINOGRAD_H
#include <string.h>
#include "_isa.h"

/* 32-byte vectors: every ISA's micro-kernel width (nr: 8..32 floats, 4..16 doubles) is a
 * multiple of them, and Zen 4 runs a 512-bit operation as two 256-bit halves anyway. */
#define WINO_VBYTES 32
/* Input channels per micro-kernel call: one B panel (KC x nr) stays in L1. */
#define WINO_KC 256
/* Padding after each of a block's 36 V and M rows (items; 64 bytes or more), so that the
 * rows do not share L1 sets (wino_block) */
#define WINO_ROW_PAD 16
#define WCAT_(a, b) a##b
#define WCAT(a, b) WCAT_(a, b)

typedef struct wino_geom {
    mn_idx N, C, H, W, K, OH, OW, ph, pw;
    mn_idx th, tw, T;      /* m x m output tiles down, across, in all */
    mn_idx nb, kp;         /* tiles per block (a multiple of nr); K rounded up to mr */
    int nr, mr;            /* micro-kernel width and height */
    int r, m;              /* filter size (3 or 5) and output tile size (4 or 2): 6x6 patches */
} wino_geom;

#define WT float
#define WS f32
#include "_winograd_t.h"
#undef WT
#undef WS
#define WT double
#define WS f64
#include "_winograd_t.h"
#undef WT
#undef WS
#endif
