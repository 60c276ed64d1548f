"""Training loops for the single-feature and shared networks (Keras), with export.

Data come from Pom's on-disk stacks (training_datasets/phase1, phase2); the trained
networks are written as ``.keras`` and as self-describing ``.onnx`` files, with the
metadata of the export beside the ``.keras`` (``<name>.metadata.json``) so that
``pom export`` can export them again without training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pom_common.atomic import temporary_path
from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout

from .dataset import read_stack
from .devices import make_strategy

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (derived from the project configuration)."""

    epochs: int
    batch_size: int
    base_filters: int
    depth: int
    learning_rate: float = 1e-3  # Adam; Pom used 2.5e-5, which needs far more epochs
    seed: int = 0

    @classmethod
    def single(cls, config: ProjectConfig) -> TrainConfig:
        """Settings of a single-feature network's training."""
        return cls(config.single_model_epochs, config.single_model_batch_size, config.model_base_filters,
                   config.model_depth)

    @classmethod
    def shared(cls, config: ProjectConfig) -> TrainConfig:
        """Settings of the shared network's training."""
        return cls(config.shared_model_epochs, config.shared_model_batch_size, config.model_base_filters,
                   config.model_depth)


# ----------------------------------------------------------------------------- data


def augment8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, ...) -> (8N, H, W, ...): the 4 rotations, each also flipped (Pom's add_redundancy)."""
    out = []
    for img in images:
        for k in range(4):
            rotated = np.rot90(img, k, axes=(0, 1))
            out.append(rotated)
            out.append(np.flip(rotated, axis=0))
    return np.ascontiguousarray(np.array(out, dtype=np.float32))


def load_single_dataset(config: ProjectConfig, feature: str, counterexamples: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, h, w, C) and targets (N, h, w, 2) = (label, loss weight) for one feature.

    With counterexamples, the other features' images that have annotated pixels join
    with label 0 and weight = their own annotation (so only their annotated pixels count).
    """
    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    layout = ProjectLayout.of(config)
    folder = layout.phase1
    available = layout.phase1_features()
    if feature not in available:
        raise InputError(f"no training data for {feature!r} in {folder} (features with data: "
                         f"{available or 'none'}); annotate it in Ais and run 'pom single initialize'")

    def channels(o: str) -> np.ndarray:
        stacks = [read_stack(layout.phase1_stack(o, c)) for c in config.macromolecules]
        return np.stack(stacks, axis=-1)

    y = read_stack(layout.phase1_label(feature))
    xs, ys = [channels(feature)], [np.stack([y, np.ones_like(y)], axis=-1)]
    if counterexamples:
        for o in config.ontologies:
            if o == feature or o not in available:
                continue
            oy = read_stack(layout.phase1_label(o))
            keep = oy.reshape(len(oy), -1).sum(axis=1) > 0
            if keep.any():
                xs.append(channels(o)[keep])
                ys.append(np.stack([np.zeros_like(oy[keep]), oy[keep]], axis=-1))
    return np.concatenate(xs), np.concatenate(ys)


def load_shared_dataset(config: ProjectConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Phase 2 inputs (N, h, w, C) and one-hot targets (N, h, w, K); K = ontologies + Unknown."""
    layout = ProjectLayout.of(config)
    folder = layout.phase2
    classes = (*config.ontologies, UNKNOWN)
    x = np.stack([read_stack(layout.phase2_input(c)) for c in config.macromolecules], axis=-1)
    y = np.stack([read_stack(layout.phase2_output(o)) for o in classes], axis=-1)
    if x.shape[:3] != y.shape[:3]:
        raise InputError(f"{folder}: in_*.tif {x.shape[:3]} and out_*.tif {y.shape[:3]} differ")
    return x, y, classes


def training_voxel_size(config: ProjectConfig) -> float:
    """Unbinned voxel size (A) of the training tomograms, as recorded by phase 1."""
    info = ProjectLayout.of(config).phase1_info
    try:
        return float(json.loads(info.read_text())["voxel_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return float(config.apix)


# ----------------------------------------------------------------------------- fitting


def _save_keras(model, path: Path) -> None:
    """Save atomically; Keras insists on a .keras name, so the temporary gets one too."""
    tmp = temporary_path(path).with_suffix(".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _callbacks(epochs: int, checkpoint: Path, label: str):
    import keras

    class Progress(keras.callbacks.Callback):
        """One line per epoch: loss, and time left."""

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.best = math.inf
            self.best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            elapsed = time.perf_counter() - self.start
            left = elapsed / (epoch + 1) * (epochs - epoch - 1)
            better = loss < self.best
            if better:
                self.best = loss
                self.best_weights = self.model.get_weights()
                _save_keras(self.model, checkpoint)  # survives a killed training run
            logger.info("%s epoch %d/%d  loss %.4f%s  %.1f s/epoch  %s left", label, epoch + 1, epochs, loss,
                        " (best)" if better else "", elapsed / (epoch + 1), _duration(left))

    return Progress()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fit(model, x: np.ndarray, y: np.ndarray, tc: TrainConfig, loss, checkpoint: Path, label: str) -> list[float]:
    """Compile and fit; restore the best-loss weights at the end. Returns the loss per epoch."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=tc.learning_rate), loss=loss)
    progress = _callbacks(tc.epochs, checkpoint, label)
    history = model.fit(x, y, batch_size=min(tc.batch_size, len(x)), epochs=tc.epochs, shuffle=True,
                        verbose=0, callbacks=[progress])
    if progress.best_weights is not None:
        model.set_weights(progress.best_weights)
    return [float(v) for v in history.history["loss"]]


# ----------------------------------------------------------------------------- commands


def train_single(config: ProjectConfig, feature: str, counterexamples: bool = True, gpus: list[int] | None = None,
                 tc: TrainConfig | None = None) -> dict:
    """Train, save and export the network of one feature. Returns a summary dict.

    ``label_method`` "painted" and "direct" learn every painted label instead
    (:func:`pom_training.painted_training.train_single_painted`; ``counterexamples`` does
    not apply); "pom" trains as Pom does, below.
    """
    if config.label_method != "pom":
        from .painted_training import train_single_painted

        if not counterexamples:
            logger.info("-c 0 does not apply to label_method %r: every painted label is used", config.label_method)
        return train_single_painted(config, feature, gpus=gpus, tc=tc)
    x, y = load_single_dataset(config, feature, counterexamples)
    tc = tc or TrainConfig.single(config)
    check_depth(x, tc)
    import keras

    from .export import model_metadata
    from .losses import masked_binary_crossentropy
    from .models import build_unet

    keras.utils.set_random_seed(tc.seed)
    x8, y8 = augment8(x), augment8(y)
    layout = ProjectLayout.of(config)
    os.makedirs(layout.models1, exist_ok=True)
    strategy = make_strategy(gpus)  # None or []: the CPU, asked for
    logger.info("training %s: %d images (x8 augmented = %d), channels %s, %d epochs", feature, len(x), len(x8),
                list(config.macromolecules), tc.epochs)
    with strategy.scope():
        model = build_unet(x.shape[-1], 1, tc.base_filters, tc.depth, activation="sigmoid")
    checkpoint = layout.single_checkpoint(feature)
    losses = fit(model, x8, y8, tc, masked_binary_crossentropy, checkpoint, feature)
    keras_path = layout.single_model(feature, ".keras")
    meta = model_metadata(config, kind="single", classes=(feature,), tc=tc, voxel_size=training_voxel_size(config),
                          extra={"counterexamples": counterexamples, "images": int(len(x)), "losses": losses})
    onnx_path = _save_and_export(model, keras_path, checkpoint, meta, f"pom export -o {shlex.quote(feature)}")
    return {"losses": losses, "keras": keras_path, "onnx": onnx_path}


def train_shared(config: ProjectConfig, gpus: list[int] | None = None, checkpoint: str | None = None,
                 tc: TrainConfig | None = None) -> dict:
    """Train, save and export the shared network (ontologies + Unknown, softmax).

    ``label_method`` "painted" and "direct" train with
    :func:`pom_training.painted_training.train_shared_stable` (unlabelled pixels ignored,
    reproducible for a seed, cosine schedule); "pom" as Pom does, below.
    """
    if config.label_method != "pom":
        from .painted_training import train_shared_stable

        return train_shared_stable(config, gpus=gpus, checkpoint=checkpoint, tc=tc)
    from .shared import check_phase2_method, read_phase2_info

    x, y, classes = load_shared_dataset(config)
    check_phase2_method(config, read_phase2_info(config))
    tc = tc or TrainConfig.shared(config)
    import keras

    from .export import model_metadata
    from .models import build_unet

    keras.utils.set_random_seed(tc.seed)
    x8, y8 = augment8(x), augment8(y)
    layout = ProjectLayout.of(config)
    os.makedirs(layout.models2, exist_ok=True)
    strategy = make_strategy(gpus)  # None or []: the CPU, asked for
    with strategy.scope():
        if checkpoint:
            model = load_checkpoint(checkpoint, x.shape[-1], len(classes))
        else:
            model = build_unet(x.shape[-1], len(classes), tc.base_filters, tc.depth, activation="softmax")
    logger.info("training the shared network: %d images (x8 = %d), classes %s", len(x), len(x8), list(classes))
    ckpt = layout.shared_checkpoint()
    losses = fit(model, x8, y8, tc, keras.losses.CategoricalCrossentropy(), ckpt, "shared")
    keras_path = layout.shared_model(".keras")
    meta = model_metadata(config, kind="shared", classes=classes, tc=tc, voxel_size=training_voxel_size(config),
                          extra={"images": int(len(x)), "losses": losses, "continued_from": checkpoint})
    onnx_path = _save_and_export(model, keras_path, ckpt, meta, "pom export shared")
    return {"losses": losses, "keras": keras_path, "onnx": onnx_path}


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


def load_checkpoint(path: str | os.PathLike, n_inputs: int, n_outputs: int):
    """A saved ``.keras`` model to continue training, checked against the data's inputs and classes.

    Raises
    ------
    InputError
        It cannot be loaded, or its inputs or outputs do not match.
    """
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot load the checkpoint ({exc})") from None
    if model.output_shape[-1] != n_outputs or model.input_shape[-1] != n_inputs:
        raise InputError(f"{path}: the checkpoint has {model.input_shape[-1]} inputs and "
                         f"{model.output_shape[-1]} outputs; expected {n_inputs} and {n_outputs}")
    return model


def _save_and_export(model, keras_path: Path, checkpoint: Path, meta, again: str) -> Path:
    """Save ``model`` and its export metadata, drop the checkpoint, then export to ONNX beside it.

    The ``.keras`` file and ``<name>.metadata.json`` are written first, so a failed export
    loses no training: ``again`` (a ``pom export`` command line) exports them later.

    Raises
    ------
    ExportError
        The export failed; the message says how to export again.
    """
    from .export import ExportError, export_onnx, write_metadata

    _save_keras(model, keras_path)
    write_metadata(keras_path, meta)
    checkpoint.unlink(missing_ok=True)  # the final weights are in keras_path
    try:
        onnx_path = export_onnx(model, keras_path.with_suffix(".onnx"), meta)
    except ExportError as exc:
        raise ExportError(f"{exc}; the trained network is saved as {keras_path}; to export it again: {again}") from None
    logger.info("saved %s and %s", keras_path, onnx_path)
    return onnx_path


def export_single(config: ProjectConfig, feature: str) -> Path:
    """``pom export -o FEATURE``: export ``models/phase1/<feature>.keras`` again, without training.

    Raises
    ------
    ConfigError
        ``feature`` is not one of the ontologies.
    InputError
        The feature has no trained network.
    ModelError
        The network or its metadata cannot be read, or the export fails.
    """
    from .export import export_saved

    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    keras_path = ProjectLayout.of(config).single_model(feature, ".keras")
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained network for {feature!r}; train it with: "
                         f"pom single train -o {shlex.quote(feature)}")
    return export_saved(keras_path, keras_path.with_suffix(".onnx"))


def export_shared(config: ProjectConfig) -> Path:
    """``pom export shared``: export ``models/phase2/shared.keras`` again, without training.

    Raises
    ------
    InputError
        There is no trained shared network.
    ModelError
        The network or its metadata cannot be read, or the export fails.
    """
    from .export import export_saved

    keras_path = ProjectLayout.of(config).shared_model(".keras")
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained shared network; train it with: pom shared train")
    return export_saved(keras_path, keras_path.with_suffix(".onnx"))


__all__ = ["TrainConfig", "augment8", "export_shared", "export_single", "train_shared", "train_single"]
