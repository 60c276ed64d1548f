"""Learning-rate schedules: constant (Pom's), or a linear warm-up then cosine decay to zero."""

from __future__ import annotations

import keras

from .plan import CONSTANT, COSINE

#: The learning rate decays from TrainConfig.learning_rate to this fraction of it (cosine).
FINAL_LR_FRACTION = 0.0
#: Share of the steps spent warming the learning rate up linearly from zero.
WARMUP_FRACTION = 0.05


def learning_rate(schedule: str, peak: float, total_steps: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Adam's learning rate for ``schedule``: ``peak`` throughout, or warm-up and cosine over ``total_steps``."""
    if schedule == CONSTANT:
        return peak
    if schedule != COSINE:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    warmup = max(1, int(round(WARMUP_FRACTION * total_steps)))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), alpha=FINAL_LR_FRACTION, warmup_target=peak,
        warmup_steps=warmup)
