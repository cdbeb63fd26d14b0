"""CUDA backend through PyCUDA (optional). Nothing is imported or created at
mininet import time: the driver, the context and the kernels load on first use.
MININET_CUDA=emulate swaps PyCUDA for the emulator (mininet/backend/emulator), which runs
the same kernels on the CPU."""
import os

from .device import DeviceUnavailable

_status = None


def cuda_status():
    """(available, reason): whether a CUDA device can be used here, and why not."""
    global _status
    if _status is None:
        _status = _probe()
    return _status


def emulated():
    """True under MININET_CUDA=emulate: the kernels run on the CPU through the emulator."""
    return os.environ.get("MININET_CUDA", "") == "emulate"


def load_pycuda():
    """(pycuda.driver, pycuda.tools), or the emulator's stand-ins under MININET_CUDA=emulate."""
    if emulated():
        from .emulator import driver, tools
    else:
        import pycuda.driver as driver
        import pycuda.tools as tools
    return driver, tools


def _probe():
    try:
        drv, _ = load_pycuda()
    except ImportError as e:
        return False, f"PyCUDA is not installed ({e}); install it with: pip install 'mininet-dl[cuda]'"
    try:
        drv.init()
        if drv.Device.count() == 0:
            return False, "the CUDA driver found no GPU"
    except Exception as e:  # driver missing or broken
        return False, f"the CUDA driver could not start: {e}"
    return True, "ok"


def cuda_available() -> bool:
    """True when a CUDA GPU and PyCUDA are usable here (cuda_status() gives the
    reason when not); never raises."""
    return cuda_status()[0]


def cuda(index=None):
    """The CUDA device (GPU `index`, by default the one in use, else 0); raises
    DeviceUnavailable saying why when there is none."""
    ok, why = cuda_status()
    if not ok:
        raise DeviceUnavailable(f"CUDA is not available: {why}")
    from .cuda_device import CUDADevice
    return CUDADevice.instance(index)
