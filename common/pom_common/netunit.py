"""A trained network's files as one unit: the ``.keras`` file, its ``.onnx`` export and the metadata.

Training writes the ``.keras`` file first, with the export's metadata inside it (a member
``pom_unit.json`` of the Keras zip: a random *unit* token and the metadata text, whose
``training.unit`` is the same token); the ``.onnx`` file exported from it carries the same
metadata. So the ``.keras`` file is the unit's source of truth: a run killed after saving it
and before its export leaves a ``.keras`` whose token the old ``.onnx`` does not carry, which
:func:`check_export` refuses by name (``pom export`` makes the ``.onnx`` again from the
``.keras`` and its own metadata). Networks saved before units existed carry no token and are
not checked. Reads the zip only: no TensorFlow.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

from .errors import ModelError

#: The member of a ``.keras`` zip that holds the unit token and the export metadata.
UNIT_MEMBER = "pom_unit.json"
#: Key of the token in the metadata's ``training`` record.
UNIT_KEY = "unit"


def new_unit() -> str:
    """A fresh unit token (16 hex digits)."""
    return secrets.token_hex(8)


def embed_unit(keras_path: str | os.PathLike, unit: str, metadata: str) -> None:
    """Add the unit token and the export metadata (JSON text) to a saved ``.keras`` zip (a temporary file)."""
    with zipfile.ZipFile(keras_path, "a") as archive:
        archive.writestr(UNIT_MEMBER, json.dumps({UNIT_KEY: unit, "metadata": metadata}))


def read_unit(keras_path: str | os.PathLike) -> dict[str, Any] | None:
    """``{"unit": token, "metadata": text}`` of a ``.keras`` file; None for one saved before units existed.

    Raises
    ------
    ModelError
        The file is not a readable Keras zip, or its unit record is malformed.
    """
    try:
        with zipfile.ZipFile(keras_path) as archive:
            if UNIT_MEMBER not in archive.namelist():
                return None
            doc = json.loads(archive.read(UNIT_MEMBER))
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelError(f"{keras_path}: not a readable trained network ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(UNIT_KEY), str) or not isinstance(doc.get("metadata"), str):
        raise ModelError(f"{keras_path}: its {UNIT_MEMBER} is not a unit record; train it again")
    return doc


def check_export(onnx_path: str | os.PathLike, training: dict[str, Any], again: str) -> None:
    """Refuse an ``.onnx`` that is not the export of the ``.keras`` beside it (a newer network).

    Parameters
    ----------
    onnx_path : the exported network about to be used.
    training : its metadata's ``training`` record (:attr:`pom_common.modelmeta.ModelInfo.training`).
    again : the command that exports it again (``pom export -o FEATURE``).

    Raises
    ------
    ModelError
        Naming both files and ``again``.
    """
    onnx_path = Path(onnx_path)
    keras_path = onnx_path.with_suffix(".keras")
    if not keras_path.exists():
        return  # an exported network on its own (copied to a GPU server): nothing to compare with
    unit = read_unit(keras_path)
    if unit is None:
        return  # saved before units existed
    if training.get(UNIT_KEY) != unit[UNIT_KEY]:
        raise ModelError(f"{onnx_path}: not the export of {keras_path}, which was trained after it (the training run "
                         f"ended before its export was written); export it again: {again}")
