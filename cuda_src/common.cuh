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

// Item offset of the i-th element (row-major order over shape) of a view.
__device__ __forceinline__ long long view_offset(const View& v, long long i) {
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

// Op codes: the same tables as mininet_ext/_ewise.h and mininet/backend/opcodes.py.
template <typename T>
__device__ __forceinline__ T binary_op(int op, T a, T b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return pow(a, b);
        case 5: return (a > b || a != a) ? a : b;
        case 6: return (a < b || a != a) ? a : b;
        case 7: return a == b;
        case 8: return a != b;
        case 9: return a < b;
        case 10: return a <= b;
        case 11: return a > b;
        default: return a >= b;
    }
}

template <typename T>
__device__ __forceinline__ T unary_op(int op, T a) {
    switch (op) {
        case 0: return -a;
        case 1: return a < 0 ? -a : a;
        case 2: return exp(a);
        case 3: return log(a);
        case 4: return sqrt(a);
        case 5: return tanh(a);
        case 6: return T(1) / (T(1) + exp(-a));
        case 7: return a < 0 ? T(0) : a;  // NaN stays NaN, as numpy and torch
        case 8: return a != a ? a : T((a > 0) - (a < 0));
        default: return a * a;
    }
}

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
