"""Zero-copy exchange: DLPack both ways with numpy and PyTorch, numpy's array interface,
from_numpy. Shared memory is checked by writing through one side and reading the other;
lifetimes by deleting the producer (and reusing the CPU pool's blocks) before reading."""
import ctypes
import gc

import numpy as np
import pytest

import mininet
from mininet import NDArray, Tensor, nn, optim
from mininet.backend import dlpack as backend_dlpack
from mininet.ndarray import from_dlpack as nd_from_dlpack
from mininet_ext import buffer as _buffer

from conftest import torch

needs_torch = pytest.mark.torch


def capsule_name(capsule):
    get = ctypes.pythonapi.PyCapsule_GetName
    get.restype, get.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return get(capsule).decode()


def grid(dtype=np.float32, shape=(4, 6)):
    return Tensor(np.arange(np.prod(shape)).reshape(shape).astype(dtype), dtype=dtype)


# views any layout: (name, mininet view, the same view of a numpy array)
VIEWS = [
    ("whole", lambda x: x),
    ("transpose", lambda x: x.transpose()),
    ("steps", lambda x: x[::2, 1::3]),
    ("offset", lambda x: x[1:]),
    ("row", lambda x: x[2]),
    ("reversed", lambda x: x[::-1, ::-2]),
]


def nd_view(x, how):
    return how(x.cached_data)


# exporting -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, how", VIEWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_numpy_from_dlpack_shares_memory_and_strides(name, how, dtype):
    x = grid(dtype)
    view = nd_view(x, how)
    a = np.from_dlpack(view)
    ref = how(np.arange(24).reshape(4, 6).astype(dtype))
    np.testing.assert_array_equal(a, ref)
    assert a.dtype == dtype
    assert a.strides == tuple(s * a.itemsize for s in view.strides)
    a[(0,) * a.ndim] = 99            # numpy -> mininet
    assert view.numpy()[(0,) * a.ndim] == 99
    view[(0,) * a.ndim] = -7          # mininet -> numpy
    assert a[(0,) * a.ndim] == -7


