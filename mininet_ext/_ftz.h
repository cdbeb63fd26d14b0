/* Flush denormals to zero (FTZ + DAZ) for the calling thread, and restore.
 * Adam's moments of a dead unit decay geometrically (m *= beta1 each step) and reach
 * the denormal range within a few hundred steps; arithmetic on denormals is about
 * 15x slower on x86. The optimizer kernels switch the flags on around their loops,
 * so a denormal moment (< 1.2e-38 in float32) becomes 0: an update of at most ~1e-33. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
static inline unsigned mn_ftz_on(void)
{
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);   /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
}
static inline void mn_ftz_restore(unsigned old) { _mm_setcsr(old); }
#else
static inline unsigned mn_ftz_on(void) { return 0; }
static inline void mn_ftz_restore(unsigned old) { (void)old; }
#endif
