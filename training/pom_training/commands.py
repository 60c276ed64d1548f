"""What each ``pom`` command does with its parsed arguments: the command entry of the training package.

This is the one module that imports inside functions: each command imports the sub-packages
that need the training extra (TensorFlow, ONNX, tifffile, scipy, Pillow) when it runs, so
``pom --help``, ``pom init`` and the processing commands work with the inference install alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from pom_common.config import CPU, ProjectConfig, init_project, load_config, parse_gpus
from pom_common.constants import CONFIG_FILENAME
from pom_common.errors import ConfigError, PomError, UsageError
from pom_common.layout import ProjectLayout, evaluation_path
from pom_inference.driver import RunResult, summary
from pom_inference.gpu import diagnose
from pom_inference.nvidia import NO_DRIVER, has_driver

from .doctor import TRAIN_INSTALL, doctor_report
from .evaluation.evaluate import run_evaluate
from .processing import process_project, segment_folder_single


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and let it probe for GPUs with its C++ start-up messages discarded.

    TensorFlow's C++ logging (abseil) writes to file descriptor 2 before Python can set a
    level ("Could not find cuda drivers", "oneDNN custom operations are on", ...), and
    TF_CPP_MIN_LOG_LEVEL does not silence all of it. Users see them with ``--debug``. Python
    exceptions still propagate; only what TensorFlow's C++ code prints meanwhile is dropped.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _init(project: Path) -> Path:
    """``pom init``: Pom's defaults, with ``"GPUS": "cpu"`` on a machine without an NVIDIA driver (said)."""
    if has_driver():
        return init_project(project)
    path = init_project(project, gpus=CPU)
    print(f'GPUS: "cpu" (no GPU on this machine: {NO_DRIVER})')
    return path


def needs_tensorflow(args: argparse.Namespace) -> bool:
    """Whether the parsed command imports TensorFlow (training, export, doctor)."""
    return args.phase in ("export", "doctor") or getattr(args, "command", None) == "train"


def _load(project: str) -> ProjectConfig:
    return load_config(Path(project) / CONFIG_FILENAME)


def _gpu_list(option: str | None, config: ProjectConfig) -> list[int] | None:
    """GPU indices from -gpus, else from the configuration's GPUS; None for the CPU ('cpu')."""
    return parse_gpus(option, key="-gpus") if option is not None else config.gpu_list()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed command; returns the exit code (errors raise :class:`PomError`)."""
    project = Path(args.project)
    if args.phase is None:
        if not (project / CONFIG_FILENAME).exists():  # as Pom does: a bare run creates the configuration
            path = _init(project)
            print(f"Created {path}; edit it (ontologies, macromolecules, folders), then run 'pom single initialize'.")
            return 0
        parser.print_help()
        return 0
    if args.phase == "init":
        print(f"Created {_init(project)}")
        return 0
    if args.phase == "doctor":
        return doctor(args)
    if args.phase == "view":
        try:
            from .view import view
        except ImportError as exc:
            raise ConfigError(f"pom view needs napari ({exc.name} is missing): pip install 'pom-onnx[napari]'") from None
        return view(project, args.tomogram, args.screenshot)
    if args.phase in ("preview", "export", "evaluate"):
        return {"preview": preview, "export": export, "evaluate": evaluate}[args.phase](args, _load(args.project))
    if getattr(args, "command", None) is None:
        parser.parse_args([args.phase, "--help"])
        return 2
    config = _load(args.project)
    handlers = {"initialize": single_initialize, "train": single_train, "test": single_process,
                "process": single_process} if args.phase == "single" else \
        {"initialize": shared_initialize, "train": shared_train, "process": shared_process}
    return handlers[args.command](args, config)


# ----------------------------------------------------------------------------- single


def single_initialize(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom single initialize``: the phase-1 stacks, and a table of what was sampled."""
    from .prepare import initialize_phase1

    report = initialize_phase1(config)
    for line in report.skipped_files:
        print(f"skipped file: {line}")
    for line in report.dropped:
        print(f"dropped box: {line}")
    for line in report.feature_notes():  # not in ontologies ("did you mean ...?"), unnamed
        print(line)
    print(report.table(config.ontologies))
    print(f"Wrote {len(report.written)} stacks to {ProjectLayout.of(config).phase1}")
    return 0


