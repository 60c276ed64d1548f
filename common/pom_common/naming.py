"""File-name rules. The only module that knows about the ``__`` separator."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .constants import DENSITY
from .errors import InputError

SEPARATOR = "__"
MRC_SUFFIX = ".mrc"


def tomogram_stem(path: str | os.PathLike) -> str:
    """``/a/b/TS_001.mrc`` -> ``TS_001`` (works for .scns and Windows paths too)."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def is_derived(path: str | os.PathLike) -> bool:
    """True for ``TS__Feature.mrc`` files: outputs and channels, never tomograms."""
    return SEPARATOR in Path(path).name


def feature_filename(stem: str, feature: str) -> str:
    """``TS_001`` + ``Membrane`` -> ``TS_001__Membrane.mrc``."""
    return f"{stem}{SEPARATOR}{feature}{MRC_SUFFIX}"


def list_tomograms(folder: str | os.PathLike) -> list[Path]:
    """Tomograms in ``folder``: ``*.mrc`` that are not derived files, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f"*{MRC_SUFFIX}") if not is_derived(p) and p.is_file())


def channel_candidates(tomogram: str | os.PathLike, channel: str, folders: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Where ``channel`` of ``tomogram`` may be, in the order looked at.

    Density is the tomogram itself. Any other channel is ``<stem>__<channel>.mrc``, looked
    for in ``folders`` (the project's macromolecule folder, ``--macromolecules``) and then
    beside the tomogram. Training and processing both use this rule.
    """
    tomogram = Path(tomogram)
    if channel == DENSITY:
        return [tomogram]
    name = feature_filename(tomogram_stem(tomogram), channel)
    candidates = [Path(folder) / name for folder in folders] + [tomogram.parent / name]
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def find_channel(tomogram: str | os.PathLike, channel: str, folders: Sequence[str | os.PathLike] = ()) -> Path:
    """The file holding ``channel`` of ``tomogram`` (see :func:`channel_candidates`).

    Raises
    ------
    InputError
        Naming every place looked at, when none holds the channel.
    """
    candidates = channel_candidates(tomogram, channel, folders)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(c) for c in candidates)
    raise InputError(f"{Path(tomogram).name}: channel {channel!r} not found (looked for {where})")
