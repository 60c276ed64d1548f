"""Inputs of a processing run: which tomograms, and each one's channel volumes.

Tomograms come from a folder (every ``*.mrc`` without ``__``) or a ``.txt`` list; the
channels of a tomogram are found by :func:`pom_common.naming.find_channel`'s rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pom_common.constants import DENSITY
from pom_common.errors import InputError
from pom_common.mrcio import read_volume
from pom_common.naming import find_channel, is_derived, list_tomograms

logger = logging.getLogger(__name__)


def tomograms_from(source: str | os.PathLike) -> list[Path]:
    """A folder of tomograms, or a .txt list with one path per line (relative to the list).

    Raises
    ------
    InputError
        ``source`` is neither a folder nor a .txt file.
    """
    source = Path(source)
    if source.is_dir():
        return list_tomograms(source)
    if source.suffix == ".txt" and source.is_file():
        paths = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            p = p if p.is_absolute() else source.parent / p
            if not is_derived(p):
                paths.append(p)
        return paths
    raise InputError(f"{source}: expected a folder of .mrc tomograms or a .txt list of paths")


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
