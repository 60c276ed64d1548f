"""``pom-infer slurm``: write the job-array script for a project (or a model), print or run its ``sbatch`` line.

The script is the recipe ``recipes/slurm_array.sh`` (also ``examples/slurm_array.sh``) with
its settings filled in: the resources as ``#SBATCH`` lines, the paths and the environment
as variables, the extra ``pom-infer process`` options as its arguments. Nothing here talks
to SLURM except ``--submit``, which runs ``sbatch``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pom_common.atomic import atomic_write_text
from pom_common.errors import ConfigError

#: The recipe, shipped with the package.
RECIPE = "slurm_array.sh"
#: Where the recipe's own header ends and its body (kept as it is) begins.
BODY_START = "set -euo pipefail\n"
JOB_NAME = "pom-process"
#: sbatch's --time formats: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME_RE = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_PARTITION_RE = re.compile(r"^[\w.-]+(,[\w.-]+)*$")
#: pom-infer process options the script sets itself (from the helper's own options).
_SET_BY_SCRIPT = ("--gpus", "--workers", "--tomograms", "--output", "--macromolecules", "--lease-seconds")


@dataclass(frozen=True)
class SlurmJob:
    """Everything the script says: resources, paths (absolute), the environment, options."""

    venv: Path
    model: Path
    tomograms: Path
    output: Path
    macromolecules: Path | None
    folder: Path  # the folder the job works in (the project, or where the helper ran)
    tasks: int
    gpus_per_task: int  # 0: the CPU
    cpus_per_task: int
    workers: int = 1  # worker processes per GPU (or on the CPU)
    partition: str | None = None
    time_limit: str | None = None
    mem: str | None = None
    lease_seconds: float | None = None
    process_options: tuple[str, ...] = ()  # more pom-infer process options
    sbatch_options: tuple[str, ...] = ()  # more #SBATCH lines (--account=..., --qos=...)
    log_dir: Path = Path("logs")


def recipe_text() -> str:
    """The recipe as shipped."""
    return (resources.files("pom_inference") / "recipes" / RECIPE).read_text(encoding="utf-8")


def check_resources(job: SlurmJob) -> None:
    """Refuse values sbatch would refuse (or misread), each with the option it came from.

    Raises
    ------
    ConfigError
        Naming the option and what it expects.
    """
    if job.tasks < 1:
        raise ConfigError(f"--tasks: expected a positive number of array tasks, got {job.tasks}")
    if job.gpus_per_task < 0:
        raise ConfigError(f"--gpus-per-task: expected a positive number, got {job.gpus_per_task}")
    if job.cpus_per_task < 1:
        raise ConfigError(f"--cpus-per-task: expected a positive number, got {job.cpus_per_task}")
    if job.workers < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {job.workers}")
    if job.time_limit is not None and not _TIME_RE.match(job.time_limit):
        raise ConfigError(f"--time: expected minutes, H:M:S or D-H:M:S (as sbatch takes it), got {job.time_limit!r}")
    if job.mem is not None and not _MEM_RE.match(job.mem):
        raise ConfigError(f"--mem: expected a size such as 32G or 16000M, got {job.mem!r}")
    if job.partition is not None and not _PARTITION_RE.match(job.partition):
        raise ConfigError(f"--partition: expected a partition name (or several, comma-separated), got {job.partition!r}")
    if job.lease_seconds is not None and not (0 < job.lease_seconds <= 7 * 86400):
        raise ConfigError(f"--lease-seconds: expected 0 to 604800 seconds, got {job.lease_seconds:g}")
    for option in job.sbatch_options:
        if not option.startswith("--") or "\n" in option:
            raise ConfigError(f"--sbatch-option: expected one sbatch option such as --account=NAME, got {option!r}")
    for option in job.process_options:
        name = option.split("=", 1)[0]
        if name in _SET_BY_SCRIPT:
            raise ConfigError(f"{name}: set by the script from the helper's own options; give it to pom-infer slurm")
    for path in (job.venv, job.model, job.tomograms, job.output, job.folder, job.log_dir):
        if "\n" in str(path):
            raise ConfigError(f"{path!r}: a path with a line break cannot go into a batch script")


def _directive(option: str, value: object) -> str:
    text = str(value)
    return f"#SBATCH {option}=" + (f'"{text}"' if any(c.isspace() or c in "'\"" for c in text) else text)


def render_script(job: SlurmJob, recipe: str | None = None) -> str:
    """The batch script: a header with ``job``'s resources and settings, then the recipe's body."""
    recipe = recipe_text() if recipe is None else recipe
    body = recipe[recipe.index(BODY_START):]
    script = job.log_dir / f"{JOB_NAME}-%A_%a.log"
    status = shlex.join([str(job.venv / "bin" / "pom-infer"), "status", "--output", str(job.output),
                         "--tomograms", str(job.tomograms)])
    lines = [
        "#!/bin/bash",
        f"# Written by `pom-infer slurm` on {time.strftime('%Y-%m-%d %H:%M')}: the recipe {RECIPE} with its settings",
        "# filled in. Submit it with sbatch, again at any time: tomograms already done are not redone.",
        f"# Progress: {status}",
        _directive("--job-name", JOB_NAME),
        _directive("--array", f"1-{job.tasks}"),
        _directive("--cpus-per-task", job.cpus_per_task),
    ]
    if job.gpus_per_task:
        lines.append(_directive("--gres", f"gpu:{job.gpus_per_task}"))
    if job.partition:
        lines.append(_directive("--partition", job.partition))
    if job.time_limit:
        lines.append(_directive("--time", job.time_limit))
    if job.mem:
        lines.append(_directive("--mem", job.mem))
    lines += [_directive("--output", script), "#SBATCH --open-mode=append", "#SBATCH --requeue"]
    lines += [f"#SBATCH {option}" for option in job.sbatch_options]
    settings = {
        "POM_VENV": job.venv, "POM_MODEL": job.model, "POM_TOMOGRAMS": job.tomograms, "POM_OUTPUT": job.output,
        "POM_MACROMOLECULES": job.macromolecules or "", "POM_WORKERS": job.workers,
        "POM_GPUS": "" if job.gpus_per_task else "cpu",
        "POM_LEASE_SECONDS": f"{job.lease_seconds:g}" if job.lease_seconds is not None else "",
    }
    lines += [f"{name}={shlex.quote(str(value))}" for name, value in settings.items()]
    lines.append(f"set -- {shlex.join([str(job.folder), *job.process_options])}")
    return "\n".join(lines) + "\n" + body


def write_script(job: SlurmJob, path: Path) -> None:
    """Write the script (atomically, executable) and create the log folder sbatch needs."""
    check_resources(job)
    text = render_script(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    job.log_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    os.chmod(path, 0o755)


def default_venv() -> Path:
    """The environment this pom-infer runs from (its ``bin/pom-infer``).

    Raises
    ------
    ConfigError
        When it has none (then ``--venv`` must name one).
    """
    prefix = Path(sys.prefix)
    if (prefix / "bin" / "pom-infer").is_file():
        return prefix
    raise ConfigError(f"{prefix}/bin/pom-infer not found: name the environment pom-onnx is installed in with --venv")


def check_venv(venv: Path) -> Path:
    """``venv`` made absolute, after checking that it holds ``bin/pom-infer``."""
    venv = Path(os.path.abspath(venv))
    if not os.access(venv / "bin" / "pom-infer", os.X_OK):
        raise ConfigError(f"--venv: {venv} has no bin/pom-infer; name the environment pom-onnx is installed in")
    return venv


def submit(path: Path) -> str:
    """Run ``sbatch`` on the script; the job id.

    Raises
    ------
    ConfigError
        sbatch is not here, or it refused the job (its own message).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(f"sbatch not found: run this on a SLURM login node, or submit there: sbatch {path}")
    done = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or [f"exit code {done.returncode}"]
        raise ConfigError(f"sbatch refused {path}: {lines[-1].strip()}")
    return done.stdout.strip().split(";")[0]


