"""Output writers and the pure rule that says which tomograms a worker tries."""

import numpy as np
import pytest

from pom_common.claims import ClaimInfo, TomogramState
from pom_common.mrcio import read_volume
from pom_inference.eligibility import classify_outputs, decide
from pom_inference.outputs import MrcFloat32Writer, MrcUint8Writer, make_writer

FP = "f" * 16
OLD_INPUTS = {"Density": {"size": 100, "mtime_ns": 1, "inode": 7}}
NEW_INPUTS = {"Density": {"size": 100, "mtime_ns": 2, "inode": 7}}
DONE_RECORD = {"fingerprint": FP, "inputs": OLD_INPUTS, "recipes": {FP: {"inputs": OLD_INPUTS}}}
DONE = TomogramState("TS", 0, done=DONE_RECORD, done_at=100.0, record=DONE_RECORD, record_at=100.0)
LEGACY = TomogramState("TS", 0, done={"fingerprint": FP}, done_at=100.0, record={"fingerprint": FP}, record_at=100.0)
OTHER_RECORD = {"fingerprint": "0" * 16}
OTHER = TomogramState("TS", 0, done=OTHER_RECORD, done_at=100.0, record=OTHER_RECORD, record_at=100.0)
FAILURE = {"error": "boom", "fingerprint": FP, "inputs": OLD_INPUTS, "conditions": {"allow": False}}
FAILED = TomogramState("TS", 0, failure=FAILURE, failed_at=100.0, record=FAILURE, record_at=100.0)
LEGACY_FAILED = TomogramState("TS", 0, failure={"error": "boom"}, failed_at=100.0, record={"error": "boom"},
                              record_at=100.0)
OTHER_FAILED_RECORD = {**FAILURE, "fingerprint": "1" * 16}
OTHER_FAILED = TomogramState("TS", 0, failure=OTHER_FAILED_RECORD, failed_at=100.0, record=OTHER_FAILED_RECORD,
                             record_at=100.0)
RUNNING = TomogramState("TS", 0, claim=ClaimInfo("host", 1, 1.0, False))
# a redo of DONE that was interrupted (released): the newest record is the earlier generation's
RELEASED = TomogramState("TS", 1, record=DONE_RECORD, record_at=100.0)
SAME = {"allow": False}


@pytest.mark.parametrize("state, outputs, inputs, overwrite, retry, expected", [
    (TomogramState("TS"), "missing", OLD_INPUTS, None, None, "try"),      # never claimed
    (RUNNING, "missing", OLD_INPUTS, None, None, "try"),                 # the claim attempt decides
    (DONE, "ours", OLD_INPUTS, None, None, "done"),                      # done stays done
    (LEGACY, "ours", OLD_INPUTS, None, None, "done"),                    # ... also when recorded by older versions
    (DONE, "ours", NEW_INPUTS, None, None, "try"),                       # an input rewritten since: redo
    (DONE, "ours", None, None, None, "try"),                             # an input missing now: try (and fail)
    (DONE, "missing", OLD_INPUTS, None, None, "try"),                    # an output missing or replaced: redo
    (DONE, "ours", OLD_INPUTS, 200.0, None, "try"),                      # overwrite campaign began after it was done
    (DONE, "ours", OLD_INPUTS, 50.0, None, "done"),                      # ... done within the campaign: once is enough
    (RELEASED, "ours", OLD_INPUTS, None, None, "done"),                  # an interrupted redo leaves it done
    (OTHER, "theirs", OLD_INPUTS, None, None, "foreign"),                # another recipe's outputs: left alone
    (OTHER, "theirs", NEW_INPUTS, None, None, "foreign"),                # ... also made from older inputs
    (OTHER, "theirs", OLD_INPUTS, 200.0, None, "try"),                   # ... unless overwriting
    (OTHER, "theirs", OLD_INPUTS, 50.0, None, "foreign"),                # ... once
    (OTHER, "missing", OLD_INPUTS, None, None, "try"),                   # its outputs are not ours to protect any more
    (FAILED, "missing", OLD_INPUTS, None, None, "failed"),               # failed stays failed
    (LEGACY_FAILED, "missing", OLD_INPUTS, None, None, "failed"),        # ... also when recorded by older versions
    (FAILED, "missing", NEW_INPUTS, None, None, "try"),                  # the input changed (completed) since
    (FAILED, "missing", OLD_INPUTS, None, 200.0, "try"),                 # --retry-failed
    (FAILED, "missing", OLD_INPUTS, None, 50.0, "failed"),               # ... once per campaign
    (OTHER_FAILED, "missing", OLD_INPUTS, None, None, "try"),            # another recipe failed on it
])
def test_decisions(state, outputs, inputs, overwrite, retry, expected):
    assert decide(state, outputs, FP, inputs=inputs, conditions=SAME, overwrite_since=overwrite,
                  retry_since=retry) == expected


def test_a_failure_under_other_conditions_is_tried_again():
    assert decide(FAILED, "missing", FP, inputs=OLD_INPUTS, conditions={"allow": True}) == "try"


