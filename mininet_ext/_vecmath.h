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
#endif
#endif
