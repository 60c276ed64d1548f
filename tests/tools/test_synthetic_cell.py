"""The harder synthetic project of ``make quality``: classes, contrast, int8, Ais-like annotations."""

import json

import numpy as np

from pom_common.mrcio import read_volume
from pom_common.scns import read_scns
from pom_tools.cell_project import plan_cell_annotation, write_cell_project
from pom_tools.synthetic_cell import CELL_CLASSES, CELL_VOXEL_SIZE, make_cell

SMALL = (24, 128, 128)


def test_cell_is_seeded_with_every_class_and_raw_contrast():
    a, b = make_cell(5, SMALL), make_cell(5, SMALL)
    assert np.array_equal(a.density, b.density) and np.array_equal(a.labels, b.labels)
    assert len(CELL_CLASSES) >= 7 and set(np.unique(a.labels)) == set(range(len(CELL_CLASSES)))
    assert 15 < float(a.density.std()) < 30  # raw scale, not standardised
    void, cyto, lipid = (a.density[a.labels == CELL_CLASSES.index(c)].mean() for c in ("Void", "Cytoplasm",
                                                                                       "Lipid droplet"))
    assert void > cyto > lipid  # dense = dark
    envelope = a.labels == CELL_CLASSES.index("Nuclear envelope")
    assert a.membrane[envelope].mean() > a.membrane[a.labels == CELL_CLASSES.index("Cytoplasm")].mean()


def test_annotations_like_a_person_in_ais():
    cell = make_cell(6, SMALL)
    features = plan_cell_annotation(cell.labels, 1, box=48, z_sum=2)
    slices = {z for f in features for z in f.boxes}
    assert 2 <= len(slices) <= 3 and SMALL[0] // 2 in slices
    per_slice = {z: sum(z in f.boxes for f in features) for z in slices}
    assert max(per_slice.values()) >= 4  # several features painted on one slice
    for f in features:
        k = CELL_CLASSES.index(f.title)
        for z, centres in f.boxes.items():
            assert 2 < z < SMALL[0] - 3
            for x, y in centres:
                assert 24 <= x <= SMALL[2] - 24 and 24 <= y <= SMALL[1] - 24
            painted = f.masks[z].astype(bool)
            assert painted.any() and np.all(cell.labels[z][painted] == k)  # paint = ground truth


def test_project_has_an_int8_tomogram_and_held_out_annotations(tmp_path):
    stems = write_cell_project(tmp_path, n_train=2, n_test=2, shape=SMALL, box=48)
    assert stems == {"train": ["TS_001", "TS_002"], "test": ["TS_003", "TS_004"]}
    assert read_volume(tmp_path / "tomograms" / "TS_002.mrc").data.dtype == np.int8
    assert read_volume(tmp_path / "test" / "TS_004.mrc").data.dtype == np.int8
    vol = read_volume(tmp_path / "tomograms" / "TS_001.mrc")
    assert vol.data.dtype == np.float32 and vol.voxel_size == np.float32(CELL_VOXEL_SIZE)
    ann = read_scns(tmp_path / "test" / "TS_003.scns")
    assert ann.shape == SMALL and all(f.title in CELL_CLASSES for f in ann.features)
    config = json.loads((tmp_path / "project_configuration.json").read_text())
    assert config["ontologies"] == list(CELL_CLASSES)
    assert json.loads((tmp_path / "ground_truth" / "classes.json").read_text())["6"] == "Nuclear envelope"


