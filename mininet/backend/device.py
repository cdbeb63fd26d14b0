"""The Device protocol and the registry of backends.

A backend is a Device subclass: it owns memory handles and runs the same
named kernels (copy, fill, binary, binary_scalar, unary, reduce, matmul, ...)
on NDArrays. NDArray holds the metadata (shape, strides, offset) and calls
these; the kernels see raw handles plus offsets and strides in items.
"""
import numpy as np

DTYPES = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("int64"): 2}


class DeviceUnavailable(RuntimeError):
    """Raised when a backend cannot be used on this machine; says why."""


class Device:
    """A backend. `capabilities` names the fused kernels it has beyond the core protocol
    (ops ask dev.has("conv2d") and otherwise compose the op from core kernels):
    conv2d (implicit-GEMM convolution), softmax_xent (fused cross-entropy), batchnorm,
    rows (take_rows / add_rows: embedding lookups), lstm (lstm_gates / lstm_gates_grad),
    share_host (share(numpy array): a handle over host memory, and array_view(NDArray): a
    numpy array over a compact array's memory, both without a copy)."""
    name = "device"
    capabilities = frozenset()

    def has(self, capability):
        return capability in self.capabilities

    def __repr__(self):
        return f"{self.name}()"

    def __eq__(self, other):
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def enabled(self):
        return True


_devices = {}


def register(name, factory):
    """Register a zero-argument factory returning the Device called `name`."""
    _devices[name] = factory


def get_device(name):
    if isinstance(name, Device):
        return name
    key = str(name).split(":")[0]
    if key not in _devices:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(sorted(_devices))}")
    return _devices[key]()
