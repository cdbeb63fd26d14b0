"""Devices: the CPU backend (always there) and CUDA (optional, through PyCUDA)."""
from .device import Device, DeviceUnavailable, get_device, register
from .cpu import cpu
from .cuda import cuda, cuda_available, cuda_status

register("cpu", cpu)
register("cuda", cuda)


def default_device():
    """The device new tensors go to when none is given: the CPU (mininet.cpu()),
    as torch's default."""
    return cpu()


__all__ = ["Device", "DeviceUnavailable", "cpu", "cuda", "cuda_available", "cuda_status",
           "default_device", "get_device", "register"]
