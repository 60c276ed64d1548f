import numpy as np
import pytest

from pom_common.errors import ModelError
from pom_common.modelmeta import ModelInfo
from pom_inference.predict import predict_slices
from pom_inference.preprocess import pad_to_multiple, prepare_inputs
from pom_inference.session import load_model

from ..helpers import make_onnx_model


def test_load_model_reads_metadata_and_says_what_runs_it(tmp_path, caplog):
    path = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"), classes=("A", "B"), kind="shared")
    with caplog.at_level("INFO"):
        model = load_model(path)
    assert model.info.classes == ("A", "B") and model.info.channels == ("Density", "Membrane")
    assert model.provider == "cpu" and model.device is None
    lines = [r.getMessage() for r in caplog.records if "ONNX Runtime" in r.getMessage()]
    assert len(lines) == 1 and "CPU" in lines[0]


def test_not_onnx(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="m.onnx: not a usable ONNX model"):
        load_model(path)


def test_onnx_without_metadata(tmp_path):
    path = make_onnx_model(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ModelError, match="without Pom metadata"):
        load_model(path)


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "none.onnx")


def test_pad_reflects_and_every_pixel_gets_a_value():
    x = np.arange(2 * 5 * 7 * 1, dtype=np.float32).reshape(2, 5, 7, 1)
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape == (2, 8, 8, 1) and (h, w) == (5, 7)
    assert padded[0, 5, 0, 0] == x[0, 3, 0, 0]  # reflection, not zeros


@pytest.mark.parametrize("tta", [1, 2, 3, 4, 8])
def test_tta_of_an_equivariant_model_is_exact(tta):
    def run(batch):  # pixel-wise: commutes with every rotation and flip
        return 1 / (1 + np.exp(-batch[..., :1]))

    x = np.random.default_rng(0).standard_normal((3, 10, 13, 2)).astype(np.float32)
    out = predict_slices(run, x, multiple=8, tta=tta, batch=2)
    assert out.shape == (3, 10, 13, 1)
    np.testing.assert_allclose(out, run(x), rtol=1e-6)


def test_tta_undoes_rotations():
    def run(batch):  # marks the top-left corner: not rotation-equivariant
        out = np.zeros(batch.shape[:3] + (1,), np.float32)
        out[:, 0, 0] = 1
        return out

    x = np.zeros((1, 8, 8, 1), np.float32)
    out = predict_slices(run, x, multiple=8, tta=4)
    corners = [out[0, 0, 0, 0], out[0, 0, 7, 0], out[0, 7, 7, 0], out[0, 7, 0, 0]]
    assert corners == pytest.approx([0.25] * 4)


def test_prepare_inputs_normalises_like_training():
    rng = np.random.default_rng(1)
    density = rng.standard_normal((10, 8, 8)).astype(np.float32) * 3 + 2
    membrane = rng.integers(0, 256, (10, 8, 8)).astype(np.uint16)
    info = ModelInfo(kind="single", classes=("A",), channels=("Density", "Membrane"), z_sum=1,
                     normalisation={"Density": "volume", "Membrane": "uint8"})
    x = prepare_inputs({"Density": density, "Membrane": membrane}, info)
    assert x.shape == (5, 4, 4, 2)
    assert abs(float(x[..., 0].mean())) < 1e-5 and float(x[..., 0].std()) == pytest.approx(1, rel=1e-4)
    assert x[..., 1].min() >= -1 and x[..., 1].max() <= 1


def test_local_standardisation_matches_a_window_reference():
    from scipy.ndimage import uniform_filter

    from pom_common.normalise import standardise_local

    rng = np.random.default_rng(5)
    volume = rng.standard_normal((3, 21, 30)).astype(np.float32)
    volume[:, :, 15:] += 4  # a bright half: whole-volume standardisation would shift the other half
    for window in (4, 7, 40):
        mean = uniform_filter(volume.astype(np.float64), (1, window, window), mode="reflect")
        sq = uniform_filter(volume.astype(np.float64) ** 2, (1, window, window), mode="reflect")
        expected = (volume - mean) / np.sqrt(np.maximum(sq - mean**2, 0))
        got = standardise_local(volume.copy(), window)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_local_standardisation_of_a_flat_image():
    from pom_common.normalise import standardise_local

    flat = np.full((1, 8, 8), 3.0, np.float32)
    assert np.all(standardise_local(flat, 4) == 0)
