/* Vector math: tell gcc that glibc's libmvec has SIMD versions of the math functions
 * our kernels call, so their loops vectorise (exp over 16 floats per call instead of
 * one). glibc declares these itself only under -ffast-math, which would also drop our
 * NaN semantics; libmvec's functions keep NaN and infinities, within 4 ulp. setup.py
 * defines MN_LIBMVEC when the compiler and libc support it (and links -lmvec). */
#ifndef MN_VECMATH_H
#define MN_VECMATH_H
#include <math.h>
#if defined(MN_LIBMVEC) && defined(_OPENMP)
#define MN_SIMD_DECL(RET, NAME, ARG) _Pragma("omp declare simd notinbranch") RET NAME(ARG);
MN_SIMD_DECL(float, expf, float)
MN_SIMD_DECL(double, exp, double)
MN_SIMD_DECL(float, logf, float)
MN_SIMD_DECL(double, log, double)
MN_SIMD_DECL(float, tanhf, float)
MN_SIMD_DECL(double, tanh, double)
MN_SIMD_DECL(float, log1pf, float)
MN_SIMD_DECL(double, log1p, double)
MN_SIMD_DECL(float, expm1f, float)
MN_SIMD_DECL(double, expm1, double)
/* erf entered libmvec in glibc 2.35 (the wheel's glibc floor follows the build's) */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 35)
MN_SIMD_DECL(float, erff, float)
MN_SIMD_DECL(double, erf, double)
#endif
#endif
/* MN_WIDE: a function vectorised at 512 bits on AVX-512 builds, where gcc otherwise
 * prefers 256-bit vectors and calls libmvec's 8-wide functions. The softmax row took
 * 0.76x the time in cache with it (20 x 10000 cross-entropy rows, Xeon model 167, one
 * thread: 143 -> 109 us; 700 x 10000 from memory, 2 threads: 3.75 -> 2.62 ms). */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#define MN_WIDE __attribute__((target("prefer-vector-width=512")))
#else
#define MN_WIDE
#endif
#endif
