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


# ============================================================================= the matrix
#
# Every case: the right exit code; exactly one line on stderr naming the file, key or option
# (or, for a problem of one tomogram, that tomogram's one-line recorded failure while the
# others finish); no traceback; no hang (an alarm); no input changed and nothing written
# outside the output folder (checksums of every file before and after).

import hashlib  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import tracemalloc  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

CHANNEL = "Membrane"


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip in p.parents or p == skip or not p.is_file() or p.is_symlink() or p.is_fifo():
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _mutate_header(path: Path, **fields) -> None:
    offsets = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "mapc": 64, "nsymbt": 92}
    data = bytearray(path.read_bytes())
    for key, value in fields.items():
        struct.pack_into("<i", data, offsets[key], value)
    path.write_bytes(bytes(data))


def _meta_model(tmp: Path, **changes) -> Path:
    """A tiny model whose Pom metadata has ``changes`` applied (None removes a key)."""
    import onnx

    path = make_onnx_model(tmp / "m.onnx", channels=("Density", CHANNEL), classes=("A", "B"), kind="shared",
                           multiple=4)
    model = onnx.load(str(path))
    doc = json.loads(model.metadata_props[0].value)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    model.metadata_props[0].value = json.dumps(doc)
    onnx.save(model, str(path))
    return path


@dataclass
class Case:
    """One bad input: ``setup(tmp)`` prepares it and returns the command line."""

    id: str
    setup: Callable[[Path], list[str]]
    code: int
    needles: tuple[str, ...] = ()
    failed: str | None = None  # the tomogram whose recorded failure names the problem (others done)
    done: int | None = None  # tomograms done at the end
    tool: str = "infer"
    max_mib: float | None = None  # peak Python allocation while running
    extra: Callable[[Path], None] | None = field(default=None)


def _infer_project(tmp: Path) -> Path:
    make_tomograms(tmp / "t", 3, channels=(CHANNEL,))
    return make_onnx_model(tmp / "m.onnx", channels=("Density", CHANNEL), classes=("A", "B"), kind="shared",
                           multiple=4)


def _run_args(tmp: Path, model: Path, *extra: str, tomograms: str | None = None) -> list[str]:
    return ["process", str(model), "--tomograms", tomograms or str(tmp / "t"), "--output", str(tmp / "o"),
            "--gpus", "cpu", *extra]


def infer_case(id, change, code, needles=(), failed=None, done=None, extra=(), max_mib=None, check=None):
    """A pom-infer case: ``change(tmp)`` breaks something in a 3-tomogram setup."""
    def setup(tmp):
        model = _infer_project(tmp)
        result = change(tmp)
        if isinstance(result, Path):
            model = result
        tomograms = result if isinstance(result, str) else None
        return _run_args(tmp, model, *extra, tomograms=tomograms)
    return Case(id, setup, code, tuple(needles), failed, done, "infer", max_mib, check)


def _nothing(tmp):
    return None


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _symlink(path: Path, target: str) -> None:
    path.unlink(missing_ok=True)
    os.symlink(target, path)


def _volume(tmp, name, data, voxel=10.0):
    write_volume(tmp / "t" / name, data, voxel)


def _big_endian(tmp):
    path = tmp / "t" / "TS_001.mrc"
    data = mrcfile.read(path)
    path.unlink()
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(">f4"))
        mrc.voxel_size = 10.0


def _same_stem_list(tmp):
    (tmp / "other").mkdir()
    shutil.copy(tmp / "t" / "TS_001.mrc", tmp / "other" / "TS_001.mrc")
    listing = tmp / "list.txt"
    listing.write_text(f"{tmp / 't' / 'TS_001.mrc'}\n{tmp / 'other' / 'TS_001.mrc'}\n")
    return str(listing)


def _list(tmp, text: bytes) -> str:
    listing = tmp / "list.txt"
    listing.write_bytes(text)
    return str(listing)


def _voxel_header(tmp, value):
    path = tmp / "t" / "TS_001.mrc"
    with mrcfile.open(path, "r+") as mrc:
        mrc.voxel_size = value


def _check_voxel(tmp):
    from pom_common.mrcio import read_volume

    vol = read_volume(tmp / "o" / "TS_001__A.mrc")
    assert np.isfinite(vol.voxel_size) and vol.voxel_size > 0