@needs_torch
@pytest.mark.parametrize("name, how", [v for v in VIEWS if v[0] != "reversed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_torch_from_dlpack_shares_memory_and_strides(name, how, dtype):
    x = grid(dtype)
    view = nd_view(x, how)
    t = torch.from_dlpack(view)
    np.testing.assert_array_equal(t.numpy(), view.numpy())
    assert t.stride() == view.strides
    t[(0,) * t.ndim] = 42
    assert view.numpy()[(0,) * t.ndim] == 42
    view[(0,) * t.ndim] = 5
    assert t[(0,) * t.ndim].item() == 5


# PyTorch 2.13 aborts the process on negative strides (numpy's exports too): not tried here


def test_versioned_capsule_when_asked_legacy_otherwise():
    x = grid().cached_data
    assert capsule_name(x.__dlpack__()) == "dltensor"
    assert capsule_name(x.__dlpack__(max_version=(0, 8))) == "dltensor"
    assert capsule_name(x.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert capsule_name(x.__dlpack__(max_version=(1, 3))) == "dltensor_versioned"
    assert x.__dlpack_device__() == (1, 0)
    assert grid().__dlpack_device__() == (1, 0)


def test_broadcast_views_are_exported_read_only():
    x = Tensor(np.arange(3.0), dtype="float64").cached_data.broadcast_to((4, 3))
    a = np.from_dlpack(x)
    np.testing.assert_array_equal(a, np.broadcast_to(np.arange(3.0), (4, 3)))
    assert not a.flags.writeable and a.strides == (0, 8)


def test_copy_true_exports_a_copy():
    x = grid()
    a = np.from_dlpack(x, copy=True)
    a[0, 0] = 100
    assert x.numpy()[0, 0] == 0
    b = np.from_dlpack(x, copy=False)
    b[0, 0] = 100
    assert x.numpy()[0, 0] == 100


def test_export_arguments_are_checked():
    x = grid()
    with pytest.raises(BufferError, match="stream"):
        x.__dlpack__(stream=1)
    with pytest.raises(BufferError, match="CUDA"):
        x.__dlpack__(dl_device=(2, 0))
    x.__dlpack__(dl_device=(1, 0))   # the CPU itself is fine


def test_zero_d_and_empty_arrays():
    s = Tensor(np.float64(2.5), dtype="float64")
    a = np.from_dlpack(s)
    assert a.shape == () and a[()] == 2.5
    e = Tensor(np.zeros((0, 3), np.float32))
    assert np.from_dlpack(e).shape == (0, 3)
    assert mininet.from_dlpack(np.zeros((2, 0))).shape == (2, 0)


# importing -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_from_dlpack_numpy_shares_memory(dtype):
    base = np.arange(30).reshape(5, 6).astype(dtype)
    for view in (base, base.T, base[1:], base[::2, 1::2], base[::-1, ::-3]):
        t = mininet.from_dlpack(view)
        assert isinstance(t, Tensor) and t.dtype == dtype
        np.testing.assert_array_equal(t.numpy(), view)
        assert t.cached_data.strides == tuple(s // view.itemsize for s in view.strides)
        view[0, 0] = 77                        # numpy -> mininet
        assert t.numpy()[0, 0] == 77
        t.cached_data[0, 0] = 11               # mininet -> numpy
        assert view[0, 0] == 11


@needs_torch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64] if torch else [])
def test_from_dlpack_torch_shares_memory(dtype):
    base = torch.arange(30).reshape(5, 6).to(dtype)
    for view in (base, base.t(), base[1:], base[::2, 1::2]):
        t = mininet.from_dlpack(view)
        np.testing.assert_array_equal(t.numpy(), view.numpy())
        assert t.cached_data.strides == view.stride()
        view[0, 0] = 77
        assert t.numpy()[0, 0] == 77
        t.cached_data[0, 0] = 11
        assert view[0, 0].item() == 11


@needs_torch
def test_from_dlpack_of_a_capsule_and_computing_on_it():
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    t = mininet.from_dlpack(torch.utils.dlpack.to_dlpack(base.t()))
    np.testing.assert_array_equal((t * 2).numpy(), base.t().numpy() * 2)
    np.testing.assert_array_equal(t.sum(axes=0).numpy(), base.t().numpy().sum(0))


@needs_torch
@pytest.mark.parametrize("dtype, word", [("bfloat16", "bfloat16"), ("float16", "float16"),
                                         ("int32", "int32"),
                                         ("complex64", "complex64"), ("uint8", "uint8")])
def test_unsupported_dtypes_are_named(dtype, word):
    with pytest.raises(TypeError, match=f"unsupported dtype {word}"):
        mininet.from_dlpack(torch.zeros(3, dtype=getattr(torch, dtype)))


def test_unsupported_numpy_dtype_and_devices_are_named():
    with pytest.raises(TypeError, match="unsupported dtype int32"):
        mininet.from_dlpack(np.zeros(3, np.int32))

    class OnCuda:
        def __dlpack_device__(self):
            return (2, 1)

        def __dlpack__(self, **kw):
            raise AssertionError("must not be asked for its capsule")

    with pytest.raises(BufferError, match=r"CUDA \(DLPack device type 2, id 1\)"):
        mininet.from_dlpack(OnCuda())
    with pytest.raises(TypeError, match="not a DLPack capsule"):
        mininet.from_dlpack(object())


def test_a_capsule_is_consumed_once():
    cap = np.arange(3.0).__dlpack__()
    mininet.from_dlpack(cap)
    with pytest.raises(TypeError, match="already consumed"):
        mininet.from_dlpack(cap)


def test_read_only_memory_is_copied_or_refused():
    ro = np.arange(4.0)
    ro.flags.writeable = False
    t = mininet.from_dlpack(ro)          # numpy marks it read-only: a copy
    t.cached_data[0] = 9
    assert ro[0] == 0
    with pytest.raises(BufferError, match="read-only"):
        mininet.from_dlpack(ro, copy=False)
    with pytest.raises(ValueError, match="read-only"):
        mininet.from_numpy(ro)


def test_copy_true_imports_a_compact_copy():
    a = np.arange(12.0).reshape(3, 4)[:, ::2]
    t = mininet.from_dlpack(a, copy=True)
    a[0, 0] = 5
    assert t.numpy()[0, 0] == 0 and t.cached_data.is_compact()
    np.testing.assert_array_equal(t.numpy()[1:], a[1:])


def test_round_trip_through_torch_and_numpy_is_the_same_memory():
    x = grid(np.float64)
    y = mininet.from_dlpack(np.from_dlpack(x))
    y.cached_data[1, 1] = -1
    assert x.numpy()[1, 1] == -1


# lifetimes and the buffer pool ---------------------------------------------------------------
def test_consumer_outlives_the_tensor():
    t = grid(np.float64, (64, 64))
    a = np.from_dlpack(t.transpose())
    expected = a.copy()
    del t
    gc.collect()
    np.testing.assert_array_equal(a, expected)


def exported_then_pool_pressure(export, size=4096):
    """Export a tensor, drop it, allocate and fill many same-size arrays: the consumer's
    data must not change (its buffer must not have gone back to the pool)."""
    t = Tensor(np.arange(size, dtype=np.float32))
    view = export(t)
    del t
    gc.collect()
    before = _buffer.memory_stats()["in_use_bytes"]
    others = [mininet.init.ones(size) * 7.0 for _ in range(64)]
    assert all(o.numpy()[0] == 7 for o in others)
    assert _buffer.memory_stats()["in_use_bytes"] > before
    return view


def test_pool_keeps_a_dlpack_exported_buffer():
    a = exported_then_pool_pressure(np.from_dlpack)
    np.testing.assert_array_equal(a, np.arange(4096, dtype=np.float32))


def test_pool_keeps_an_array_interface_buffer():
    a = exported_then_pool_pressure(np.asarray)
    np.testing.assert_array_equal(a, np.arange(4096, dtype=np.float32))


@needs_torch
def test_pool_keeps_a_buffer_torch_holds():
    t = exported_then_pool_pressure(torch.from_dlpack)
    np.testing.assert_array_equal(t.numpy(), np.arange(4096, dtype=np.float32))


def test_unconsumed_capsule_releases_the_buffer():
    """The capsule's destructor drops its reference: the buffer goes back to the pool."""
    size = 1 << 20
    before = _buffer.memory_stats()["in_use_bytes"]
    t = Tensor(np.ones(size // 4, np.float32))
    caps = [t.__dlpack__(max_version=v) for v in (None, (1, 0))]
    del t
    gc.collect()
    assert _buffer.memory_stats()["in_use_bytes"] >= before + size
    del caps
    gc.collect()
    assert _buffer.memory_stats()["in_use_bytes"] < before + size


@pytest.mark.parametrize("consumer", ["numpy", "torch"])
def test_the_consumers_release_returns_the_buffer(consumer):
    """The deleter drops the capsule's reference when the consumer frees its array."""
    if consumer == "torch" and torch is None:
        pytest.skip("PyTorch is not installed")
    take = np.from_dlpack if consumer == "numpy" else torch.from_dlpack
    size = 1 << 20
    before = _buffer.memory_stats()["in_use_bytes"]
    t = Tensor(np.ones(size // 4, np.float32))
    view = take(t)
    del t
    gc.collect()
    assert _buffer.memory_stats()["in_use_bytes"] >= before + size
    del view
    gc.collect()
    assert _buffer.memory_stats()["in_use_bytes"] < before + size


def test_imported_memory_outlives_its_producer():
    src = np.arange(1000.0)
    t = mininet.from_dlpack(src[::-3])
    expected = src[::-3].copy()
    del src
    gc.collect()
    np.testing.assert_array_equal(t.numpy(), expected)


@needs_torch
def test_torch_memory_outlives_the_torch_tensor():
    src = torch.arange(1000, dtype=torch.float64)
    t = mininet.from_dlpack(src[10:])
    del src
    gc.collect()
    np.testing.assert_array_equal(t.numpy(), np.arange(10, 1000, dtype=np.float64))


# the numpy array interface and from_numpy --------------------------------------------------------
@pytest.mark.parametrize("name, how", VIEWS)
def test_asarray_is_a_view_numpy_is_a_copy(name, how):
    x = grid(np.float64)
    view = nd_view(x, how)
    a = np.asarray(view)
    np.testing.assert_array_equal(a, how(np.arange(24.0).reshape(4, 6)))
    idx = (0,) * a.ndim
    a[idx] = 123
    assert view.numpy()[idx] == 123
    for copied in (view.numpy(), np.array(view)):
        copied[idx] = 0
        assert view.numpy()[idx] == 123


def test_tensor_asarray_keeps_the_memory_it_saw():
    t = grid()
    a = np.asarray(t)
    t.data = Tensor(np.zeros((4, 6), np.float32))   # the tensor now holds other memory
    gc.collect()
    [mininet.init.ones(4, 6) for _ in range(16)]
    np.testing.assert_array_equal(a, np.arange(24.0).reshape(4, 6))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_from_numpy_shares_memory(dtype):
    base = np.zeros((3, 5), dtype)
    for arr in (base, base.T, base[1:, ::2]):
        t = mininet.from_numpy(arr)
        arr[0, 0] = 4
        assert t.numpy()[0, 0] == 4
        t.cached_data[0, 0] = 8
        assert arr[0, 0] == 8
        # computing on it reads the shared memory too
        np.testing.assert_array_equal((t + t).numpy(), arr + arr)


def test_from_numpy_refuses_what_it_cannot_share():
    with pytest.raises(TypeError, match="unsupported dtype int32"):
        mininet.from_numpy(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        mininet.from_numpy([1.0, 2.0])


def test_optimizer_steps_show_through_a_handed_out_view():
    layer = nn.Linear(3, 2)
    w = np.from_dlpack(layer.weight)
    w_iface = np.asarray(layer.weight)
    before = w.copy()
    opt = optim.SGD(layer.parameters(), lr=0.5)
    layer(Tensor(np.ones((4, 3), np.float32))).sum().backward()
    opt.step()
    np.testing.assert_array_equal(w, layer.weight.numpy())
    np.testing.assert_array_equal(w_iface, layer.weight.numpy())
    assert not np.array_equal(w, before)
    np.testing.assert_allclose(w, before - 0.5 * layer.weight.grad.numpy(), rtol=1e-6)


def test_cuda_arrays_are_refused_clearly():
    class FakeCuda:
        name = "cuda"
        index = 0

        def has(self, capability):
            return False

        def __repr__(self):
            return "cuda()"

    x = NDArray.make((2,), device=backend_dlpack.cpu())
    x.device = FakeCuda()   # metadata only: nothing reads its memory
    assert x.__dlpack_device__() == (2, 0)
    with pytest.raises(BufferError, match=r"on cuda\(\).*CPU"):
        x.__dlpack__()
    with pytest.raises(AttributeError):
        x.__array_interface__
    assert not hasattr(x, "__array_interface__")


def test_ndarray_level_from_dlpack():
    a = np.arange(6.0)
    x = nd_from_dlpack(a)
    assert isinstance(x, NDArray) and x.device == mininet.cpu()
    a[0] = 3
    assert x.numpy()[0] == 3


def test_misaligned_memory_is_copied_or_refused():
    raw = np.zeros(8 * 5, np.uint8)
    odd = raw[1:33].view(np.float64)     # 8-byte items at an odd address
    odd[:] = np.arange(4.0)
    t = mininet.from_dlpack(odd)
    np.testing.assert_array_equal(t.numpy(), np.arange(4.0))
    assert t.cached_data.handle.address % 8 == 0
    with pytest.raises(BufferError, match="not aligned"):
        mininet.from_dlpack(odd, copy=False)


def test_a_broadcast_view_reaches_numpy_read_only():
    """Through __array_interface__ as through the versioned capsule: one write would change
    every repeat of the broadcast."""
    t = mininet.Tensor(np.arange(3.0)).broadcast_to((4, 3))
    a = np.asarray(t)
    assert not a.flags.writeable
    np.testing.assert_array_equal(a, np.broadcast_to(np.arange(3.0), (4, 3)))
    assert np.asarray(mininet.Tensor(np.arange(3.0))).flags.writeable
