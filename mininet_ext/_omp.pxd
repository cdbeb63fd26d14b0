cdef int num_threads() noexcept nogil
cdef int size_threads(Py_ssize_t work) noexcept nogil
cdef int threads_for(Py_ssize_t work) noexcept nogil
cdef Py_ssize_t chunk_items(Py_ssize_t n, int nt, Py_ssize_t per_thread) noexcept nogil
cdef int threads_timed(Py_ssize_t work, double est_ns) noexcept nogil
cdef void arrived(int tid) noexcept nogil
cdef void finished(int tid) noexcept nogil

cdef extern from "_claim.h" nogil:
    ctypedef struct mn_claims:
        pass
    int mn_claims_init(mn_claims* c, long long n, int nt)
    void mn_claims_free(mn_claims* c)
    void mn_claims_reset(mn_claims* c, long long n)
    long long mn_claim(mn_claims* c, int t)


cdef inline int claims_start(mn_claims* c, Py_ssize_t n, int nt) except -1:
    """mn_claims_init, or an error (with nothing left to free); the caller frees the
    claims with mn_claims_free after the parallel region."""
    if n < 0 or n > 0xFFFFFFFF:
        raise ValueError(f"work claims: {n} chunks, outside 0 .. 2**32 - 1")
    if mn_claims_init(c, n, nt) != 0:
        mn_claims_free(c)
        raise MemoryError(f"work claims for {n} chunks on {nt} threads")
    return 0


cdef inline Py_ssize_t channel_block(Py_ssize_t K, Py_ssize_t P, int nt,
                                     Py_ssize_t most) noexcept nogil:
    """Channels per block for a pass over (N, K, P) maps that keeps per-channel sums
    (bias gradients): each image's rows of a block are 4 KB or more of contiguous reads
    (channel by channel, a row was K * P items from the last, beyond the stride
    prefetcher's reach), at most `most`, and the blocks split evenly over nt threads."""
    cdef Py_ssize_t blk = min(max(1024 // max(P, 1), 1), max(most, 1))
    cdef Py_ssize_t nb = (K + blk - 1) // blk
    nb = (nb + nt - 1) // max(nt, 1) * max(nt, 1)   # a multiple of the threads
    return max((K + nb - 1) // max(nb, 1), 1)
