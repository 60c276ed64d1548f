"""The filesystem claim store: exclusive claims, take-overs, no ABA, conditional records, faults."""

import errno
import os
import threading
import time

import pytest

from pom_common import statefolder, workqueue
from pom_common.claims import OVERWRITE, ClaimLost, StoreError
from pom_common.errors import ConfigError
from pom_common.workqueue import FileClaimStore, check_lease


def _age(store: FileClaimStore, stem: str, seconds: float) -> None:
    """Make the current claim look ``seconds`` old (as if its worker died or was paused)."""
    path = store._path(stem, "gen", store._generation(stem))
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


def _pause(store: FileClaimStore) -> None:
    """The worker is paused (SIGSTOP, an NFS stall): its heartbeat stops."""
    store._stop.set()


def test_claim_is_exclusive_and_generations_only_grow(tmp_path):
    a, b = FileClaimStore(tmp_path, 60), FileClaimStore(tmp_path, 60)
    claim = a.claim("TS_1")
    assert claim is not None and claim.generation == 0 and b.claim("TS_1") is None
    a.release(claim)
    again = b.claim("TS_1")
    assert again is not None and again.generation == 1 and not again.taken_over or again.generation == 1
    b.release(again)
    assert a.claim("TS_1").generation == 2  # a released generation is never reused
    a.close(), b.close()


def test_stale_claim_is_taken_over_once(tmp_path):
    dead = FileClaimStore(tmp_path, 5)
    dead.claim("TS_1")
    _pause(dead)
    _age(dead, "TS_1", 60)
    takers = [FileClaimStore(tmp_path, 5) for _ in range(8)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def take(i):
        barrier.wait()
        results[i] = takers[i].claim("TS_1")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].generation == 1 and winners[0].taken_over
    for q in takers:
        q.close()


def test_aba_a_paused_worker_never_mistakes_a_new_claim_for_its_own(tmp_path):
    """A paused past its lease; B takes over and releases; C claims again; A resumes."""
    a, b, c = (FileClaimStore(tmp_path, 5) for _ in range(3))
    claim_a = a.claim("TS_1")
    _pause(a)
    _age(a, "TS_1", 60)
    claim_b = b.claim("TS_1")
    b.release(claim_b)
    claim_c = c.claim("TS_1")
    assert (claim_a.generation, claim_b.generation, claim_c.generation) == (0, 1, 2)
    # A wakes up: it owns nothing, can record nothing, and releasing touches nothing of C's.
    assert not a.still_owner(claim_a) and not a.refresh(claim_a)
    with pytest.raises(ClaimLost):
        a.record_done(claim_a, {"fingerprint": "x"})
    with pytest.raises(ClaimLost):
        a.record_failed(claim_a, "boom")
    a.release(claim_a)
    assert c.still_owner(claim_c) and c.refresh(claim_c)
    state = c.state("TS_1")
    assert state.generation == 2 and state.status == "running" and state.done is None and state.failure is None
    c.record_done(claim_c, {"fingerprint": "f"})
    assert c.state("TS_1").done["fingerprint"] == "f"
    c.close()


def test_a_record_written_for_an_old_generation_is_not_the_state(tmp_path):
    """Even if a zombie wrote its done record past every check, only the current generation counts."""
    a, b = FileClaimStore(tmp_path, 5), FileClaimStore(tmp_path, 5)
    claim_a = a.claim("TS_1")
    _pause(a)
    _age(a, "TS_1", 60)
    b.claim("TS_1")
    a._write_new(a._path("TS_1", "done", claim_a.generation), {"fingerprint": "zombie"})
    assert b.state("TS_1").done is None and b.state("TS_1").status == "running"
    b.close()


def test_heartbeat_keeps_a_claim_alive_and_a_stall_lets_it_expire(tmp_path):
    alive = FileClaimStore(tmp_path, 0.4)
    alive.claim("TS_1")
    time.sleep(1.0)
    assert FileClaimStore(tmp_path, 0.4).claim("TS_1") is None
    alive.close()
    hung = FileClaimStore(tmp_path, 0.4, stall_seconds=0.2)  # no progress: the heartbeat gives up
    hung.claim("TS_2")
    time.sleep(1.2)
    taker = FileClaimStore(tmp_path, 0.4)
    assert taker.claim("TS_2") is not None
    hung.close(), taker.close()


