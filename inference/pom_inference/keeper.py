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

import os

from pom_common.claims import ClaimInfo
from pom_common.defaults import STALL_SECONDS
from pom_common.workqueue import DEFAULT_NAMESPACE, FileClaimStore

#: Namespace of the keeper claims (beside the tomograms' own, ``tomograms``).
NAMESPACE = "keeper"
#: What the keeper claims: the namespace of the tomograms it keeps.
ROLE = DEFAULT_NAMESPACE


#: The keeper role's lease (s), or the workers' when shorter: a keeper heartbeat every LEASE / 4.
LEASE = 10.0


def keeper_store(output_dir: str | os.PathLike, lease_seconds: float = 120.0,
                 stall_seconds: float = STALL_SECONDS) -> FileClaimStore:
    """The store in which workers of ``output_dir`` claim the keeper role (lease: at most :data:`LEASE`)."""
    return FileClaimStore(output_dir, min(lease_seconds, LEASE), namespace=NAMESPACE, stall_seconds=stall_seconds)


def current_keeper(output_dir: str | os.PathLike) -> ClaimInfo | None:
    """Who keeps ``output_dir`` now (None: nobody); read-only."""
    return keeper_store(output_dir).states([ROLE])[ROLE].claim
