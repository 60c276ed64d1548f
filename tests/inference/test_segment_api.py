"""The array API gives exactly what the file pipeline writes, and its slabs add up to the whole."""

import numpy as np
import pytest

from pom_common.mrcio import read_volume
from pom_inference import iter_slabs, load_model, segment
from pom_inference.cli import main as infer_main

from ..helpers import AIS_MINI, DATA, make_onnx_model


def _volumes(stem="TS_001"):
    volumes = {c: np.asarray(read_volume(AIS_MINI / "macromolecules" / f"{stem}__{c}.mrc").data)
               for c in ("Membrane", "Ribosome")}
    volumes["Density"] = np.asarray(read_volume(AIS_MINI / "tomograms" / f"{stem}.mrc").data)
    return volumes


def test_segment_equals_the_files_pom_infer_writes(tmp_path):
    model = load_model(DATA / "golden" / "shared.onnx")
    probabilities = segment(model, _volumes(), tta=2)
    assert infer_main(["process", str(DATA / "golden" / "shared.onnx"), "--tomograms", str(AIS_MINI / "tomograms"),
                       "--macromolecules", str(AIS_MINI / "macromolecules"), "--output", str(tmp_path),
                       "--gpus", "cpu", "--tta", "2"]) == 0
    for k, name in enumerate(model.info.classes):
        written = np.asarray(read_volume(tmp_path / f"TS_001__{name}.mrc").data)
        assert np.array_equal(written, probabilities[..., k])


def test_slabs_cover_the_volume_in_order():
    model = load_model(DATA / "golden" / "shared.onnx")
    volumes = _volumes("TS_002")
    whole = segment(model, volumes, tta=1)
    starts, parts = zip(*iter_slabs(model, volumes, tta=1, slab=7))
    assert starts == tuple(range(0, whole.shape[0], 7))
    assert np.array_equal(np.concatenate(parts), whole)


def test_single_channel_model_takes_a_bare_array(tmp_path):
    model = load_model(make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared"))
    out = segment(model, np.random.default_rng(0).standard_normal((8, 12, 16)).astype(np.float32), tta=1)
    assert out.shape == (4, 6, 8, 2)
    two = load_model(make_onnx_model(tmp_path / "two.onnx", channels=("Density", "Membrane")))
    with pytest.raises(ValueError, match="Membrane"):
        segment(two, np.zeros((8, 12, 16), np.float32))
