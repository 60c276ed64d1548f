"""How an epoch sees the crops: every crop in each of the 8 rotations/flips, or seeded draws.

Both give ``model.fit`` its data (:meth:`fit_arguments`) and say how many steps an epoch has
(the cosine schedule needs it).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from pom_common.d4 import all_eight, apply, element

from .config import TrainConfig
from .job import Job
from .plan import EVERY_ORIENTATION, SEEDED_DRAWS


class EveryOrientation:
    """Pom's epoch: each crop in all 8 rotations/flips (8N images), shuffled by Keras each epoch."""

    def __init__(self, x8: np.ndarray, y8: np.ndarray, batch: int) -> None:
        self.x8, self.y8, self.batch = x8, y8, batch

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.x8) / self.batch)

    def fit_arguments(self) -> dict[str, Any]:
        """``model.fit``'s data arguments."""
        return {"x": self.x8, "y": self.y8, "batch_size": self.batch, "shuffle": True}


class SeededDraws(keras.utils.PyDataset):
    """Random crops, each in one of the 8 rotations/flips; the draws depend on the seed alone.

    Parameters
    ----------
    x, y : the pool, inputs (N, H, W, C) and targets (N, H, W, ...) with H == W.
    batch : crops per batch.
    per_epoch : crops per epoch (drawn without replacement while the pool lasts).
    seed : the draws and transforms depend on it alone.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, per_epoch: int, seed: int) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y, self.batch = x, y, batch
        self.rng = np.random.default_rng(seed)
        self.steps = math.ceil(per_epoch / batch)
        self._plan()

    def _plan(self) -> None:
        n = self.steps * self.batch
        order = np.concatenate([self.rng.permutation(len(self.x)) for _ in range(math.ceil(n / len(self.x)))])[:n]
        self.index = order.reshape(self.steps, self.batch)
        self.transform = self.rng.integers(0, 8, (self.steps, self.batch))  # pom_common.d4.element(t)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for j, t in zip(self.index[i], self.transform[i]):
            k, flip = element(int(t))
            xs.append(apply(self.x[j], k, flip))
            ys.append(apply(self.y[j], k, flip))
        return np.ascontiguousarray(xs, dtype=np.float32), np.ascontiguousarray(ys, dtype=np.float32)

    def on_epoch_end(self) -> None:
        """Draw the next epoch's crops and transforms."""
        self._plan()

    def fit_arguments(self) -> dict[str, Any]:
        """``model.fit``'s data arguments."""
        return {"x": self}


Feed = EveryOrientation | SeededDraws


def make_feed(job: Job, tc: TrainConfig) -> Feed:
    """The feed of ``job``'s plan: Pom's 8-fold epoch, or 8 seeded draws per base crop."""
    if job.plan.sampling == EVERY_ORIENTATION:
        x8, y8 = all_eight(job.x), all_eight(job.y)
        return EveryOrientation(x8, y8, min(tc.batch_size, len(x8)))
    if job.plan.sampling != SEEDED_DRAWS:
        raise ValueError(f"unknown sampling {job.plan.sampling!r}")
    per_epoch = 8 * (job.base or len(job.x))
    return SeededDraws(job.x, job.y, min(tc.batch_size, per_epoch), per_epoch, tc.seed)
