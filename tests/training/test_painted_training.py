"""label_method: "pom" trains as before; "painted" and "direct" learn every painted pixel, reproducibly."""

import json
import os
import shutil

import numpy as np
import pytest
import tifffile

from pom_common.config import load_config, replace
from pom_common.errors import ConfigError, InputError
from pom_common.layout import PAINTED, ProjectLayout
from pom_training.data.sampling import phase1_initialize

from ..helpers import copy_project, make_onnx_model

TINY = {"model_base_filters": 4, "model_depth": 2, "single_model_epochs": 2, "single_model_batch_size": 16,
        "shared_model_epochs": 2, "shared_model_batch_size": 16}
#: Losses of the tiny "pom" training below, taken before the label methods existed (train.py at 93047e4).
POM_VESICLE_LOSSES = [0.7964627146720886, 0.7201336026191711]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("painted") / "project")
    config = replace(load_config(project / "project_configuration.json"), **TINY)
    phase1_initialize(config, progress=False)
    return project, config


def _weights(path):
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_pom_mode_trains_as_before(sampled):
    """The "pom" method is Pom's algorithm as this toolkit always ran it: same data, loop and result."""
    import keras

    from pom_common.d4 import all_eight
    from pom_training.fitting.config import TrainConfig
    from pom_training.fitting.feeds import EveryOrientation
    from pom_training.fitting.loop import fit
    from pom_training.fitting.plan import BEST_EPOCH
    from pom_training.labels.pom import pom_single_dataset
    from pom_training.models.losses import masked_binary_crossentropy
    from pom_training.models.unet import build_unet
    from pom_training.train import train_single

    project, config = sampled
    config = replace(config, label_method="pom")
    tc = TrainConfig.single(config)
    result = train_single(config, "Vesicle", gpus=[], tc=tc)
    np.testing.assert_allclose(result["losses"], POM_VESICLE_LOSSES, rtol=1e-3)
    # The same, written out: Pom's counterexample data, 8-fold augmentation, Adam, best-loss weights.
    x, y = pom_single_dataset(config, "Vesicle", counterexamples=True)
    keras.utils.set_random_seed(tc.seed)
    x8, y8 = all_eight(x), all_eight(y)
    model = build_unet(x.shape[-1], 1, tc.base_filters, tc.depth, activation="sigmoid")
    losses = fit(model, EveryOrientation(x8, y8, min(tc.batch_size, len(x8))), masked_binary_crossentropy, tc,
                 BEST_EPOCH, project / "ref_checkpoint.keras", "reference")
    assert losses == result["losses"]
    for a, b in zip(_weights(result["keras"]), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_painted_single_targets_use_every_painted_pixel(sampled):
    from pom_training.labels.painted import load_painted as load_phase1
    from pom_training.labels.painted import painted_single_dataset
    from pom_training.labels.pom import pom_single_dataset as load_single_dataset

    project, config = sampled
    data = load_phase1(config)
    x, t = painted_single_dataset(data, "Vesicle")
    x_pom, t_pom = load_single_dataset(config, "Vesicle", counterexamples=True)
    n_own = len(data.x["Vesicle"])
    np.testing.assert_array_equal(t[:n_own], t_pom[:n_own])  # own crops: Pom's target
    others = t[n_own:]
    code = config.ontologies.index("Vesicle") + 1
    codes = np.concatenate([data.codes[o] for o in data.features if o != "Vesicle"])
    codes = codes[(codes != 0).reshape(len(codes), -1).any(1)]
    np.testing.assert_array_equal(others[..., 1], (codes != 0).astype(np.float32))
    np.testing.assert_array_equal(others[..., 0], (codes == code).astype(np.float32))
    assert others[..., 0].sum() > 0  # Vesicle paint in other features' crops: positives Pom never saw
    assert others[..., 1].sum() > t_pom[n_own:, ..., 1].sum()  # more known pixels than Pom's counterexamples


def test_extra_crops_are_recorded(sampled):
    project, config = sampled
    phase1 = project / "training_datasets" / "phase1"
    codes = tifffile.imread(ProjectLayout(project).phase1_extra(PAINTED))
    info = json.loads((phase1 / "info.json").read_text())
    assert len(codes) == len(info["extra_crops"]) > 33  # about 2 per kept box
    assert np.all((codes != 0).reshape(len(codes), -1).any(1))
    assert tifffile.imread(ProjectLayout(project).phase1_extra("Density")).shape == codes.shape


@pytest.mark.slow
def test_direct_phase2_is_the_paint_and_training_is_reproducible(sampled, tmp_path):
    from pom_training.data.info import phase2_info as read_phase2_info
    from pom_training.data.phase2 import load_phase2
    from pom_training.fitting.config import TrainConfig
    from pom_training.fitting.network import train_network
    from pom_training.labels.registry import method_for
    from pom_training.prepare import initialize_phase2 as phase2_initialize
    from pom_training.train import train_shared as train_shared_stable

    project, config = sampled
    config = replace(config, label_method="direct")
    summary = phase2_initialize(config, progress=False)  # no single network needed
    phase2 = project / "training_datasets" / "phase2"
    classes = (*config.ontologies, "Unknown")
    out = np.stack([tifffile.imread(phase2 / f"out_{c}.tif") for c in classes], -1)
    w = config.shared_model_negative_weight  # "not X" carries its weight in the loss
    assert set(np.unique(out)) == {-w, 0.0, 1.0} and not out[..., -1].any()  # Unknown is never a target
    painted = (out == 1).any(-1)
    assert set(np.unique((out == 1).sum(-1))) == {0, 1} and not (out[painted] < 0).any()
    assert (out == -w).any(-1)[~painted].any()  # unpainted pixels in a box of another class: "not that class"
    info = read_phase2_info(config)
    assert info["label_method"] == "direct" and info["base_images"] == 33 and info["images"] == summary["images"]
    result = train_shared_stable(config, gpus=[], tc=TrainConfig.shared(config))
    weights = [_weights(result["keras"])]
    data = load_phase2(config)
    for seed in (0, 1):  # the same fit again, without the export
        tc = replace(TrainConfig.shared(config), seed=seed)
        job = method_for(config).shared_job(config, data, tc)
        assert job.base == info["base_images"]
        model, losses = train_network(job, tc, [], tmp_path / "c.keras", "again")
        weights.append(model.get_weights())
    assert losses != result["losses"]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))  # reproducible for a seed
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[2]))
    from pom_inference.session import load_model

    model = load_model(project / "models" / "phase2" / "shared.onnx")
    assert model.info.classes == classes and model.info.training["label_method"] == "direct"
    assert model.info.z_smooth == config.shared_model_z_smooth and model.info.training["negative_weight"] == w


