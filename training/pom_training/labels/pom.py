"""``label_method`` "pom": Pom's algorithm, as this toolkit always ran it (same data, loop and result).

* A single network for X learns X's own crops (Pom's label, weight 1 everywhere) and, with
  counterexamples (``-c 1``), every other feature's crops that have annotated pixels, as
  not-X where *their* feature is annotated (so only those pixels count).
* ``pom shared initialize``: the joint labels distilled from the single networks (:mod:`.joint`).
* Both networks train Pom's way (:data:`~pom_training.fitting.plan.BEST_EPOCH`): Adam at a
  constant rate, every crop in all 8 rotations/flips each epoch, the best-loss epoch kept;
  the shared network with categorical cross-entropy.
"""

from __future__ import annotations

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout

from ..data.phase1 import load_phase1
from ..data.phase2 import Phase2Data, Phase2Labels
from ..fitting.config import TrainConfig
from ..fitting.job import Job
from ..fitting.plan import BEST_EPOCH, CCE, MASKED_BCE
from .base import LabelMethod
from .joint import distilled_labels, select_crops


def pom_single_dataset(config: ProjectConfig, feature: str, counterexamples: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, h, w, C) and targets (N, h, w, 2) = (label, loss weight) for one feature, as Pom builds them.

    With counterexamples, the other features' images that have annotated pixels join
    with label 0 and weight = their own annotation (so only their annotated pixels count).

    Raises
    ------
    ConfigError
        ``feature`` is not one of the ontologies.
    InputError
        ``feature`` has no phase-1 stacks.
    """
    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    layout = ProjectLayout.of(config)
    available = layout.phase1_features()
    if feature not in available:
        raise InputError(f"no training data for {feature!r} in {layout.phase1} (features with data: "
                         f"{available or 'none'}); annotate it in Ais and run 'pom single initialize'")
    others = [o for o in config.ontologies if o != feature and o in available] if counterexamples else []
    data = load_phase1(config, paint=False, features=[feature, *others])
    y = data.y[feature]
    xs, ys = [data.x[feature]], [np.stack([y, np.ones_like(y)], axis=-1)]
    for o in others:
        oy = data.y[o]
        keep = oy.reshape(len(oy), -1).sum(axis=1) > 0
        if keep.any():
            xs.append(data.x[o][keep])
            ys.append(np.stack([np.zeros_like(oy[keep]), oy[keep]], axis=-1))
    return np.concatenate(xs), np.concatenate(ys)


class PomMethod(LabelMethod):
    """Pom's algorithm: the counterexample rule, joint labels from the single networks, Pom's loop."""

    name = "pom"
    description = "Pom's algorithm: single networks with the counterexample rule, joint labels from their predictions"
    uses_single_networks = True
    smooths_z = False  # Pom's outputs are not smoothed

    def check_config(self, config: ProjectConfig) -> None:
        """Nothing to refuse: Pom's method needs no paint, so a channel may have any name."""

    def single_job(self, config: ProjectConfig, feature: str, counterexamples: bool, tc: TrainConfig) -> Job:
        """Pom's targets for ``feature`` (:func:`pom_single_dataset`), masked BCE, Pom's loop."""
        x, y = pom_single_dataset(config, feature, counterexamples)
        return Job(self.name, x, y, 1, "sigmoid", MASKED_BCE, BEST_EPOCH,
                   metadata={"counterexamples": counterexamples, "images": int(len(x))})

    def joint_labels(self, config: ProjectConfig, selective: bool, device: int | None,
                     progress: bool) -> Phase2Labels:
        """Pom's joint labels on every feature's crops (those with annotated pixels when ``selective``)."""
        crops = select_crops(load_phase1(config, paint=False, features=config.ontologies), selective)
        return distilled_labels(config, crops, len(crops.x), device, progress)

    def shared_job(self, config: ProjectConfig, data: Phase2Data, tc: TrainConfig) -> Job:
        """The joint labels, categorical cross-entropy, Pom's loop."""
        return Job(self.name, data.x, data.y, len(data.classes), "softmax", CCE, BEST_EPOCH,
                   metadata={"images": int(len(data.x))})
