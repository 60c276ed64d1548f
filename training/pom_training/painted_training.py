"""Training from painted labels: ``label_method`` "painted" and "direct".

* "painted": a single network for feature X learns X where X is painted (on every crop,
  not only X's own), not-X where another feature is painted, and ignores unpainted pixels;
  inside X's own boxes Pom's target stays (the box is complete for X). ``pom shared
  initialize`` then lets painted labels override the network-derived joint labels.
* "direct": no single networks; the shared network learns the painted labels of every
  crop, unpainted pixels ignored.

Both train with :func:`fit_stable`: a seed fixes the result (deterministic ops, seeded
draws), a cosine learning-rate schedule that ends at zero makes the last epoch's weights
the result, and each epoch draws 8 samples per Pom crop from the pool of crops and extra
crops (``phase1/extra/``, more samples per annotated slice), each in one of the 8
rotations/flips; so runs with different seeds agree closely, and an epoch costs what Pom's
does. Pom's method ("pom") is not here: it trains exactly as :mod:`pom_training.train`
always has.
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

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout

from .dataset import read_stack
from .labels import PAINTED, UNPAINTED, extra_stack, one_hot, read_painted, single_targets

logger = logging.getLogger(__name__)

#: The learning rate decays from TrainConfig.learning_rate to this fraction of it (cosine).
FINAL_LR_FRACTION = 0.0
#: Share of the steps spent warming the learning rate up linearly from zero.
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class Phase1Data:
    """Pom's phase-1 stacks and the painted code maps, per feature (those that have data)."""

    ontologies: tuple[str, ...]
    x: dict[str, np.ndarray]  # feature -> (N, h, w, C) network inputs
    y: dict[str, np.ndarray]  # feature -> (N, h, w) Pom's label (own feature, 0..1)
    codes: dict[str, np.ndarray]  # feature -> (N, h, w) uint8 painted codes (labels.PAINTED)
    extra_x: np.ndarray | None = None  # (M, h, w, C) the extra crops around the boxes (phase1/extra/)
    extra_codes: np.ndarray | None = None  # (M, h, w) their painted codes

    @property
    def features(self) -> list[str]:
        """Features with training crops, in ontology order."""
        return [o for o in self.ontologies if o in self.x]


def load_phase1(config: ProjectConfig) -> Phase1Data:
    """Read every feature's phase-1 stacks, painted code maps included.

    Raises
    ------
    InputError
        No stacks, or painted labels missing or recorded for other ontologies (the message
        says to run ``pom single initialize`` again).
    """
    layout = ProjectLayout.of(config)
    try:
        info = json.loads(layout.phase1_info.read_text())
    except (OSError, ValueError):
        info = {}
    recorded = info.get("painted_classes")
    if recorded != list(config.ontologies):
        what = "were not recorded" if recorded is None else f"were recorded for ontologies {recorded}"
        raise InputError(f"{layout.phase1_info}: painted labels {what}; label_method "
                         f"{config.label_method!r} needs them for {list(config.ontologies)}: run "
                         "'pom single initialize' again (or set \"label_method\": \"pom\" in "
                         "project_configuration.json for Pom's method)")
    available = set(layout.phase1_features())
    xs, ys, codes = {}, {}, {}
    for o in config.ontologies:
        if o not in available:
            continue
        ys[o] = read_stack(layout.phase1_label(o))
        codes[o] = read_painted(layout.phase1_stack(o, PAINTED))
        xs[o] = _stack_channels([layout.phase1_stack(o, c) for c in config.macromolecules], ys[o].shape,
                                layout.phase1_label(o))
        _same_shape(layout.phase1_stack(o, PAINTED), codes[o].shape, layout.phase1_label(o), ys[o].shape)
    if not xs:
        raise InputError(f"{layout.phase1}: no phase-1 stacks; run 'pom single initialize' first")
    extra_x = extra_codes = None
    recorded_extra = info.get("extra_crops")
    if recorded_extra:
        painted_extra = extra_stack(layout.phase1, PAINTED)
        extra_codes = read_painted(painted_extra)
        if not isinstance(recorded_extra, list) or len(extra_codes) != len(recorded_extra):
            raise InputError(f"{painted_extra}: {len(extra_codes)} extra crops, {layout.phase1_info.name} records "
                             f"{len(recorded_extra) if isinstance(recorded_extra, list) else recorded_extra!r}; "
                             "run 'pom single initialize' again")
        extra_x = _stack_channels([extra_stack(layout.phase1, c) for c in config.macromolecules],
                                  extra_codes.shape, painted_extra)
    return Phase1Data(tuple(config.ontologies), xs, ys, codes, extra_x, extra_codes)


