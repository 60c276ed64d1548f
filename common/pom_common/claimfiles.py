"""The claim files of a work queue: where each tomogram's generations and outcomes are, read back.

State lives in ``<output>/.pom/<namespace>/``::

    tomograms/<bucket>/<stem>.gen.<g>        generation g of the claims on <stem>; exclusive create
    tomograms/<bucket>/<stem>.done.<g>       written by g's owner: outputs in place (fingerprint, sizes)
    tomograms/<bucket>/<stem>.failed.<g>     written by g's owner: the error
    tomograms/<bucket>/<stem>.released.<g>   written by g's owner: gave the claim up without an outcome

(and :mod:`pom_common.statefolder`'s campaigns, journal and clock). :class:`ClaimFiles` reads
a tomogram's state from them; :class:`pom_common.workqueue.FileClaimStore` adds the claims,
the records and the heartbeat on top.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .claims import ClaimInfo, TomogramState
from .statefolder import StateFolder

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


class ClaimFiles(StateFolder):
    """A namespace's claim files under ``<output>/.pom/<namespace>/``, read as tomogram states."""

    def __init__(self, output_dir: str | os.PathLike, lease_seconds: float, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.root = Path(output_dir) / STATE_DIR
        self.namespace = namespace
        super().__init__(self.root / namespace, lease_seconds)
        self._top: dict[str, int] = {}  # lowest possible current generation per stem (they only grow)

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
