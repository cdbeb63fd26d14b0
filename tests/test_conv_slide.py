"""The pixel-major forward's and the tap-major weight gradient's sliding-run kernels
(_gemm.h MN_DEF_KERNEL_SLIDE, MN_DEF_KERNEL_WG_SLIDE): a kernel row's kw taps read kw
neighbouring pixels, so each image value is broadcast once and meets the kw taps' weights
(or a few pixels' output grads) held in registers. Which layers take them (AVX-512 sets:
forward tiles of one channel vector with kw 3 and 5, two vectors at the shorter height
with kw 3, a two-vector layer with kw 5 switched to one-vector tiles; weight-gradient
tiles of one vector and 15 taps for kw 3 and 5), and their forward and gradients against
PyTorch in float64: runs across chunk ends, kernel rows on vertical padding, non-square
kernels, rows of 13 to 24 pixels (7 or 8 at a time, the rest one by one), dilation (no
sliding), float32 and float64, 1 and 2 threads."""
import numpy as np
import pytest

from mininet_ext import _isa, convgemm
from test_conv_chunks import check, conv_all_grads
# the fixtures: the fused kernels on small maps too (autouse), 1 and 2 threads
from test_conv_chunks import fused_kernels_on_small_maps, threads  # noqa: F401

AVX512 = _isa.active().startswith("avx512")
rng = np.random.default_rng(25)


def tiles(n, c, h, w, k, kh, kw, pad, dil=1, itemsize=4):
    oh, ow = h + 2 * pad - dil * (kh - 1), w + 2 * pad - dil * (kw - 1)
    return convgemm.row_slide((n, c, h, w), k, 1, (kh, kw), (1, 1), (pad, pad), (dil, dil),
                              oh, ow, itemsize)


# (N, C, H, W, K, kh, kw, pad, dilation) and the tiles (nv, mr, run) AVX-512 float32 gives:
# the MNIST CNN's second layer (two vectors, kw 5: one-vector tiles of 14), its first
# layer's input gradient shape (16 channels at 14x14), 3x3 at one vector in 14- and
# 16-pixel tiles, 3x3 at two vectors in 12-pixel tiles (OW 24), 3x5 and 5x3 kernels
# (the run is the kernel's width), 1000 taps (runs cut into chunks), 33 channels (one
# vector in three blocks), and dilation 2 (no sliding)
CASES = [
    ((2, 16, 14, 14, 32, 5, 5, 2, 1), (1, 14, 5)),
    ((2, 32, 14, 14, 16, 5, 5, 2, 1), (1, 14, 5)),
    ((2, 7, 14, 14, 16, 3, 3, 1, 1), (1, 14, 3)),
    ((2, 9, 16, 16, 16, 3, 3, 1, 1), (1, 16, 3)),
    ((2, 6, 24, 24, 32, 3, 3, 1, 1), (2, 12, 3)),
    ((2, 6, 13, 13, 16, 3, 3, 1, 1), (1, 14, 3)),
    ((2, 5, 12, 16, 16, 3, 5, 1, 1), (1, 14, 5)),
    ((2, 5, 14, 12, 16, 5, 3, 2, 1), (1, 14, 3)),
    ((1, 40, 14, 14, 16, 5, 5, 2, 1), (1, 14, 5)),
    ((2, 4, 16, 16, 33, 5, 5, 2, 1), (1, 16, 5)),
    ((2, 8, 18, 18, 16, 3, 3, 1, 2), (1, 16, 0)),
]


def test_sliding_kernels_take_these_layers():
    for case, want in CASES:
        n, c, h, w, k, kh, kw, pad, dil = case
        nv, mr, run = tiles(n, c, h, w, k, kh, kw, pad, dil)
        if AVX512:
            assert (nv, mr, run) == want, case
        else:   # 16 registers hold no sliding tile
            assert mr and run == 0, case


@pytest.mark.skipif(not AVX512, reason="the sliding kernels are in the AVX-512 sets")
def test_sliding_runs_in_float64_too():
    """float64 tiles: 8 channels a vector, the same heights and runs."""
    assert tiles(2, 16, 14, 14, 8, 5, 5, 2, itemsize=8)[2] == 5
    assert tiles(2, 16, 14, 14, 8, 3, 3, 1, itemsize=8)[2] == 3


def test_weight_gradient_slides_in_one_vector_tiles_of_15_taps():
    """kw 3 and 5 (3 runs of 5 or 5 of 3 taps), whatever the channels; not kw 7 or with
    dilation."""
    for case, _ in CASES:
        n, c, h, w, k, kh, kw, pad, dil = case
        oh, ow = h + 2 * pad - dil * (kh - 1), w + 2 * pad - dil * (kw - 1)
        got = convgemm.wgrad_slide((n, c, h, w), k, 1, (kh, kw), (1, 1), (pad, pad),
                                   (dil, dil), oh, ow, 4)
        assert got == ((1, 15, kw) if AVX512 and dil == 1 else got[:2] + (0,)), case
    assert convgemm.wgrad_slide((2, 8, 14, 14), 32, 1, (7, 7), (1, 1), (3, 3), (1, 1),
                                14, 14, 4)[2] == 0


def test_two_vector_tiles_without_a_sliding_kernel_stay():
    """kw 7 has no sliding kernel: a 32-channel layer keeps its two-vector tiles."""
    nv, mr, run = tiles(2, 8, 14, 14, 32, 7, 7, 3)
    assert run == 0 and (nv == 2 or not AVX512)


@pytest.mark.torch
@pytest.mark.parametrize("case", [c for c, _ in CASES], ids=[str(c) for c, _ in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sliding_paths_match_torch(case, dtype, threads):
    n, c, h, w, k, kh, kw, pad, dil = case
    x = rng.standard_normal((n + 1, c, h, w))
    wt = rng.standard_normal((k, c, kh, kw)) / np.sqrt(c * kh * kw)
    b = rng.standard_normal(k)
    got, ref = conv_all_grads(x, wt, b, pad, dil, dtype)
    check(got, ref, dtype)