INFER_CASES = [
    # --- volumes: the tomogram fails, one line recorded, the others finish
    infer_case("zeros-header", lambda t: _write(t / "t" / "TS_001.mrc", b"\0" * 1500), 1, ["TS_001.mrc"], "TS_001", 2),
    infer_case("empty-file", lambda t: _write(t / "t" / "TS_001.mrc", b""), 1, ["shorter than a header"], "TS_001", 2),
    infer_case("truncated", lambda t: _write(t / "t" / "TS_001.mrc", (t / "t" / "TS_001.mrc").read_bytes()[:-512]),
               1, ["truncated"], "TS_001", 2),
    infer_case("negative-dimension", lambda t: _mutate_header(t / "t" / "TS_001.mrc", ny=-20), 1, ["voxels"],
               "TS_001", 2),
    infer_case("zero-dimension", lambda t: _mutate_header(t / "t" / "TS_001.mrc", nz=0), 1, ["voxels"], "TS_001", 2),
    infer_case("huge-extended-header", lambda t: _mutate_header(t / "t" / "TS_001.mrc", nsymbt=2**31 - 1), 1,
               ["extended header"], "TS_001", 2, max_mib=200),
    infer_case("negative-extended-header", lambda t: _mutate_header(t / "t" / "TS_001.mrc", nsymbt=-8), 1,
               ["extended header"], "TS_001", 2),
    infer_case("unknown-mode", lambda t: _mutate_header(t / "t" / "TS_001.mrc", mode=9), 1, ["mode 9"], "TS_001", 2),
    infer_case("complex-mode", lambda t: _mutate_header(t / "t" / "TS_001.mrc", mode=4, nx=12), 1, ["TS_001.mrc"],
               "TS_001", 2),
    infer_case("axis-order", lambda t: _mutate_header(t / "t" / "TS_001.mrc", mapc=2), 1, ["axis order"], "TS_001", 2),
    infer_case("2d-image", lambda t: _volume2d(t), 1, ["3D volume"], "TS_001", 2),
    infer_case("nan", lambda t: _volume(t, "TS_001.mrc", _with(np.nan)), 1, ["NaN or Inf"], "TS_001", 2),
    infer_case("inf", lambda t: _volume(t, "TS_001.mrc", _with(np.inf)), 1, ["NaN or Inf"], "TS_001", 2),
    infer_case("anisotropic", lambda t: _anisotropic(t), 1, ["anisotropic"], "TS_001", 2),
    infer_case("broken-link", lambda t: _symlink(t / "t" / "TS_001.mrc", "gone.mrc"), 1, ["broken symbolic link"],
               "TS_001", 2),
    infer_case("link-loop", lambda t: _symlink(t / "t" / "TS_001.mrc", "TS_001.mrc"), 1, ["symbolic link loop"],
               "TS_001", 2),
    infer_case("named-pipe", lambda t: _fifo(t / "t" / "TS_001.mrc"), 1, ["named pipe"], "TS_001", 2),
    infer_case("folder-named-mrc", lambda t: ((t / "t" / "TS_009.mrc").mkdir(), None)[1], 1, ["a folder"], "TS_009", 3),
    infer_case("channel-missing", lambda t: (t / "t" / f"TS_001__{CHANNEL}.mrc").unlink(), 1,
               [f"channel {CHANNEL!r} not found"], "TS_001", 2),
    infer_case("channel-shape", lambda t: write_volume(t / "t" / f"TS_001__{CHANNEL}.mrc",
                                                       np.zeros((12, 20, 22), np.uint8), 10.0), 1,
               ["differs from its tomogram"], "TS_001", 2),
    infer_case("channel-broken-link", lambda t: _symlink(t / "t" / f"TS_001__{CHANNEL}.mrc", "gone.mrc"), 1,
               ["broken symbolic link"], "TS_001", 2),
    infer_case("channel-pipe", lambda t: _fifo(t / "t" / f"TS_001__{CHANNEL}.mrc"), 1, ["named pipe"], "TS_001", 2),
    infer_case("channel-corrupt", lambda t: _write(t / "t" / f"TS_001__{CHANNEL}.mrc", b"\1" * 2000), 1,
               [f"TS_001__{CHANNEL}.mrc"], "TS_001", 2),
    infer_case("voxel-nan-header", lambda t: _voxel_header(t, float("nan")), 0, done=3, check=_check_voxel),
    infer_case("voxel-negative-header", lambda t: _voxel_header(t, -5.0), 0, done=3, check=_check_voxel),
    # --- the list of tomograms: refused before any work (exit 2)
    infer_case("same-stem-in-two-folders", _same_stem_list, 2, ["two tomograms named 'TS_001'"]),
    infer_case("list-not-utf8", lambda t: _list(t, b"TS_\xe9.mrc\n"), 2, ["list.txt", "UTF-8"]),
    infer_case("list-is-a-pipe", lambda t: (_fifo(t / "list.txt"), str(t / "list.txt"))[1], 2,
               ["list.txt", "named pipe"]),
    infer_case("list-names-missing-file", lambda t: _list(t, f"{t / 't' / 'TS_000.mrc'}\n{t / 'nope.mrc'}\n".encode()),
               1, ["nope.mrc"], "nope", 1),
    infer_case("tomograms-path-missing", lambda t: str(t / "nowhere"), 2, ["nowhere", "expected a folder"]),
    infer_case("empty-list", lambda t: _list(t, b"# nothing\n"), 2, ["no tomograms"]),
    # --- the model: refused once, before any work (exit 2)
    infer_case("model-missing", lambda t: t / "none.onnx", 2, ["none.onnx", "not found"]),
    infer_case("model-not-onnx", lambda t: (_write(t / "bad.onnx", b"hello"), t / "bad.onnx")[1], 2,
               ["bad.onnx", "not a usable ONNX model"]),
    infer_case("model-pipe", lambda t: (_fifo(t / "p.onnx"), t / "p.onnx")[1], 2, ["p.onnx", "named pipe"]),
    infer_case("model-no-metadata", lambda t: make_onnx_model(t / "plain.onnx", metadata=False), 2,
               ["plain.onnx", "without Pom metadata"]),
    infer_case("meta-size-multiple-0", lambda t: _meta_model(t, size_multiple=0), 2, ["m.onnx", "size_multiple"]),
    infer_case("meta-bin-factor-0", lambda t: _meta_model(t, bin_factor=0), 2, ["m.onnx", "bin_factor"]),
    infer_case("meta-negative-z-sum", lambda t: _meta_model(t, z_sum=-1), 2, ["m.onnx", "z_sum"]),
    infer_case("meta-z-sum-string", lambda t: _meta_model(t, z_sum="2"), 2, ["m.onnx", "z_sum"]),
    infer_case("meta-more-classes-than-outputs", lambda t: _meta_model(t, classes=["A", "B", "C"]), 2,
               ["m.onnx", "output"]),
    infer_case("meta-class-with-separator", lambda t: _meta_model(t, classes=["../A", "B"]), 2, ["m.onnx", "'../A'"]),
    infer_case("meta-duplicate-classes", lambda t: _meta_model(t, classes=["A", "A"]), 2, ["m.onnx", "twice"]),
    infer_case("meta-channel-with-separator", lambda t: _meta_model(t, channels=["Density", "a/b"]), 2,
               ["m.onnx", "'a/b'"]),
    infer_case("meta-unknown-normalisation", lambda t: _meta_model(t, normalisation={"Density": "magic"}), 2,
               ["m.onnx", "magic"]),
    infer_case("meta-kind", lambda t: _meta_model(t, kind="triple"), 2, ["m.onnx", "kind"]),
    infer_case("meta-no-classes", lambda t: _meta_model(t, classes=None), 2, ["m.onnx", "classes"]),
    infer_case("meta-voxel-nan", lambda t: _meta_model(t, voxel_size="NaN"), 2, ["m.onnx", "voxel_size"]),
    infer_case("meta-huge-window", lambda t: _meta_model(t, normalisation_window=8000), 0, done=3, max_mib=100),
    # --- options: refused before any work (exit 2)
    infer_case("batch-0", _nothing, 2, ["--batch"], extra=("--batch", "0")),
    infer_case("tta-5", _nothing, 2, ["--tta"], extra=("--tta", "5")),
    infer_case("lease-inf", _nothing, 2, ["lease"], extra=("--lease-seconds", "inf")),
    infer_case("lease-0", _nothing, 2, ["lease"], extra=("--lease-seconds", "0")),
    infer_case("lease-not-a-number", _nothing, 2, ["--lease-seconds"], extra=("--lease-seconds", "soon")),
    infer_case("voxel-size-nan", _nothing, 2, ["--voxel-size"], extra=("--voxel-size", "nan")),
    infer_case("voxel-size-negative", _nothing, 2, ["--voxel-size"], extra=("--voxel-size", "-5")),
    infer_case("unknown-class", _nothing, 2, ["'Golgi'", "m.onnx"], extra=("--classes", "Golgi")),
    infer_case("gpus-garbage", _nothing, 2, ["--gpus", "a,b"], extra=("--gpus", "a,b")),
    infer_case("gpus-without-cuda", _nothing, 2, ["libcuda.so.1", "--gpus cpu"], extra=("--gpus", "0")),
    infer_case("workers-0", _nothing, 2, ["--workers"], extra=("--workers", "0")),
    infer_case("stall-negative", _nothing, 2, ["--stall-seconds"], extra=("--stall-seconds", "-1")),
    infer_case("dtype-unknown", _nothing, 2, ["--dtype"], extra=("--dtype", "int64")),
    # --- the output folder (exit 2, inputs untouched)
    infer_case("output-is-a-file", lambda t: (t / "o").write_text("x"), 2, ["the output is a file"]),
    infer_case("output-over-inputs", lambda t: None, 2, ["would overwrite the input", f"TS_000__{CHANNEL}.mrc"]),
]


