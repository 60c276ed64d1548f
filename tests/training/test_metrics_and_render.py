"""The scoring and pictures the demo, quality and ``pom evaluate`` share: Dice on masks, binned labels, colours, PNGs."""

import json

import numpy as np
import pytest

from pom_training.evaluation.metrics import mask_dice
from pom_training.evaluation.render import feature_colours, overlay_png
from pom_training.evaluation.truth import bin_labels


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
