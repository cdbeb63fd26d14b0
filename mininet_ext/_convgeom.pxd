"""Convolution geometry shared by the im2col (conv.pyx) and the fused
implicit-GEMM (convgemm.pyx) kernels."""

cdef struct Geom:
    Py_ssize_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0; rounds toward +inf for either sign of a
    return -((-a) // b) if a < 0 else (a + b - 1) // b


cdef inline Py_ssize_t clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline void out_range(Py_ssize_t tap, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                           Py_ssize_t n_out, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs o with 0 <= o*stride - pad + tap < size are lo <= o < hi."""
    lo[0] = clamp(ceil_div(pad - tap, stride), 0, n_out)
    hi[0] = clamp(ceil_div(size + pad - tap, stride), lo[0], n_out)


cdef inline Geom make_geom(tuple xshape, tuple kernel, tuple stride, tuple pad, tuple dil,
                           Py_ssize_t OH, Py_ssize_t OW) except *:
    cdef Geom g
    g.N, g.C, g.H, g.W = xshape
    g.kh, g.kw = kernel
    g.sh, g.sw = stride
    g.ph, g.pw = pad
    g.dh, g.dw = dil
    g.OH, g.OW = OH, OW
    if g.sh < 1 or g.sw < 1 or g.dh < 1 or g.dw < 1:
        raise ValueError("stride and dilation must be >= 1")
    return g
