"""The keeper rule: after a kill -9, one worker waits for the lease to take the tomogram over; the others end.

Workers are real ``pom-infer process`` runs (the fault-injection harness) with a short lease;
times are measured from the kill.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

from pom_common.workqueue import FileClaimStore
from pom_inference.keeper import ROLE, current_keeper, keeper_store
from pom_inference.status import dataset_status, status_lines

from ..helpers import make_onnx_model, make_tomograms
from .test_faults import _args, _done_events, _holder, _leftovers, _outputs, _reference, _start, _wait

# Longer than two workers take to start and finish the five free tomograms on a busy 2-core machine
# (6-15 s at load average 6-8; 10 s failed there).
LEASE = 20.0
PAUSED_LEASE = 3.0


@pytest.fixture
def case(tmp_path):
    """Six small tomograms and a two-class model (as test_faults uses)."""
    model = make_onnx_model(tmp_path / "m.onnx", classes=("Void", "Cytoplasm"), kind="shared", multiple=4)
    make_tomograms(tmp_path / "t", 6, shape=(8, 20, 24))
    return tmp_path, model


def _lease_args(tmp, model, lease=LEASE):
    args = _args(tmp, model)
    return [*args[:-1], str(lease)]  # _args ends with --lease-seconds <its lease>


def test_after_a_kill_one_worker_waits_for_the_lease_the_others_end(case):
    tmp, model = case
    out = tmp / "o"
    victim = _start(_lease_args(tmp, model), POM_TEST_SLOW=0.5)
    _wait(lambda: any(_holder(out, f"TS_{i:03d}") for i in range(6)), what="the victim's claim")
    held = next(f"TS_{i:03d}" for i in range(6) if _holder(out, f"TS_{i:03d}"))
    victim.kill()  # SIGKILL: no release, the claim expires after the lease
    victim.communicate()
    killed_at = time.monotonic()
    workers = [_start(_lease_args(tmp, model)) for _ in range(2)]
    ended = {}
    while len(ended) < len(workers):
        for w in workers:
            if w not in ended and w.poll() is not None:
                ended[w] = time.monotonic() - killed_at
        time.sleep(0.05)
    logs = {w: w.communicate() for w in workers}  # (stdout: the summary, stderr: the log)
    assert all(w.returncode == 0 for w in workers), logs
    keepers = [w for w in workers if "as this folder's keeper" in logs[w][1]]
    assert len(keepers) == 1, logs  # exactly one waited ...
    keeper = keepers[0]
    assert ended[keeper] >= LEASE - 0.5  # ... for the victim's claim to expire (judged by the filesystem's clock)
    assert held in logs[keeper][1]  # and took it over
    for w in workers:
        if w is not keeper:  # the others ended without waiting for the lease, saying what they left to whom
            assert ended[w] < LEASE - 0.5, (ended, logs[w])
            assert f"left to them and to this folder's keeper ({os.uname().nodename} pid {keeper.pid})" in logs[w][0]
    assert set(_done_events(out).values()) == {1} and len(_done_events(out)) == 6  # each done once
    assert _outputs(out) == _reference(tmp, model)
    status = dataset_status(out)
    assert len(status.done) == 6 and status.keeper is None  # the keeper gave its role up
    assert not _leftovers(out)


def test_a_left_tomogram_is_reported_not_failed(case, capsys):
    """A worker that ends leaving a tomogram to a live keeper exits 0 and names it."""
    from pom_inference.cli import main as infer_main

    tmp, model = case
    out = tmp / "o"
    holder = FileClaimStore(out, 60.0)
    claim = holder.claim("TS_002")  # held by a live worker (this process, heartbeat running)
    keeper = keeper_store(out, 60.0)
    role = keeper.claim(ROLE)  # and a live keeper
    assert claim is not None and role is not None
    try:
        started = time.monotonic()
        assert infer_main(_args(tmp, model)) == 0
        assert time.monotonic() - started < 30  # did not wait for the claim
        printed = capsys.readouterr().out
        assert "5 done, 0 failed" in printed
        assert f"1 held by other workers, left to them and to this folder's keeper ({keeper.host} pid {os.getpid()}): " \
               "TS_002" in printed
        info = current_keeper(out)
        assert info is not None and info.pid == os.getpid() and not info.stale and info.lease == 10.0  # LEASE
        lines = status_lines(out, dataset_status(out))
        assert any(line.startswith("  keeper  ") for line in lines), lines
    finally:
        holder.close()
        keeper.close()
    assert current_keeper(out) is None


def test_a_paused_keeper_that_was_replaced_ends(case):
    """A keeper paused past its lease is replaced; when it wakes up it ends too (one keeper at a time)."""
    tmp, model = case
    out = tmp / "o"
    holder = FileClaimStore(out, 60.0)
    claim = holder.claim("TS_001")  # a live worker holds TS_001 for the whole test
    assert claim is not None
    try:
        first = _start(_lease_args(tmp, model, PAUSED_LEASE))
        _wait(lambda: (current_keeper(out) or 0) and current_keeper(out).pid == first.pid, what="the first keeper")
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(PAUSED_LEASE + 0.5)
        second = _start(_lease_args(tmp, model, PAUSED_LEASE))
        _wait(lambda: (current_keeper(out) or 0) and current_keeper(out).pid == second.pid, what="the second keeper")
        os.kill(first.pid, signal.SIGCONT)
        printed = first.communicate(timeout=60)[0]
        assert first.returncode == 0
        assert f"left to them and to this folder's keeper ({os.uname().nodename} pid {second.pid}): TS_001" in printed
        assert second.poll() is None  # the new keeper still waits for TS_001
    finally:
        holder.close()
    second.communicate(timeout=60)
    assert second.returncode == 0
    assert len(dataset_status(out).done) == 6


def test_status_judges_each_claim_by_its_own_lease(tmp_path):
    out = tmp_path / "o"
    long, short = FileClaimStore(out, 300.0), FileClaimStore(out, 1.0)
    a, b = long.claim("TS_A"), short.claim("TS_B")
    assert a is not None and b is not None
    long._stop.set(), short._stop.set()  # no heartbeats: both claims age
    for store in (long, short):
        if store._heartbeat is not None:
            store._heartbeat.join()
    time.sleep(1.3)
    reader = FileClaimStore(out)  # status's view: the default lease, 120 s
    states = reader.states()
    assert not states["TS_A"].claim.stale and states["TS_A"].claim.lease == 300.0
    assert states["TS_B"].claim.stale and states["TS_B"].claim.lease == 1.0
    assert FileClaimStore(out, 1.0).claim("TS_A") is None  # nor taken over by a worker with a shorter lease
    lines = status_lines(out, dataset_status(out))
    assert any("TS_B" in line and "stale, lease 1 s" in line for line in lines), lines
    assert any("TS_A" in line and "stale" not in line for line in lines), lines


def test_status_of_claims_written_without_a_lease_falls_back_to_the_default(tmp_path):
    import json

    out = tmp_path / "o"
    store = FileClaimStore(out, 120.0)
    path = store._path("TS_OLD", "gen", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "h", "pid": 1, "token": "t"}))  # as workers before this change wrote it
    old = time.time() - 130
    os.utime(path, (old, old))
    claim = FileClaimStore(out).states()["TS_OLD"].claim
    assert claim is not None and claim.lease == 120.0 and claim.stale


def test_status_pipes_into_head_without_a_traceback(case, python_exe):
    tmp, model = case
    out = tmp / "o"
    store = FileClaimStore(out, 60.0)
    for i in range(3000):  # more than a pipe holds
        path = store._path(f"TS_{i:05d}", "gen", 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"host": "h", "pid": 1, "lease": 60.0}')
    done = subprocess.run(f"{python_exe} -m pom_inference.cli status --output {out} | head -2", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 2 and "running" in done.stdout
    assert done.stderr == "", done.stderr


def test_a_stop_signal_while_claiming_leaves_no_claim_behind(tmp_path, monkeypatch):
    """SIGTERM (scancel) arriving just after the claim file was created, before the claim was registered."""
    from pom_common import workqueue

    class Stop(BaseException):
        pass

    store = FileClaimStore(tmp_path / "o", 60.0)
    real = workqueue.FileClaimStore._write_new

    def write_then_stop(self, path, doc):
        real(self, path, doc)
        raise Stop  # as the signal handler raises it, between the link and the return

    monkeypatch.setattr(workqueue.FileClaimStore, "_write_new", write_then_stop)
    with pytest.raises(Stop):
        store.claim("TS_A")
    monkeypatch.undo()
    assert store.close() == []
    state = FileClaimStore(tmp_path / "o").state("TS_A")
    assert state.generation == 0 and state.claim is None  # released, not left to expire


def test_a_killed_keeper_leaves_nothing_behind(case):
    tmp, model = case
    out = tmp / "o"
    holder = FileClaimStore(out, 60.0)
    assert holder.claim("TS_001") is not None
    earlier = keeper_store(out, 60.0)  # a keeper before, which ended normally
    assert earlier.claim(ROLE) is not None
    earlier.close()
    first = _start(_lease_args(tmp, model, PAUSED_LEASE))
    _wait(lambda: (current_keeper(out) or 0) and current_keeper(out).pid == first.pid, what="the keeper")
    clock = out / ".pom" / "keeper" / f".clock-{socket.gethostname()}"
    assert clock.exists()  # it read the filesystem's clock to judge the earlier keeper's claim
    first.kill()
    first.communicate()
    assert any(line.startswith("  keeper  ") for line in status_lines(out, dataset_status(out)))
    holder.close()  # TS_001 released: the next worker needs no keeper
    second = _start(_lease_args(tmp, model, PAUSED_LEASE))
    assert second.communicate(timeout=60) and second.returncode == 0
    status = dataset_status(out)
    assert len(status.done) == 6 and status.keeper is None  # nothing left: no keeper shown
    assert not _leftovers(out)  # the killed keeper's clock file removed too


def test_no_work_is_left_to_a_keeper_that_died(case):
    """A keeper killed (no more heartbeats) within its lease: the worker out of work does not trust it."""
    tmp, model = case
    out = tmp / "o"
    holder = FileClaimStore(out, 60.0)
    assert holder.claim("TS_002") is not None  # a live worker holds TS_002
    dead = keeper_store(out, 2.0)
    assert dead.claim(ROLE) is not None
    dead._stop.set()  # its heartbeat stops, as if killed
    dead._heartbeat.join()
    worker = _start(_lease_args(tmp, model, PAUSED_LEASE))
    try:
        _wait(lambda: (current_keeper(out) or 0) and current_keeper(out).pid == worker.pid, what="the new keeper")
    finally:
        holder.close()
    printed, log = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "6 done, 0 failed" in printed and "left to" not in printed, (printed, log)
