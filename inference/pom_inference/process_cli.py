"""``pom-infer process``: the options as the workers get them, and the run.

The parser is :func:`pom_inference.cli.build_parser`'s; this module checks what it parsed,
chooses the devices (``--gpus``, ``--workers``) and the tomograms (``--tomograms`` or
``--copick``), runs :func:`pom_inference.driver.process` and prints its summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pom_common.config import parse_gpus
from pom_common.errors import ConfigError

logger = logging.getLogger(__name__)

#: How errors name the options (the checks module's words, spelt as on this command line).
OPTIONS = {"batch": "--batch", "tta": "--tta", "dtype": "--dtype", "voxel_size": "--voxel-size",
           "stall_seconds": "--stall-seconds", "workers": "--workers"}


def _gpus(text: str) -> list[int] | None:
    return parse_gpus(text, key="--gpus")


def _process_gpus(text: str | None) -> list[int] | None:
    """``--gpus`` of ``process``; without it GPU 0 where there is a driver, else the CPU, said in one line.

    GPUs named with ``--gpus`` are never given up: where they cannot run, the run stops (exit 2).
    """
    if text is not None:
        return _gpus(text)
    from .nvidia import NO_DRIVER, has_driver

    if has_driver():
        return [0]
    logger.info("no GPU on this machine (%s): segmenting on the CPU (--gpus 0 to require a GPU)", NO_DRIVER)
    return None


def cmd_process(args: argparse.Namespace) -> int:
    """``pom-infer process``: 0 when every tomogram is done, 1 when one failed or was skipped for now."""
    from pom_common.workqueue import check_lease

    from .checks import check_options
    from .driver import process, summary
    from .forms import OutputForm, check_form
    from .inputs import tomograms_from
    from .session import check_gpus
    from .worker import ProcessOptions

    check_options(args.batch, args.tta, args.dtype, args.voxel_size, args.stall_seconds, names=OPTIONS)
    check_lease(args.lease_seconds, key="--lease-seconds")
    form = OutputForm(format=args.format, labels=args.labels or bool(args.copick), min_probability=args.min_probability)
    if args.copick:
        if args.tomograms:
            raise ConfigError("--copick and --tomograms: give one of them (the copick project's runs are the tomograms)")
        form, args.output, tomograms = _copick_runs(args, form)
    else:
        if not args.tomograms or not args.output:
            raise ConfigError("--tomograms and --output are required (or --copick CONFIG.json)")
        tomograms = tomograms_from(args.tomograms)
    check_form(form)
    opts = ProcessOptions(
        model=args.model, tomograms=tuple(str(t) for t in tomograms), output_dir=args.output,
        channel_dirs=tuple(args.macromolecules),
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        tta=args.tta, dtype=args.dtype, grid=args.grid, overwrite=args.overwrite, retry_failed=args.retry_failed,
        lease_seconds=args.lease_seconds, stall_seconds=args.stall_seconds, fallback_voxel_size=args.voxel_size,
        batch=args.batch, allow_voxel_size_mismatch=args.allow_voxel_size_mismatch, precision=args.precision,
        form=form,
    )
    gpus = check_gpus(_process_gpus(args.gpus))
    per_device = _workers(args.workers, gpus)
    opts = replace(opts, workers_per_device=per_device)
    devices = [d for d in gpus for _ in range(per_device)]
    result = process(opts, devices, verbose=args.debug)
    print("\n".join(summary(result)))
    return 0 if result.ok else 1


def _copick_runs(args: argparse.Namespace, form: Any) -> tuple[Any, str, list[Path]]:
    """``--copick``: the form with its target, the output folder (the work folder's), the staged runs."""
    import os

    from .copickio import SESSION_ID, USER_ID, CopickTarget, stage_runs
    from .session import read_model_info

    config = os.path.abspath(args.copick)
    work = Path(args.output) if args.output else Path(config).parent / "pom-work"
    info = read_model_info(args.model)
    name = args.copick_name or Path(args.model).stem
    target = CopickTarget(config, name, args.copick_user or USER_ID, args.copick_session or SESSION_ID)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    tomograms = stage_runs(config, runs, args.voxel_spacing, args.tomo_type, info.channels, info.voxel_size,
                           work / "tomograms")
    if not tomograms:
        raise ConfigError(f"{config}: no run has a tomogram (and the model's input channels) to segment")
    return replace(form, copick=target), str(work / "outputs"), tomograms


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
