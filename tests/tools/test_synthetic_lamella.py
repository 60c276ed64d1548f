"""The confounders project of ``make quality`` and its scoring: gold, debris, empty slabs, an unannotated top."""

import json

import numpy as np

from pom_common.scns import read_scns
from pom_tools import scoring
from pom_tools.lamella_project import write_lamella_project
from pom_tools.synthetic_cell import CELL_CLASSES, VOID
from pom_tools.synthetic_lamella import REAL, Confounders, make_lamella

SMALL = (40, 96, 96)


def test_lamella_confounders_are_there_and_seeded():
    a, b = make_lamella(3, SMALL, REAL), make_lamella(3, SMALL, REAL)
    assert np.array_equal(a.cell.density, b.cell.density) and np.array_equal(a.cell.labels, b.cell.labels)
    labels, density = a.cell.labels, a.cell.density
    assert set(np.unique(labels)) <= set(range(len(CELL_CLASSES)))
    assert abs(float(density.mean())) < 1e-3 and abs(float(density.std()) - 1) < 1e-3  # standardised
    specimen = a.inside.any(axis=(1, 2))
    assert not specimen[:4].any() and not specimen[-4:].any()  # empty slabs: noise only, Void
    assert np.all(labels[:4] == VOID) and np.all(labels[-4:] == VOID)
    assert a.top.any() and not (a.top & ~a.inside).any()
    plain = make_lamella(3, SMALL, Confounders(gold=REAL.gold))
    assert plain.cell.density.min() < make_lamella(3, SMALL).cell.density.min() - 1  # gold is very dense (dark)


def test_confounders_project_never_annotates_the_top(tmp_path):
    stems = write_lamella_project(tmp_path, n_train=1, n_test=1, shape=SMALL, box=48, confounders=REAL)
    assert stems == {"train": ["TS_001"], "test": ["TS_002"]}
    lamella = make_lamella(4711, SMALL, REAL)
    annotation = read_scns(tmp_path / "tomograms" / "TS_001.scns")
    slices = {z for f in annotation.features for z, b in f.boxes.items() if b}
    area = lamella.inside.mean(axis=(1, 2))
    assert slices and all(area[z] > 0.3 and lamella.top[z].mean() < 0.05 * area[z] for z in slices)
    assert json.loads((tmp_path / "ground_truth" / "classes.json").read_text())["0"] == "Void"


def test_scoring_rates_thresholds_and_slices_away():
    from pom_training.evaluation.metrics import Scores

    scores = Scores(("A",))
    scores.add("A", np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert scoring.rates(scores)["A"] == {"dice": 0.5, "precision": 0.5, "recall": 0.5}
    values = np.array([0.1, 0.2, 0.9, 1.0, 0.15, 0.95])
    codes = np.array([1, 1, 2, 2, 1, 2])
    fitted = scoring.fit_thresholds(values, codes, ("low", "high"))
    assert fitted["low"][0] == -1 and fitted["high"][0] == 1 and 0.2 <= fitted["high"][1] < 0.9
    keep = scoring.away_from([10], 20, z_sum=2)
    assert not keep[3:8].any() and keep[:3].all() and keep[8:].all()
