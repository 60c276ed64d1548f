"""``pom evaluate``: Dice and IoU on known pairs of volumes, and against Ais annotations."""

import json
from pathlib import Path

import numpy as np
import pytest

from pom_common.config import ProjectConfig
from pom_common.errors import InputError
from pom_common.mrcio import read_volume, write_volume
from pom_common.scns import Annotation, Feature
from pom_training.evaluation.evaluate import run_evaluate
from pom_training.evaluation.metrics import Scores
from pom_training.evaluation.truth import annotation_truth, decide, score_dense

from ..helpers import make_onnx_model


def test_scores_on_a_known_pair():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 0])
    calls = pred[:, None] == np.arange(3)
    scores = Scores(("A", "B", "C"))
    score_dense(scores, calls, ("A", "B", "C"), truth, {0: "A", 1: "B", 2: "C"})
    # A: tp 2, fp 1, fn 1; B: tp 2, fp 2, fn 0; C: tp 1, fp 0, fn 2
    assert scores.dice("A") == pytest.approx(4 / 6) and scores.iou("A") == pytest.approx(2 / 4)
    assert scores.dice("B") == pytest.approx(4 / 6) and scores.iou("B") == pytest.approx(2 / 4)
    assert scores.dice("C") == pytest.approx(2 / 4) and scores.iou("C") == pytest.approx(1 / 3)
    assert scores.mean("dice") == pytest.approx((4 / 6 + 4 / 6 + 2 / 4) / 3)
    doc = scores.to_dict()
    assert doc["classes"]["C"] == {"dice": 0.5, "iou": 0.3333, "tp": 1, "fp": 0, "fn": 2}
    assert "mean" in scores.table() and "0.667" in scores.table()


def test_absent_class_has_no_score_and_single_threshold():
    scores = Scores(("A", "B"))
    scores.add("A", np.array([True]), np.array([True]))
    scores.add("B", np.array([False]), np.array([False]))
    assert scores.dice("B") is None and scores.mean("dice") == 1.0 and "-" in scores.table()
    p = np.array([[0.2], [0.7]])
    assert decide(p, ("A",), "single").ravel().tolist() == [False, True]
    assert decide(np.array([[0.2, 0.5, 0.3]]), ("A", "B", "Unknown"), "shared").tolist() == [[False, True, False]]


def test_annotation_truth_boxes_paint_and_overlap():
    ny = nx = 20
    a = np.zeros((ny, nx), np.uint8)
    a[:, :10] = 1
    b = np.zeros((ny, nx), np.uint8)
    b[:, 9:14] = 1  # column 9 painted twice: not scored
    features = (Feature("A", {5: ((6, 10),)}, {5: a}, None, None, 0),
                Feature("B", {5: ((14, 10),)}, {5: b}, None, None, 1),
                Feature("Other", {5: ((10, 10),)}, {5: np.ones((ny, nx), np.uint8)}, None, None, 2))
    annotation = Annotation(Path("TS.scns"), "TS.mrc", 10, ny, nx, None, features)
    truth, in_boxes, own = annotation_truth(annotation, ("A", "B"), box=8, z=5)
    assert truth[10, 0] == 0 and truth[10, 12] == 1 and truth[10, 9] == -2 and truth[10, 16] == -1
    assert in_boxes[10, 2] and in_boxes[10, 17] and not in_boxes[10, 18] and not in_boxes[0, 5]
    assert set(own) == {"A", "B"} and own["A"][10, 2] and not own["A"][10, 12]


@pytest.fixture
def evaluated_project(tmp_path):
    """A tiny shared model, a test tomogram and the model's own segmentation as truth (binned x2)."""
    from pom_inference import load_model, segment

    project = tmp_path / "p"
    (project / "test").mkdir(parents=True)
    model_path = make_onnx_model(tmp_path / "shared.onnx", classes=("A", "B", "Unknown"), kind="shared", seed=3)
    rng = np.random.default_rng(0)
    tomogram = project / "test" / "TS_001.mrc"
    write_volume(tomogram, rng.standard_normal((8, 24, 32)).astype(np.float32), 10.0)
    winner = segment(load_model(model_path), np.asarray(read_volume(tomogram).data), tta=1).argmax(-1)  # (4, 12, 16)
    config = ProjectConfig(base_dir=str(project), ontologies=("A", "B"), ontology_annotation_box_size=16, z_sum=1,
                           shared_model_runs_per_volume=1)
    return project, model_path, tomogram, winner, config


