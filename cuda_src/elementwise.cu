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

// Comparisons written straight into bool (1-byte) masks: out = (op(x, y) != 0).
template <typename T>
__device__ void compare(int op, const T* a, View va, const T* b, View vb, uint8_t* out,
                        long long n) {
    GRID_STRIDE(i, n) out[i] = binary_op<T>(op, a[view_offset(va, i)], b[view_offset(vb, i)]) != (T)0;
}

template <typename T>
__device__ void compare_scalar(int op, const T* a, View va, T s, int reverse, uint8_t* out,
                               long long n) {
    GRID_STRIDE(i, n) {
        T x = a[view_offset(va, i)];
        out[i] = (reverse ? binary_op<T>(op, s, x) : binary_op<T>(op, x, s)) != (T)0;
    }
}

#define MN_COMPARE(T, S)                                                                      \
    extern "C" __global__ void compare_##S(int op, const T* a, View va, const T* b, View vb,  \
                                           uint8_t* out, long long n) {                      \
        compare<T>(op, a, va, b, vb, out, n);                                                \
    }                                                                                         \
    extern "C" __global__ void compare_scalar_##S(int op, const T* a, View va, T s,           \
                                                  int reverse, uint8_t* out, long long n) {  \
        compare_scalar<T>(op, a, va, s, reverse, out, n);                                    \
    }

MN_COMPARE(float, f32)
MN_COMPARE(double, f64)

// Logical ops on bools (op 0 and, 1 or, 2 xor: backend/device.py LOGICAL); any nonzero
// byte is true.
extern "C" __global__ void logical_b8(int op, const uint8_t* a, View va, const uint8_t* b, View vb,
                                      uint8_t* out, long long n) {
    GRID_STRIDE(i, n) {
        bool x = a[view_offset(va, i)] != 0, y = b[view_offset(vb, i)] != 0;
        switch (op) {
            case 0: out[i] = x && y; break;
            case 1: out[i] = x || y; break;
            case 2: out[i] = x != y; break;
            default: __trap();
        }
    }
}