def test_quality_report_table():
    from pom_tools.quality import markdown, summary

    def run(mean, seconds=10.0, precision=0.9):
        dice = {c: mean for c in CELL_CLASSES}
        return {"dense": dice, "mean": mean, "annotations": dice, "annotations_mean": mean, "seconds": seconds,
                "precision": {c: precision for c in CELL_CLASSES}, "recall": {c: 0.8 for c in CELL_CLASSES}}

    state = {"project_seed": 1, "phase1": {"images": {"Void": 3, "Vesicle": 4}, "extra": 12},
             "threshold": {"dense": {c: 0.2 for c in CELL_CLASSES}, "mean": 0.2,
                           "precision": {c: 0.1 for c in CELL_CLASSES}, "recall": {c: 0.5 for c in CELL_CLASSES}},
             "runs": {"pom/0": run(0.6), "pom/1": run(0.8), "direct/0": run(0.9), "direct/1": run(0.92, precision=0.8)}}
    results = {"settings": {"model_base_filters": 8, "model_depth": 3, "single_model_epochs": 6,
                            "shared_model_epochs": 30, "shared_model_batch_size": 32, "shared_model_runs_per_volume": 4},
               "projects": {"confounders": state},
               "last_run": {"seconds": 600.0, "cores": 2, "load": [3.0, 3.0, 3.0]}}
    s = summary(state, "direct", [0, 1])
    assert np.allclose(s["mean"], (0.91, 0.01)) and abs(s["range"] - 0.02) < 1e-12
    text = markdown(results, ["pom", "direct"], [0, 1], ("confounders",))
    assert "| direct | 0.910 ± 0.010 |" in text and "**0.700 ± 0.100**" in text
    assert "7 crops (Vesicle 4, Void 3) and 12 extra crops" in text
    assert "Best method: `direct`, mean Dice 0.910 vs Pom's 0.700 (+0.210)" in text
    assert "| direct | 0.85 / 0.80 |" in text and text.count("| 0.80 |") == 1  # lowest organelle precision of a seed
    assert "| threshold | 0.200 |" in text and "| threshold | 0.10 / 0.50 |" in text
    assert "10.0 min" in text and "2 cores" in text


def test_quality_report_of_a_project_scored_on_itself():
    """The ``feature`` project: its own classes as columns, the feature's Dice per seed, no held-out annotations."""
    from pom_tools.quality import FEATURE, markdown

    classes = (FEATURE, "Background")

    def run(dice):
        return {"dense": {FEATURE: dice, "Background": 0.9}, "mean": (dice + 0.9) / 2, "seconds": 5.0,
                "precision": {c: 0.7 for c in classes}, "recall": {c: 0.9 for c in classes}}

    state = {"project_seed": 5, "phase1": {"images": {FEATURE: 7, "Background": 3}, "extra": 20},
             "threshold": {"dense": {c: 0.3 for c in classes}, "mean": 0.3, "precision": {c: 0.2 for c in classes},
                           "recall": {c: 0.6 for c in classes}},
             "runs": {"direct/0": run(0.7), "direct/1": run(0.6), "direct/2": run(0.8)}}
    results = {"settings": {"model_base_filters": 8, "model_depth": 3, "single_model_epochs": 6,
                            "shared_model_epochs": 30, "shared_model_batch_size": 32, "shared_model_runs_per_volume": 4},
               "projects": {"feature": state}}
    text = markdown(results, ["direct"], [0, 1, 2], ("feature",))
    assert f"| method | {FEATURE} | Background | mean Dice |" in text
    assert "| direct | 0.700 ± 0.082 | 0.900 ± 0.000 | **0.800 ± 0.041** | 0.100 |" in text
    assert f"{FEATURE} Dice per seed: 0.700, 0.600, 0.800; mean 0.700, lowest 0.600" in text
    assert "away from the annotated slices" in text and "own Ais-style annotations" not in text


def test_quality_scores_a_real_like_project_away_from_its_annotated_slices(tmp_path):
    from pom_common.config import ProjectConfig
    from pom_common.mrcio import write_volume
    from pom_tools.quality import away_from_annotations

    label = tmp_path / "ground_truth" / "TS_001__labels.mrc"
    label.parent.mkdir()
    write_volume(label, np.zeros((40, 8, 8), np.int8), 10.0)
    config = ProjectConfig(z_sum=2)
    assert away_from_annotations(config, tmp_path, [label]) is None  # a held-out project: every slice
    (tmp_path / "ground_truth" / "annotated_slices.json").write_text("[20]")
    (keep,) = away_from_annotations(config, tmp_path, [label])
    # binned slices whose z window (z_sum 2 around 2z, 2z + 1) may reach slice 20 are left out (8..12)
    assert keep.shape == (20,) and not keep[8:13].any() and keep[:8].all() and keep[13:].all()
