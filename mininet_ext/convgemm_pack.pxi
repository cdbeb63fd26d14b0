# mininet_ext/convgemm.pyx, part 2 of 4: packing.
# Panel maps (which columns of NR padded-row pixels are output pixels), the gather of input columns
# into the micro-kernel's B layout and its adjoint scatter, output-gradient packing,
# the tile-to-NCHW write, and the once-per-call weight packing.
# Included textually by convgemm.pyx (Cython `include`).

cdef inline Py_ssize_t dw_block(Conv* cv, Py_ssize_t nr) noexcept nogil:
    """Output channels per weight-grad micro-kernel call: NR, or NR/2 (one vector) when a
    group has no more than that, so the kernel does not multiply padding."""
    return nr // 2 if cv.Kg <= nr // 2 else nr


# panels -------------------------------------------------------------------------------------
cdef Py_ssize_t panel_bytes(Conv* cv, Py_ssize_t nr) noexcept nogil:
    return nr * sizeof(Run)


cdef void panel_init(Panel* pn, char* mem) noexcept nogil:
    pn.segs = <Run*>mem


cdef void map_panel(Conv* cv, Py_ssize_t q, Py_ssize_t nr, Panel* pn) noexcept nogil:
    """Pixels q..q+nr of the padded-row space (q = oh*Wp + ow): the columns with ow < OW
    are the output pixels, one segment per output row the panel crosses."""
    pn.q = q
    pn.nsegs = 0
    map_segs(cv, q, nr, 0, 0, pn)


