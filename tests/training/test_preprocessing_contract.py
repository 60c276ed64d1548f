"""Training crops and inference inputs come from one preprocessing contract.

Phase-1 sampling (``pom_training.data.sampling.sample_annotation``, Pom's stacks) and inference
preparation (``pom_inference.preprocess.prepare_inputs``) are separate code paths: one
crops a z window around one slice, the other filters and bins whole volumes. These tests
push the same voxels through both. The one difference is Pom's and documented: a training
image averages the 2 * z_sum + 1 slices around slice z; an inference slice k averages the
windows around slices 2k and 2k + 1 (binning in z).
"""

from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.modelmeta import ModelInfo
from pom_common.mrcio import read_volume
from pom_common.scns import Annotation, Feature
from pom_inference.preprocess import prepare_inputs
from pom_training.data.report import Phase1Report
from pom_training.data.sampling import sample_annotation

from ..helpers import AIS_MINI

CHANNELS = ("Density", "Membrane")


def _training_images(volumes: dict, z: int, x: int, y: int, box: int, z_sum: int) -> dict:
    """Phase-1 sampling of one box at (z, x, y): channel -> (box/2, box/2) image."""
    nz, ny, nx = volumes["Density"].shape
    mask = np.zeros((ny, nx), np.uint8)
    feature = Feature("F", {z: ((x, y),)}, {z: mask}, None, None, 0)
    annotation = Annotation(Path("TS.scns"), "TS.mrc", nz, ny, nx, None, (feature,))
    config = ProjectConfig(ontologies=("F",), macromolecules=CHANNELS, z_sum=z_sum, ontology_annotation_box_size=box)
    stacks = {"F": {c: [] for c in ("y", *CHANNELS)}}
    sample_annotation(annotation, volumes, config, stacks, Phase1Report())
    return {c: stacks["F"][c][0] for c in CHANNELS}


def _info(z_sum: int, density: str) -> ModelInfo:
    return ModelInfo(kind="single", classes=("F",), channels=CHANNELS, z_sum=z_sum,
                     normalisation={"Density": density, "Membrane": "uint8"})


def test_same_voxels_same_network_input():
    """A volume constant in z, the crop filling the slice: both paths give the same image."""
    rng = np.random.default_rng(0)
    density = np.repeat(rng.standard_normal((1, 32, 48)).astype(np.float32) * 5 + 3, 9, axis=0)
    membrane = np.repeat(rng.integers(0, 256, (1, 32, 48)).astype(np.uint8), 9, axis=0)
    volumes = {"Density": density, "Membrane": membrane}
    # A 32 x 32 crop centred in x would leave the 48-wide slice, so crop the full height only.
    train = _training_images(volumes, z=4, x=24, y=16, box=32, z_sum=2)
    crop = {"Density": density[:, :, 8:40], "Membrane": membrane[:, :, 8:40]}
    infer = prepare_inputs(crop, _info(2, "volume"))  # one crop = the whole volume: volume stats = crop stats
    for j, channel in enumerate(CHANNELS):
        np.testing.assert_allclose(infer[2, ..., j], train[channel], atol=2e-5, err_msg=channel)


def test_real_channel_differs_only_by_the_z_binning():
    """On the fixture's Membrane channel: inference slice k = mean of training images at 2k and 2k + 1."""
    volumes = {"Density": np.asarray(read_volume(AIS_MINI / "tomograms" / "TS_001.mrc").data),
               "Membrane": np.asarray(read_volume(AIS_MINI / "macromolecules" / "TS_001__Membrane.mrc").data)}
    z_sum, box, k, x, y = 2, 64, 9, 80, 72
    at_z = _training_images(volumes, 2 * k, x, y, box, z_sum)
    at_z1 = _training_images(volumes, 2 * k + 1, x, y, box, z_sum)
    infer = prepare_inputs(volumes, _info(z_sum, "local"))
    half = box // 2
    window = infer[k, (y - half) // 2 : (y + half) // 2, (x - half) // 2 : (x + half) // 2, 1]
    np.testing.assert_allclose(window, (at_z["Membrane"] + at_z1["Membrane"]) / 2, atol=1e-5)
    assert not np.allclose(window, at_z["Membrane"], atol=1e-3)  # the difference is real
