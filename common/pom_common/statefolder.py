"""The files of a work queue's state folder: records written complete or not at all, the clock, campaigns, the journal.

:class:`StateFolder` is what :class:`pom_common.workqueue.FileClaimStore` builds its claims
on. Every operation retries transient errors (NFS hiccups) and raises
:class:`~pom_common.claims.StoreError` when the folder keeps failing. Records are JSON
files created exclusively: written to a temporary file, flushed, then hard-linked into
place, so a reader never sees half a record; a writer killed in between leaves the
temporary behind (``.tmp-<hex>-<pid>.<host tag>-<name>``), which :meth:`StateFolder._sweep`
removes later.

::

    <state>/campaigns/<kind>-<fingerprint>.<n>    an --overwrite / --retry-failed run all workers join
    <state>/journal/<host>-<pid>-<id>.jsonl      one file per worker: what it did
    <state>/.clock-<host>                        touched to read the filesystem's clock
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .claims import StoreError
from .errors import user_name

logger = logging.getLogger(__name__)

#: Errors worth retrying (NFS hiccups); anything else is final at once.
TRANSIENT = frozenset({errno.EIO, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY})
#: Waits between attempts of a bookkeeping operation that fails transiently.
RETRY_DELAYS = (0.05, 0.2, 1.0, 3.0)
#: A record being written: ``.tmp-<hex>-<pid>.<host tag>-<record name>`` (see :meth:`StateFolder._write_new`).
_TMP_RE = re.compile(r"^\.tmp-[0-9a-f]{8}-(?P<pid>\d+)\.(?P<host>[0-9a-f]{8})-(?P<name>.+)$")
_T = TypeVar("_T")


class StateFolder:
    """One worker's access to a state folder (``state_dir``), with a lease for what counts as stale."""

    def __init__(self, state_dir: Path, lease_seconds: float) -> None:
        self.state_dir = state_dir
        self.lease = float(lease_seconds)
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}-{os.getpid()}-{secrets.token_hex(3)}"
        self._host_tag = hashlib.sha1(self.host.encode()).hexdigest()[:8]
        self._probe = self.state_dir / f".clock-{self.host}"

    # ------------------------------------------------------------------ plumbing

    def _retry(self, what: str, op: Callable[[], _T]) -> _T:
        """Run a bookkeeping operation; retry transient errors; StoreError when it keeps failing."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return op()
            except (FileNotFoundError, FileExistsError):
                raise
            except OSError as exc:
                if exc.errno not in TRANSIENT or delay is None:
                    raise StoreError(f"{self.state_dir}: cannot {what} ({exc.strerror or exc}; errno "
                                     f"{exc.errno}); claims released, the other workers go on") from None
                logger.debug("%s: %s failed (%s); retrying in %.2f s", self.state_dir, what, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _write_new(self, path: Path, doc: Mapping[str, Any]) -> bool:
        """Create ``path`` holding ``doc``, complete, or not at all; False when it exists already."""
        data = json.dumps(doc).encode()

        def write() -> bool:
            tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{os.getpid()}.{self._host_tag}-{path.name}")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, path)  # atomic, exclusive, and the content is complete when it appears
                    return True
                except FileExistsError:
                    return False
                except FileNotFoundError:  # removed as stale by a taker (we were paused past the lease)
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                        raise
                    return self._write_excl(path, data)  # a filesystem without hard links
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

        self._retry(f"create {path.parent}", lambda: self._makedirs(path.parent))
        return self._retry(f"write {path.name}", write)

    @staticmethod
    def _write_excl(path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)  # never leave an empty record behind
            raise
        os.close(fd)
        return True

    def _read(self, path: Path) -> tuple[dict | None, float | None]:
        """A record and its mtime; (None, None) when absent; ({}, mtime) when unreadable."""
        def read() -> tuple[dict | None, float | None]:
            try:
                with open(path, "rb") as handle:
                    mtime = os.fstat(handle.fileno()).st_mtime
                    data = handle.read(1 << 20)
            except FileNotFoundError:
                return None, None
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                doc = {}
            return (doc if isinstance(doc, dict) else {}), mtime
        return self._retry(f"read {path.name}", read)

    def _exists(self, path: Path) -> bool:
        def stat() -> bool:
            try:
                os.stat(path)
                return True
            except FileNotFoundError:
                return False
        return self._retry(f"look at {path.name}", stat)

    # ------------------------------------------------------------------ folders

    def _makedirs(self, folder: Path) -> None:
        """Create ``folder`` (and its parents); a shared output folder's group gets to write in it too.

        Workers of several users share a state folder when the output folder is writable for
        its group: the folders created here then are too (group write and set-group-ID, as
        the output folder has them), whatever the creating user's umask.
        """
        if folder.is_dir():
            return
        os.makedirs(folder, exist_ok=True)
        top = self.state_dir.parent.parent  # the output folder: <output>/.pom/<namespace>
        try:
            shared = os.stat(top).st_mode & (stat.S_IWGRP | stat.S_ISGID)
            if not shared:
                return
            probe = folder
            while probe != top and top in probe.parents:
                mode = os.stat(probe).st_mode
                if mode & shared != shared and os.stat(probe).st_uid == os.geteuid():
                    os.chmod(probe, stat.S_IMODE(mode) | shared)
                probe = probe.parent
        except OSError:
            pass  # best effort: check_writable() names what is not writable

    def check_writable(self) -> None:
        """Refuse, in one line, a state folder whose existing folders this user cannot write in.

        Raises
        ------
        StoreError
            Naming the folder, its owner and mode, this user, and the fix.
        """
        folders = [self.state_dir.parent, self.state_dir]
        for sub in ("tomograms", "campaigns", "journal"):
            folders.append(self.state_dir / sub)
        with contextlib.suppress(OSError):
            folders += [Path(e.path) for e in os.scandir(self.state_dir / "tomograms") if e.is_dir()]
        for folder in folders:
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                st = os.stat(folder)
                owner = user_name(st.st_uid)
                raise StoreError(f"{folder}: this user ({user_name(os.geteuid())}) cannot write in the work queue's folder, "
                                 f"which belongs to {owner} with mode {stat.filemode(st.st_mode)}: run every worker of "
                                 "one output folder as one user, or share it by a group (chgrp -R GROUP and chmod -R "
                                 "g+ws on the output folder, then umask 002)")

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """The filesystem's current time: the mtime of this host's clock file, touched just now."""
        def touch() -> float:
            self._makedirs(self.state_dir)
            with open(self._probe, "a") as handle:  # through the descriptor: another worker on this
                os.utime(handle.fileno())          # host may remove the name at any moment
                return os.fstat(handle.fileno()).st_mtime
        return self._retry("read the filesystem's clock", touch)

    def timestamp_granularity(self) -> float:
        """The resolution (s) of mtimes on this filesystem: from 1e-9 (ext4, xfs) to 2 (FAT)."""
        self._makedirs(self.state_dir)
        odd_second = (int(time.time()) | 1) * 10**9
        probe = self.state_dir / f".tmp-clock-{self.worker_id}"
        try:
            with open(probe, "w") as handle:
                os.utime(handle.fileno(), ns=(odd_second + 123_456_789,) * 2)
                kept = os.fstat(handle.fileno()).st_mtime_ns - odd_second
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        for resolution in (1, 1_000, 1_000_000, 10_000_000, 100_000_000):
            if kept == 123_456_789 // resolution * resolution:
                return resolution / 1e9
        return 1.0 if kept == 0 else 2.0

    def _sweep(self, entry: os.DirEntry, now: float) -> None:
        """Remove ``entry`` if it is a record a killed worker left half-written (best effort).

        A record is written to a temporary file and linked into place; a worker killed in
        between leaves the temporary behind. Removed: those whose writer is a dead process
        on this host, or that are older than the lease (a writer elsewhere).
        """
        m = _TMP_RE.match(entry.name)
        if m is None:
            return
        with contextlib.suppress(OSError):
            dead = m.group("host") == self._host_tag and not _alive(int(m.group("pid")))
            if dead or now - entry.stat().st_mtime > self.lease:
                os.unlink(entry.path)

    # ------------------------------------------------------------------ campaigns

    def _campaign_path(self, kind: str, fingerprint: str, n: int) -> Path:
        return self.state_dir / "campaigns" / f"{kind}-{fingerprint}.{n}"

    def _closed_path(self, kind: str, fingerprint: str, n: int) -> Path:
        return self.state_dir / "campaigns" / f"{kind}-{fingerprint}.{n}.closed"

    def campaign(self, kind: str, fingerprint: str) -> float:
        """Start time of the open (or just finished) campaign for ``fingerprint``, opening one if none.

        A campaign finished less than a lease ago is joined, so workers started seconds
        apart redo each tomogram once even when the first ones finished everything.
        """
        n = -1
        while self._exists(self._campaign_path(kind, fingerprint, n + 1)):
            n += 1
        now = self.now()
        if n >= 0:
            doc, _ = self._read(self._campaign_path(kind, fingerprint, n))
            closed, closed_at = self._read(self._closed_path(kind, fingerprint, n))
            if doc and (closed is None or (closed_at is not None and now - closed_at < self.lease)):
                return float(doc["start"])
        if self._write_new(self._campaign_path(kind, fingerprint, n + 1), {"start": now, "host": self.host}):
            return now
        doc, _ = self._read(self._campaign_path(kind, fingerprint, n + 1))  # another worker opened it first
        return float((doc or {}).get("start", now))

    def close_campaign(self, kind: str, fingerprint: str) -> None:
        """Mark the newest campaign for ``fingerprint`` finished."""
        n = -1
        while self._exists(self._campaign_path(kind, fingerprint, n + 1)):
            n += 1
        if n >= 0:
            self._write_new(self._closed_path(kind, fingerprint, n), {"by": self.host})

    # ------------------------------------------------------------------ journal

    def _journal(self, event: str, stem: str, generation: int, fingerprint: str | None,
                 carried_from: int | None = None) -> None:
        """Append one line to this worker's own journal file (appends from several NFS clients may mix).

        ``carried_from``: the outcome is generation ``carried_from``'s, carried forward (the
        same result, which its own worker may or may not have journaled).
        """
        event_doc = {"event": event, "stem": stem, "generation": generation, "fingerprint": fingerprint,
                     "host": self.host, "pid": os.getpid(), "time": time.time()}
        if carried_from is not None:
            event_doc["carried_from"] = carried_from
        line = json.dumps(event_doc) + "\n"
        folder = self.state_dir / "journal"

        def append() -> None:
            self._makedirs(folder)
            fd = os.open(folder / f"{self.worker_id}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        self._retry("append to the journal", append)

    def journal(self) -> list[dict]:
        """Every event recorded by every worker, oldest first."""
        events = []
        for path in sorted((self.state_dir / "journal").glob("*.jsonl")):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return sorted(events, key=lambda e: e.get("time", 0))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
