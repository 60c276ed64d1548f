import os
import threading
import time

from pom_common import workqueue
from pom_common.workqueue import FileClaimStore


def _age(queue, stem: str, seconds: float) -> None:
    """Make the current claim look `seconds` old (as if its worker died)."""
    gens = queue._generations(stem)
    path = queue._claim_path(stem, gens[-1])
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


def test_claim_is_exclusive(tmp_path):
    a, b = FileClaimStore(tmp_path, 60), FileClaimStore(tmp_path, 60)
    claim = a.claim("TS_1")
    assert claim is not None and b.claim("TS_1") is None
    a.release(claim)
    assert b.claim("TS_1") is not None
    a.close(), b.close()


def test_stale_claim_is_taken_over_once(tmp_path):
    dead = FileClaimStore(tmp_path, 5)
    dead.claim("TS_1")
    dead._stop.set()  # the worker died: no more heartbeats
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
    assert len(winners) == 1 and winners[0].generation == 1
    assert dead._generations("TS_1") == [1]  # the dead claim is gone
    for q in takers:
        q.close()


def test_owner_notices_takeover(tmp_path):
    slow = FileClaimStore(tmp_path, 5)
    claim = slow.claim("TS_1")
    slow._stop.set()
    _age(slow, "TS_1", 60)
    other = FileClaimStore(tmp_path, 5)
    assert other.claim("TS_1") is not None
    assert not slow.refresh(claim) and claim.lost.is_set()
    slow.release(claim)  # must not delete the new owner's claim
    assert other._generations("TS_1") == [1]
    other.close()


def test_heartbeat_keeps_claim_alive(tmp_path):
    a = FileClaimStore(tmp_path, 0.4)
    a.claim("TS_1")
    time.sleep(1.0)
    assert FileClaimStore(tmp_path, 0.4).claim("TS_1") is None
    a.close()


def test_clock_skew_between_servers(tmp_path, monkeypatch):
    """Local clocks minutes apart: a live claim is not stale, a dead one is taken over."""
    live = FileClaimStore(tmp_path, 30)
    live.claim("LIVE")
    dead = FileClaimStore(tmp_path, 30)
    dead.claim("DEAD")
    dead._stop.set()
    _age(dead, "DEAD", 120)
    real_time = time.time
    for skew in (+600, -600):  # the checker's clock is 10 minutes ahead, then behind
        monkeypatch.setattr(workqueue.time, "time", lambda s=skew: real_time() + s)
        checker = FileClaimStore(tmp_path, 30)
        assert checker.claim("LIVE") is None
        info = checker.state("LIVE").claim
        assert info is not None and not info.stale and abs(info.age) < 30
        checker.close()
    monkeypatch.setattr(workqueue.time, "time", lambda: real_time() + 600)
    taker = FileClaimStore(tmp_path, 30)
    assert taker.claim("DEAD") is not None
    taker.close(), live.close()


def test_done_record(tmp_path):
    q = FileClaimStore(tmp_path, 5)
    claim = q.claim("TS_1")
    assert q.state("TS_1").status == "running"
    q.record_failed(claim, "first try")
    q.record_done(claim, {"classes": ["A"]})
    state = q.state("TS_1")
    assert state.done["classes"] == ["A"] and state.failure is None  # done clears the failure
    assert state.done_at is not None and state.done_at <= q.now()
    q.clear_done(claim)
    assert q.state("TS_1").done is None
    q.close()


def test_status(tmp_path):
    q = FileClaimStore(tmp_path, 5)
    c1 = q.claim("A")
    q.record_done(c1, {})
    q.release(c1)
    c2 = q.claim("B")
    q.record_failed(q.claim("C"), "boom")
    q.release_all()
    c2 = q.claim("B")
    states = q.states(["A", "B", "C", "D"])
    assert [states[s].status for s in "ABCD"] == ["done", "running", "failed", "pending"]
    assert states["C"].error == "boom" and states["B"].claim.host
    assert sorted(q.states()) == ["A", "B", "C"]  # every stem with state
    assert not list(q.state_dir.glob(".clock-*"))  # reading state leaves no probe behind
    q.release(c2)
    q.close()


def test_signal_style_close_releases(tmp_path):
    q = FileClaimStore(tmp_path, 5)
    q.claim("A"), q.claim("B")
    q.close()
    assert q._generations("A") == [] and q._generations("B") == []

