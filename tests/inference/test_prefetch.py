"""A preparation given up when the worker stops: at its next slab, not after the whole tomogram."""

import pytest

from pom_inference import prefetch
from pom_inference.prefetch import Cancelled, Preparation
from pom_inference.session import load_model

from ..helpers import make_onnx_model, make_tomograms


@pytest.fixture
def preparation(tmp_path):
    model = load_model(make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared"), quiet=True)
    tomogram = make_tomograms(tmp_path / "t", 1, shape=(256, 20, 24))[0]
    return Preparation(tomogram, model.info)


def test_a_cancelled_preparation_stops_at_its_next_slab(preparation, monkeypatch):
    real = prefetch.prepare_inputs
    reported = []

    def cancelled_after_the_first_slab(*args, on_ready=None, **kwargs):
        def advance(z1):
            reported.append(z1)
            preparation.cancel()  # as the worker does when it is stopped
            on_ready(z1)

        return real(*args, on_ready=advance, **kwargs)

    monkeypatch.setattr(prefetch, "prepare_inputs", cancelled_after_the_first_slab)
    preparation.run()  # never raises: the waiters get the error
    assert preparation.finished and isinstance(preparation.error, Cancelled)
    assert reported == reported[:1] and preparation.ready < 128  # one slab of the 128 binned slices, then stopped
    with pytest.raises(Cancelled):
        preparation.wait_finished()


def test_a_preparation_cancelled_before_it_starts_reads_nothing(preparation, monkeypatch):
    monkeypatch.setattr(prefetch, "read_inputs", lambda *a, **k: pytest.fail("read after cancel"))
    preparation.cancel()
    preparation.run()
    assert isinstance(preparation.error, Cancelled) and preparation.prepared is None


def test_an_uncancelled_preparation_completes(preparation):
    preparation.run()
    assert preparation.finished and preparation.error is None
    assert preparation.result().inputs.shape[0] == 128


def test_tomograms_of_one_shape_reuse_the_input_array_with_the_same_outputs(tmp_path, monkeypatch):
    """From the third tomogram of a size on, the input array of the one before last is reused: same bytes out."""
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions

    model = make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared")
    tomograms = make_tomograms(tmp_path / "t", 4, shape=(24, 20, 24))
    given = []
    real_init = Preparation.__init__

    def init(self, *args, spare=None, **kwargs):
        given.append(spare is not None)
        real_init(self, *args, spare=spare, **kwargs)

    monkeypatch.setattr(Preparation, "__init__", init)
    together = ProcessOptions(model=str(model), tomograms=tuple(map(str, tomograms)), output_dir=str(tmp_path / "all"))
    assert not process(together, [None], progress=False).failed
    assert given == [False, False, True, True]
    for tomogram in tomograms:
        alone = ProcessOptions(model=str(model), tomograms=(str(tomogram),), output_dir=str(tmp_path / "one"))
        assert not process(alone, [None], progress=False).failed
    outputs = sorted((tmp_path / "all").glob("*.mrc"))
    assert len(outputs) == 8
    assert all(p.read_bytes() == (tmp_path / "one" / p.name).read_bytes() for p in outputs)
