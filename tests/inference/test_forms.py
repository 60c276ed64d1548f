"""Output forms: the label map (``--labels``) and OME-Zarr stores (``--format ome-zarr``)."""

import json
import shutil

import mrcfile
import numpy as np
import pytest

from pom_common.errors import ConfigError
from pom_common.mrcio import read_volume
from pom_inference.cli import main as infer_main
from pom_inference.forms import OutputForm, check_form, header_lines, label_map, label_names, label_values

from ..helpers import AIS_MINI, DATA

SHARED = DATA / "golden" / "shared.onnx"


def test_label_map_is_the_argmax_with_unknown_below_the_minimum():
    planes = np.zeros((3, 1, 2, 3), np.float32)  # classes A, Unknown, B
    planes[0, 0] = [[0.6, 0.2, 0.1], [0.4, 0.3, 0.34]]
    planes[1, 0] = [[0.3, 0.7, 0.1], [0.3, 0.3, 0.33]]
    planes[2, 0] = [[0.1, 0.1, 0.8], [0.3, 0.4, 0.33]]
    values = label_values(("A", "Unknown", "B"))
    assert values == [1, 0, 2]
    assert label_names(("A", "Unknown", "B")) == {"0": "Unknown", "1": "A", "2": "B"}
    got = label_map(planes, values, 0.0)
    assert got.dtype == np.int8 and got.tolist() == [[[1, 0, 2], [1, 2, 1]]]  # ties: the first class
    assert label_map(planes, values, 0.5).tolist() == [[[1, 0, 2], [0, 0, 0]]]


def test_form_recipe_and_checks():
    assert OutputForm().recipe(("A", "B")) == {} and OutputForm().default
    assert OutputForm(labels=True).resolved(("A", "B", "Unknown")) == 0.0
    assert OutputForm(labels=True).resolved(("Vesicle",)) == 0.5  # one class: a threshold, not an argmax
    assert OutputForm(format="ome-zarr").recipe(("A",)) == {"format": "ome-zarr"}
    assert OutputForm(labels=True, min_probability=0.3).recipe(("A", "B"))["labels"]["min_probability"] == 0.3
    with pytest.raises(ConfigError, match="--min-probability: only with --labels"):
        check_form(OutputForm(min_probability=0.3))
    with pytest.raises(ConfigError, match="--min-probability: expected a probability"):
        check_form(OutputForm(labels=True, min_probability=1.5))
    lines = header_lines({str(i): f"Class{i:03d}" for i in range(40)})
    assert len(lines) <= 9 and all(len(line) <= 80 for line in lines)


def _run(out, *extra, tomograms=AIS_MINI / "test"):
    argv = ["process", str(SHARED), "--tomograms", str(tomograms), "--output", str(out), "--gpus", "cpu",
            "--tta", "1", *map(str, extra)]
    return infer_main(argv)


@pytest.fixture(scope="module")
def probabilities(tmp_path_factory):
    """The float32 outputs of the shared model on TS_003 (the label map's reference)."""
    out = tmp_path_factory.mktemp("f32")
    assert _run(out) == 0
    return out


def test_label_map_file_round_trips_and_is_its_own_recipe(probabilities, tmp_path, capsys):
    from pom_inference.session import read_model_info

    classes = read_model_info(str(SHARED)).classes
    out = tmp_path / "labels"
    assert _run(out, "--labels") == 0
    path = out / "TS_003__labels.mrc"
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 0 and mrc.data.dtype == np.int8  # one byte per voxel
        labels_in_header = b" ".join(mrc.header.label[1 : mrc.header.nlabl]).decode()
        expected_voxel = float(mrc.voxel_size.x)
    names = json.loads((out / "classes.json").read_text())
    assert names == label_names(classes) and names["0"] == "Unknown"
    for value, name in names.items():
        assert f"{value}={name}" in labels_in_header
    reference = read_volume(probabilities / "TS_003__Void.mrc")
    assert expected_voxel == pytest.approx(reference.voxel_size)  # the binned grid, as the per-class outputs
    planes = np.stack([np.asarray(read_volume(probabilities / f"TS_003__{c}.mrc").data) for c in classes])
    expected = label_map(planes, label_values(classes), 0.0)
    assert np.array_equal(np.asarray(read_volume(path).data), expected)
    assert len(np.unique(expected)) >= 3
    # Done: a second run does nothing; another form in the same folder is another recipe.
    mtime = path.stat().st_mtime_ns
    capsys.readouterr()
    assert _run(out, "--labels") == 0 and path.stat().st_mtime_ns == mtime
    assert _run(out, "--labels", "--min-probability", "0.9", "--overwrite") == 0
    strict = np.asarray(read_volume(path).data)
    assert (strict == 0).sum() > (expected == 0).sum()
    # The per-class float32 outputs in the same folder are not the label map's: segmented (not taken as done).
    assert _run(out) == 0 and (out / "TS_003__Void.mrc").is_file()