# ---------------------------------------------------------------------------- the command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``slurm`` subcommand of ``pom-infer``."""
    p = sub.add_parser("slurm", help="write a SLURM job-array script for a project or model; print its sbatch line",
                       description="Write the job-array script (the recipe slurm_array.sh with these settings) "
                                   "and print the sbatch line that submits it (or run it: --submit). Options after "
                                   "-- go to pom-infer process (e.g. -- --dtype uint8).",
                       usage="pom-infer slurm PROJECT_OR_MODEL --tasks N [--gpus-per-task G | --cpu] [options] "
                             "[-- PROCESS_OPTIONS]")
    p.add_argument("target", help="a project folder (its configuration names the folders; the model is "
                                  "models/phase2/shared.onnx), or a .onnx model (then --tomograms and --output)")
    p.add_argument("--tasks", type=int, required=True, help="array tasks: how many jobs may run at once")
    devices = p.add_mutually_exclusive_group()
    devices.add_argument("--gpus-per-task", type=int, default=1, help="GPUs each task asks for (default: 1)")
    devices.add_argument("--cpu", action="store_true", help="no GPUs: each task segments on its CPUs")
    p.add_argument("--cpus-per-task", type=int, default=None,
                   help=f"CPU cores per task (default: {CPUS_PER_GPU} per GPU, or {CPUS_ON_CPU} on the CPU)")
    p.add_argument("--workers", type=int, default=1, help="worker processes per GPU, or on the CPU (default: 1)")
    p.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    p.add_argument("--time", default=None, help="time limit per task, e.g. 24:00:00 (default: the partition's)")
    p.add_argument("--mem", default=None, help="memory per task, e.g. 32G (default: the cluster's)")
    p.add_argument("--tomograms", default=None, help="folder or .txt list (default: the project's tomogram_dir)")
    p.add_argument("--macromolecules", default=None, help="channel folder (default: the project's macromolecule_dir)")
    p.add_argument("--output", default=None, help="output folder (default: the project's output_dir)")
    p.add_argument("--lease-seconds", type=float, default=None, help="pom-infer's --lease-seconds (default: its own)")
    p.add_argument("--venv", default=None, help="the environment the jobs run pom-infer from (default: this one)")
    p.add_argument("--script", default=None,
                   help=f"where to write the script (default: slurm/{JOB_NAME}.sh in the project, or here)")
    p.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                   help="one more sbatch option for the script, e.g. --sbatch-option=--account=lab (repeatable)")
    p.add_argument("--submit", action="store_true", help="run the sbatch line too")
    p.set_defaults(process_options=[])  # what follows -- (see pom_inference.cli.main)


