# mininet_ext/convgemm.pyx, part 1 of 4: the micro-kernels.
# The kernel set's entry points (_isa.h, bound at import from mininet_ext._isa), the
# register-block sizes MR/NR that come with it, and thin fused-type wrappers that pick
# the float or double variant. Included textually by convgemm.pyx (Cython `include`).

# The micro-kernels and window copies below come from the kernel set chosen at import
# (_isa.h, mininet_ext._isa), and MR and NR with them.
cdef extern from "_isa.h":
    int mn_isa_bind(const void* table) except -1
    # panel columns jj..jj+len; off: their first output pixel (oh*OW + ow) in the image
    ctypedef struct Run "mn_run":
        Py_ssize_t jj, len, off

cdef extern from "_isa.h" nogil:
    const char* mn_kernel_isa()
    int mn_gemm_mr()
    int mn_gemm_mr_short()
    int mn_gemm_nr(int itemsize)
    void mn_kernel_short_f32(Py_ssize_t kc, const float* A, const float* B, float* C,
                             Py_ssize_t ldc, int accumulate)
    void mn_kernel_short_f64(Py_ssize_t kc, const double* A, const double* B, double* C,
                             Py_ssize_t ldc, int accumulate)
    void mn_kernel_f32(Py_ssize_t kc, const float* A, const float* B, float* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_f64(Py_ssize_t kc, const double* A, const double* B, double* C, Py_ssize_t ldc,
                       int accumulate)
    void mn_kernel_at_f32(Py_ssize_t npan, const float* A, Py_ssize_t astride, const float* B,
                          Py_ssize_t bstride, float* C, Py_ssize_t ldc)
    void mn_kernel_at_f64(Py_ssize_t npan, const double* A, Py_ssize_t astride, const double* B,
                          Py_ssize_t bstride, double* C, Py_ssize_t ldc)
    void mn_kernel_at_half_f32(Py_ssize_t npan, const float* A, Py_ssize_t astride,
                               const float* B, Py_ssize_t bstride, float* C, Py_ssize_t ldc)
    void mn_kernel_at_half_f64(Py_ssize_t npan, const double* A, Py_ssize_t astride,
                               const double* B, Py_ssize_t bstride, double* C, Py_ssize_t ldc)

    int mn_tab_mr(int nv, int taller)
    int mn_tab_slide(int nv, int taller)
    int mn_wg_slide()
    int mn_tab_one()
    int mn_wg_slide_mr()
    void mn_tab_kernel_f32(int nv, int mr, Py_ssize_t kc, const float* A, const Py_ssize_t* toff,
                           const float* B, float* C)
    void mn_tab_kernel_f64(int nv, int mr, Py_ssize_t kc, const double* A,
                           const Py_ssize_t* toff, const double* B, double* C)

    void mn_wg_kernel_f32(int nv, int mr, Py_ssize_t oh_n, Py_ssize_t ow_n, Py_ssize_t wp,
                          const float* A, const Py_ssize_t* toff, const float* B, float* C)
    void mn_wg_kernel_f64(int nv, int mr, Py_ssize_t oh_n, Py_ssize_t ow_n, Py_ssize_t wp,
                          const double* A, const Py_ssize_t* toff, const double* B, double* C)

    void mn_copy_rows_f32(float* d, const float* s, const Py_ssize_t* toff, Py_ssize_t n)
    void mn_copy_rows_f64(double* d, const double* s, const Py_ssize_t* toff, Py_ssize_t n)
    void mn_add_rows_f32(float* d, const float* tile, const Py_ssize_t* toff, Py_ssize_t cg,
                         Py_ssize_t kh, Py_ssize_t kw)
    void mn_add_rows_f64(double* d, const double* tile, const Py_ssize_t* toff, Py_ssize_t cg,
                         Py_ssize_t kh, Py_ssize_t kw)
    void mn_gather_t_f32(float* d, const float* s, Py_ssize_t P, Py_ssize_t kn, Py_ssize_t kb)
    void mn_gather_t_f64(double* d, const double* s, Py_ssize_t P, Py_ssize_t kn, Py_ssize_t kb)
    void mn_pack_rows_f32(float* d, const float* dy, Py_ssize_t P, Py_ssize_t kg,
                          const Run* segs, int nsegs)
    void mn_pack_rows_f64(double* d, const double* dy, Py_ssize_t P, Py_ssize_t kg,
                          const Run* segs, int nsegs)
    void mn_tile_to_nchw_f32(const float* tile, Py_ssize_t kb, Py_ssize_t cnt, Py_ssize_t kn,
                             const float* bias, float* dst, Py_ssize_t P)

mn_isa_bind(PyCapsule_GetPointer(_isa.KERNELS, "mininet_ext.kernels"))
cdef Py_ssize_t MR = mn_gemm_mr()
cdef Py_ssize_t MR_SHORT = mn_gemm_mr_short()
cdef Py_ssize_t KC = 256     # taps per forward B panel: KC x NR floats stay in L1
cdef Py_ssize_t CHUNK = 8    # pixel panels per weight-grad micro-kernel call (kc = CHUNK*NR)


cdef inline Py_ssize_t round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


cdef inline void kernel(Py_ssize_t kc, const floating* A, const floating* B, floating* C,
                        Py_ssize_t ldc, int accumulate) noexcept nogil:
    if floating is float:
        mn_kernel_f32(kc, A, B, C, ldc, accumulate)
    else:
        mn_kernel_f64(kc, A, B, C, ldc, accumulate)


cdef inline void fwd_kernel(Py_ssize_t mr, Py_ssize_t kc, const floating* A, const floating* B,
                            floating* C, Py_ssize_t ldc, int accumulate) noexcept nogil:
    if mr == MR:
        kernel(kc, A, B, C, ldc, accumulate)
    elif floating is float:
        mn_kernel_short_f32(kc, A, B, C, ldc, accumulate)
    else:
        mn_kernel_short_f64(kc, A, B, C, ldc, accumulate)


# the tab kernels' flags, added to nv: add the tile to C, and the taps' run length for the
# sliding kernels, kw << MN_TAB_KW_SHIFT (_gemm.h)
cdef int MN_TAB_ADD = 4
cdef int MN_TAB_KW_SHIFT = 3


cdef inline void tab_tile(int nv, int mr, Py_ssize_t kc, const floating* A, const Py_ssize_t* toff,
                          const floating* B, floating* C) noexcept nogil:
    if floating is float:
        mn_tab_kernel_f32(nv, mr, kc, A, toff, B, C)
    else:
        mn_tab_kernel_f64(nv, mr, kc, A, toff, B, C)


cdef inline void kernel_at(bint half, Py_ssize_t npan, const floating* A, Py_ssize_t astride,
                           const floating* B, Py_ssize_t bstride, floating* C,
                           Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        if half:
            mn_kernel_at_half_f32(npan, A, astride, B, bstride, C, ldc)
        else:
            mn_kernel_at_f32(npan, A, astride, B, bstride, C, ldc)
    else:
        if half:
            mn_kernel_at_half_f64(npan, A, astride, B, bstride, C, ldc)
        else:
            mn_kernel_at_f64(npan, A, astride, B, bstride, C, ldc)
