"""``pom``: Pom's commands (init, single ..., shared ...) over the project configuration.

``pom --help``, ``pom init`` and ``pom shared process`` work without TensorFlow; training
commands import it when they run and say which extra to install when it is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from pom_common.cli import Extra, OneLineParser, add_gpus_option, run_cli
from pom_common.config import ProjectConfig, init_project, load_config, parse_gpus
from pom_common.constants import CONFIG_FILENAME
from pom_common.errors import ConfigError, InputError, PomError
from pom_common.layout import ProjectLayout

logger = logging.getLogger("pom")

#: Pom's spelling of the GPU option (one dash, as in Pom), and the long one.
POM_GPUS = ("-gpus", "--gpus")
#: What training commands need beyond the inference install.
TRAIN_EXTRA = Extra("training", "pip install 'pom-onnx[train]'",
                    ("tensorflow", "tf2onnx", "onnx", "tifffile", "keras", "scipy", "PIL"))


def _bool01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def build_parser() -> argparse.ArgumentParser:
    """The ``pom`` argument parser (Pom's options, plus ``export`` and ``preview``)."""
    parser = OneLineParser(prog="pom", description="Organelle segmentation of cryo-ET tomograms "
                                     "from Ais annotations (Pom-compatible).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--project", default=".", help="project folder (default: the current folder)")
    sub = parser.add_subparsers(dest="phase")
    sub.add_parser("init", help=f"write a default {CONFIG_FILENAME} here")
    pv = sub.add_parser("preview", help="PNG previews of processed tomograms (output_dir/previews/)")
    pv.add_argument("-folder", "--folder", default=None, help="segmentation folder (default: output_dir)")

    single = sub.add_parser("single", help="one network per feature").add_subparsers(dest="command")
    single.add_parser("initialize", help="sample training images from the .scns annotations")
    train = single.add_parser("train", help="train a single-feature network")
    train.add_argument("-o", "--ontology", help="feature to train (one of ontologies)")
    train.add_argument("-all", "--all", dest="all_features", type=_bool01, default=False, help="1: train every ontology")
    train.add_argument("-c", "--counterexamples", type=_bool01, default=True,
                       help="1 (default): use other features' annotations as counterexamples")
    add_gpus_option(train, POM_GPUS, None, "GPUS in the configuration", "GPUs to train on")
    train.add_argument("-seed", "--seed", type=int, default=0, help="random seed (default 0)")
    for name, what in (("test", "test_dir"), ("process", "tomogram_dir into output_dir")):
        p = single.add_parser(name, help=f"apply a single-feature network to the tomograms in {what}")
        p.add_argument("-o", "--ontology", required=True)
        add_gpus_option(p, POM_GPUS, None, "GPUS in the configuration", "GPU indices, one worker each")
        p.add_argument("-workers", "--workers", type=int, default=1, help="worker processes per GPU (or on the CPU)")

    dr = sub.add_parser("doctor", help="can training and inference use the GPUs? (TensorFlow, ONNX Runtime, CUDA)")
    add_gpus_option(dr, POM_GPUS, None, "GPUS in the configuration, or 0 without one", "GPUs to check")
    dr.add_argument("--json", action="store_true", help="the report as JSON")
    ex = sub.add_parser("export", help="export trained networks (.keras) to ONNX again, without training")
    ex.add_argument("network", nargs="?", choices=("shared",), help="'shared': the shared network")
    ex.add_argument("-o", "--ontology", help="the single network of this feature")
    ex.add_argument("-all", "--all", dest="all_features", type=_bool01, default=False,
                    help="1: the single network of every ontology")

    shared = sub.add_parser("shared", help="one network for all features").add_subparsers(dest="command")
    init = shared.add_parser("initialize", help="build joint labels with the single networks")
    init.add_argument("-selective", "--selective", type=_bool01, default=True,
                      help="1 (default): only images with annotated pixels")
    st = shared.add_parser("train", help="train the shared network")
    add_gpus_option(st, POM_GPUS, None, "GPUS in the configuration", "GPUs to train on")
    st.add_argument("-checkpoint", "--checkpoint", default=None, help="continue training this .keras model")
    st.add_argument("-seed", "--seed", type=int, default=0, help="random seed (default 0)")
    sp = shared.add_parser("process", help="segment every tomogram (run on many servers at once)")
    add_gpus_option(sp, POM_GPUS, None, "GPUS in the configuration", "GPU indices, one worker each")
    sp.add_argument("-workers", "--workers", type=int, default=1, help="worker processes per GPU (or on the CPU)")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--retry-failed", action="store_true")
    sp.add_argument("--dtype", choices=("float32", "uint8"), default="float32")
    ev = sub.add_parser("evaluate", help="Dice and IoU per class against the annotations in test_dir, or --labels")
    ev.add_argument("-m", "--model", default=None, help="ONNX model (default: the shared network)")
    ev.add_argument("-o", "--ontology", default=None, help="evaluate this feature's single network instead")
    ev.add_argument("--labels", action="append", default=[], type=Path,
                    help="dense label volume (.mrc; values named by classes.json beside it); repeatable")
    ev.add_argument("--tomogram", action="append", default=[], type=Path,
                    help="the tomogram of each --labels (default: test_dir/<stem>.mrc)")
    ev.add_argument("--tta", type=int, default=None, help="rotations averaged (default: shared_model_runs_per_volume)")
    ev.add_argument("--json", default=None, type=Path, help="JSON output (default: test_dir/<model>_evaluation.json)")
    return parser


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
            path = init_project(project)
            print(f"Created {path}; edit it (ontologies, macromolecules, folders), then run 'pom single initialize'.")
            return 0
        parser.print_help()
        return 0
    if args.phase == "init":
        path = init_project(project)
        print(f"Created {path}")
        return 0
    if args.phase == "preview":
        from .evaluation.preview import preview_project

        config = _load(args.project)
        pngs = preview_project(config, Path(args.folder) if args.folder else None)
        for png in pngs:
            print(png)
        if not pngs:
            raise InputError(f"{config.output_path}: no processed tomograms to preview")
        return 0
    if args.phase == "export":
        return _export(args, _load(args.project))
    if args.phase == "doctor":
        return _doctor(args)
    if args.phase == "evaluate":
        return _evaluate(args, _load(args.project))
    if getattr(args, "command", None) is None:
        parser.parse_args([args.phase, "--help"])
        return 2
    config = _load(args.project)
    if args.phase == "single":
        return _single(args, config)
    return _shared(args, config)


def _single(args: argparse.Namespace, config: ProjectConfig) -> int:
    if args.command == "initialize":
        from .dataset import phase1_initialize

        report = phase1_initialize(config)
        for line in report.skipped_files:
            print(f"skipped file: {line}")
        for line in report.dropped:
            print(f"dropped box: {line}")
        for line in report.feature_notes():  # not in ontologies ("did you mean ...?"), unnamed
            print(line)
        print(report.table(config.ontologies))
        print(f"Wrote {len(report.written)} stacks to {ProjectLayout.of(config).phase1}")
        return 0
    if args.command == "train":
        features = list(config.ontologies) if args.all_features else [args.ontology]
        if not args.all_features and not args.ontology:
            raise ConfigError("pom single train: give -o FEATURE or -all 1")
        gpus = _gpu_list(args.gpus, config)
        from .export.errors import ExportError
        from .train import TrainConfig, train_single

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
    from .processing import segment_folder_single

    gpus = _gpu_list(args.gpus, config)
    return _report(segment_folder_single(config, args.ontology, test=args.command == "test", gpus=gpus,
                                         workers=args.workers))


def _export(args: argparse.Namespace, config: ProjectConfig) -> int:
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


def _shared(args: argparse.Namespace, config: ProjectConfig) -> int:
    if args.command == "initialize":
        from .shared import phase2_initialize

        phase2_initialize(config, selective=args.selective)
        return 0
    if args.command == "train":
        gpus = _gpu_list(args.gpus, config)
        from .train import TrainConfig, train_shared

        train_shared(config, gpus=gpus, checkpoint=args.checkpoint,
                     tc=dataclasses.replace(TrainConfig.shared(config), seed=args.seed))
        return 0
    from .processing import process_project

    gpus = _gpu_list(args.gpus, config)
    return _report(process_project(config, gpus=gpus, overwrite=args.overwrite, retry_failed=args.retry_failed,
                                   dtype=args.dtype, workers=args.workers))


def _evaluate(args: argparse.Namespace, config: ProjectConfig) -> int:
    """``pom evaluate``: score a model; print the table; 0."""
    from pom_common.layout import evaluation_path

    from .evaluation.evaluate import run_evaluate

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


def _report(result) -> int:
    """Print a processing run's summary; 0 when every tomogram is done, 1 otherwise."""
    from pom_inference.driver import summary

    print("\n".join(summary(result)))
    return 0 if result.ok else 1


def _needs_tensorflow(args: argparse.Namespace) -> bool:
    return args.phase in ("export", "doctor") or getattr(args, "command", None) == "train"


def _doctor(args: argparse.Namespace) -> int:
    """``pom doctor``: can inference and training use the GPUs asked for (or the configuration's)."""
    from .devices import doctor

    gpus = parse_gpus(args.gpus, key="-gpus") if args.gpus is not None else _configured_gpus(args)
    doc, lines, ok = doctor(gpus)
    print(json.dumps(doc, indent=1) if args.json else "\n".join(lines))
    return 0 if ok else 1


def _configured_gpus(args: argparse.Namespace) -> list[int] | None:
    path = Path(args.project) / CONFIG_FILENAME
    return _load(args.project).gpu_list() if path.exists() else [0]


def _prepare(args: argparse.Namespace) -> None:
    if not args.debug and _needs_tensorflow(args):  # TensorFlow's C++ start-up chatter is not for users
        from .devices import import_tensorflow_quietly

        import_tensorflow_quietly()


def main(argv: list[str] | None = None) -> int:
    """``pom``: returns 0, 1 for a failed run, 2 for a usage or configuration error, 130 when interrupted."""
    parser = build_parser()
    return run_cli("pom", parser, argv, lambda args: run(args, parser),
                   device_hint=" (or train and segment on the CPU: -gpus cpu)", prepare=_prepare, extra=TRAIN_EXTRA)


if __name__ == "__main__":
    sys.exit(main())