def test_evaluate_against_dense_labels(evaluated_project, tmp_path):
    project, model_path, tomogram, winner, config = evaluated_project
    assert {0, 1} <= set(np.unique(winner))  # both classes called somewhere
    full = np.repeat(np.repeat(np.repeat(winner, 2, 0), 2, 1), 2, 2).astype(np.int8)  # the tomogram's size
    labels = project / "test" / "TS_001__labels.mrc"
    write_volume(labels, full, 10.0)
    (project / "test" / "classes.json").write_text(json.dumps({"0": "A", "1": "B", "2": "Unknown"}))
    out = tmp_path / "eval.json"
    scores = run_evaluate(config, model_path, labels=[labels], json_path=out)
    assert scores.dice("A") == 1.0 and scores.dice("B") == 1.0 and scores.iou("B") == 1.0
    doc = json.loads(out.read_text())
    assert doc["against"] == "labels" and doc["mean_dice"] == 1.0 and doc["tomograms"] == ["TS_001.mrc"]
    # Truth "A" everywhere, at the output's size: Dice(A) = 2|called A| / (|called A| + N), Dice(B) = 0.
    write_volume(labels, np.zeros(winner.shape, np.int8), 10.0)
    scores = run_evaluate(config, model_path, labels=[labels], tomograms=[tomogram])
    called_a, n = int((winner == 0).sum()), winner.size
    assert scores.dice("A") == pytest.approx(2 * called_a / (called_a + n))
    assert scores.dice("B") == 0.0


def test_evaluate_against_annotations(evaluated_project):
    from pom_tools.aisfile import AisFeature, write_ais_pickle

    project, model_path, tomogram, winner, config = evaluated_project
    full = np.repeat(np.repeat(np.repeat(winner, 2, 0), 2, 1), 2, 2)
    z = 4
    features = [AisFeature(name, {z: [[12, 12]]}, {z: (full[z] == k).astype(np.uint8)}, (1.0, 0, 0), 8)
                for k, name in enumerate(("A", "B"))]
    write_ais_pickle(project / "test" / "TS_001.scns", tomogram, full.shape, features, 1.0)
    scores = run_evaluate(config, model_path)
    assert scores.tomograms == ["TS_001.mrc"] and scores.mean("dice") == 1.0
    box = full[z, 4:20, 4:20]  # the 16 x 16 box: every pixel painted with the class the model calls
    assert scores.tp["A"] + scores.tp["B"] == int(np.isin(box, (0, 1)).sum()) > 0
    (project / "test" / "TS_001.scns").unlink()
    with pytest.raises(InputError, match="no .scns annotation files"):
        run_evaluate(config, model_path)


def test_pom_evaluate_command(evaluated_project, capsys):
    from pom_common.config import write_config
    from pom_training.cli import main

    project, model_path, tomogram, winner, config = evaluated_project
    write_config(config, project / "project_configuration.json")
    labels = project / "test" / "TS_001__labels.mrc"
    write_volume(labels, winner.astype(np.int8), 10.0)  # the output's size; values = the model's classes
    code = main(["--project", str(project), "evaluate", "-m", str(model_path), "--labels", str(labels)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Dice" in out and "IoU" in out and "1.000" in out and "Unknown" not in out
    doc = json.loads((project / "test" / "shared_evaluation.json").read_text())
    assert doc["kind"] == "shared" and set(doc["classes"]) == {"A", "B"} and doc["mean_iou"] == 1.0
    assert main(["--project", str(project), "evaluate", "-m", str(model_path)]) == 2  # no .scns in test/: usage
    assert "no .scns annotation files" in capsys.readouterr().err


def test_label_values_no_class_names_are_refused(evaluated_project, capsys):
    """Values that name no class, or probabilities, are not scored as negatives: a one-line error."""
    from pom_common.config import write_config
    from pom_training.cli import main

    project, model_path, tomogram, winner, config = evaluated_project
    write_config(config, project / "project_configuration.json")
    labels = project / "test" / "TS_001__labels.mrc"
    argv = ["--project", str(project), "evaluate", "-m", str(model_path), "--labels", str(labels)]
    write_volume(labels, np.full(winner.shape, 9, np.int8), 10.0)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(labels) in err and "[9]" in err and "classes.json" in err
    write_volume(labels, np.full(winner.shape, 0.25, np.float32), 10.0)
    assert main(argv) == 1
    assert "integer labels" in capsys.readouterr().err
    assert not (project / "test" / "shared_evaluation.json").exists()
    assert main(["--project", str(project), "evaluate", "-o", "Nope"]) == 2
    assert "'Nope'" in capsys.readouterr().err


def test_single_model_labels_are_a_mask(tmp_path):
    """Without classes.json a single network's truth is a mask: 1 the feature, 0 not."""
    from pom_training.evaluation.evaluate import label_names

    assert label_names(tmp_path / "l.mrc", ("Vesicle",), "single") == {0: "not Vesicle", 1: "Vesicle"}
    assert label_names(tmp_path / "l.mrc", ("A", "B", "Unknown"), "shared") == {0: "A", 1: "B", 2: "Unknown"}
