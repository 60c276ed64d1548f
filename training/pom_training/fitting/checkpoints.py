"""Networks on disk while and after training: ``.keras`` saved atomically, loaded to continue, checked."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from pom_common.atomic import temporary_path
from pom_common.errors import ConfigError, InputError
from pom_common.netunit import embed_unit

from .config import TrainConfig


def save_keras(model: keras.Model, path: Path, unit: tuple[str, str] | None = None) -> None:
    """Save atomically; Keras insists on a .keras name, so the temporary gets one too.

    ``unit``: (token, export metadata JSON) written into the file before it appears
    (:mod:`pom_common.netunit`), so the network and its metadata are one file.
    """
    tmp = temporary_path(path).with_suffix(".keras")
    try:
        model.save(tmp)
        if unit is not None:
            embed_unit(tmp, *unit)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, n_inputs: int, n_outputs: int) -> keras.Model:
    """A saved ``.keras`` model to continue training, checked against the data's inputs and classes.

    Raises
    ------
    InputError
        It cannot be loaded, or its inputs or outputs do not match.
    """
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot load the checkpoint ({exc})") from None
    if model.output_shape[-1] != n_outputs or model.input_shape[-1] != n_inputs:
        raise InputError(f"{path}: the checkpoint has {model.input_shape[-1]} inputs and "
                         f"{model.output_shape[-1]} outputs; expected {n_inputs} and {n_outputs}")
    return model


def check_depth(x: np.ndarray, tc: TrainConfig) -> None:
    """Refuse training images whose sides the U-Net's ``tc.depth`` poolings cannot halve.

    Raises
    ------
    ConfigError
        Naming model_depth and the box size that would do.
    """
    multiple = 2**tc.depth
    if x.shape[1] % multiple or x.shape[2] % multiple:
        raise ConfigError(f"model_depth {tc.depth}: training images {x.shape[1]}x{x.shape[2]} are not multiples of "
                          f"{multiple}; lower model_depth or use an ontology_annotation_box_size multiple of {2 * multiple}")