def test_painted_phase2_overrides_the_joint_labels(sampled):
    from pom_training.prepare import initialize_phase2 as phase2_initialize

    project, config = sampled
    models = project / "models" / "phase1"
    shutil.rmtree(models, ignore_errors=True)  # a network another test trained would make its stand-in stale
    models.mkdir(parents=True)
    for i, o in enumerate(config.ontologies):  # stand-in single networks (no TensorFlow)
        make_onnx_model(models / f"{o}.onnx", channels=config.macromolecules, classes=(o,), z_sum=2, seed=i)
    phase2 = project / "training_datasets" / "phase2"
    classes = (*config.ontologies, "Unknown")
    stacks = {}
    for method in ("pom", "painted"):
        phase2_initialize(replace(config, label_method=method), progress=False)
        stacks[method] = np.stack([tifffile.imread(phase2 / f"out_{c}.tif") for c in classes], -1)
    pom, painted = stacks["pom"], stacks["painted"]
    n = len(pom)  # Pom's (selective) crops first, then the extra crops
    assert len(painted) > n
    codes = np.concatenate([tifffile.imread(project / "training_datasets" / "phase1" / f"{o}_{PAINTED}.tif")
                            for o in config.ontologies])
    y = np.concatenate([tifffile.imread(project / "training_datasets" / "phase1" / f"{o}_y.tif")
                        for o in config.ontologies])
    codes = codes[y.reshape(len(y), -1).sum(1) > 0]
    is_painted = codes != 0
    np.testing.assert_array_equal(painted[:n][~is_painted], pom[~is_painted])  # the networks' labels elsewhere
    np.testing.assert_array_equal(painted[:n][is_painted].argmax(-1), codes[is_painted] - 1)
    assert (pom[is_painted].argmax(-1) != codes[is_painted] - 1).any()  # Pom's labels differ somewhere painted


