// Strided copy (compact, setitem, broadcasting assignment) and fill.
#include "common.cuh"

// dst[view d] = src[view s] for n elements; words of 4 or 8 bytes (any dtype).
template <typename W>
__device__ void copy_words(W* dst, View d, const W* src, View s, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = src[view_offset(s, i)];
}

extern "C" __global__ void copy_4(uint32_t* dst, View d, const uint32_t* src, View s, long long n) {
    copy_words(dst, d, src, s, n);
}
extern "C" __global__ void copy_8(uint64_t* dst, View d, const uint64_t* src, View s, long long n) {
    copy_words(dst, d, src, s, n);
}

extern "C" __global__ void fill_f32(float* dst, View d, float value, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = value;
}
extern "C" __global__ void fill_f64(double* dst, View d, double value, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = value;
}
extern "C" __global__ void fill_i64(long long* dst, View d, double value, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = (long long)value;
}

// dst[view d] = (D)src[view s]: dtype conversion on the device (C's conversions, as numpy's
// astype: float to int truncates toward zero)
#define MN_CAST(S, SN, D, DN)                                                               \
    extern "C" __global__ void cast_##SN##_##DN(D* dst, View d, const S* src, View s,       \
                                                long long n) {                              \
        GRID_STRIDE(i, n) dst[view_offset(d, i)] = (D)src[view_offset(s, i)];               \
    }

MN_CAST(float, f32, double, f64)
MN_CAST(float, f32, long long, i64)
MN_CAST(double, f64, float, f32)
MN_CAST(double, f64, long long, i64)
MN_CAST(long long, i64, float, f32)
MN_CAST(long long, i64, double, f64)
