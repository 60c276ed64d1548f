"""Bad input of every kind: a one-line error naming the file or key, a non-zero exit, no
traceback unless --debug, and every other output untouched."""

import json
import os
import pickle
import shutil

import mrcfile
import numpy as np
import pytest

from pom_common.mrcio import write_volume
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main
from pom_training.cli import main as pom_main

from .conftest import REAL_MRC, make_onnx_model, make_tomograms


def one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


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
    from pom_training.synthetic import write_scns

    tomogram = ais_project / "tomograms" / "TS_002.mrc"
    write_scns(ais_project / "tomograms" / "TS_002.scns", tomogram, np.zeros((40, 160, 160), np.int8),
               plan={"Void": {}}, box=64, pixel_size_nm=1.568)  # a feature, but not one box
    code, out = _initialize(ais_project, capsys)
    assert code == 0 and "TS_002.scns: no boxes" in out.out


# ----------------------------------------------------------------------------- volumes and models


@pytest.fixture
def infer_setup(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"), classes=("A", "B"),
                            kind="shared", multiple=4)
    make_tomograms(tmp_path / "t", 3, channels=("Membrane",))
    return tmp_path, model


def _process(tmp, model, *extra):
    return infer_main(["process", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "o"),
                       "--gpus", "cpu", *extra])


def _failure(tmp, stem):
    return FileClaimStore(tmp / "o").state(stem).error


def test_corrupt_header(infer_setup, capsys):
    tmp, model = infer_setup
    (tmp / "t" / "TS_001.mrc").write_bytes(b"\x00" * 1500)
    assert _process(tmp, model) == 1
    assert "TS_001.mrc: not a readable MRC file" in _failure(tmp, "TS_001")
    assert len(list((tmp / "o").glob("TS_00[02]__*.mrc"))) == 4  # the others are done


def test_truncated_data(infer_setup):
    tmp, model = infer_setup
    path = tmp / "t" / "TS_001.mrc"
    path.write_bytes(path.read_bytes()[:-512])
    assert _process(tmp, model) == 1
    assert "TS_001.mrc" in _failure(tmp, "TS_001")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(infer_setup, bad):
    tmp, model = infer_setup
    data = np.zeros((12, 20, 24), np.float32)
    data[3, 4, 5] = bad
    write_volume(tmp / "t" / "TS_001.mrc", data, 10.0)
    assert _process(tmp, model) == 1
    assert "NaN or Inf" in _failure(tmp, "TS_001")
    assert not (tmp / "o" / "TS_001__A.mrc").exists()


def test_2d_image(infer_setup):
    tmp, model = infer_setup
    with mrcfile.new(tmp / "t" / "TS_001.mrc", overwrite=True) as mrc:
        mrc.set_data(np.zeros((20, 24), np.float32))
    assert _process(tmp, model) == 1
    assert "expected a 3D volume" in _failure(tmp, "TS_001")


def test_real_map_smaller_than_a_tile(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A",), multiple=32)
    (tmp_path / "t").mkdir()
    shutil.copy(REAL_MRC / "EMD-3197.map", tmp_path / "t" / "EMD-3197.mrc")
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output",
                       str(tmp_path / "o"), "--gpus", "cpu"]) == 0
    from pom_common.mrcio import read_volume

    out = read_volume(tmp_path / "o" / "EMD-3197__A.mrc")
    assert out.shape == (10, 10, 10) and out.voxel_size == pytest.approx(22.8, rel=1e-3)
    assert np.isfinite(np.asarray(out.data)).all()


def test_real_map_with_other_axis_order_is_refused(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A",))
    (tmp_path / "t").mkdir()
    shutil.copy(REAL_MRC / "EMD-3001.map", tmp_path / "t" / "EMD-3001.mrc")
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output",
                       str(tmp_path / "o"), "--gpus", "cpu"]) == 1
    error = FileClaimStore(tmp_path / "o").state("EMD-3001").error
    assert "axis order" in error and "EMD-3001.mrc" in error
    assert not list((tmp_path / "o").glob("*.mrc"))


