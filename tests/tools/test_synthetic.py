"""The demo's synthetic generator: seeded phantoms, Ais-like boxes, projects the Ais reader reads."""

import json

import numpy as np

from pom_common.mrcio import read_volume
from pom_common.scns import read_scns
from pom_tools.synthetic import CLASSES, make_phantom, plan_boxes, write_project

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