cdef void map_segs(Conv* cv, Py_ssize_t q, Py_ssize_t cnt, Py_ssize_t jj0, Py_ssize_t off0,
                   Panel* pn) noexcept nogil:
    """Appends the segments of pixels q..q+cnt (one image) at panel columns jj0.., their
    output offsets from off0."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t t = 0, oh, ow, n
    cdef int u = pn.nsegs
    while t < cnt and q + t < cv.L:
        oh = (q + t) // cv.Wp
        ow = q + t - oh * cv.Wp
        n = min(cv.Wp - ow, cnt - t)
        if ow < g.OW:
            pn.segs[u].jj, pn.segs[u].len = jj0 + t, min(n, g.OW - ow)
            pn.segs[u].off = off0 + oh * g.OW + ow
            u += 1
        t += n
    pn.nsegs = u


cdef void pack_cols_cross(const floating* src, const floating* src2, Conv* cv, Py_ssize_t q,
                          Py_ssize_t t, Py_ssize_t c0, Py_ssize_t r0, Py_ssize_t r1,
                          floating* dst, Py_ssize_t nr) noexcept nogil:
    """pack_cols for a panel across two images: columns < t from src at pixel q, the rest
    from src2 (the next image's copy) from its pixel 0. dst needs nr items of slack."""
    if floating is float:
        mn_cross_rows_f32(dst, src + c0 * cv.plane + q, src2 + c0 * cv.plane, cv.toff + r0,
                          r1 - r0, nr, t)
    else:
        mn_cross_rows_f64(dst, src + c0 * cv.plane + q, src2 + c0 * cv.plane, cv.toff + r0,
                          r1 - r0, nr, t)


cdef void pack_cols(const floating* src, Conv* cv, Panel* pn, Py_ssize_t c0, Py_ssize_t r0,
                    Py_ssize_t r1, floating* dst) noexcept nogil:
    """dst[r - r0, jj] = what tap r (channels from c0; taps (c, i, j) row-major) reads for
    panel column jj from src (one image's padded or phased copy): one NR-wide window per tap."""
    if floating is float:
        mn_copy_rows_f32(dst, src + c0 * cv.plane + pn.q, cv.toff + r0, r1 - r0)
    else:
        mn_copy_rows_f64(dst, src + c0 * cv.plane + pn.q, cv.toff + r0, r1 - r0)


cdef void scatter_cols(const floating* tile, floating* dst, Conv* cv, Panel* pn,
                       Py_ssize_t c0) noexcept nogil:
    """The adjoint of pack_cols over all R taps: dst[...] += tile[r, jj], tap by tap with
    the channel innermost (_convpack.h says why)."""
    cdef Geom* g = &cv.g
    if floating is float:
        mn_add_rows_f32(dst + c0 * cv.plane + pn.q, tile, cv.toff, cv.Cg, g.kh, g.kw)
    else:
        mn_add_rows_f64(dst + c0 * cv.plane + pn.q, tile, cv.toff, cv.Cg, g.kh, g.kw)


cdef void pack_rows(const floating* dy, Conv* cv, Panel* pn, Py_ssize_t k0, floating* dst,
                    Py_ssize_t nr) noexcept nogil:
    """dst[k, jj] = dy[k0 + k, pixel of column jj] (one image's (K, OH*OW) grad), zero in the
    columns that are not output pixels."""
    if floating is float:
        mn_pack_rows_f32(dst, dy + k0 * cv.P, cv.P, cv.Kg, pn.segs, pn.nsegs)
    else:
        mn_pack_rows_f64(dst, dy + k0 * cv.P, cv.P, cv.Kg, pn.segs, pn.nsegs)


cdef void pack_rows_t(const floating* dy, Conv* cv, Panel* pn, Py_ssize_t k0, floating* dst,
                      Py_ssize_t nr) noexcept nogil:
    """dst[kb, jj, kk] = dy[k0 + kb*nb + kk, pixel of column jj]: the transposed panel in B
    layout, nb = dw_block channels per block; zero in padding channels and non-pixel
    columns."""
    cdef Py_ssize_t k, t, nb = dw_block(cv, nr)
    cdef int u
    cdef const floating* s
    cdef floating* d
    memset(dst, 0, round_up(cv.Kg, nb) * nr * sizeof(floating))
    for k in range(cv.Kg):
        for u in range(pn.nsegs):
            s = dy + (k0 + k) * cv.P + pn.segs[u].off
            d = dst + (k // nb) * nb * nr + pn.segs[u].jj * nb + k % nb
            for t in range(pn.segs[u].len):
                d[t * nb] = s[t]


cdef void write_out(const floating* tile, const floating* bias, floating* out, Conv* cv,
                    Panel* pn, Py_ssize_t k0, Py_ssize_t nr) noexcept nogil:
    """out[k0 + k, pixel of column jj] = tile[k, jj] + bias[k0 + k] (one image's output),
    max(0, .) of it with cv.relu."""
    cdef Py_ssize_t k, t
    cdef int u
    cdef floating b
    cdef const floating* s
    cdef floating* d
    for k in range(cv.Kg):
        b = bias[k0 + k] if bias != NULL else 0
        for u in range(pn.nsegs):
            d = out + (k0 + k) * cv.P + pn.segs[u].off
            s = tile + k * nr + pn.segs[u].jj
            if cv.relu:
                for t in range(pn.segs[u].len):
                    d[t] = max(s[t] + b, 0)
            else:
                for t in range(pn.segs[u].len):
                    d[t] = s[t] + b


# weights, packed once per call -------------------------------------------------------------
cdef void pack_w(const floating* w, Conv* cv, floating* out) noexcept nogil:
    """Forward A operand: per group and KC block of taps, fmr-row panels of W (rows past Kg
    zero). Block (grp, pc) starts at (grp*Kg_pad*R + pc*Kg_pad), panel ip at + ip*fmr*kc."""
    cdef Py_ssize_t mr = cv.fmr, kgp = round_up(cv.Kg, cv.fmr), grp, pc, kc, ip, p, i, row
    cdef floating* d
    for grp in range(cv.G):
        pc = 0
        while pc < cv.R:
            kc = min(KC, cv.R - pc)
            for ip in range(kgp // mr):
                d = out + grp * kgp * cv.R + pc * kgp + ip * mr * kc
                for p in range(kc):
                    for i in range(mr):
                        row = ip * mr + i
                        d[p * mr + i] = w[(grp * cv.Kg + row) * cv.R + pc + p] if row < cv.Kg else 0
            pc += kc


cdef void pack_wt(const floating* w, Conv* cv, floating* out) noexcept nogil:
    """Input-grad A operand: per group, MR-row panels of W^T (R x Kg; rows past R zero)."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), grp, ip, k, i, r
    cdef floating* d
    for grp in range(cv.G):
        for ip in range(rp // MR):
            d = out + grp * rp * cv.Kg + ip * MR * cv.Kg
            for k in range(cv.Kg):
                for i in range(MR):
                    r = ip * MR + i
                    d[k * MR + i] = w[(grp * cv.Kg + k) * cv.R + r] if r < cv.R else 0
