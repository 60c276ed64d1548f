"""ONNX Runtime sessions: one place that picks providers and reads Pom metadata."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.errors import ModelError
from pom_common.modelmeta import METADATA_KEY, ModelInfo

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass
class Model:
    """A loaded model: the ORT session, its metadata, and the provider that actually runs it."""

    session: Any  # onnxruntime.InferenceSession
    info: ModelInfo
    provider: str
    path: Path
    input_name: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, C) float32 -> (B, H, W, K) float32."""
        return self.session.run(None, {self.input_name: batch})[0]


def _ort() -> Any:
    import onnxruntime as ort

    # Severity 4 (fatal only): onnxruntime-gpu otherwise logs errors about missing CUDA
    # libraries on CPU-only machines; what actually runs is checked with get_providers().
    ort.set_default_logger_severity(4)
    return ort


def _options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def usable_devices(gpus: list[int] | None) -> list[int | None]:
    """One worker device per GPU index, or one CPU worker (None) when asked or without CUDA."""
    if gpus is None:
        return [None]
    if CUDA not in _ort().get_available_providers():
        logger.info("ONNX Runtime has no CUDA provider here: one CPU worker instead of GPU %s",
                    ",".join(map(str, gpus)))
        return [None]
    return list(gpus)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The Pom metadata of an ONNX model file (raises ModelError for anything else)."""
    return load_model(path, device=None, quiet=True).info


def load_model(path: str | os.PathLike, device: int | None = None, threads: int | None = None,
               quiet: bool = False) -> Model:
    """Open ``path`` with the CUDA provider on GPU ``device`` when it works, else on the CPU.

    The choice is said in one line (unless ``quiet``).

    Raises
    ------
    ModelError
        The file is missing, not ONNX, or lacks Pom metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    ort = _ort()
    options = _options(ort, threads)
    providers: list = [CPU]
    if device is not None and CUDA in ort.get_available_providers():
        providers = [(CUDA, {"device_id": int(device)}), CPU]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        if providers[0] != CPU:  # CUDA provider failed at creation: fall back
            try:
                session = ort.InferenceSession(str(path), sess_options=options, providers=[CPU])
            except Exception as exc2:
                raise ModelError(f"{path}: not a usable ONNX model ({_first_line(exc2)})") from None
        else:
            raise ModelError(f"{path}: not a usable ONNX model ({_first_line(exc)})") from None
    active = session.get_providers()[0]
    meta = session.get_modelmeta().custom_metadata_map
    info = ModelInfo.from_json(meta.get(METADATA_KEY), str(path))
    inputs = session.get_inputs()
    if len(inputs) != 1 or (isinstance(inputs[0].shape[-1], int) and inputs[0].shape[-1] != len(info.channels)):
        raise ModelError(f"{path}: the graph's input {inputs[0].shape} does not match its metadata "
                         f"channels {list(info.channels)}")
    model = Model(session=session, info=info, provider="cuda" if active == CUDA else "cpu", path=path,
                  input_name=inputs[0].name)
    if not quiet:
        announce(model, device)
    return model


def announce(model: Model, device: int | None) -> None:
    """Say in one line what runs the model (and that CUDA was not usable, when it was asked for)."""
    if model.provider == "cuda":
        logger.info("ONNX Runtime: CUDA provider on GPU %s for %s", device, model.path.name)
    elif device is not None:
        logger.info("ONNX Runtime: CUDA is not usable here (GPU %s requested); running on the CPU", device)
    else:
        logger.info("ONNX Runtime: running on the CPU")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
