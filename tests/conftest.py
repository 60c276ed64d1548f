"""Shared fixtures: tiny volumes in tmp_path, a copy of the Ais fixture project."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
AIS_MINI = DATA / "ais_mini"
EXPECTED_PHASE1 = DATA / "expected_pom_phase1"
REAL_MRC = DATA / "real_mrc"


def _copy_project(dst: Path) -> Path:
    shutil.copytree(AIS_MINI, dst)
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def ais_project(tmp_path: Path) -> Path:
    """A writable copy of the fixture project (configuration, tomograms, .scns, channels)."""
    return _copy_project(tmp_path / "project")


@pytest.fixture
def python_exe() -> str:
    return sys.executable
