"""The keeper: the one worker per output folder that waits for the tomograms other workers hold.

A worker that finds nothing left to claim but tomograms held by other workers waits for them
only if it is the folder's keeper; the others end at once (exit 0), reporting what they left.
The keeper takes over every claim that expires (its worker was killed, or hung) and ends
when every tomogram is finished. So after a crash one allocation waits for the lease, not
every one (at scale: GPU-hours); the price is that one worker per folder waits while the
last tomograms of the others run.

The keeper role is itself a claim, in the namespace ``keeper`` of the output folder's state
(``output/.pom/keeper/``), kept fresh by its worker's heartbeat like any claim, with a short
lease (:data:`LEASE`, 10 s): a worker out of work ends only after it has seen the keeper's
heartbeat (2.5 s apart), and takes the role over from a keeper that stopped refreshing it.
The role is no lock: two keepers at once (a misjudged claim) only wait side by side; every
tomogram is still segmented once, by its own claim. What the rule cannot help: a keeper that
dies after every other worker has ended leaves the tomograms it would have taken over to the
next run.
"""

from __future__ import annotations

import logging
import os
import time

from pom_common.claims import Claim, ClaimInfo
from pom_common.defaults import STALL_SECONDS
from pom_common.workqueue import DEFAULT_NAMESPACE, FileClaimStore

logger = logging.getLogger(__name__)

#: Namespace of the keeper claims (beside the tomograms' own, ``tomograms``).
NAMESPACE = "keeper"
#: What the keeper claims: the namespace of the tomograms it keeps.
ROLE = DEFAULT_NAMESPACE


#: The keeper role's lease (s), or the workers' when shorter: a keeper heartbeat every LEASE / 4.
LEASE = 10.0
#: A keeper's claim whose mtime moved by this much (s) since first seen has been refreshed (beyond
#: 1 s timestamps and clock reading jitter; its heartbeats move it by the keeper lease / 4).
HEARTBEAT_SEEN = 1.0


def keeper_store(output_dir: str | os.PathLike, lease_seconds: float = 120.0,
                 stall_seconds: float = STALL_SECONDS) -> FileClaimStore:
    """The store in which workers of ``output_dir`` claim the keeper role (lease: at most :data:`LEASE`)."""
    return FileClaimStore(output_dir, min(lease_seconds, LEASE), namespace=NAMESPACE, stall_seconds=stall_seconds)


def current_keeper(output_dir: str | os.PathLike) -> ClaimInfo | None:
    """Who keeps ``output_dir`` now (None: nobody); read-only."""
    return keeper_store(output_dir).states([ROLE])[ROLE].claim


class KeeperWatch:
    """One worker's part in the keeper rule, once it has run out of tomograms to claim.

    The first worker to run out of work claims the keeper role and waits, taking over the
    claims that expire, until every tomogram is finished. Any other ends once it has seen
    the keeper alive: a heartbeat of the keeper's claim after it ran out of work (within a
    keeper heartbeat, :data:`LEASE` / 4), so nobody leaves work to a keeper that died; a
    keeper that does not refresh its claim within its lease is replaced by this worker. A
    keeper that was paused past its lease and replaced meanwhile ends the same way.
    """

    def __init__(self, name: str, output_dir: str | os.PathLike, lease_seconds: float,
                 stall_seconds: float = STALL_SECONDS, heartbeat_seen: float = HEARTBEAT_SEEN) -> None:
        self.name = name  # the worker's, for the log
        self.output_dir, self.lease_seconds, self.stall_seconds = output_dir, lease_seconds, stall_seconds
        self.heartbeat_seen = heartbeat_seen  # a claim mtime moved by this much (s) was refreshed
        self.store: FileClaimStore | None = None  # opened when the worker first runs out of work
        self.claim: Claim | None = None  # held while this worker is the folder's keeper
        self.seen: tuple[int, float] | None = None  # another keeper's (generation, last heartbeat)
        self.holder = ""  # the keeper this worker left its tomograms to ("host pid N")

    def keep_waiting(self) -> bool:
        """Whether to wait (as the keeper, or until another keeper is seen alive); False: end, left to :attr:`holder`."""
        if self.claim is None or self.claim.lost.is_set():
            if self.store is None:
                self.store = keeper_store(self.output_dir, self.lease_seconds, self.stall_seconds)
            self.claim = self.store.claim(ROLE)
            if self.claim is None:
                state = self.store.state(ROLE)
                holder = state.claim
                if holder is None or holder.stale:  # the keeper changed just now: look again after a poll
                    return True
                beat = (state.generation, time.time() - holder.age)  # which keeper, and when it last refreshed
                if self.seen is None or self.seen[0] != beat[0]:
                    self.seen = beat
                    return True  # wait for its next heartbeat: proof that it lives
                if beat[1] < self.seen[1] + self.heartbeat_seen:
                    return True
                self.holder = f"{holder.host} pid {holder.pid}"
                return False
            logger.info("%s: the tomograms left are held by other workers; waiting for them as this folder's "
                        "keeper (claims not refreshed within their lease are taken over)", self.name)
        assert self.store is not None
        self.store.progress()
        return True

    def close(self) -> None:
        """Give the keeper role up (else it passes on after the lease).

        Also removes the clock file of the keepers' folder, which a killed keeper on this host may have left.
        """
        (self.store or keeper_store(self.output_dir, self.lease_seconds)).close()
