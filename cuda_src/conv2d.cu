// Implicit-GEMM convolution (NCHW, weights (K, C/groups, kh, kw), all compact): the
// forward pass and both backward passes are one tiled GEMM each whose operands are read
// straight from x, w and the output gradient, so no im2col buffer exists. The three
// problems differ only in how an operand element and an output element are addressed
// (the structs below); the tiling is shared.
#include "common.cuh"

struct ConvGeom {
    int N, C, H, W, K, groups, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
};

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16

// C (M x Ncols) = A (M x Kd) B (Kd x Ncols) for the problem P of one group, summed over
// kk in [k_begin, Kd) (a split-K slice): 256 threads, a 64 x 64 tile of C per block,
// 4 x 4 per thread (rows ty + 16 i, columns tx + 16 j, so neighbouring threads touch
// neighbouring shared words).
template <typename T, typename P>
__device__ void tiled_gemm(const P& p, long long M, long long Ncols, long long Kd,
                           long long k_begin = 0) {
    __shared__ T As[TILE_K][TILE_M];
    __shared__ T Bs[TILE_K][TILE_N];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    long long m0 = (long long)blockIdx.y * TILE_M, n0 = (long long)blockIdx.x * TILE_N;
    T acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (long long k0 = k_begin; k0 < Kd; k0 += TILE_K) {
        for (int e = threadIdx.x; e < TILE_K * TILE_M; e += blockDim.x) {
            int kk = e / TILE_M, mm = e % TILE_M;
            As[kk][mm] = (m0 + mm < M && k0 + kk < Kd) ? p.a(m0 + mm, k0 + kk) : (T)0;
        }
        for (int e = threadIdx.x; e < TILE_K * TILE_N; e += blockDim.x) {
            int kk = e / TILE_N, nn = e % TILE_N;
            Bs[kk][nn] = (n0 + nn < Ncols && k0 + kk < Kd) ? p.b(k0 + kk, n0 + nn) : (T)0;
        }
        __syncthreads();
        for (int kk = 0; kk < TILE_K; ++kk) {
            T a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            long long m = m0 + ty + 16 * i, c = n0 + tx + 16 * j;
            if (m < M && c < Ncols) p.store(m, c, acc[i][j]);
        }
}

// x[n, grp*Cg + ci, oh*sh - ph + i*dh, ow*sw - pw + j*dw], 0 in the padding
template <typename T>
__device__ __forceinline__ T x_at(const T* x, const ConvGeom& g, int grp, long long n, int ci,
                                  int i, int j, int oh, int ow) {
    int ih = oh * g.sh - g.ph + i * g.dh, iw = ow * g.sw - g.pw + j * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0;
    int c = grp * (g.C / g.groups) + ci;
    return x[((n * g.C + c) * g.H + ih) * (long long)g.W + iw];
}

// forward: out[n, k, oh, ow] = bias[k] + sum over (ci, i, j) of w[k, ci, i, j] x[...]
// M = K/groups (k), Ncols = N*OH*OW, Kd = Cg*kh*kw
template <typename T>
struct Forward {
    const T *x, *w, *bias;
    T* out;
    ConvGeom g;
    __device__ T a(long long m, long long kk) const {
        long long k = blockIdx.z * (g.K / g.groups) + m;
        return w[k * ((long long)(g.C / g.groups) * g.kh * g.kw) + kk];
    }
    __device__ T b(long long kk, long long col) const {
        int taps = g.kh * g.kw, r = kk % taps;
        long long q = col % ((long long)g.OH * g.OW);
        return x_at(x, g, (int)blockIdx.z, col / ((long long)g.OH * g.OW), (int)(kk / taps),
                    r / g.kw, r % g.kw, (int)(q / g.OW), (int)(q % g.OW));
    }
    __device__ void store(long long m, long long col, T v) const {
        long long k = blockIdx.z * (g.K / g.groups) + m, P = (long long)g.OH * g.OW;
        out[((col / P) * g.K + k) * P + col % P] = v + (bias ? bias[k] : (T)0);
    }
};

// input gradient: dx[n, c, h, w] = sum over (k, i, j) of w[k, ci, i, j] gout[n, k, oh, ow]
// where h = oh*sh - ph + i*dh (so oh is found by division; taps that miss the grid add 0)
// M = Cg (ci), Ncols = N*H*W, Kd = Kg*kh*kw
template <typename T>
struct GradInput {
    const T *gout, *w;
    T* dx;
    ConvGeom g;
    __device__ T a(long long m, long long kk) const {
        int taps = g.kh * g.kw, Kg = g.K / g.groups, Cg = g.C / g.groups;
        long long k = blockIdx.z * Kg + kk / taps;
        return w[(k * Cg + m) * taps + kk % taps];
    }
    __device__ T b(long long kk, long long col) const {
        int taps = g.kh * g.kw, r = kk % taps, i = r / g.kw, j = r % g.kw;
        long long hw = (long long)g.H * g.W, q = col % hw, n = col / hw;
        int y = (int)(q / g.W) + g.ph - i * g.dh, xx = (int)(q % g.W) + g.pw - j * g.dw;
        if (y < 0 || xx < 0 || y % g.sh || xx % g.sw) return 0;
        int oh = y / g.sh, ow = xx / g.sw;
        if (oh >= g.OH || ow >= g.OW) return 0;
        long long k = blockIdx.z * (g.K / g.groups) + kk / taps;
        return gout[((n * g.K + k) * g.OH + oh) * (long long)g.OW + ow];
    }
    __device__ void store(long long m, long long col, T v) const {
        long long hw = (long long)g.H * g.W, c = blockIdx.z * (g.C / g.groups) + m;
        dx[((col / hw) * g.C + c) * hw + col % hw] = v;
    }
};

// weight gradient: dw[k, ci, i, j] = sum over (n, oh, ow) of gout[n, k, oh, ow] x[...]
// M = Kg (k), Ncols = Cg*kh*kw, Kd = N*OH*OW. Split-K: blockIdx.z = grp * splits + slice,
// each slice sums its kk and, when there are several, atomicAdds into dw (zeroed first).
template <typename T>
struct GradWeight {
    const T *gout, *x;
    T* dw;
    ConvGeom g;
    int grp;
    bool split;
    __device__ T a(long long m, long long kk) const {
        long long P = (long long)g.OH * g.OW, k = grp * (long long)(g.K / g.groups) + m;
        return gout[((kk / P) * g.K + k) * P + kk % P];
    }
    __device__ T b(long long kk, long long col) const {
        int taps = g.kh * g.kw, r = col % taps;
        long long P = (long long)g.OH * g.OW, q = kk % P;
        return x_at(x, g, grp, kk / P, (int)(col / taps), r / g.kw, r % g.kw, (int)(q / g.OW),
                    (int)(q % g.OW));
    }
    __device__ void store(long long m, long long col, T v) const {
        long long k = grp * (long long)(g.K / g.groups) + m;
        T* at = dw + k * ((long long)(g.C / g.groups) * g.kh * g.kw) + col;
        if (split)
            atomicAdd(at, v);
        else
            *at = v;
    }
};

// db[k] = sum over n and pixels of gout[n, k, :, :], in two steps so that every SM works
// and the order of the sum is fixed: block (k, s) sums images s, s + S, ... of channel k
// (each a run of P contiguous values: coalesced, no division) into part[k * S + s], then
// one thread a channel adds its S partials in order. One block a channel (16 blocks for
// the MNIST CNN's first layer) summed 36 GB/s on an H200.
template <typename T>
__device__ void bias_grad_part(const T* gout, double* part, int N, int K, long long P) {
    int S = gridDim.y, s = blockIdx.y;
    for (int k = blockIdx.x; k < K; k += gridDim.x) {
        double acc = 0;
        for (long long n = s; n < N; n += S) {
            const T* row = gout + (n * K + k) * P;
            for (long long q = threadIdx.x; q < P; q += blockDim.x) acc += row[q];
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) part[(long long)k * S + s] = acc;
        __syncthreads();   // block_sum's scratch is reused by the next channel
    }
}

template <typename T>
__device__ void bias_grad_sum(const double* part, T* db, int K, int S) {
    GRID_STRIDE(k, K) {
        double acc = 0;
        for (int s = 0; s < S; ++s) acc += part[k * S + s];
        db[k] = (T)acc;
    }
}

#define MN_CONV2D(T, S)                                                                        \
    extern "C" __global__ void conv2d_forward_##S(const T* x, const T* w, const T* bias,      \
                                                  T* out, ConvGeom g) {                       \
        Forward<T> p{x, w, bias, out, g};                                                     \
        tiled_gemm<T>(p, g.K / g.groups, (long long)g.N * g.OH * g.OW,                        \
                      (long long)(g.C / g.groups) * g.kh * g.kw);                             \
    }                                                                                          \
    extern "C" __global__ void conv2d_grad_input_##S(const T* gout, const T* w, T* dx,        \
                                                     ConvGeom g) {                            \
        GradInput<T> p{gout, w, dx, g};                                                       \
        tiled_gemm<T>(p, g.C / g.groups, (long long)g.N * g.H * g.W,                          \
                      (long long)(g.K / g.groups) * g.kh * g.kw);                             \
    }                                                                                          \
    extern "C" __global__ void conv2d_grad_weight_##S(const T* gout, const T* x, T* dw,       \
                                                      ConvGeom g, long long chunk) {          \
        int splits = gridDim.z / g.groups, slice = blockIdx.z % splits;                       \
        GradWeight<T> p{gout, x, dw, g, (int)(blockIdx.z / splits), splits > 1};              \
        long long kd = (long long)g.N * g.OH * g.OW, k0 = slice * chunk;                      \
        tiled_gemm<T>(p, g.K / g.groups, (long long)(g.C / g.groups) * g.kh * g.kw,           \
                      k0 + chunk < kd ? k0 + chunk : kd, k0);                                 \
    }                                                                                          \
    extern "C" __global__ void conv2d_grad_bias_##S(const T* gout, double* part, int N,       \
                                                    int K, long long P) {                     \
        bias_grad_part<T>(gout, part, N, K, P);                                               \
    }                                                                                          \
    extern "C" __global__ void conv2d_grad_bias_sum_##S(const double* part, T* db, int K,     \
                                                        int slices) {                         \
        bias_grad_sum<T>(part, db, K, slices);                                                \
    }

MN_CONV2D(float, f32)
MN_CONV2D(double, f64)
