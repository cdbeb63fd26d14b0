# mininet_ext/convgemm.pyx, part 4 of 4: the pixel-major (tap-table) path.
# For stride 1 with one group: the forward reads tiles straight from the padded image
# through the tap table (no gather), and the weight grad runs tap-major over it.
# Choosing it (choose_tab), its tap order (tab_place, row skipping) and its drivers.
# Included textually by convgemm.pyx (Cython `include`).

# forward_rows: output pixels of a row transposed into NCHW together (the tiles of one span,
# 64 x kb floats: 8 KB at 32 channels, in L1)
cdef Py_ssize_t TAB_SPAN = 64


cdef void choose_tab(Conv* cv, Py_ssize_t vw) noexcept nogil:
    """The pixel-major forward (forward_rows) for stride 1 and one group, enough output
    channels to fill the vectors, and when an output row splits into whole tiles of one of the kernel heights with at most 1/8 of the
    computed pixels dropped (OW = 14 or 28: none); the panel path drops (Wp - OW) / Wp."""
    cdef int nv = 1 if cv.K <= vw else 2, mr, best = 0, taller
    cdef Py_ssize_t tiles, waste, best_waste = 0
    cv.tab_nv = cv.tab_mr = 0
    # the channels must fill at least half the vectors (one output channel would waste
    # 15 of 16 lanes: the panel path suits it better)
    if cv.phased or cv.G != 1 or cv.g.OW < 1 or 2 * cv.K < nv * vw:
        return
    for taller in range(2):
        mr = mn_tab_mr(nv, 1 - taller)
        tiles = (cv.g.OW + mr - 1) // mr
        waste = tiles * mr - cv.g.OW
        if waste * 8 <= tiles * mr and (best == 0 or waste < best_waste):
            best, best_waste = mr, waste
    if best:
        cv.tab_nv, cv.tab_mr = nv, best


