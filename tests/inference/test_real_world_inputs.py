"""What real labs hand the tools (issue 20): IMOD bytes, other channel scales, voxel sizes that
disagree, files still being written, several recipes and users on one folder, filesystem errors.

Each test describes a class of input and the behaviour the user is promised: never a
silently wrong or stale result, and one line (no traceback) for every refusal.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import pom_inference.worker as worker_module
from pom_common.errors import InputError
from pom_common.mrcio import IMOD_STAMP, read_volume, write_volume
from pom_common.normalise import channel_scale
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main
from pom_inference.inputs import tomograms_from

from ..helpers import make_onnx_model, make_tomograms

SHAPE = (8, 20, 24)


def _write_imod_bytes(path: Path, data: np.ndarray, voxel: float, signed: bool = False) -> None:
    """Bytes as IMOD writes them: MRC mode 0, its stamp at byte 152, flag bit 0 = signed."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.uint8).view(np.int8))
        mrc.voxel_size = voxel
    with open(path, "r+b") as handle:
        handle.seek(152)
        handle.write(struct.pack("<ii", IMOD_STAMP, 1 if signed else 0))


def _process(model, tomograms, output, *extra):
    return infer_main(["process", str(model), "--tomograms", str(tomograms), "--output", str(output), "--gpus", "cpu",
                       *map(str, extra)])


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(read_volume(p).data) for p in sorted(folder.glob("*__*.mrc"))}


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*__*.mrc"))}


def _backdate(*paths: Path, seconds: float = 60.0) -> None:
    """Files written a minute ago (as the lab's files are), so that no test waits for them to settle."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


# ---------------------------------------------------------------------------- bytes and scales


def test_imod_unsigned_bytes_are_read_as_unsigned(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, SHAPE).astype(np.uint8)
    _write_imod_bytes(tmp_path / "u.mrc", values, 10.0)
    _write_imod_bytes(tmp_path / "s.mrc", values, 10.0, signed=True)
    unsigned, signed = read_volume(tmp_path / "u.mrc"), read_volume(tmp_path / "s.mrc")
    assert unsigned.data.dtype == np.uint8 and np.array_equal(unsigned.data, values)
    assert signed.data.dtype == np.int8 and np.array_equal(signed.data, values.view(np.int8))


def test_imod_tomograms_and_channels_segment_as_their_unsigned_values(tmp_path):
    """newstack -mode 0 / trimvol output: the same result as the same values in Ais's mode 6."""
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"), classes=("Void", "Membrane"),
                            kind="shared")
    rng = np.random.default_rng(1)
    density = rng.integers(0, 256, SHAPE).astype(np.uint8)
    membrane = rng.integers(0, 256, SHAPE).astype(np.uint8)
    imod, ais = tmp_path / "imod", tmp_path / "ais"
    imod.mkdir(), ais.mkdir()
    _write_imod_bytes(imod / "TS_1.mrc", density, 10.0)
    _write_imod_bytes(imod / "TS_1__Membrane.mrc", membrane, 10.0)
    write_volume(ais / "TS_1.mrc", density, 10.0)
    write_volume(ais / "TS_1__Membrane.mrc", membrane, 10.0)
    _backdate(*imod.iterdir(), *ais.iterdir())
    assert _process(model, imod, tmp_path / "out_imod") == 0
    assert _process(model, ais, tmp_path / "out_ais") == 0
    a, b = _arrays(tmp_path / "out_imod"), _arrays(tmp_path / "out_ais")
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("dtype, values, scale", [
    (np.uint8, [0, 17, 255], 255.0),       # Ais
    (np.uint16, [0, 200], 255.0),          # Ais's uint8 as mode 6
    (np.int16, [0, 255], 255.0),
    (np.float32, [0.0, 254.5], 255.0),
    (np.int8, [0, 127], 127.0),            # easymode, Pom 1.2
    (np.float32, [0.0, 0.25, 1.0], 1.0),   # pom-infer --dtype float32 probabilities
    (np.uint8, [0, 1], 1.0),               # a 0/1 mask
    (np.float16, [0.0, 0.5], 1.0),
    (np.uint8, [0, 0], 255.0),             # empty: any scale reads it the same
])
def test_channel_full_scale(dtype, values, scale):
    volume = np.zeros((3, 4, 5), dtype=dtype)
    volume.flat[: len(values)] = values
    assert channel_scale(volume, "TS__Membrane.mrc")[0] == scale


