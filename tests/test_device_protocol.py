"""Every backend implements the Device protocol: the core kernels and those of each
capability it declares (backend/device.py); kernels read arrays through the public
handle/offset, and the backend's own tuning stays in the backend."""
import numpy as np
import pytest

from mininet.backend import device as protocol
from mininet.backend.cpu import CPUDevice
from mininet.backend.cuda_device import CUDADevice
from mininet.ndarray import NDArray


@pytest.mark.parametrize("cls", [CPUDevice, CUDADevice])
def test_each_device_implements_every_kernel_it_must(cls):
    assert protocol.missing_kernels(cls) == []


def test_a_device_missing_a_kernel_is_reported():
    class Partial(CPUDevice):
        capabilities = CPUDevice.capabilities | {"lstm"}
        lstm_gates_grad = protocol.Device.lstm_gates_grad
    assert protocol.missing_kernels(Partial) == ["lstm_gates_grad"]

    class Unknown(CPUDevice):
        capabilities = frozenset({"teleport"})
    with pytest.raises(ValueError, match="unknown capability 'teleport'"):
        protocol.missing_kernels(Unknown)


def test_every_declared_kernel_has_a_contract():
    names = list(protocol.CORE_KERNELS) + [k for ks in protocol.KERNELS.values() for k in ks]
    for name in names:
        assert getattr(protocol.Device, name).__doc__, name
    with pytest.raises(NotImplementedError):
        protocol.Device().fill(None, 0)


def test_arrays_expose_their_buffer_and_first_element():
    a = NDArray(np.arange(12.0).reshape(3, 4))
    v = a[1:, 2:]
    assert v.handle is a.handle and v.offset == 6
    assert v.strides == (4, 1)


def test_conv_tuning_is_the_backends():
    assert CPUDevice.conv2d_min_pixels > 0          # im2col wins on small maps there
    assert CUDADevice.conv2d_min_pixels == 0        # the implicit GEMM everywhere
