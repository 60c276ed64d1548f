"""Fault injection: paused and killed workers, staggered reruns, filesystem errors, a full disk,
a hung worker, double signals, damaged outputs, and runs of different recipes into one folder.

Each test checks the promise of the work queue: every tomogram's outputs renamed into place
once per recipe (done events in the workers' journals), outputs byte-identical to a single
worker's, no false failures, nothing left behind, and ``status`` telling the truth.
"""

import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pom_common import statefolder, workqueue
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main
from pom_inference.status import dataset_status

from ..helpers import make_onnx_model, make_tomograms

HARNESS = str(Path(__file__).parent.parent / "harness.py")
LEASE = "1.5"


@pytest.fixture
def case(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("Void", "Cytoplasm"), kind="shared", multiple=4)
    make_tomograms(tmp_path / "t", 6, shape=(8, 20, 24))
    return tmp_path, model


def _args(tmp, model, out="o", *extra):
    return ["process", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / out), "--gpus", "cpu",
            "--lease-seconds", LEASE, *map(str, extra)]


def _start(args, **env):
    return subprocess.Popen([sys.executable, HARNESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **{k: str(v) for k, v in env.items()}})


def _wait(predicate, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(out, stem):
    """(pid, generation) of the live claim on ``stem``, or None."""
    state = FileClaimStore(out).state(stem)
    return (state.claim.pid, state.generation) if state.claim is not None else None


def _stopped(pid):
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "T"


def _done_events(out):
    """Stem -> how many generations produced a done (a done carried forward is its source's)."""
    produced = {(e["stem"], e.get("carried_from", e["generation"])) for e in FileClaimStore(out).journal()
                if e["event"] == "done"}
    return Counter(stem for stem, _ in produced)


def _outputs(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*__*.mrc"))}


def _reference(tmp, model, out="ref", *extra):
    assert infer_main(_args(tmp, model, out, *extra)) == 0
    return _outputs(tmp / out)


def _leftovers(out):
    return [p for p in Path(out).rglob("*") if p.name.startswith((".tmp", ".clock")) or ".mrc.tmp-" in p.name]


def test_aba_zombie_changes_nothing_and_reports_nothing(case):
    """A paused past its lease; B takes over and is stopped; C claims again; A wakes up."""
    tmp, model = case
    out = tmp / "o"
    a = _start(_args(tmp, model), POM_TEST_SLOW=0.3)
    _wait(lambda: _holder(out, "TS_000") is not None or _holder(out, "TS_001") is not None, what="A's claim")
    held = next(s for s in ("TS_000", "TS_001", "TS_002", "TS_003", "TS_004", "TS_005") if _holder(out, s))
    os.kill(a.pid, signal.SIGSTOP)
    time.sleep(float(LEASE) + 0.5)
    b = _start(_args(tmp, model), POM_TEST_SLOW=0.3)
    _wait(lambda: (_holder(out, held) or (0, 0))[0] == b.pid, what="B's take-over")
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=30) == 130
    b.communicate()  # (closes its pipes)
    c = _start(_args(tmp, model), POM_TEST_SLOW=0.05)
    _wait(lambda: (_holder(out, held) or (0, 0))[0] == c.pid or FileClaimStore(out).state(held).done is not None,
          what="C's claim")
    os.kill(a.pid, signal.SIGCONT)
    outs = {name: p.communicate(timeout=120) for name, p in (("A", a), ("C", c))}
    assert a.returncode == 0 and c.returncode == 0, outs
    assert "FAILED" not in outs["A"][1] + outs["C"][1]  # no false failures
    assert set(_done_events(out).values()) == {1} and len(_done_events(out)) == 6  # each done once
    assert _outputs(out) == _reference(tmp, model)  # byte-identical to one worker
    assert len(dataset_status(out).done) == 6 and not _leftovers(out)


def test_pause_between_renames_and_done(case):
    """A renamed its outputs and stopped before recording done: B redoes the tomogram; A records nothing."""
    tmp, model = case
    out = tmp / "o"
    a = _start(_args(tmp, model), POM_TEST_PAUSE_BEFORE_DONE="TS_003")
    _wait(lambda: _stopped(a.pid), what="A to stop itself before done")
    time.sleep(float(LEASE) + 0.5)
    assert infer_main(_args(tmp, model)) == 0  # B finishes everything, TS_003 included
    os.kill(a.pid, signal.SIGCONT)
    log = a.communicate(timeout=60)[1]
    assert a.returncode == 0 and "FAILED" not in log and "taken over" in log
    events = FileClaimStore(out).journal()
    assert [e["generation"] for e in events if e["stem"] == "TS_003" and e["event"] == "done"] == [1]
    assert _outputs(out) == _reference(tmp, model) and len(dataset_status(out).done) == 6


def test_pause_between_renames(case):
    """A moved one output into place and stopped before the next; B takes over and finishes; A wakes up.

    A's late file does not replace B's (B kept A's identical first file, A keeps B's second):
    each file is moved into place once, B's done record describes the files in place, nobody
    reports a failure.
    """
    tmp, model = case
    out = tmp / "o"
    a = _start(_args(tmp, model), POM_TEST_PAUSE_BETWEEN_RENAMES="TS_002")
    _wait(lambda: _stopped(a.pid), what="A to stop itself between renames")
    assert len(list(out.glob("TS_002__*.mrc"))) == 1
    time.sleep(float(LEASE) + 0.5)
    assert infer_main(_args(tmp, model)) == 0  # B finishes everything, TS_002 included
    inodes = {p.name: p.stat().st_ino for p in out.glob("TS_002__*.mrc")}
    os.kill(a.pid, signal.SIGCONT)
    log = a.communicate(timeout=60)[1]
    assert a.returncode == 0 and "FAILED" not in log and "taken over" in log, log
    assert {p.name: p.stat().st_ino for p in out.glob("TS_002__*.mrc")} == inodes  # A replaced nothing
    state = FileClaimStore(out).state("TS_002")
    assert state.generation == 1 and {k: v["inode"] for k, v in state.done["outputs"].items()} == inodes
    assert set(_done_events(out).values()) == {1}
    assert _outputs(out) == _reference(tmp, model) and len(dataset_status(out).done) == 6 and not _leftovers(out)


def test_pause_inside_done(case):
    """A checked it still owned the claim, then stopped before writing done; B took over and finished.

    A writes its done record late, sees B's generation and reports the tomogram as taken over,
    not as its own nor as a failure; B kept A's identical files (nothing moved twice).
    """
    tmp, model = case
    out = tmp / "o"
    a = _start(_args(tmp, model), POM_TEST_PAUSE_IN_DONE="TS_001")
    _wait(lambda: _stopped(a.pid), what="A to stop itself inside done")
    inodes = {p.name: p.stat().st_ino for p in out.glob("TS_001__*.mrc")}
    assert len(inodes) == 2
    time.sleep(float(LEASE) + 0.5)
    assert infer_main(_args(tmp, model)) == 0  # B finishes everything, TS_001 included
    os.kill(a.pid, signal.SIGCONT)
    log = a.communicate(timeout=60)[1]
    assert a.returncode == 0 and "FAILED" not in log and "taken over" in log, log
    assert {p.name: p.stat().st_ino for p in out.glob("TS_001__*.mrc")} == inodes
    assert FileClaimStore(out).state("TS_001").generation == 1
    assert set(_done_events(out).values()) == {1} and len(_done_events(out)) == 6
    assert _outputs(out) == _reference(tmp, model) and len(dataset_status(out).done) == 6 and not _leftovers(out)


def test_late_taker_removes_only_older_temporaries(case):
    """Z dies holding TS_002; A takes it over and stops before removing Z's temporaries; B takes over from A.

    A wakes while B writes: it removes Z's temporaries, not B's (temporary names carry the
    claim's generation), so B finishes and nobody reports a failure.
    """
    tmp, model = case
    out = tmp / "o"
    z = _start(_args(tmp, model), POM_TEST_PAUSE_BEFORE_DONE="TS_002")
    _wait(lambda: _stopped(z.pid), what="Z to stop")
    z.kill()
    z.communicate()
    time.sleep(float(LEASE) + 0.5)
    a = _start(_args(tmp, model), POM_TEST_PAUSE_IN_REMOVE="TS_002")
    _wait(lambda: _stopped(a.pid), what="A to stop before removing temporaries")
    assert FileClaimStore(out).state("TS_002").generation == 1
    time.sleep(float(LEASE) + 0.5)
    b = _start(_args(tmp, model), POM_TEST_SLOW=0.4)
    _wait(lambda: (_holder(out, "TS_002") or (0, 0)) == (b.pid, 2), what="B's take-over")
    _wait(lambda: list(out.glob(".TS_002__*.tmp-g2-*")), what="B's temporaries")
    os.kill(a.pid, signal.SIGCONT)
    logs = {name: p.communicate(timeout=120) for name, p in (("B", b), ("A", a))}
    assert b.returncode == 0 and a.returncode == 0, logs
    assert "FAILED" not in "".join(o + e for o, e in logs.values()), logs
    assert FileClaimStore(out).state("TS_002").done is not None
    assert _outputs(out) == _reference(tmp, model) and len(dataset_status(out).done) == 6 and not _leftovers(out)


def test_staggered_overwrite_redoes_each_tomogram_once(case):
    tmp, model = case
    out = tmp / "o"
    assert infer_main(_args(tmp, model)) == 0
    procs = []
    for _ in range(3):
        procs.append(_start(_args(tmp, model, "o", "--overwrite"), POM_TEST_SLOW=0.2))
        time.sleep(1.0)
    logs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    assert set(_done_events(out).values()) == {2}  # the first run, then exactly one redo each
    assert _outputs(out) == _reference(tmp, model)


def test_staggered_retry_failed_retries_each_failure_once(case):
    tmp, model = case
    out = tmp / "o"
    good = {p.name: p.read_bytes() for p in (tmp / "t").glob("*.mrc")}
    for name in ("TS_001.mrc", "TS_004.mrc"):
        (tmp / "t" / name).write_bytes(b"\0" * 100)
    assert infer_main(_args(tmp, model)) == 1
    for name in ("TS_001.mrc", "TS_004.mrc"):  # fixed (a rewritten input is redone: restore only these)
        (tmp / "t" / name).write_bytes(good[name])
    procs = []
    for _ in range(3):
        procs.append(_start(_args(tmp, model, "o", "--retry-failed"), POM_TEST_SLOW=0.05))
        time.sleep(0.7)
    logs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    events = FileClaimStore(out).journal()
    assert Counter(e["stem"] for e in events if e["event"] == "failed") == {"TS_001": 1, "TS_004": 1}
    assert set(_done_events(out).values()) == {1}
    assert _outputs(out) == _reference(tmp, model)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EPERM])
