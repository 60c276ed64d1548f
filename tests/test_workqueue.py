import os
import threading
import time

import pytest

from pom_common import workqueue
from pom_common.workqueue import WorkQueue


def _age(queue: WorkQueue, stem: str, seconds: float) -> None:
    """Make the current claim look `seconds` old (as if its worker died)."""
    gens = queue._generations(stem)
    path = queue._claim_path(stem, gens[-1])
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


def test_claim_is_exclusive(tmp_path):
    a, b = WorkQueue(tmp_path, 60), WorkQueue(tmp_path, 60)
    claim = a.try_claim("TS_1")
    assert claim is not None and b.try_claim("TS_1") is None
    a.release(claim)
    assert b.try_claim("TS_1") is not None
    a.close(), b.close()


def test_stale_claim_is_taken_over_once(tmp_path):
    dead = WorkQueue(tmp_path, 5)
    dead.try_claim("TS_1")
    dead._stop.set()  # the worker died: no more heartbeats
    _age(dead, "TS_1", 60)
    takers = [WorkQueue(tmp_path, 5) for _ in range(8)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def take(i):
        barrier.wait()
        results[i] = takers[i].try_claim("TS_1")

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
    slow = WorkQueue(tmp_path, 5)
    claim = slow.try_claim("TS_1")
    slow._stop.set()
    _age(slow, "TS_1", 60)
    other = WorkQueue(tmp_path, 5)
    assert other.try_claim("TS_1") is not None
    assert not slow.refresh(claim) and claim.lost.is_set()
    slow.release(claim)  # must not delete the new owner's claim
    assert other._generations("TS_1") == [1]
    other.close()


def test_heartbeat_keeps_claim_alive(tmp_path):
    a = WorkQueue(tmp_path, 0.4)
    a.try_claim("TS_1")
    time.sleep(1.0)
    assert WorkQueue(tmp_path, 0.4).try_claim("TS_1") is None
    a.close()


def test_clock_skew_between_servers(tmp_path, monkeypatch):
    """Local clocks minutes apart: a live claim is not stale, a dead one is taken over."""
    live = WorkQueue(tmp_path, 30)
    live.try_claim("LIVE")
    dead = WorkQueue(tmp_path, 30)
    dead.try_claim("DEAD")
    dead._stop.set()
    _age(dead, "DEAD", 120)
    real_time = time.time
    for skew in (+600, -600):  # the checker's clock is 10 minutes ahead, then behind
        monkeypatch.setattr(workqueue.time, "time", lambda s=skew: real_time() + s)
        checker = WorkQueue(tmp_path, 30)
        assert checker.try_claim("LIVE") is None
        info = checker.claim_info("LIVE")
        assert info is not None and not info.stale and abs(info.age) < 30
        checker.close()
    monkeypatch.setattr(workqueue.time, "time", lambda: real_time() + 600)
    taker = WorkQueue(tmp_path, 30)
    assert taker.try_claim("DEAD") is not None
    taker.close(), live.close()


def test_done_requires_all_outputs(tmp_path):
    q = WorkQueue(tmp_path, 5)
    claim = q.try_claim("TS_1")
    out = [tmp_path / "TS_1__A.mrc", tmp_path / "TS_1__B.mrc"]
    out[0].write_bytes(b"x")
    q.mark_done(claim, {})
    assert q.is_done("TS_1") and not q.is_done("TS_1", out)
    out[1].write_bytes(b"x")
    assert q.is_done("TS_1", out)
    q.close()


def test_status(tmp_path):
    q = WorkQueue(tmp_path, 5)
    c1 = q.try_claim("A")
    q.mark_done(c1, {})
    q.release(c1)
    c2 = q.try_claim("B")
    q.mark_failed(q.try_claim("C"), "boom")
    q.release_all()
    c2 = q.try_claim("B")
    state = q.status(["A", "B", "C", "D"])
    assert state["done"] == ["A"] and [c.stem for c in state["running"]] == ["B"]
    assert state["failed"] == [("C", "boom")] and state["pending"] == ["D"]
    q.release(c2)
    q.close()


def test_signal_style_close_releases(tmp_path):
    q = WorkQueue(tmp_path, 5)
    q.try_claim("A"), q.try_claim("B")
    q.close()
    assert q._generations("A") == [] and q._generations("B") == []


def test_bad_lease():
    with pytest.raises(Exception, match="lease"):
        workqueue.check_lease(0)
