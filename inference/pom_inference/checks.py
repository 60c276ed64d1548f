"""Validation at the door: what a processing run is asked to do is checked before work starts.

Each problem is a :class:`~pom_common.errors.ConfigError` (exit 2) naming the option, the
file or the folder. Inputs are read-only to a run: no output may land on a tomogram or a
channel file, and two tomograms may not share outputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pom_common.defaults import TTA_RUNS
from pom_common.errors import ConfigError
from pom_common.modelmeta import ModelInfo
from pom_common.naming import channel_candidates, feature_filename, tomogram_stem

from .outputs import WRITERS

#: How the errors name each option (a command line passes its own spellings, e.g. ``--batch``).
OPTION_NAMES = {"batch": "batch", "tta": "tta", "dtype": "dtype", "voxel_size": "voxel size",
                "stall_seconds": "stall seconds", "workers": "workers"}


def check_options(batch: int | None, tta: int, dtype: str, fallback_voxel_size: float | None,
                  stall_seconds: float, names: Mapping[str, str] = OPTION_NAMES) -> None:
    """Refuse option values no run can use.

    Raises
    ------
    ConfigError
        Naming the option (as ``names`` spells it) and what it must be.
    """
    if batch is not None and (isinstance(batch, bool) or batch < 1):
        raise ConfigError(f"{names['batch']}: expected a positive number of slices per call, got {batch}")
    if tta not in TTA_RUNS:
        raise ConfigError(f"{names['tta']}: expected one of {list(TTA_RUNS)}, got {tta}")
    if dtype not in WRITERS:
        raise ConfigError(f"{names['dtype']}: expected one of {sorted(WRITERS)}, got {dtype!r}")
    if fallback_voxel_size is not None and not (math.isfinite(fallback_voxel_size) and fallback_voxel_size > 0):
        raise ConfigError(f"{names['voxel_size']}: expected a positive number of Angstrom, got {fallback_voxel_size}")
    if not (math.isfinite(stall_seconds) and stall_seconds > 0):
        raise ConfigError(f"{names['stall_seconds']}: expected a positive number, got {stall_seconds}")


def check_workers(workers: int, name: str = OPTION_NAMES["workers"]) -> int:
    """Refuse a number of worker processes per device below one.

    Raises
    ------
    ConfigError
        Naming the option ``name``.
    """
    if isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{name}: expected a positive number of worker processes, got {workers}")
    return workers


def check_tomograms(tomograms: Sequence[str | os.PathLike]) -> None:
    """Refuse a list in which two tomograms share a name (their outputs would collide)."""
    seen: dict[str, Path] = {}
    for tomogram in map(Path, tomograms):
        stem = tomogram_stem(tomogram)
        if stem in seen and os.path.abspath(seen[stem]) != os.path.abspath(tomogram):
            raise ConfigError(f"two tomograms named {stem!r}: {seen[stem]} and {tomogram}; their outputs "
                              f"({stem}__<Class>.mrc) would be the same files; rename one or process them apart")
        seen[stem] = tomogram


def check_output_folder(output_dir: str | os.PathLike, create: bool = True) -> Path:
    """Refuse a file, or a folder this process cannot write; create it (``create``) if needed.

    Without ``create`` nothing is changed: a missing folder's nearest existing parent must
    be writable.
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: the output is a file, not a folder")
    if not create:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{folder}: cannot create the output folder ({existing} is a file)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{folder}: the output folder is read-only for this user")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: the output folder is read-only for this user")
    return folder


def _key(path: Path, real_dirs: dict[str, str]) -> tuple[str, str]:
    """(real parent folder, name): compares paths through symbolic links of the folders, cheaply."""
    parent = str(path.parent)
    if parent not in real_dirs:
        real_dirs[parent] = os.path.realpath(parent)
    return real_dirs[parent], path.name


def check_outputs_are_not_inputs(tomograms: Iterable[str | os.PathLike], channels: Sequence[str],
                                 channel_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                                 classes: Sequence[str]) -> None:
    """Refuse a run whose outputs would overwrite (or shadow) a tomogram or an input channel file.

    With ``--output`` the tomogram folder and a class named like a channel (``Membrane``),
    ``TS__Membrane.mrc`` would be both an input and an output.
    """
    real_dirs: dict[str, str] = {}
    inputs: dict[tuple[str, str], Path] = {}
    outputs: list[tuple[Path, str]] = []
    out = Path(output_dir)
    for tomogram in map(Path, tomograms):
        inputs[_key(tomogram, real_dirs)] = tomogram
        for channel in channels:
            for candidate in channel_candidates(tomogram, channel, channel_dirs):
                inputs.setdefault(_key(candidate, real_dirs), candidate)
        outputs += [(out / feature_filename(tomogram_stem(tomogram), c), c) for c in classes]
    for path, name in outputs:
        clash = inputs.get(_key(path, real_dirs))
        if clash is not None:
            raise ConfigError(f"{path}: an output (class {name!r}) would overwrite the input {clash}; "
                              "write the outputs to another folder")


def select_classes(info: ModelInfo, requested: Sequence[str] | None, model: str) -> tuple[tuple[str, ...], list[int]]:
    """The classes to write (default: all of the model's) and their output indices.

    Raises
    ------
    ConfigError
        A requested class that the model does not produce.
    """
    classes = tuple(requested) if requested else info.classes
    unknown = [c for c in classes if c not in info.classes]
    if unknown:
        raise ConfigError(f"classes {unknown} requested, but {model} produces {list(info.classes)}")
    return classes, [info.classes.index(c) for c in classes]


def check_channels(info: ModelInfo, expected: Sequence[str] | None, model: str) -> None:
    """Refuse a model whose input channels differ from the project's ``macromolecules``."""
    if expected is not None and tuple(info.channels) != tuple(expected):
        raise ConfigError(f"{model}: the model expects channels {list(info.channels)} but 'macromolecules' is "
                          f"{list(expected)}; retrain it or fix the configuration")