def _same_shape(path: Path, shape: tuple[int, ...], reference: Path, expected: tuple[int, ...]) -> None:
    """InputError naming ``path`` when its stack's shape is not ``reference``'s."""
    if tuple(shape) != tuple(expected):
        raise InputError(f"{path}: {shape[0] if shape else 0} images of {'x'.join(map(str, shape[1:]))}, "
                         f"{reference.name} has {expected[0]} of {'x'.join(map(str, expected[1:]))}; the phase-1 "
                         "stacks are out of step: run 'pom single initialize' again")


def _stack_channels(paths: list[Path], shape: tuple[int, ...], reference: Path) -> np.ndarray:
    """(N, h, w, C) from one (N, h, w) stack per channel, each checked against ``shape``."""
    stacks = []
    for path in paths:
        stack = read_stack(path)
        _same_shape(path, stack.shape, reference, shape)
        stacks.append(stack)
    return np.stack(stacks, axis=-1)


def painted_single_dataset(data: Phase1Data, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, h, w, C) and targets (N, h, w, 2) = (label, weight) of ``feature``'s network.

    Every crop of ``feature`` first (Pom's target), then every other crop with a painted
    pixel (:func:`pom_training.labels.single_targets`), in ontology order.

    Raises
    ------
    InputError
        When ``feature`` has no crops.
    """
    if feature not in data.x:
        raise InputError(f"no training data for {feature!r} (features with data: {data.features}); "
                         "annotate it in Ais and run 'pom single initialize'")
    code = data.ontologies.index(feature) + 1
    xs, ts = [], []
    for o in [feature, *(f for f in data.features if f != feature)]:
        codes = data.codes[o]
        if o != feature:
            keep = (codes != UNPAINTED).reshape(len(codes), -1).any(axis=1)
            if not keep.any():
                continue
        else:
            keep = np.ones(len(codes), bool)
        is_own = np.full(int(keep.sum()), o == feature)
        xs.append(data.x[o][keep])
        ts.append(single_targets(data.y[o][keep], codes[keep], is_own, code))
    return np.concatenate(xs), np.concatenate(ts)


def direct_shared_dataset(data: Phase1Data) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Inputs (N, h, w, C) and targets (N, h, w, K + 1) for the shared network, from paint alone.

    Every crop with a painted pixel, the extra crops included; targets are one-hot on
    painted pixels and all zero on unpainted ones (ignored by
    :func:`masked_categorical_crossentropy`). The last class, Unknown, is never a target;
    it is kept so the network's classes are the usual ones.
    """
    classes = (*data.ontologies, UNKNOWN)
    xs, ts = [], []
    groups = [(data.x[o], data.codes[o]) for o in data.features]
    if data.extra_x is not None and data.extra_codes is not None:
        groups.append((data.extra_x, data.extra_codes))
    for x, codes in groups:
        keep = (codes != UNPAINTED).reshape(len(codes), -1).any(axis=1)
        xs.append(x[keep])
        ts.append(one_hot(codes[keep], len(classes) - 1))
    x = np.concatenate(xs)
    t = np.concatenate(ts)
    t = np.concatenate([t, np.zeros((*t.shape[:3], 1), np.float32)], axis=-1)  # Unknown
    if len(x) == 0:
        raise InputError("no painted pixels in any phase-1 crop; paint the features in Ais")
    return x, t, classes


# ----------------------------------------------------------------------------- fitting


def masked_categorical_crossentropy(y_true, y_pred):
    """Cross-entropy averaged over labelled pixels: those whose target row is not all zero.

    y_true : (B, H, W, K) one-hot, or all zero where the pixel is not labelled.
    y_pred : (B, H, W, K) softmax output.
    """
    import tensorflow as tf

    weights = tf.reduce_sum(y_true, axis=-1)  # (B, H, W)
    ce = -tf.reduce_sum(y_true * tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)), axis=-1)
    return tf.reduce_sum(ce) / (tf.reduce_sum(weights) + 1e-7)


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def lr_schedule(peak: float, total_steps: int):
    """Linear warm-up over WARMUP_FRACTION of the steps, then cosine decay to FINAL_LR_FRACTION."""
    import keras

    warmup = max(1, int(round(WARMUP_FRACTION * total_steps)))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), alpha=FINAL_LR_FRACTION, warmup_target=peak,
        warmup_steps=warmup)