cdef inline Py_ssize_t tab_place(Conv* cv, Py_ssize_t r) noexcept nogil:
    """Tap r = (c, kh, kw) of the weights' order at its place in forward_rows' order: the
    same, or with tab_skip (kh, c, kw), where the taps of the kernel rows inside the image
    are one contiguous range (a channel's taps in one kernel row still read neighbouring
    pixels, but a channel's kernel rows are C*kw taps apart: worse L1 reuse, so only
    where the skipped rows pay for it)."""
    cdef Py_ssize_t kw = cv.g.kw, khw = cv.g.kh * kw
    if not cv.tab_skip:
        return r
    return (r % khw // kw * cv.Cg + r // khw) * kw + r % kw


cdef void pack_w_cols(const floating* w, Conv* cv, Py_ssize_t kb, floating* out) noexcept nogil:
    """W^T in blocks of kb output channels, taps in forward_rows' order:
    out[blk][tab_place(r)][kk] = w[blk*kb + kk, r], 0 past K."""
    cdef Py_ssize_t blk, r, kk, k, rr, nblk = (cv.K + kb - 1) // kb
    for blk in range(nblk):
        for r in range(cv.R):
            rr = tab_place(cv, r)
            for kk in range(kb):
                k = blk * kb + kk
                out[(blk * cv.R + rr) * kb + kk] = w[k * cv.R + r] if k < cv.K else 0


cdef inline Py_ssize_t inside_rows(Geom* g, Py_ssize_t oh, Py_ssize_t* lo) noexcept nogil:
    """The kernel rows lo.. lo+count (count returned) that output row oh reads inside the
    image; those above or below it read only padding zeros."""
    cdef Py_ssize_t kh, ih, hi = 0
    lo[0] = g.kh
    for kh in range(g.kh):
        ih = oh * g.sh - g.ph + kh * g.dh
        if 0 <= ih < g.H:
            lo[0] = min(lo[0], kh)
            hi = kh + 1
    return max(hi - lo[0], 0)


cdef inline void row_taps(Conv* cv, Py_ssize_t oh, Py_ssize_t* start, Py_ssize_t* count) noexcept nogil:
    """The taps forward_rows multiplies for output row oh: all of them, or with tab_skip
    those of its inside_rows (a 5x5 kernel on a 14x14 map with padding 2: 91%)."""
    cdef Py_ssize_t lo
    if not cv.tab_skip:
        start[0], count[0] = 0, cv.R
        return
    count[0] = inside_rows(&cv.g, oh, &lo) * cv.g.kw * cv.Cg
    start[0] = lo * cv.g.kw * cv.Cg


cdef bint skip_pays(Conv* cv) noexcept nogil:
    """Whether the kernel rows on vertical padding are at least 1/16 of all (8.6% for
    the CNN's 14x14 5x5 layer, 1.2% for a 56x56 3x3 one)."""
    cdef Py_ssize_t oh, lo, skipped = 0
    for oh in range(cv.g.OH):
        skipped += cv.g.kh - inside_rows(&cv.g, oh, &lo)
    return skipped * 16 >= cv.g.OH * cv.g.kh


cdef inline void relu_rows(floating* d, Py_ssize_t rows, Py_ssize_t cnt,
                           Py_ssize_t stride) noexcept nogil:
    cdef Py_ssize_t k, i
    for k in range(rows):
        for i in range(cnt):
            d[k * stride + i] = max(d[k * stride + i], 0)


cdef inline Py_ssize_t tab_span(Conv* cv) noexcept nogil:
    """Pixels of one output row that forward_rows computes before it transposes them
    (a multiple of tab_mr): TAB_SPAN, or one tile where tab_mr is larger."""
    return max(TAB_SPAN // cv.tab_mr, 1) * cv.tab_mr


cdef void tiles_to_nchw(const floating* tile, const floating* bias, floating* dst, Conv* cv,
                        Py_ssize_t kb, Py_ssize_t kn, Py_ssize_t cnt) noexcept nogil:
    """dst[k * P + i] = tile[i * kb + k] + bias[k] (i < cnt pixels, k < kn channels), then
    relu where asked (the span just written, still in L1)."""
    cdef Py_ssize_t k, i
    cdef floating b
    if floating is float and kb % 16 == 0:   # vector transpose
        mn_tile_to_nchw_f32(tile, kb, cnt, kn, bias, dst, cv.P)
    else:
        for k in range(kn):
            b = bias[k] if bias != NULL else 0
            for i in range(cnt):
                dst[k * cv.P + i] = tile[i * kb + k] + b
    if cv.relu:
        relu_rows(dst, kn, cnt, cv.P)


cdef void forward_rows(const floating* x, const floating* wt, const floating* bias,
                       floating* out, Conv* cv, Py_ssize_t n0, Py_ssize_t n1, floating* xpad,
                       floating* tile, Py_ssize_t kb) noexcept nogil:
    """Pixel-major forward of images n0..n1: per output row, tiles of tab_mr pixels x kb
    channels straight from the padded image through the tap table (no gather), side by
    side in `tile` for up to tab_span pixels, then transposed into NCHW with the bias
    added. Transposing a span rather than each tile: whole 16 x 16 blocks and full-vector
    stores (a 32-wide row in 12-pixel tiles left 1/3 of the blocks empty and split every
    store across cache lines; the transpose was 40% of the RGB 3x3 layer's time)."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.tab_mr, nv = cv.tab_nv
    cdef Py_ssize_t n, blk, oh, ow0, s0, kn, nblk = (cv.K + kb - 1) // kb, span = tab_span(cv)
    cdef const floating* src
    cdef const floating* bblk
    cdef Py_ssize_t tap0, ntap
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for blk in range(nblk):
            kn = min(kb, cv.K - blk * kb)
            bblk = bias + blk * kb if bias != NULL else NULL
            for oh in range(g.OH):
                row_taps(cv, oh, &tap0, &ntap)
                ow0 = s0 = 0
                while ow0 < g.OW:
                    if floating is float:
                        mn_tab_kernel_f32(nv, mr, ntap, src + oh * cv.Wp + ow0, cv.tofr + tap0,
                                          wt + (blk * cv.R + tap0) * kb,
                                          tile + (ow0 - s0) * kb)
                    else:
                        mn_tab_kernel_f64(nv, mr, ntap, src + oh * cv.Wp + ow0, cv.tofr + tap0,
                                          wt + (blk * cv.R + tap0) * kb,
                                          tile + (ow0 - s0) * kb)
                    ow0 += mr
                    if ow0 >= g.OW or ow0 - s0 >= span:
                        tiles_to_nchw(tile, bblk,
                                      out + (n * cv.K + blk * kb) * cv.P + oh * g.OW + s0,
                                      cv, kb, kn, min(ow0, g.OW) - s0)
                        s0 = ow0


cdef void weight_grad_rows(const floating* x, const floating* dy, floating* part, Conv* cv,
                           const Py_ssize_t* toffp, Py_ssize_t n0, Py_ssize_t n1,
                           floating* xpad, floating* dyt, Py_ssize_t kb,
                           Py_ssize_t rp) noexcept nogil:
    """part[blk, r, kk] += dW[blk*kb + kk, r] over images n0..n1, tap-major: tiles of
    tab_mr taps x kb channels summed over the real output pixels (no column panels).
    toffp: the tap table padded to rp taps (extra rows repeat tap 0; discarded)."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.tab_mr, nv = cv.tab_nv
    cdef Py_ssize_t n, blk, rb, kn, nblk = (cv.K + kb - 1) // kb
    cdef const floating* src
    cdef const floating* d
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for blk in range(nblk):
            kn = min(kb, cv.K - blk * kb)
            d = dy + (n * cv.K + blk * kb) * cv.P    # the output grad, pixel-major
            if floating is float:
                mn_gather_t_f32(dyt, d, cv.P, kn, kb)
            else:
                mn_gather_t_f64(dyt, d, cv.P, kn, kb)
            rb = 0
            while rb < cv.R:
                if floating is float:
                    mn_wg_kernel_f32(nv, mr, g.OH, g.OW, cv.Wp, src, toffp + rb, dyt,
                                     part + (blk * rp + rb) * kb)
                else:
                    mn_wg_kernel_f64(nv, mr, g.OH, g.OW, cv.Wp, src, toffp + rb, dyt,
                                     part + (blk * rp + rb) * kb)
                rb += mr
