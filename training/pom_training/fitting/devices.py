"""Where TensorFlow trains: the GPUs asked for, or the CPU when asked for; never a silent fall-back.

``gpus`` is a list of indices (``-gpus 0,1``, ``GPUS`` in the configuration) or None for the
CPU (``-gpus cpu``). GPUs asked for that TensorFlow cannot use are a
:class:`~pom_common.errors.DeviceError` naming the cause: a TensorFlow built without CUDA,
no NVIDIA driver, or fewer GPUs than asked for.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

from pom_common.errors import DeviceError, NoGpuError
from pom_inference.nvidia import NO_DRIVER, driver_cuda_version, has_driver

logger = logging.getLogger(__name__)

INSTALL = "pip install 'pom-onnx[train-gpu]' (TensorFlow with its CUDA 12 wheels; NVIDIA driver 525 or newer)"


def tensorflow_report() -> dict[str, Any]:
    """TensorFlow's version, its CUDA build and the GPUs it sees (for ``pom doctor``)."""
    build = dict(tf.sysconfig.get_build_info())
    gpus = []
    for i, device in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"index": i, "name": details.get("device_name", device.name)})
    return {"tensorflow": tf.__version__, "cuda_build": bool(build.get("is_cuda_build")),
            "cuda_version": build.get("cuda_version"), "cudnn_version": build.get("cudnn_version"), "gpus": gpus}


def cause(report: dict[str, Any], gpus: list[int]) -> str | None:
    """Why TensorFlow cannot train on ``gpus``; None when it can."""
    if not report["cuda_build"]:
        return f"this TensorFlow {report['tensorflow']} is built without CUDA; install the GPU build: {INSTALL}"
    if not report["gpus"]:
        driver = driver_cuda_version()
        if driver is None:
            return "no NVIDIA driver (libcuda.so.1 not found): this machine cannot run CUDA"
        return (f"TensorFlow sees no GPU although the driver supports CUDA {driver[0]}.{driver[1]}: its CUDA "
                f"libraries did not load (run 'pom doctor'); {INSTALL}")
    absent = [g for g in gpus if g >= len(report["gpus"])]
    if absent:
        return f"GPU {absent} not present: TensorFlow sees {len(report['gpus'])} GPU(s) (0..{len(report['gpus']) - 1})"
    return None


def make_strategy(gpus: list[int] | None) -> Any:
    """A tf.distribute strategy over ``gpus`` (MirroredStrategy for several), or the CPU for None or [].

    Raises
    ------
    NoGpuError
        GPUs were asked for on a machine without an NVIDIA driver.
    DeviceError
        GPUs were asked for and TensorFlow cannot use them (the message says why and how to fix it).
    """
    if not gpus:  # None (or no GPU at all): the CPU, as asked
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # already initialised in this process: the CPU is used through the default strategy
        logger.info("training on the CPU")
        return tf.distribute.get_strategy()
    if not has_driver():
        raise NoGpuError(f"GPU {','.join(map(str, gpus))} requested for training, but {NO_DRIVER}")
    reason = cause(tensorflow_report(), gpus)
    if reason is not None:
        raise DeviceError(f"GPU {','.join(map(str, gpus))} requested for training, but {reason}")
    physical = tf.config.list_physical_devices("GPU")
    try:
        tf.config.set_visible_devices([physical[g] for g in gpus], "GPU")
    except RuntimeError:
        pass  # already initialised in this process (e.g. -all 1): keep the first choice
    logger.info("training on GPU %s", ",".join(map(str, gpus)))
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.MirroredStrategy()
