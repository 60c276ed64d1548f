"""Keras -> ONNX export (tf2onnx) with Pom metadata and a parity check against Keras."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pom_common import __version__
from pom_common.atomic import atomic_path
from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR, ONNX_OPSET
from pom_common.errors import ModelError
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_common.normalise import processing_normalisation

logger = logging.getLogger(__name__)

#: Largest allowed |ONNX Runtime - Keras| on the parity check input.
PARITY_TOLERANCE = 1e-4


def model_metadata(config: ProjectConfig, kind: str, classes: tuple[str, ...], tc: Any, voxel_size: float,
                   extra: dict[str, Any] | None = None) -> ModelInfo:
    training = {"epochs": tc.epochs, "batch_size": tc.batch_size, "learning_rate": tc.learning_rate,
                "base_filters": tc.base_filters, "depth": tc.depth,
                "ontology_annotation_box_size": config.ontology_annotation_box_size}
    training.update(extra or {})
    return ModelInfo(kind=kind, classes=tuple(classes), channels=tuple(config.macromolecules), z_sum=config.z_sum,
                     bin_factor=BIN_FACTOR,
                     normalisation={c: processing_normalisation(c, config.density_normalisation)
                                    for c in config.macromolecules},
                     normalisation_window=max(1, config.ontology_annotation_box_size // BIN_FACTOR),
                     size_multiple=2**tc.depth, voxel_size=float(voxel_size), training=training, version=__version__)


def export_onnx(model, path: str | Path, info: ModelInfo, opset: int = ONNX_OPSET) -> Path:
    """Convert ``model`` with dynamic batch, H and W; embed ``info``; check against Keras.

    Raises
    ------
    ModelError
        When ONNX Runtime and Keras disagree by more than 1e-4 (nothing is written).
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    path = Path(path)
    n_channels = int(model.input_shape[-1])
    spec = (tf.TensorSpec((None, None, None, n_channels), tf.float32, name="input"),)  # dynamic B, H, W

    @tf.function(input_signature=spec)
    def serve(x):
        return {"output": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    _check_parity(model, data, n_channels, info.size_multiple, path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def _check_parity(model, data: bytes, n_channels: int, multiple: int, path: Path) -> None:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3 * multiple, 2 * multiple, n_channels)).astype(np.float32)  # non-square
    expected = np.asarray(model(x, training=False))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    if got.shape != expected.shape:
        raise ModelError(f"{path}: export check failed: ONNX output shape {got.shape} != Keras {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(f"{path}: export check failed: ONNX Runtime and Keras differ by {diff:.3g} "
                         f"(> {PARITY_TOLERANCE}); nothing written")
    logger.info("export check: ONNX Runtime and Keras agree to %.2g on a %dx%d input", diff, x.shape[1], x.shape[2])
