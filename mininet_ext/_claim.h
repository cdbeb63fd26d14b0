/* Work claims for a parallel loop over n chunks (declared in mininet_ext/_omp.pxd, with
 * claims_start, which raises where mn_claims_init fails).
 *
 * Thread t owns the contiguous share [n t / nt, n (t + 1) / nt) and takes it front to
 * back; a thread whose share is done takes the last chunk of the share with the most
 * left. So each thread works on the same chunks call after call (a kernel called again
 * on the same arrays, as every training step does, finds its share's input and output
 * lines in its own core's caches, not the other core's), while a thread slowed by its
 * core (another process on it) still leaves its work to the others, as
 * schedule='dynamic' did. A share is one 64-bit word, its next chunk in the low half
 * and its end in the high half, each on its own cache line; claims are compare-and-swap.
 * Which thread runs a chunk never changes what the chunk computes. */
#ifndef MN_CLAIM_H
#define MN_CLAIM_H
#include <stdint.h>
#include <stdlib.h>

typedef struct { uint64_t v; char pad[56]; } mn_claim_share;
typedef struct { mn_claim_share* s; int nt; void* mem; } mn_claims;

/* Claims initialised again for n chunks on the same threads (no allocation): only once
 * no thread claims from them any more, and before any thread claims the new chunks. */
static inline void mn_claims_reset(mn_claims* c, int64_t n)
{
    for (int t = 0; t < c->nt; t++) {
        uint64_t lo = (uint64_t)(n * t / c->nt), hi = (uint64_t)(n * (t + 1) / c->nt);
        __atomic_store_n(&c->s[t].v, lo | (hi << 32), __ATOMIC_RELAXED);
    }
}

/* 0, or -1 when out of memory or n does not fit 32 bits */
static inline int mn_claims_init(mn_claims* c, int64_t n, int nt)
{
    c->nt = nt < 1 ? 1 : nt;
    c->mem = malloc((size_t)(c->nt + 1) * sizeof(mn_claim_share));
    c->s = NULL;
    if (c->mem == NULL || n < 0 || n > (int64_t)UINT32_MAX) return -1;
    c->s = (mn_claim_share*)(((uintptr_t)c->mem + 63) & ~(uintptr_t)63);
    mn_claims_reset(c, n);
    return 0;
}

static inline void mn_claims_free(mn_claims* c) { free(c->mem); c->mem = NULL; c->s = NULL; }

/* The next chunk for thread t, or -1 when every share is done. */
static inline int64_t mn_claim(mn_claims* c, int t)
{
    mn_claim_share* s = c->s;
    uint64_t v = __atomic_load_n(&s[t].v, __ATOMIC_RELAXED);
    while ((uint32_t)v < (uint32_t)(v >> 32))
        if (__atomic_compare_exchange_n(&s[t].v, &v, v + 1, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return (int64_t)(uint32_t)v;
    for (;;) {   /* own share done: the back of the share with the most left */
        int best = -1;
        uint64_t bv = 0;
        uint32_t most = 0;
        for (int u = 0; u < c->nt; u++) {
            uint64_t w = __atomic_load_n(&s[u].v, __ATOMIC_RELAXED);
            uint32_t lo = (uint32_t)w, hi = (uint32_t)(w >> 32);
            if (hi > lo && hi - lo > most) { most = hi - lo; best = u; bv = w; }
        }
        if (best < 0) return -1;
        if (__atomic_compare_exchange_n(&s[best].v, &bv, bv - ((uint64_t)1 << 32), 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return (int64_t)(uint32_t)(bv >> 32) - 1;
    }
}
#endif
