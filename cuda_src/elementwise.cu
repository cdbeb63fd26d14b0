// Elementwise ops: strided (broadcast) inputs, compact output.
#include "common.cuh"
#include "ops_gen.cuh"   // binary_op, unary_op: generated from mininet/backend/opcodes.py

template <typename T>
__device__ void binary(int op, const T* a, View va, const T* b, View vb, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = binary_op<T>(op, a[view_offset(va, i)], b[view_offset(vb, i)]);
}

template <typename T>
__device__ void binary_scalar(int op, const T* a, View va, T s, int reverse, T* out, long long n) {
    GRID_STRIDE(i, n) {
        T x = a[view_offset(va, i)];
        out[i] = reverse ? binary_op<T>(op, s, x) : binary_op<T>(op, x, s);
    }
}

template <typename T>
__device__ void unary(int op, const T* a, View va, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = unary_op<T>(op, a[view_offset(va, i)]);
}

#define MN_EWISE(T, S)                                                                        \
    extern "C" __global__ void binary_##S(int op, const T* a, View va, const T* b, View vb,   \
                                          T* out, long long n) {                             \
        binary<T>(op, a, va, b, vb, out, n);                                                 \
    }                                                                                         \
    extern "C" __global__ void binary_scalar_##S(int op, const T* a, View va, T s,            \
                                                 int reverse, T* out, long long n) {         \
        binary_scalar<T>(op, a, va, s, reverse, out, n);                                     \
    }                                                                                         \
    extern "C" __global__ void unary_##S(int op, const T* a, View va, T* out, long long n) { \
        unary<T>(op, a, va, out, n);                                                         \
    }

MN_EWISE(float, f32)
MN_EWISE(double, f64)
