"""``pom-infer status``: the state of every tomogram of an output folder, read-only and exact.

Done means the done record of the tomogram's current claim *and* every output it lists
still in place with the recorded size and inode (a deleted, truncated or replaced output
is not done). A claim is stale when not refreshed within the lease it was made with. Reads one listing of the state folders and of the output folder, then the
records; writes nothing, so a read-only folder is fine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pom_common.claims import ClaimInfo
from pom_common.workqueue import FileClaimStore

from .keeper import current_keeper

#: Throughput is measured over the tomograms finished in this window (seconds).
RATE_WINDOW = 3600.0


@dataclass
class DatasetStatus:
    """Counts and lists per state, with throughput and the time left."""

    done: list[str] = field(default_factory=list)
    running: list[tuple[str, ClaimInfo]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # done, but an output is missing or was replaced
    per_hour: float | None = None
    eta_seconds: float | None = None
    keeper: ClaimInfo | None = None  # while work remains: the worker that waits to take over expired claims

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document (``status --json``)."""
        return {"counts": {"done": len(self.done), "running": len(self.running), "failed": len(self.failed),
                           "pending": len(self.pending) + len(self.changed)},
                "running": [{"tomogram": s, **_claim_dict(c)} for s, c in self.running],
                "keeper": _claim_dict(self.keeper) if self.keeper is not None else None,
                "failed": [{"tomogram": s, "error": e} for s, e in self.failed],
                "pending": self.pending + self.changed, "outputs_changed": self.changed,
                "tomograms_per_hour": self.per_hour, "eta_seconds": self.eta_seconds}


def _claim_dict(claim: ClaimInfo) -> dict[str, Any]:
    return {"host": claim.host, "pid": claim.pid, "heartbeat_age_s": round(claim.age, 1), "lease_s": claim.lease,
            "stale": claim.stale}


def _outputs_intact(outputs: Any, listing: dict[str, tuple[int, int]]) -> bool:
    if not isinstance(outputs, dict) or not outputs:
        return False
    for name, recorded in outputs.items():
        if not isinstance(recorded, dict) or listing.get(name) != (recorded.get("size"), recorded.get("inode")):
            return False
    return True


def dataset_status(output_dir: str | os.PathLike, stems: Iterable[str] | None = None) -> DatasetStatus:
    """The state of ``stems`` (default: every tomogram with state) in ``output_dir``."""
    store = FileClaimStore(output_dir)
    states = store.states(stems)
    listing: dict[str, tuple[int, int]] = {}
    try:
        with os.scandir(Path(output_dir)) as entries:
            for entry in entries:
                if (entry.name.endswith(".mrc") and entry.is_file()) or (entry.name.endswith(".zarr") and entry.is_dir()):
                    st = entry.stat()
                    listing[entry.name] = (st.st_size, st.st_ino)
    except FileNotFoundError:
        pass
    status = DatasetStatus()
    finished_at = []
    for stem, state in states.items():
        if state.done is not None:
            if _outputs_intact(state.done.get("outputs"), listing):
                status.done.append(stem)
                if state.done_at is not None:
                    finished_at.append(state.done_at)
            else:
                status.changed.append(stem)
        elif state.failure is not None:
            status.failed.append((stem, state.error))
        elif state.claim is not None:
            status.running.append((stem, state.claim))
        else:
            status.pending.append(stem)
    if status.running or status.pending or status.changed:  # (a keeper matters while work remains)
        status.keeper = current_keeper(output_dir)
    now = time.time()
    recent = sorted(t for t in finished_at if t >= now - RATE_WINDOW)
    if len(recent) >= 2 and now > recent[0]:
        status.per_hour = len(recent) / (now - recent[0]) * 3600
        left = len(status.pending) + len(status.running) + len(status.changed)
        status.eta_seconds = left / status.per_hour * 3600 if left else 0.0
    return status


def status_lines(output_dir: str | os.PathLike, status: DatasetStatus) -> list[str]:
    """The human-readable report."""
    pending = len(status.pending) + len(status.changed)
    left = pending + len(status.running)
    if status.done and not left and not status.failed:
        return [f"{output_dir}: all {len(status.done)} done"]
    lines = [f"{output_dir}: {len(status.done)} done, {len(status.running)} running, {len(status.failed)} failed, "
             f"{pending} pending"]
    if status.per_hour is not None and left:  # (a finished folder has no time left to estimate)
        eta = status.eta_seconds or 0.0
        lines.append(f"throughput {status.per_hour:.1f} tomograms/hour over the last hour; "
                     f"{_duration(eta)} left at that rate")
    for stem, claim in status.running:
        lines.append(f"  running {stem}: {claim.host} pid {claim.pid}, heartbeat {claim.age:.0f} s ago"
                     + (f" (stale, lease {claim.lease:g} s: the next worker takes it over)" if claim.stale else ""))
    if status.keeper is not None:
        k = status.keeper
        lines.append(f"  keeper  {k.host} pid {k.pid}, heartbeat {k.age:.0f} s ago: waits to take over claims not "
                     f"refreshed within their lease" + (f" (stale, lease {k.lease:g} s: the next worker out of work "
                                                        "takes its place)" if k.stale else ""))
    for stem, error in status.failed:
        lines.append(f"  failed  {stem}: {error}")
    for stem in status.changed:
        lines.append(f"  pending {stem} (done before, but an output is missing or was replaced)")
    for stem in status.pending:
        lines.append(f"  pending {stem}")
    return lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
