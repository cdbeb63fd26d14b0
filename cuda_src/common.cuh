// Shared by every kernel file: index math for strided views and the op tables.
#pragma once
#include <stdint.h>

#define MN_MAXDIM 6
#define MN_THREADS 256

// A strided view of up to MN_MAXDIM dims (dims already collapsed on the host),
// passed by value: kernel parameters, no device-side metadata buffers.
struct View {
    long long shape[MN_MAXDIM];
    long long stride[MN_MAXDIM];
};

// Item offset of the i-th element (row-major order over shape) of a view. The host
// collapses dims and pads with leading 1s, so a view whose next-to-last dim is 1 is one
// strided run: no divisions (the common contiguous case; uniform across the launch).
__device__ __forceinline__ long long view_offset(const View& v, long long i) {
    if (v.shape[MN_MAXDIM - 2] == 1) return i * v.stride[MN_MAXDIM - 1];
    long long off = 0;
#pragma unroll
    for (int d = MN_MAXDIM - 1; d >= 0; --d) {
        long long n = v.shape[d];
        off += (i % n) * v.stride[d];
        i /= n;
    }
    return off;
}

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Warp-shuffle sum, the last step of the block reductions.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Sum of one value per thread over the block; the result is valid in thread 0.
__device__ __forceinline__ double block_sum(double s) {
    __shared__ double part[MN_THREADS / 32];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    s = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0;
    return threadIdx.x < 32 ? warp_sum(s) : s;
}
