"""Pom's processing commands over a project: ``pom single test/process``, ``pom shared process``.

They know the project layout (which model, which folders) and hand the work to the
inference engine (:mod:`pom_inference.driver`), which needs no TensorFlow.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pom_common.config import ProjectConfig
from pom_common.errors import ConfigError, InputError
from pom_common.layout import ProjectLayout
from pom_common.naming import list_tomograms
from pom_common.netunit import check_export
from pom_inference.checks import check_workers
from pom_inference.driver import RunResult, process
from pom_inference.session import check_gpus, read_model_info
from pom_inference.worker import ProcessOptions


def check_network(model: Path, again: str) -> None:
    """Refuse a project's ``.onnx`` that is older than the ``.keras`` trained beside it (:mod:`pom_common.netunit`).

    Raises
    ------
    ModelError
        Naming both files and the ``pom export`` command (``again``) that makes it again.
    """
    if model.with_suffix(".keras").exists() and model.exists():
        check_export(model, read_model_info(model).training, again)


def _run(config: ProjectConfig, model: Path, source_key: str, output: Path, gpus: list[int] | None,
         overwrite: bool = False, retry_failed: bool = False, dtype: str = "float32", workers: int = 1,
         again: str = "") -> RunResult:
    check_workers(workers)
    check_network(model, again)
    source = config.require_dir(source_key)
    tomograms = list_tomograms(source)
    if not tomograms:
        raise InputError(f"{source}: no tomograms in this folder (looked for *.mrc and *.rec without '__' in the name)")
    opts = ProcessOptions(model=str(model), tomograms=tuple(str(t) for t in tomograms), output_dir=str(output),
                          channel_dirs=(str(config.macromolecule_path),), tta=config.shared_model_runs_per_volume,
                          fallback_voxel_size=config.apix, expect_channels=tuple(config.macromolecules),
                          overwrite=overwrite, retry_failed=retry_failed, dtype=dtype)
    return process(opts, [d for d in check_gpus(gpus) for _ in range(workers)])


def segment_folder_single(config: ProjectConfig, feature: str, test: bool, gpus: list[int] | None,
                          workers: int = 1) -> RunResult:
    """``pom single test`` (test_dir -> test_dir) and ``pom single process`` (tomogram_dir -> output_dir).

    Like Pom, these replace earlier outputs of the same model.

    Raises
    ------
    ConfigError
        ``feature`` is not one of the configuration's ontologies.
    """
    if feature not in config.ontologies:
        raise ConfigError(f"feature {feature!r} is not in ontologies {list(config.ontologies)}")
    model = ProjectLayout.of(config).single_model(feature)
    output = config.test_path if test else config.output_path
    return _run(config, model, "test_dir" if test else "tomogram_dir", output, gpus, overwrite=True, workers=workers,
                again=f"pom export -o {shlex.quote(feature)}")


def process_project(config: ProjectConfig, gpus: list[int] | None, overwrite: bool = False,
                    retry_failed: bool = False, dtype: str = "float32", workers: int = 1) -> RunResult:
    """``pom shared process``: every tomogram in tomogram_dir with the shared model into output_dir."""
    model = ProjectLayout.of(config).shared_model()
    return _run(config, model, "tomogram_dir", config.output_path, gpus, overwrite=overwrite,
                retry_failed=retry_failed, dtype=dtype, workers=workers, again="pom export shared")
