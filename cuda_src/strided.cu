// Strided copy (compact, setitem, broadcasting assignment) and fill.
#include "common.cuh"

// dst[view d] = src[view s] for n elements; words of 1, 4 or 8 bytes (any dtype).
template <typename W>
__device__ void copy_words(W* dst, View d, const W* src, View s, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = src[view_offset(s, i)];
}

extern "C" __global__ void copy_1(uint8_t* dst, View d, const uint8_t* src, View s, long long n) {
    copy_words(dst, d, src, s, n);
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
// A float as int64, truncated toward zero; NaN, infinities and values out of range give
// INT64_MIN, as numpy's astype on x86. C leaves those undefined (a GPU saturates: NaN -> 0,
// inf -> INT64_MAX, while the host gives INT64_MIN), so they are spelled out.
template <typename F>
__device__ __forceinline__ long long to_i64(F x) {
    return (x >= (F)-9.2233720368547758e18 && x < (F)9.2233720368547758e18) ? (long long)x
                                                                          : (long long)(1ULL << 63);
}

template <typename D, typename S>
__device__ __forceinline__ D convert(S x) { return (D)x; }
template <>
__device__ __forceinline__ long long convert<long long, float>(float x) { return to_i64(x); }
template <>
__device__ __forceinline__ long long convert<long long, double>(double x) { return to_i64(x); }
// to bool: nonzero is true (NaN too, as numpy); from bool: any nonzero byte is 1
template <>
__device__ __forceinline__ uint8_t convert<uint8_t, float>(float x) { return x != 0.0f; }
template <>
__device__ __forceinline__ uint8_t convert<uint8_t, double>(double x) { return x != 0.0; }
template <>
__device__ __forceinline__ uint8_t convert<uint8_t, long long>(long long x) { return x != 0; }
template <>
__device__ __forceinline__ float convert<float, uint8_t>(uint8_t x) { return x != 0; }
template <>
__device__ __forceinline__ double convert<double, uint8_t>(uint8_t x) { return x != 0; }
template <>
__device__ __forceinline__ long long convert<long long, uint8_t>(uint8_t x) { return x != 0; }

extern "C" __global__ void fill_i64(long long* dst, View d, double value, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = to_i64(value);
}
extern "C" __global__ void fill_b8(uint8_t* dst, View d, double value, long long n) {
    GRID_STRIDE(i, n) dst[view_offset(d, i)] = value != 0.0;
}

// dst[view d] = src[view s] converted: dtype conversion on the device, as numpy's astype
#define MN_CAST(S, SN, D, DN)                                                               \
    extern "C" __global__ void cast_##SN##_##DN(D* dst, View d, const S* src, View s,       \
                                                long long n) {                              \
        GRID_STRIDE(i, n) dst[view_offset(d, i)] = convert<D, S>(src[view_offset(s, i)]);  \
    }

MN_CAST(float, f32, double, f64)
MN_CAST(float, f32, long long, i64)
MN_CAST(double, f64, float, f32)
MN_CAST(double, f64, long long, i64)
MN_CAST(long long, i64, float, f32)
MN_CAST(long long, i64, double, f64)
MN_CAST(float, f32, uint8_t, b8)
MN_CAST(double, f64, uint8_t, b8)
MN_CAST(long long, i64, uint8_t, b8)
MN_CAST(uint8_t, b8, float, f32)
MN_CAST(uint8_t, b8, double, f64)
MN_CAST(uint8_t, b8, long long, i64)
