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
            copy_row(d, s, g.W)


cdef inline void copy_row(floating* d, const floating* s, Py_ssize_t n) noexcept nogil:
    """d[:n] = s[:n] in 32-byte pieces, the last one ending at n (overlapping the one
    before: same values). Rows are short (14-32 items): item by item, with the compiler's
    alias checks and remainder loop, the MNIST CNN's 14-wide rows took 3.4% of its 5x5
    layer's forward."""
    cdef Py_ssize_t i = 0, w = 32 // sizeof(floating)
    if n < w:
        for i in range(n):
            d[i] = s[i]
        return
    while i + w < n:
        memcpy(d + i, s + i, 32)
        i += w
    memcpy(d + n - w, s + n - w, 32)


cdef void copy_phases(const floating* src, floating* dst, Conv* cv,
                      bint into_padded) noexcept nogil:
    """copy_interior for the phased copy, channel by channel through the phase tables.
    Image pixels no output reads are not in the copy: copying back, they get zero (their
    gradient)."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t c, hw = g.H * g.W
    cdef floating* ph
    cdef floating* img
    if not into_padded:
        memset(dst, 0, g.C * hw * sizeof(floating))
    for c in range(g.C):
        ph = (dst if into_padded else <floating*>src) + c * cv.plane
        img = (<floating*>src if into_padded else dst) + c * hw
        if floating is float:
            if into_padded and mn_phase_deal_f32(ph, img, cv.phrow, cv.phh, cv.phw, g.W, g.pw,
                                                 g.sw, cv.Hq * cv.Wp):
                continue
            mn_phase_plane_f32(ph, img, cv.phrow, cv.phcol, cv.phh, cv.phw, g.W, into_padded)
        else:
            mn_phase_plane_f64(ph, img, cv.phrow, cv.phcol, cv.phh, cv.phw, g.W, into_padded)


cdef inline const floating* image_source(const floating* x, Py_ssize_t n, floating* xpad,
                                         Conv* cv) noexcept nogil:
    """What the gathers read for image n: its padded (or phased) copy, made here."""
    copy_interior(x + n * cv.g.C * cv.g.H * cv.g.W, xpad, cv, True)
    return xpad


cdef void forward_images(const floating* x, const floating* wp, const floating* bias,
                         floating* out, Conv* cv, Py_ssize_t n0, Py_ssize_t n1, floating* xpad,
                         floating* colp, floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    """Panels of nr pixels over images n0..n1 taken as one run of padded-row pixels: a
    panel that ends past an image's last pixel goes on in the next image (pack_cols_cross),
    so images do not each leave a part-empty last panel (an 8x8 output in rows of 9 is 72
    pixels: 3 panels of 32 alone, 2.25 in a run; the 7x7 stride-4 layer's GEMM was 1/3
    wasted). xpad: two image copies, padsize apart, image j's in copy j % 2."""
    cdef Py_ssize_t L = cv.L, total = (n1 - n0) * L, Q = 0, j, lq, t, made = -1
    cdef const floating* src
    cdef const floating* nxt
    cdef Panel pn
    panel_init(&pn, pmem)
    while Q < total:
        j = Q // L
        lq = Q - j * L
        t = min(nr, L - lq)
        if made < j:
            image_source(x, n0 + j, xpad + j % 2 * cv.padsize, cv)
            made = j
        src = xpad + j % 2 * cv.padsize
        nxt = NULL
        if t < nr and j + 1 < n1 - n0:
            if made < j + 1:
                image_source(x, n0 + j + 1, xpad + (j + 1) % 2 * cv.padsize, cv)
                made = j + 1
            nxt = xpad + (j + 1) % 2 * cv.padsize
        pn.q = lq
        pn.nsegs = 0
        if nxt == NULL:
            map_segs(cv, lq, nr, 0, j * cv.K * cv.P, &pn)
            Q += nr
        else:
            map_segs(cv, lq, t, 0, j * cv.K * cv.P, &pn)
            map_segs(cv, 0, nr - t, t, (j + 1) * cv.K * cv.P, &pn)
            Q += t + min(nr - t, L)
        forward_panel(src, nxt, wp, bias, out + n0 * cv.K * cv.P, cv, &pn, t, colp, tile, nr)


