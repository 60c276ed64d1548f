"""``label_method`` "direct" (the default): the shared network learns the painted labels and what the boxes exclude.

No single networks: ``pom shared initialize`` takes every crop and extra crop with a painted
pixel or a box in it. Targets: one-hot on painted pixels; -w for each class a pixel is known
not to be (inside a box of that class, not painted with it: Pom's rule that a box is complete
for its feature, :mod:`.negatives`; w the configuration's ``shared_model_negative_weight``,
the weight of such a pixel in the loss); 0 elsewhere (ignored by the loss). The shared network
learns them with the partial cross-entropy (the stable plan, as "painted"); single networks,
if asked for, train as "painted" does (:mod:`.painted`).
"""

from __future__ import annotations

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError

from ..data.info import phase1_info
from ..data.phase1 import Phase1Data
from ..data.phase2 import Phase2Data, Phase2Labels
from ..fitting.config import TrainConfig
from ..fitting.job import Job
from ..fitting.plan import PARTIAL_CCE, STABLE
from .negatives import box_index, not_masks
from .painted import PaintedMethod, load_painted, stable_metadata
from .targets import one_hot

#: Whether the boxes' negatives ("inside a box of X, not painted X: not X") are targets too.
BOX_NEGATIVES = True


def direct_shared_dataset(data: Phase1Data, info: dict | None = None, box: int = 0,
                          negative_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], int]:
    """Inputs (N, h, w, C), targets (N, h, w, K + 1), the classes, and how many images are Pom's crops (first).

    Every crop with a painted pixel or (with ``info``, phase 1's record of the crops'
    positions, and the ``box`` size) a box's negative, the extra crops included; targets are
    one-hot on painted pixels, ``-negative_weight`` where a class is excluded by its box (the
    loss's weight of that pixel, :func:`~pom_training.models.losses.partial_categorical_crossentropy`),
    0 elsewhere. The
    last class, Unknown, is never a target; it is kept so the network's classes are the
    usual ones.

    Raises
    ------
    InputError
        No crop has a painted pixel.
    """
    classes = (*data.ontologies, UNKNOWN)
    n = len(classes) - 1
    crops = (info or {}).get("crops") or {}
    boxes = box_index(crops, data.ontologies) if info and box else {}
    xs, ts, n_base = [], [], 0
    groups = [(data.x[o], data.codes[o], crops.get(o), True) for o in data.features]
    if data.extra_x is not None and data.extra_codes is not None:
        groups.append((data.extra_x, data.extra_codes, (info or {}).get("extra_crops"), False))
    for x, codes, positions, pom_crops in groups:
        target = one_hot(codes, n)
        if boxes and positions is not None and len(positions) == len(codes):
            excluded = not_masks(positions, codes, boxes, n, box) & (codes == 0)[..., None]
            target = np.where(excluded, np.float32(-negative_weight), target)
        keep = (target != 0).reshape(len(target), -1).any(axis=1)
        xs.append(x[keep])
        ts.append(target[keep])
        n_base += int(keep.sum()) if pom_crops else 0
    x = np.concatenate(xs)
    t = np.concatenate(ts)
    t = np.concatenate([t, np.zeros((*t.shape[:3], 1), np.float32)], axis=-1)  # Unknown
    if len(x) == 0 or not (t > 0).any():
        raise InputError("no painted pixels in any phase-1 crop; paint the features in Ais")
    return x, t, classes, n_base


class DirectMethod(PaintedMethod):
    """The shared network learns the paint and the boxes' negatives; single networks, if trained, as "painted"."""

    name = "direct"
    description = ("the shared network learns the painted labels, and 'not X' inside X's boxes where X is not "
                   "painted (no single networks)")
    uses_single_networks = False

    def joint_labels(self, config: ProjectConfig, selective: bool, device: int | None,
                     progress: bool) -> Phase2Labels:
        """Every crop with paint or a box's negative; no network involved (``selective`` and ``device`` unused)."""
        data = load_painted(config)
        info = phase1_info(config) if BOX_NEGATIVES else None
        x, targets, _, n_base = direct_shared_dataset(data, info, config.ontology_annotation_box_size,
                                                      config.shared_model_negative_weight)
        return Phase2Labels(x, targets, base_images=n_base)

    def shared_job(self, config: ProjectConfig, data: Phase2Data, tc: TrainConfig) -> Job:
        """The phase-2 targets (1 painted, -w excluded, 0 ignored), partial cross-entropy, the stable plan."""
        base = data.info.get("base_images")
        base = int(base) if isinstance(base, int) and 0 < base <= len(data.x) else None
        negatives = data.y[data.y < 0]  # the weight the targets hold (set at "pom shared initialize")
        weight = float(-negatives.min()) if negatives.size else None
        return Job(self.name, data.x, data.y, len(data.classes), "softmax", PARTIAL_CCE, STABLE, base=base,
                   metadata={**stable_metadata(self.name, tc, len(data.x)), "base_images": base,
                             "negative_weight": weight})