def test_label_map_classes_json_of_other_classes_is_refused(tmp_path, capsys):
    out = tmp_path / "labels"
    out.mkdir()
    (out / "classes.json").write_text('{"0": "Unknown", "1": "Ribosome"}')
    assert _run(out, "--labels") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "classes.json" in err and "another folder" in err


def test_pom_evaluate_accepts_the_label_map(tmp_path, capsys):
    """The label map of a model, scored against the same model's calls: Dice 1 for every class it holds."""
    from pom_training.cli import main as pom_main

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(AIS_MINI / "project_configuration.json", project)
    shutil.copytree(AIS_MINI / "test", project / "test")
    out = tmp_path / "labels"
    assert _run(out, "--labels", tomograms=project / "test") == 0
    report = tmp_path / "evaluation.json"
    argv = ["--project", str(project), "evaluate", "-m", str(SHARED), "--labels", str(out / "TS_003__labels.mrc"),
            "--tomogram", str(project / "test" / "TS_003.mrc"), "--tta", "1", "--json", str(report)]
    assert pom_main(argv) == 0, capsys.readouterr().err
    doc = json.loads(report.read_text())
    scored = {c: s for c, s in doc["classes"].items() if s.get("dice") is not None}
    assert len(scored) >= 3 and min(s["dice"] for s in scored.values()) > 0.99


def test_a_label_map_on_the_tomogram_grid_is_the_binned_one_repeated(probabilities, tmp_path):
    """--labels with --grid tomogram: the binned label map, each value filling its 2x2x2 block, at the tomogram's voxel size."""
    binned, full = tmp_path / "binned", tmp_path / "full"
    assert _run(binned, "--labels") == 0
    assert _run(full, "--labels", "--grid", "tomogram") == 0
    small = read_volume(binned / "TS_003__labels.mrc")
    large = read_volume(full / "TS_003__labels.mrc")
    with mrcfile.open(AIS_MINI / "test" / "TS_003.mrc", header_only=True) as mrc:
        shape = (int(mrc.header.nz), int(mrc.header.ny), int(mrc.header.nx))
        voxel = float(mrc.voxel_size.x)
    assert np.asarray(large.data).shape == shape and large.voxel_size == pytest.approx(voxel)
    b = np.asarray(small.data)
    pad = [(0, n - 2 * m) for n, m in zip(shape, b.shape)]
    assert np.array_equal(np.asarray(large.data), np.pad(b.repeat(2, 0).repeat(2, 1).repeat(2, 2), pad, mode="edge"))
    assert json.loads((full / "classes.json").read_text()) == json.loads((binned / "classes.json").read_text())


def test_one_byte_ome_zarr_outputs_follow_the_mrc_convention(probabilities, tmp_path):
    """--dtype uint8 --format ome-zarr: level 0 holds the same 0..127 signed bytes as the MRC files."""
    zarr = pytest.importorskip("zarr", reason="pip install 'pom-onnx[zarr]'")
    mrc_out, zarr_out = tmp_path / "mrc", tmp_path / "zarr"
    assert _run(mrc_out, "--dtype", "uint8") == 0
    assert _run(zarr_out, "--dtype", "uint8", "--format", "ome-zarr") == 0
    expected = np.asarray(read_volume(mrc_out / "TS_003__Void.mrc").data)
    level0 = zarr.open(str(zarr_out / "TS_003__Void.ome.zarr"), mode="r")["0"][:]
    assert level0.dtype == np.int8 and expected.dtype == np.int8 and np.array_equal(level0, expected)
    assert 0 <= level0.min() and level0.max() <= 127
