"""A trained network becomes a checked ``.onnx`` file; ``pom export`` makes it again from the ``.keras``.

The export is deterministic: the same weights and metadata give the same ONNX bytes, in a
fresh process or after other exports (so ``pom export`` reproduces the file training wrote).
Two things make it so: tf2onnx runs with the optimiser fix (:mod:`.tf2onnx_fix`), and the
converted graph is written in a canonical form (:mod:`.canonical`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import time
from pathlib import Path

import keras
import onnx

from pom_common.atomic import TMP_MARK, atomic_path, atomic_write_text
from pom_common.constants import ONNX_OPSET
from pom_common.errors import InputError, ModelError
from pom_common.layout import metadata_path
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_common.netunit import UNIT_KEY, new_unit

from ..fitting.checkpoints import save_keras
from .convert import convert
from .errors import ExportError
from .metadata import read_metadata, write_metadata
from .parity import check_parity

logger = logging.getLogger(__name__)
#: Temporary files of a network older than this were left by a killed run (an export takes minutes).
STALE_SECONDS = 3600.0


def export_onnx(model: keras.Model, path: str | Path, info: ModelInfo | str, opset: int = ONNX_OPSET) -> Path:
    """Convert ``model`` with dynamic batch, H and W; embed ``info``; check against Keras; write ``path``.

    Parameters
    ----------
    model : keras.Model
        Channels-last network, (B, H, W, C) -> (B, H, W, K).
    path : str or Path
        The ``.onnx`` file, written atomically and only when the check passes.
    info : ModelInfo or str
        The metadata, or its JSON text (embedded verbatim, as ``pom export`` does).
    opset : int
        ONNX opset.

    Raises
    ------
    ModelError
        ``info`` is malformed JSON metadata.
    ExportError
        tf2onnx cannot convert the model, or ONNX Runtime and Keras disagree in shape or by
        more than :data:`.parity.PARITY_TOLERANCE` (nothing is written).
    """
    path = Path(path)
    text = info.to_json() if isinstance(info, ModelInfo) else info
    if not isinstance(info, ModelInfo):
        ModelInfo.from_json(text, str(path))  # raises ModelError when malformed
    try:
        proto = convert(model, opset)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise ExportError(f"{path}: conversion to ONNX failed ({type(exc).__name__}: {exc})") from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.checker.check_model(proto)
    data = proto.SerializeToString(deterministic=True)
    with atomic_path(path) as tmp:  # checked where it is written, then renamed; removed when the check fails
        Path(tmp).write_bytes(data)
        check_parity(model, Path(tmp), path)
    return path


def export_saved(keras_path: str | Path, onnx_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Export a saved ``.keras`` network again, with its saved metadata (:func:`.metadata.read_metadata`).

    Gives the same bytes as the export at training time.

    Raises
    ------
    InputError
        ``keras_path`` does not exist.
    ModelError
        It cannot be loaded, has no metadata, or its export fails.
    """
    keras_path = Path(keras_path)
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained network to export")
    remove_stale_temporaries(keras_path, Path(onnx_path))
    text = read_metadata(keras_path, onnx_path)
    try:
        model = keras.models.load_model(keras_path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
        raise ModelError(f"{keras_path}: cannot load the trained network ({type(exc).__name__}: {exc})") from None
    logger.info("exporting %s to %s", keras_path, onnx_path)
    path = export_onnx(model, onnx_path, text, opset)
    sidecar = metadata_path(keras_path)
    if not sidecar.is_file() or sidecar.read_text(encoding="utf-8") != text:  # left stale by a killed run
        atomic_write_text(sidecar, text)
    return path


def remove_stale_temporaries(*targets: Path, older_than: float = STALE_SECONDS) -> None:
    """Remove the temporary files that killed runs left beside a network's files (older than ``older_than``)."""
    now = time.time()
    for target in targets:
        for name in (target.name, metadata_path(target).name):
            for tmp in target.parent.glob(f".{glob.escape(name)}{TMP_MARK}*"):
                with contextlib.suppress(OSError):
                    if now - tmp.stat().st_mtime > older_than:
                        tmp.unlink()


def save_and_export(model: keras.Model, keras_path: Path, onnx_path: Path, checkpoint: Path, meta: ModelInfo,
                    again: str) -> Path:
    """Save ``model`` and its export metadata, drop the checkpoint, then export to ``onnx_path``.

    The ``.keras`` file (with the metadata and a new unit token inside it, :mod:`pom_common.netunit`)
    and ``<name>.metadata.json`` are written first, so a failed or killed export loses no
    training: ``again`` (a ``pom export`` command line) exports them later, and until then
    the old ``.onnx`` beside the new ``.keras`` is refused by name where it would be used.

    Raises
    ------
    ExportError
        The export failed; the message says how to export again.
    """
    remove_stale_temporaries(keras_path, onnx_path)
    unit = new_unit()
    meta = dataclasses.replace(meta, training={**meta.training, UNIT_KEY: unit})
    save_keras(model, keras_path, (unit, meta.to_json()))
    write_metadata(keras_path, meta)
    checkpoint.unlink(missing_ok=True)  # the final weights are in keras_path
    try:
        export_onnx(model, onnx_path, meta)
    except ExportError as exc:
        raise ExportError(f"{exc}; the trained network is saved as {keras_path}; to export it again: {again}") from None
    logger.info("saved %s and %s", keras_path, onnx_path)
    return onnx_path
