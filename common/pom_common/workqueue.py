"""Share tomograms among any number of workers on any number of servers, exactly once.

The filesystem implementation of :class:`pom_common.claims.ClaimStore`, made for NFS:
it relies only on exclusive create (``O_EXCL``), hard links, rename and mtime, all of
which NFS (v3 and v4) performs on the server; no flock, no directory listing in the
workers' path, every record written complete before it becomes visible.

State lives in ``<output>/.pom/<namespace>/``::

    tomograms/<bucket>/<stem>.gen.<g>        generation g of the claims on <stem>; exclusive create
    tomograms/<bucket>/<stem>.done.<g>       written by g's owner: outputs in place (fingerprint, sizes)
    tomograms/<bucket>/<stem>.failed.<g>     written by g's owner: the error
    tomograms/<bucket>/<stem>.released.<g>   written by g's owner: gave the claim up without an outcome
    campaigns/<kind>-<fingerprint>.<n>       an --overwrite / --retry-failed run all workers join
    journal/<host>-<pid>-<id>.jsonl          one file per worker: what it did
    .clock-<host>                            touched to read the filesystem's clock

Generations only grow, and no generation file is ever deleted, so a generation number
names one claim for ever (no ABA). The current generation of a tomogram is the highest g
with a generation file; only its owner's records count. A worker owns generation g while no g + 1
exists; it refreshes the mtime of its own generation file (heartbeat); a claim not refreshed
within the lease it was made with (recorded in its generation file: workers with different
leases judge alike) is stale, and the next worker takes it over by creating g + 1
exclusively. A paused worker that wakes up finds g + 1 and changes nothing: it never
writes another worker's files, and records it writes for its old generation are ignored.

Staleness is judged by the filesystem's own clock (a file touched just now), so servers
whose clocks disagree judge alike. The lease must exceed the NFS attribute-cache time
(``actimeo``, 60 s at most by default): the default lease is 120 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .claims import Claim, ClaimInfo, ClaimLost, StoreError, TomogramState
from .defaults import LEASE_SECONDS, STALL_SECONDS
from .errors import ConfigError
from .statefolder import StateFolder

logger = logging.getLogger(__name__)

STATE_DIR = ".pom"
DEFAULT_NAMESPACE = "tomograms"
_RECORD_RE = re.compile(r"^(?!\.tmp-)(?P<stem>.+)\.(?P<kind>gen|done|failed|released)\.(?P<gen>\d+)$")


def bucket_of(stem: str) -> str:
    """The subfolder of a tomogram's state files (256 of them: folders stay small)."""
    return hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:2]


def _lease_of(doc: Mapping[str, Any], default: float) -> float:
    """The lease a claim was made with (recorded in its generation file; older files: ``default``)."""
    lease = doc.get("lease")
    if isinstance(lease, (int, float)) and not isinstance(lease, bool) and 0 < lease < float("inf"):
        return float(lease)
    return default


def check_lease(seconds: float, granularity: float = 0.0, key: str = "lease") -> float:
    """A lease the filesystem can judge: positive, finite, at least 4 x its timestamp granularity.

    Raises
    ------
    ConfigError
        Naming the lease (``key``: the option that gave it) and what it must be.
    """
    if not (seconds > 0 and seconds < float("inf")) or seconds > 7 * 86400:
        raise ConfigError(f"{key}: expected a number of seconds between 0 and 604800, got {seconds}")
    if granularity and seconds < 4 * granularity:
        raise ConfigError(f"lease: {seconds:g} s is too short for this filesystem, whose timestamps have "
                          f"{granularity:g} s resolution; use at least {4 * granularity:g} s")
    return float(seconds)