cdef void forward_panel(const floating* src, const floating* nxt, const floating* wp,
                        const floating* bias, floating* out, Conv* cv, Panel* pn, Py_ssize_t t,
                        floating* colp, floating* tile, Py_ssize_t nr) noexcept nogil:
    """One output panel (mapped in pn, its offsets from out) for every group: gather, GEMM
    in KC blocks of taps, write. nxt: the next image's copy when the panel crosses into it
    at column t."""
    cdef Py_ssize_t mr = cv.fmr, kgp = round_up(cv.Kg, cv.fmr), grp, pc, kc, ip
    cdef const floating* a
    for grp in range(cv.G):
        if cv.R == 0:
            memset(tile, 0, kgp * nr * sizeof(floating))
        pc = 0
        while pc < cv.R:
            kc = min(KC, cv.R - pc)
            if nxt == NULL:
                pack_cols(src, cv, pn, grp * cv.Cg, pc, pc + kc, colp)
            else:
                pack_cols_cross(src, nxt, cv, pn.q, t, grp * cv.Cg, pc, pc + kc, colp, nr)
            a = wp + grp * kgp * cv.R + pc * kgp
            for ip in range(kgp // mr):
                fwd_kernel(mr, kc, a + ip * mr * kc, colp, tile + ip * mr * nr, nr, pc > 0)
            pc += kc
        write_out(tile, bias, out, cv, pn, grp * cv.Kg, nr)


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
    cdef const floating* src
    cdef Panel pn
    panel_init(&pn, pmem)
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for grp in range(cv.G):
            q = 0
            while q < cv.L:
                s = 0
                while s < CHUNK and q < cv.L:
                    map_panel(cv, q, nr, &pn)
                    q += nr
                    pack_cols(src, cv, &pn, grp * cv.Cg, 0, cv.R, colp + s * rp * nr)
                    pack_rows_t(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg,
                                dyt + s * kgn * nr, nr)
                    s += 1
                weight_grad_chunk(part, cv, grp, s, colp, dyt, nr)


cdef void input_grad_images(const floating* dy, const floating* wtp, floating* dx, Conv* cv,
                            Py_ssize_t n0, Py_ssize_t n1, floating* dxpad, floating* bpan,
                            floating* tile, char* pmem, Py_ssize_t nr) noexcept nogil:
    cdef Py_ssize_t chw = cv.g.C * cv.g.H * cv.g.W, rp = round_up(cv.R, MR), n, q, grp, ip
    cdef Panel pn
    panel_init(&pn, pmem)
    for n in range(n0, n1):
        memset(dxpad, 0, cv.padsize * sizeof(floating))
        for q in range((cv.L + nr - 1) // nr):     # panel index
            map_panel(cv, q * nr, nr, &pn)
            for grp in range(cv.G):
                pack_rows(dy + n * cv.K * cv.P, cv, &pn, grp * cv.Kg, bpan, nr)
                for ip in range(rp // MR):
                    kernel(cv.Kg, wtp + grp * rp * cv.Kg + ip * MR * cv.Kg, bpan,
                           tile + ip * MR * nr, nr, 0)
                scatter_cols(tile, dxpad, cv, &pn, grp * cv.Cg)
        copy_interior(dxpad, dx + n * chw, cv, False)


cdef void add_partials(floating* part, Py_ssize_t nparts, Py_ssize_t size) noexcept nogil:
    """part[:size] += part[t * size:(t + 1) * size] for t = 1..nparts-1 in turn: the
    partial weight gradients of the chunks of images summed into the first, in chunk
    order, position by position (contiguous runs the compiler vectorises). Summed position
    by position across the partials instead, sizes apart, the MNIST CNN's 5x5 layer spent
    3% of its forward + backward here, on one thread."""
    cdef Py_ssize_t t, j
    cdef const floating* src
    for t in range(1, nparts):
        src = part + t * size
        for j in range(size):
            part[j] = part[j] + src[j]


cdef void sum_partials(floating* part, floating* dw, Conv* cv, Py_ssize_t nt,
                       Py_ssize_t nr) noexcept nogil:
    """dw[grp*Kg + k, r] = sum over the nt partials (chunks of images) of part[t, grp, r, k],
    in order (add_partials)."""
    cdef Py_ssize_t rp = round_up(cv.R, MR), kgn = round_up(cv.Kg, dw_block(cv, nr)), grp, k, r
    if nt == 0:   # no images: no partials, a zero gradient
        memset(dw, 0, cv.G * cv.Kg * cv.R * sizeof(floating))
        return
    add_partials(part, nt, cv.G * rp * kgn)
    for grp in range(cv.G):
        for r in range(cv.R):
            for k in range(cv.Kg):
                dw[(grp * cv.Kg + k) * cv.R + r] = part[(grp * rp + r) * kgn + k]


cdef enum:
    SUM_BLOCK_MAX = 64   # channels a bias-gradient block sums together


cdef void channel_sums(const floating* dy, floating* db, Py_ssize_t N, Py_ssize_t K,
                       Py_ssize_t P, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """db[k] for k in k0..k1 (at most SUM_BLOCK_MAX): the sum of dy (N, K, P) over n and
    p, image by image over the block's rows together (_omp.channel_block: channel by
    channel, at 4x4 maps every row was a cache miss, 5 GB/s). Each channel's sum runs in
    one order, whatever the block and the threads."""
    # 16 independent partial sums per row, so the compiler can vectorise the loop, added
    # lane by lane into each channel's 16 double sums (one row's 16 added up one by one,
    # a chain of dependent adds, took longer than its reads at small maps)
    cdef floating acc[16]
    cdef double tot[SUM_BLOCK_MAX][16]
    cdef double rest[SUM_BLOCK_MAX]
    cdef double s
    cdef const floating* row
    cdef Py_ssize_t n, p, l, k
    for k in range(k1 - k0):
        rest[k] = 0
        for l in range(16):
            tot[k][l] = 0
    for n in range(N):
        for k in range(k0, k1):
            row = dy + (n * K + k) * P
            for l in range(16):
                acc[l] = 0
            for p in range(P // 16):
                for l in range(16):
                    acc[l] += row[p * 16 + l]
            for p in range(P // 16 * 16, P):
                rest[k - k0] += row[p]
            for l in range(16):
                tot[k - k0][l] += acc[l]
    for k in range(k0, k1):
        s = rest[k - k0]
        for l in range(16):
            s += tot[k - k0][l]
        db[k] = <floating>s
