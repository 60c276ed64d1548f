"""The claim-store interface: how workers share tomograms, independent of where state lives.

A worker claims a tomogram, keeps the claim fresh while it works, records the outcome
(done or failed) and releases the claim. Every change a worker makes is conditional on
still owning its claim: a worker whose claim was taken over (it was paused, or its
filesystem stalled) changes nothing and reports nothing. :class:`pom_common.workqueue.
FileClaimStore` keeps this state in files beside the outputs; nothing outside a store
touches where or how it keeps it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import LockError, PomError

#: The states of a tomogram, as :attr:`TomogramState.status` reports them.
DONE, RUNNING, FAILED, PENDING = "done", "running", "failed", "pending"
#: Kinds of campaign: every worker started with --overwrite (or --retry-failed) for the
#: same fingerprint joins the open campaign, so each tomogram is redone once.
OVERWRITE, RETRY = "overwrite", "retry"


class ClaimLost(LockError):
    """Our claim was taken over: abandon the tomogram, change nothing, report nothing."""


class StoreError(PomError):
    """The state folder cannot be used (after retries): the worker stops, releasing its claims."""


@dataclass
class Claim:
    """A claim held by this process on one tomogram (``stem``), at ``generation``."""

    stem: str
    generation: int
    token: str
    lost: threading.Event = field(default_factory=threading.Event)

    @property
    def taken_over(self) -> bool:
        """True when an earlier worker held this tomogram and stopped (its leftovers may remain)."""
        return self.generation > 0


@dataclass(frozen=True)
class ClaimInfo:
    """Who holds a tomogram, as the store sees it."""

    host: str
    pid: int
    age: float  # seconds since the last heartbeat, by the store's clock
    stale: bool  # older than its lease: the next claim attempt takes it over
    lease: float = 120.0  # seconds: the lease the claim was made with (its owner refreshes it within that)


@dataclass(frozen=True)
class TomogramState:
    """Everything stored about one tomogram's current generation.

    ``done`` and ``failure`` are the records written by its owner (:meth:`ClaimStore.
    record_done`, :meth:`ClaimStore.record_failed`); ``done_at``/``failed_at`` when, by the
    store's clock (comparable with :meth:`ClaimStore.now`). Records written by the owner
    of an older generation are not the current state; but ``record`` (``record_at``) is the
    newest outcome of any generation up to the current one, which says what the files
    beside it were made by, also while a later attempt holds, released or lost the claim.
    """

    stem: str
    generation: int = -1  # -1: never claimed
    done: Mapping[str, Any] | None = None
    done_at: float | None = None
    failure: Mapping[str, Any] | None = None
    failed_at: float | None = None
    claim: ClaimInfo | None = None  # set while the current generation is held (not released)
    record: Mapping[str, Any] | None = None  # newest done or failed record at or below the current generation
    record_at: float | None = None

    @property
    def status(self) -> str:
        """``done``, ``running`` (claimed), ``failed`` or ``pending``."""
        if self.done is not None:
            return DONE
        if self.failure is not None:
            return FAILED
        if self.claim is not None:
            return RUNNING
        return PENDING

    @property
    def error(self) -> str:
        """The recorded error of the last failed attempt ('' when none)."""
        return str(self.failure.get("error", "?")) if self.failure is not None else ""


class ClaimStore(Protocol):
    """Claims and outcomes of the tomograms of one output folder (one namespace)."""

    def now(self) -> float:
        """The store's clock (seconds), against which leases and record times are judged."""

    def claim(self, stem: str, expected: int | None = None, redo: bool = False) -> Claim | None:
        """Claim ``stem``, taking over a stale claim; None while another worker holds it.

        With ``expected``: only while the current generation is still the one the caller
        decided on. Without ``redo``, a tomogram with a recorded outcome is never claimed
        (an outcome recorded meanwhile is kept, not hidden).
        """

    def refresh(self, claim: Claim) -> bool:
        """Heartbeat; False (and ``claim.lost`` set) when the claim was taken over."""

    def still_owner(self, claim: Claim) -> bool:
        """Whether ``claim`` is still the current claim of its tomogram."""

    def release(self, claim: Claim) -> None:
        """Give ``claim`` up (no effect on a claim that was taken over)."""

    def release_all(self) -> list[str]:
        """Give up every claim this store object holds; the stems that could not be released."""

    def record_done(self, claim: Claim, record: Mapping[str, Any]) -> None:
        """Record the tomogram as done (its outputs are in place). Raises ClaimLost when not owner."""

    def record_failed(self, claim: Claim, error: str, details: Mapping[str, Any] | None = None) -> None:
        """Record a failed attempt with its one-line error and ``details``. Raises ClaimLost when not owner."""

    def state(self, stem: str) -> TomogramState:
        """What is stored about ``stem``."""

    def states(self, stems: Iterable[str] | None = None, sweep: bool = False) -> dict[str, TomogramState]:
        """The state of each of ``stems`` (default: every tomogram the store knows).

        ``sweep``: also remove what killed workers left half-written (a worker's final
        tally; ``status`` writes nothing).
        """

    def campaign(self, kind: str, fingerprint: str) -> float:
        """Join the open campaign of ``kind`` for ``fingerprint``, or open one; its start time."""

    def close_campaign(self, kind: str, fingerprint: str) -> None:
        """Mark the campaign finished (every tomogram redone); later workers start a new one."""

    def progress(self) -> None:
        """Say the worker made progress (the heartbeat stops when it makes none for too long)."""

    def namespaces(self) -> list[str]:
        """Every namespace with state in this store's output folder."""

    def close(self) -> list[str]:
        """Stop heartbeats and release every claim held; the stems that could not be released."""
