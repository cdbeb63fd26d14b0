// The CUDA emulation header. The host build force-includes it (g++ -include) before every
// cuda_src/*.cu, so the kernels compile unchanged as C++ and run on fibers (runtime.cpp).
// Kernels never test for it; everything here is what nvcc would provide.
#pragma once
#include <cmath>
#include <math.h>      // libstdc++'s wrapper: the float overloads (exp(float) ...) in ::
#include <stdint.h>
#include <string.h>
#include <string>
#include <type_traits>
#include <utility>

#define __CUDA_ARCH__ 800

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
    dim3(uint3 u) : x(u.x), y(u.y), z(u.z) {}
};

// The runtime (libmnemu, not instrumented). The index getters return by value: a checked
// build then never reads runtime memory, and `const` lets them be hoisted within a thread.
extern "C" {
uint3 mn_emu_thread_idx() __attribute__((const));
uint3 mn_emu_block_idx() __attribute__((const));
uint3 mn_emu_block_dim() __attribute__((const));
uint3 mn_emu_grid_dim() __attribute__((const));
void mn_emu_syncthreads(const char* file, int line);
uint64_t mn_emu_shfl(unsigned mask, uint64_t value, int src_lane, int line);
unsigned mn_emu_ballot(unsigned mask, int pred, int line);
unsigned mn_emu_activemask();
uint64_t mn_emu_atomic(int op, int kind, void* addr, uint64_t value, uint64_t compare);
[[noreturn]] void mn_emu_fail(const char* what, const char* file, int line);
}

#define __global__   // hidden (-fvisibility=hidden): reached through the table, never by name,
                     // so a kernel called like a libc function (write) still binds to itself
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
// One instance per OS thread = per block (a worker runs one block at a time); a block-scope
// thread_local is implicitly static. The runtime poisons the module's TLS block per block.
#define __shared__ thread_local

#define threadIdx (mn_emu_thread_idx())
#define blockIdx (mn_emu_block_idx())
#define blockDim (mn_emu_block_dim())
#define gridDim (mn_emu_grid_dim())
#define warpSize 32

#define __syncthreads() mn_emu_syncthreads(__FILE__, __LINE__)
#define __trap() mn_emu_fail("__trap() called", __FILE__, __LINE__)
#define __threadfence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define __threadfence_block() __atomic_thread_fence(__ATOMIC_SEQ_CST)

namespace mn_emu {
template <typename T> inline uint64_t bits(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles and atomics move at most 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}
template <typename T> inline T unbits(uint64_t u) { T v; memcpy(&v, &u, sizeof v); return v; }

inline unsigned lane() {
    uint3 t = mn_emu_thread_idx(), d = mn_emu_block_dim();
    return (t.x + d.x * (t.y + d.y * t.z)) & 31;
}
// The value of lane `src` (or our own when src is out of the width segment), as PTX shfl.
template <typename T> inline T shfl(unsigned mask, T v, int src, int line) {
    return unbits<T>(mn_emu_shfl(mask, bits(v), src, line));
}

enum { ADD, SUB, EXCH, MIN, MAX, CAS, AND, OR, XOR };
template <typename T> constexpr int kind() {
    return std::is_floating_point<T>::value ? (sizeof(T) == 4 ? 4 : 5)
                                            : (sizeof(T) == 4 ? 0 : 2) + !std::is_signed<T>::value;
}
template <typename T> inline T atomic(int op, T* p, T v, T cmp = T()) {
    return unbits<T>(mn_emu_atomic(op, kind<T>(), (void*)p, bits(v), bits(cmp)));
}
}  // namespace mn_emu

#define MN_EMU_SEG(width) (mn_emu::lane() & ~((unsigned)(width) - 1))
template <typename T> inline T mn_shfl_sync(unsigned m, T v, int src, int w, int line) {
    return mn_emu::shfl(m, v, MN_EMU_SEG(w) + ((unsigned)src & (w - 1)), line);
}
template <typename T> inline T mn_shfl_down_sync(unsigned m, T v, unsigned d, int w, int line) {
    unsigned l = mn_emu::lane();
    return mn_emu::shfl(m, v, (l & (w - 1)) + d < (unsigned)w ? l + d : l, line);
}
template <typename T> inline T mn_shfl_up_sync(unsigned m, T v, unsigned d, int w, int line) {
    unsigned l = mn_emu::lane();
    return mn_emu::shfl(m, v, (l & (w - 1)) >= d ? l - d : l, line);
}
template <typename T> inline T mn_shfl_xor_sync(unsigned m, T v, unsigned x, int w, int line) {
    unsigned l = mn_emu::lane(), s = l ^ x;
    return mn_emu::shfl(m, v, (s & ~(unsigned)(w - 1)) == MN_EMU_SEG(w) ? s : l, line);
}
#define MN_EMU_W(m, v, s, w, ...) (m, v, s, w, __LINE__)
#define __shfl_sync(...) mn_shfl_sync MN_EMU_W(__VA_ARGS__, 32, 0)
#define __shfl_down_sync(...) mn_shfl_down_sync MN_EMU_W(__VA_ARGS__, 32, 0)
#define __shfl_up_sync(...) mn_shfl_up_sync MN_EMU_W(__VA_ARGS__, 32, 0)
#define __shfl_xor_sync(...) mn_shfl_xor_sync MN_EMU_W(__VA_ARGS__, 32, 0)
#define __ballot_sync(m, p) mn_emu_ballot(m, (p) != 0, __LINE__)
#define __any_sync(m, p) (mn_emu_ballot(m, (p) != 0, __LINE__) != 0)
#define __all_sync(m, p) (mn_emu_ballot(m, (p) != 0, __LINE__) == (unsigned)(m))
#define __syncwarp(...) ((void)mn_emu_ballot(MN_EMU_MASK(__VA_ARGS__ + 0), 1, __LINE__))
#define MN_EMU_MASK(m) ((m) ? (unsigned)(m) : 0xffffffffu)
#define __activemask() mn_emu_activemask()

