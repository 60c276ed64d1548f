"""Inputs of a processing run: which tomograms, each one's channel volumes, the network input.

Tomograms come from a folder (every ``*.mrc`` without ``__``) or a ``.txt`` list; the
channels of a tomogram are found by :func:`pom_common.naming.find_channel`'s rule.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pom_common.constants import DENSITY
from pom_common.errors import ConfigError, InputError
from pom_common.files import read_regular_file, regular_file
from pom_common.modelmeta import ModelInfo
from pom_common.mrcio import read_volume
from pom_common.naming import TOMOGRAM_SUFFIXES, find_channel, is_derived, list_tomograms
from pom_common.normalise import CHANNEL_VOXEL_TOLERANCE

from .preprocess import channel_scales, prepare_inputs

logger = logging.getLogger(__name__)

#: A list of tomograms larger than this is not one.
MAX_LIST_BYTES = 64 << 20


def tomograms_from(source: str | os.PathLike) -> list[Path]:
    """A folder of tomograms, or a .txt list with one path per line (relative to the list).

    A folder gives its ``*.mrc`` and ``*.rec`` files without ``__`` in their names. A list
    may be saved with a byte-order mark and Windows line ends; blank lines and lines
    starting with ``#`` are skipped, and a path in quotes loses them.

    Raises
    ------
    ConfigError
        ``source`` is neither a folder nor a readable UTF-8 .txt file, or names no tomogram.
    """
    source = Path(source)
    if source.is_dir():
        found = list_tomograms(source)
        if not found:
            raise ConfigError(f"{source}: no tomograms in this folder (looked for {' and '.join('*' + s for s in TOMOGRAM_SUFFIXES)} "
                              "without '__' in the name)")
        return found
    if source.suffix.lower() == ".txt":
        try:
            text = read_regular_file(source, MAX_LIST_BYTES).decode("utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the list ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte at position {exc.start}); save the list as UTF-8") from None
        paths = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":
                line = line[1:-1]
            p = Path(line)
            p = p if p.is_absolute() else source.parent / p
            if not is_derived(p):
                paths.append(p)
        if not paths:
            raise ConfigError(f"{source}: the list names no tomograms (one path per line; '#' starts a comment)")
        return paths
    raise ConfigError(f"{source}: expected a folder of .mrc/.rec tomograms or a .txt list of paths")


#: A tomogram whose voxel size differs from the model's training voxel size by more than this
#: factor (either way) is refused, unless the run allows it (``--allow-voxel-size-mismatch``).
MODEL_VOXEL_RATIO = 1.25
#: An input modified less than this long ago (by the filesystem's clock) is watched until it
#: is this old; if it changes meanwhile it is being written, and is skipped for now.
SETTLE_SECONDS = 2.0
#: How often an input that may still be written is looked at again.
_SETTLE_POLL = 0.25


class NotReady(InputError):
    """An input is still being written (or changed while it was read): skipped for now, not failed."""


Identity = dict[str, dict[str, int]]


def input_files(tomogram: Path, channels: Sequence[str], channel_dirs: Sequence[str | os.PathLike] = ()) -> dict[str, Path]:
    """Channel -> the file that holds it (Density: the tomogram).

    Raises
    ------
    InputError
        A channel is found nowhere (naming every place looked at).
    """
    files = {DENSITY: Path(tomogram)}
    try:  # the tomogram's own problem (a broken link, a folder) is named before any channel's
        regular_file(tomogram)
    except OSError as exc:
        raise InputError(f"{tomogram}: {exc.strerror or exc}") from None
    for channel in channels:
        if channel != DENSITY:
            files[channel] = find_channel(tomogram, channel, channel_dirs)
    return files


def identity(files: Mapping[str, Path]) -> Identity:
    """Channel -> size, modification time (ns) and inode of its file, as the filesystem says now.

    These are what a result is recorded against: a file replaced, rewritten or appended to
    since has another identity, and its tomogram is segmented again. (The device number is
    left out: NFS clients number the same export differently.)

    Raises
    ------
    InputError
        A file cannot be looked at (naming it).
    """
    out = {}
    for channel, path in files.items():
        try:
            st = regular_file(path)
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
        out[channel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    return out


def settled_identity(files: Mapping[str, Path], clock: Callable[[], float] = time.time,
                     settle: float = SETTLE_SECONDS) -> Identity:
    """The identity of ``files`` once none of them has changed for ``settle`` seconds.

    A file modified less than ``settle`` seconds ago by ``clock`` (the filesystem's clock)
    is looked at again until it is that old: unchanged, it is complete as far as anyone can
    tell; changed, it is still being written.

    Raises
    ------
    NotReady
        A file changed while it was watched (naming it).
    InputError
        A file cannot be looked at.
    """
    first = identity(files)
    watched = 0.0
    while True:
        newest = max(v["mtime_ns"] for v in first.values()) / 1e9
        if clock() - newest >= settle or watched >= settle:  # old enough, or unchanged while watched
            return first
        time.sleep(_SETTLE_POLL)
        watched += _SETTLE_POLL
        again = identity(files)
        changed = [c for c in again if again[c] != first[c]]
        if changed:
            raise NotReady(f"{files[changed[0]]}: still being written (its size or modification time changed "
                           f"within {settle:g} s); skipped for now, run again once it is complete")


def check_unchanged(files: Mapping[str, Path], before: Identity) -> None:
    """Raise :class:`NotReady` when an input changed since ``before`` (it was written while we read it)."""
    now = identity(files)
    changed = [c for c in before if now.get(c) != before[c]]
    if changed:
        raise NotReady(f"{files[changed[0]]}: changed while it was being segmented; skipped for now, "
                       "run again once it is complete")


@dataclass(frozen=True)
class TomogramInputs:
    """The channel volumes of one tomogram (memory-mapped), its voxel size, and the files read."""

    tomogram: Path
    volumes: dict[str, np.ndarray]  # channel -> (nz, ny, nx)
    voxel_size: float  # A, unbinned
    files: dict[str, Path] = field(default_factory=dict)  # channel -> file (Density: the tomogram)


def _relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(a, b)


def read_inputs(tomogram: Path, channels: Sequence[str], channel_dirs: Sequence[str | os.PathLike] = (),
                fallback_voxel_size: float | None = None, model_voxel_size: float = 0.0,
                allow_voxel_size_mismatch: bool = False, files: Mapping[str, Path] | None = None) -> TomogramInputs:
    """Open ``tomogram`` and the other ``channels`` it needs, memory-mapped, and check them against each other.

    The voxel size comes from the tomogram's header; a header that says 0 or 1 (unset)
    falls back to ``fallback_voxel_size``, else to the model's training voxel size (said
    in a warning), else 1.

    Raises
    ------
    InputError
        A file is missing or unreadable; a channel's shape differs from the tomogram's; a
        channel's header voxel size differs from the tomogram's by more than
        :data:`CHANNEL_VOXEL_TOLERANCE`, or the tomogram's from the model's
        (``model_voxel_size``, 0: unknown) by more than :data:`MODEL_VOXEL_RATIO`, unless
        ``allow_voxel_size_mismatch``.
    """
    files = dict(files) if files is not None else input_files(tomogram, channels, channel_dirs)
    density = read_volume(tomogram, fallback_voxel_size)
    volumes = {}
    for channel in channels:
        vol = density if channel == DENSITY else read_volume(files[channel])
        if vol.shape != density.shape:
            raise InputError(f"{vol.path}: shape {vol.shape} differs from its tomogram {tomogram.name} {density.shape}")
        if (vol is not density and vol.header_voxel_size and density.header_voxel_size and not allow_voxel_size_mismatch
                and _relative_difference(vol.header_voxel_size, density.header_voxel_size) > CHANNEL_VOXEL_TOLERANCE):
            raise InputError(f"{vol.path}: voxel size {vol.header_voxel_size:.4g} A, but its tomogram {tomogram.name} "
                             f"has {density.header_voxel_size:.4g} A on the same grid; fix the header that is wrong, "
                             "or pass --allow-voxel-size-mismatch")
        volumes[channel] = vol.data
    voxel = density.voxel_size
    if not density.voxel_size_from_header and fallback_voxel_size is None:
        voxel = model_voxel_size or 1.0
        logger.warning("%s: header voxel size unset; using the model's %.4g A", tomogram.name, voxel)
    if model_voxel_size and voxel and not allow_voxel_size_mismatch:
        ratio = voxel / model_voxel_size
        if max(ratio, 1 / ratio) > MODEL_VOXEL_RATIO:
            raise InputError(f"{tomogram}: voxel size {voxel:.4g} A, but the model was trained at {model_voxel_size:.4g} A "
                             f"({ratio:.2f}x); resample the tomogram to about {model_voxel_size:.4g} A (e.g. IMOD's "
                             "binvol or squeezevol), or pass --allow-voxel-size-mismatch to segment it as it is")
    return TomogramInputs(tomogram, volumes, voxel, files)


@dataclass
class Prepared:
    """A tomogram read and preprocessed, ready to segment."""

    tomogram: Path
    inputs: np.ndarray  # (nz', ny', nx', C) float32
    voxel_size: float  # output voxel size (A) = input x bin factor
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)  # channel -> file read
    identity: Identity = field(default_factory=dict)  # of those files, before they were read
    input_bytes: int = 0  # of the volumes read


def prepare(tomogram: Path, info: ModelInfo, channel_dirs: Sequence[str | os.PathLike] = (),
            fallback_voxel_size: float | None = None, *, allow_voxel_size_mismatch: bool = False,
            clock: Callable[[], float] | None = None) -> Prepared:
    """Read the tomogram and its channels (memory-mapped) and preprocess them.

    With ``clock`` (the filesystem's time), inputs modified moments ago are first watched
    until they stop changing (:func:`settled_identity`); their identity before reading is
    returned with the result, for the done record.

    Raises
    ------
    NotReady
        An input is still being written.
    InputError
        As :func:`read_inputs`, or the data cannot be preprocessed (naming the file).
    """
    start = time.perf_counter()
    files = input_files(tomogram, info.channels, channel_dirs)
    before = settled_identity(files, clock) if clock is not None else identity(files)
    read = read_inputs(tomogram, info.channels, channel_dirs, fallback_voxel_size, info.voxel_size,
                       allow_voxel_size_mismatch, files)
    b = info.bin_factor
    shape = next(iter(read.volumes.values())).shape
    if min(shape) < b:
        raise InputError(f"{tomogram}: volume {shape} is smaller than the bin factor {b}")
    scales = channel_scales(read.volumes, info, {c: str(p) for c, p in read.files.items()})
    try:
        inputs = prepare_inputs(read.volumes, info, scales=scales)
    except InputError as exc:
        raise InputError(f"{tomogram}: {exc}") from None
    input_bytes = sum(int(v.nbytes) for v in read.volumes.values())
    return Prepared(tomogram, inputs, read.voxel_size * b, time.perf_counter() - start, read.files, before, input_bytes)
