# mininet_ext/convgemm.pyx, part 2 of 4: packing.
# Panel tables (which input runs NR output pixels read), the gather of input columns
# into the micro-kernel's B layout and its adjoint scatter, output-gradient packing,
# the tile-to-NCHW write, and the once-per-call weight packing.
# Included textually by convgemm.pyx (Cython `include`).

cdef inline Py_ssize_t dw_block(Conv* cv, Py_ssize_t nr) noexcept nogil:
    """Output channels per weight-grad micro-kernel call: NR, or NR/2 (one vector) when a
    group has no more than that, so the kernel does not multiply padding."""
    return nr // 2 if cv.Kg <= nr // 2 else nr


# panels -------------------------------------------------------------------------------------
cdef Py_ssize_t panel_bytes(Conv* cv, Py_ssize_t nr) noexcept nogil:
    return nr * (2 * sizeof(Run) + (cv.g.kh + 3 * cv.g.kw) * sizeof(Py_ssize_t))


cdef void panel_init(Panel* pn, char* mem, Conv* cv, Py_ssize_t nr) noexcept nogil:
    pn.runs = <Run*>mem
    pn.segs = pn.runs + nr
    pn.rowoff = <Py_ssize_t*>(mem + 2 * nr * sizeof(Run))
    pn.lo = pn.rowoff + nr * cv.g.kh
    pn.hi = pn.lo + nr * cv.g.kw
    pn.col0 = pn.hi + nr * cv.g.kw


cdef void map_rows(Conv* cv, Py_ssize_t q, Py_ssize_t cols, Panel* pn) noexcept nogil:
    """Pixels q..q+cols of an image, any stride: one run per output row (at most cols), reading
    the unpadded image; out-of-image taps read as zero."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t jj = 0, oh, ow, i, j, ih
    cdef Run* run
    cdef int u = 0
    while jj < cols:
        run = &pn.runs[u]
        oh = q // g.OW
        ow = q - oh * g.OW
        run.len = min(g.OW - ow, cols - jj)
        run.jj, run.off = jj, q
        pn.segs[u] = run[0]
        for i in range(g.kh):
            ih = oh * g.sh - g.ph + i * g.dh
            pn.rowoff[u * g.kh + i] = ih * g.W if 0 <= ih < g.H else -1
        for j in range(g.kw):
            pn.lo[u * g.kw + j] = clamp(cv.owlo[j] - ow, 0, run.len)
            pn.hi[u * g.kw + j] = clamp(cv.owhi[j] - ow, pn.lo[u * g.kw + j], run.len)
            pn.col0[u * g.kw + j] = ow * g.sw - g.pw + j * g.dw
        jj += run.len
        q += run.len
        u += 1
    pn.nruns = pn.nsegs = u


cdef void map_padded(Conv* cv, Py_ssize_t q, Py_ssize_t nr, Panel* pn) noexcept nogil:
    """Pixels q..q+nr of the padded-row space (q = oh*Wp + ow) read one contiguous window
    per tap from the padded (or phased) image; the columns with ow < OW are the output pixels."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t i, j, t = 0, oh, ow, n
    cdef int u = 0
    pn.runs[0].jj, pn.runs[0].len, pn.runs[0].off = 0, nr, 0
    pn.nruns = 1
    for i in range(g.kh):
        pn.rowoff[i] = q + i * g.dh * cv.Wp
    for j in range(g.kw):
        pn.lo[j], pn.hi[j], pn.col0[j] = 0, nr, j * g.dw
    while t < nr and q + t < cv.L:
        oh = (q + t) // cv.Wp
        ow = q + t - oh * cv.Wp
        n = min(cv.Wp - ow, nr - t)
        if ow < g.OW:
            pn.segs[u].jj, pn.segs[u].len, pn.segs[u].off = t, min(n, g.OW - ow), oh * g.OW + ow
            u += 1
        t += n
    pn.nsegs = u


cdef inline void next_tap(Geom* g, Py_ssize_t* c, Py_ssize_t* i, Py_ssize_t* j) noexcept nogil:
    """Advance tap (c, i, j) in row-major order."""
    j[0] += 1
    if j[0] == g.kw:
        j[0] = 0
        i[0] += 1
        if i[0] == g.kh:
            i[0] = 0
            c[0] += 1


cdef void pack_cols(const floating* src, Py_ssize_t plane, Conv* cv, Panel* pn, Py_ssize_t c0,
                    Py_ssize_t r0, Py_ssize_t r1, floating* dst, Py_ssize_t nr) noexcept nogil:
    """dst[r - r0, jj] = the value tap r (channels from c0; taps (c, i, j) row-major) reads for
    panel column jj from src (one image, channel stride plane); zero outside the image."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t r, c, i, j, t, ro, a, b, sw = g.sw
    cdef int u
    cdef floating* d
    cdef const floating* s
    if cv.padded:     # one full-width window per tap
        if floating is float:
            mn_copy_rows_f32(dst, src + c0 * plane + pn.rowoff[0], cv.toff + r0, r1 - r0)
        else:
            mn_copy_rows_f64(dst, src + c0 * plane + pn.rowoff[0], cv.toff + r0, r1 - r0)
        return
    c, i, j = r0 // (g.kh * g.kw), (r0 // g.kw) % g.kh, r0 % g.kw
    for r in range(r0, r1):
        for u in range(pn.nruns):
            d = dst + (r - r0) * nr + pn.runs[u].jj
            ro = pn.rowoff[u * g.kh + i]
            a, b = pn.lo[u * g.kw + j], pn.hi[u * g.kw + j]
            s = src + ro + (c0 + c) * plane + pn.col0[u * g.kw + j]
            if ro < 0:
                copy_window(d, d, pn.runs[u].len, 0, 0)     # all zero, nothing read
            elif sw == 1:
                copy_window(d, s, pn.runs[u].len, a, b)
            else:
                copy_window(d, d, pn.runs[u].len, 0, 0)
                for t in range(a, b):
                    d[t] = s[t * sw]
        next_tap(g, &c, &i, &j)


cdef void scatter_cols(const floating* tile, floating* dst, Py_ssize_t plane, Conv* cv, Panel* pn,
                       Py_ssize_t c0, Py_ssize_t nr) noexcept nogil:
    """The adjoint of pack_cols over all R taps: dst[...] += tile[r, jj]."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t r, c, i, j, t, ro, a, b, sw = g.sw
    cdef int u
    cdef const floating* s
    cdef floating* d
    if cv.padded:   # tap by tap, channel innermost (_convpack.h says why)
        if floating is float:
            mn_add_rows_f32(dst + c0 * plane + pn.rowoff[0], tile, cv.toff, cv.Cg, g.kh, g.kw)
        else:
            mn_add_rows_f64(dst + c0 * plane + pn.rowoff[0], tile, cv.toff, cv.Cg, g.kh, g.kw)
        return
    c = i = j = 0
    for r in range(cv.R):
        for u in range(pn.nruns):
            ro = pn.rowoff[u * g.kh + i]
            if ro < 0:
                continue
            a, b = pn.lo[u * g.kw + j], pn.hi[u * g.kw + j]
            s = tile + r * nr + pn.runs[u].jj
            d = dst + ro + (c0 + c) * plane + pn.col0[u * g.kw + j]
            if sw == 1:
                add_window(d, s, a, b)
            else:
                for t in range(a, b):
                    d[t * sw] += s[t]
        next_tap(g, &c, &i, &j)


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
