# mininet_ext/convgemm.pyx, part 3 of 4: the per-thread drivers of the panel path.
# Each thread owns whole images (so scatters never overlap): forward, weight grad and
# input grad loops over panels, the per-thread partial-sum reduction, and the bias
# grad's channel sum. Included textually by convgemm.pyx (Cython `include`).

# per-thread drivers: each thread owns whole images ----------------------------------------
cdef void copy_interior(const floating* src, floating* dst, Conv* cv,
                        bint into_padded) noexcept nogil:
    """One image from its own layout into the padded buffer's interior, or back (the
    adjoint's last step). The padded buffer's borders and tail are never written."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t c, ih, iw, u, p
    cdef const floating* s
    cdef floating* d
    if cv.phased:
        copy_phases(src, dst, cv, into_padded)
        return
    for c in range(g.C):
        for ih in range(g.H):
            u = (c * g.H + ih) * g.W
            p = c * cv.plane + (ih + g.ph) * cv.Wp + g.pw
            s = src + (u if into_padded else p)
            d = dst + (p if into_padded else u)
            for iw in range(g.W):
                d[iw] = s[iw]


cdef void copy_phases(const floating* src, floating* dst, Conv* cv,
                      bint into_padded) noexcept nogil:
    """copy_interior for the phased copy: each image row goes to its row phase, its
    columns dealt out to the sw column phases. Image pixels no output reads are not in
    the copy: copying back, they get zero (their gradient)."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t c, ih, a, p, area = cv.Hq * cv.Wp
    cdef floating* row
    if not into_padded:
        memset(dst, 0, g.C * g.H * g.W * sizeof(floating))
    for ih in range(g.H):
        a = ih + g.ph
        if a // g.sh >= cv.Hq:
            break
        for c in range(g.C):
            p = c * cv.plane + (a % g.sh) * g.sw * area + a // g.sh * cv.Wp
            row = <floating*>(src if into_padded else dst) + (c * g.H + ih) * g.W
            if floating is float:
                mn_phase_row_f32((dst if into_padded else <floating*>src) + p, row, g.W, g.pw,
                                 g.sw, cv.Wp, area, into_padded)
            else:
                mn_phase_row_f64((dst if into_padded else <floating*>src) + p, row, g.W, g.pw,
                                 g.sw, cv.Wp, area, into_padded)


cdef inline Py_ssize_t src_plane(Conv* cv) noexcept nogil:
    """Channel stride of what the gathers read (padded buffer or the image itself)."""
    return cv.plane if cv.padded else cv.g.H * cv.g.W


cdef inline Py_ssize_t pixel_end(Conv* cv) noexcept nogil:
    """Pixels of one image in panel numbering (padded rows or OH*OW)."""
    return cv.L if cv.padded else cv.P


cdef inline const floating* image_source(const floating* x, Py_ssize_t n, floating* xpad,
                                         Conv* cv) noexcept nogil:
    """What the gathers read for image n: the padded copy (made here) or the image."""
    cdef const floating* src = x + n * cv.g.C * cv.g.H * cv.g.W
    if not cv.padded:
        return src
    copy_interior(src, xpad, cv, True)
    return xpad


cdef inline Py_ssize_t next_panel(Conv* cv, Py_ssize_t q, Py_ssize_t nr, Panel* pn) noexcept nogil:
    """Map the panel starting at pixel q of the current image; returns the next q."""
    if cv.padded:
        map_padded(cv, q, nr, pn)
        return q + nr
    map_rows(cv, q, min(nr, cv.P - q), pn)
    return q + min(nr, cv.P - q)


