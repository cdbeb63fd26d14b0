"""compact() of strided views: the copy kernel steps its row offsets like an odometer
(mininet_ext/strided.pyx copy_range) and copies short rows down whole planes and runs;
threads split the items mid-row."""
import numpy as np
import pytest

import mininet as mn
from mininet.ndarray import NDArray

rng = np.random.default_rng(7)

VIEWS = [
    ((128, 64, 3, 3), (slice(None), slice(None), slice(1, 3), slice(1, 3))),   # 2x2 taps
    ((7, 5, 9, 11), (slice(None, None, 2), slice(1, None), slice(None, None, -3), slice(2, 9))),
    ((3, 1, 4, 1, 5), (slice(None), slice(None), slice(1, 4), slice(None), slice(None, None, 2))),
    ((40, 30, 3), (slice(None), slice(None, None, 7), slice(0, 1))),   # one-item rows
    ((1000, 3), (slice(None, None, 3), slice(1, 3))),
    ((6, 6, 6, 6, 6), (slice(None, None, 5),) * 5),
    ((301, 203, 5), (slice(None), slice(None), slice(1, 4))),   # big: threads split mid-row
    # short rows down whole planes (dims nd-2, nd-1) and runs of rows, split mid-plane
    ((257, 65, 3, 3), (slice(None), slice(None), slice(0, 3), slice(0, 2))),   # 3 x 2 taps
    ((129, 33, 3, 3), (slice(None), slice(None), slice(1, 2), slice(1, 3))),   # 1 x 2
    ((97, 5, 3, 3), (slice(None), slice(None, None, 2), slice(None, None, -1), slice(0, 3, 2))),
    ((4001, 7, 9), (slice(None), slice(None), slice(2, 7))),   # rows of 5 (no fixed move)
]


@pytest.mark.parametrize("shape,index", VIEWS, ids=[str(v[0]) for v in VIEWS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
@pytest.mark.parametrize("threads", [1, 2])
def test_compact_of_slices_matches_numpy(shape, index, dtype, threads):
    a = (rng.standard_normal(shape) > 0) if dtype == np.bool_ else \
        rng.standard_normal(shape).astype(dtype)
    old = mn.get_num_threads()
    mn.set_num_threads(threads)
    try:
        got = NDArray(a)[index].compact().numpy()
    finally:
        mn.set_num_threads(old)
    np.testing.assert_array_equal(got, a[index])


@pytest.mark.parametrize("threads", [1, 2])
def test_compact_of_permuted_and_broadcast_views(threads):
    a = rng.standard_normal((33, 17, 5, 3)).astype(np.float32)
    old = mn.get_num_threads()
    mn.set_num_threads(threads)
    try:
        v = NDArray(a).permute((2, 0, 3, 1))
        np.testing.assert_array_equal(v.compact().numpy(), a.transpose(2, 0, 3, 1))
        b = NDArray(a[:, :1, :, :1]).broadcast_to((33, 4, 5, 6))
        np.testing.assert_array_equal(b.compact().numpy(),
                                      np.broadcast_to(a[:, :1, :, :1], (33, 4, 5, 6)))
    finally:
        mn.set_num_threads(old)
