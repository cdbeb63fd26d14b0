# mininet_ext/convgemm.pyx, part 4 of 4: the pixel-major (tap-table) path.
# For stride 1 with one group: the forward reads tiles straight from the padded image
# through the tap table (no gather), and the weight grad runs tap-major over it.
# Choosing it (choose_tab), its tap order (tap_tables, row skipping) and its drivers.
# Included textually by convgemm.pyx (Cython `include`).

# forward_rows: one-vector tiles sum the taps in chunks of at most TAB_CHUNK_BYTES of
# packed weights, each run over a group of output rows whose tiles fill at most
# TAB_GROUP_BYTES, so that the chunk's weights and image rows stay in L1 while the group's
# tiles pass over them (all 800 taps of the MNIST CNN's input gradient, 14 x 16 floats a
# tile, are 51 KB of weights, streamed from L2 for every tile otherwise: 3.5% of its time
# at 2 threads on a Xeon with the other core busy, 13% of the kernel's on an idle core).
# The group is transposed into NCHW at once.
cdef Py_ssize_t TAB_CHUNK_BYTES = 12288
cdef Py_ssize_t TAB_GROUP_BYTES = 12288


cdef int tab_height(Conv* cv, int nv) noexcept nogil:
    """The tile height for nv vectors of channels that splits an output row into whole
    tiles with the fewest computed-and-dropped pixels, at most 1/8 of them (OW = 14 or 28
    with 14-pixel tiles: none); 0 when neither height does."""
    cdef int mr, best = 0, taller
    cdef Py_ssize_t tiles, waste, best_waste = 0
    for taller in range(2):
        mr = mn_tab_mr(nv, 1 - taller)
        tiles = (cv.g.OW + mr - 1) // mr
        waste = tiles * mr - cv.g.OW
        if waste * 8 <= tiles * mr and (best == 0 or waste < best_waste):
            best, best_waste = mr, waste
    return best


cdef void choose_tab(Conv* cv, Py_ssize_t vw) noexcept nogil:
    """The pixel-major forward (forward_rows) for stride 1 and one group, enough output
    channels to fill the vectors, and an output row that splits into whole tiles
    (tab_height); the panel path drops (Wp - OW) / Wp. Two vectors of channels where
    their heights fit the row, else one vector in several channel blocks (OW = 16 with
    AVX-512: 16-pixel tiles of one vector, none of two); one vector also where the kernel
    set prefers it (tab_one) or slides only over one. tab_kw: the kernel rows' run length
    where the kernel set slides over them at this tile (slide_kw); wg_*: the weight
    gradient's tile."""
    cdef int nv = 1 if cv.K <= vw else 2, mr
    cv.tab_nv = cv.tab_mr = cv.tab_kw = cv.wg_nv = cv.wg_mr = cv.wg_kw = 0
    # the channels must fill at least half the vectors (one output channel would waste
    # 15 of 16 lanes: the panel path suits it better)
    if cv.phased or cv.G != 1 or cv.g.OW < 1 or 2 * cv.K < nv * vw:
        return
    mr = tab_height(cv, nv)
    if mr == 0 and nv == 2:
        nv = 1
        mr = tab_height(cv, nv)
    # the taller one-vector tile (16 pixels with AVX-512, for rows 14-pixel tiles do not
    # fit) only with the vector full: at 8 of 16 channels the 64,8,16,16 -> 32 layer's
    # input gradient ran 15% slower on it than by the scatter (Xeon)
    if nv == 1 and mr == mn_tab_mr(1, 1) and cv.K < vw:
        mr = 0
    # where the kernel set asks for it (tab_one: AVX2, whose two-vector tiles are 7 or 6
    # pixels), one vector in several channel blocks wherever its tiles fit the row: the
    # MNIST CNN's 5x5 layer forward 3.75 -> 2.74 ms, forward + backward 11.5 -> 9.2 (Xeon
    # model 167 on the avx2 set, 2 threads; 3x3 layers of 16-24 channels 0.68-0.74 and
    # 0.74-0.76 of the time)
    if nv == 2 and mr and mn_tab_one() and tab_height(cv, 1):
        nv, mr = 1, tab_height(cv, 1)
    if mr:
        cv.wg_nv, cv.wg_mr = nv, mr
        # the weight gradient's sliding kernel (one vector, any K) where it has one
        if mn_wg_slide() & run_bit(cv):
            cv.wg_nv, cv.wg_mr, cv.wg_kw = 1, mn_wg_slide_mr(), cv.g.kw
    # a sliding kernel's one-vector tiles over a two-vector tile without one: the MNIST
    # CNN's 5x5 layer (16 -> 32 channels at 14x14) in 14 x 16 floats, forward 1.63 -> 1.52
    # ms at 2 threads (Xeon model 167); 3x3 layers of 16-24 channels at 14x14 and 28x28
    # 0.75-0.98 of the forward's time. The weight gradient's tile is chosen apart
    # (wg_*): before it had a sliding kernel, following the forward to one-vector tiles
    # made forward + backward 3% slower.
    if nv == 2 and mr and not slide_kw(cv, nv, mr):
        if tab_height(cv, 1) and slide_kw(cv, 1, tab_height(cv, 1)):
            nv, mr = 1, tab_height(cv, 1)
    if mr:
        cv.tab_nv, cv.tab_mr = nv, mr
        cv.tab_kw = slide_kw(cv, nv, mr)