#: Default cores per task: per GPU (reading and preprocessing the next tomogram, writing outputs), or on the CPU.
CPUS_PER_GPU = 4
CPUS_ON_CPU = 4


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def job_from_args(args: argparse.Namespace) -> tuple[SlurmJob, Path, int]:
    """The job the options describe, where its script goes, and how many tomograms it has.

    Raises
    ------
    ConfigError
        A project without a configuration, a missing model, no tomograms, a bad option.
    """
    from pom_common.config import CONFIG_FILENAME, load_config
    from pom_common.layout import ProjectLayout

    from .cli import build_parser
    from .inputs import tomograms_from
    from .session import read_model_info

    target = Path(args.target)
    options: list[str] = []
    if target.is_dir():
        config = load_config(target / CONFIG_FILENAME)
        model = ProjectLayout.of(config).shared_model()
        tomograms = Path(args.tomograms) if args.tomograms else config.tomogram_path
        output = Path(args.output) if args.output else config.output_path
        channels = Path(args.macromolecules) if args.macromolecules else config.macromolecule_path
        macromolecules = channels if args.macromolecules or channels.is_dir() else None
        options = ["--tta", str(config.shared_model_runs_per_volume), "--voxel-size", f"{config.apix:g}"]
        folder = target
    else:
        if not (args.tomograms and args.output):
            raise ConfigError(f"{target}: not a project folder; for a model give --tomograms and --output too")
        model, tomograms, output = target, Path(args.tomograms), Path(args.output)
        macromolecules = Path(args.macromolecules) if args.macromolecules else None
        folder = Path(".")
    if not model.is_file():
        raise ConfigError(f"{model}: no model here" + (" (train it first: pom shared train)" if target.is_dir() else ""))
    read_model_info(model)  # a Pom model, or a one-line error now rather than in every task
    found = len(tomograms_from(tomograms))
    if not found:
        raise ConfigError(f"{tomograms}: no tomograms (*.mrc without '__') found")
    extra = [*options, *args.process_options]
    try:
        build_parser().parse_args(["process", str(model), "--tomograms", "t", "--output", "o", *extra])
    except SystemExit:  # the parser said what is wrong, on one line
        raise ConfigError(f"not options of pom-infer process: {shlex.join(args.process_options)}") from None
    venv = check_venv(Path(args.venv)) if args.venv else default_venv()
    gpus = 0 if args.cpu else args.gpus_per_task
    cpus = args.cpus_per_task or (CPUS_PER_GPU * gpus if gpus else CPUS_ON_CPU)
    script = _absolute(args.script) if args.script else _absolute(folder) / "slurm" / f"{JOB_NAME}.sh"
    job = SlurmJob(venv=venv, model=_absolute(model), tomograms=_absolute(tomograms), output=_absolute(output),
                   macromolecules=_absolute(macromolecules) if macromolecules else None, folder=_absolute(folder),
                   tasks=args.tasks, gpus_per_task=gpus, cpus_per_task=cpus, workers=args.workers,
                   partition=args.partition, time_limit=args.time, mem=args.mem, lease_seconds=args.lease_seconds,
                   process_options=tuple(extra), sbatch_options=tuple(args.sbatch_option),
                   log_dir=script.parent / "logs")
    return job, script, found


def run(args: argparse.Namespace) -> int:
    """``pom-infer slurm``: write the script, print what it asks for and its sbatch line (or submit it)."""
    job, script, found = job_from_args(args)
    write_script(job, script)
    cpus = f"{job.cpus_per_task} CPU{'s' if job.cpus_per_task > 1 else ''}"
    each = (f"{job.gpus_per_task} GPU{'s' if job.gpus_per_task > 1 else ''} and {cpus}" if job.gpus_per_task
            else f"{cpus} (no GPU)")
    where = ", ".join(x for x in (f"partition {job.partition}" if job.partition else "",
                                  f"time {job.time_limit}" if job.time_limit else "") if x)
    print(f"wrote {script}: {job.tasks} tasks of {each}"
          + (f" ({where})" if where else "") + f"; {found} tomograms into {job.output}; logs in {job.log_dir}/")
    line = shlex.join(["sbatch", str(script)])
    if not args.submit:
        print(line)
        return 0
    job_id = submit(script)
    print(f"submitted job {job_id}: {line}")
    print(f"progress: {shlex.join([str(job.venv / 'bin' / 'pom-infer'), 'status', '--output', str(job.output)])}")
    return 0
