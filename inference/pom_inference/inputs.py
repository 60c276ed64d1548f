"""Inputs of a processing run: which tomograms, each one's channel volumes, the network input.

Tomograms come from a folder (every ``*.mrc`` without ``__``) or a ``.txt`` list; the
channels of a tomogram are found by :func:`pom_common.naming.find_channel`'s rule.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pom_common.constants import DENSITY
from pom_common.errors import ConfigError, InputError
from pom_common.files import read_regular_file
from pom_common.modelmeta import ModelInfo
from pom_common.mrcio import read_volume
from pom_common.naming import find_channel, is_derived, list_tomograms

from .preprocess import prepare_inputs

logger = logging.getLogger(__name__)

#: A list of tomograms larger than this is not one.
MAX_LIST_BYTES = 64 << 20


def tomograms_from(source: str | os.PathLike) -> list[Path]:
    """A folder of tomograms, or a .txt list with one path per line (relative to the list).

    Raises
    ------
    ConfigError
        ``source`` is neither a folder nor a readable UTF-8 .txt file.
    """
    source = Path(source)
    if source.is_dir():
        return list_tomograms(source)
    if source.suffix == ".txt":
        try:
            text = read_regular_file(source, MAX_LIST_BYTES).decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the list ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte at position {exc.start}); save the list as UTF-8") from None
        paths = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            p = p if p.is_absolute() else source.parent / p
            if not is_derived(p):
                paths.append(p)
        return paths
    raise ConfigError(f"{source}: expected a folder of .mrc tomograms or a .txt list of paths")


@dataclass(frozen=True)
class TomogramInputs:
    """The channel volumes of one tomogram (memory-mapped) and its voxel size."""

    tomogram: Path
    volumes: dict[str, np.ndarray]  # channel -> (nz, ny, nx)
    voxel_size: float  # A, unbinned


def read_inputs(tomogram: Path, channels: Sequence[str], channel_dirs: Sequence[str | os.PathLike] = (),
                fallback_voxel_size: float | None = None, model_voxel_size: float = 0.0) -> TomogramInputs:
    """Open ``tomogram`` and the other ``channels`` it needs, memory-mapped.

    The voxel size comes from the tomogram's header; a header that says 0 or 1 (unset)
    falls back to ``fallback_voxel_size``, else to the model's training voxel size (said
    in a warning), else 1.

    Raises
    ------
    InputError
        A file is missing or unreadable, or a channel's shape differs from the tomogram's.
    """
    density = read_volume(tomogram, fallback_voxel_size)
    volumes = {}
    for channel in channels:
        vol = density if channel == DENSITY else read_volume(find_channel(tomogram, channel, channel_dirs))
        if vol.shape != density.shape:
            raise InputError(f"{vol.path}: shape {vol.shape} differs from its tomogram {tomogram.name} {density.shape}")
        volumes[channel] = vol.data
    voxel = density.voxel_size
    if not density.voxel_size_from_header and fallback_voxel_size is None:
        voxel = model_voxel_size or 1.0
        logger.warning("%s: header voxel size unset; using the model's %.4g A", tomogram.name, voxel)
    return TomogramInputs(tomogram, volumes, voxel)


@dataclass
class Prepared:
    """A tomogram read and preprocessed, ready to segment."""

    tomogram: Path
    inputs: np.ndarray  # (nz', ny', nx', C) float32
    voxel_size: float  # output voxel size (A) = input x bin factor
    seconds: float
    input_bytes: int = 0  # of the volumes read


def prepare(tomogram: Path, info: ModelInfo, channel_dirs: Sequence[str | os.PathLike] = (),
            fallback_voxel_size: float | None = None) -> Prepared:
    """Read the tomogram and its channels (memory-mapped) and preprocess them."""
    start = time.perf_counter()
    read = read_inputs(tomogram, info.channels, channel_dirs, fallback_voxel_size, info.voxel_size)
    b = info.bin_factor
    shape = next(iter(read.volumes.values())).shape
    if min(shape) < b:
        raise InputError(f"{tomogram}: volume {shape} is smaller than the bin factor {b}")
    try:
        inputs = prepare_inputs(read.volumes, info)
    except InputError as exc:
        raise InputError(f"{tomogram}: {exc}") from None
    input_bytes = sum(int(v.nbytes) for v in read.volumes.values())
    return Prepared(tomogram, inputs, read.voxel_size * b, time.perf_counter() - start, input_bytes)
