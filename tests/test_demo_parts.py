"""The demo's synthetic generator and its scoring."""

import json

import numpy as np
import pytest

from pom_common.mrcio import read_volume
from pom_common.scns import read_scns
from pom_tools.synthetic import CLASSES, make_phantom, plan_boxes, write_project
from pom_training.evaluation.metrics import mask_dice
from pom_training.evaluation.render import feature_colours, overlay_png
from pom_training.evaluation.truth import bin_labels

SMALL = (24, 96, 96)


def test_phantom_is_seeded_and_plausible():
    a, b = make_phantom(7, SMALL), make_phantom(7, SMALL)
    assert np.array_equal(a.density, b.density) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.density, make_phantom(8, SMALL).density)
    assert a.density.dtype == np.float32 and abs(float(a.density.mean())) < 1e-3
    assert a.membrane.dtype == np.uint8 and a.ribosome.dtype == np.uint8
    present = set(np.unique(a.labels))
    assert {0, 1, 2, 3} <= present  # void, cytoplasm, mitochondrion, vesicle
    # Dense = dark: vacuum is brighter than the lamella; membranes show in the membrane channel.
    assert a.density[a.labels == 0].mean() > a.density[a.labels == 1].mean()
    assert a.membrane[a.labels == 2].mean() > a.membrane[a.labels == 1].mean()


def test_boxes_lie_on_their_feature_and_inside_the_image():
    ph = make_phantom(3, SMALL)
    plan = plan_boxes(ph.labels, 0, box=48)
    assert set(plan) == set(CLASSES)
    for title, per_z in plan.items():
        for z, centres in per_z.items():
            for x, y in centres:
                assert ph.labels[z, y, x] == CLASSES.index(title)
                assert 24 <= x <= 96 - 24 and 24 <= y <= 96 - 24


def test_project_round_trips_through_the_ais_reader(tmp_path):
    stems = write_project(tmp_path, n_train=1, n_test=1, shape=SMALL, box=48)
    ann = read_scns(tmp_path / "tomograms" / f"{stems['train'][0]}.scns")
    assert ann.shape == SMALL and {f.title for f in ann.features} == set(CLASSES)
    raw = (tmp_path / "tomograms" / f"{stems['train'][0]}.scns").read_bytes()
    assert b"Ais.core.se_frame" in raw and b"SEFrame" in raw  # Ais's class layout
    truth = read_volume(tmp_path / "ground_truth" / f"{stems['train'][0]}__labels.mrc").data
    for feature in ann.features:
        f = CLASSES.index(feature.title)
        for z, mask in feature.slices.items():
            assert np.all(truth[z][mask.astype(bool)] == f)  # painted = ground truth
    config = json.loads((tmp_path / "project_configuration.json").read_text())
    assert config["ontologies"] == list(CLASSES) and config["ontology_annotation_box_size"] == 48
    assert (tmp_path / "test" / f"{stems['test'][0]}.mrc").is_file()


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    assert mask_dice(a, a) == 1.0
    assert mask_dice(a, ~a) == 0.0
    assert mask_dice(a, np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)
    assert mask_dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_bin_labels_majority():
    labels = np.zeros((2, 2, 4), np.int8)
    labels[:, :, 2:] = 3
    labels[0, 0, 0] = 1  # a minority voxel does not win
    assert bin_labels(labels, 4).tolist() == [[[0, 3]]]


def test_feature_library_formats(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text(json.dumps([{"title": "Void", "colour": [255, 0, 0]}]))
    assert feature_colours(plain) == {"Void": (1.0, 0.0, 0.0)}
    nested = tmp_path / "b.txt"
    nested.write_text(json.dumps({"active": "mine", "libraries": {"other": [], "mine": [
        {"title": "Vesicle", "colour": [0, 0.5, 1]}]}}))
    assert feature_colours(nested) == {"Vesicle": (0.0, 0.5, 1.0)}
    (tmp_path / "bad.txt").write_text("not json")
    assert feature_colours(tmp_path / "bad.txt") == {}


def test_overlay_png(tmp_path):
    from PIL import Image

    density = np.random.default_rng(0).standard_normal((20, 30))
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    overlay_png(tmp_path / "p.png", density, {"Void": mask}, {"Void": (1.0, 0.0, 0.0)})
    image = np.asarray(Image.open(tmp_path / "p.png"))
    assert image.shape == (20 * 13, 30 * 13, 3)  # enlarged to >= 384 px
    assert image[7 * 13, 7 * 13, 0] > image[7 * 13, 7 * 13, 1]  # red overlay where the mask is
