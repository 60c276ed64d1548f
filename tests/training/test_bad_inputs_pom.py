"""Bad input to ``pom``: a one-line error naming the file or key, a non-zero exit, no traceback
unless --debug; bad annotation files are reported and the others go on."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from pom_tools.synthetic import write_scns
from pom_training.cli import main as pom_main

from ..helpers import make_onnx_model, one_line_error

# ----------------------------------------------------------------------------- configuration


def _config(project, **changes):
    path = project / "project_configuration.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_config_not_json(ais_project, capsys):
    (ais_project / "project_configuration.json").write_text("{'z_sum': 2}")
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 2
    one_line_error(capsys, "project_configuration.json", "not valid JSON")


def test_config_unknown_key(ais_project, capsys):
    _config(ais_project, ontologys=["Void"])
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 2
    one_line_error(capsys, "'ontologys'", "did you mean 'ontologies'")


def test_config_wrong_type(ais_project, capsys):
    _config(ais_project, apix="15.68")
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 2
    one_line_error(capsys, "'apix'", "expected a number, found a string")


def test_config_missing_folder(ais_project, capsys):
    _config(ais_project, tomogram_dir="no_such_folder")
    assert pom_main(["--project", str(ais_project), "single", "initialize"]) == 2
    one_line_error(capsys, "'tomogram_dir'", "no_such_folder", "does not exist")


def test_debug_shows_the_traceback(ais_project, capsys):
    _config(ais_project, tomogram_dir="no_such_folder")
    assert pom_main(["--debug", "--project", str(ais_project), "single", "initialize"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- annotations


def _initialize(project, capsys):
    code = pom_main(["--project", str(project), "single", "initialize"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("kind", ["truncated", "not_a_pickle", "payload", "with_map"])
def test_bad_scns_is_reported_and_others_go_on(ais_project, capsys, kind, tmp_path):
    bad = ais_project / "tomograms" / "TS_002.scns"
    marker = tmp_path / "ran"
    if kind == "truncated":
        bad.write_bytes(bad.read_bytes()[:1000])
    elif kind == "not_a_pickle":
        bad.write_text("PK\x03\x04 a zip file")
    elif kind == "payload":
        class P:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        bad.write_bytes(pickle.dumps(P(), protocol=4))
    else:
        bad.write_bytes(b"\x80\x04\x8c\x0fmrcfile.mrcfile\x8c\x07MrcFile\x93.")
    code, out = _initialize(ais_project, capsys)
    assert code == 0  # TS_001 still gives training data
    assert "TS_002.scns" in out.out and not marker.exists()
    expected = {"truncated": "truncated", "not_a_pickle": "not a pickle", "payload": "refused",
                "with_map": "with map"}[kind]
    assert expected in out.out


def test_scns_shape_differs_from_tomogram(ais_project, capsys):
    shutil.copy(ais_project / "test" / "TS_003.mrc", ais_project / "tomograms" / "TS_002.mrc")
    code, out = _initialize(ais_project, capsys)
    assert code == 0 and "differs from the annotation" in out.out and "TS_002" in out.out


def test_all_features_outside_ontologies(ais_project, capsys):
    _config(ais_project, ontologies=["Golgi"])
    code, out = _initialize(ais_project, capsys)
    assert code == 1
    line = one_line_error(out_capsys(out), "no training images", "Golgi")
    assert "Cytoplasm" in line
    assert not (ais_project / "training_datasets").exists()


class out_capsys:  # noqa: N801 - adapter so one_line_error can read an already captured result
    def __init__(self, captured):
        self.captured = captured

    def readouterr(self):
        return self.captured


def test_scns_without_boxes(ais_project, capsys):
    tomogram = ais_project / "tomograms" / "TS_002.mrc"
    write_scns(ais_project / "tomograms" / "TS_002.scns", tomogram, np.zeros((40, 160, 160), np.int8),
               plan={"Void": {}}, box=64, pixel_size_nm=1.568)  # a feature, but not one box
    code, out = _initialize(ais_project, capsys)
    assert code == 0 and "TS_002.scns: no boxes" in out.out


# ----------------------------------------------------------------------------- project models and options


def test_project_model_channels_differ_from_configuration(ais_project, capsys):
    (ais_project / "models" / "phase2").mkdir(parents=True)
    make_onnx_model(ais_project / "models" / "phase2" / "shared.onnx", channels=("Density",), classes=("A",))
    assert pom_main(["--project", str(ais_project), "shared", "process", "-gpus", "cpu"]) == 2
    one_line_error(capsys, "shared.onnx", "'macromolecules'")


def test_unknown_feature(ais_project, capsys):
    assert pom_main(["--project", str(ais_project), "single", "test", "-o", "Golgi"]) == 2
    one_line_error(capsys, "'Golgi'", "Mitochondrion")


@pytest.mark.parametrize("gpus", ["0;1", "one", "1.5", "-2"])
def test_gpus_not_integers(ais_project, capsys, gpus):
    assert pom_main(["--project", str(ais_project), "single", "train", "-o", "Void", "-gpus", gpus]) == 2
    one_line_error(capsys, "-gpus", gpus)
