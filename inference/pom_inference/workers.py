"""How many workers per device (``--workers auto``), from the cores and the free GPU memory.

On a GPU the network is fast and each worker's CPU side (reading, z-filter, TTA averaging,
writing) is what keeps it busy, so several workers share a GPU when there are cores for
them and memory on it for each one's CUDA context and batches. On the CPU one worker
uses every core through ONNX Runtime's threads; a second only pays off on many cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

#: Cores one worker's CPU side can keep busy (its main thread, the writer, the prefetch, numba's threads).
CORES_PER_WORKER = 4
#: GPU memory a worker needs besides its batches: the CUDA context, cuDNN workspaces, the network.
MIB_PER_GPU_WORKER = 2048
#: Most workers on one GPU (more only add contexts).
MAX_PER_GPU = 4
#: Cores per CPU worker (its ONNX Runtime threads).
CORES_PER_CPU_WORKER = 16


def workers_per_device(devices: Sequence[int | None], cores: int | None = None,
                       free_mib: Callable[[int], int | None] | None = None) -> int:
    """Workers per device for ``devices`` (GPU indices, or [None] for the CPU).

    Parameters
    ----------
    devices : the devices of the run (all GPUs, or the CPU).
    cores : CPU cores this process may use (default: its affinity).
    free_mib : free memory of a GPU in MiB (default: from the NVIDIA driver; None when unknown).

    Returns
    -------
    On the CPU, one per :data:`CORES_PER_CPU_WORKER` cores (at least 1). On GPUs, the cores
    shared out (:data:`CORES_PER_WORKER` each), capped by the least free memory of the GPUs
    (:data:`MIB_PER_GPU_WORKER` each, when the driver reports it) and by :data:`MAX_PER_GPU`;
    at least 1.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = [d for d in devices if d is not None]
    if not gpus:
        return max(1, cores // CORES_PER_CPU_WORKER)
    if free_mib is None:
        from .nvidia import free_memory_mib

        free_mib = free_memory_mib
    by_cores = max(1, cores // (CORES_PER_WORKER * len(gpus)))
    memory = [free_mib(d) for d in gpus]
    known = [m for m in memory if m is not None]
    by_memory = min(known) // MIB_PER_GPU_WORKER if known else MAX_PER_GPU
    return int(max(1, min(by_cores, by_memory, MAX_PER_GPU)))