template <typename T> inline T atomicAdd(T* p, T v) { return mn_emu::atomic(mn_emu::ADD, p, v); }
template <typename T> inline T atomicSub(T* p, T v) { return mn_emu::atomic(mn_emu::SUB, p, v); }
template <typename T> inline T atomicExch(T* p, T v) { return mn_emu::atomic(mn_emu::EXCH, p, v); }
template <typename T> inline T atomicMin(T* p, T v) { return mn_emu::atomic(mn_emu::MIN, p, v); }
template <typename T> inline T atomicMax(T* p, T v) { return mn_emu::atomic(mn_emu::MAX, p, v); }
template <typename T> inline T atomicAnd(T* p, T v) { return mn_emu::atomic(mn_emu::AND, p, v); }
template <typename T> inline T atomicOr(T* p, T v) { return mn_emu::atomic(mn_emu::OR, p, v); }
template <typename T> inline T atomicXor(T* p, T v) { return mn_emu::atomic(mn_emu::XOR, p, v); }
template <typename T> inline T atomicCAS(T* p, T c, T v) { return mn_emu::atomic(mn_emu::CAS, p, v, c); }

template <typename T> inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <typename A, typename B> inline auto min(A a, B b) -> typename std::common_type<A, B>::type {
    return b < a ? b : a;
}
template <typename A, typename B> inline auto max(A a, B b) -> typename std::common_type<A, B>::type {
    return a < b ? b : a;
}

// The kernel table of a host build: the build appends MN_EMU_TABLE(MN_EMU_KERNEL(name) ...)
// after the .cu, from the extern "C" __global__ names it found by preprocessing the source.
struct mn_emu_kernel {
    const char* name;
    void* fn;
    void (*thunk)(void* fn, const char* params);  // unpacks a cuLaunchKernel param buffer
    const char* signature;                         // "P8.8 S96.8 q8.8": kind, size.align
    void* (*tls)();                                // an address in the module's TLS block
};

namespace mn_emu {
template <typename T> std::string param() {
    char k = std::is_pointer<T>::value ? 'P' : std::is_floating_point<T>::value ? 'f'
           : std::is_integral<T>::value || std::is_enum<T>::value ? 'i' : 'S';
    return k + std::to_string(sizeof(T)) + "." + std::to_string(alignof(T)) + " ";
}
template <typename... A> const char* signature() {
    static const std::string s = (std::string() + ... + param<A>());
    return s.c_str();
}
// The byte offset of each parameter in the buffer: each aligned to its type, as the driver.
template <typename... A> constexpr auto offsets() {
    size_t size[] = {sizeof(A)..., 0}, align[] = {alignof(A)..., 1}, off[] = {0 * sizeof(A)..., 0};
    for (size_t i = 0, at = 0; i < sizeof...(A); at = off[i] + size[i], ++i)
        off[i] = (at + align[i] - 1) / align[i] * align[i];
    struct R { size_t v[sizeof...(A) + 1]; } r{};
    for (size_t i = 0; i < sizeof...(A); ++i) r.v[i] = off[i];
    return r;
}
template <typename T> inline T load(const char* p) { T v; memcpy((void*)&v, p, sizeof v); return v; }
template <typename... A, size_t... I>
inline void call(void (*fn)(A...), const char* buf, std::index_sequence<I...>) {
    constexpr auto off = offsets<A...>();
    fn(load<A>(buf + off.v[I])...);
    (void)off;
}
template <typename... A> void thunk(void* fn, const char* buf) {
    call((void (*)(A...))fn, buf, std::index_sequence_for<A...>{});
}
inline thread_local char tls_anchor;
inline void* tls() { return &tls_anchor; }
template <typename... A> mn_emu_kernel describe(const char* name, void (*fn)(A...)) {
    return {name, (void*)fn, &thunk<A...>, signature<A...>(), &tls};
}
}  // namespace mn_emu

#define MN_EMU_KERNEL(name) mn_emu::describe(#name, &name),
#define MN_EMU_TABLE(...)                                                                  \
    extern "C" __attribute__((visibility("default"))) int mn_emu_kernels(const mn_emu_kernel** t) { \
        static const mn_emu_kernel table[] = {__VA_ARGS__};                                \
        *t = table;                                                                        \
        return (int)(sizeof table / sizeof *table);                                        \
    }
