// Tiled matmul C[b] = A[b] @ B[b]: 128x128 output tiles per block of 256 threads,
// an 8x8 register tile per thread, BK=8 slices of A and B staged in shared memory
// (double-buffered), guarded scalar stores to C. A and B may have any strides (transposed
// views included); the loads pick the coalesced direction. Batches run on gridDim.z
// with per-batch item offsets.
#include "common.cuh"

#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8

template <typename T>
__device__ __forceinline__ void load_tiles(const T* A, long long ars, long long acs,
                                           const T* B, long long brs, long long bcs,
                                           int M, int N, int K, int m0, int n0, int k0,
                                           T (*As)[BM], T (*Bs)[BN]) {
    int t = threadIdx.x;
#pragma unroll
    for (int r = 0; r < (BM * BK) / MN_THREADS; ++r) {
        int e = t + r * MN_THREADS, m, k;
        if (acs == 1) { k = e % BK; m = e / BK; } else { m = e % BM; k = e / BM; }
        int gm = m0 + m, gk = k0 + k;
        As[k][m] = (gm < M && gk < K) ? A[gm * ars + gk * acs] : T(0);
    }
#pragma unroll
    for (int r = 0; r < (BN * BK) / MN_THREADS; ++r) {
        int e = t + r * MN_THREADS, n, k;
        if (bcs == 1 || brs != 1) { n = e % BN; k = e / BN; } else { k = e % BK; n = e / BK; }
        int gn = n0 + n, gk = k0 + k;
        Bs[k][n] = (gn < N && gk < K) ? B[gk * brs + gn * bcs] : T(0);
    }
}

template <typename T>
__device__ void gemm_tile(const T* A, long long ars, long long acs, const T* B, long long brs,
                          long long bcs, T* C, int M, int N, int K) {
    __shared__ T As[2][BK][BM];
    __shared__ T Bs[2][BK][BN];
    int tx = threadIdx.x % (BN / TN), ty = threadIdx.x / (BN / TN);
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    T acc[TM][TN] = {};
    T a[TM], b[TN];
    load_tiles(A, ars, acs, B, brs, bcs, M, N, K, m0, n0, 0, As[0], Bs[0]);
    __syncthreads();
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += BK) {
        if (k0 + BK < K)  // stage the next slice while this one is used
            load_tiles(A, ars, acs, B, brs, bcs, M, N, K, m0, n0, k0 + BK, As[buf ^ 1], Bs[buf ^ 1]);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[buf][k][ty * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[buf][k][tx * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
        buf ^= 1;
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        int gm = m0 + ty * TM + i;
        if (gm >= M) break;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            int gn = n0 + tx * TN + j;
            if (gn < N) C[(long long)gm * N + gn] = acc[i][j];
        }
    }
}

#define MN_GEMM(T, S)                                                                         \
    extern "C" __global__ void __launch_bounds__(MN_THREADS)                                  \
    gemm_##S(const T* A, long long ars, long long acs, const long long* a_batch,              \
             const T* B, long long brs, long long bcs, const long long* b_batch, T* C,        \
             int M, int N, int K) {                                                           \
        long long z = blockIdx.z;                                                             \
        gemm_tile<T>(A + (a_batch ? a_batch[z] : 0), ars, acs, B + (b_batch ? b_batch[z] : 0), \
                     brs, bcs, C + z * (long long)M * N, M, N, K);                            \
    }

MN_GEMM(float, f32)
MN_GEMM(double, f64)