def _volume2d(tmp):
    path = tmp / "t" / "TS_001.mrc"
    path.unlink()
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((20, 24), np.float32))


def _with(value):
    data = np.zeros((12, 20, 24), np.float32)
    data[3, 4, 5] = value
    return data


def _anisotropic(tmp):
    path = tmp / "t" / "TS_001.mrc"
    with mrcfile.open(path, "r+") as mrc:
        mrc.voxel_size = (10.0, 20.0, 10.0)


def _output_over_inputs_setup(tmp):
    make_tomograms(tmp / "t", 3, channels=(CHANNEL,))
    model = make_onnx_model(tmp / "m.onnx", channels=("Density", CHANNEL), classes=(CHANNEL, "B"), kind="shared",
                            multiple=4)
    return ["process", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "t"), "--gpus", "cpu"]


INFER_CASES[-1] = Case("output-over-inputs", _output_over_inputs_setup, 2,
                       ("would overwrite the input", f"__{CHANNEL}.mrc"))
INFER_CASES.append(Case("output-read-only", lambda t: [*_ro_output(t)], 2, ("read-only",)))


def _ro_output(tmp):
    model = _infer_project(tmp)
    (tmp / "o").mkdir()
    os.chmod(tmp / "o", 0o555)
    return _run_args(tmp, model)


