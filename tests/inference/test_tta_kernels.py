"""The TTA kernels give the bits of the NumPy definition (predict_slices) for every transform set and shape."""

import numpy as np
import pytest

from pom_inference.predict import SlicePredictor, predict_slices
from pom_inference.session import load_model

from ..helpers import make_onnx_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_onnx_model(tmp_path_factory.mktemp("m") / "m.onnx", channels=("Density", "Membrane"),
                           classes=("A", "B", "C"), kind="shared", multiple=8)
    return load_model(path, quiet=True)


@pytest.mark.parametrize("tta", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(5, 20, 24), (3, 17, 9), (2, 1, 7), (4, 16, 16)])
def test_predictor_equals_numpy_tta(model, tta, shape):
    x = np.random.default_rng(tta).standard_normal((*shape, 2), dtype=np.float32)
    reference = predict_slices(model.run, x, 8, tta, batch=8)
    chosen = [2, 0]
    predictor = SlicePredictor(model, x.shape[1:], 8, 3, tta, batch=3, classes=chosen)
    planes = np.concatenate([predictor(x[i : i + 3]).copy() for i in range(0, len(x), 3)], axis=1)
    assert np.array_equal(planes, np.moveaxis(reference[..., chosen], -1, 0))
    as_uint8 = SlicePredictor(model, x.shape[1:], 8, 3, tta, batch=8, classes=[1], kind="uint8")(x)
    assert as_uint8.dtype == np.int8
    assert np.array_equal(as_uint8[0], np.rint(np.clip(reference[..., 1], 0, 1) * 127))


def test_predictor_buffers_alternate(model):
    """The planes of one call stay valid while the next is computed (they are written meanwhile)."""
    x = np.random.default_rng(0).standard_normal((4, 12, 12, 2), dtype=np.float32)
    predictor = SlicePredictor(model, (12, 12, 2), 8, 3, 4, batch=2)
    first = predictor(x[:2])
    kept = first.copy()
    predictor(x[2:])
    assert np.array_equal(first, kept)


def test_batch_is_cut_to_the_output_budget(model, monkeypatch):
    import pom_inference.predict as predict

    monkeypatch.setattr(predict, "OUTPUT_BYTES", 4 * 16 * 16 * 3 * 4 * 4)  # twice two slices of 4 transforms
    assert SlicePredictor(model, (16, 16, 2), 8, 3, 4, batch=8).batch == 2


def test_deferred_calls_average_later_into_their_own_buffers(model):
    """Deferred: two batches' networks run before either is averaged, and each average is the batch's own."""
    x = np.random.default_rng(3).standard_normal((6, 20, 24, 2), dtype=np.float32)
    reference = SlicePredictor(model, x.shape[1:], 8, 3, 4, batch=3)
    expected = [reference(x[:3]).copy(), reference(x[3:]).copy()]
    predictor = SlicePredictor(model, x.shape[1:], 8, 3, 4, batch=3)
    first, second = predictor(x[:3], deferred=True), predictor(x[3:], deferred=True)
    assert callable(first) and callable(second)
    made_second = second().copy()
    assert np.array_equal(first(), expected[0]) and np.array_equal(made_second, expected[1])
