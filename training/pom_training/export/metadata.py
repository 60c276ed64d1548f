"""What an exported network carries (its :class:`~pom_common.modelmeta.ModelInfo`), and its copy on disk.

The metadata of every exported network is also saved beside its ``.keras`` file, as
``<name>.metadata.json`` (:func:`pom_common.layout.metadata_path`), so the network can be
exported again without its training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from pom_common import __version__
from pom_common.atomic import atomic_write_text
from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR
from pom_common.errors import ModelError
from pom_common.layout import metadata_path
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_common.netunit import read_unit
from pom_common.normalise import processing_normalisation

from ..fitting.config import TrainConfig


def model_metadata(config: ProjectConfig, kind: str, classes: tuple[str, ...], tc: TrainConfig, voxel_size: float,
                   extra: dict[str, Any] | None = None, z_smooth: int = 1) -> ModelInfo:
    """The metadata an exported network carries: what it expects and produces, and how it was trained.

    ``z_smooth``: its output is averaged over that many binned slices wherever it is applied
    (:mod:`pom_inference.zsmooth`; 1: never).
    """
    training = {"epochs": tc.epochs, "batch_size": tc.batch_size, "learning_rate": tc.learning_rate,
                "base_filters": tc.base_filters, "depth": tc.depth,
                "ontology_annotation_box_size": config.ontology_annotation_box_size}
    training.update(extra or {})
    return ModelInfo(kind=kind, classes=tuple(classes), channels=tuple(config.macromolecules), z_sum=config.z_sum,
                     bin_factor=BIN_FACTOR,
                     normalisation={c: processing_normalisation(c, config.density_normalisation)
                                    for c in config.macromolecules},
                     normalisation_window=max(1, config.ontology_annotation_box_size // BIN_FACTOR),
                     size_multiple=2**tc.depth, voxel_size=float(voxel_size), training=training,
                     z_smooth=z_smooth, version=__version__)


def write_metadata(keras_path: str | Path, info: ModelInfo) -> Path:
    """Save the metadata the export of ``keras_path`` embeds (the JSON text, verbatim)."""
    path = metadata_path(keras_path)
    atomic_write_text(path, info.to_json())
    return path


def read_metadata(keras_path: str | Path, onnx_path: str | Path) -> str:
    """The metadata JSON to embed when exporting ``keras_path`` again.

    From the ``.keras`` file itself (its unit record, :mod:`pom_common.netunit`), else from
    ``<name>.metadata.json`` (networks saved before units existed), else from the existing
    ``onnx_path`` (networks trained before the metadata file existed).

    Raises
    ------
    ModelError
        Neither file holds Pom metadata, or it is malformed.
    """
    sidecar, onnx_path = metadata_path(keras_path), Path(onnx_path)
    text: str | None
    unit = read_unit(keras_path)
    if unit is not None:  # saved inside the network itself: the metadata of this very training run
        text, source = unit["metadata"], str(keras_path)
    elif sidecar.is_file():
        text, source = sidecar.read_text(encoding="utf-8"), str(sidecar)
    elif onnx_path.is_file():
        try:
            proto = onnx.load(str(onnx_path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
            raise ModelError(f"{onnx_path}: not an ONNX model ({exc}); cannot take its metadata") from None
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
        source = str(onnx_path)
    else:
        raise ModelError(f"{keras_path}: no metadata to export it with (neither {sidecar.name} nor {onnx_path.name} "
                         "exists); train it again")
    ModelInfo.from_json(text, source)  # raises ModelError when missing or malformed
    assert text is not None  # (from_json refuses a missing one)
    return text
