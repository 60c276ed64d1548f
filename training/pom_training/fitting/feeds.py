"""How an epoch sees the crops: every crop in each of the 8 rotations/flips, or seeded draws.

Both give ``model.fit`` its data (:meth:`fit_arguments`) and say how many steps an epoch has
(the cosine schedule needs it).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from scipy.ndimage import gaussian_filter

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
    seed : the draws, transforms and augmentations depend on it alone.
    augment : also change each drawn crop's intensities (:func:`augment_intensity`).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, per_epoch: int, seed: int,
                 augment: bool = False) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y, self.batch, self.augment = x, y, batch, augment
        self.rng = np.random.default_rng(seed)
        self.steps = math.ceil(per_epoch / batch)
        self._plan()

    def _plan(self) -> None:
        n = self.steps * self.batch
        order = np.concatenate([self.rng.permutation(len(self.x)) for _ in range(math.ceil(n / len(self.x)))])[:n]
        self.index = order.reshape(self.steps, self.batch)
        self.transform = self.rng.integers(0, 8, (self.steps, self.batch))  # pom_common.d4.element(t)
        if self.augment:  # drawn after the transforms: the draws are those without augmentation
            self.noise_seeds = self.rng.integers(0, 2**31, (self.steps, self.batch))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n, (j, t) in enumerate(zip(self.index[i], self.transform[i])):
            k, flip = element(int(t))
            x = apply(self.x[j], k, flip)
            if self.augment:
                x = augment_intensity(x, np.random.default_rng(int(self.noise_seeds[i, n])))
            xs.append(x)
            ys.append(apply(self.y[j], k, flip))
        return np.ascontiguousarray(xs, dtype=np.float32), np.ascontiguousarray(ys, dtype=np.float32)

    def on_epoch_end(self) -> None:
        """Draw the next epoch's crops and transforms."""
        self._plan()

    def fit_arguments(self) -> dict[str, Any]:
        """``model.fit``'s data arguments."""
        return {"x": self}


Feed = EveryOrientation | SeededDraws

#: Intensity augmentation (:func:`augment_intensity`): gain range (log), offset, noise std, blur sigma (px).
GAIN, OFFSET, NOISE, BLUR = 0.25, 0.25, 0.6, 1.2


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One crop (h, w, C) as another tomogram might show it: blurred or not, noisier, another gain and offset.

    Per channel: a Gaussian blur of sigma up to :data:`BLUR` px (half the crops), added
    Gaussian noise of std up to :data:`NOISE` (half the crops), then a gain of exp(+-GAIN)
    and an offset of +-OFFSET. The labels are unchanged: these change how a tomogram looks,
    not what is where.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, BLUR)
        for c in range(out.shape[-1]):
            out[..., c] = gaussian_filter(out[..., c], sigma)
    if rng.random() < 0.5:
        out += np.asarray(rng.normal(0.0, rng.uniform(0.05, NOISE), out.shape), np.float32)
    gain = np.asarray(np.exp(rng.uniform(-GAIN, GAIN, out.shape[-1])), np.float32)
    offset = np.asarray(rng.uniform(-OFFSET, OFFSET, out.shape[-1]), np.float32)
    return out * gain + offset


def make_feed(job: Job, tc: TrainConfig) -> Feed:
    """The feed of ``job``'s plan: Pom's 8-fold epoch, or 8 seeded draws per base crop (at least ``tc.min_draws``)."""
    if job.plan.sampling == EVERY_ORIENTATION:
        x8, y8 = all_eight(job.x), all_eight(job.y)
        return EveryOrientation(x8, y8, min(tc.batch_size, len(x8)))
    if job.plan.sampling != SEEDED_DRAWS:
        raise ValueError(f"unknown sampling {job.plan.sampling!r}")
    per_epoch = max(8 * (job.base or len(job.x)), tc.min_draws)
    return SeededDraws(job.x, job.y, min(tc.batch_size, per_epoch), per_epoch, tc.seed, tc.augment)