cdef void forward_images(const floating* x, const floating* wp, const floating* bias,
                         floating* out, Conv* cv, Py_ssize_t n0, Py_ssize_t n1, floating* xpad,
                         floating* colp, floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    cdef Py_ssize_t mr = cv.fmr, kgp = round_up(cv.Kg, cv.fmr), n, q, grp, pc, kc, ip
    cdef Py_ssize_t plane = src_plane(cv)
    cdef const floating* src
    cdef const floating* a
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        q = 0
        while q < pixel_end(cv):
            q = next_panel(cv, q, nr, &pn)
            for grp in range(cv.G):
                if cv.R == 0:
                    memset(tile, 0, kgp * nr * sizeof(floating))
                pc = 0
                while pc < cv.R:
                    kc = min(KC, cv.R - pc)
                    pack_cols(src, plane, cv, &pn, grp * cv.Cg, pc, pc + kc, colp, nr)
                    a = wp + grp * kgp * cv.R + pc * kgp
                    for ip in range(kgp // mr):
                        fwd_kernel(mr, kc, a + ip * mr * kc, colp, tile + ip * mr * nr, nr, pc > 0)
                    pc += kc
                write_out(tile, bias, out + n * cv.K * cv.P, cv, &pn, grp * cv.Kg, nr)


cdef void weight_grad_chunk(floating* part, Conv* cv, Py_ssize_t grp, Py_ssize_t npan,
                            floating* colp, floating* dyt, Py_ssize_t nr) noexcept nogil:
    """part[grp] += the chunk's npan packed (column panel, transposed grad panel) products."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), nb = dw_block(cv, nr), kgn = round_up(cv.Kg, nb)
    cdef Py_ssize_t ip, jb
    cdef floating* c
    for ip in range(rp // MR):
        c = part + (grp * rp + ip * MR) * kgn
        for jb in range(kgn // nb):
            kernel_at(nb < nr, npan, colp + ip * MR * nr, rp * nr, dyt + jb * nb * nr, kgn * nr,
                      c + jb * nb, kgn)


cdef void weight_grad_images(const floating* x, const floating* dy, floating* part, Conv* cv,
                             Py_ssize_t n0, Py_ssize_t n1, floating* xpad, floating* colp,
                             floating* dyt, char* pmem, Py_ssize_t nr) noexcept nogil:
    """part (G, R_pad, Kg_nr) += these images' dW^T, CHUNK panels per micro-kernel call
    (colp: CHUNK x (R_pad x NR), dyt: CHUNK x (Kg_nr x NR)). colp must start zeroed: its
    rows past R and stale columns meet zero rows of dyt."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr))
    cdef Py_ssize_t n, q, grp, s
    cdef Py_ssize_t plane = src_plane(cv), end = pixel_end(cv)
    cdef const floating* src
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for grp in range(cv.G):
            q = 0
            while q < end:
                s = 0
                while s < CHUNK and q < end:
                    q = next_panel(cv, q, nr, &pn)
                    pack_cols(src, plane, cv, &pn, grp * cv.Cg, 0, cv.R, colp + s * rp * nr, nr)
                    pack_rows_t(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg,
                                dyt + s * kgn * nr, nr)
                    s += 1
                weight_grad_chunk(part, cv, grp, s, colp, dyt, nr)


cdef void input_grad_images(const floating* dy, const floating* wtp, floating* dx, Conv* cv,
                            Py_ssize_t n0, Py_ssize_t n1, floating* dxpad, floating* bpan,
                            floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    cdef Py_ssize_t chw = cv.g.C * cv.g.H * cv.g.W, rp = round_up(cv.R, MR), n, q, grp, ip
    cdef Py_ssize_t plane = src_plane(cv), end = pixel_end(cv)
    cdef floating* dst
    cdef Panel pn
    panel_init(&pn, pmem, cv, nr)
    for n in range(n0, n1):
        dst = dxpad if cv.padded else dx + n * chw
        memset(dst, 0, (cv.padsize if cv.padded else chw) * sizeof(floating))
        q = 0
        while q < end:
            q = next_panel(cv, q, nr, &pn)
            for grp in range(cv.G):
                pack_rows(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg, bpan, nr)
                for ip in range(rp // MR):
                    kernel(cv.Kg, wtp + grp * rp * cv.Kg + ip * MR * cv.Kg, bpan,
                           tile + ip * MR * nr, nr, 0)
                scatter_cols(tile, dst, plane, cv, &pn, grp * cv.Cg, nr)
        if cv.padded:
            copy_interior(dxpad, dx + n * chw, cv, False)


cdef void sum_partials(const floating* part, floating* dw, Conv* cv, int nt,
                       Py_ssize_t nr) noexcept nogil:
    """dw[grp*Kg + k, r] = sum over threads of part[t, grp, r, k]."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr)), grp, k, r
    cdef Py_ssize_t size = cv.G * rp * kgn
    cdef int t
    cdef floating s
    for grp in range(cv.G):
        for k in range(cv.Kg):
            for r in range(cv.R):
                s = 0
                for t in range(nt):
                    s = s + part[t * size + (grp * rp + r) * kgn + k]
                dw[(grp * cv.Kg + k) * cv.R + r] = s


cdef void channel_sum(const floating* dy, floating* db, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
                      Py_ssize_t k) noexcept nogil:
    # 16 independent partial sums per row, so the compiler can vectorise the loop
    cdef floating acc[16]
    cdef const floating* row
    cdef double s = 0
    cdef Py_ssize_t n, p, l
    for n in range(N):
        row = dy + (n * K + k) * P
        for l in range(16):
            acc[l] = 0
        for p in range(P // 16):
            for l in range(16):
                acc[l] += row[p * 16 + l]
        for p in range(P // 16 * 16, P):
            s += row[p]
        for l in range(16):
            s += acc[l]
    db[k] = <floating>s
