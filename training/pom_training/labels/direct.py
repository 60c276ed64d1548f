"""``label_method`` "direct" (the default): the shared network learns the painted labels alone.

No single networks: ``pom shared initialize`` takes every crop and extra crop with a painted
pixel, one-hot on painted pixels and all zero on unpainted ones (ignored by the loss). The
shared network trains as "painted" does (:mod:`.painted`), and so do single networks if asked for.
"""

from __future__ import annotations

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError

from ..data.painted import has_paint
from ..data.phase1 import Phase1Data
from ..data.phase2 import Phase2Labels
from .painted import PaintedMethod, load_painted
from .targets import one_hot


def direct_shared_dataset(data: Phase1Data) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Inputs (N, h, w, C) and targets (N, h, w, K + 1) for the shared network, from paint alone.

    Every crop with a painted pixel, the extra crops included; targets are one-hot on
    painted pixels and all zero on unpainted ones (ignored by the masked categorical
    cross-entropy). The last class, Unknown, is never a target; it is kept so the network's
    classes are the usual ones.

    Raises
    ------
    InputError
        No crop has a painted pixel.
    """
    classes = (*data.ontologies, UNKNOWN)
    xs, ts = [], []
    groups = [(data.x[o], data.codes[o]) for o in data.features]
    if data.extra_x is not None and data.extra_codes is not None:
        groups.append((data.extra_x, data.extra_codes))
    for x, codes in groups:
        keep = has_paint(codes)
        xs.append(x[keep])
        ts.append(one_hot(codes[keep], len(classes) - 1))
    x = np.concatenate(xs)
    t = np.concatenate(ts)
    t = np.concatenate([t, np.zeros((*t.shape[:3], 1), np.float32)], axis=-1)  # Unknown
    if len(x) == 0:
        raise InputError("no painted pixels in any phase-1 crop; paint the features in Ais")
    return x, t, classes


class DirectMethod(PaintedMethod):
    """The shared network learns the paint alone; single networks, if trained, as "painted"."""

    name = "direct"
    description = "the shared network learns the painted labels alone (no single networks)"
    uses_single_networks = False

    def joint_labels(self, config: ProjectConfig, selective: bool, device: int | None,
                     progress: bool) -> Phase2Labels:
        """Every crop with paint, one-hot where painted; no network involved (``selective`` and ``device`` unused)."""
        data = load_painted(config)
        x, targets, _ = direct_shared_dataset(data)
        n_extra = 0 if data.extra_codes is None else int(has_paint(data.extra_codes).sum())
        return Phase2Labels(x, targets, base_images=len(x) - n_extra)
