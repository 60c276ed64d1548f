"""The keeper: the one worker per output folder that waits for the tomograms other workers hold.

A worker that finds nothing left to claim but tomograms held by other workers waits for them
only if it is the folder's keeper; the others end at once (exit 0), reporting what they left.
The keeper takes over every claim that expires (its worker was killed, or hung) and ends
when every tomogram is finished. So after a crash one allocation waits for the lease, not
every one (at scale: GPU-hours); the price is that one worker per folder waits while the
last tomograms of the others run.

The keeper role is itself a claim, in the namespace ``keeper`` of the output folder's state
(``output/.pom/keeper/``), kept fresh by its worker's heartbeat like any claim: a keeper that
is killed is replaced, once its claim expires, by the next worker that runs out of work.
"""

from __future__ import annotations

import os

from pom_common.claims import ClaimInfo
from pom_common.workqueue import DEFAULT_NAMESPACE, DEFAULT_STALL_SECONDS, FileClaimStore

#: Namespace of the keeper claims (beside the tomograms' own, ``tomograms``).
NAMESPACE = "keeper"
#: What the keeper claims: the namespace of the tomograms it keeps.
ROLE = DEFAULT_NAMESPACE


def keeper_store(output_dir: str | os.PathLike, lease_seconds: float = 120.0,
                 stall_seconds: float = DEFAULT_STALL_SECONDS) -> FileClaimStore:
    """The store in which workers of ``output_dir`` claim the keeper role."""
    return FileClaimStore(output_dir, lease_seconds, namespace=NAMESPACE, stall_seconds=stall_seconds)


def current_keeper(output_dir: str | os.PathLike) -> ClaimInfo | None:
    """Who keeps ``output_dir`` now (None: nobody); read-only."""
    return keeper_store(output_dir).states([ROLE])[ROLE].claim
