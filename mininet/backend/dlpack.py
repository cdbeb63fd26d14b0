"""DLPack and the numpy array interface for device memory: the dtype and device tables,
exporting an array's view (any strides, any offset) and adopting one made elsewhere.

Zero-copy both ways, CPU memory only. An exported capsule, or a numpy array made from
__array_interface__, holds a reference to the array's buffer: the buffer cannot return to
the caching pool (mininet_ext/buffer.pyx) while a consumer still sees it. An adopted
tensor's memory is wrapped in a Buffer that releases the producer's tensor when the last
NDArray over it is gone.
"""
import math

import numpy as np

from mininet_ext import dlpack as _dl

from .cpu import cpu

KDL_CPU = 1
DEVICE_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDAHost", 4: "OpenCL", 7: "Vulkan", 8: "Metal",
                9: "VPI", 10: "ROCM", 11: "ROCMHost", 12: "ExtDev", 13: "CUDAManaged",
                14: "OneAPI", 15: "WebGPU", 16: "Hexagon", 17: "MAIA"}
# (type code, bits) <-> dtype; codes: 0 int, 1 uint, 2 float, 4 bfloat, 5 complex, 6 bool
DTYPES = {(2, 32): np.dtype("float32"), (2, 64): np.dtype("float64"), (0, 64): np.dtype("int64"),
          (6, 8): np.dtype("bool")}
CODES = {d: c for c, d in DTYPES.items()}
CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex",
              6: "bool"}


def device_of(device):
    """(DLPack device type, index) of a mininet device."""
    if device.name == "cpu":
        return (KDL_CPU, 0)
    if device.name == "cuda":
        return (2, getattr(device, "index", 0) or 0)
    raise BufferError(f"DLPack: no DLPack device type for mininet device {device!r}")


def _check_host(a, what):
    if not a.device.has("share_host"):
        raise BufferError(f"{what}: the array is on {a.device!r}; only CPU arrays are shared "
                          "(copy it with .to('cpu') first)")


def export(a, stream=None, max_version=None, dl_device=None, copied=False):
    """A capsule over NDArray a's elements: versioned ("dltensor_versioned") when the
    consumer reads DLPack >= 1.0, else the legacy "dltensor". Broadcast views (stride 0)
    are flagged read-only where the format has the flag."""
    _check_host(a, "__dlpack__")
    if stream is not None:
        raise BufferError(f"__dlpack__: stream must be None for CPU arrays, got {stream!r}")
    if dl_device is not None and tuple(dl_device) != (KDL_CPU, 0):
        raise BufferError(f"__dlpack__: cannot export to device {_device_name(*dl_device)}; "
                          "mininet arrays live on the CPU")
    versioned = max_version is not None and tuple(max_version)[0] >= 1
    broadcast = any(s == 0 and n > 1 for n, s in zip(a.shape, a.strides))
    flags = (_dl.FLAG_READ_ONLY if broadcast else 0) | (_dl.FLAG_IS_COPIED if copied else 0)
    code, bits = CODES[a.dtype]
    address = a.handle.address + a.offset * a.dtype.itemsize
    return _dl.export(a.handle, address, a.shape, a.strides, code, bits, KDL_CPU, 0,
                      versioned, flags)


def array_interface(a):
    """numpy's __array_interface__ (version 3) for a CPU NDArray. The data entry is the
    buffer itself, not an address, so the numpy array keeps the buffer alive."""
    if not a.device.has("share_host"):
        raise AttributeError(f"__array_interface__: arrays on {a.device!r} are not in host memory")
    size = a.dtype.itemsize
    compact = a.is_compact()
    broadcast = any(s == 0 and n > 1 for n, s in zip(a.shape, a.strides))
    # a broadcast view handed out writable would let one write change every repeat
    data = memoryview(a.handle).toreadonly() if broadcast else a.handle
    return {"version": 3, "shape": a.shape, "typestr": a.dtype.str, "data": data,
            "offset": a.offset * size,
            "strides": None if compact else tuple(s * size for s in a.strides)}


def adopt(obj, copy=None):
    """(handle, shape, strides, offset, dtype) of obj's memory, for an NDArray over it.
    obj exports __dlpack__ (numpy, PyTorch...) or is a DLPack capsule. copy: None shares
    unless the producer marked the memory read-only or it is misaligned, then copies;
    False never copies; True always copies."""
    if hasattr(obj, "__dlpack_device__"):
        kind, index = obj.__dlpack_device__()
        if kind != KDL_CPU:
            raise BufferError(f"from_dlpack: the {type(obj).__name__} is on "
                              f"{_device_name(kind, index)}; mininet shares CPU memory only: "
                              "move it to the CPU first (torch: .cpu())")
    capsule = _capsule_of(obj) if hasattr(obj, "__dlpack__") else obj
    t = _dl.consume(capsule)
    if t.device_type != KDL_CPU:
        raise BufferError(f"from_dlpack: the tensor is on {_device_name(t.device_type, t.device_id)}; "
                          "mininet shares CPU memory only")
    dtype = DTYPES.get((t.code, t.bits)) if t.lanes == 1 else None
    if dtype is None:
        raise TypeError(f"from_dlpack: unsupported dtype {_dtype_name(t)}: mininet holds "
                        "float32, float64, int64 and bool; convert it first")
    if t.read_only and copy is False:
        raise BufferError("from_dlpack: the producer marked its memory read-only and "
                          "copy=False; mininet arrays are writable (pass copy=None or True)")
    # vectorised kernels may assume items on their natural alignment
    misaligned = t.address % dtype.itemsize != 0
    if misaligned and copy is False:
        raise BufferError(f"from_dlpack: the data at {t.address:#x} is not aligned to its "
                          f"{dtype.itemsize}-byte items and copy=False")
    return _wrap(t, dtype, copy or t.read_only or misaligned)


def _capsule_of(obj):
    """obj.__dlpack__ asked for the versioned capsule; producers older than DLPack 1.0
    do not take max_version (the protocol's fallback)."""
    try:
        return obj.__dlpack__(max_version=(1, 0))
    except TypeError:
        return obj.__dlpack__()


def _wrap(t, dtype, copy):
    size = dtype.itemsize
    shape = t.shape
    strides = t.strides
    if strides is None:
        strides, s = [], 1
        for n in reversed(shape):
            strides.append(s)
            s *= n
        strides = tuple(reversed(strides))
    if math.prod(shape) == 0:
        lo = hi = 0
    else:   # the span of items the view reaches, from element 0 (negative strides reach back)
        lo = sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
        hi = sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) + 1
    t.expose(lo * size, (hi - lo) * size)
    dev = cpu()
    if not copy:
        return dev.share(np.frombuffer(t, dtype=np.uint8)), shape, strides, -lo, dtype
    # a compact copy; the producer's tensor is released as soon as t is
    flat = np.frombuffer(t, dtype=dtype)
    view = np.lib.stride_tricks.as_strided(flat[-lo:], shape, [s * size for s in strides])
    handle = dev.alloc(view.size * size)
    np.frombuffer(handle, dtype=dtype).reshape(shape)[...] = view
    return handle, shape, None, 0, dtype


def _device_name(kind, index):
    return f"{DEVICE_NAMES.get(kind, 'unknown')} (DLPack device type {kind}, id {index})"


def _dtype_name(t):
    base = CODE_NAMES.get(t.code, f"code {t.code}")
    lanes = f"x{t.lanes}" if t.lanes != 1 else ""
    return f"{base}{t.bits}{lanes} (DLPack code {t.code}, {t.bits} bits, {t.lanes} lanes)"
