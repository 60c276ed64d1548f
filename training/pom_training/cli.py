"""``pom``: Pom's commands (init, single ..., shared ...) over the project configuration.

This module parses; :mod:`.commands` runs. ``pom --help``, ``pom init`` and ``pom shared
process`` work without TensorFlow; training commands import it when they run and say which
extra to install when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pom_common.cli import DTYPE_HELP, Extra, OneLineParser, add_gpus_option, run_cli
from pom_common.constants import CONFIG_FILENAME
from pom_common.defaults import TTA_RUNS

from .commands import import_tensorflow_quietly, needs_tensorflow, run

#: The program's name, at the start of its error lines.
PROG = "pom"

#: Pom's spelling of the GPU option (one dash, as in Pom), and the long one.
POM_GPUS = ("-gpus", "--gpus")
#: What training commands need beyond the inference install.
TRAIN_EXTRA = Extra("training", "pip install 'pom-onnx[train]'",
                    ("tensorflow", "onnx", "tifffile", "keras", "scipy", "PIL"))


def _bool01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def build_parser() -> argparse.ArgumentParser:
    """The ``pom`` argument parser (Pom's options, plus ``export`` and ``preview``)."""
    parser = OneLineParser(prog=PROG, description="Organelle segmentation of cryo-ET tomograms "
                                     "from Ais annotations (Pom-compatible).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--project", default=".", help="project folder (default: the current folder)")
    sub = parser.add_subparsers(dest="phase")
    sub.add_parser("init", help=f"write a default {CONFIG_FILENAME} here")
    pv = sub.add_parser("preview", help="PNG figures of processed tomograms: density | prediction (| truth | errors), "
                                        "several slices, legend, scale bar (<folder>/previews/)")
    pv.add_argument("-folder", "--folder", default=None,
                    help="segmentation folder (default: output_dir; with -o, test_dir)")
    pv.add_argument("-o", "--ontology", default=None,
                    help="the single network of this feature (the outputs of pom single test, in test_dir)")
    vw = sub.add_parser("view", help="open a tomogram with its outputs in napari (pip install 'pom-onnx[napari]')")
    vw.add_argument("tomogram", nargs="?", default=None,
                    help="a tomogram's name (TS_001) or path (default: the project's first tomogram)")
    vw.add_argument("--screenshot", default=None, type=Path, help="save a screenshot to this PNG and exit")

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
        p.add_argument("-o", "--ontology", required=True, help="the feature whose single network to apply")
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
    sp.add_argument("--overwrite", action="store_true",
                    help="segment every tomogram again, replacing earlier outputs (after retraining, for example)")
    sp.add_argument("--retry-failed", action="store_true", help="try the tomograms that failed before again")
    sp.add_argument("--dtype", choices=("float32", "uint8"), default="float32", help=DTYPE_HELP)
    ev = sub.add_parser("evaluate", help="Dice and IoU per class against the annotations in test_dir, or --labels")
    ev.add_argument("-m", "--model", default=None, help="ONNX model (default: the shared network)")
    ev.add_argument("-o", "--ontology", default=None, help="evaluate this feature's single network instead")
    ev.add_argument("--labels", action="append", default=[], type=Path,
                    help="dense label volume (.mrc or an OME-Zarr store; values named by classes.json beside it); repeatable")
    ev.add_argument("--tomogram", action="append", default=[], type=Path,
                    help="the tomogram of each --labels (default: test_dir/<stem>.mrc)")
    ev.add_argument("--tta", type=int, default=None, choices=TTA_RUNS,
                    help="rotations averaged, or 8 with flips (default: shared_model_runs_per_volume)")
    ev.add_argument("--json", default=None, type=Path, help="JSON output (default: test_dir/<model>_evaluation.json)")
    return parser


def _prepare(args: argparse.Namespace) -> None:
    if not args.debug and needs_tensorflow(args):  # TensorFlow's C++ start-up chatter is not for users
        import_tensorflow_quietly()


def main(argv: list[str] | None = None) -> int:
    """``pom``: returns 0, 1 for a failed run, 2 for a usage or configuration error, 130 when interrupted."""
    parser = build_parser()
    return run_cli(PROG, parser, argv, lambda args: run(args, parser),
                   device_hint=" (or train and segment on the CPU: -gpus cpu)", prepare=_prepare, extra=TRAIN_EXTRA,
                   no_gpu_fix=f'add -gpus cpu or set "GPUS": "cpu" in {CONFIG_FILENAME}')


if __name__ == "__main__":
    sys.exit(main())