def test_clock_skew_between_servers(tmp_path, monkeypatch):
    """Local clocks minutes apart: a live claim is not stale, a dead one is taken over."""
    live = FileClaimStore(tmp_path, 30)
    live.claim("LIVE")
    dead = FileClaimStore(tmp_path, 30)
    dead.claim("DEAD")
    _pause(dead)
    _age(dead, "DEAD", 120)
    real_time = time.time
    for skew in (+600, -600):  # the checker's clock is 10 minutes ahead, then behind
        monkeypatch.setattr(workqueue.time, "time", lambda s=skew: real_time() + s)
        checker = FileClaimStore(tmp_path, 30)
        assert checker.claim("LIVE") is None
        checker.close()
    monkeypatch.setattr(workqueue.time, "time", lambda: real_time() + 600)
    taker = FileClaimStore(tmp_path, 30)
    assert taker.claim("DEAD") is not None
    taker.close(), live.close()


def test_states_and_finished_stems(tmp_path):
    q = FileClaimStore(tmp_path, 5)
    c1 = q.claim("A")
    q.record_done(c1, {"fingerprint": "f"})
    q.release(c1)
    q.claim("B")
    c3 = q.claim("C")
    q.record_failed(c3, "boom")
    q.release(c3)
    q.release(q.claim("E"))  # released without an outcome: pending again
    states = q.states(["A", "B", "C", "D", "E"])
    assert [states[s].status for s in "ABCDE"] == ["done", "running", "failed", "pending", "pending"]
    assert states["C"].error == "boom" and states["B"].claim.host
    assert sorted(q.states()) == ["A", "B", "C", "E"]  # every stem with state
    assert q.finished_stems() == {"A", "C"}
    q.close()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith((".tmp", ".clock"))]


def test_states_of_a_read_only_folder(tmp_path):
    q = FileClaimStore(tmp_path, 5)
    q.record_done(q.claim("A"), {"fingerprint": "f"})
    q.close()
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o555)
    try:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        assert FileClaimStore(tmp_path, 5).states()["A"].status == "done"
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written
    finally:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o755)


def test_campaigns_are_joined_and_closed(tmp_path):
    a, b = FileClaimStore(tmp_path, 0.5), FileClaimStore(tmp_path, 0.5)
    start = a.campaign(OVERWRITE, "f" * 16)
    time.sleep(0.05)
    assert b.campaign(OVERWRITE, "f" * 16) == start  # a worker started later joins
    assert b.campaign(OVERWRITE, "0" * 16) != start  # another recipe: another campaign
    a.close_campaign(OVERWRITE, "f" * 16)
    assert b.campaign(OVERWRITE, "f" * 16) == start  # just finished: still joined
    time.sleep(0.7)
    assert b.campaign(OVERWRITE, "f" * 16) > start  # finished a lease ago: a new one
    a.close(), b.close()


def test_release_all_goes_on_after_a_failure(tmp_path, monkeypatch):
    q = FileClaimStore(tmp_path, 60)
    for stem in ("A", "B", "C"):
        q.claim(stem)
    real = q.release

    def release(claim):
        if claim.stem == "A":
            raise OSError(errno.EIO, "Input/output error")
        real(claim)

    monkeypatch.setattr(q, "release", release)
    assert q.close() == ["A"]
    states = FileClaimStore(tmp_path, 60).states()
    assert states["B"].claim is None and states["C"].claim is None and states["A"].claim is not None


def test_transient_errors_are_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(statefolder, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    q = FileClaimStore(tmp_path, 60)
    real_link, calls = os.link, {"n": 0}

    def flaky_link(src, dst):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_link(src, dst)

    monkeypatch.setattr(workqueue.os, "link", flaky_link)
    claim = q.claim("TS_1")
    assert claim is not None and calls["n"] == 3
    q.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EPERM])
