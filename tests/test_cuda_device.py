"""The CUDA device's edges: which GPU a name selects, grids the driver would refuse, out of
memory, and NaN/infinity propagation through the CUDA kernels (compiled without
--use_fast_math). Marked gpu: a real GPU or the emulator (MININET_CUDA=emulate)."""
import numpy as np
import pytest

import mininet
from mininet import ops
from mininet.autograd import Tensor
from mininet.backend import get_device
from mininet.backend.cuda_device import _check_grid
from mininet.ndarray import NDArray

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    return mininet.cuda()


def test_device_names_select_an_existing_device(gpu):
    assert get_device("cuda") is gpu
    assert get_device("cuda:0") is gpu and mininet.cuda(0) is gpu
    count = gpu.drv.Device.count()
    with pytest.raises(ValueError, match=f"cuda:{count} does not exist|already uses cuda:0"):
        get_device(f"cuda:{count}")
    with pytest.raises(ValueError, match="whole number"):
        get_device("cuda:one")


def test_cpu_names_take_index_zero_only():
    assert get_device("cpu:0") is mininet.cpu()
    with pytest.raises(ValueError, match="'cpu:1' does not exist"):
        get_device("cpu:1")


def test_grids_over_the_driver_limits_are_refused_before_the_launch(gpu):
    _check_grid("k", ((1 << 31) - 1, 65535, 65535))
    for grid, axis in (((1 << 31, 1, 1), "x"), ((1, 65536, 1), "y"), ((1, 1, 65536), "z")):
        with pytest.raises(ValueError, match=f"k: a grid of .* in {axis}"):
            _check_grid("k", grid)
    # a real case: 65536 groups put 65536 blocks on the conv kernel's z axis
    x = Tensor(np.ones((1, 65536, 1, 1), np.float32), device=gpu)
    w = Tensor(np.ones((65536, 1, 1, 1), np.float32), device=gpu)
    with pytest.raises(ValueError, match="grid"):
        ops.conv(x, w, groups=65536)


def test_out_of_memory_names_the_size_asked_for(gpu):
    with pytest.raises(MemoryError, match=r"CUDA out of memory: asked for 1024\.0 TiB|"
                                          r"asked for 1048576\.0 GiB"):
        gpu.alloc(4 << 48)


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3.0], np.float32)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs",
                                  "sign", "square"])
def test_unary_kernels_keep_nan_and_infinities_as_the_cpu(gpu, name):
    with np.errstate(all="ignore"):
        want = getattr(NDArray(SPECIAL), name)().numpy()
        got = getattr(NDArray(SPECIAL, device=gpu), name)().numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)   # denormals kept, not flushed


def test_division_max_and_reductions_propagate_nan(gpu):
    a, b = SPECIAL, SPECIAL[::-1].copy()
    with np.errstate(all="ignore"):
        for op in ("__truediv__", "maximum", "minimum"):
            want = getattr(NDArray(a), op)(NDArray(b)).numpy()
            got = getattr(NDArray(a, device=gpu), op)(NDArray(b, device=gpu)).numpy()
            np.testing.assert_array_equal(got, want)
    g = NDArray(SPECIAL, device=gpu)
    assert np.isnan(g.sum().numpy()) and np.isnan(g.max().numpy())
    assert np.isnan(g.min().numpy()) and g.argmax().numpy() == 0


def test_cross_entropy_with_nan_logits_is_nan_on_the_gpu(gpu):
    z = Tensor(np.array([[np.nan, 1.0], [0.5, 2.0]], np.float32), device=gpu)
    assert np.isnan(ops.softmax_cross_entropy(z, np.array([0, 1])).numpy())
