"""Shared fixtures: tiny volumes in tmp_path, a copy of the Ais fixture project.

The helpers themselves live in :mod:`tests.helpers`; they are importable from here too, as
older tests import them (``from .conftest import make_onnx_model``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .helpers import (  # noqa: F401 (re-exported)
    AIS_MINI,
    DATA,
    EXPECTED_PHASE1,
    REAL_MRC,
    _copy_project,
    copy_project,
    initialised_project,
    make_onnx_model,
    make_tomograms,
)


@pytest.fixture
def ais_project(tmp_path: Path) -> Path:
    """A writable copy of the fixture project (configuration, tomograms, .scns, channels)."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def python_exe() -> str:
    return sys.executable
