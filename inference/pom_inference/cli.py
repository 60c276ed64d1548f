"""``pom-infer``: segment tomograms with an exported model, without TensorFlow or a project.

pom-infer process MODEL.onnx --tomograms DIR_OR_LIST.txt --output DIR [--gpus 0,1 | cpu] ...
pom-infer status --output DIR
pom-infer slurm PROJECT_OR_MODEL --tasks N [--gpus-per-task G | --cpu] [--submit]
pom-infer info MODEL.onnx
pom-infer doctor [--gpus 0,1 | cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pom_common.cli import DTYPE_HELP, OneLineParser, add_gpus_option, run_cli
from pom_common.defaults import LEASE_SECONDS, STALL_SECONDS, TTA, TTA_RUNS

from .process_cli import _gpus, cmd_process


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pom-infer", description="Segment cryo-ET tomograms with a Pom ONNX model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("process", help="segment every tomogram (run it on many servers at once)")
    p.add_argument("model", help="the .onnx model (its metadata names channels, z_sum and classes)")
    p.add_argument("--tomograms", default=None, help="folder of .mrc tomograms, or a .txt list of paths")
    p.add_argument("--macromolecules", action="append", default=[],
                   help="folder with <TS>__<Channel>.mrc inputs (default: beside each tomogram)")
    p.add_argument("--output", default=None,
                   help="output folder for <TS>__<Class>.mrc (with --copick: the work folder, default pom-work beside "
                        "the config)")
    add_gpus_option(p, ("--gpus",), None, "GPU 0 on a machine with an NVIDIA driver, else the CPU, said in one line",
                    "GPU indices, one worker each")
    p.add_argument("--workers", default="1",
                   help="worker processes per GPU (or on the CPU), or 'auto' (from the cores and free GPU memory); "
                        "default 1")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "auto"), default="fp32",
                   help="network arithmetic, checked against fp32 on the first tomogram before use (default fp32)")
    p.add_argument("--tta", type=int, default=TTA, choices=TTA_RUNS,
                   help=f"rotations (1-4) or 8 with flips (default: {TTA})")
    p.add_argument("--dtype", choices=("float32", "uint8"), default="float32",
                   help=DTYPE_HELP)
    p.add_argument("--grid", choices=("binned", "tomogram"), default="binned",
                   help="binned (default): outputs on the network's grid (the tomogram binned 2x: half the size, twice the "
                        "voxel size); "
                        "tomogram: upsampled (nearest) to the tomogram's own size and voxel size, to overlay on it "
                        "in napari or IMOD (8x the disk)")
    p.add_argument("--format", choices=("mrc", "ome-zarr"), default="mrc",
                   help="mrc (default), or ome-zarr: one multiscale store per output (needs pom-onnx[zarr])")
    p.add_argument("--labels", action="store_true",
                   help="one label map <TS>__labels per tomogram instead of a volume per class: the most probable "
                        "class's value (0 Unknown, 1.. the classes; classes.json beside it names them)")
    c = p.add_argument_group("copick projects (pip install 'pom-onnx[copick]'; implies --labels)")
    c.add_argument("--copick", metavar="CONFIG.json", default=None,
                   help="segment the runs of this copick project (instead of --tomograms) into multilabel segmentations")
    c.add_argument("--runs", default=None, help="comma-separated run names (default: every run)")
    c.add_argument("--voxel-spacing", type=float, default=None,
                   help="the tomograms' voxel spacing (default: the one closest to the model's training voxel size)")
    c.add_argument("--tomo-type", default=None, help="the tomograms' type, e.g. wbp (default: the only one)")
    c.add_argument("--copick-name", default=None, help="the segmentations' name (default: the model's file name)")
    c.add_argument("--copick-user", default=None, help="the segmentations' user_id (default: pom-onnx)")
    c.add_argument("--copick-session", default=None, help="the segmentations' session_id (default: 0, a tool's)")
    p.add_argument("--min-probability", type=float, default=None,
                   help="with --labels: voxels whose most probable class is below this are Unknown "
                        "(default 0, or 0.5 when one class is written)")
    p.add_argument("--classes", default=None, help="comma-separated subset of the model's classes")
    p.add_argument("--overwrite", action="store_true", help="redo tomograms already done")
    p.add_argument("--lease-seconds", type=float, default=LEASE_SECONDS,
                   help=f"a claim not refreshed for this long is taken over (default: {LEASE_SECONDS:g})")
    p.add_argument("--retry-failed", action="store_true", help="try tomograms that failed before again")
    p.add_argument("--stall-seconds", type=float, default=STALL_SECONDS,
                   help=f"a worker with no progress for this long lets its claims expire (a hung GPU; default: "
                        f"{STALL_SECONDS:g})")
    p.add_argument("--voxel-size", type=float, default=None, help="A, for headers that say 0 or 1")
    p.add_argument("--allow-voxel-size-mismatch", action="store_true",
                   help="segment tomograms whose voxel size differs from the model's training voxel size by more "
                        "than 25 %%, or whose channels' headers disagree with the tomogram's (refused by default)")
    p.add_argument("--batch", type=int, default=None,
                   help="slices per ONNX Runtime call (default: from free GPU memory; 8 on the CPU)")
    s = sub.add_parser("status", help="done / running / failed / pending in an output folder")
    s.add_argument("--output", required=True, help="the output folder of the run(s)")
    s.add_argument("--tomograms", default=None, help="also count tomograms not started yet")
    s.add_argument("--json", action="store_true", help="the report as JSON")
    i = sub.add_parser("info", help="what a model expects and produces: classes, inputs, voxel size, training")
    i.add_argument("model", help="the .onnx model")
    i.add_argument("--json", action="store_true", help="the metadata as JSON, as stored in the model (for scripts)")
    d = sub.add_parser("doctor", help="can the GPUs run here? ONNX Runtime, CUDA libraries, driver, GPUs")
    add_gpus_option(d, ("--gpus",), "0", "0", "GPUs to check")
    d.add_argument("--json", action="store_true", help="the report as JSON")
    from .slurm import add_parser as add_slurm

    add_slurm(sub)
    return parser


def cmd_status(args: argparse.Namespace) -> int:
    from pom_common.naming import tomogram_stem

    from .inputs import tomograms_from
    from .status import dataset_status, status_lines

    stems = [tomogram_stem(t) for t in tomograms_from(args.tomograms)] if args.tomograms else None
    status = dataset_status(args.output, stems)
    if args.json:
        print(json.dumps(status.to_dict(), indent=1))
    else:
        print("\n".join(status_lines(args.output, status)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .info import info_lines
    from .session import read_model_info

    info = read_model_info(args.model)
    print(json.dumps(json.loads(info.to_json()), indent=2) if args.json else "\n".join(info_lines(args.model, info)))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report_lines
    from .gpu import diagnose

    gpus = _gpus(args.gpus)
    report = diagnose(gpus)
    if args.json:
        print(json.dumps({**report.to_dict(), "requested": gpus if gpus is not None else "cpu"}, indent=1))
    else:
        print("\n".join(report_lines(report, gpus)))
    return 0 if gpus is None or report.ok else 1


def cmd_slurm(args: argparse.Namespace) -> int:
    from .slurm import run

    return run(args)


COMMANDS = {"process": cmd_process, "status": cmd_status, "info": cmd_info, "doctor": cmd_doctor,
            "slurm": cmd_slurm}


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; for ``slurm``, what follows ``--`` is ``pom-infer process``'s options, for the script."""
    args, rest = parser.parse_known_args(argv)
    if rest and not (args.command == "slurm" and rest[0] == "--"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "slurm":
        args.process_options = rest[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``pom-infer`` with ``argv`` (default: the command line); return the exit code."""
    parser = build_parser()
    return run_cli("pom-infer", parser, argv, lambda args: COMMANDS[args.command](args),
                   device_hint=" (or run on the CPU: --gpus cpu)", parse=lambda a: _parse(parser, a))


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
