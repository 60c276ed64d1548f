"""Pom's joint labels: every single network's prediction on every crop, smoothed, argmax with Unknown.

Shared by the methods that distil the single networks (:mod:`.pom`, :mod:`.painted`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from pom_common.config import ProjectConfig
from pom_common.defaults import JOINT_LABEL_TTA
from pom_common.errors import InputError, ModelError
from pom_common.layout import ProjectLayout
from pom_common.netunit import check_export
from pom_inference import load_model
from pom_inference.predict import predict_slices

from ..data.phase1 import Phase1Data
from ..data.phase2 import Phase2Labels

#: Gaussian smoothing of the joint label channels (pixels), as Pom does.
LABEL_SIGMA = 1.5
#: Crops per ONNX Runtime call while the single networks predict.
PREDICTION_BATCH = 64


@dataclass(frozen=True)
class Crops:
    """The crops the joint labels are made on: inputs, own labels, and which feature each came from."""

    x: np.ndarray  # (N, h, w, C)
    own: np.ndarray  # (N, h, w) the crop's own label (0..1)
    source: np.ndarray  # (N,) index of the crop's feature in ontologies (-1: an extra crop, no own feature)
    codes: np.ndarray | None  # (N, h, w) painted codes, when read


def select_crops(data: Phase1Data, selective: bool) -> Crops:
    """Every feature's crops in ontology order (only those with annotated pixels when ``selective``)."""
    xs, ys, src, codes = [], [], [], []
    for j, o in enumerate(data.ontologies):
        x, y, c = data.x[o], data.y[o], data.codes.get(o)
        if selective:
            keep = y.reshape(len(y), -1).sum(axis=1) > 0
            x, y = x[keep], y[keep]
            c = c[keep] if c is not None else None
        xs.append(x)
        ys.append(y)
        src.append(np.full(len(y), j))
        if c is not None:
            codes.append(c)
    return Crops(np.concatenate(xs), np.concatenate(ys), np.concatenate(src), np.concatenate(codes) if codes else None)


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


def single_network_predictions(config: ProjectConfig, x: np.ndarray, device: int | None,
                               progress: bool) -> np.ndarray:
    """(N, h, w, K): every ontology's single network (``models/phase1/<feature>.onnx``) on every crop.

    Raises
    ------
    ModelError
        A network is missing, unusable, or expects other channels than the configuration's.
    """
    layout = ProjectLayout.of(config)
    predictions = np.zeros((*x.shape[:3], len(config.ontologies)), dtype=np.float32)
    for j, o in enumerate(tqdm(config.ontologies, desc="single models", unit="model", disable=None if progress else True)):
        model = load_model(layout.single_model(o), device=device, quiet=True)
        check_export(model.path, model.info.training, f"pom export -o {shlex.quote(o)}")
        if tuple(model.info.channels) != tuple(config.macromolecules):
            raise ModelError(f"{model.path}: expects channels {list(model.info.channels)}, the configuration "
                             f"lists {list(config.macromolecules)}; retrain it")
        predictions[..., j] = predict_slices(model.run, x, model.info.size_multiple, tta=JOINT_LABEL_TTA,
                                             batch=PREDICTION_BATCH)[..., 0]
    return predictions


def distilled_labels(config: ProjectConfig, crops: Crops, base_images: int, device: int | None,
                     progress: bool) -> Phase2Labels:
    """Pom's joint labels of ``crops`` from the single networks' predictions (before any paint).

    Raises
    ------
    InputError
        There are no crops.
    """
    if len(crops.x) == 0:
        raise InputError(f"{ProjectLayout.of(config).phase1}: no annotated training images")
    predictions = single_network_predictions(config, crops.x, device, progress)
    one_hot = joint_labels(crops.own, crops.source, predictions, config.shared_model_unknown_class_threshold)
    return Phase2Labels(crops.x, one_hot, base_images)
