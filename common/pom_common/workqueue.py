"""Share tomograms among any number of workers on any number of servers, exactly once.

Only exclusive create, rename and mtime are relied on (they hold on NFS); no flock.

State lives in ``<output>/.pom/<namespace>/`` (one namespace per model):

``<stem>.claim.<g>``
    A claim of generation g, created with O_CREAT | O_EXCL; holds host, pid, start time.
    Its worker refreshes its mtime (heartbeat). The owner is the creator of the highest
    generation present. A claim not refreshed within the lease is stale: another worker
    takes it over by creating generation g + 1 exclusively, so two workers can never both
    take over the same claim, and a taker verifies after creating that no higher
    generation exists.
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
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import TMP_MARK, atomic_write_text
from .errors import ConfigError

STATE_DIR = ".pom"
_CLAIM_RE = re.compile(r"^(?P<stem>.+)\.claim\.(?P<gen>\d+)$")


@dataclass
class Claim:
    """A claim held by this process."""

    stem: str
    generation: int
    path: Path
    lost: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ClaimInfo:
    """What ``status`` reports of a claim."""

    stem: str
    host: str
    pid: int
    age: float  # seconds since the last heartbeat, filesystem time
    stale: bool


class WorkQueue:
    """Claims, heartbeats, take-overs and markers for one output folder."""

    def __init__(self, output_dir: str | os.PathLike, lease_seconds: float = 120.0, namespace: str = "default") -> None:
        self.output_dir = Path(output_dir)
        self.namespace = namespace
        self.state_dir = self.output_dir / STATE_DIR / namespace
        self.lease = float(lease_seconds)
        self.host = socket.gethostname()
        self._probe = self.state_dir / f".clock-{self.host}-{os.getpid()}-{secrets.token_hex(3)}"
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ time and paths

    def ensure(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)

    def fs_now(self) -> float:
        """The filesystem's current time: the mtime of a file touched just now."""
        self.ensure()
        with open(self._probe, "a"):  # noqa: SIM115
            pass
        os.utime(self._probe)
        return os.stat(self._probe).st_mtime

    def done_path(self, stem: str) -> Path:
        return self.state_dir / f"{stem}.done"

    def failed_path(self, stem: str) -> Path:
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

    # ------------------------------------------------------------------ markers

    def is_done(self, stem: str, outputs: list[Path] | None = None) -> bool:
        """Done = the marker exists and (when given) every output file is in place."""
        if not self.done_path(stem).exists():
            return False
        return all(p.exists() for p in outputs) if outputs is not None else True

    def failure(self, stem: str) -> dict | None:
        try:
            return json.loads(self.failed_path(stem).read_text())
        except (OSError, ValueError):
            return None

    def mark_done(self, claim: Claim, details: dict) -> None:
        record = {**details, "stem": claim.stem, "host": self.host, "pid": os.getpid(), "time": time.time()}
        atomic_write_text(self.done_path(claim.stem), json.dumps(record))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.failed_path(claim.stem))
        self._journal("done", claim.stem)

    def _journal(self, event: str, stem: str) -> None:
        """Append one line to the run history (small O_APPEND writes do not interleave)."""
        line = json.dumps({"event": event, "stem": stem, "host": self.host, "pid": os.getpid(), "time": time.time()})
        fd = os.open(self.state_dir / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def journal(self) -> list[dict]:
        try:
            lines = (self.state_dir / "journal.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def mark_failed(self, claim: Claim, error: str) -> None:
        atomic_write_text(self.failed_path(claim.stem), json.dumps({"error": error, "host": self.host,
                                                                    "pid": os.getpid(), "time": time.time()}))
        self._journal("failed", claim.stem)

    def remove_temporaries(self, output_names: list[str]) -> int:
        """Delete temporary files of these outputs left by a worker whose claim we took over.

        Only call while holding the claim: the previous owner is dead, or alive but no longer
        owner, in which case it abandons its work without recording anything.
        """
        removed = 0
        for name in output_names:
            for path in self.output_dir.glob(f".{name}{TMP_MARK}*"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def clear_done(self, stem: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.done_path(stem))

    # ------------------------------------------------------------------ claims

    def claim_info(self, stem: str, now: float | None = None) -> ClaimInfo | None:
        """The current owner's claim, or None when nobody holds ``stem``."""
        gens = self._generations(stem)
        if not gens:
            return None
        path = self._claim_path(stem, gens[-1])
        try:
            mtime = os.stat(path).st_mtime
            doc = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            doc, mtime = {}, None
        if mtime is None:
            return None
        now = self.fs_now() if now is None else now
        age = now - mtime
        return ClaimInfo(stem, str(doc.get("host", "?")), int(doc.get("pid", -1)), age, age > self.lease)

    def try_claim(self, stem: str) -> Claim | None:
        """Claim ``stem`` if nobody holds it, or take over a stale claim. None if held by a live worker."""
        self.ensure()
        gens = self._generations(stem)
        if gens:
            top = gens[-1]
            path = self._claim_path(stem, top)
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                return None  # released or taken over meanwhile: look again next round
            if self.fs_now() - mtime <= self.lease:
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
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, json.dumps({"host": self.host, "pid": os.getpid(), "start": time.time()}).encode())
        finally:
            os.close(fd)
        return Claim(stem, generation, path)

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
            os.utime(claim.path)
        except FileNotFoundError:
            claim.lost.set()
            return False
        return True

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.stem, None)
        if self.still_owner(claim):
            self._remove(claim)

    def release_all(self) -> None:
        with self._lock:
            claims = list(self._held.values())
        for claim in claims:
            self.release(claim)

    def _remove(self, claim: Claim) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim.path)

    def held(self) -> list[Claim]:
        with self._lock:
            return list(self._held.values())

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
            for claim in self.held():
                try:
                    self.refresh(claim)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop the heartbeat, release every claim held, remove the clock probe."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.release_all()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._probe)

    # ------------------------------------------------------------------ status

    def status(self, stems: list[str] | None = None) -> dict[str, list]:
        """done / running / failed / pending for ``stems`` (default: every stem with state)."""
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
        now = self.fs_now() if self.state_dir.is_dir() else time.time()
        out: dict[str, list] = {"done": [], "running": [], "failed": [], "pending": []}
        for stem in stems:
            claim = self.claim_info(stem, now)
            if self.is_done(stem):
                out["done"].append(stem)
            elif claim is not None:
                out["running"].append(claim)
            elif (failure := self.failure(stem)) is not None:
                out["failed"].append((stem, failure.get("error", "?")))
            else:
                out["pending"].append(stem)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._probe)  # status is read-only: leave no probe behind
        return out


def check_lease(seconds: float) -> float:
    if not seconds > 0:
        raise ConfigError(f"--lease-seconds: expected a positive number, got {seconds}")
    return float(seconds)
