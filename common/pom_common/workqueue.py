"""Share tomograms among any number of workers on any number of servers, exactly once.

The filesystem implementation of :class:`pom_common.claims.ClaimStore`. Only exclusive
create, rename and mtime are relied on (they hold on NFS); no flock.

State lives in ``<output>/.pom/<namespace>/`` (one namespace per model):

``<stem>.claim.<g>``
    A claim of generation g, created with O_CREAT | O_EXCL; holds host, pid, token and
    start time. Its worker refreshes its mtime (heartbeat). The owner is the creator of
    the highest generation present. A claim not refreshed within the lease is stale:
    another worker takes it over by creating generation g + 1 exclusively, so two workers
    can never both take over the same claim, and a taker verifies after creating that no
    higher generation exists.
``<stem>.done``
    Written atomically after every class file is in place.
``<stem>.failed``
    The error of the last failed attempt.

Staleness is judged by the filesystem's own clock: the checker touches a probe file in
the same folder and compares mtimes, so servers whose clocks disagree judge alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .claims import Claim, ClaimInfo, TomogramState

STATE_DIR = ".pom"
_CLAIM_RE = re.compile(r"^(?P<stem>.+)\.claim\.(?P<gen>\d+)$")


class FileClaimStore:
    """The :class:`~pom_common.claims.ClaimStore` kept in files under ``<output>/.pom/<namespace>/``."""

    def __init__(self, output_dir: str | os.PathLike, lease_seconds: float = 120.0, namespace: str = "default") -> None:
        self.root = Path(output_dir) / STATE_DIR
        self.namespace = namespace
        self.state_dir = self.root / namespace
        self.lease = float(lease_seconds)
        self.host = socket.gethostname()
        self._probe = self.state_dir / f".clock-{self.host}-{os.getpid()}-{secrets.token_hex(3)}"
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ time and paths

    def _ensure(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)

    def now(self) -> float:
        """The filesystem's current time: the mtime of a file touched just now."""
        self._ensure()
        with open(self._probe, "a"):
            pass
        os.utime(self._probe)
        return os.stat(self._probe).st_mtime

    def _done_path(self, stem: str) -> Path:
        return self.state_dir / f"{stem}.done"

    def _failed_path(self, stem: str) -> Path:
        return self.state_dir / f"{stem}.failed"

    def _claim_path(self, stem: str, generation: int) -> Path:
        return self.state_dir / f"{stem}.claim.{generation}"

    def _generations(self, stem: str) -> list[int]:
        prefix = f"{stem}.claim."
        gens = []
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                gens.append(int(name[len(prefix):]))
        return sorted(gens)

    # ------------------------------------------------------------------ records

    def clear_done(self, claim: Claim) -> None:
        """Forget the done record of ``claim``'s tomogram (its outputs are about to be replaced)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._done_path(claim.stem))

    def record_done(self, claim: Claim, record: Mapping[str, Any]) -> None:
        """Write ``<stem>.done`` atomically, clear an earlier failure, add a journal line."""
        doc = {**record, "stem": claim.stem, "host": self.host, "pid": os.getpid(), "time": time.time()}
        atomic_write_text(self._done_path(claim.stem), json.dumps(doc))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._failed_path(claim.stem))
        self._journal("done", claim.stem)

    def record_failed(self, claim: Claim, error: str) -> None:
        """Write ``<stem>.failed`` with the error, add a journal line."""
        doc = {"error": error, "host": self.host, "pid": os.getpid(), "time": time.time()}
        atomic_write_text(self._failed_path(claim.stem), json.dumps(doc))
        self._journal("failed", claim.stem)

    def _journal(self, event: str, stem: str) -> None:
        """Append one line to the run history (small O_APPEND writes do not interleave)."""
        line = json.dumps({"event": event, "stem": stem, "host": self.host, "pid": os.getpid(), "time": time.time()})
        fd = os.open(self.state_dir / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def journal(self) -> list[dict]:
        """Every done/failed event recorded in this namespace, oldest first."""
        try:
            lines = (self.state_dir / "journal.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    @staticmethod
    def _read_record(path: Path) -> tuple[dict | None, float | None]:
        try:
            mtime = os.stat(path).st_mtime
            return json.loads(path.read_text() or "{}"), mtime
        except (OSError, ValueError):
            return None, None

    # ------------------------------------------------------------------ state

    def _claim_info(self, stem: str, now: float) -> ClaimInfo | None:
        gens = self._generations(stem)
        if not gens:
            return None
        doc, mtime = self._read_record(self._claim_path(stem, gens[-1]))
        if mtime is None:
            return None
        doc = doc or {}
        age = now - mtime
        return ClaimInfo(str(doc.get("host", "?")), int(doc.get("pid", -1)), age, age > self.lease)

    def _state(self, stem: str, now: float) -> TomogramState:
        done, done_at = self._read_record(self._done_path(stem))
        failure, failed_at = self._read_record(self._failed_path(stem))
        return TomogramState(stem, done, done_at, failure, failed_at, self._claim_info(stem, now))

    def state(self, stem: str) -> TomogramState:
        """What is stored about ``stem``."""
        return self._state(stem, self._now_readonly())

    def states(self, stems: Iterable[str] | None = None) -> dict[str, TomogramState]:
        """The state of each of ``stems`` (default: every tomogram with state here)."""
        if stems is None:
            names = os.listdir(self.state_dir) if self.state_dir.is_dir() else []
            found = set()
            for name in names:
                m = _CLAIM_RE.match(name)
                if m:
                    found.add(m.group("stem"))
                elif name.endswith((".done", ".failed")) and not name.startswith("."):
                    found.add(name.rsplit(".", 1)[0])
            stems = sorted(found)
        now = self._now_readonly()
        return {stem: self._state(stem, now) for stem in stems}

    def _now_readonly(self) -> float:
        """The filesystem's time when the folder is writable (probe removed after), else local time."""
        try:
            return self.now()
        except OSError:
            return time.time()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self._probe)

    def namespaces(self) -> list[str]:
        """Every namespace with state in this output folder."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ claims

    def claim(self, stem: str) -> Claim | None:
        """Claim ``stem`` if nobody holds it, or take over a stale claim. None if held by a live worker."""
        self._ensure()
        gens = self._generations(stem)
        if gens:
            top = gens[-1]
            path = self._claim_path(stem, top)
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                return None  # released or taken over meanwhile: look again next round
            if self.now() - mtime <= self.lease:
                return None
            generation = top + 1
        else:
            generation = 0
        claim = self._create(stem, generation)
        if claim is None:
            return None
        # Another worker may have created a higher generation meanwhile: then it owns it.
        present = self._generations(stem)
        if present[-1] != generation:
            self._remove(claim)
            return None
        for older in present:
            if older < generation:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._claim_path(stem, older))
        with self._lock:
            self._held[stem] = claim
        self._start_heartbeat()
        return claim

    def _create(self, stem: str, generation: int) -> Claim | None:
        path = self._claim_path(stem, generation)
        token = secrets.token_hex(16)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            doc = {"host": self.host, "pid": os.getpid(), "token": token, "start": time.time()}
            os.write(fd, json.dumps(doc).encode())
        finally:
            os.close(fd)
        return Claim(stem, generation, token)

    def still_owner(self, claim: Claim) -> bool:
        """True while our generation is the highest one present."""
        if claim.lost.is_set():
            return False
        gens = self._generations(claim.stem)
        if not gens or gens[-1] != claim.generation:
            claim.lost.set()
            return False
        return True

    def refresh(self, claim: Claim) -> bool:
        """Heartbeat one claim; False (and ``lost`` set) when it was taken over."""
        if not self.still_owner(claim):
            return False
        try:
            os.utime(self._claim_path(claim.stem, claim.generation))
        except FileNotFoundError:
            claim.lost.set()
            return False
        return True

    def release(self, claim: Claim) -> None:
        """Remove our claim file, unless the claim was taken over."""
        with self._lock:
            self._held.pop(claim.stem, None)
        if self.still_owner(claim):
            self._remove(claim)

    def release_all(self) -> None:
        """Release every claim held."""
        with self._lock:
            claims = list(self._held.values())
        for claim in claims:
            self.release(claim)

    def _remove(self, claim: Claim) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._claim_path(claim.stem, claim.generation))

    # ------------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="pom-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = max(self.lease / 4.0, 0.05)
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held.values())
            for claim in held:
                with contextlib.suppress(OSError):
                    self.refresh(claim)

    def close(self) -> None:
        """Stop the heartbeat, release every claim held, remove the clock probe."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.release_all()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._probe)