def test_bookkeeping_error_stops_the_worker_cleanly(case, monkeypatch, capsys, code):
    """Claiming the next tomogram fails for good: the worker stops in one line; nothing is blamed on a tomogram."""
    tmp, model = case
    monkeypatch.setattr(statefolder, "RETRY_DELAYS", (0.01, 0.01))
    real_open, seen = os.open, {"gen": 0}

    def open_(path, *a, **k):  # creating the next claim's file fails for good
        if ".gen." in str(path):
            seen["gen"] += 1
            if seen["gen"] > 2:
                raise OSError(code, os.strerror(code))
        return real_open(path, *a, **k)

    monkeypatch.setattr(workqueue.os, "open", open_)
    assert infer_main(_args(tmp, model)) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert os.strerror(code) in captured.out and "STOPPED" in captured.out
    monkeypatch.undo()
    events = FileClaimStore(tmp / "o").journal()
    assert not [e for e in events if e["event"] == "failed"]  # no tomogram blamed
    assert all(s.claim is None for s in FileClaimStore(tmp / "o").states().values())  # claims released
    assert infer_main(_args(tmp, model)) == 0 and not _leftovers(tmp / "o")


def test_transient_bookkeeping_errors_are_retried(case, monkeypatch):
    tmp, model = case
    monkeypatch.setattr(statefolder, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    real_stat, calls = os.stat, Counter()

    def stat(path, *a, **k):
        if ".gen." in str(path):
            calls["n"] += 1
            if calls["n"] % 7 == 0:
                raise OSError(errno.ESTALE, "Stale file handle")
        return real_stat(path, *a, **k)

    monkeypatch.setattr(workqueue.os, "stat", stat)
    assert infer_main(_args(tmp, model)) == 0
    assert calls["n"] > 7


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_is_a_recorded_failure(case, monkeypatch, capsys):
    tmp, model = case
    make_tomograms(tmp / "t", 6, shape=(32, 96, 96))  # outputs of 0.6 MB per tomogram
    out = tmp / "full"
    mounted = _tmpfs(out, "1600k")
    try:
        if not mounted:  # no tmpfs here: the writes fail as they would on a full disk
            calls = Counter()
            real = os.pwrite

            def pwrite(fd, data, offset):
                calls["n"] += 1
                if calls["n"] > 4:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(fd, data, offset)

            monkeypatch.setattr(os, "pwrite", pwrite)
        code = infer_main(_args(tmp, model, "full"))
        captured = capsys.readouterr()
        assert code == 1 and "Traceback" not in captured.err
        status = dataset_status(out)
        assert status.done and len(status.failed) == 6 - len(status.done)
        assert all("No space left on device" in error for _, error in status.failed)
        assert not _leftovers(out)
        assert all(s.claim is None for s in FileClaimStore(out).states().values())
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=False)


