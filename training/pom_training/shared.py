"""Phase 2: joint labels for the shared network, distilled from the single networks."""

from __future__ import annotations

import logging
import os

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError, ModelError

from .dataset import LABEL, PHASE1, read_stack, write_stack
from .train import MODELS1, PHASE2

logger = logging.getLogger(__name__)

#: Gaussian smoothing of the joint label channels (pixels), as Pom does.
LABEL_SIGMA = 1.5


def joint_labels(own: np.ndarray, source: np.ndarray, predictions: np.ndarray, unknown_threshold: float,
                 sigma: float = LABEL_SIGMA) -> np.ndarray:
    """Pom's joint labels as one-hot (N, h, w, K + 1); the last class is Unknown.

    Parameters
    ----------
    own : (N, h, w) each image's own annotation (0..1) for the feature it came from.
    source : (N,) index of the feature each image came from.
    predictions : (N, h, w, K) every single network's prediction on every image.
    unknown_threshold : value of the Unknown channel.

    For an image from feature j, channel j is its own annotation and every other channel
    is that network's prediction, set to 0 where the own annotation is 1; then a Gaussian
    filter over y and x (nearest edges) and an argmax.
    """
    from scipy.ndimage import gaussian_filter

    n, h, w, k = predictions.shape
    scores = np.zeros((n, h, w, k + 1), dtype=np.float64)
    for j in range(k):
        channel = predictions[..., j].astype(np.float64)  # (N, h, w)
        mine = source == j
        channel[mine] = own[mine]
        others = ~mine
        channel[others] = np.where(own[others] == 1, 0.0, channel[others])
        scores[..., j] = channel
    scores[..., k] = unknown_threshold
    scores = gaussian_filter(scores, sigma=(0, sigma, sigma, 0), mode="nearest")
    winner = np.argmax(scores, axis=-1)  # (N, h, w)
    return np.eye(k + 1, dtype=np.float32)[winner]


def phase2_initialize(config: ProjectConfig, selective: bool = True, device: int | None = None,
                      progress: bool = True) -> dict:
    """Apply every single network to all phase 1 images; write phase 2 stacks (Pom's layout)."""
    from tqdm import tqdm

    from pom_inference.predict import predict_slices
    from pom_inference.session import load_model

    folder = config.path(str(PHASE1))
    xs, ys, src = [], [], []
    for j, o in enumerate(config.ontologies):
        y = read_stack(folder / f"{o}_{LABEL}.tif")
        x = np.stack([read_stack(folder / f"{o}_{c}.tif") for c in config.macromolecules], axis=-1)
        if selective:
            keep = y.reshape(len(y), -1).sum(axis=1) > 0
            x, y = x[keep], y[keep]
        xs.append(x)
        ys.append(y)
        src.append(np.full(len(y), j))
    x, own, source = np.concatenate(xs), np.concatenate(ys), np.concatenate(src)
    if len(x) == 0:
        raise InputError(f"{folder}: no annotated training images")
    predictions = np.zeros((*own.shape, len(config.ontologies)), dtype=np.float32)
    for j, o in enumerate(tqdm(config.ontologies, desc="single models", unit="model", disable=None if progress else True)):
        model = load_model(config.path(str(MODELS1), f"{o}.onnx"), device=device, quiet=True)
        if tuple(model.info.channels) != tuple(config.macromolecules):
            raise ModelError(f"{model.path}: expects channels {list(model.info.channels)}, the configuration "
                             f"lists {list(config.macromolecules)}; retrain it")
        predictions[..., j] = predict_slices(model.run, x, model.info.size_multiple, tta=8, batch=64)[..., 0]
    one_hot = joint_labels(own, source, predictions, config.shared_model_unknown_class_threshold)
    out = config.path(str(PHASE2))
    os.makedirs(out, exist_ok=True)
    for c, channel in enumerate(config.macromolecules):
        write_stack(out / f"in_{channel}.tif", list(x[..., c]))
    classes = (*config.ontologies, UNKNOWN)  # a new tuple: the configuration is not touched
    for k, name in enumerate(classes):
        write_stack(out / f"out_{name}.tif", list(one_hot[..., k]))
    counts = {name: int(one_hot[..., k].sum()) for k, name in enumerate(classes)}
    logger.info("phase 2: %d images of %dx%d; pixels per class %s; written to %s", len(x), x.shape[1], x.shape[2],
                counts, out)
    return {"images": int(len(x)), "pixels": counts}
