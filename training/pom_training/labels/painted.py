"""``label_method`` "painted": every painted pixel teaches; paint overrides the joint labels.

* A single network for feature X learns X where X is painted (on every crop, not only X's
  own), not-X where another feature is painted, and ignores unpainted pixels; inside X's own
  boxes Pom's target stays (the box is complete for X).
* ``pom shared initialize``: Pom's joint labels from the single networks, then every painted
  pixel takes its painted class; the extra crops (``phase1/extra/``) join with their paint.
* Both networks train for stability (:data:`~pom_training.fitting.plan.STABLE`): a seed fixes
  the result, a cosine schedule ends at zero and the last epoch is kept, and an epoch is 8
  seeded draws per Pom crop, each in one of the 8 rotations/flips; the shared network draws
  from the crops *and* the extra crops, unlabelled pixels ignored by its loss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import CONFIG_FILENAME
from pom_common.errors import ConfigError, InputError
from pom_common.layout import PAINTED, ProjectLayout

from ..data.info import phase1_info
from ..data.painted import has_paint
from ..data.phase1 import Phase1Data, load_phase1
from ..data.phase2 import Phase2Data, Phase2Labels
from ..data.sampling import painted_channel
from ..fitting.config import TrainConfig
from ..fitting.job import Job
from ..fitting.plan import MASKED_BCE, MASKED_CCE, STABLE
from .base import LabelMethod
from .joint import Crops, distilled_labels, select_crops
from .targets import override_joint_labels, single_targets

logger = logging.getLogger(__name__)

#: The method to name when paint cannot be had: Pom's, which needs none.
WITHOUT_PAINT = "pom"


def load_painted(config: ProjectConfig, features: Sequence[str] | None = None) -> Phase1Data:
    """The phase-1 stacks with their painted code maps and the extra crops.

    Raises
    ------
    InputError
        No stacks, or painted labels missing or recorded for other ontologies (the message
        says to run ``pom single initialize`` again), or stacks out of step.
    """
    layout = ProjectLayout.of(config)
    info = phase1_info(config)
    recorded = info.get("painted_classes")
    if recorded != list(config.ontologies):
        what = "were not recorded" if recorded is None else f"were recorded for ontologies {recorded}"
        raise InputError(f"{layout.phase1_info}: painted labels {what}; label_method "
                         f"{config.label_method!r} needs them for {list(config.ontologies)}: run "
                         "'pom single initialize' again (or set \"label_method\": "
                         f"{json.dumps(WITHOUT_PAINT)} in {CONFIG_FILENAME} for Pom's method)")
    recorded_extra = info.get("extra_crops")
    data = load_phase1(config, paint=True, features=features, extra=bool(recorded_extra))
    if not data.x:
        raise InputError(f"{layout.phase1}: no phase-1 stacks; run 'pom single initialize' first")
    if data.extra_codes is not None and (not isinstance(recorded_extra, list)
                                         or len(data.extra_codes) != len(recorded_extra)):
        recorded_n = len(recorded_extra) if isinstance(recorded_extra, list) else recorded_extra
        raise InputError(f"{layout.phase1_extra(PAINTED)}: {len(data.extra_codes)} extra crops, "
                         f"{layout.phase1_info.name} records {recorded_n!r}; run 'pom single initialize' again")
    return data


def painted_single_dataset(data: Phase1Data, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, h, w, C) and targets (N, h, w, 2) = (label, weight) of ``feature``'s network.

    Every crop of ``feature`` first (Pom's target), then every other crop with a painted
    pixel (:func:`.targets.single_targets`), in ontology order.

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
            keep = has_paint(codes)
            if not keep.any():
                continue
        else:
            keep = np.ones(len(codes), bool)
        is_own = np.full(int(keep.sum()), o == feature)
        xs.append(data.x[o][keep])
        ts.append(single_targets(data.y[o][keep], codes[keep], is_own, code))
    return np.concatenate(xs), np.concatenate(ts)


def stable_metadata(name: str, tc: TrainConfig, images: int) -> dict[str, object]:
    """What a network trained with the stable plan records: the method, the seed, the images, the draws."""
    return {"label_method": name, "seed": tc.seed, "images": images, "augment": tc.augment,
            "min_draws": tc.min_draws}


class PaintedMethod(LabelMethod):
    """Every painted pixel teaches the single networks; paint overrides the joint labels."""

    name = "painted"
    description = "single networks learn every painted label; painted labels override the joint labels"
    uses_single_networks = True

    def check_config(self, config: ProjectConfig) -> None:
        """Refuse a channel whose stacks would be the painted-label stacks."""
        clash = painted_channel(config)
        if clash:
            raise ConfigError(f"{config.path(CONFIG_FILENAME)}: 'macromolecules' has a channel named {clash!r}, "
                              f"whose stacks would be the painted-label stacks that label_method "
                              f"{config.label_method!r} needs; rename the channel (its files too), or set "
                              f"\"label_method\": {json.dumps(WITHOUT_PAINT)}")

    def single_job(self, config: ProjectConfig, feature: str, counterexamples: bool, tc: TrainConfig) -> Job:
        """Painted targets for ``feature`` (:func:`painted_single_dataset`), masked BCE, the stable plan."""
        if feature not in config.ontologies:
            raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
        if not counterexamples:
            logger.info("-c 0 does not apply to label_method %r: every painted label is used", config.label_method)
        x, y = painted_single_dataset(load_painted(config), feature)
        return Job(self.name, x, y, 1, "sigmoid", MASKED_BCE, STABLE, metadata=stable_metadata(self.name, tc, len(x)))

    def joint_labels(self, config: ProjectConfig, selective: bool, device: int | None,
                     progress: bool) -> Phase2Labels:
        """Pom's joint labels, then paint; the extra crops after Pom's (their paint only)."""
        data = load_painted(config, features=config.ontologies)
        crops = select_crops(data, selective)
        n_base, codes = len(crops.x), crops.codes
        assert codes is not None  # read with the paint
        if data.extra_x is not None and data.extra_codes is not None:  # no own feature: their paint only
            codes = np.concatenate([codes, data.extra_codes])
            crops = Crops(np.concatenate([crops.x, data.extra_x]),
                          np.concatenate([crops.own, np.zeros(data.extra_codes.shape, np.float32)]),
                          np.concatenate([crops.source, np.full(len(data.extra_codes), -1)]), codes)
        labels = distilled_labels(config, crops, n_base, device, progress)
        return Phase2Labels(labels.x, override_joint_labels(labels.one_hot, codes), labels.base_images)

    def shared_job(self, config: ProjectConfig, data: Phase2Data, tc: TrainConfig) -> Job:
        """The phase-2 targets (unlabelled pixels ignored), masked categorical cross-entropy, the stable plan.

        An epoch is 8 draws per Pom crop (``base_images`` in the record), from the pool of
        every crop and extra crop.
        """
        base = data.info.get("base_images")
        base = int(base) if isinstance(base, int) and 0 < base <= len(data.x) else None
        return Job(self.name, data.x, data.y, len(data.classes), "softmax", MASKED_CCE, STABLE, base=base,
                   metadata={**stable_metadata(self.name, tc, len(data.x)), "base_images": base})
