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
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout

from .dataset import read_stack
from .devices import make_strategy
from .export.exporter import save_and_export as _save_and_export
from .fitting.checkpoints import check_depth, load_checkpoint
from .fitting.checkpoints import save_keras as _save_keras
from .fitting.config import TrainConfig

logger = logging.getLogger(__name__)

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

    from .export.metadata import model_metadata
    from .models.losses import masked_binary_crossentropy
    from .models.unet import build_unet

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

    from .export.metadata import model_metadata
    from .models.unet import build_unet

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
    from .export.exporter import export_saved

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
    from .export.exporter import export_saved

    keras_path = ProjectLayout.of(config).shared_model(".keras")
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained shared network; train it with: pom shared train")
    return export_saved(keras_path, keras_path.with_suffix(".onnx"))


__all__ = ["TrainConfig", "augment8", "export_shared", "export_single", "train_shared", "train_single"]