def _config_case(id, change, code, needles, command=("single", "initialize")):
    """A pom case on a copy of the fixture project: ``change(project)`` breaks its configuration or inputs."""
    def setup(tmp):
        project = _copy_fixture(tmp)
        change(project)
        return ["--project", str(project), *command]
    return Case(id, setup, code, tuple(needles), tool="pom")


def _copy_fixture(tmp: Path) -> Path:
    from .conftest import _copy_project

    return _copy_project(tmp / "project")


def _set(project, **changes):
    path = project / "project_configuration.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _raw_config(project, data: bytes):
    _write(project / "project_configuration.json", data)


CONFIG = "project_configuration.json"
POM_CASES = [
    _config_case("config-not-json", lambda p: _raw_config(p, b"{'z_sum': 2}"), 2, [CONFIG, "not valid JSON"]),
    _config_case("config-latin1", lambda p: _raw_config(p, '{"ontologies": ["Mitochondri\u00e9"]}'.encode("latin-1")), 2,
                 [CONFIG, "UTF-8"]),
    _config_case("config-deeply-nested", lambda p: _raw_config(p, b"[" * 100000 + b"]" * 100000), 2, [CONFIG, "nested"]),
    _config_case("config-pipe", lambda p: _fifo(p / CONFIG), 2, [CONFIG, "named pipe"]),
    _config_case("config-not-an-object", lambda p: _raw_config(p, b"[1, 2]"), 2, [CONFIG, "JSON object"]),
    _config_case("config-unknown-key", lambda p: _set(p, ontologys=["Void"]), 2, ["'ontologys'", "did you mean"]),
    _config_case("config-wrong-type", lambda p: _set(p, apix="15.68"), 2, ["'apix'", "a number"]),
    _config_case("config-apix-nan", lambda p: _raw_config(p, b'{"apix": NaN}'), 2, ["'apix'"]),
    _config_case("config-apix-negative", lambda p: _set(p, apix=-1.0), 2, ["'apix'", "positive"]),
    _config_case("config-z-sum-huge", lambda p: _set(p, z_sum=1000), 2, ["'z_sum'"]),
    _config_case("config-box-1", lambda p: _set(p, ontology_annotation_box_size=1), 2, ["'ontology_annotation_box_size'"]),
    # Valid settings that drop every box: the error names the key, not only "no training images".
    _config_case("config-z-sum-drops-every-box", lambda p: _set(p, z_sum=64), 2, ["'z_sum' 64", "no training images"]),
    _config_case("config-box-larger-than-images", lambda p: _set(p, ontology_annotation_box_size=4096), 2,
                 ["'ontology_annotation_box_size' 4096", "no training images"]),
    _config_case("config-box-odd", lambda p: _set(p, ontology_annotation_box_size=65), 2,
                 ["'ontology_annotation_box_size'"]),
    _config_case("config-escaping-ontology", lambda p: _set(p, ontologies=["../../../escaped"]), 2,
                 ["'ontologies'", "../../../escaped"]),
    _config_case("config-slash-ontology", lambda p: _set(p, ontologies=["ER/Golgi"]), 2, ["'ontologies'", "ER-Golgi"]),
    _config_case("config-duplicate-ontologies", lambda p: _set(p, ontologies=["Void", "Void"]), 2,
                 ["'ontologies'", "more than once"]),
    _config_case("config-duplicate-channels", lambda p: _set(p, macromolecules=["Density", "Density"]), 2,
                 ["'macromolecules'", "more than once"]),
    _config_case("config-no-channels", lambda p: _set(p, macromolecules=[]), 2, ["'macromolecules'"]),
    _config_case("config-empty-ontologies", lambda p: _set(p, ontologies=[]), 2, ["'ontologies'", "empty"]),
    _config_case("config-missing-folder", lambda p: _set(p, tomogram_dir="nowhere"), 2, ["'tomogram_dir'", "nowhere"]),
    _config_case("config-bad-gpus", lambda p: _set(p, GPUS="zero"), 2, ["'GPUS'"]),
    _config_case("unknown-feature", lambda p: None, 2, ["'Golgi'", "ontologies"], ("single", "test", "-o", "Golgi")),
    _config_case("bad-gpus-option", lambda p: None, 2, ["-gpus", "1.5"], ("single", "train", "-o", "Void", "-gpus", "1.5")),
    _config_case("unknown-command", lambda p: None, 2, ["invalid choice"], ("single", "fly")),
    _config_case("process-without-model", lambda p: None, 2, ["shared.onnx", "not found"],
                 ("shared", "process", "-gpus", "cpu")),
    _config_case("scns-pipe", lambda p: _fifo(p / "tomograms" / "TS_009.scns"), 0, []),
]


