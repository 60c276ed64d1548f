"""The phase-2 stacks: the shared network's inputs and joint labels, and their record.

``training_datasets/phase2/in_<channel>.tif``, ``out_<class>.tif`` (one-hot, or all zero
where a pixel is not labelled) and ``info.json`` (which label method made them; the first
``base_images`` images are Pom's crops, the rest extra crops).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.atomic import atomic_folder
from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError
from pom_common.layout import ProjectLayout

from .info import phase1_info, phase2_info, write_info
from .stacks import PHASE2_STEP, read_stack, write_stack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase2Labels:
    """Joint labels as a label method builds them, before they are written."""

    x: np.ndarray  # (N, h, w, C) network inputs
    one_hot: np.ndarray  # (N, h, w, K + 1) one-hot targets, all zero where unlabelled; the last class is Unknown
    base_images: int  # the first base_images are Pom's crops; the rest extra crops


@dataclass(frozen=True)
class Phase2Data:
    """The phase-2 stacks as read back, with their record ({} when Pom made them)."""

    x: np.ndarray  # (N, h, w, C)
    y: np.ndarray  # (N, h, w, K + 1)
    classes: tuple[str, ...]  # ontologies + Unknown
    info: dict[str, Any]


def load_phase2(config: ProjectConfig) -> Phase2Data:
    """Phase 2 inputs (N, h, w, C) and one-hot targets (N, h, w, K); K = ontologies + Unknown.

    Raises
    ------
    InputError
        A stack missing or unreadable, inputs and targets of different sizes, or an unreadable record.
    """
    layout = ProjectLayout.of(config)
    classes = (*config.ontologies, UNKNOWN)
    x = np.stack([read_stack(layout.phase2_input(c), PHASE2_STEP) for c in config.macromolecules], axis=-1)
    y = np.stack([read_stack(layout.phase2_output(o), PHASE2_STEP) for o in classes], axis=-1)
    if x.shape[:3] != y.shape[:3]:
        raise InputError(f"{layout.phase2}: in_*.tif {x.shape[:3]} and out_*.tif {y.shape[:3]} differ")
    info = phase2_info(config)
    check_phase1_unchanged(config, info)
    return Phase2Data(x, y, classes, info)


def check_phase1_unchanged(config: ProjectConfig, info: dict[str, Any]) -> None:
    """Refuse phase-2 stacks made from another phase 1 than the one there now (annotations sampled again since).

    Raises
    ------
    InputError
        Naming both records and the step to run again.
    """
    made_from = info.get("phase1_build")
    now = phase1_info(config).get("build")
    if made_from is not None and now is not None and made_from != now:
        layout = ProjectLayout.of(config)
        raise InputError(f"{layout.phase2_info}: phase 2 was built from an earlier phase 1 ({layout.phase1_info} "
                         f"was written again since, by 'pom single initialize'); run 'pom shared initialize' again")


def write_phase2(config: ProjectConfig, labels: Phase2Labels, label_method: str) -> dict[str, Any]:
    """Write ``in_<channel>.tif``, ``out_<class>.tif`` and ``info.json``; a summary dict.

    ``labels.base_images`` is how many of the images are Pom's crops (the first ones); the
    rest are extra crops, which enlarge the pool an epoch draws from, not the epoch.
    """
    x, one_hot, base_images = labels.x, labels.one_hot, labels.base_images
    layout = ProjectLayout.of(config)
    out = layout.phase2
    classes = (*config.ontologies, UNKNOWN)  # a new tuple: the configuration is not touched
    os.makedirs(out.parent, exist_ok=True)
    with atomic_folder(out) as build:  # phase2/ is replaced as a whole: a killed run leaves the previous set

        def aside(path: Path) -> Path:
            return build / path.relative_to(out)

        for c, channel in enumerate(config.macromolecules):
            write_stack(aside(layout.phase2_input(channel)), list(x[..., c]))
        for k, name in enumerate(classes):
            write_stack(aside(layout.phase2_output(name)), list(one_hot[..., k]))
        write_info(aside(layout.phase2_info), {"label_method": label_method, "images": int(len(x)),
                                               "base_images": int(base_images),
                                               "phase1_build": phase1_info(config).get("build")})
    counts = {name: int((one_hot[..., k] > 0).sum()) for k, name in enumerate(classes)}  # -1: "not this"
    logger.info("phase 2 (%s): %d images of %dx%d (%d extra crops); pixels per class %s; written to %s",
                label_method, len(x), x.shape[1], x.shape[2], len(x) - base_images, counts, out)
    return {"images": int(len(x)), "base_images": int(base_images), "pixels": counts}
