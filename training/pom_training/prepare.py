"""The steps that make training data: ``pom single initialize`` and ``pom shared initialize``.

The configuration's label method (:mod:`.labels.registry`) decides what the joint labels are;
the stacks are written in Pom's layout (:mod:`.data`).
"""

from __future__ import annotations

from typing import Any

from pom_common.config import ProjectConfig

from .data.phase2 import write_phase2
from .data.report import Phase1Report
from .data.sampling import phase1_initialize
from .labels.registry import method_for


def initialize_phase1(config: ProjectConfig, progress: bool = True) -> Phase1Report:
    """``pom single initialize``: sample every ``.scns`` in tomogram_dir into the phase-1 stacks.

    Raises
    ------
    ConfigError
        The label method cannot work with the configuration, or a setting drops every box.
    InputError
        Nothing could be sampled.
    """
    method_for(config).check_config(config)
    return phase1_initialize(config, progress=progress)


def initialize_phase2(config: ProjectConfig, selective: bool = True, device: int | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """``pom shared initialize``: the phase-2 stacks by ``config.label_method``; a summary dict.

    "pom" and "painted" apply every single network to the phase-1 images (only those with
    annotated pixels when ``selective``); "direct" needs no network and takes every crop
    with a painted pixel.
    """
    method = method_for(config)
    return write_phase2(config, method.joint_labels(config, selective, device, progress), method.name)
