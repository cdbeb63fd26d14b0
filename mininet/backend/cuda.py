"""CUDA backend through PyCUDA (optional). Nothing is imported or created at
mininet import time: the driver, the context and the kernels load on first use."""
from .device import DeviceUnavailable

_status = None


def cuda_status():
    """(available, reason): whether a CUDA device can be used here, and why not."""
    global _status
    if _status is None:
        _status = _probe()
    return _status


def _probe():
    try:
        import pycuda.driver as drv  # noqa: F401
    except ImportError as e:
        return False, f"PyCUDA is not installed ({e}); install it with: pip install 'mininet[cuda]'"
    try:
        drv.init()
        if drv.Device.count() == 0:
            return False, "the CUDA driver found no GPU"
    except Exception as e:  # driver missing or broken
        return False, f"the CUDA driver could not start: {e}"
    return True, "ok"


def cuda_available():
    return cuda_status()[0]


def cuda():
    """The CUDA device; raises DeviceUnavailable saying why when there is none."""
    ok, why = cuda_status()
    if not ok:
        raise DeviceUnavailable(f"CUDA is not available: {why}")
    from .cuda_device import CUDADevice
    return CUDADevice.instance()