@pytest.mark.parametrize("dtype, values, needle", [
    (np.float32, [-3.0, 2.0], "-3..2"),          # a density map given as a channel
    (np.int8, [-100, 100], "IMOD"),              # unsigned bytes stored as signed
    (np.float32, [0.0, 1000.0], "up to 1000"),   # not a segmentation
    (np.uint16, [0, 4000], "up to 4000"),
])
def test_channel_values_no_segmentation_holds_are_refused_by_name(dtype, values, needle):
    volume = np.zeros((3, 4, 5), dtype=dtype)
    volume.flat[: len(values)] = values
    with pytest.raises(InputError, match="TS__Membrane.mrc") as info:
        channel_scale(volume, "TS__Membrane.mrc")
    assert needle in str(info.value)


@pytest.mark.parametrize("name", ["probabilities", "signed bytes"])
def test_channels_of_other_scales_segment_like_ais_segmentations(tmp_path, name):
    """A float32 0..1 output of pom-infer (or easymode's int8 0..127) handed on as a channel."""
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"), classes=("Void", "Membrane"),
                            kind="shared")
    rng = np.random.default_rng(2)
    density = rng.standard_normal(SHAPE).astype(np.float32)
    if name == "signed bytes":
        half = rng.integers(0, 128, SHAPE).astype(np.int8)
        channel, reference = half, half.astype(np.float32) * np.float32(255.0 / 127.0)
    else:
        u8 = rng.integers(0, 256, SHAPE).astype(np.uint8)
        channel, reference = (u8 / np.float32(255.0)).astype(np.float32), u8
    for folder, data in (("other", channel), ("ref", reference)):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "TS_1.mrc", density, 10.0)
        write_volume(tmp_path / folder / "TS_1__Membrane.mrc", data, 10.0)
        _backdate(*(tmp_path / folder).iterdir())
        assert _process(model, tmp_path / folder, tmp_path / f"out_{folder}") == 0
    a, b = _arrays(tmp_path / "out_other"), _arrays(tmp_path / "out_ref")
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_channel_no_segmentation_holds_fails_its_tomogram_by_name(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"))
    paths = make_tomograms(tmp_path / "t", 2, shape=SHAPE, channels=("Membrane",))
    write_volume(tmp_path / "t" / "TS_001__Membrane.mrc", np.full(SHAPE, -2.0, np.float32), 10.0)
    _backdate(*(tmp_path / "t").iterdir())
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    out = capsys.readouterr().out
    assert "1 done, 1 failed" in out and "TS_001__Membrane.mrc" in out and "segmentation channel" in out
    assert paths


# ---------------------------------------------------------------------------- voxel sizes


def test_a_channel_at_another_voxel_size_is_refused_naming_both(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"))
    make_tomograms(tmp_path / "t", 2, shape=SHAPE, channels=("Membrane",))
    membrane = np.asarray(read_volume(tmp_path / "t" / "TS_000__Membrane.mrc").data)
    write_volume(tmp_path / "t" / "TS_000__Membrane.mrc", membrane.astype(np.uint8), 20.0)
    _backdate(*(tmp_path / "t").iterdir())
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if "FAILED TS_000" in x)
    assert "TS_000__Membrane.mrc" in line and "20 A" in line and "10 A" in line and "--allow-voxel-size-mismatch" in line
    assert not (tmp_path / "o" / "TS_000__Void.mrc").exists()


def test_a_tomogram_far_from_the_model_voxel_size_is_refused_then_allowed_deliberately(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")  # trained at 10 A
    make_tomograms(tmp_path / "t", 1, shape=SHAPE, voxel_size=40.0)
    make_tomograms(tmp_path / "near", 1, shape=SHAPE, voxel_size=12.0)  # within the tolerance
    _backdate(*(tmp_path / "t").iterdir(), *(tmp_path / "near").iterdir())
    assert _process(model, tmp_path / "near", tmp_path / "near_out") == 0
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    out = capsys.readouterr().out
    assert "40 A" in out and "10 A" in out and "trained at" in out
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1  # the same conditions: still failed, not retried
    assert _process(model, tmp_path / "t", tmp_path / "o", "--allow-voxel-size-mismatch") == 0  # other conditions: tried
    assert (tmp_path / "o" / "TS_000__Void.mrc").is_file()


# ---------------------------------------------------------------------------- inputs that change


def _writer_thread(path: Path, data: np.ndarray, seconds: float) -> threading.Thread:
    """Fill an existing full-size MRC slice by slice over ``seconds``, as a reconstruction program does."""
    def fill() -> None:
        with mrcfile.mmap(path, mode="r+") as mrc:
            for z in range(data.shape[0]):
                mrc.data[z] = data[z]
                mrc.flush()
                os.utime(path)
                time.sleep(seconds / data.shape[0])
    thread = threading.Thread(target=fill)
    thread.start()
    return thread


def test_a_tomogram_still_being_written_is_skipped_for_now_then_segmented(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 2, shape=SHAPE)
    _backdate(*(tmp_path / "t").iterdir())
    final = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    growing = tmp_path / "t" / "TS_001.mrc"
    write_volume(growing, np.zeros(SHAPE, np.float32), 10.0)  # created full size; slices filled later
    writer = _writer_thread(growing, final, 4.0)
    try:
        code = _process(model, tmp_path / "t", tmp_path / "o")
    finally:
        writer.join()
    out = capsys.readouterr().out
    assert code == 1 and "1 done, 0 failed, 1 skipped for now" in out and "SKIPPED TS_001" in out
    assert FileClaimStore(tmp_path / "o").state("TS_001").failure is None  # not recorded as a failure
    assert not (tmp_path / "o" / "TS_001__Void.mrc").exists()
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0  # complete now: segmented on a plain rerun
    assert (tmp_path / "o" / "TS_001__Void.mrc").is_file()


def test_a_rewritten_tomogram_is_segmented_again_on_a_plain_rerun(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx")
    paths = make_tomograms(tmp_path / "t", 2, shape=SHAPE)
    _backdate(*paths)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0
    before = _hashes(tmp_path / "o")
    write_volume(paths[1], np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32), 10.0)  # same size
    _backdate(paths[1], seconds=30)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0
    after = _hashes(tmp_path / "o")
    assert after["TS_000__Void.mrc"] == before["TS_000__Void.mrc"]
    assert after["TS_001__Void.mrc"] != before["TS_001__Void.mrc"]  # not "done" with the old outputs
    done = [e["stem"] for e in FileClaimStore(tmp_path / "o").journal() if e["event"] == "done"]
    assert sorted(done) == ["TS_000", "TS_001", "TS_001"]


def test_an_input_changed_while_it_is_segmented_publishes_nothing(tmp_path, monkeypatch, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    paths = make_tomograms(tmp_path / "t", 1, shape=SHAPE)
    _backdate(*paths)
    real = worker_module.Worker._predictor

    def touched(self, shape):  # the reconstruction program writes again mid-way
        os.utime(paths[0], (time.time(), time.time()))
        return real(self, shape)

    monkeypatch.setattr(worker_module.Worker, "_predictor", touched)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    assert "changed while it was being segmented" in capsys.readouterr().out
    assert list((tmp_path / "o").glob("*.mrc")) == [] and list((tmp_path / "o").glob(".*.tmp-*")) == []


def test_a_truncated_tomogram_fails_then_once_complete_a_plain_rerun_takes_it(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    paths = make_tomograms(tmp_path / "t", 2, shape=SHAPE)
    whole = paths[1].read_bytes()
    paths[1].write_bytes(whole[: len(whole) // 2])  # still being appended
    _backdate(*paths)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    assert "truncated" in capsys.readouterr().out
    with open(paths[1], "ab") as handle:
        handle.write(whole[len(whole) // 2:])
    _backdate(paths[1], seconds=10)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0


# ---------------------------------------------------------------------------- recipes sharing a folder


def _two_models(tmp_path, b_classes=("Void", "ER", "Unknown")):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = make_onnx_model(tmp_path / "a" / "shared.onnx", classes=("Void", "Mito", "Unknown"), kind="shared", seed=1)
    b = make_onnx_model(tmp_path / "b" / "shared.onnx", classes=b_classes, kind="shared", seed=2)
    _backdate(*make_tomograms(tmp_path / "t", 2, shape=SHAPE))
    return a, b


def test_two_projects_models_never_replace_each_others_outputs(tmp_path, capsys):
    a, b = _two_models(tmp_path)
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    first = _hashes(tmp_path / "o")
    capsys.readouterr()
    assert _process(b, tmp_path / "t", tmp_path / "o") == 1
    out = capsys.readouterr().out
    assert "another recipe" in out and str(a.resolve()) in out and "--overwrite" in out
    assert _hashes(tmp_path / "o") == first  # TS__Void / TS__Unknown still project a's, nothing of b's
    assert _process(b, tmp_path / "t", tmp_path / "o", "--overwrite") == 0  # deliberately
    assert _hashes(tmp_path / "o")["TS_000__Unknown.mrc"] != first["TS_000__Unknown.mrc"]
    assert _process(a, tmp_path / "t", tmp_path / "o") == 1  # now b's outputs are the protected ones
    assert str(b.resolve()) in capsys.readouterr().out


def test_models_with_other_class_names_share_a_folder(tmp_path):
    a, c = _two_models(tmp_path, b_classes=("ER",))
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    assert _process(c, tmp_path / "t", tmp_path / "o") == 0
    files = _hashes(tmp_path / "o")
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0  # both stay done: nothing redone
    assert _process(c, tmp_path / "t", tmp_path / "o") == 0
    assert _hashes(tmp_path / "o") == files and len(files) == 8
    done = [e for e in FileClaimStore(tmp_path / "o").journal() if e["event"] == "done"]
    assert len(done) == 4


def test_an_interrupted_overwrite_leaves_the_other_recipes_outputs_protected(tmp_path):
    a, b = _two_models(tmp_path)
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    store = FileClaimStore(tmp_path / "o")
    claim = store.claim("TS_000", redo=True)  # b --overwrite began TS_000 and was stopped
    assert claim is not None
    store.close()
    first = _hashes(tmp_path / "o")
    assert _process(b, tmp_path / "t", tmp_path / "o") == 1
    assert _hashes(tmp_path / "o") == first
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0  # a's outputs are still a's, done


def test_a_model_replaced_after_loading_is_recorded_by_what_ran(tmp_path, monkeypatch, capsys):
    """pom export replaces the file between ONNX Runtime reading it and the fingerprint."""
    a, b = _two_models(tmp_path, b_classes=("Void", "Mito", "Unknown"))
    a_bytes = a.read_bytes()
    real = worker_module.load_model

    def load_then_replace(path, *args, **kwargs):
        model = real(path, *args, **kwargs)
        shutil.copyfile(b, path)  # the new network lands now
        return model

    monkeypatch.setattr(worker_module, "load_model", load_then_replace)
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    record = FileClaimStore(tmp_path / "o").state("TS_000").done
    assert record["recipe"]["model_sha256"] == hashlib.sha256(a_bytes).hexdigest()
    monkeypatch.setattr(worker_module, "load_model", real)
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0  # the new network's outputs are not these: redone
    done = [e["stem"] for e in FileClaimStore(tmp_path / "o").journal() if e["event"] == "done"]
    assert sorted(done) == ["TS_000", "TS_000", "TS_001", "TS_001"]
    record = FileClaimStore(tmp_path / "o").state("TS_000").done
    assert record["recipe"]["model_sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- lists and folders


def test_lists_with_a_bom_windows_line_ends_comments_and_quotes(tmp_path):
    paths = make_tomograms(tmp_path / "t", 3, shape=SHAPE)
    text = f'# my list\r\n"{paths[0]}"\r\n\r\n{paths[1].name}\r\n  # {paths[2]}\r\n'
    (tmp_path / "t" / "list.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert tomograms_from(tmp_path / "t" / "list.txt") == [paths[0], paths[1]]


def test_empty_lists_and_folders_are_named(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "TS_001__Membrane.mrc").write_bytes(b"")  # channels are not tomograms
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbf# nothing yet\r\n")
    assert _process(model, tmp_path / "empty", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "empty") in err and "*.mrc" in err and "*.rec" in err and len(err.splitlines()) == 1
    assert _process(model, tmp_path / "list.txt", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "list.txt") in err and len(err.splitlines()) == 1


def test_rec_tomograms_are_found_in_folders(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx")
    paths = make_tomograms(tmp_path / "t", 2, shape=SHAPE)
    paths[1].rename(tmp_path / "t" / "TS_001.rec")
    os.replace(paths[0], tmp_path / "t" / "TS_000.REC")
    _backdate(*(tmp_path / "t").iterdir())
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.mrc")) == ["TS_000__Void.mrc", "TS_001__Void.mrc"]


# ---------------------------------------------------------------------------- filesystem errors


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO])
def test_a_filesystem_error_names_the_output_file(tmp_path, monkeypatch, capsys, code):
    model = make_onnx_model(tmp_path / "m.onnx")
    _backdate(*make_tomograms(tmp_path / "t", 1, shape=SHAPE))

    def failing(fd, data, offset):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pwrite", failing)
    assert _process(model, tmp_path / "t", tmp_path / "o") == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if "FAILED" in x)
    assert os.strerror(code) in line and str(tmp_path / "o") in line and "TS_000__Void.mrc" in line
    assert not list((tmp_path / "o").glob("*.mrc"))  # nothing published


def _as_nobody(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    env = {**os.environ, "HOME": "/nonexistent"}
    probe = subprocess.run([*command, "-c", "import pom_inference.cli"], capture_output=True, cwd=cwd, env=env)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot read this checkout or its virtual environment")
    return subprocess.run([*command, "-m", "pom_inference.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to run as a second user")


@pytest.fixture
def shared_tmp():
    """A folder every user can reach (pytest's tmp_path is private to its user)."""
    base = Path(tempfile.mkdtemp(prefix="pom-users-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_a_second_user_joining_an_output_folder_gets_one_line(shared_tmp):
    model = make_onnx_model(shared_tmp / "m.onnx")
    _backdate(*make_tomograms(shared_tmp / "t", 2, shape=SHAPE))
    out = shared_tmp / "o"
    out.mkdir()
    os.chmod(out, 0o777)  # anyone may write outputs here, but the work queue's folders are root's (umask 022)
    old = os.umask(0o022)
    try:
        assert _process(model, shared_tmp / "t", out) == 0
    finally:
        os.umask(old)
    for p in shared_tmp.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
    result = _as_nobody(["process", str(model), "--tomograms", str(shared_tmp / "t"), "--output", str(out),
                         "--gpus", "cpu", "--overwrite"], shared_tmp)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr and "root (uid 0)" in lines[0]
    assert "nobody" in lines[0] or "uid 65534" in lines[0]


@needs_root
def test_a_group_shared_output_folder_lets_a_second_user_join(shared_tmp):
    model = make_onnx_model(shared_tmp / "m.onnx")
    _backdate(*make_tomograms(shared_tmp / "t", 2, shape=SHAPE))
    out = shared_tmp / "o"
    out.mkdir()
    os.chown(out, 0, 65534)
    os.chmod(out, 0o2775)  # the lab's group owns it (g+ws)
    old = os.umask(0o022)
    try:
        assert _process(model, shared_tmp / "t", out) == 0
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o020 for p in (out / ".pom").rglob("*") if p.is_dir())
    result = _as_nobody(["process", str(model), "--tomograms", str(shared_tmp / "t"), "--output", str(out),
                         "--gpus", "cpu", "--overwrite"], shared_tmp)
    assert result.returncode == 0, result.stderr
    assert "2 done, 0 failed" in result.stdout
    records = [p for p in (out / ".pom").rglob("*.done.*")]
    assert {p.stat().st_uid for p in records} == {0, 65534}  # redone by the second user (same bytes: files kept)


def test_outputs_record_the_inputs_they_were_made_from(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"))
    _backdate(*make_tomograms(tmp_path / "t", 1, shape=SHAPE, channels=("Membrane",)))
    assert _process(model, tmp_path / "t", tmp_path / "o") == 0
    record = FileClaimStore(tmp_path / "o").state("TS_000").done
    st = os.stat(tmp_path / "t" / "TS_000__Membrane.mrc")
    assert record["inputs"]["Membrane"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    assert record["model_path"] == str(model.resolve())
    assert json.dumps(record)  # a plain JSON document


def test_retraining_then_processing_is_not_a_failure(tmp_path, capsys):
    """The same model file trained again (pom shared train): its older outputs are segmented again, exit 0."""
    a, b = _two_models(tmp_path, b_classes=("Void", "Mito", "Unknown"))
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    first = _hashes(tmp_path / "o")
    shutil.copyfile(b, a)  # retrained in place
    capsys.readouterr()
    assert _process(a, tmp_path / "t", tmp_path / "o") == 0
    captured = capsys.readouterr()
    assert "2 done, 0 failed" in captured.out and "earlier version" in captured.err
    assert all(_hashes(tmp_path / "o")[k] != first[k] for k in first)
    # another file with a model of the same classes is another recipe: protected, and the message says how
    (tmp_path / "c").mkdir()
    other = make_onnx_model(tmp_path / "c" / "shared.onnx", classes=("Void", "Mito", "Unknown"), kind="shared", seed=3)
    assert _process(other, tmp_path / "t", tmp_path / "o") == 1
    assert "--overwrite" in capsys.readouterr().out
