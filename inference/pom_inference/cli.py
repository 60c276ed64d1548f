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
from dataclasses import replace

from pom_common.cli import OneLineParser, add_gpus_option, run_cli
from pom_common.config import parse_gpus
from pom_common.defaults import LEASE_SECONDS, STALL_SECONDS, TTA, TTA_RUNS
from pom_common.errors import ConfigError

#: How errors name the options (the checks module's words, spelt as on this command line).
OPTIONS = {"batch": "--batch", "tta": "--tta", "dtype": "--dtype", "voxel_size": "--voxel-size",
           "stall_seconds": "--stall-seconds", "workers": "--workers"}


def _gpus(text: str) -> list[int] | None:
    return parse_gpus(text, key="--gpus")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pom-infer", description="Segment cryo-ET tomograms with a Pom ONNX model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("process", help="segment every tomogram (run it on many servers at once)")
    p.add_argument("model", help="the .onnx model (its metadata names channels, z_sum and classes)")
    p.add_argument("--tomograms", required=True, help="folder of .mrc tomograms, or a .txt list of paths")
    p.add_argument("--macromolecules", action="append", default=[],
                   help="folder with <TS>__<Channel>.mrc inputs (default: beside each tomogram)")
    p.add_argument("--output", required=True, help="output folder for <TS>__<Class>.mrc")
    add_gpus_option(p, ("--gpus",), "0", "0", "GPU indices, one worker each")
    p.add_argument("--workers", default="1",
                   help="worker processes per GPU (or on the CPU), or 'auto' (from the cores and free GPU memory); "
                        "default 1")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "auto"), default="fp32",
                   help="network arithmetic, checked against fp32 on the first tomogram before use (default fp32)")
    p.add_argument("--tta", type=int, default=TTA, choices=TTA_RUNS,
                   help=f"rotations (1-4) or 8 with flips (default: {TTA})")
    p.add_argument("--dtype", choices=("float32", "uint8"), default="float32")
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
    s.add_argument("--output", required=True)
    s.add_argument("--tomograms", default=None, help="also count tomograms not started yet")
    s.add_argument("--json", action="store_true", help="the report as JSON")
    i = sub.add_parser("info", help="print a model's metadata")
    i.add_argument("model")
    d = sub.add_parser("doctor", help="can the GPUs run here? ONNX Runtime, CUDA libraries, driver, GPUs")
    add_gpus_option(d, ("--gpus",), "0", "0", "GPUs to check")
    d.add_argument("--json", action="store_true", help="the report as JSON")
    from .slurm import add_parser as add_slurm

    add_slurm(sub)
    return parser


def cmd_process(args: argparse.Namespace) -> int:
    from pom_common.workqueue import check_lease

    from .checks import check_options
    from .driver import process, summary
    from .inputs import tomograms_from
    from .session import check_gpus
    from .worker import ProcessOptions

    check_options(args.batch, args.tta, args.dtype, args.voxel_size, args.stall_seconds, names=OPTIONS)
    check_lease(args.lease_seconds, key="--lease-seconds")
    tomograms = tomograms_from(args.tomograms)
    opts = ProcessOptions(
        model=args.model, tomograms=tuple(str(t) for t in tomograms), output_dir=args.output,
        channel_dirs=tuple(args.macromolecules),
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        tta=args.tta, dtype=args.dtype, overwrite=args.overwrite, retry_failed=args.retry_failed,
        lease_seconds=args.lease_seconds, stall_seconds=args.stall_seconds, fallback_voxel_size=args.voxel_size,
        batch=args.batch, allow_voxel_size_mismatch=args.allow_voxel_size_mismatch, precision=args.precision,
    )
    gpus = check_gpus(_gpus(args.gpus))
    per_device = _workers(args.workers, gpus)
    opts = replace(opts, workers_per_device=per_device)
    devices = [d for d in gpus for _ in range(per_device)]
    result = process(opts, devices, verbose=args.debug)
    print("\n".join(summary(result)))
    return 0 if result.ok else 1


def _workers(text: str, devices: list[int | None]) -> int:
    """``--workers``: a positive integer, or ``auto`` (said in a line)."""
    from .checks import check_workers

    if text.strip().lower() == "auto":
        from .workers import workers_per_device

        count = workers_per_device(devices)
        print(f"pom-infer: --workers auto: {count} per {'GPU' if devices != [None] else 'CPU'}", file=sys.stderr)
        return count
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(f"{OPTIONS['workers']}: expected a positive integer or 'auto', got {text!r}") from None
    return check_workers(count, OPTIONS["workers"])


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
    from .session import read_model_info

    info = read_model_info(args.model)
    doc = json.loads(info.to_json())
    print(json.dumps(doc, indent=2))
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
