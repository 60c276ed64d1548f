"""Painted labels: every feature painted on a crop's slice is in its code map (pixel-loop reference)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pom_common.config import ProjectConfig, load_config
from pom_common.scns import Annotation, Feature, read_scns
from pom_training.data.painted import code_map
from pom_training.data.report import Phase1Report
from pom_training.data.sampling import phase1_initialize, sample_annotation
from pom_training.data.titles import is_unnamed, title_hint
from pom_training.labels.targets import one_hot, override_joint_labels, single_targets

from ..helpers import EXPECTED_PHASE1


def reference_codes(annotation, ontologies, z, x, y, box):
    """The code map of one crop, voxel by voxel (ties: the ontology listed first)."""
    half, n = box // 2, box // 2
    out = np.zeros((n, n), np.uint8)
    for i in range(n):
        for j in range(n):
            counts = [0] * len(ontologies)
            for dy in range(2):
                for dx in range(2):
                    row, col = y - half + 2 * i + dy, x - half + 2 * j + dx
                    for k, title in enumerate(ontologies):
                        painted = False
                        for f in annotation.features:
                            mask = f.slices.get(z)
                            if f.title == title and mask is not None and mask[row, col] > 0:
                                painted = True
                        counts[k] += painted
            best = 0
            for k in range(len(ontologies)):
                if counts[k] > counts[best]:
                    best = k
            out[i, j] = best + 1 if 2 * counts[best] >= 4 else 0
    return out


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    from ..helpers import copy_project

    project = copy_project(tmp_path_factory.mktemp("labels") / "project")
    config = load_config(project / "project_configuration.json")
    report = phase1_initialize(config, progress=False)
    return project, config, report


def test_painted_codes_match_the_pixel_loop(sampled):
    project, config, report = sampled
    phase1 = project / "training_datasets" / "phase1"
    info = json.loads((phase1 / "info.json").read_text())
    assert info["painted_classes"] == list(config.ontologies)
    box = config.ontology_annotation_box_size
    others_seen = 0
    for feature in config.ontologies:
        codes = tifffile.imread(phase1 / f"{feature}_painted.tif")
        crops = info["crops"][feature]
        assert codes.dtype == np.uint8 and codes.shape == (len(crops), box // 2, box // 2)
        for row, (stem, z, x, y) in enumerate(crops):
            annotation = read_scns(project / "tomograms" / f"{stem}.scns")
            expected = reference_codes(annotation, config.ontologies, z, x, y, box)
            np.testing.assert_array_equal(codes[row], expected, err_msg=f"{feature} crop {row}")
            # Every feature painted on that slice inside the crop (a full 2x2 block) appears.
            for k, title in enumerate(config.ontologies):
                block_painted = False
                for f in annotation.features:
                    mask = f.slices.get(z)
                    if f.title != title or mask is None:
                        continue
                    crop = mask[y - box // 2: y + box // 2, x - box // 2: x + box // 2] > 0
                    block_painted |= bool(crop.reshape(box // 2, 2, box // 2, 2).all(axis=(1, 3)).any())
                if block_painted:
                    assert (codes[row] == k + 1).any(), (feature, row, title)
                    others_seen += title != feature
    assert others_seen > 20  # the point: crops carry other features' paint


def test_pom_stacks_unchanged_and_own_paint_agrees(sampled):
    project, config, _ = sampled
    phase1 = project / "training_datasets" / "phase1"
    for o in config.ontologies:
        for channel in ("y", *config.macromolecules):
            np.testing.assert_array_equal(tifffile.imread(phase1 / f"{o}_{channel}.tif"),
                                          tifffile.imread(EXPECTED_PHASE1 / f"{o}_{channel}.tif").astype(np.float32))
        y = tifffile.imread(phase1 / f"{o}_y.tif")
        codes = tifffile.imread(phase1 / f"{o}_painted.tif")
        own = codes == config.ontologies.index(o) + 1
        assert np.all(y[own] >= 0.5)  # painted own feature <=> Pom's label at least one half
        assert np.all(own[y == 1])


def test_code_map_ties_and_thresholds():
    painted = np.zeros((2, 2, 6), bool)
    painted[0, :, 0:2] = True  # block 0: feature 0 on all 4 voxels
    painted[0, 0, 2:4] = True  # block 1: feature 0 on 2 voxels, feature 1 on 2 (tie: 0 wins)
    painted[1, 1, 2:4] = True
    painted[1, 0, 4] = True  # block 2: one voxel only: unpainted
    assert code_map(painted).tolist() == [[1, 1, 0]]


def test_targets_and_override():
    own = np.array([[[1.0, 0.0, 0.5]], [[0.0, 0.0, 0.0]]])  # (2, 1, 3)
    codes = np.array([[[1, 0, 1]], [[2, 1, 0]]], np.uint8)
    t = single_targets(own, codes, np.array([True, False]), code=1)
    assert t[0, ..., 0].tolist() == [[1.0, 0.0, 0.5]] and t[0, ..., 1].tolist() == [[1, 1, 1]]  # Pom's own crop
    assert t[1, ..., 0].tolist() == [[0, 1, 0]] and t[1, ..., 1].tolist() == [[1, 1, 0]]  # painted only
    joint = one_hot(np.full((2, 1, 3), 3, np.uint8), 3)  # network says class 2 everywhere
    out = override_joint_labels(joint, codes)
    assert out.argmax(-1).tolist() == [[[0, 2, 0]], [[1, 0, 2]]]
    assert one_hot(np.zeros((1,), np.uint8), 3).tolist() == [[0, 0, 0]]


def test_title_hints_and_unnamed_features():
    assert title_hint("Lipid Droplet", ("Lipid droplet",)) == "Lipid droplet"
    assert title_hint("lipid  droplet ", ("Lipid droplet",)) == "Lipid droplet"
    assert title_hint("Lipid droplet", ("Lipid droplet",)) is None  # exact: no hint needed
    assert title_hint("Golgi", ("Lipid droplet",)) is None
    assert is_unnamed("Unnamed feature 5") and is_unnamed("  ") and not is_unnamed("Void")
    mask = np.zeros((40, 40), np.uint8)
    features = (Feature("Lipid Droplet", {10: ((20, 20),)}, {10: mask}, None, None, 0),
                Feature("Unnamed feature 5", {10: ((20, 20), (21, 21))}, {10: mask}, None, None, 1))
    annotation = Annotation(Path("TS_009.scns"), "TS_009.mrc", 20, 40, 40, None, features)
    config = ProjectConfig(ontologies=("Lipid droplet", "Void"), macromolecules=("Density",), z_sum=1,
                           ontology_annotation_box_size=16)
    report = Phase1Report()
    volume = np.zeros((20, 40, 40), np.float32)
    stacks = {o: {"y": [], "Density": []} for o in config.ontologies}
    sample_annotation(annotation, {"Density": volume}, config, stacks, report, {o: [] for o in config.ontologies})
    assert stacks["Lipid droplet"]["y"] == []  # Pom's exact matching is kept
    notes = report.feature_notes()
    assert any("'Lipid Droplet'" in n and "did you mean 'Lipid droplet'?" in n and "TS_009.scns" in n for n in notes)
    assert any(n.startswith("unnamed feature 'Unnamed feature 5'") and "2 boxes" in n for n in notes)


def test_initialize_says_did_you_mean_and_lists_unnamed_features(tmp_path, capsys):
    import shutil

    from pom_tools.aisfile import AisFeature, write_ais_pickle
    from pom_training.cli import main

    from ..helpers import copy_project

    project = copy_project(tmp_path / "project")
    for name in ("TS_009.mrc",):
        shutil.copy(project / "tomograms" / "TS_001.mrc", project / "tomograms" / name)
    for channel in ("Membrane", "Ribosome"):
        shutil.copy(project / "macromolecules" / f"TS_001__{channel}.mrc",
                    project / "macromolecules" / f"TS_009__{channel}.mrc")
    mask = np.zeros((160, 160), np.uint8)
    mask[60:80, 60:80] = 1
    features = [AisFeature("vesicle ", {20: [[70, 70]]}, {20: mask}, (0, 0, 1.0), 64),
                AisFeature("Unnamed feature 5", {20: [[70, 70], [90, 90]]}, {20: mask}, (1.0, 0, 0), 64)]
    write_ais_pickle(project / "tomograms" / "TS_009.scns", project / "tomograms" / "TS_009.mrc", (40, 160, 160),
                     features, 1.568)
    assert main(["--project", str(project), "single", "initialize"]) == 0
    out = capsys.readouterr().out
    assert "not in ontologies: feature 'vesicle ' in TS_009.scns (did you mean 'Vesicle'?" in out
    assert "unnamed feature 'Unnamed feature 5' in TS_009.scns (2 boxes)" in out
    assert tifffile.imread(project / "training_datasets" / "phase1" / "Vesicle_y.tif").shape[0] == 9  # Pom's matching