cdef inline int run_bit(Conv* cv) noexcept nogil:
    """1 << kw where the layer's kernel rows are runs of kw neighbouring pixels (no
    dilation; kw within the sliding kernels' masks), else 0: the bit tab_slide and
    wg_slide set for a run length they slide over."""
    return 1 << cv.g.kw if cv.g.dw == 1 and cv.g.kw <= 8 else 0


cdef inline int slide_kw(Conv* cv, int nv, int mr) noexcept nogil:
    """kw where the kernel set has a sliding-run kernel for this tile and the layer's
    kernel rows are runs of neighbouring pixels, else 0."""
    return cv.g.kw if mn_tab_slide(nv, mr == mn_tab_mr(nv, 1)) & run_bit(cv) else 0


cdef void tap_tables(Conv* cv) noexcept nogil:
    """The tap table toff (tap r = (c, kh, kw): the window's offset), its place table
    (tap r's place in forward_rows' order) and tofr (toff in that order). The order is
    the weights', or with tab_skip (kh, c, kw), where the taps of the kernel rows inside
    the image are one contiguous range (a channel's taps in one kernel row still read
    neighbouring pixels, but a channel's kernel rows are C*kw taps apart: worse L1 reuse,
    so only where the skipped rows pay for it). Loops, not r's division into (c, kh, kw):
    the divisions per tap, again per weight packed, were 25% of a one-image call's time."""
    cdef Py_ssize_t c, i, j, r, kw = cv.g.kw
    for c in range(cv.Cg):
        for i in range(cv.g.kh):
            for j in range(kw):
                r = (c * cv.g.kh + i) * kw + j
                cv.toff[r] = tap_offset(cv, c, i, j)
                cv.place[r] = (i * cv.Cg + c) * kw + j if cv.tab_skip else r
                cv.tofr[cv.place[r]] = cv.toff[r]


cdef void pack_w_cols(const floating* w, Conv* cv, Py_ssize_t kb, floating* out) noexcept nogil:
    """W^T in blocks of kb output channels, taps in forward_rows' order:
    out[blk][place[r]][kk] = w[blk*kb + kk, r], 0 past K."""
    cdef Py_ssize_t blk, r, kk, k, rr, nblk = (cv.K + kb - 1) // kb
    for blk in range(nblk):
        for r in range(cv.R):
            rr = cv.place[r]
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


cdef inline Py_ssize_t tab_row_px(Conv* cv) noexcept nogil:
    """Pixels of one output row in forward_rows' tile: OW rounded up to whole tiles."""
    return (cv.g.OW + cv.tab_mr - 1) // cv.tab_mr * cv.tab_mr