def crop_batches(x: np.ndarray, y: np.ndarray, batch: int, per_epoch: int, seed: int):
    """A Keras ``PyDataset`` of random crops, each in one of the 8 rotations/flips, seeded.

    Parameters
    ----------
    x, y : the pool, inputs (N, H, W, C) and targets (N, H, W, ...) with H == W.
    batch : crops per batch.
    per_epoch : crops per epoch (drawn without replacement while the pool lasts).
    seed : the draws and transforms depend on it alone.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.steps = math.ceil(per_epoch / batch)
            self._plan()

        def _plan(self) -> None:
            n = self.steps * batch
            order = np.concatenate([self.rng.permutation(len(x)) for _ in range(math.ceil(n / len(x)))])[:n]
            self.index = order.reshape(self.steps, batch)
            self.transform = self.rng.integers(0, 8, (self.steps, batch))  # rotation k = t // 2, flip = t % 2

        def __len__(self) -> int:
            return self.steps

        def __getitem__(self, i: int):
            xs, ys = [], []
            for j, t in zip(self.index[i], self.transform[i]):
                for source, out in ((x, xs), (y, ys)):
                    image = np.rot90(source[j], t // 2, axes=(0, 1))
                    out.append(np.flip(image, axis=0) if t % 2 else image)
            return np.ascontiguousarray(xs, dtype=np.float32), np.ascontiguousarray(ys, dtype=np.float32)

        def on_epoch_end(self) -> None:
            self._plan()

    return Batches()


def fit_stable(model, x: np.ndarray, y: np.ndarray, tc, loss, checkpoint: Path | None, label: str,
               per_epoch: int | None = None) -> list[float]:
    """Compile and fit with the cosine schedule; the last epoch's weights are the result.

    Parameters
    ----------
    model : an uncompiled Keras model.
    x, y : the crops (N, H, W, C) and their targets (N, H, W, ...), not augmented: every
        draw takes one of the 8 rotations/flips at random (:func:`crop_batches`).
    tc : :class:`pom_training.train.TrainConfig` (epochs, batch size, peak learning rate, seed).
    loss : a Keras loss.
    checkpoint : where the weights are saved after each epoch (None: nowhere).
    label : name used in the progress lines.
    per_epoch : crops per epoch; default 8 N, what Pom's 8-fold augmentation gives. Extra
        crops enlarge the pool without making an epoch longer.

    Returns
    -------
    The training loss per epoch.
    """
    import keras

    from .train import _save_keras

    per_epoch = per_epoch or 8 * len(x)
    batch = min(tc.batch_size, per_epoch)
    data = crop_batches(x, y, batch, per_epoch, tc.seed)
    steps = len(data) * tc.epochs
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr_schedule(tc.learning_rate, steps)), loss=loss)

    class Progress(keras.callbacks.Callback):
        """One line per epoch; the weights saved, so a killed run leaves its last epoch."""

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self.start
            if checkpoint is not None:
                _save_keras(self.model, checkpoint)
            logger.info("%s epoch %d/%d  loss %.4f  %.1f s/epoch", label, epoch + 1, tc.epochs,
                        float((logs or {}).get("loss", math.nan)), elapsed / (epoch + 1))

    history = model.fit(data, epochs=tc.epochs, verbose=0, callbacks=[Progress()])
    return [float(v) for v in history.history["loss"]]


def _export(config: ProjectConfig, model, keras_path: Path, checkpoint: Path, kind: str, classes: tuple[str, ...],
            tc, extra: dict, again: str) -> dict:
    """Save, write the metadata and export as :mod:`pom_training.train` does (``pom export`` works too)."""
    from .export.metadata import model_metadata
    from .train import _save_and_export, training_voxel_size

    meta = model_metadata(config, kind=kind, classes=classes, tc=tc, voxel_size=training_voxel_size(config),
                          extra={"label_method": config.label_method, "seed": tc.seed, **extra})
    onnx_path = _save_and_export(model, keras_path, checkpoint, meta, again)
    return {"losses": extra["losses"], "keras": keras_path, "onnx": onnx_path}


# ----------------------------------------------------------------------------- commands


def train_single_painted(config: ProjectConfig, feature: str, gpus: list[int] | None = None, tc=None) -> dict:
    """Train, save and export ``feature``'s network from painted labels. Returns a summary dict.

    Raises
    ------
    ConfigError
        ``feature`` is not an ontology, or the crops do not fit the network's depth.
    InputError
        No data for ``feature``, or painted labels missing (see :func:`load_phase1`).
    """
    from .train import TrainConfig

    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    x, y = painted_single_dataset(load_phase1(config), feature)
    tc = tc or TrainConfig.single(config)
    layout = ProjectLayout.of(config)
    model, losses = _train(config, x, y, tc, gpus, n_outputs=1, activation="sigmoid",
                           checkpoint=layout.single_checkpoint(feature), label=feature)
    return _export(config, model, layout.single_model(feature, ".keras"), layout.single_checkpoint(feature),
                   "single", (feature,), tc, {"images": int(len(x)), "losses": losses},
                   f"pom export -o {shlex.quote(feature)}")


def train_shared_stable(config: ProjectConfig, gpus: list[int] | None = None, checkpoint: str | None = None,
                        tc=None) -> dict:
    """Train, save and export the shared network on the phase-2 stacks with :func:`fit_stable`.

    Unlabelled pixels (all-zero target rows, as ``label_method`` "direct" writes them) are
    ignored by the loss. ``checkpoint`` continues from a saved ``.keras`` model.
    """
    from .shared import check_phase2_method, read_phase2_info
    from .train import TrainConfig, load_shared_dataset

    x, y, classes = load_shared_dataset(config)
    tc = tc or TrainConfig.shared(config)
    layout = ProjectLayout.of(config)
    info = read_phase2_info(config)
    check_phase2_method(config, info)
    base = info.get("base_images")
    base = int(base) if isinstance(base, int) and 0 < base <= len(x) else None
    model, losses = _train(config, x, y, tc, gpus, n_outputs=len(classes), activation="softmax",
                           checkpoint=layout.shared_checkpoint(), label="shared", start=checkpoint, base=base)
    return _export(config, model, layout.shared_model(".keras"), layout.shared_checkpoint(), "shared", classes, tc,
                   {"images": int(len(x)), "base_images": base, "losses": losses, "continued_from": checkpoint},
                   "pom export shared")


def _train(config: ProjectConfig, x: np.ndarray, y: np.ndarray, tc, gpus: list[int] | None, n_outputs: int,
           activation: str, checkpoint: Path, label: str, start: str | None = None, base: int | None = None):
    """Build (or load ``start``) and fit a U-Net; an epoch is 8 draws per crop (``base`` crops if given)."""
    from .devices import make_strategy
    from .fitting.checkpoints import check_depth, load_checkpoint
    from .models.unet import build_unet

    check_depth(x, tc)
    make_deterministic(tc.seed)
    os.makedirs(checkpoint.parent, exist_ok=True)
    strategy = make_strategy(gpus)  # None or []: the CPU
    with strategy.scope():
        if start:
            model = load_checkpoint(start, x.shape[-1], n_outputs)
        else:
            model = build_unet(x.shape[-1], n_outputs, tc.base_filters, tc.depth, activation=activation)
    loss = masked_categorical_crossentropy if activation == "softmax" else _masked_bce()
    per_epoch = 8 * (base or len(x))
    logger.info("training %s (label_method %s, seed %d): %d images, %d per epoch (8 rotations/flips of %d), "
                "%d epochs", label, config.label_method, tc.seed, len(x), per_epoch, base or len(x), tc.epochs)
    losses = fit_stable(model, x, y, tc, loss, checkpoint, label, per_epoch=per_epoch)
    return model, losses


def _masked_bce():
    from .models.losses import masked_binary_crossentropy

    return masked_binary_crossentropy