def test_channel_missing(infer_setup):
    tmp, model = infer_setup
    (tmp / "t" / "TS_002__Membrane.mrc").unlink()
    assert _process(tmp, model) == 1
    assert "channel 'Membrane' not found" in _failure(tmp, "TS_002")


def test_channel_of_another_shape(infer_setup):
    tmp, model = infer_setup
    write_volume(tmp / "t" / "TS_002__Membrane.mrc", np.zeros((12, 20, 22), np.uint8), 10.0)
    assert _process(tmp, model) == 1
    assert "TS_002__Membrane.mrc: shape (12, 20, 22) differs from its tomogram" in _failure(tmp, "TS_002")


def test_model_not_onnx(infer_setup, capsys):
    tmp, _ = infer_setup
    (tmp / "bad.onnx").write_text("hello")
    assert _process(tmp, tmp / "bad.onnx") == 2
    one_line_error(capsys, "bad.onnx", "not a usable ONNX model")
    assert not (tmp / "o").exists()


def test_onnx_without_our_metadata(infer_setup, capsys):
    tmp, _ = infer_setup
    model = make_onnx_model(tmp / "plain.onnx", metadata=False)
    assert _process(tmp, model) == 2
    one_line_error(capsys, "plain.onnx", "without Pom metadata")


def test_model_expecting_other_channels(infer_setup):
    tmp, _ = infer_setup
    model = make_onnx_model(tmp / "m.onnx", channels=("Density", "Ribosome"), classes=("A",))
    assert _process(tmp, model) == 1
    assert "channel 'Ribosome' not found" in _failure(tmp, "TS_000")


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


def test_pom_infer_gpus_not_integers(infer_setup, capsys):
    tmp, model = infer_setup
    code = infer_main(["process", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "o"),
                       "--gpus", "a,b"])
    assert code == 2
    one_line_error(capsys, "--gpus", "a,b")


# ----------------------------------------------------------------------------- write failures


def test_write_failure_leaves_no_partial_file(infer_setup, monkeypatch):
    import errno

    from pom_inference import outputs, worker

    tmp, model = infer_setup
    real_new_volume = outputs.new_volume
    state = {"slabs": 0}

    class Full:
        def __init__(self, array):
            self.array = array

        def __setitem__(self, key, value):
            state["slabs"] += 1
            if state["slabs"] > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.array[key] = value

    import contextlib

    @contextlib.contextmanager
    def failing(path, shape, dtype, voxel_size):
        with real_new_volume(path, shape, dtype, voxel_size) as array:
            yield Full(array)

    monkeypatch.setattr(outputs, "new_volume", failing)
    monkeypatch.setattr(worker, "SLAB", 2)
    assert _process(tmp, model) == 1
    out = tmp / "o"
    assert sorted(p.name for p in out.iterdir()) == [".pom"]  # nothing at a final name, no temporaries
    store = FileClaimStore(out)
    for stem in ("TS_000", "TS_001", "TS_002"):
        state = store.state(stem)
        assert "No space left on device" in state.error
        assert state.claim is None  # claims released


def test_model_failing_inside_onnx_runtime_fails_only_that_tomogram(tmp_path, capsys):
    """ONNX Runtime's own exceptions (not PomError, not OSError) are one tomogram's failure."""
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A",), multiple=4, only_hw=(8, 8))
    make_tomograms(tmp_path / "t", 3, shape=(16, 16, 16))  # binned 8 x 8: runs
    make_tomograms(tmp_path / "big", 1, shape=(16, 24, 24))  # binned 12 x 12: fails in session.run
    os.replace(tmp_path / "big" / "TS_000.mrc", tmp_path / "t" / "TS_big.mrc")
    assert _process(tmp_path, model) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "3 done, 1 failed" in captured.out
    error = _failure(tmp_path, "TS_big")
    assert "\n" not in error and error  # one line, with ONNX Runtime's reason
    assert sorted(p.name for p in (tmp_path / "o").glob("*.mrc")) == [f"TS_00{i}__A.mrc" for i in range(3)]
    assert not list((tmp_path / "o").glob(".*.tmp-*"))