cdef inline Py_ssize_t tab_group(Conv* cv, Py_ssize_t kb, Py_ssize_t itemsize) noexcept nogil:
    """Output rows forward_rows computes before it transposes them (TAB_GROUP_BYTES)."""
    return clamp(TAB_GROUP_BYTES // max(tab_row_px(cv) * kb * itemsize, 1), 1, max(cv.g.OH, 1))


cdef inline Py_ssize_t tab_tile_items(Conv* cv, Py_ssize_t kb, Py_ssize_t itemsize) noexcept nogil:
    """The size of forward_rows' tile: a group of rows."""
    return tab_group(cv, kb, itemsize) * tab_row_px(cv) * kb


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
    """Pixel-major forward of images n0..n1: per group of output rows (tab_group), tiles
    of tab_mr pixels x kb channels straight from the padded image through the tap table
    (no gather), the taps summed chunk by chunk (TAB_CHUNK_BYTES), side by side in
    `tile`, then transposed into NCHW with the bias added. Transposing many tiles at
    once: whole 16 x 16 blocks and full-vector stores (a 32-wide row in 12-pixel tiles
    left 1/3 of the blocks empty and split every store across cache lines; the transpose
    was 40% of the RGB 3x3 layer's time)."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.tab_mr, nv = cv.tab_nv
    cdef Py_ssize_t n, blk, oh, oh0, oh1, ow0, kn, nblk = (cv.K + kb - 1) // kb
    cdef Py_ssize_t rpx = tab_row_px(cv), rows = tab_group(cv, kb, <Py_ssize_t>sizeof(floating))
    # two-vector tiles load half the weights per FMA and take all taps at once (in
    # chunks, the MNIST CNN's second layer ran 4% slower: 5x the kernel calls)
    cdef Py_ssize_t chunk = max(TAB_CHUNK_BYTES // (kb * <Py_ssize_t>sizeof(floating)), 1)
    if nv == 2:
        chunk = max(cv.R, 1)
    if cv.tab_kw:   # whole runs in each chunk
        chunk = max(chunk // cv.tab_kw, 1) * cv.tab_kw
        nv = nv + (cv.tab_kw << MN_TAB_KW_SHIFT)
    cdef Py_ssize_t t0, tap0, ntap, s, e
    cdef const floating* src
    cdef const floating* bblk
    cdef floating* dst
    for n in range(n0, n1):
        src = image_source(x, n, xpad, cv)
        for blk in range(nblk):
            kn = min(kb, cv.K - blk * kb)
            bblk = bias + blk * kb if bias != NULL else NULL
            dst = out + (n * cv.K + blk * kb) * cv.P
            oh0 = 0
            while oh0 < g.OH:
                oh1 = min(oh0 + rows, g.OH)
                t0 = 0
                while True:
                    for oh in range(oh0, oh1):
                        row_taps(cv, oh, &tap0, &ntap)
                        # the chunk's taps t0..t0+chunk that this row reads; a row that
                        # reads none is written (zeros) with the first chunk
                        s = max(t0, tap0)
                        e = min(t0 + chunk, tap0 + ntap)
                        if e <= s and not (t0 == 0 and ntap == 0):
                            continue
                        ow0 = 0
                        while ow0 < g.OW:
                            tab_tile(nv + (MN_TAB_ADD if s > tap0 else 0), mr, max(e - s, 0),
                                     src + oh * cv.Wp + ow0, cv.tofr + s,
                                     wt + (blk * cv.R + s) * kb,
                                     tile + ((oh - oh0) * rpx + ow0) * kb)
                            ow0 += mr
                    t0 += chunk
                    if t0 >= cv.R:
                        break
                if rpx == g.OW:
                    tiles_to_nchw(tile, bblk, dst + oh0 * g.OW, cv, kb, kn, (oh1 - oh0) * g.OW)
                else:
                    for oh in range(oh0, oh1):
                        tiles_to_nchw(tile + (oh - oh0) * rpx * kb, bblk, dst + oh * g.OW, cv,
                                      kb, kn, g.OW)
                oh0 = oh1


cdef inline void tile_rows(Conv* cv, Py_ssize_t rb, Py_ssize_t mr, Py_ssize_t* o0,
                           Py_ssize_t* o1) noexcept nogil:
    """The output rows o0..o1 on which the taps rb..rb+mr (forward_rows' order) read some
    image row: all of them, or with tab_skip those of the tile's kernel rows (taps
    ordered (kh, c, kw)); below o0 and from o1 on they read only padding."""
    cdef Geom* g = &cv.g
    cdef Py_ssize_t per = cv.Cg * g.kw, lo, hi
    o0[0], o1[0] = 0, g.OH
    if not cv.tab_skip:
        return
    lo = rb // per
    hi = (min(rb + mr, cv.R) - 1) // per
    # kernel row kh reads image row oh - ph + kh*dh (stride 1)
    o0[0] = clamp(g.ph - hi * g.dh, 0, g.OH)
    o1[0] = clamp(g.H + g.ph - lo * g.dh, 0, g.OH)


cdef void weight_grad_rows(const floating* x, const floating* dy, floating* part, Conv* cv,
                           const Py_ssize_t* toffp, Py_ssize_t n0, Py_ssize_t n1,
                           floating* xpad, floating* dyt, Py_ssize_t kb,
                           Py_ssize_t rp) noexcept nogil:
    """part[blk, p, kk] += dW[blk*kb + kk, tap at place p] over images n0..n1, tap-major:
    tiles of wg_mr taps x kb channels summed over the real output pixels (no column
    panels), each over the output rows where its taps read the image (tile_rows: the
    MNIST CNN's 5x5 layer at 14x14 skips 8% of its products); with wg_kw, sliding over
    runs of wg_kw taps (whole runs a tile). toffp: the tap table in forward_rows' order,
    padded to rp taps (extra rows repeat tap 0, whose run they read; discarded)."""
    cdef Geom* g = &cv.g
    cdef int mr = cv.wg_mr, nv = cv.wg_nv + (cv.wg_kw << MN_TAB_KW_SHIFT)
    cdef Py_ssize_t n, blk, rb, kn, o0, o1, nblk = (cv.K + kb - 1) // kb
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
                tile_rows(cv, rb, mr, &o0, &o1)
                if o1 > o0:
                    if floating is float:
                        mn_wg_kernel_f32(nv, mr, o1 - o0, g.OW, cv.Wp, src + o0 * cv.Wp,
                                         toffp + rb, dyt + o0 * g.OW * kb,
                                         part + (blk * rp + rb) * kb)
                    else:
                        mn_wg_kernel_f64(nv, mr, o1 - o0, g.OW, cv.Wp, src + o0 * cv.Wp,
                                         toffp + rb, dyt + o0 * g.OW * kb,
                                         part + (blk * rp + rb) * kb)
                rb += mr


def tab_blocking(chunk_bytes=None, group_bytes=None):
    """forward_rows' block sizes (TAB_CHUNK_BYTES, TAB_GROUP_BYTES) as a dict; those given
    (whole numbers of bytes, 1 to 2**30) are set first (for tuning; not while another
    thread convolves)."""
    global TAB_CHUNK_BYTES, TAB_GROUP_BYTES
    sizes = {}
    for name, v in (("chunk_bytes", chunk_bytes), ("group_bytes", group_bytes)):
        if v is None:
            continue
        if isinstance(v, bool) or not hasattr(type(v), "__index__"):
            raise TypeError(f"tab_blocking: {name} must be an int (bytes), got {type(v).__name__}")
        sizes[name] = v.__index__()
        if not 1 <= sizes[name] <= (1 << 30):
            raise ValueError(f"tab_blocking: {name} must be 1 to {1 << 30} bytes, got {v}")
    TAB_CHUNK_BYTES = sizes.get("chunk_bytes", TAB_CHUNK_BYTES)
    TAB_GROUP_BYTES = sizes.get("group_bytes", TAB_GROUP_BYTES)
    return {"chunk_bytes": TAB_CHUNK_BYTES, "group_bytes": TAB_GROUP_BYTES}
