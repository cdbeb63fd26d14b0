/* The FMA peak loop, shared by peak.pyx (this build's flags) and each _kern_<isa> module
 * (that kernel set's flags): MN_PK_CHAINS independent chains x <- x * a + b in vector
 * registers. An FMA (or a multiply then an add without -mfma) has 3-4 cycles latency and
 * two pipes, so 8-12 chains in flight fill them; 12 + the two operands fit in 16
 * registers. a, b, n are run-time values, so nothing folds away. */
#ifndef MN_PEAK_FMA_H
#define MN_PEAK_FMA_H
#define MN_PK_CHAINS 12
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define MN_PK_FUSED 1
#else
#define MN_PK_FUSED 0
#endif
/* chain j starts at x0 + j in every lane; returns the sum of all lanes of all chains */
#define MN_PK_FMA_BODY(V, T)                                                        \
{                                                                                   \
    V va = (V){0} + a, vb = (V){0} + b, acc[MN_PK_CHAINS];                          \
    _Pragma("GCC unroll 16")                                                        \
    for (int j = 0; j < MN_PK_CHAINS; j++) acc[j] = (V){0} + (T)(x0 + j);           \
    for (long long i = 0; i < n; i++) {                                             \
        _Pragma("GCC unroll 16")                                                    \
        for (int j = 0; j < MN_PK_CHAINS; j++) acc[j] = acc[j] * va + vb;           \
    }                                                                               \
    double sum = 0;                                                                 \
    for (int j = 0; j < MN_PK_CHAINS; j++)                                          \
        for (int l = 0; l < (int)(sizeof(V) / sizeof(T)); l++) sum += acc[j][l];     \
    return sum;                                                                     \
}
#endif
