"""``pom doctor``'s report: can inference and training use the GPUs asked for (pure: reports in, lines out)."""

from __future__ import annotations

from typing import Any

from pom_inference.doctor import report_lines
from pom_inference.gpu import CudaReport

#: How to install TensorFlow when ``pom doctor`` finds none.
TRAIN_INSTALL = "pip install 'pom-onnx[train]'"


def doctor_report(inference: CudaReport, gpus: list[int] | None, tf_report: dict[str, Any],
                  problem: str | None) -> tuple[dict[str, Any], list[str], bool]:
    """The inference report (ONNX Runtime, CUDA libraries, driver, GPUs) and TensorFlow's, as asked for.

    Parameters
    ----------
    inference : :func:`pom_inference.gpu.diagnose`'s report for ``gpus``.
    gpus : the GPUs asked for; None for the CPU.
    tf_report : :func:`pom_training.fitting.devices.tensorflow_report`'s, or ``{"tensorflow": None,
        "error": ...}`` when TensorFlow cannot be imported.
    problem : why TensorFlow cannot train on ``gpus`` (None: it can, or the CPU was asked for).

    Returns
    -------
    The JSON document, the lines to print, and whether the requested setup works.
    """
    lines = report_lines(inference, gpus)
    if tf_report.get("tensorflow") is None:
        lines.append(f"TensorFlow: {tf_report['error']}")
        problem = "TensorFlow is not installed"
    else:
        build = (f"built for CUDA {tf_report['cuda_version']}, cuDNN {tf_report['cudnn_version']}"
                 if tf_report["cuda_build"] else "built without CUDA")
        seen = ", ".join(f"{g['index']}: {g['name']}" for g in tf_report["gpus"]) or "none"
        lines.append(f"TensorFlow {tf_report['tensorflow']}, {build}; GPUs it sees: {seen}")
        if problem:
            lines.append(f"Problem (training): {problem}")
    ok = (gpus is None or inference.ok) and problem is None
    lines.append("Training and inference can run as asked." if ok else
                 "Not everything asked for can run here; see the problems above (or use -gpus cpu).")
    doc = {"inference": {**inference.to_dict(), "requested": gpus if gpus is not None else "cpu"},
           "training": {**tf_report, "problem": problem}, "ok": ok}
    return doc, lines, ok
