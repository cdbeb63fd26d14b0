// Reductions of a compact (outer, red, inner) array over the middle axis:
// one block per output, a shared-memory tree, then a warp-shuffle finish.
#include "common.cuh"
#include "ops_gen.cuh"   // MN_REDUCE_*: generated from mininet/backend/opcodes.py

template <typename T>
__device__ __forceinline__ bool better(int op, T x, T best) {
    if (x != x) return best == best;  // NaN wins, as in numpy
    return (op == MN_REDUCE_MAX || op == MN_REDUCE_ARGMAX) ? x > best : x < best;
}

template <typename T>
__device__ void reduce_sum(const T* x, long long red, long long inner, T* out) {
    long long o = blockIdx.x, base = (o / inner) * red * inner + o % inner;
    double s = 0;
    for (long long r = threadIdx.x; r < red; r += blockDim.x) s += x[base + r * inner];
    s = block_sum(s);
    if (threadIdx.x == 0) out[o] = (T)s;
}

// max/min/argmax/argmin: (value, index) pairs through shared memory.
template <typename T>
__device__ void reduce_best(int op, const T* x, long long red, long long inner, T* out,
                            long long* idx) {
    __shared__ T val[MN_THREADS];
    __shared__ long long pos[MN_THREADS];
    long long o = blockIdx.x, base = (o / inner) * red * inner + o % inner;
    long long bi = -1;
    T best = 0;
    for (long long r = threadIdx.x; r < red; r += blockDim.x) {
        T v = x[base + r * inner];
        if (bi < 0 || better(op, v, best)) { best = v; bi = r; }
    }
    val[threadIdx.x] = best;
    pos[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            long long j = pos[threadIdx.x + s];
            T v = val[threadIdx.x + s];
            long long i = pos[threadIdx.x];
            // ties keep the first index, as numpy
            if (j >= 0 && (i < 0 || better(op, v, val[threadIdx.x]) ||
                           (v == val[threadIdx.x] && j < i))) {
                val[threadIdx.x] = v;
                pos[threadIdx.x] = j;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (op == MN_REDUCE_ARGMAX || op == MN_REDUCE_ARGMIN) idx[o] = pos[0];
        else out[o] = val[0];
    }
}

#define MN_REDUCE(T, S)                                                                     \
    extern "C" __global__ void reduce_##S(int op, const T* x, long long red, long long inner, \
                                          T* out, long long* idx) {                        \
        if (op == MN_REDUCE_SUM) reduce_sum<T>(x, red, inner, out);                         \
        else if (op >= MN_REDUCE_MAX && op <= MN_REDUCE_ARGMIN)                             \
            reduce_best<T>(op, x, red, inner, out, idx);                                    \
        else __trap();   /* an unknown op traps rather than computing another */             \
    }

MN_REDUCE(float, f32)
MN_REDUCE(double, f64)
