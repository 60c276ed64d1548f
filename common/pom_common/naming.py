"""File-name rules. The only module that knows about the ``__`` separator.

Names are data, not paths. Feature, class and channel names (from the configuration, the
``.scns`` titles, a model's metadata) become parts of file names: ``TS__<Class>.mrc``,
``<feature>_<channel>.tif``, ``<feature>.onnx``. A name must be non-empty, at most 100
characters, and free of path separators (slash, backslash), control characters and the
names ``.`` and ``..``; anything else is refused where it enters (one line naming the key,
file or model), so no name can place a file outside its folder. Ais allows titles like
``ER/Golgi``: rename such a feature (``ER-Golgi``) in Ais and in ``ontologies``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .constants import DENSITY
from .errors import InputError

SEPARATOR = "__"
MRC_SUFFIX = ".mrc"
#: Extensions of tomograms found in a folder (any case): MRC, and IMOD's name for a reconstruction.
TOMOGRAM_SUFFIXES = (".mrc", ".rec")
#: Longest feature, class or channel name (file names are limited to 255 bytes).
MAX_NAME = 100


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a feature, class or channel name; None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"name {name!r} is empty"
    if len(name) > MAX_NAME:
        return f"name {name[:20]!r}... is longer than {MAX_NAME} characters"
    if "/" in name or "\\" in name or name in (".", ".."):
        return (f"name {name!r} would be a path (it becomes part of file names such as TS__<name>.mrc); "
                "use letters, digits, spaces, '-' or '_' (e.g. 'ER-Golgi' for 'ER/Golgi')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"name {name!r} contains a control character"
    return None


def tomogram_stem(path: str | os.PathLike) -> str:
    """``/a/b/TS_001.mrc`` -> ``TS_001`` (works for .scns and Windows paths too)."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def tomogram_filename(stem: str) -> str:
    """``TS_001`` -> ``TS_001.mrc``: the tomogram of that name (e.g. the one an annotation ``TS_001.scns`` is of)."""
    return f"{stem}{MRC_SUFFIX}"


def find_tomogram(folder: str | os.PathLike, stem: str) -> Path:
    """The tomogram named ``stem`` in ``folder``: ``<stem>.mrc``, else ``<stem>.rec`` (any case of either).

    When none exists, ``<stem>.mrc`` (reading it then fails naming it).
    """
    folder = Path(folder)
    for suffix in TOMOGRAM_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if os.path.lexists(candidate):
                return candidate
    return folder / tomogram_filename(stem)


def source_stem(path: str | os.PathLike) -> str:
    """The tomogram a file belongs to: ``TS_001__labels.mrc`` -> ``TS_001``; ``TS_001.mrc`` -> ``TS_001``."""
    return tomogram_stem(path).split(SEPARATOR)[0]


def is_derived(path: str | os.PathLike) -> bool:
    """True for ``TS__Feature.mrc`` files: outputs and channels, never tomograms."""
    return SEPARATOR in Path(path).name


def feature_filename(stem: str, feature: str) -> str:
    """``TS_001`` + ``Membrane`` -> ``TS_001__Membrane.mrc``.

    Raises
    ------
    ValueError
        ``feature`` is not a valid name (see the module's rules): never a path.
    """
    problem = name_problem(feature)
    if problem:
        raise ValueError(problem)
    return f"{stem}{SEPARATOR}{feature}{MRC_SUFFIX}"


def is_tomogram_name(path: str | os.PathLike) -> bool:
    """True for ``*.mrc`` and ``*.rec`` names (any case) that are not derived files."""
    name = Path(path).name
    return name.lower().endswith(TOMOGRAM_SUFFIXES) and not is_derived(name) and not name.startswith(".")


def list_tomograms(folder: str | os.PathLike) -> list[Path]:
    """Tomograms in ``folder``: ``*.mrc`` and ``*.rec`` (any case) that are not derived files, sorted by name.

    Every such entry is listed, also a broken link or a folder named ``X.mrc``: reading it
    then fails with a reason, rather than the entry being skipped without a word. Hidden
    files (temporaries of writers) are not tomograms.
    """
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if is_tomogram_name(p))


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
        if os.path.lexists(candidate):  # a broken link is reported when read, not skipped
            return candidate
    where = ", ".join(str(c) for c in candidates)
    raise InputError(f"{Path(tomogram).name}: channel {channel!r} not found (looked for {where})")