def test_output_names_belong_to_one_recipe():
    record = {"fingerprint": FP, "outputs": {"TS__A.mrc": {"size": 1, "inode": 1},
                                             "TS__U.mrc": {"size": 1, "inode": 2, "fingerprint": "0" * 16}}}
    intact = {"TS__A.mrc": True, "TS__U.mrc": True}
    assert classify_outputs(record, ["TS__A.mrc"], FP, intact) == "ours"
    assert classify_outputs(record, ["TS__A.mrc", "TS__U.mrc"], FP, intact) == "theirs"
    assert classify_outputs(record, ["TS__A.mrc", "TS__B.mrc"], FP, intact) == "missing"
    assert classify_outputs(record, ["TS__A.mrc", "TS__U.mrc"], FP, {**intact, "TS__U.mrc": False}) == "missing"
    assert classify_outputs(None, ["TS__A.mrc"], FP, {}) == "missing"


@pytest.mark.parametrize("kind, cls", [("float32", MrcFloat32Writer), ("uint8", MrcUint8Writer)])
def test_writer_writes_all_classes_at_once(tmp_path, kind, cls):
    writer = make_writer(kind, tmp_path, ("B", "A"), (1, 0))
    assert isinstance(writer, cls)
    probs = np.random.default_rng(0).random((5, 6, 7, 2)).astype(np.float32)
    with writer.open("TS", (5, 6, 7), 20.0) as sink:
        sink.write(0, writer.planes(probs[:3]))
        assert not any(p.exists() for p in writer.paths("TS")) and len(list(tmp_path.glob(".TS__*.tmp-*"))) == 2
        sink.write(3, writer.planes(probs[3:]))
    assert all(p.is_file() for p in writer.paths("TS")) and [p.name for p in writer.paths("TS")] == ["TS__B.mrc", "TS__A.mrc"]
    b = read_volume(tmp_path / "TS__B.mrc")
    assert b.voxel_size == pytest.approx(20.0)
    expected = probs[..., 1] if kind == "float32" else np.rint(probs[..., 1] * 255)
    assert np.array_equal(np.asarray(b.data), expected)


def test_writer_error_leaves_nothing(tmp_path):
    writer = make_writer("float32", tmp_path, ("A",), (0,))
    with pytest.raises(RuntimeError), writer.open("TS", (2, 3, 4), 1.0) as sink:
        sink.write(0, writer.planes(np.zeros((1, 3, 4, 1), np.float32)))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_remove_temporaries_of_a_stopped_worker(tmp_path):
    writer = make_writer("uint8", tmp_path, ("A", "B"), (0, 1))
    for name in (".TS__A.mrc.tmp-1-ab", ".TS__B.mrc.tmp-2-cd", ".TS2__A.mrc.tmp-1-ab", "TS__A.mrc"):
        (tmp_path / name).write_bytes(b"x")
    assert writer.remove_temporaries("TS") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".TS2__A.mrc.tmp-1-ab", "TS__A.mrc"]


def test_remove_temporaries_only_of_earlier_generations(tmp_path):
    """A taker at generation 2 removes what generations 0 and 1 left, never a later owner's (3)."""
    writer = make_writer("float32", tmp_path, ("A",), (0,))
    stem = "TS[1]"  # glob characters in a name are matched literally
    names = [f".{stem}__A.mrc.tmp-g{g}-10-ab" for g in (0, 1, 2, 3)] + [f".{stem}__A.mrc.tmp-10-cd"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert writer.remove_temporaries(stem, below=2) == 3  # g0, g1 and the untagged one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:4])
    with writer.open(stem, (1, 2, 2), 1.0, generation=5) as sink:
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{stem}__A.mrc.tmp-g5-")]
        sink.write(0, writer.planes(np.zeros((1, 2, 2, 1), np.float32)))


def test_unknown_writer(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        make_writer("tiff", tmp_path, ("A",), (0,))


def test_no_replace_publication(tmp_path, monkeypatch):
    """Absent: placed. Same bytes: the file in place is kept. Different: replaced only if before_replace allows."""
    import errno
    import os

    from pom_common.atomic import no_replace

    calls = []

    def refuse():
        calls.append("asked")
        raise RuntimeError("not ours any more")

    target = tmp_path / "TS__A.mrc"
    for use_links in (True, False):
        if not use_links:  # a filesystem without hard links: the same rules
            def no_link(src, dst):
                raise OSError(errno.EPERM, "Operation not permitted")
            monkeypatch.setattr(os, "link", no_link)
        target.unlink(missing_ok=True)
        tmp = tmp_path / ".TS__A.mrc.tmp-1"
        tmp.write_bytes(b"first")
        no_replace(refuse)(tmp, target)
        assert target.read_bytes() == b"first" and not tmp.exists() and not calls
        inode = target.stat().st_ino
        tmp.write_bytes(b"first")  # a late writer of the same recipe: its file is dropped
        no_replace(refuse)(tmp, target)
        assert target.stat().st_ino == inode and not tmp.exists() and not calls
        tmp.write_bytes(b"other")  # different bytes: asked first, and refused
        with pytest.raises(RuntimeError):
            no_replace(refuse)(tmp, target)
        assert calls == ["asked"] and target.read_bytes() == b"first"
        calls.clear()
        no_replace(lambda: None)(tmp, target)  # allowed: replaced
        assert target.read_bytes() == b"other" and not tmp.exists()