def test_hung_worker_lets_its_claims_expire(case):
    tmp, model = case
    out = tmp / "o"
    hung = _start([*_args(tmp, model), "--stall-seconds", "1"], POM_TEST_HANG="TS_002")
    try:
        _wait(lambda: _holder(out, "TS_002") is not None, what="the hung worker's claim")
        assert infer_main([*_args(tmp, model)]) == 0  # takes TS_002 over once the hung worker's claim expires
        assert len(dataset_status(out).done) == 6
        assert _outputs(out) == _reference(tmp, model)
    finally:
        hung.kill()
        hung.communicate()


def test_a_second_signal_during_cleanup(case):
    tmp, model = case
    out = tmp / "o"
    worker = _start(_args(tmp, model), POM_TEST_SLOW=0.3, POM_TEST_SLOW_RELEASE=0.6)
    _wait(lambda: any(s.claim for s in FileClaimStore(out).states().values()), what="a claim")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGINT)
    err = worker.communicate(timeout=60)[1]
    assert worker.returncode == 130, err
    # Python runs pending handlers in signal-number order: when all three arrive while the main
    # thread is inside a long C call (the network, a numba kernel), SIGINT's is run first.
    assert re.search(r"stopped by SIG(TERM|INT); claims released", err) and "Traceback" not in err
    assert "again: still releasing claims" in err  # a second signal during cleanup is only noted
    assert all(s.claim is None for s in FileClaimStore(out).states().values())


