"""compact() of a transposed matrix takes a tiled transpose (strided.pyx, 4-byte items,
both sides at least one tile): its values against numpy's for edge sizes, offsets,
slices of transposes, and the dtypes that keep the general path."""
import numpy as np
import pytest

from mininet.ndarray import NDArray

rng = np.random.default_rng(5)


@pytest.mark.parametrize("shape", [(16, 16), (17, 33), (128, 1152), (1000, 999), (15, 400),
                                   (400, 15), (1, 64), (64, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_transpose_compacts_as_numpy(shape, dtype):
    a = (rng.random(shape) * 100).astype(dtype)
    got = NDArray(a).permute(1, 0).compact()
    assert got.is_compact()
    np.testing.assert_array_equal(got.numpy(), a.T)


def test_slices_of_a_transpose_and_offsets():
    a = rng.random((300, 400)).astype(np.float32)
    view = NDArray(a).permute(1, 0)[5:390, 7:290]
    np.testing.assert_array_equal(view.compact().numpy(), a.T[5:390, 7:290])
    batched = rng.random((3, 40, 50)).astype(np.float32)
    got = NDArray(batched)[1].permute(1, 0).compact()      # a nonzero offset
    np.testing.assert_array_equal(got.numpy(), batched[1].T)


def test_many_threads_split_rows_on_tile_bounds():
    from mininet import get_num_threads, set_num_threads
    old = get_num_threads()
    a = rng.random((333, 517)).astype(np.float32)
    try:
        for n in (1, 2, 3, 7):
            set_num_threads(n)
            np.testing.assert_array_equal(NDArray(a).permute(1, 0).compact().numpy(), a.T)
    finally:
        set_num_threads(old)