def test_persistent_errors_are_one_line_store_errors_and_leave_no_empty_claim(tmp_path, monkeypatch, code):
    monkeypatch.setattr(statefolder, "RETRY_DELAYS", (0.01, 0.01))
    q = FileClaimStore(tmp_path, 60)
    q.now()

    def full(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(workqueue.os, "write", full)
    with pytest.raises(StoreError) as info:
        q.claim("TS_1")
    assert "\n" not in str(info.value) and os.strerror(code) in str(info.value)
    monkeypatch.undo()
    assert FileClaimStore(tmp_path, 60).state("TS_1").status == "pending"  # no empty claim shows as running
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_lease_rules(tmp_path):
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="lease"):
            check_lease(bad)
    with pytest.raises(ConfigError, match="1 s resolution"):
        check_lease(2, granularity=1.0)
    assert check_lease(4, granularity=1.0) == 4.0
    assert FileClaimStore(tmp_path).timestamp_granularity() <= 0.01  # the test filesystems keep fine mtimes


def test_an_outcome_recorded_while_claiming_is_carried_forward(tmp_path, monkeypatch):
    """D decided to take over C's stale claim; C (slow, not dead) records done just as D claims."""
    c = FileClaimStore(tmp_path / "race", 5)
    claim_c = c.claim("X")
    _pause(c)
    _age(c, "X", 60)
    d = FileClaimStore(tmp_path / "race", 5)
    real = d._write_new

    def write_new(path, doc):
        if path.name == "X.gen.1":
            c.record_done(claim_c, {"fingerprint": "f"})  # lands after D's look, before D's create
        return real(path, doc)

    monkeypatch.setattr(d, "_write_new", write_new)
    assert d.claim("X", expected=0) is None  # nothing claimed ...
    state = d.state("X")
    assert state.generation == 1 and state.status == "done" and state.done["carried_from"] == 0  # ... done kept
    assert d.claim("X") is None  # and a done tomogram is not claimed without redo
    assert d.claim("X", redo=True).generation == 2
    c.close(), d.close()


def test_an_outcome_of_a_superseded_generation_is_not_the_state(tmp_path):
    """A writes done at 0 after T began generation 1 (T redoes it): readers see generation 1, not A's done."""
    a, t, u = (FileClaimStore(tmp_path / "o", 0.3) for _ in range(3))
    claim = a.claim("X")
    assert claim is not None and claim.generation == 0
    a._stop.set()  # A is paused: its heartbeat stops too, and its claim goes stale
    a._heartbeat.join()
    time.sleep(0.7)
    taken = t.claim("X")
    assert taken is not None and taken.generation == 1  # no outcome at 0 yet: T redoes the tomogram
    a._write_new(a._path("X", "done", 0), {"fingerprint": "f"})  # A's late record (its own check came first)
    state = u.state("X")
    assert state.generation == 1 and state.done is None and state.claim is not None
    t.close()


def test_half_written_records_of_killed_workers_are_swept(tmp_path):
    """A worker killed between writing a record's temporary file and linking it leaves the file behind:
    a worker's final tally (states with sweep) removes it when its writer is a dead process on this
    host or it is older than the lease; a live writer's is kept; status never takes one for a tomogram."""
    import subprocess
    import sys

    store = FileClaimStore(tmp_path / "o", 0.5)
    bucket = store._path("X", "gen", 0).parent
    bucket.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = bucket / f".tmp-0123abcd-{dead.pid}.{store._host_tag}-X.gen.0"
    live = bucket / f".tmp-4567cdef-{os.getpid()}.{store._host_tag}-X.done.3"
    for path in (left, live):
        path.write_text("{}")
    assert store.states() == {} and left.exists()  # not tomograms; status (no sweep) writes nothing
    assert store.states(["X"], sweep=True)["X"].generation == -1
    assert not left.exists() and live.exists()
    old = time.time() - 10
    os.utime(live, (old, old))  # a writer elsewhere, silent for longer than the lease
    store.states(sweep=True)
    assert not live.exists()