def test_truncated_and_deleted_outputs_are_redone(case, capsys):
    tmp, model = case
    out = tmp / "o"
    assert infer_main(_args(tmp, model)) == 0
    reference = _outputs(out)
    damaged = out / "TS_001__Void.mrc"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    (out / "TS_004__Cytoplasm.mrc").unlink()
    status = dataset_status(out)
    assert len(status.done) == 4 and sorted(status.changed) == ["TS_001", "TS_004"]
    assert infer_main(["status", "--output", str(out)]) == 0
    assert "4 done, 0 running, 0 failed, 2 pending" in capsys.readouterr().out
    assert infer_main(_args(tmp, model)) == 0
    events = _done_events(out)
    assert events["TS_001"] == events["TS_004"] == 2 and sum(events.values()) == 8
    assert _outputs(out) == reference


def test_another_dtype_into_the_same_folder_is_refused_then_overwritten(case, capsys):
    tmp, model = case
    out = tmp / "o"
    assert infer_main(_args(tmp, model)) == 0
    before = _outputs(out)
    capsys.readouterr()
    assert infer_main([*_args(tmp, model), "--dtype", "uint8"]) == 1
    printed = capsys.readouterr().out
    assert "0 done, 6 failed" in printed and "another recipe" in printed and "float32" in printed
    assert _outputs(out) == before  # untouched
    assert infer_main([*_args(tmp, model), "--dtype", "uint8", "--overwrite"]) == 0
    assert _outputs(out) == _reference(tmp, model, "u8", "--dtype", "uint8")


def test_two_models_at_once_into_one_folder_never_mix(case):
    tmp, model = case
    other = make_onnx_model(tmp / "other.onnx", classes=("Void", "Cytoplasm"), kind="shared", multiple=4, seed=7)
    out = tmp / "o"
    procs = [_start(_args(tmp, m), POM_TEST_SLOW=0.05) for m in (model, other)]
    for p in procs:
        p.communicate(timeout=120)
    assert all(p.returncode in (0, 1) for p in procs)
    assert sum(_done_events(out).values()) == 6  # each tomogram made once, by one of them
    ref = {"m": _reference(tmp, model, "ref_m"), "other": _reference(tmp, other, "ref_o")}
    store, outputs = FileClaimStore(out), _outputs(out)
    for stem, state in store.states().items():
        made_by = "m" if state.done["recipe"]["model"] == "m.onnx" else "other"
        for name in (f"{stem}__Void.mrc", f"{stem}__Cytoplasm.mrc"):
            assert outputs[name] == ref[made_by][name]  # the files are the recorded recipe's, whole


def test_status_is_read_only(case, capsys):
    tmp, model = case
    out = tmp / "o"
    assert infer_main(_args(tmp, model)) == 0
    shutil.rmtree(tmp / "t")
    for path in [out, *out.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o555)
    try:
        capsys.readouterr()
        assert infer_main(["status", "--output", str(out), "--json"]) == 0
        import json

        doc = json.loads(capsys.readouterr().out)
        assert doc["counts"] == {"done": 6, "running": 0, "failed": 0, "pending": 0}
    finally:
        for path in [out, *out.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o755)