@pytest.mark.parametrize("case", INFER_CASES + POM_CASES, ids=lambda c: c.id)
def test_bad_input_matrix(case, tmp_path, capsys):
    if case.id == "output-read-only" and os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder")
    argv = case.setup(tmp_path)
    output = tmp_path / ("project/training_datasets" if case.tool == "pom" else "o")
    before = _snapshot(tmp_path, output)
    main = infer_main if case.tool == "infer" else pom_main

    def hang(signum, frame):
        raise AssertionError(f"{case.id}: no answer after 60 s (a hang)")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    tracemalloc.start()
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's exit in a program whose main does not catch it
            code = exc.code
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        if output.exists():
            os.chmod(output, 0o755)
    captured = capsys.readouterr()
    assert code == case.code, (captured.out, captured.err)
    assert "Traceback" not in captured.err + captured.out
    if case.code == 2:
        lines = [line for line in captured.err.strip().splitlines() if line]
        assert len(lines) == 1, captured.err
        for needle in case.needles:
            assert needle in lines[0], lines[0]
    elif case.failed is not None:
        error = FileClaimStore(output).state(case.failed).error
        assert error and "\n" not in error
        for needle in case.needles:
            assert needle in error, error
    elif case.tool == "pom" and case.id == "scns-pipe":
        assert "TS_009.scns" in captured.out and "named pipe" in captured.out
    if case.done is not None:
        from pom_inference.status import dataset_status

        assert len(dataset_status(output).done) == case.done
    if case.max_mib is not None:
        assert peak < case.max_mib, f"{case.id}: {peak:.0f} MiB allocated"
    after = _snapshot(tmp_path, output)
    assert after == before, "an input changed, or a file was written outside the output folder"
    if case.extra is not None:
        case.extra(tmp_path)


def test_the_matrix_is_large():
    assert len(INFER_CASES) + len(POM_CASES) >= 60


def test_big_endian_twin_gives_identical_outputs(tmp_path):
    model = _infer_project(tmp_path)
    assert infer_main(_run_args(tmp_path, model)) == 0
    little = {p.name: p.read_bytes() for p in (tmp_path / "o").glob("*.mrc")}
    shutil.rmtree(tmp_path / "o")
    _big_endian(tmp_path)
    with mrcfile.open(tmp_path / "t" / "TS_001.mrc") as mrc:
        assert mrc.data.dtype.byteorder == ">"
    assert infer_main(_run_args(tmp_path, model)) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").glob("*.mrc")} == little
