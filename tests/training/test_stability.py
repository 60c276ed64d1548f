"""Issue 24's training pieces: the boxes' negatives, the partial cross-entropy, intensity augmentation, ensembles."""

import numpy as np
import pytest

from pom_training.labels.negatives import box_index, not_masks


def test_box_negatives_are_the_unpainted_pixels_inside_a_box_of_that_class():
    # two classes, box 16 (crop 8 x 8 binned); a crop centred at (x, y) = (20, 20) on slice 5 of TS_001
    crops = {"A": [["TS_001", 5, 20, 20]], "B": [["TS_001", 5, 28, 20]], "C": [["TS_002", 5, 20, 20]]}
    boxes = box_index(crops, ("A", "B"))
    assert boxes == {("TS_001", 5): [(0, 20, 20), (1, 28, 20)]}  # C is no ontology
    codes = np.zeros((1, 8, 8), np.uint8)
    codes[0, :, :2] = 1  # painted A on the left
    codes[0, :, 6:] = 2  # painted B on the right
    masks = not_masks([("TS_001", 5, 20, 20)], codes, boxes, 2, 16)
    assert masks.shape == (1, 8, 8, 2)
    np.testing.assert_array_equal(masks[0, ..., 0], codes[0] != 1)  # A's box is the whole crop: all but A is not A
    # B's box starts 8 px (4 binned) to the right: only those columns are known, and painted B is not excluded
    expected = np.zeros((8, 8), bool)
    expected[:, 4:6] = True
    np.testing.assert_array_equal(masks[0, ..., 1], expected)
    assert not not_masks([("TS_001", 6, 20, 20)], codes, boxes, 2, 16).any()  # another slice: nothing known


def test_partial_cross_entropy_counts_paint_and_exclusions():
    import tensorflow as tf

    from pom_training.models.losses import partial_categorical_crossentropy

    p = np.array([[[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]], np.float32)  # (1, 1, 3, K=3)
    y = np.array([[[[1, 0, 0], [-1, 0, 0], [0, 0, 0]]]], np.float32)  # painted A; not A; ignored
    loss = float(partial_categorical_crossentropy(tf.constant(y), tf.constant(p)))
    assert loss == pytest.approx((-np.log(0.5) - np.log(1 - 0.1)) / 2, rel=1e-5)
    y2 = np.array([[[[0, 0, 0], [-1, -1, 0], [0, 0, 0]]]], np.float32)  # not A nor B: must be C
    loss2 = float(partial_categorical_crossentropy(tf.constant(y2), tf.constant(p)))
    assert loss2 == pytest.approx(-np.log(0.3), rel=1e-5)
    y3 = np.array([[[[1, 0, 0], [-2, 0, 0], [0, 0, 0]]]], np.float32)  # a negative of weight 2
    loss3 = float(partial_categorical_crossentropy(tf.constant(y3), tf.constant(p)))
    assert loss3 == pytest.approx((-np.log(0.5) - 2 * np.log(1 - 0.1)) / 3, rel=1e-5)
    y4 = np.array([[[[1, 0, 0], [-0.5, 0, 0], [0, 0, 0]]]], np.float32)  # weight 0.5: the same p, half the say
    loss4 = float(partial_categorical_crossentropy(tf.constant(y4), tf.constant(p)))
    assert loss4 == pytest.approx((-np.log(0.5) - 0.5 * np.log(1 - 0.1)) / 1.5, rel=1e-5)


def test_direct_targets_carry_the_negative_weight():
    from pom_training.data.phase1 import Phase1Data
    from pom_training.labels.direct import direct_shared_dataset

    codes = np.zeros((1, 8, 8), np.uint8)
    codes[0, :, :2] = 1  # painted A on the left of A's box
    data = Phase1Data(("A", "B"), {"A": np.zeros((1, 8, 8, 1), np.float32)}, {"A": np.zeros((1, 8, 8))},
                      {"A": codes})
    info = {"crops": {"A": [["TS_001", 5, 20, 20]]}}
    for weight in (1.0, 3.0):
        _, t, _, _ = direct_shared_dataset(data, info, 16, negative_weight=weight)
        np.testing.assert_array_equal(t[0, :, :2, 0], 1)  # paint
        np.testing.assert_array_equal(t[0, :, 2:, 0], -weight)  # not A, with its weight
        assert not t[..., 1:].any()  # B has no box: nothing known of it


def test_negative_weight_must_be_positive():
    from pom_common.config import validate_config

    assert validate_config({"shared_model_negative_weight": 3}) == []
    problems = validate_config({"shared_model_negative_weight": 0})
    assert problems and "shared_model_negative_weight" in problems[0]


def test_augmentation_changes_inputs_only_and_keeps_the_draws():
    from pom_training.fitting.feeds import SeededDraws, augment_intensity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 16, 16, 2)).astype(np.float32)
    y = rng.integers(0, 2, (6, 16, 16, 3)).astype(np.float32)
    a = augment_intensity(x[0], np.random.default_rng(7))
    np.testing.assert_array_equal(a, augment_intensity(x[0], np.random.default_rng(7)))  # seeded
    assert a.shape == x[0].shape and a.dtype == np.float32 and not np.array_equal(a, x[0])
    plain, augmented = SeededDraws(x, y, 4, 12, seed=3), SeededDraws(x, y, 4, 12, seed=3, augment=True)
    again = SeededDraws(x, y, 4, 12, seed=3, augment=True)
    for i in range(len(plain)):
        (xp, yp), (xa, ya), (xb, _) = plain[i], augmented[i], again[i]
        np.testing.assert_array_equal(yp, ya)  # the same crops and transforms; labels untouched
        np.testing.assert_array_equal(xa, xb)  # reproducible for a seed
        assert not np.array_equal(xp, xa)


