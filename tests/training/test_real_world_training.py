"""Training commands with what real labs hand them (issue 20): full disks, killed runs, channels of other scales."""

from __future__ import annotations

import errno
import os

import pytest


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only filesystem"),
                                         (errno.EACCES, "this command runs as"), (errno.EDQUOT, "quota")])
@pytest.mark.parametrize("command", ["single", "shared"])
def test_a_filesystem_error_in_initialize_is_one_line(ais_project, monkeypatch, capsys, command, code, words):
    tifffile = pytest.importorskip("tifffile")
    from pom_training.cli import main as pom_main

    p = ["--project", str(ais_project)]
    if command == "shared":  # phase 1 first, written for real; the default method needs no single network
        assert pom_main([*p, "single", "initialize"]) == 0
    before = _tifs(ais_project / "training_datasets")

    def failing(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(tifffile, "imwrite", failing)
    capsys.readouterr()
    assert pom_main([*p, command, "initialize"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and os.strerror(code) in err[0] and words in err[0], err
    assert ".tif" in err[0] and "Traceback" not in err[0]
    assert _tifs(ais_project / "training_datasets") == before  # nothing half-written, the earlier phase kept


# ---------------------------------------------------------------------------- phase 1 and phase 2 as wholes


def _tifs(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_killed_single_initialize_leaves_the_previous_phase1_whole(ais_project, monkeypatch):
    from pom_training.cli import main as pom_main
    from pom_training.data import sampling

    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    phase1 = ais_project / "training_datasets" / "phase1"
    before = _tifs(phase1)
    real, calls = sampling.write_stack, []

    def dies_half_way(path, images, dtype=None, **kwargs):
        calls.append(path)
        if len(calls) > 5:
            raise KeyboardInterrupt  # killed (Ctrl-C) half-way through writing the stacks
        return real(path, images, **({"dtype": dtype} if dtype is not None else {}), **kwargs)

    monkeypatch.setattr(sampling, "write_stack", dies_half_way)
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 130
    assert _tifs(phase1) == before  # the previous complete set, not a mixture
    assert [p.name for p in phase1.parent.iterdir()] == ["phase1"]  # nothing left aside


def test_phase1_records_which_build_it_is(ais_project):
    import json

    from pom_training.cli import main as pom_main

    info = ais_project / "training_datasets" / "phase1" / "info.json"
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    first = json.loads(info.read_text())["build"]
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    assert json.loads(info.read_text())["build"] != first


def test_shared_train_refuses_phase2_built_from_an_earlier_phase1(ais_project, capsys):
    import json

    from pom_training.cli import main as pom_main

    project = ["--project", str(ais_project)]
    config = ais_project / "project_configuration.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "GPUS": "cpu", "shared_model_epochs": 1}))
    assert pom_main([*project, "single", "initialize"]) == 0
    assert pom_main([*project, "shared", "initialize"]) == 0  # "direct": from the painted labels
    phase2 = ais_project / "training_datasets" / "phase2"
    assert json.loads((phase2 / "info.json").read_text())["phase1_build"]
    assert pom_main([*project, "single", "initialize"]) == 0  # annotations sampled again
    capsys.readouterr()
    assert pom_main([*project, "shared", "train"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "phase 2 was built from an earlier phase 1" in err[0] and "pom shared initialize" in err[0]


# ---------------------------------------------------------------------------- channels and tomograms of other kinds


def _phase1_arrays(project):
    import tifffile

    folder = project / "training_datasets" / "phase1"
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def test_training_reads_channels_at_their_full_scale(ais_project):
    """A Membrane channel handed on as float32 0..1 probabilities samples as the 0..255 one does."""
    import numpy as np

    from pom_common.mrcio import read_volume, write_volume
    from pom_training.cli import main as pom_main

    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    reference = _phase1_arrays(ais_project)
    for path in (ais_project / "macromolecules").glob("*__Membrane.mrc"):
        volume = read_volume(path)
        write_volume(path, (np.asarray(volume.data, np.float32) / 255).astype(np.float32), volume.voxel_size)
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    again = _phase1_arrays(ais_project)
    assert reference.keys() == again.keys()
    assert all(np.allclose(reference[k], again[k], atol=1e-5) for k in reference)


def test_rec_tomograms_are_sampled_like_mrc(ais_project):
    import numpy as np

    from pom_training.cli import main as pom_main

    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    reference = _phase1_arrays(ais_project)
    for path in (ais_project / "tomograms").glob("*.mrc"):
        path.rename(path.with_suffix(".rec"))
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0
    again = _phase1_arrays(ais_project)
    assert reference.keys() == again.keys() and all(np.array_equal(reference[k], again[k]) for k in reference)


def test_a_channel_at_another_voxel_size_skips_its_file_naming_both(ais_project, capsys):
    import numpy as np

    from pom_common.mrcio import read_volume, write_volume
    from pom_training.cli import main as pom_main

    path = ais_project / "macromolecules" / "TS_001__Membrane.mrc"
    volume = read_volume(path)
    write_volume(path, np.asarray(volume.data).astype(np.uint8), volume.voxel_size * 2)
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 0  # TS_002 still gives images
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "TS_001__Membrane.mrc" in x)
    assert "31.36 A" in line and "15.68 A" in line


# ---------------------------------------------------------------------------- a network's files as one unit


@pytest.mark.slow
def test_a_stale_onnx_beside_a_newer_keras_is_refused_then_pom_export_repairs_it(tmp_path, capsys):
    """Killed between saving the .keras and writing the .onnx: the old .onnx is never used silently."""
    import dataclasses
    import json
    import shutil

    import keras

    from pom_common.modelmeta import ModelInfo
    from pom_training.cli import main as pom_main
    from pom_training.export import exporter
    from pom_training.fitting.checkpoints import save_keras
    from pom_training.fitting.config import TrainConfig
    from pom_training.models.unet import build_unet

    from ..helpers import copy_project

    project = copy_project(tmp_path / "p")
    config_path = project / "project_configuration.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "GPUS": "cpu", "model_base_filters": 4, "model_depth": 2}))
    shutil.copy(project / "tomograms" / "TS_001.mrc", project / "test" / "TS_001.mrc")
    for c in ("Membrane", "Ribosome"):
        shutil.copy(project / "macromolecules" / f"TS_001__{c}.mrc", project / "test" / f"TS_001__{c}.mrc")
    models = project / "models" / "phase1"
    models.mkdir(parents=True)
    from pom_common.config import load_config
    from pom_training.export.metadata import model_metadata

    cfg = load_config(config_path)
    meta = model_metadata(cfg, "single", ("Vesicle",), TrainConfig(1, 1, 4, 2), 15.68, {"seed": 1})
    keras.utils.set_random_seed(1)
    first = build_unet(3, 1, base_filters=4, depth=2, activation="sigmoid")
    exporter.save_and_export(first, models / "Vesicle.keras", models / "Vesicle.onnx", models / "ck.keras", meta,
                             "pom export -o Vesicle")
    # Retrained with seed 2, killed after its .keras was saved and before its export:
    keras.utils.set_random_seed(2)
    second = build_unet(3, 1, base_filters=4, depth=2, activation="sigmoid")
    newer = dataclasses.replace(meta, training={**meta.training, "seed": 2, "unit": "feedfacecafebeef"})
    save_keras(second, models / "Vesicle.keras", ("feedfacecafebeef", newer.to_json()))
    (models / ".Vesicle.onnx.tmp-123-abcd").write_bytes(b"half")  # and a temporary it left
    capsys.readouterr()
    assert pom_main(["--project", str(project), "single", "test", "-o", "Vesicle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Vesicle.onnx" in err[0] and "Vesicle.keras" in err[0] and "pom export -o Vesicle" in err[0]
    assert pom_main(["--project", str(project), "export", "-o", "Vesicle"]) == 0
    exported = ModelInfo.from_json(json.loads((models / "Vesicle.metadata.json").read_text()) and
                                   (models / "Vesicle.metadata.json").read_text(), "sidecar")
    assert exported.training["seed"] == 2 and exported.training["unit"] == "feedfacecafebeef"  # the newer run's
    assert pom_main(["--project", str(project), "single", "test", "-o", "Vesicle"]) == 0
