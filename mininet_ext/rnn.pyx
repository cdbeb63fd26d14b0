# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused LSTM gates: one pass over a step's (batch, 4 * hidden) gate pre-activations
gives h' and c' (the composite is ~15 elementwise kernels and their temporaries, and a
language model runs a step per token and layer); one pass gives the gradients."""
from cython.parallel cimport prange, parallel, threadid
from cython cimport floating
from libc.string cimport memcpy
from mininet_ext.buffer cimport Buffer
from mininet_ext._omp cimport threads_for
from mininet_ext._check cimport check_itemsize, need
from mininet_ext.matmul cimport serial_items, gemm_serial_f32, gemm_serial_f64


cdef extern from "_lstm.h" nogil:
    void mn_lstm_fwd_f32(const float* z, const float* c, float* act, float* c_new, float* h_new,
                         Py_ssize_t n)
    void mn_lstm_fwd_f64(const double* z, const double* c, double* act, double* c_new,
                         double* h_new, Py_ssize_t n)
    void mn_lstm_bwd_f32(const float* act, const float* c, const float* dh, const float* dc,
                         float* dz, float* dc_prev, Py_ssize_t n)
    void mn_lstm_bwd_f64(const double* act, const double* c, const double* dh, const double* dc,
                         double* dz, double* dc_prev, Py_ssize_t n)
    void mn_lstm_fwd_rows_f32(const float* z, Py_ssize_t zs, const float* x, Py_ssize_t xs,
                              const float* c, float* act, Py_ssize_t ast, float* c_new,
                              float* h_new, Py_ssize_t n)
    void mn_lstm_fwd_rows_f64(const double* z, Py_ssize_t zs, const double* x, Py_ssize_t xs,
                              const double* c, double* act, Py_ssize_t ast, double* c_new,
                              double* h_new, Py_ssize_t n)
    void mn_lstm_bwd_rows_f32(const float* act, Py_ssize_t ast, const float* c, const float* dh,
                              const float* dh2, const float* dc, float* dz, Py_ssize_t zs,
                              float* dc_prev, Py_ssize_t n)
    void mn_lstm_bwd_rows_f64(const double* act, Py_ssize_t ast, const double* c,
                              const double* dh, const double* dh2, const double* dc, double* dz,
                              Py_ssize_t zs, double* dc_prev, Py_ssize_t n)


cdef extern from "_gru.h" nogil:
    void mn_gru_fwd_rows_f32(const float* hp, Py_ssize_t hs, const float* b, Py_ssize_t bs,
                             const float* x, Py_ssize_t xs, const float* h, float* act,
                             Py_ssize_t ast, float* h_new, Py_ssize_t n)
    void mn_gru_fwd_rows_f64(const double* hp, Py_ssize_t hs, const double* b, Py_ssize_t bs,
                             const double* x, Py_ssize_t xs, const double* h, double* act,
                             Py_ssize_t ast, double* h_new, Py_ssize_t n)
    void mn_gru_bwd_rows_f32(const float* act, Py_ssize_t ast, const float* h, const float* dh,
                             const float* dh2, float* dxp, float* dhp, Py_ssize_t ds,
                             float* keep, Py_ssize_t n)
    void mn_gru_bwd_rows_f64(const double* act, Py_ssize_t ast, const double* h,
                             const double* dh, const double* dh2, double* dxp, double* dhp,
                             Py_ssize_t ds, double* keep, Py_ssize_t n)


cdef extern from "_elman.h" nogil:
    void mn_elman_fwd_rows_f32(const float* hp, const float* x, float* h_new, Py_ssize_t n,
                               int relu)
    void mn_elman_fwd_rows_f64(const double* hp, const double* x, double* h_new, Py_ssize_t n,
                               int relu)
    void mn_elman_bwd_rows_f32(const float* h_new, const float* dh, const float* dh2, float* dz,
                               Py_ssize_t n, int relu)
    void mn_elman_bwd_rows_f64(const double* h_new, const double* dh, const double* dh2,
                               double* dz, Py_ssize_t n, int relu)


cdef extern from *:
    """
    /* every thread of the enclosing parallel region waits here for the others (an
       orphaned barrier: it binds to the region the calling function runs in) */
    static inline void mn_omp_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    /* the team the enclosing region got: OpenMP may start fewer threads than asked
       (OMP_THREAD_LIMIT, OMP_DYNAMIC, nested regions) */
    #ifdef _OPENMP
    #include <omp.h>
    static inline int mn_seq_team(void) { return omp_get_num_threads(); }
    static inline int mn_seq_tid(void) { return omp_get_thread_num(); }
    #else
    static inline int mn_seq_team(void) { return 1; }
    static inline int mn_seq_tid(void) { return 0; }
    #endif
    """
    void mn_omp_barrier() nogil
    int mn_seq_team() nogil
    int mn_seq_tid() nogil


def lstm_forward(Buffer z, Buffer c, Buffer act, Buffer c_new, Buffer h_new, Py_ssize_t B,
                 Py_ssize_t n, int itemsize):
    """z (B, 4n), c (B, n) -> act (B, 5n), c_new, h_new (B, n); all compact."""
    check_itemsize(itemsize, "lstm_gates")
    need(z, 0, (B, 4 * n), itemsize, "lstm_gates", "gates z")
    need(act, 0, (B, 5 * n), itemsize, "lstm_gates", "activations")
    for buf, name in ((c, "cell c"), (c_new, "new cell"), (h_new, "new hidden state")):
        need(buf, 0, (B, n), itemsize, "lstm_gates", name)
    cdef Py_ssize_t b
    cdef int nt = threads_for(B * n * 40)
    with nogil:
        if itemsize == 4:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_fwd_f32(<float*>z.ptr + b * 4 * n, <float*>c.ptr + b * n,
                                <float*>act.ptr + b * 5 * n, <float*>c_new.ptr + b * n,
                                <float*>h_new.ptr + b * n, n)
        else:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_fwd_f64(<double*>z.ptr + b * 4 * n, <double*>c.ptr + b * n,
                                <double*>act.ptr + b * 5 * n, <double*>c_new.ptr + b * n,
                                <double*>h_new.ptr + b * n, n)


def lstm_backward(Buffer act, Buffer c, Buffer dh, Buffer dc, Buffer dz, Buffer dc_prev,
                  Py_ssize_t B, Py_ssize_t n, int itemsize):
    """dz (B, 4n) and dc_prev (B, n) from dh, dc (B, n); all compact."""
    check_itemsize(itemsize, "lstm_gates_grad")
    need(act, 0, (B, 5 * n), itemsize, "lstm_gates_grad", "activations")
    need(dz, 0, (B, 4 * n), itemsize, "lstm_gates_grad", "gates gradient dz")
    for buf, name in ((c, "cell c"), (dh, "dh"), (dc, "dc"), (dc_prev, "dc_prev")):
        need(buf, 0, (B, n), itemsize, "lstm_gates_grad", name)
    cdef Py_ssize_t b
    cdef int nt = threads_for(B * n * 12)
    with nogil:
        if itemsize == 4:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_bwd_f32(<float*>act.ptr + b * 5 * n, <float*>c.ptr + b * n,
                                <float*>dh.ptr + b * n, <float*>dc.ptr + b * n,
                                <float*>dz.ptr + b * 4 * n, <float*>dc_prev.ptr + b * n, n)
        else:
            for b in prange(B, num_threads=nt, schedule='static'):
                mn_lstm_bwd_f64(<double*>act.ptr + b * 5 * n, <double*>c.ptr + b * n,
                                <double*>dh.ptr + b * n, <double*>dc.ptr + b * n,
                                <double*>dz.ptr + b * 4 * n, <double*>dc_prev.ptr + b * n, n)


# A whole layer over a sequence -------------------------------------------------------
# Per step, each thread of one parallel region owns a block of hidden units: it
# multiplies h_t by its own copy of w's columns for those units (the G gate blocks side
# by side: LSTM 4, GRU 3, Elman RNN 1; so the product's output is exactly what its gate
# kernel reads), then runs the gates for those units; one barrier per step before
# h_{t+1} is read whole. Per-step ops from Python cost ~70 us a step on top of a ~40 us
# product (20 x 256 x 1024: a language model's); the copy of w stays in that thread's
# L2 across the steps. Backward mirrors it: the gates' gradient for the block, a
# barrier, then dh_t = dz_t @ (w^T's columns of the block).
cdef inline Py_ssize_t _units(Py_ssize_t n, int nt, int t) noexcept nogil:
    return n * t // nt


cdef inline bint _team_ok(int nt, int* ran) noexcept nogil:
    """In a sequence kernel's region: whether the team is the nt threads its unit blocks
    assume. OpenMP may start fewer (OMP_THREAD_LIMIT, OMP_DYNAMIC, nesting): then no
    thread runs a step, thread 0 clears *ran and the kernel reruns on one thread."""
    if mn_seq_team() == nt:
        return True
    if mn_seq_tid() == 0:
        ran[0] = 0
    return False


cdef inline Py_ssize_t _round16(Py_ssize_t items) noexcept nogil:
    return (items + 15) // 16 * 16


cdef int _seq_threads(Py_ssize_t B, Py_ssize_t n, int G) noexcept nogil:
    """Threads for a step's B x n x G n product, at most one per hidden unit."""
    cdef int nt = threads_for(B * n * G * n // 64)
    return <int>min(<Py_ssize_t>nt, max(n, 1))


cdef inline Py_ssize_t _w_items(Py_ssize_t n, int nt, int G) noexcept nogil:
    """A thread's copy of G gate blocks of w's (or w^T's) columns for the largest unit
    block, rounded to 64 bytes: the first part of its scratch."""
    return _round16(G * n * ((n + nt - 1) // nt))


cdef inline Py_ssize_t _block_items(Py_ssize_t B, Py_ssize_t n, int nt, int G) noexcept nogil:
    """A (B, G nu) part of a thread's scratch for the largest unit block, rounded."""
    return _round16(G * B * ((n + nt - 1) // nt))


cdef Py_ssize_t _seq_scratch(Py_ssize_t B, Py_ssize_t n, int nt, int G, int blocks,
                             int itemsize) noexcept nogil:
    """Items of scratch per thread, for G gate blocks: its block of w (or w^T), then
    forward (blocks 0) the step's product (B x G nu), backward `blocks` (B x nu) parts
    (dh, dc...), then the product's packing (the larger of the two block widths')."""
    cdef Py_ssize_t hi = (n + nt - 1) // nt, lo = n // nt, work
    if blocks:   # dh (B x nu) = dz_t (B x G n) @ the block's columns of w^T (G n x nu)
        work = max(serial_items(B, hi, G * n, G * n, hi, 1, itemsize),
                   serial_items(B, lo, G * n, G * n, lo, 1, itemsize))
        return _w_items(n, nt, G) + blocks * _block_items(B, n, nt, 1) + _round16(work)
    work = max(serial_items(B, G * hi, n, n, G * hi, 1, itemsize),
               serial_items(B, G * lo, n, n, G * lo, 1, itemsize))
    return _w_items(n, nt, G) + _block_items(B, n, nt, G) + _round16(work)


cdef void _cols_in(floating* dst, const floating* src, Py_ssize_t B, Py_ssize_t n,
                   Py_ssize_t u0, Py_ssize_t nu) noexcept nogil:
    """dst (B, nu) = the columns u0 .. u0 + nu of src (B, n)."""
    cdef Py_ssize_t b
    for b in range(B):
        memcpy(dst + b * nu, src + b * n + u0, nu * sizeof(floating))


cdef void _cols_out(floating* dst, const floating* src, Py_ssize_t B, Py_ssize_t n,
                    Py_ssize_t u0, Py_ssize_t nu) noexcept nogil:
    """The columns u0 .. u0 + nu of dst (B, n) = src (B, nu)."""
    cdef Py_ssize_t b
    for b in range(B):
        memcpy(dst + b * n + u0, src + b * nu, nu * sizeof(floating))


cdef void _w_cols(floating* wb, const floating* w, Py_ssize_t n, int G, Py_ssize_t u0,
                  Py_ssize_t nu) noexcept nogil:
    """wb (n, G nu) = the columns of w (n, G n) for units u0 .. u0 + nu of each gate."""
    cdef Py_ssize_t p, k
    for p in range(n):
        for k in range(G):
            memcpy(wb + (p * G + k) * nu, w + (p * G + k) * n + u0, nu * sizeof(floating))


cdef void _wt_cols(floating* wb, const floating* w, Py_ssize_t n, int G, Py_ssize_t u0,
                   Py_ssize_t nu) noexcept nogil:
    """wb (G n, nu) = the columns of w^T for units u0 .. u0 + nu: wb[k, j] = w[u0 + j, k]."""
    cdef Py_ssize_t j, k
    for j in range(nu):
        for k in range(G * n):
            wb[k * nu + j] = w[(u0 + j) * G * n + k]


cdef inline void _gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                       Py_ssize_t ars, const floating* B, floating* C,
                       floating* work) noexcept nogil:
    """C (M x N) = A (rows ars apart) @ B (K x N), both compact along their rows."""
    if floating is float:
        gemm_serial_f32(M, N, K, A, ars, 1, B, N, 1, C, work)
    else:
        gemm_serial_f64(M, N, K, A, ars, 1, B, N, 1, C, work)


cdef int _seq_fwd(const floating* xp, const floating* w, floating* hs, floating* cs,
                   floating* act, Py_ssize_t S, Py_ssize_t B, Py_ssize_t n, int nt,
                   floating* scratch, Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, row
    cdef int tid
    cdef floating* wb
    cdef floating* z
    cdef floating* work
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per                 # (n, 4 nu): w's columns of the block
            z = wb + _w_items(n, nt, 4)              # (B, 4 nu): the step's h_t @ wb
            work = z + _block_items(B, n, nt, 4)
            _w_cols(wb, w, n, 4, u0, nu)
            for t in range(S):
                _gemm(B, 4 * nu, n, hs + t * B * n, n, wb, z, work)
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_lstm_fwd_rows_f32(z + b * 4 * nu, nu, xp + row * 4 * n + u0, n,
                                             cs + row * n + u0, act + row * 5 * n + u0, n,
                                             cs + (row + B) * n + u0, hs + (row + B) * n + u0, nu)
                    else:
                        mn_lstm_fwd_rows_f64(z + b * 4 * nu, nu, xp + row * 4 * n + u0, n,
                                             cs + row * n + u0, act + row * 5 * n + u0, n,
                                             cs + (row + B) * n + u0, hs + (row + B) * n + u0, nu)
                mn_omp_barrier()   # h_{t+1} whole before any thread's next product reads it
    return ran


cdef int _seq_bwd(const floating* act, const floating* cs, const floating* w,
                   const floating* dhs, const floating* dhn, const floating* dcn,
                   floating* dz, floating* dh0, floating* dc0, Py_ssize_t S, Py_ssize_t B,
                   Py_ssize_t n, int nt, floating* scratch, Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, row
    cdef int tid
    cdef floating* wb
    cdef floating* dh
    cdef floating* dca
    cdef floating* dcb
    cdef floating* tmp
    cdef floating* work
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per                 # (4n, nu): w^T's columns of the block
            dh = wb + _w_items(n, nt, 4)             # (B, nu): the gradient of h_{t+1}
            dca = dh + _block_items(B, n, nt, 1)     # (B, nu): that of c_{t+1}, then c_t
            dcb = dca + _block_items(B, n, nt, 1)
            work = dcb + _block_items(B, n, nt, 1)
            _wt_cols(wb, w, n, 4, u0, nu)
            _cols_in(dh, dhn, B, n, u0, nu)
            _cols_in(dca, dcn, B, n, u0, nu)
            for t in range(S - 1, -1, -1):
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_lstm_bwd_rows_f32(act + row * 5 * n + u0, n, cs + row * n + u0,
                                             dh + b * nu, dhs + row * n + u0, dca + b * nu,
                                             dz + row * 4 * n + u0, n, dcb + b * nu, nu)
                    else:
                        mn_lstm_bwd_rows_f64(act + row * 5 * n + u0, n, cs + row * n + u0,
                                             dh + b * nu, dhs + row * n + u0, dca + b * nu,
                                             dz + row * 4 * n + u0, n, dcb + b * nu, nu)
                tmp = dca
                dca = dcb
                dcb = tmp
                mn_omp_barrier()   # dz_t whole before any thread's product reads it
                _gemm(B, nu, 4 * n, dz + t * B * 4 * n, 4 * n, wb, dh, work)
            _cols_out(dh0, dh, B, n, u0, nu)
            _cols_out(dc0, dca, B, n, u0, nu)
    return ran


def lstm_seq_forward(Buffer xp, Buffer w, Buffer hs, Buffer cs, Buffer act, Py_ssize_t S,
                     Py_ssize_t B, Py_ssize_t n, int itemsize):
    """xp (S, B, 4n: x W_ih + biases), w (n, 4n), hs[0] and cs[0] -> hs[1..S], cs[1..S]
    (both (S + 1, B, n)) and act (S, B, 5n, as lstm_forward's); all compact."""
    check_itemsize(itemsize, "lstm_sequence")
    need(xp, 0, (S, B, 4 * n), itemsize, "lstm_sequence", "projected input")
    need(w, 0, (n, 4 * n), itemsize, "lstm_sequence", "w_hh")
    need(hs, 0, (S + 1, B, n), itemsize, "lstm_sequence", "hidden states")
    need(cs, 0, (S + 1, B, n), itemsize, "lstm_sequence", "cell states")
    need(act, 0, (S, B, 5 * n), itemsize, "lstm_sequence", "activations")
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 4), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 4, 0, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _seq_fwd(<float*>xp.ptr, <float*>w.ptr, <float*>hs.ptr, <float*>cs.ptr,
                               <float*>act.ptr, S, B, n, nt, <float*>scratch.ptr, per)
            else:
                ran = _seq_fwd(<double*>xp.ptr, <double*>w.ptr, <double*>hs.ptr,
                               <double*>cs.ptr, <double*>act.ptr, S, B, n, nt,
                               <double*>scratch.ptr, per)
        nt = 1


def lstm_seq_backward(Buffer act, Buffer cs, Buffer w, Buffer dhs, Buffer dhn, Buffer dcn,
                      Buffer dz, Buffer dh0, Buffer dc0, Py_ssize_t S, Py_ssize_t B,
                      Py_ssize_t n, int itemsize):
    """The steps of lstm_seq_forward in reverse: from act, cs (forward's), w, the outputs'
    gradients dhs (S, B, n) and those of h_S and c_S (dhn, dcn (B, n)): dz (S, B, 4n, the
    gradient of xp) and the gradients of h_0 and c_0 (dh0, dc0 (B, n)); all compact."""
    check_itemsize(itemsize, "lstm_sequence_grad")
    need(act, 0, (S, B, 5 * n), itemsize, "lstm_sequence_grad", "activations")
    need(cs, 0, (S + 1, B, n), itemsize, "lstm_sequence_grad", "cell states")
    need(w, 0, (n, 4 * n), itemsize, "lstm_sequence_grad", "w_hh")
    need(dhs, 0, (S, B, n), itemsize, "lstm_sequence_grad", "outputs' gradient")
    need(dz, 0, (S, B, 4 * n), itemsize, "lstm_sequence_grad", "gates' gradient dz")
    for buf, name in ((dhn, "dh_n"), (dcn, "dc_n"), (dh0, "dh_0"), (dc0, "dc_0")):
        need(buf, 0, (B, n), itemsize, "lstm_sequence_grad", name)
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 4), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 4, 3, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _seq_bwd(<float*>act.ptr, <float*>cs.ptr, <float*>w.ptr, <float*>dhs.ptr,
                               <float*>dhn.ptr, <float*>dcn.ptr, <float*>dz.ptr,
                               <float*>dh0.ptr, <float*>dc0.ptr, S, B, n, nt,
                               <float*>scratch.ptr, per)
            else:
                ran = _seq_bwd(<double*>act.ptr, <double*>cs.ptr, <double*>w.ptr,
                               <double*>dhs.ptr, <double*>dhn.ptr, <double*>dcn.ptr,
                               <double*>dz.ptr, <double*>dh0.ptr, <double*>dc0.ptr, S, B, n,
                               nt, <double*>scratch.ptr, per)
        nt = 1


# GRU: the same scheme, three gate blocks (r, z, n); b_hh is added to each step's h W_hh
# before the gates (its n block sits inside r's product)
cdef int _gru_fwd(const floating* xp, const floating* w, const floating* bias,
                   floating* hs, floating* act, Py_ssize_t S, Py_ssize_t B, Py_ssize_t n,
                   int nt, floating* scratch, Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, row
    cdef int tid
    cdef floating* wb
    cdef floating* hp
    cdef floating* work
    cdef const floating* bb
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per                 # (n, 3 nu): w's columns of the block
            hp = wb + _w_items(n, nt, 3)             # (B, 3 nu): the step's h_t @ wb
            work = hp + _block_items(B, n, nt, 3)
            bb = bias + u0 if bias != NULL else NULL
            _w_cols(wb, w, n, 3, u0, nu)
            for t in range(S):
                _gemm(B, 3 * nu, n, hs + t * B * n, n, wb, hp, work)
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_gru_fwd_rows_f32(hp + b * 3 * nu, nu, bb, n, xp + row * 3 * n + u0, n,
                                            hs + row * n + u0, act + row * 4 * n + u0, n,
                                            hs + (row + B) * n + u0, nu)
                    else:
                        mn_gru_fwd_rows_f64(hp + b * 3 * nu, nu, bb, n, xp + row * 3 * n + u0, n,
                                            hs + row * n + u0, act + row * 4 * n + u0, n,
                                            hs + (row + B) * n + u0, nu)
                mn_omp_barrier()   # h_{t+1} whole before any thread's next product reads it
    return ran


cdef int _gru_bwd(const floating* act, const floating* hs, const floating* w,
                   const floating* dhs, const floating* dhn, floating* dxp, floating* dhp,
                   floating* dh0, Py_ssize_t S, Py_ssize_t B, Py_ssize_t n, int nt,
                   floating* scratch, Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, j, row
    cdef int tid
    cdef floating* wb
    cdef floating* dh
    cdef floating* keep
    cdef floating* work
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per                 # (3n, nu): w^T's columns of the block
            dh = wb + _w_items(n, nt, 3)             # (B, nu): the gradient of h_{t+1}
            keep = dh + _block_items(B, n, nt, 1)    # (B, nu): its part through z
            work = keep + _block_items(B, n, nt, 1)
            _wt_cols(wb, w, n, 3, u0, nu)
            _cols_in(dh, dhn, B, n, u0, nu)
            for t in range(S - 1, -1, -1):
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_gru_bwd_rows_f32(act + row * 4 * n + u0, n, hs + row * n + u0,
                                            dh + b * nu, dhs + row * n + u0, dxp + row * 3 * n + u0,
                                            dhp + row * 3 * n + u0, n, keep + b * nu, nu)
                    else:
                        mn_gru_bwd_rows_f64(act + row * 4 * n + u0, n, hs + row * n + u0,
                                            dh + b * nu, dhs + row * n + u0, dxp + row * 3 * n + u0,
                                            dhp + row * 3 * n + u0, n, keep + b * nu, nu)
                mn_omp_barrier()   # dhp_t whole before any thread's product reads it
                _gemm(B, nu, 3 * n, dhp + t * B * 3 * n, 3 * n, wb, dh, work)
                for j in range(B * nu):
                    dh[j] += keep[j]
            _cols_out(dh0, dh, B, n, u0, nu)
    return ran


def gru_seq_forward(Buffer xp, Buffer w, Buffer bias, Buffer hs, Buffer act, Py_ssize_t S,
                    Py_ssize_t B, Py_ssize_t n, int itemsize):
    """xp (S, B, 3n: x W_ih + b_ih), w (n, 3n), bias (3n: b_hh) or None and hs[0] ->
    hs[1..S] ((S + 1, B, n)) and act (S, B, 4n: r, z, n, h W_hn + b_hn); all compact."""
    check_itemsize(itemsize, "gru_sequence")
    need(xp, 0, (S, B, 3 * n), itemsize, "gru_sequence", "projected input")
    need(w, 0, (n, 3 * n), itemsize, "gru_sequence", "w_hh")
    if bias is not None:
        need(bias, 0, (3 * n,), itemsize, "gru_sequence", "b_hh")
    need(hs, 0, (S + 1, B, n), itemsize, "gru_sequence", "hidden states")
    need(act, 0, (S, B, 4 * n), itemsize, "gru_sequence", "activations")
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 3), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    cdef void* bp = bias.ptr if bias is not None else NULL
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 3, 0, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _gru_fwd(<float*>xp.ptr, <float*>w.ptr, <float*>bp, <float*>hs.ptr,
                               <float*>act.ptr, S, B, n, nt, <float*>scratch.ptr, per)
            else:
                ran = _gru_fwd(<double*>xp.ptr, <double*>w.ptr, <double*>bp, <double*>hs.ptr,
                               <double*>act.ptr, S, B, n, nt, <double*>scratch.ptr, per)
        nt = 1


def gru_seq_backward(Buffer act, Buffer hs, Buffer w, Buffer dhs, Buffer dhn, Buffer dxp,
                     Buffer dhp, Buffer dh0, Py_ssize_t S, Py_ssize_t B, Py_ssize_t n,
                     int itemsize):
    """gru_seq_forward's steps in reverse: from act, hs (forward's), w, the outputs'
    gradient dhs (S, B, n) and h_S's (dhn (B, n)): dxp (S, B, 3n), dhp (S, B, 3n: the
    gradient of each step's h W_hh + b_hh) and h_0's gradient dh0 (B, n); all compact."""
    check_itemsize(itemsize, "gru_sequence_grad")
    need(act, 0, (S, B, 4 * n), itemsize, "gru_sequence_grad", "activations")
    need(hs, 0, (S + 1, B, n), itemsize, "gru_sequence_grad", "hidden states")
    need(w, 0, (n, 3 * n), itemsize, "gru_sequence_grad", "w_hh")
    need(dhs, 0, (S, B, n), itemsize, "gru_sequence_grad", "outputs' gradient")
    need(dxp, 0, (S, B, 3 * n), itemsize, "gru_sequence_grad", "input gradient dxp")
    need(dhp, 0, (S, B, 3 * n), itemsize, "gru_sequence_grad", "recurrent gradient dhp")
    for buf, name in ((dhn, "dh_n"), (dh0, "dh_0")):
        need(buf, 0, (B, n), itemsize, "gru_sequence_grad", name)
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 3), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 3, 2, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _gru_bwd(<float*>act.ptr, <float*>hs.ptr, <float*>w.ptr, <float*>dhs.ptr,
                               <float*>dhn.ptr, <float*>dxp.ptr, <float*>dhp.ptr,
                               <float*>dh0.ptr, S, B, n, nt, <float*>scratch.ptr, per)
            else:
                ran = _gru_bwd(<double*>act.ptr, <double*>hs.ptr, <double*>w.ptr,
                               <double*>dhs.ptr, <double*>dhn.ptr, <double*>dxp.ptr,
                               <double*>dhp.ptr, <double*>dh0.ptr, S, B, n, nt,
                               <double*>scratch.ptr, per)
        nt = 1


# Elman RNN: one block (G = 1), h' = tanh or relu of x W_ih + b_ih + b_hh + h W_hh
cdef int _elman_fwd(const floating* xp, const floating* w, floating* hs, Py_ssize_t S,
                    Py_ssize_t B, Py_ssize_t n, int relu, int nt, floating* scratch,
                    Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, row
    cdef int tid
    cdef floating* wb
    cdef floating* hp
    cdef floating* work
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per             # (n, nu): w's columns of the block
            hp = wb + _w_items(n, nt, 1)         # (B, nu): the step's h_t @ wb
            work = hp + _block_items(B, n, nt, 1)
            _w_cols(wb, w, n, 1, u0, nu)
            for t in range(S):
                _gemm(B, nu, n, hs + t * B * n, n, wb, hp, work)
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_elman_fwd_rows_f32(hp + b * nu, xp + row * n + u0,
                                              hs + (row + B) * n + u0, nu, relu)
                    else:
                        mn_elman_fwd_rows_f64(hp + b * nu, xp + row * n + u0,
                                              hs + (row + B) * n + u0, nu, relu)
                mn_omp_barrier()   # h_{t+1} whole before any thread's next product reads it
    return ran


cdef int _elman_bwd(const floating* hs, const floating* w, const floating* dhs,
                    const floating* dhn, floating* dz, floating* dh0, Py_ssize_t S,
                    Py_ssize_t B, Py_ssize_t n, int relu, int nt, floating* scratch,
                    Py_ssize_t per) noexcept nogil:
    cdef Py_ssize_t u0, nu, t, b, row
    cdef int tid
    cdef floating* wb
    cdef floating* dh
    cdef floating* work
    cdef int ran = 1
    cdef int* ranp = &ran
    with parallel(num_threads=nt):
        if _team_ok(nt, ranp):
            tid = threadid()
            u0 = _units(n, nt, tid)
            nu = _units(n, nt, tid + 1) - u0
            wb = scratch + tid * per             # (n, nu): w^T's columns of the block
            dh = wb + _w_items(n, nt, 1)         # (B, nu): the gradient of h_{t+1}
            work = dh + _block_items(B, n, nt, 1)
            _wt_cols(wb, w, n, 1, u0, nu)
            _cols_in(dh, dhn, B, n, u0, nu)
            for t in range(S - 1, -1, -1):
                for b in range(B):
                    row = t * B + b
                    if floating is float:
                        mn_elman_bwd_rows_f32(hs + (row + B) * n + u0, dh + b * nu,
                                              dhs + row * n + u0, dz + row * n + u0, nu, relu)
                    else:
                        mn_elman_bwd_rows_f64(hs + (row + B) * n + u0, dh + b * nu,
                                              dhs + row * n + u0, dz + row * n + u0, nu, relu)
                mn_omp_barrier()   # dz_t whole before any thread's product reads it
                _gemm(B, nu, n, dz + t * B * n, n, wb, dh, work)
            _cols_out(dh0, dh, B, n, u0, nu)
    return ran


def elman_seq_forward(Buffer xp, Buffer w, Buffer hs, Py_ssize_t S, Py_ssize_t B,
                      Py_ssize_t n, bint relu, int itemsize):
    """xp (S, B, n: x W_ih + b_ih + b_hh), w (n, n) and hs[0] -> hs[1..S] ((S + 1, B, n)),
    h_{t+1} = tanh(xp[t] + h_t w) (relu with relu); all compact."""
    check_itemsize(itemsize, "rnn_sequence")
    need(xp, 0, (S, B, n), itemsize, "rnn_sequence", "projected input")
    need(w, 0, (n, n), itemsize, "rnn_sequence", "w_hh")
    need(hs, 0, (S + 1, B, n), itemsize, "rnn_sequence", "hidden states")
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 1), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 1, 0, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _elman_fwd(<float*>xp.ptr, <float*>w.ptr, <float*>hs.ptr, S, B, n, relu,
                                 nt, <float*>scratch.ptr, per)
            else:
                ran = _elman_fwd(<double*>xp.ptr, <double*>w.ptr, <double*>hs.ptr, S, B, n,
                                 relu, nt, <double*>scratch.ptr, per)
        nt = 1


def elman_seq_backward(Buffer hs, Buffer w, Buffer dhs, Buffer dhn, Buffer dz, Buffer dh0,
                       Py_ssize_t S, Py_ssize_t B, Py_ssize_t n, bint relu, int itemsize):
    """elman_seq_forward's steps in reverse: from hs (forward's), w, the outputs' gradient
    dhs (S, B, n) and h_S's (dhn (B, n)): dz (S, B, n: the gradient of xp) and h_0's
    gradient dh0 (B, n); all compact."""
    check_itemsize(itemsize, "rnn_sequence_grad")
    need(hs, 0, (S + 1, B, n), itemsize, "rnn_sequence_grad", "hidden states")
    need(w, 0, (n, n), itemsize, "rnn_sequence_grad", "w_hh")
    need(dhs, 0, (S, B, n), itemsize, "rnn_sequence_grad", "outputs' gradient")
    need(dz, 0, (S, B, n), itemsize, "rnn_sequence_grad", "input gradient dz")
    for buf, name in ((dhn, "dh_n"), (dh0, "dh_0")):
        need(buf, 0, (B, n), itemsize, "rnn_sequence_grad", name)
    if S == 0 or B == 0 or n == 0:
        return
    cdef int nt = _seq_threads(B, n, 1), ran = 0
    cdef Py_ssize_t per
    cdef Buffer scratch
    while not ran:   # a second round only where OpenMP started a smaller team
        per = _seq_scratch(B, n, nt, 1, 1, itemsize)
        scratch = Buffer(nt * per * itemsize)
        with nogil:
            if itemsize == 4:
                ran = _elman_bwd(<float*>hs.ptr, <float*>w.ptr, <float*>dhs.ptr, <float*>dhn.ptr,
                                 <float*>dz.ptr, <float*>dh0.ptr, S, B, n, relu, nt,
                                 <float*>scratch.ptr, per)
            else:
                ran = _elman_bwd(<double*>hs.ptr, <double*>w.ptr, <double*>dhs.ptr,
                                 <double*>dhn.ptr, <double*>dz.ptr, <double*>dh0.ptr, S, B, n,
                                 relu, nt, <double*>scratch.ptr, per)
        nt = 1