def single_train(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom single train -o FEATURE | -all 1``: a failed export does not stop the other features."""
    features = list(config.ontologies) if args.all_features else [args.ontology]
    if not args.all_features and not args.ontology:
        raise ConfigError("pom single train: give -o FEATURE or -all 1")
    gpus = _gpu_list(args.gpus, config)
    from .export.errors import ExportError
    from .fitting.config import TrainConfig
    from .labels.registry import method_for
    from .train import train_single

    note = method_for(config).workflow_note()
    if note:
        print(note)

    tc = dataclasses.replace(TrainConfig.single(config), seed=args.seed)
    failed = []
    for feature in features:
        try:
            train_single(config, feature, counterexamples=args.counterexamples, gpus=gpus, tc=tc)
        except ExportError as exc:
            if len(features) == 1:
                raise
            print(f"pom: error: {exc}", file=sys.stderr)  # the other features still train
            failed.append(feature)
    return _export_summary(failed, len(features), "trained (their .keras files are kept), but not exported")


def single_process(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom single test`` (test_dir) and ``pom single process`` (tomogram_dir into output_dir)."""
    gpus = _gpu_list(args.gpus, config)
    return _report(segment_folder_single(config, args.ontology, test=args.command == "test", gpus=gpus,
                                         workers=args.workers))


# ----------------------------------------------------------------------------- shared


def shared_initialize(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom shared initialize``: the phase-2 stacks by the configuration's label method."""
    from .labels.registry import method_for
    from .prepare import initialize_phase2

    note = method_for(config).workflow_note()
    if note:
        print(note)
    initialize_phase2(config, selective=args.selective)
    return 0


def shared_train(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom shared train``: the shared network, from scratch or from ``-checkpoint``."""
    gpus = _gpu_list(args.gpus, config)
    from .fitting.config import TrainConfig
    from .train import train_shared

    train_shared(config, gpus=gpus, checkpoint=args.checkpoint,
                 tc=dataclasses.replace(TrainConfig.shared(config), seed=args.seed))
    return 0


def shared_process(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom shared process``: every tomogram with the shared network (many servers at once)."""
    gpus = _gpu_list(args.gpus, config)
    return _report(process_project(config, gpus=gpus, overwrite=args.overwrite, retry_failed=args.retry_failed,
                                   dtype=args.dtype, workers=args.workers))


def _report(result: RunResult) -> int:
    """Print a processing run's summary; 0 when every tomogram is done, 1 otherwise."""
    print("\n".join(summary(result)))
    return 0 if result.ok else 1


# ----------------------------------------------------------------------------- export, evaluate, preview, doctor


def export(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom export -o FEATURE | -all 1 | shared``: ONNX again from the saved .keras, no training."""
    if sum((args.network is not None, args.ontology is not None, args.all_features)) != 1:
        raise ConfigError("pom export: give one of -o FEATURE, -all 1 or shared")
    from .train import export_shared, export_single

    if args.network == "shared":
        print(f"wrote {export_shared(config)}")
        return 0
    if not args.all_features:
        print(f"wrote {export_single(config, args.ontology)}")
        return 0
    failed = []
    for feature in config.ontologies:
        try:
            print(f"wrote {export_single(config, feature)}")
        except PomError as exc:
            print(f"pom: error: {exc}", file=sys.stderr)  # export the others
            failed.append(feature)
    return _export_summary(failed, len(config.ontologies), "not exported")


def _export_summary(failed: list[str], total: int, what: str) -> int:
    """0 when nothing failed; else one line naming the features and how to export them again, and 1."""
    if not failed:
        return 0
    names = ", ".join(repr(f) for f in failed)
    print(f"pom: error: {len(failed)} of {total} features {what}: {names}; once the cause above is fixed, "
          f"export each with 'pom export -o FEATURE', e.g.: pom export -o {shlex.quote(failed[0])}", file=sys.stderr)
    return 1


def evaluate(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom evaluate``: score a model; print the table; 0."""
    layout = ProjectLayout.of(config)
    if args.model:
        model_path = Path(args.model)
    elif args.ontology:
        if args.ontology not in config.ontologies:
            raise ConfigError(f"-o {args.ontology!r}: not one of the ontologies {list(config.ontologies)}")
        model_path = layout.single_model(args.ontology)
    else:
        model_path = layout.shared_model()
    json_path = args.json or evaluation_path(config.test_path, model_path)
    scores = run_evaluate(config, model_path, labels=args.labels, tomograms=args.tomogram, tta=args.tta,
                          json_path=json_path)
    print(f"{model_path.name} on {', '.join(scores.tomograms)}:")
    print(scores.table())
    print(f"Wrote {json_path}")
    return 0


def preview(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom preview [-o FEATURE]``: one figure per processed tomogram."""
    from .evaluation.preview import preview_project

    folder = Path(args.folder) if args.folder else None
    pngs = preview_project(config, folder, feature=args.ontology)
    for png in pngs:
        print(png)
    if not pngs:
        where = folder or (config.test_path if args.ontology else config.output_path)
        run = f"pom single test -o {shlex.quote(args.ontology)}" if args.ontology else "pom shared process"
        raise UsageError(f"{where}: no processed tomograms to preview (run {run} first)")
    return 0


def doctor(args: argparse.Namespace) -> int:
    """``pom doctor``: can inference and training use the GPUs asked for (or the configuration's)."""
    if args.gpus is not None:
        gpus = parse_gpus(args.gpus, key="-gpus")
    else:
        gpus = _load(args.project).gpu_list() if (Path(args.project) / CONFIG_FILENAME).exists() else [0]
    inference = diagnose(gpus)
    try:
        import_tensorflow_quietly()
        from .fitting.devices import cause, tensorflow_report

        tf_report = tensorflow_report()
        problem = None if gpus is None else cause(tf_report, gpus)
    except ImportError as exc:
        tf_report, problem = {"tensorflow": None, "error": f"not installed ({exc.name}): {TRAIN_INSTALL}"}, None
    doc, lines, ok = doctor_report(inference, gpus, tf_report, problem)
    print(json.dumps(doc, indent=1) if args.json else "\n".join(lines))
    return 0 if ok else 1