def test_min_draws_makes_enough_steps():
    from pom_training.fitting.config import TrainConfig
    from pom_training.fitting.feeds import make_feed
    from pom_training.fitting.job import Job
    from pom_training.fitting.plan import PARTIAL_CCE, STABLE

    x = np.zeros((3, 16, 16, 1), np.float32)
    y = np.zeros((3, 16, 16, 2), np.float32)
    job = Job("t", x, y, 2, "softmax", PARTIAL_CCE, STABLE)
    assert len(make_feed(job, TrainConfig(1, 8, 4, 2))) == 3  # 8 draws per crop, batches of 8
    assert len(make_feed(job, TrainConfig(1, 8, 4, 2, min_draws=100))) == 13


@pytest.mark.slow
def test_ensemble_is_one_model_whose_onnx_is_the_members_mean(tmp_path):
    import keras

    from pom_common.modelmeta import ModelInfo
    from pom_inference import load_model
    from pom_training.export.exporter import export_onnx
    from pom_training.models.ensemble import average, members
    from pom_training.models.unet import build_unet

    keras.utils.set_random_seed(0)
    nets = [build_unet(1, 3, 4, 2, activation="softmax") for _ in range(2)]
    model = average(nets)
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    mean = np.mean([n(x).numpy() for n in nets], axis=0)
    np.testing.assert_allclose(model(x).numpy(), mean, atol=1e-6)
    model.save(tmp_path / "e.keras")
    again = keras.models.load_model(tmp_path / "e.keras", compile=False)
    assert members(again) == 2 and members(nets[0]) == 1
    np.testing.assert_allclose(again(x).numpy(), mean, atol=1e-6)
    info = ModelInfo(kind="shared", classes=("A", "B", "Unknown"), channels=("Density",), z_sum=1, size_multiple=4)
    export_onnx(model, tmp_path / "e.onnx", info)
    np.testing.assert_allclose(load_model(tmp_path / "e.onnx", quiet=True).run(x), mean, atol=1e-5)


def test_z_smooth_goes_into_shared_models_but_not_pom_s():
    from pom_common.config import ProjectConfig
    from pom_training.export.metadata import model_metadata
    from pom_training.fitting.config import TrainConfig
    from pom_training.labels.registry import METHODS

    tc = TrainConfig(1, 8, 4, 2)
    config = ProjectConfig(ontologies=("A",))
    assert model_metadata(config, "shared", ("A", "Unknown"), tc, 10.0, z_smooth=5).z_smooth == 5
    assert model_metadata(config, "single", ("A",), tc, 10.0).z_smooth == 1
    assert {name: m.smooths_z for name, m in METHODS.items()} == {"pom": False, "painted": True, "direct": True}
    assert config.shared_model_z_smooth == 3 and config.shared_model_negative_weight == 3.0