def test_painted_labels_must_match_the_ontologies(sampled):
    from pom_training.labels.painted import load_painted as load_phase1

    project, config = sampled
    with pytest.raises(InputError, match="run 'pom single initialize' again"):
        load_phase1(replace(config, ontologies=tuple(reversed(config.ontologies))))


@pytest.mark.slow
def test_default_workflow_needs_no_single_network(tmp_path, capsys):
    """The default, "direct": initialize, shared initialize, shared train -seed, then evaluate; no single network."""
    from pom_common.config import ProjectConfig
    from pom_training.cli import main

    project = copy_project(tmp_path / "project")
    path = project / "project_configuration.json"
    doc = json.loads(path.read_text())
    assert "label_method" not in doc and ProjectConfig().label_method == "direct"
    doc.update({**TINY, "GPUS": "cpu"})
    path.write_text(json.dumps(doc))
    p = ["--project", str(project)]
    assert main([*p, "single", "initialize"]) == 0
    assert main([*p, "shared", "initialize"]) == 0
    assert main([*p, "shared", "train", "-seed", "3"]) == 0
    assert not (project / "models" / "phase1").exists()
    from pom_inference.session import load_model

    info = load_model(project / "models" / "phase2" / "shared.onnx").info
    assert info.training["label_method"] == "direct" and info.training["seed"] == 3
    assert (project / "models" / "phase2" / "shared.metadata.json").is_file()  # `pom export shared` works too
    # Stacks from another method are refused by name.
    doc["label_method"] = "painted"
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main([*p, "shared", "train"]) == 1
    assert "made with label_method 'direct'" in capsys.readouterr().err


def test_phase2_stacks_of_another_method_are_refused_both_ways(sampled, capsys):
    """Pom-made phase 2 stacks (no info.json) are not trained as "direct", nor "direct" ones as "pom"."""
    from pom_common.config import write_config
    from pom_training.cli import main
    from pom_training.prepare import initialize_phase2 as phase2_initialize

    project, config = sampled
    phase2_initialize(replace(config, label_method="direct"), progress=False)
    info = ProjectLayout.of(config).phase2_info
    p = ["--project", str(project)]
    models = project / "models" / "phase2"
    models.mkdir(parents=True, exist_ok=True)
    before = sorted(os.listdir(models))
    write_config(replace(config, label_method="pom", GPUS="cpu"), project / "project_configuration.json")
    capsys.readouterr()  # (a handler left by an earlier test's main() may have complained about its closed stream)
    assert main([*p, "shared", "train"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "label_method 'direct'" in err and "'pom shared initialize'" in err
    info.unlink()  # as Pom leaves them
    write_config(replace(config, label_method="direct", GPUS="cpu"), project / "project_configuration.json")
    assert main([*p, "shared", "train"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Pom's method" in err and '"label_method": "pom"' in err
    assert sorted(os.listdir(models)) == before  # nothing trained, nothing written


def test_phase1_stacks_out_of_step_are_named(sampled, tmp_path):
    import shutil

    from pom_training.labels.painted import load_painted as load_phase1

    project, config = sampled
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    config = replace(config, base_dir=str(copy))
    phase1 = copy / "training_datasets" / "phase1"
    extra = ProjectLayout(copy).phase1_extra("Density")
    tifffile.imwrite(extra, tifffile.imread(extra)[:3], photometric="minisblack")
    with pytest.raises(InputError, match="Density.tif: 3 images .* run 'pom single initialize' again"):
        load_phase1(config)
    channel = phase1 / f"{config.ontologies[0]}_{config.macromolecules[-1]}.tif"
    tifffile.imwrite(channel, tifffile.imread(channel)[:1])
    with pytest.raises(InputError, match=f"{channel.name}: 1 images"):
        load_phase1(config)


def test_a_channel_named_painted_needs_label_method_pom(sampled, tmp_path):
    from pom_training.prepare import initialize_phase1 as initialize

    project, config = sampled
    clash = replace(config, macromolecules=(*config.macromolecules, "Painted"), label_method="direct")
    with pytest.raises(ConfigError, match="'macromolecules' has a channel named 'Painted'"):
        initialize(clash, progress=False)
