"""Phase 2: joint labels for the shared network.

``label_method`` "pom": distilled from the single networks, as Pom does. "painted": the
same, then every painted pixel takes its painted class. "direct": the painted labels alone
(no single networks; unpainted pixels are all-zero rows, ignored in training).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_text
from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError, ModelError
from pom_common.layout import ProjectLayout

from .dataset import read_stack, write_stack
from .labels import PAINTED, override_joint_labels, read_painted

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
    """Write the phase 2 stacks (Pom's layout) by ``config.label_method``.

    "pom" and "painted" apply every single network to the phase 1 images (only those with
    annotated pixels when ``selective``); "direct" needs no network and takes every crop
    with a painted pixel.
    """
    from tqdm import tqdm

    from pom_inference.predict import predict_slices
    from pom_inference.session import load_model

    if config.label_method == "direct":
        from .painted_training import direct_shared_dataset, load_phase1

        data = load_phase1(config)
        x, one_hot, _ = direct_shared_dataset(data)
        n_extra = 0 if data.extra_codes is None else int(data.extra_codes.reshape(len(data.extra_codes), -1).any(1).sum())
        return _write_phase2(config, x, one_hot, base_images=len(x) - n_extra)
    layout = ProjectLayout.of(config)
    folder = layout.phase1
    xs, ys, src, codes = [], [], [], []
    n_extra = 0
    for j, o in enumerate(config.ontologies):
        y = read_stack(layout.phase1_label(o))
        x = np.stack([read_stack(layout.phase1_stack(o, c)) for c in config.macromolecules], axis=-1)
        c = read_painted(layout.phase1_stack(o, PAINTED)) if config.label_method == "painted" else None
        if selective:
            keep = y.reshape(len(y), -1).sum(axis=1) > 0
            x, y = x[keep], y[keep]
            c = c[keep] if c is not None else None
        xs.append(x)
        ys.append(y)
        src.append(np.full(len(y), j))
        if c is not None:
            codes.append(c)
    if config.label_method == "painted":  # the extra crops: no own feature, their paint only
        from .painted_training import load_phase1

        data = load_phase1(config)
        if data.extra_x is not None and data.extra_codes is not None:
            n_extra = len(data.extra_x)
            xs.append(data.extra_x)
            ys.append(np.zeros(data.extra_codes.shape, np.float32))
            src.append(np.full(len(data.extra_codes), -1))
            codes.append(data.extra_codes)
    x, own, source = np.concatenate(xs), np.concatenate(ys), np.concatenate(src)
    base_images = len(x) - n_extra
    if len(x) == 0:
        raise InputError(f"{folder}: no annotated training images")
    predictions = np.zeros((*own.shape, len(config.ontologies)), dtype=np.float32)
    for j, o in enumerate(tqdm(config.ontologies, desc="single models", unit="model", disable=None if progress else True)):
        model = load_model(layout.single_model(o), device=device, quiet=True)
        if tuple(model.info.channels) != tuple(config.macromolecules):
            raise ModelError(f"{model.path}: expects channels {list(model.info.channels)}, the configuration "
                             f"lists {list(config.macromolecules)}; retrain it")
        predictions[..., j] = predict_slices(model.run, x, model.info.size_multiple, tta=8, batch=64)[..., 0]
    one_hot = joint_labels(own, source, predictions, config.shared_model_unknown_class_threshold)
    if codes:
        one_hot = override_joint_labels(one_hot, np.concatenate(codes))
    return _write_phase2(config, x, one_hot, base_images)


def phase2_info_path(config: ProjectConfig) -> Path:
    """``training_datasets/phase2/info.json``: how the phase 2 stacks were made."""
    return ProjectLayout.of(config).phase2 / "info.json"


def read_phase2_info(config: ProjectConfig) -> dict:
    """The phase 2 ``info.json`` ({} when absent or unreadable: stacks made by Pom or an older version)."""
    try:
        info = json.loads(phase2_info_path(config).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_phase2_method(config: ProjectConfig, info: dict) -> None:
    """Refuse to train on phase 2 stacks made by another ``label_method`` than the configuration's.

    Stacks without ``info.json`` were made by Pom (or a version before the label methods),
    that is by "pom".

    Raises
    ------
    InputError
        The stacks' method is not ``config.label_method``; the message names both fixes.
    """
    made = info.get("label_method", "pom")
    if made == config.label_method:
        return
    by = "by Pom's method (no info.json: Pom or an older version made them)" if "label_method" not in info else \
        f"with label_method {made!r}"
    raise InputError(f"{phase2_info_path(config).parent}: the phase 2 stacks were made {by}, the configuration's "
                     f"label_method is {config.label_method!r}: run 'pom shared initialize' again (after 'pom single "
                     f"initialize' for painted labels), or set \"label_method\": {json.dumps(made)} in "
                     "project_configuration.json to train on them as they are")


def _write_phase2(config: ProjectConfig, x: np.ndarray, one_hot: np.ndarray, base_images: int) -> dict:
    """Write ``in_<channel>.tif``, ``out_<class>.tif`` and ``info.json``; a summary dict.

    ``base_images`` is how many of the images are Pom's crops (the first ones); the rest
    are extra crops, which enlarge the pool an epoch draws from, not the epoch.
    """
    layout = ProjectLayout.of(config)
    out = layout.phase2
    os.makedirs(out, exist_ok=True)
    for c, channel in enumerate(config.macromolecules):
        write_stack(layout.phase2_input(channel), list(x[..., c]))
    classes = (*config.ontologies, UNKNOWN)  # a new tuple: the configuration is not touched
    for k, name in enumerate(classes):
        write_stack(layout.phase2_output(name), list(one_hot[..., k]))
    counts = {name: int(one_hot[..., k].sum()) for k, name in enumerate(classes)}
    atomic_write_text(phase2_info_path(config), json.dumps(
        {"label_method": config.label_method, "images": int(len(x)), "base_images": int(base_images)}) + "\n")
    logger.info("phase 2 (%s): %d images of %dx%d (%d extra crops); pixels per class %s; written to %s",
                config.label_method, len(x), x.shape[1], x.shape[2], len(x) - base_images, counts, out)
    return {"images": int(len(x)), "base_images": int(base_images), "pixels": counts}
