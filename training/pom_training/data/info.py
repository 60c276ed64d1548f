"""The ``info.json`` records beside the stacks: one reader, one rule.

A folder of stacks without ``info.json`` was made by Pom (or by a version before the
record): that is an empty record. A record that exists but cannot be read is an error naming
the file and the step that writes it again; it is never taken for an empty one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pom_common.atomic import atomic_write_text
from pom_common.config import ProjectConfig
from pom_common.errors import InputError
from pom_common.layout import ProjectLayout

from .stacks import PHASE1_STEP, PHASE2_STEP


def read_info(path: Path, step: str) -> dict[str, Any]:
    """The record at ``path``: {} when there is none.

    Raises
    ------
    InputError
        It exists but is not a readable JSON object (run ``step`` again).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the record of the stacks ({exc}); run '{step}' again") from None
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise InputError(f"{path}: not a record of the stacks (a JSON object); run '{step}' again")
    return info


def write_info(path: Path, info: dict[str, Any], indent: int | None = None) -> None:
    """Write a record atomically (one JSON object and a newline)."""
    atomic_write_text(path, json.dumps(info, indent=indent) + "\n")


def phase1_info(config: ProjectConfig) -> dict[str, Any]:
    """``phase1/info.json``: voxel sizes, painted classes, crop positions ({} for Pom's stacks)."""
    return read_info(ProjectLayout.of(config).phase1_info, PHASE1_STEP)


def phase2_info(config: ProjectConfig) -> dict[str, Any]:
    """``phase2/info.json``: the label method, images and base images ({} for Pom's stacks)."""
    return read_info(ProjectLayout.of(config).phase2_info, PHASE2_STEP)


def training_voxel_size(config: ProjectConfig) -> float:
    """Unbinned voxel size (A) of the training tomograms, as recorded by phase 1; ``apix`` when not recorded."""
    voxel_size = phase1_info(config).get("voxel_size")
    if isinstance(voxel_size, (int, float)) and not isinstance(voxel_size, bool):
        return float(voxel_size)
    return float(config.apix)