class FileClaimStore(StateFolder):
    """The :class:`~pom_common.claims.ClaimStore` kept in files under ``<output>/.pom/<namespace>/``.

    The files themselves (records written complete, the clock, campaigns, the journal) are
    :class:`~pom_common.statefolder.StateFolder`'s; this class gives them the claims' meaning.
    """

    def __init__(self, output_dir: str | os.PathLike, lease_seconds: float = LEASE_SECONDS,
                 namespace: str = DEFAULT_NAMESPACE, stall_seconds: float = STALL_SECONDS) -> None:
        self.root = Path(output_dir) / STATE_DIR
        self.namespace = namespace
        super().__init__(self.root / namespace, lease_seconds)
        self.stall = float(stall_seconds)
        self._held: dict[str, Claim] = {}
        self._top: dict[str, int] = {}  # lowest possible current generation per stem (they only grow)
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_progress = time.monotonic()
        self._stalled = False
        self._beat_errors: set[str] = set()

    # ------------------------------------------------------------------ state

    def _dir(self, stem: str) -> Path:
        return self.state_dir / "tomograms" / bucket_of(stem)

    def _path(self, stem: str, kind: str, generation: int) -> Path:
        return self._dir(stem) / f"{stem}.{kind}.{generation}"


    def _generation(self, stem: str) -> int:
        """The current generation of ``stem`` (-1: never claimed): probe upwards from the last known."""
        g = self._top.get(stem, -1)
        while self._exists(self._path(stem, "gen", g + 1)):
            g += 1
        if g >= 0:
            self._top[stem] = g
        return g

    def _state_at(self, stem: str, g: int, now: float, present: set[str] | None = None,
                  history: dict[int, set[str]] | None = None) -> TomogramState:
        """The state at generation ``g``; ``present``: the record kinds a listing found (skips lookups).

        ``history``: generation -> record kinds for this stem, from the same listing; without
        it, earlier generations are probed (only when ``g`` has no outcome).
        """
        if g < 0:
            return TomogramState(stem)
        done, done_at = (None, None)
        if present is None or "done" in present:
            done, done_at = self._read(self._path(stem, "done", g))
        if not done:  # absent, or still being written where hard links are missing
            done, done_at = None, None
        failure, failed_at = (None, None)
        if done is None and (present is None or "failed" in present):
            failure, failed_at = self._read(self._path(stem, "failed", g))
        if not failure:
            failure, failed_at = None, None
        released = ("released" in present) if present is not None else None
        claim = None
        if done is None and failure is None and not (
                released if released is not None else self._exists(self._path(stem, "released", g))):
            doc, mtime = self._read(self._path(stem, "gen", g))
            if mtime is not None:
                doc = doc or {}
                age, lease = now - mtime, _lease_of(doc, self.lease)
                claim = ClaimInfo(str(doc.get("host", "?")), int(doc.get("pid", -1) or -1), age, age > lease, lease)
        record, record_at = (done, done_at) if done is not None else (failure, failed_at)
        if record is None:
            record, record_at = self._earlier_outcome(stem, g, history)
        return TomogramState(stem, g, done, done_at, failure, failed_at, claim, record, record_at)

    def _earlier_outcome(self, stem: str, g: int, history: dict[int, set[str]] | None) -> tuple[dict | None, float | None]:
        """The newest done or failed record below generation ``g`` (what the files were made by)."""
        for earlier in range(g - 1, -1, -1):
            for kind in ("done", "failed"):
                if history is not None and kind not in history.get(earlier, ()):
                    continue
                if history is None and not self._exists(self._path(stem, kind, earlier)):
                    continue
                doc, at = self._read(self._path(stem, kind, earlier))
                if doc:
                    return doc, at
        return None, None

    def state(self, stem: str) -> TomogramState:
        """What is stored about ``stem``'s current generation (a constant number of file operations).

        The age of a claim is judged by this machine's clock here (for display); whether a
        claim is stale enough to take over is judged by :meth:`claim`, by the filesystem's.
        """
        g = self._generation(stem)
        while True:
            state = self._state_at(stem, g, time.time())
            # An outcome read at g while a taker already began g + 1 (it may be redoing the
            # tomogram, or about to carry the outcome forward): the newer generation decides.
            if (state.done is None and state.failure is None) or not self._exists(self._path(stem, "gen", g + 1)):
                return state
            g = self._generation(stem)

    def states(self, stems: Iterable[str] | None = None, sweep: bool = False) -> dict[str, TomogramState]:
        """The state of each of ``stems`` (default: every tomogram with state here); read-only unless ``sweep``.

        One listing of the state folders, not one probe per tomogram; ages are judged by
        this machine's clock (nothing is written, so a read-only folder is fine). With
        ``sweep`` (a worker's final tally), records that killed workers left half-written
        are removed on the way (see :meth:`_sweep`).
        """
        swept_at = time.time()
        wanted = None if stems is None else list(stems)
        tops: dict[str, int] = {}
        kinds: dict[str, dict[int, set[str]]] = {}  # stem -> generation -> record kinds
        tomograms = self.state_dir / "tomograms"
        try:
            buckets = [e.path for e in os.scandir(tomograms) if e.is_dir()]
        except FileNotFoundError:
            buckets = []
        for bucket in buckets:
            with os.scandir(bucket) as entries:
                for entry in entries:
                    m = _RECORD_RE.match(entry.name)
                    if not m:
                        if sweep:
                            self._sweep(entry, swept_at)
                        continue
                    stem, kind, g = m.group("stem"), m.group("kind"), int(m.group("gen"))
                    kinds.setdefault(stem, {}).setdefault(g, set()).add(kind)
                    if kind == "gen":
                        tops[stem] = max(tops.get(stem, -1), g)
        now = time.time()
        out = {}
        for stem in (sorted(tops) if wanted is None else wanted):
            top = tops.get(stem, -1)
            if top >= 0:
                self._top[stem] = max(self._top.get(stem, -1), top)
            history = kinds.get(stem, {})
            out[stem] = self._state_at(stem, top, now, history.get(top, set()), history)
        return out

    def finished_stems(self) -> set[str]:
        """Stems whose current generation has an outcome (done or failed): one listing, no reads."""
        tops: dict[str, int] = {}
        outcomes: set[tuple[str, int]] = set()
        try:
            buckets = [e.path for e in os.scandir(self.state_dir / "tomograms") if e.is_dir()]
        except FileNotFoundError:
            return set()
        for bucket in buckets:
            with os.scandir(bucket) as entries:
                for entry in entries:
                    m = _RECORD_RE.match(entry.name)
                    if not m:
                        continue
                    stem, kind, g = m.group("stem"), m.group("kind"), int(m.group("gen"))
                    if kind == "gen":
                        tops[stem] = max(tops.get(stem, -1), g)
                    elif kind in ("done", "failed"):
                        outcomes.add((stem, g))
        return {stem for stem, g in tops.items() if (stem, g) in outcomes}

    def namespaces(self) -> list[str]:
        """Every namespace with state in this output folder."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ claims

    def claim(self, stem: str, expected: int | None = None, redo: bool = False) -> Claim | None:
        """Claim ``stem`` (free, released or stale); None while a live worker holds it.

        ``expected``: claim only while the current generation is still the one the caller
        decided on. ``redo``: the caller means to redo a recorded outcome (overwrite, retry,
        damaged outputs); otherwise a tomogram with an outcome is not claimed, and an outcome
        recorded just as we claimed (a slow owner finishing then) is carried forward to the
        new generation instead, so a finished tomogram never looks pending again.
        """
        g = self._generation(stem)
        if expected is not None and g != expected:
            return None
        had_outcome = False
        if g >= 0:
            state = self._state_at(stem, g, self.now())
            if state.claim is not None and not state.claim.stale:
                return None
            had_outcome = state.done is not None or state.failure is not None
            if had_outcome and not redo:
                return None
        token = secrets.token_hex(16)
        doc = {"host": self.host, "pid": os.getpid(), "token": token, "worker": self.worker_id, "start": time.time(),
               "lease": self.lease}
        claim = Claim(stem, g + 1, token)
        try:
            if not self._write_new(self._path(stem, "gen", g + 1), doc):
                if self._exists(self._path(stem, "gen", g + 1)):  # (else our half-written file was swept: try later)
                    self._top[stem] = g + 1
                return None  # another worker created this generation first
            self._top[stem] = g + 1
            if self._exists(self._path(stem, "gen", g + 2)):  # only after a stall past the lease
                return None
            if g >= 0 and not had_outcome and self._carry_forward(stem, g):
                return None
        except BaseException:  # a stop signal (or a store error) once our file may exist: let close() release it
            with contextlib.suppress(Exception):
                created, _ = self._read(self._path(stem, "gen", g + 1))
                if created and created.get("token") == token:
                    with self._lock:
                        self._held[stem] = claim
            raise
        with self._lock:
            self._held[stem] = claim
        self._start_heartbeat()
        return claim

    def _carry_forward(self, stem: str, g: int) -> bool:
        """Copy an outcome recorded at generation ``g`` (after we looked) to ``g + 1``, which we just created."""
        for kind in ("done", "failed"):
            record, _ = self._read(self._path(stem, kind, g))
            if record:
                self._write_new(self._path(stem, kind, g + 1), {**record, "carried_from": g})
                if not self._exists(self._path(stem, "gen", g + 2)):  # else superseded meanwhile: not news
                    self._journal(kind, stem, g + 1, record.get("fingerprint"), carried_from=g)
                return True
        return False

    def still_owner(self, claim: Claim) -> bool:
        """True while no later generation exists."""
        if claim.lost.is_set():
            return False
        if self._exists(self._path(claim.stem, "gen", claim.generation + 1)):
            claim.lost.set()
            return False
        return True

    def refresh(self, claim: Claim) -> bool:
        """Heartbeat one claim: touch our own claim file. False (and ``lost`` set) when taken over."""
        if not self.still_owner(claim):
            return False
        try:
            self._retry(f"refresh {claim.stem}", lambda: os.utime(self._path(claim.stem, "gen", claim.generation)))
        except FileNotFoundError:
            claim.lost.set()
            return False
        return True

    def _record(self, claim: Claim, kind: str, doc: Mapping[str, Any]) -> None:
        """Write the outcome, then make sure no later generation began meanwhile.

        The record is written first and the next generation looked for after it, while a
        taker creates its generation first and looks for our record after it (see
        :meth:`claim`): at least one of the two sees the other. When we see a taker, it may
        have carried our record forward or be redoing the tomogram; either way it decides,
        and this worker reports the tomogram as taken over (ClaimLost), not as its own.
        """
        if not self.still_owner(claim):
            raise ClaimLost(f"{claim.stem}: claim taken over by another worker; abandoned")
        full = {**doc, "stem": claim.stem, "generation": claim.generation, "host": self.host, "pid": os.getpid(),
                "time": time.time()}
        if not self._write_new(self._path(claim.stem, kind, claim.generation), full):
            claim.lost.set()  # our half-written record was removed as stale: we were paused past the lease
            raise ClaimLost(f"{claim.stem}: claim taken over by another worker while recording {kind}")
        if self._exists(self._path(claim.stem, "gen", claim.generation + 1)):  # paused past the lease meanwhile
            claim.lost.set()
            raise ClaimLost(f"{claim.stem}: claim taken over by another worker while recording {kind}")
        self._journal(kind, claim.stem, claim.generation, doc.get("fingerprint"))

    def record_done(self, claim: Claim, record: Mapping[str, Any]) -> None:
        """Write ``done.<g>``: this generation's outputs are in place. ClaimLost when not owner."""
        self._record(claim, "done", record)

    def record_failed(self, claim: Claim, error: str, details: Mapping[str, Any] | None = None) -> None:
        """Write ``failed.<g>`` with the error (and ``details``: what it was tried with). ClaimLost when not owner."""
        self._record(claim, "failed", {**(details or {}), "error": error})

    def release(self, claim: Claim) -> None:
        """Give the claim up: write ``released.<g>`` unless an outcome is recorded or it was taken over."""
        with self._lock:
            self._held.pop(claim.stem, None)
        g = claim.generation
        if not self.still_owner(claim):
            return
        if any(self._exists(self._path(claim.stem, k, g)) for k in ("done", "failed")):
            return
        self._write_new(self._path(claim.stem, "released", g), {"host": self.host, "pid": os.getpid()})

    def release_all(self) -> list[str]:
        """Release every claim held; go on after a failure; return the stems not released."""
        with self._lock:
            claims = list(self._held.values())
        unreleased = []
        for claim in claims:
            try:
                self.release(claim)
            except (OSError, StoreError) as exc:
                logger.warning("%s: could not release the claim (%s); it expires after the lease", claim.stem, exc)
                unreleased.append(claim.stem)
        return unreleased

    # ------------------------------------------------------------------ heartbeat

    def progress(self) -> None:
        """The worker made progress: keep refreshing its claims."""
        self._last_progress = time.monotonic()
        if self._stalled:
            logger.warning("%s: progress again after a stall; claims taken over meanwhile are abandoned", self.host)
            self._stalled = False

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop.clear()
        beat = threading.Thread(target=self._beat, name="pom-heartbeat", daemon=True)
        beat.start()
        self._heartbeat = beat  # only once started: a signal in between must not leave an unstarted thread to join

    def _beat(self) -> None:
        interval = max(self.lease / 4.0, 0.05)
        while not self._stop.wait(interval):
            if time.monotonic() - self._last_progress > self.stall:
                if not self._stalled:
                    logger.error("no progress for %.0f s (a hung GPU call or filesystem?): no longer refreshing "
                                 "this worker's claims, so other workers take them over", self.stall)
                    self._stalled = True
                continue
            with self._lock:
                held = list(self._held.values())
            for claim in held:
                try:
                    self.refresh(claim)
                except (OSError, StoreError) as exc:
                    message = str(exc)
                    if message not in self._beat_errors:  # say each kind of failure once
                        self._beat_errors.add(message)
                        logger.warning("heartbeat of %s failed: %s", claim.stem, message)

    def close(self) -> list[str]:
        """Stop the heartbeat, release every claim held, remove the clock file; the stems not released."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat.ident is not None:
            self._heartbeat.join(timeout=5)
        unreleased = self.release_all()
        with contextlib.suppress(OSError):  # another worker on this host recreates it when it needs it
            os.unlink(self._probe)
        return unreleased
