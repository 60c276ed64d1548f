"""How a network is fitted, as a value a label method chooses (no TensorFlow here).

One loop (:mod:`.loop`) runs every plan; a plan says which learning-rate schedule, which
epoch's weights are kept, how an epoch sees the crops, and whether TensorFlow's ops must be
deterministic. The loss is named, so choosing it needs no TensorFlow either.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Learning-rate schedules (:mod:`.schedule`).
CONSTANT, COSINE = "constant", "cosine"
#: Which epoch's weights are the result.
BEST, LAST = "best", "last"
#: How an epoch sees the crops (:mod:`.feeds`): each crop in all 8 rotations/flips, shuffled;
#: or seeded draws, each in one of the 8 at random.
EVERY_ORIENTATION, SEEDED_DRAWS = "every orientation", "seeded draws"
#: The losses a plan may name (:mod:`pom_training.models.losses`; CCE is Keras's own).
MASKED_BCE, MASKED_CCE, CCE = "masked binary cross-entropy", "masked categorical cross-entropy", "categorical cross-entropy"
PARTIAL_CCE = "partial categorical cross-entropy"  # labels, and "not this class" where only that is known


@dataclass(frozen=True)
class Plan:
    """The schedule, the epoch kept, the sampling, and determinism of one fit."""

    schedule: str  # CONSTANT or COSINE
    keep: str  # BEST or LAST
    sampling: str  # EVERY_ORIENTATION or SEEDED_DRAWS
    deterministic: bool  # seeded draws and deterministic TensorFlow ops: a seed fixes the result


#: Pom's way: Adam at a constant rate, every crop in all 8 rotations/flips each epoch, the best-loss epoch kept.
BEST_EPOCH = Plan(CONSTANT, BEST, EVERY_ORIENTATION, deterministic=False)
#: Stable: a seed fixes the result; cosine decay to zero after a warm-up; 8 seeded draws per crop; the last epoch.
STABLE = Plan(COSINE, LAST, SEEDED_DRAWS, deterministic=True)
