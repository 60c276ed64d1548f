"""Training commands with what real labs hand them (issue 20): full disks, killed runs, channels of other scales."""

from __future__ import annotations

import errno
import os

import pytest


def test_a_full_disk_in_single_initialize_is_one_line(ais_project, monkeypatch, capsys):
    tifffile = pytest.importorskip("tifffile")
    from pom_training.cli import main as pom_main

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", full)
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and ".tif" in err[0] and "Traceback" not in err[0]
    assert not list((ais_project / "training_datasets").rglob("*.tif*"))  # nothing half-written
