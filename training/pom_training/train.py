"""The steps that make networks: ``pom single train``, ``pom shared train``, ``pom export``.

Each trains what the configuration's label method (:mod:`.labels.registry`) says, with the
one loop (:mod:`.fitting`), and writes the ``.keras`` file, its metadata and the checked
``.onnx`` (:mod:`.export`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout

from .data.info import training_voxel_size
from .data.phase2 import load_phase2
from .export.exporter import export_saved, save_and_export
from .export.metadata import model_metadata
from .fitting.config import TrainConfig
from .fitting.network import train_network
from .labels.registry import check_made_by, method_for
from .models.ensemble import average

#: Member i of an ensemble trains with seed ``seed + MEMBER_SEED_STEP * i`` (member 0: the seed itself).
MEMBER_SEED_STEP = 1000


def train_single(config: ProjectConfig, feature: str, counterexamples: bool = True, gpus: list[int] | None = None,
                 tc: TrainConfig | None = None) -> dict[str, Any]:
    """Train, save and export the network of one feature. Returns a summary dict.

    ``counterexamples`` is Pom's ``-c`` (its method only: the painted-label methods use every
    painted label).

    Raises
    ------
    ConfigError
        ``feature`` is not an ontology, or the crops do not fit the network's depth.
    InputError
        No data for ``feature``.
    ExportError
        The export failed (the ``.keras`` file is kept; the message says how to export again).
    """
    tc = tc or TrainConfig.single(config)
    job = method_for(config).single_job(config, feature, counterexamples, tc)
    voxel_size = training_voxel_size(config)
    layout = ProjectLayout.of(config)
    checkpoint = layout.single_checkpoint(feature)
    model, losses = train_network(job, tc, gpus, checkpoint, feature)
    keras_path = layout.single_model(feature, ".keras")
    meta = model_metadata(config, kind="single", classes=(feature,), tc=tc, voxel_size=voxel_size,
                          extra={**job.metadata, "losses": losses})
    onnx_path = save_and_export(model, keras_path, layout.single_model(feature), checkpoint, meta,
                                f"pom export -o {shlex.quote(feature)}")
    return {"losses": losses, "keras": keras_path, "onnx": onnx_path}


def train_shared(config: ProjectConfig, gpus: list[int] | None = None, checkpoint: str | os.PathLike | None = None,
                 tc: TrainConfig | None = None) -> dict[str, Any]:
    """Train, save and export the shared network (ontologies + Unknown, softmax). Returns a summary dict.

    ``checkpoint`` continues from a saved ``.keras`` model.

    Raises
    ------
    InputError
        The phase-2 stacks are missing, unusable, or made by another label method.
    ExportError
        The export failed (the ``.keras`` file is kept; the message says how to export again).
    """
    tc = tc or TrainConfig.shared(config)
    data = load_phase2(config)
    check_made_by(config, data.info)
    method = method_for(config)
    job = method.shared_job(config, data, tc)
    voxel_size = training_voxel_size(config)
    layout = ProjectLayout.of(config)
    n = 1 if checkpoint else max(1, tc.members)  # continuing: the one network given
    seeds = [tc.seed + MEMBER_SEED_STEP * i for i in range(n)]
    nets, member_losses = [], []
    for i, member_seed in enumerate(seeds):
        net, net_losses = train_network(job, dataclasses.replace(tc, seed=member_seed), gpus,
                                        layout.shared_checkpoint(), "shared" if n == 1 else f"shared {i + 1}/{n}",
                                        start=checkpoint)
        nets.append(net)
        member_losses.append(net_losses)
    model = average(nets)
    losses = [float(v) for v in np.mean(member_losses, axis=0)]
    ensemble = {} if n == 1 else {"members": n, "member_seeds": seeds, "member_losses": member_losses}
    meta = model_metadata(config, kind="shared", classes=data.classes, tc=tc, voxel_size=voxel_size,
                          extra={**job.metadata, "losses": losses, "continued_from": checkpoint, **ensemble},
                          z_smooth=config.shared_model_z_smooth if method.smooths_z else 1)
    onnx_path = save_and_export(model, layout.shared_model(".keras"), layout.shared_model(), layout.shared_checkpoint(),
                                meta, "pom export shared")
    return {"losses": losses, "keras": layout.shared_model(".keras"), "onnx": onnx_path}


def export_single(config: ProjectConfig, feature: str) -> Path:
    """``pom export -o FEATURE``: export ``models/phase1/<feature>.keras`` again, without training.

    Raises
    ------
    ConfigError
        ``feature`` is not one of the ontologies.
    InputError
        The feature has no trained network.
    ModelError
        The network or its metadata cannot be read, or the export fails.
    """
    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    layout = ProjectLayout.of(config)
    keras_path = layout.single_model(feature, ".keras")
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained network for {feature!r}; train it with: "
                         f"pom single train -o {shlex.quote(feature)}")
    return export_saved(keras_path, layout.single_model(feature))


def export_shared(config: ProjectConfig) -> Path:
    """``pom export shared``: export ``models/phase2/shared.keras`` again, without training.

    Raises
    ------
    InputError
        There is no trained shared network.
    ModelError
        The network or its metadata cannot be read, or the export fails.
    """
    layout = ProjectLayout.of(config)
    keras_path = layout.shared_model(".keras")
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained shared network; train it with: pom shared train")
    return export_saved(keras_path, layout.shared_model())
