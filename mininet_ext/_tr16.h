/* Square transposes in vector registers (GCC vector extensions, any ISA): N vectors of
 * N lanes, r[i][k] -> r[k][i], in log2(N) stages of two-source shuffles; stage s swaps
 * the off-diagonal s x s blocks of every 2s x 2s block (rows i and i + s, i & s == 0):
 * row i takes a's lanes where k & s == 0 and b's lanes k - s elsewhere, row i + s a's
 * lanes k + s and b's own. 16 x 16 float32 is 64 shuffles (vpermt2ps with AVX-512) for
 * 256 values, against a scalar load and store per value.
 *
 * MN_DEF_TR<N>(NAME, V, IV) defines static void NAME(V* r) for a vector type V of N
 * lanes (N = 2, 4, 8, 16) and an integer vector type IV of the same size and lane count.
 * The masks are literal constants: computed in a loop, gcc folded them with AVX-512 but
 * built them at run time with AVX2 (vinserti128 ... around vpermps + vblendvps). */
#ifndef MN_TR16_H
#define MN_TR16_H

#define MN_TR_STAGE(V, IV, N, s, LO, HI)                                           \
    {                                                                              \
        const IV lo = LO, hi = HI;                                                 \
        _Pragma("GCC unroll 16")                                                   \
        for (int i = 0; i < (N); i++)                                              \
            if (!(i & (s))) {                                                      \
                V a = r[i], b = r[i + (s)];                                        \
                r[i] = __builtin_shuffle(a, b, lo);                                \
                r[i + (s)] = __builtin_shuffle(a, b, hi);                          \
            }                                                                      \
    }

#define MN_DEF_TR16(NAME, V, IV)                                                   \
static inline void NAME(V* r)                                                      \
{                                                                                  \
    MN_TR_STAGE(V, IV, 16, 8, ((IV){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}), \
                ((IV){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31})) \
    MN_TR_STAGE(V, IV, 16, 4, ((IV){0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}), \
                ((IV){4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31})) \
    MN_TR_STAGE(V, IV, 16, 2, ((IV){0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}), \
                ((IV){2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31})) \
    MN_TR_STAGE(V, IV, 16, 1, ((IV){0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}), \
                ((IV){1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31})) \
}

#define MN_DEF_TR8(NAME, V, IV)                                                    \
static inline void NAME(V* r)                                                      \
{                                                                                  \
    MN_TR_STAGE(V, IV, 8, 4, ((IV){0, 1, 2, 3, 8, 9, 10, 11}), ((IV){4, 5, 6, 7, 12, 13, 14, 15})) \
    MN_TR_STAGE(V, IV, 8, 2, ((IV){0, 1, 8, 9, 4, 5, 12, 13}), ((IV){2, 3, 10, 11, 6, 7, 14, 15})) \
    MN_TR_STAGE(V, IV, 8, 1, ((IV){0, 8, 2, 10, 4, 12, 6, 14}), ((IV){1, 9, 3, 11, 5, 13, 7, 15})) \
}

#define MN_DEF_TR4(NAME, V, IV)                                                    \
static inline void NAME(V* r)                                                      \
{                                                                                  \
    MN_TR_STAGE(V, IV, 4, 2, ((IV){0, 1, 4, 5}), ((IV){2, 3, 6, 7}))               \
    MN_TR_STAGE(V, IV, 4, 1, ((IV){0, 4, 2, 6}), ((IV){1, 5, 3, 7}))               \
}

#define MN_DEF_TR2(NAME, V, IV)                                                    \
static inline void NAME(V* r)                                                      \
{                                                                                  \
    MN_TR_STAGE(V, IV, 2, 1, ((IV){0, 2}), ((IV){1, 3}))                           \
}

/* The 64-byte blocks: 16 x 16 float32 and 8 x 8 float64 (a zmm register a row with
 * AVX-512; narrower ISAs split them). */
typedef float mn_tr16f __attribute__((vector_size(64)));
typedef int mn_tr16i __attribute__((vector_size(64)));
typedef double mn_tr8d __attribute__((vector_size(64)));
typedef long long mn_tr8l __attribute__((vector_size(64)));
MN_DEF_TR16(mn_tr16_f32, mn_tr16f, mn_tr16i)
MN_DEF_TR8(mn_tr8_f64, mn_tr8d, mn_tr8l)
#endif
