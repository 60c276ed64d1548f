"""Train -> export -> test on a copy of the fixture project, with tiny models on the CPU."""

import shutil

import numpy as np
import pytest

from pom_common.config import load_config, replace
from pom_common.errors import ConfigError, InputError, ModelError
from pom_common.mrcio import read_volume
from pom_training.cli import main as pom_main

from ..helpers import initialised_project

pytestmark = pytest.mark.slow  # every test here trains, or builds networks with TensorFlow

#: Pom's workflow ("label_method": "pom"); the painted-label methods: tests/test_painted_training.py.
TINY = {"model_base_filters": 4, "model_depth": 2, "single_model_epochs": 4, "single_model_batch_size": 16,
        "shared_model_epochs": 4, "shared_model_batch_size": 16, "shared_model_runs_per_volume": 2, "GPUS": "cpu",
        "label_method": "pom"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The fixture project, initialised, with every single model trained (tiny)."""
    project = initialised_project(tmp_path_factory.mktemp("trained") / "project", TINY)
    assert pom_main(["--project", str(project), "single", "train", "-all", "1"]) == 0
    return project


def test_unet_smoke():
    from pom_training.models.unet import build_unet

    model = build_unet(3, 2, base_filters=4, depth=2, activation="softmax")
    out = model(np.zeros((2, 8, 12, 3), np.float32), training=False)
    assert tuple(out.shape) == (2, 8, 12, 2)
    assert np.allclose(np.asarray(out).sum(-1), 1, atol=1e-5)
    assert 1000 < model.count_params() < 10000


def test_single_training_exports_self_describing_onnx(trained):
    from pom_inference.session import load_model

    models = trained / "models" / "phase1"
    for feature in ("Cytoplasm", "Mitochondrion", "Vesicle", "Void"):
        assert (models / f"{feature}.keras").is_file() and (models / f"{feature}.onnx").is_file()
        assert not (models / f"{feature}_checkpoint.keras").exists()
    info = load_model(models / "Mitochondrion.onnx").info
    assert info.kind == "single" and info.classes == ("Mitochondrion",)
    assert info.channels == ("Density", "Membrane", "Ribosome") and info.z_sum == 2 and info.bin_factor == 2
    assert info.size_multiple == 4 and info.voxel_size == pytest.approx(15.68)
    assert info.normalisation == {"Density": "local", "Membrane": "uint8",
                                  "Ribosome": "uint8"}
    assert info.normalisation_window == 32  # the training crop: box 64, binned 2x
    losses = info.training["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the training loss goes down
    assert info.training["counterexamples"] is True and info.version


def test_single_test_writes_volumes_with_voxel_size(trained):
    assert pom_main(["--project", str(trained), "single", "test", "-o", "Vesicle"]) == 0
    vol = read_volume(trained / "test" / "TS_003__Vesicle.mrc")
    assert vol.shape == (20, 48, 64) and vol.voxel_size == pytest.approx(31.36)
    data = np.asarray(vol.data)
    assert np.isfinite(data).all() and 0 <= data.min() and data.max() <= 1
    assert np.all(data[:, -1, :] != 0)  # borders are segmented too (reflection padding)


def test_counterexamples_join_masked(trained):
    from pom_training.labels.pom import pom_single_dataset

    config = load_config(trained / "project_configuration.json")
    x, y = pom_single_dataset(config, "Vesicle", counterexamples=True)
    x0, y0 = pom_single_dataset(config, "Vesicle", counterexamples=False)
    assert len(x0) == 9 and np.all(y0[..., 1] == 1)
    extra = y[len(y0):]
    assert len(extra) == 10 + 7 + 6  # other features' annotated images only
    assert np.all(extra[..., 0] == 0) and np.all(extra.reshape(len(extra), -1, 2)[..., 1].sum(1) > 0)


def test_unknown_feature_lists_ontologies(trained):
    config = load_config(trained / "project_configuration.json")
    from pom_training.labels.pom import pom_single_dataset

    with pytest.raises(ConfigError, match=r"'Golgi'.*Cytoplasm"):
        pom_single_dataset(config, "Golgi", True)


def test_feature_without_data(trained, tmp_path):
    from pom_training.labels.pom import pom_single_dataset

    config = replace(load_config(trained / "project_configuration.json"), ontologies=("Void", "Nucleus"))
    with pytest.raises(InputError, match=r"no training data for 'Nucleus'.*Cytoplasm"):
        pom_single_dataset(config, "Nucleus", True)


def test_export_check_fails_loudly(tmp_path, monkeypatch):
    from pom_common.config import ProjectConfig
    from pom_training.export import exporter, parity
    from pom_training.export.metadata import model_metadata
    from pom_training.fitting.config import TrainConfig
    from pom_training.models.unet import build_unet

    model = build_unet(1, 1, 4, 2)
    meta = model_metadata(ProjectConfig(), "single", ("A",), TrainConfig(1, 1, 4, 2), 10.0)
    monkeypatch.setattr(parity, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ModelError, match="export check failed"):
        exporter.export_onnx(model, tmp_path / "a.onnx", meta)
    assert list(tmp_path.iterdir()) == []


def _h5_groups(keras_path):
    """The top-level groups of a .keras file's weights (``optimizer`` when its state was saved)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5:
        return sorted(h5.keys())


def test_shared_initialize_train_and_process(trained):
    config_before = (trained / "project_configuration.json").read_text()
    assert pom_main(["--project", str(trained), "shared", "initialize", "-selective", "1"]) == 0
    phase2 = trained / "training_datasets" / "phase2"
    import tifffile

    outs = {c: tifffile.imread(phase2 / f"out_{c}.tif") for c in ("Cytoplasm", "Mitochondrion", "Vesicle", "Void",
                                                                    "Unknown")}
    total = sum(outs.values())
    assert total.shape == (31, 32, 32) and np.all(total == 1)  # one-hot; 31 annotated images
    assert tifffile.imread(phase2 / "in_Density.tif").shape == (31, 32, 32)
    assert pom_main(["--project", str(trained), "shared", "train"]) == 0
    from pom_inference.session import load_model

    info = load_model(trained / "models" / "phase2" / "shared.onnx").info
    assert info.kind == "shared" and info.classes == ("Cytoplasm", "Mitochondrion", "Vesicle", "Void", "Unknown")
    assert load_config(trained / "project_configuration.json").ontologies == ("Cytoplasm", "Mitochondrion",
                                                                                "Vesicle", "Void")
    assert (trained / "project_configuration.json").read_text() == config_before  # never mutated
    # The saved network holds no optimizer state (nothing reads it), and continuing from it works.
    keras_path = trained / "models" / "phase2" / "shared.keras"
    assert "optimizer" not in _h5_groups(keras_path)
    import keras

    before = keras.models.load_model(keras_path, compile=False).get_weights()
    assert pom_main(["--project", str(trained), "shared", "train", "-checkpoint", str(keras_path)]) == 0
    after = keras.models.load_model(keras_path, compile=False).get_weights()
    assert len(after) == len(before) and any(not np.array_equal(a, b) for a, b in zip(after, before))
    # Process every tomogram (two workers).
    shutil.copy(trained / "test" / "TS_003.mrc", trained / "tomograms" / "TS_003.mrc")
    for ch in ("Membrane", "Ribosome"):
        shutil.copy(trained / "test" / f"TS_003__{ch}.mrc", trained / "macromolecules" / f"TS_003__{ch}.mrc")
    assert pom_main(["--project", str(trained), "shared", "process", "-gpus", "cpu", "-workers", "2"]) == 0
    out = trained / "output"
    names = sorted(p.name for p in out.glob("*.mrc"))
    assert len(names) == 15 and "TS_003__Unknown.mrc" in names
    vols = [np.asarray(read_volume(out / f"TS_003__{c}.mrc").data) for c in info.classes]
    assert np.allclose(sum(vols), 1, atol=1e-4)  # softmax probabilities
