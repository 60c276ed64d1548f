"""Bad input to ``pom-infer``: a one-line error naming the file or option (exit 2) for what a run
cannot start with; a one-line recorded failure for one tomogram's problem while the others finish."""

import os
import shutil

import mrcfile
import numpy as np
import pytest

from pom_common.mrcio import write_volume
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main

from ..helpers import REAL_MRC, make_onnx_model, make_tomograms, one_line_error

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
        def __init__(self, volume):
            self.volume = volume

        def write(self, z0, block):
            state["slabs"] += 1
            if state["slabs"] > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.volume.write(z0, block)

        def header_stats(self):
            return self.volume.header_stats()

    import contextlib

    @contextlib.contextmanager
    def failing(path, shape, dtype, voxel_size, *args):
        with real_new_volume(path, shape, dtype, voxel_size, *args) as volume:
            yield Full(volume)

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
