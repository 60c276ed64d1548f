"""What a label method hands the fitting: one network's data, targets, loss and plan (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import Plan


@dataclass(frozen=True)
class Job:
    """One network to fit.

    ``metadata`` is what the exported network records about its training (the losses per
    epoch are added after fitting).
    """

    method: str  # the label method, for the progress lines
    x: np.ndarray  # (N, h, w, C) crops
    y: np.ndarray  # (N, h, w, T) targets: (label, weight) for a single network, one-hot (or 0) for the shared
    n_outputs: int
    activation: str  # "sigmoid" or "softmax"
    loss: str  # one of plan.MASKED_BCE, MASKED_CCE, PARTIAL_CCE, CCE
    plan: Plan
    base: int | None = None  # seeded draws: an epoch is 8 draws per crop of the first ``base`` (None: all)
    metadata: dict[str, Any] = field(default_factory=dict)
