"""The NVIDIA driver through ctypes: its CUDA version, the GPUs it sees, their free memory.

``libcuda.so.1`` (the CUDA driver API) numbers GPUs as ONNX Runtime's ``device_id`` does;
free memory comes from NVML (``libnvidia-ml.so.1``), matched by PCI bus id. Both are part
of the driver; without it every function here says "nothing".
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DRIVER_LIBRARY = "libcuda.so.1"
NVML_LIBRARY = "libnvidia-ml.so.1"


@dataclass(frozen=True)
class Gpu:
    """A GPU as the CUDA driver numbers it (the index ONNX Runtime's device_id means)."""

    index: int
    name: str
    total_mib: int
    free_mib: int | None  # None when NVML is not available


#: Why no GPU can run on a machine without the NVIDIA driver (the end of a NoGpuError's line).
NO_DRIVER = f"no NVIDIA driver ({DRIVER_LIBRARY} not found)"


def has_driver(load: Callable[[str], Any] = ctypes.CDLL) -> bool:
    """Whether the NVIDIA driver's ``libcuda.so.1`` loads: a machine without it has no GPU to offer."""
    try:
        load(DRIVER_LIBRARY)
    except OSError:
        return False
    return True


def driver_cuda_version(load: Callable[[str], Any] = ctypes.CDLL) -> tuple[int, int] | None:
    """The highest CUDA version the installed NVIDIA driver supports (None: no driver)."""
    try:
        cuda = load(DRIVER_LIBRARY)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def list_gpus(load: Callable[[str], Any] = ctypes.CDLL) -> list[Gpu]:
    """The GPUs the driver sees, in CUDA's numbering, with free memory from NVML when available."""
    try:
        cuda = load(DRIVER_LIBRARY)
    except OSError:
        return []
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    nvml = _nvml(load)
    gpus = []
    for index in range(count.value):
        device = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        total = ctypes.c_size_t(0)
        cuda.cuDeviceGetName(name, 256, device)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device)
        free = None
        if nvml is not None:
            bus = ctypes.create_string_buffer(32)
            if cuda.cuDeviceGetPCIBusId(bus, 32, device) == 0:
                free = _nvml_free_mib(nvml, bus.value)
        gpus.append(Gpu(index, name.value.decode(errors="replace"), total.value // 2**20, free))
    return gpus


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml(load: Callable[[str], Any]) -> Any:
    try:
        nvml = load(NVML_LIBRARY)
    except OSError:
        return None
    return nvml if nvml.nvmlInit_v2() == 0 else None


def _nvml_free_mib(nvml: Any, bus_id: bytes) -> int | None:
    handle = ctypes.c_void_p()
    if nvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id, ctypes.byref(handle)) != 0:
        return None
    memory = _NvmlMemory()
    if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
        return None
    return int(memory.free // 2**20)


def free_memory_mib(device: int, load: Callable[[str], Any] = ctypes.CDLL) -> int | None:
    """Free memory (MiB) of GPU ``device`` now, or None when it cannot be read."""
    for gpu in list_gpus(load):
        if gpu.index == device:
            return gpu.free_mib
    return None
