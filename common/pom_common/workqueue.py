"""Share tomograms among any number of workers on any number of servers, exactly once.

The filesystem implementation of :class:`pom_common.claims.ClaimStore`, made for NFS:
it relies only on exclusive create (``O_EXCL``), hard links, rename and mtime, all of
which NFS (v3 and v4) performs on the server; no flock, no directory listing in the
workers' path, every record written complete before it becomes visible.

State lives in ``<output>/.pom/<namespace>/`` (:mod:`pom_common.claimfiles` lists the files
and reads them back; :mod:`pom_common.statefolder` writes them complete or not at all).

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
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from .claimfiles import DEFAULT_NAMESPACE, STATE_DIR, ClaimFiles, bucket_of
from .claims import Claim, ClaimLost, StoreError
from .defaults import LEASE_SECONDS, STALL_SECONDS
from .errors import ConfigError

__all__ = ["DEFAULT_NAMESPACE", "STATE_DIR", "FileClaimStore", "bucket_of", "check_lease"]

logger = logging.getLogger(__name__)


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


class FileClaimStore(ClaimFiles):
    """The :class:`~pom_common.claims.ClaimStore` kept in files under ``<output>/.pom/<namespace>/``.

    The files themselves (records written complete, the clock, campaigns, the journal) are
    :class:`~pom_common.statefolder.StateFolder`'s, read back as tomogram states by
    :class:`~pom_common.claimfiles.ClaimFiles`; this class claims, records, releases and
    keeps the claims it holds fresh (the heartbeat).
    """

    def __init__(self, output_dir: str | os.PathLike, lease_seconds: float = LEASE_SECONDS,
                 namespace: str = DEFAULT_NAMESPACE, stall_seconds: float = STALL_SECONDS) -> None:
        super().__init__(output_dir, lease_seconds, namespace)
        self.stall = float(stall_seconds)
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_progress = time.monotonic()
        self._stalled = False
        self._beat_errors: set[str] = set()

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
