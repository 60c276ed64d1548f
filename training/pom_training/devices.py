"""Where TensorFlow trains: the GPUs asked for, or the CPU when asked for; never a silent fall-back.

``gpus`` is a list of indices (``-gpus 0,1``, ``GPUS`` in the configuration) or None for the
CPU (``-gpus cpu``). GPUs asked for that TensorFlow cannot use are a
:class:`~pom_common.errors.DeviceError` naming the cause: a TensorFlow built without CUDA,
no NVIDIA driver, or fewer GPUs than asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from pom_common.errors import DeviceError

logger = logging.getLogger(__name__)

INSTALL = "pip install 'pom-onnx[train-gpu]' (TensorFlow with its CUDA 12 wheels; NVIDIA driver 525 or newer)"


def tensorflow_report() -> dict[str, Any]:
    """TensorFlow's version, its CUDA build and the GPUs it sees (for ``pom doctor``)."""
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    gpus = []
    for i, device in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"index": i, "name": details.get("device_name", device.name)})
    return {"tensorflow": tf.__version__, "cuda_build": bool(build.get("is_cuda_build")),
            "cuda_version": build.get("cuda_version"), "cudnn_version": build.get("cudnn_version"), "gpus": gpus}


def _cause(report: dict[str, Any], gpus: list[int]) -> str | None:
    """Why TensorFlow cannot train on ``gpus``; None when it can."""
    from pom_inference.nvidia import driver_cuda_version

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
    DeviceError
        GPUs were asked for and TensorFlow cannot use them (the message says why and how to fix it).
    """
    import tensorflow as tf

    if not gpus:  # None (or no GPU at all): the CPU, as asked
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # already initialised in this process: the CPU is used through the default strategy
        logger.info("training on the CPU")
        return tf.distribute.get_strategy()
    cause = _cause(tensorflow_report(), gpus)
    if cause is not None:
        raise DeviceError(f"GPU {','.join(map(str, gpus))} requested for training, but {cause}")
    physical = tf.config.list_physical_devices("GPU")
    try:
        tf.config.set_visible_devices([physical[g] for g in gpus], "GPU")
    except RuntimeError:
        pass  # already initialised in this process (e.g. -all 1): keep the first choice
    logger.info("training on GPU %s", ",".join(map(str, gpus)))
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.MirroredStrategy()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and let it probe for GPUs with its C++ start-up messages discarded.

    TensorFlow's C++ logging (abseil) writes to file descriptor 2 before Python can set a
    level ("Could not find cuda drivers", "oneDNN custom operations are on", ...), and
    TF_CPP_MIN_LOG_LEVEL does not silence all of it. Users see them with ``--debug``. Python
    exceptions still propagate; only what TensorFlow's C++ code prints meanwhile is dropped.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def doctor(gpus: list[int] | None) -> tuple[dict[str, Any], list[str], bool]:
    """``pom doctor``: the inference report (ONNX Runtime, CUDA libraries, driver, GPUs) and TensorFlow's.

    Returns
    -------
    The JSON document, the lines to print, and whether the requested setup works.
    """
    from pom_inference.doctor import report_lines
    from pom_inference.gpu import diagnose

    inference = diagnose(gpus)
    lines = report_lines(inference, gpus)
    try:
        import_tensorflow_quietly()
        tf_report = tensorflow_report()
    except ImportError as exc:
        tf_report = {"tensorflow": None, "error": f"not installed ({exc.name}): pip install 'pom-onnx[train]'"}
    if tf_report.get("tensorflow") is None:
        lines.append(f"TensorFlow: {tf_report['error']}")
        cause = "TensorFlow is not installed"
    else:
        build = (f"built for CUDA {tf_report['cuda_version']}, cuDNN {tf_report['cudnn_version']}"
                 if tf_report["cuda_build"] else "built without CUDA")
        seen = ", ".join(f"{g['index']}: {g['name']}" for g in tf_report["gpus"]) or "none"
        lines.append(f"TensorFlow {tf_report['tensorflow']}, {build}; GPUs it sees: {seen}")
        cause = None if gpus is None else _cause(tf_report, gpus)
        if cause:
            lines.append(f"Problem (training): {cause}")
    ok = (gpus is None or inference.ok) and cause is None
    lines.append("Training and inference can run as asked." if ok else
                 "Not everything asked for can run here; see the problems above (or use -gpus cpu).")
    doc = {"inference": {**inference.to_dict(), "requested": gpus if gpus is not None else "cpu"},
           "training": {**tf_report, "problem": cause}, "ok": ok}
    return doc, lines, ok
