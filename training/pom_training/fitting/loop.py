"""The one training loop: compile with the plan's schedule, fit, keep the best or the last epoch's weights."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import keras

from .checkpoints import save_keras
from .config import TrainConfig
from .feeds import Feed
from .plan import BEST, Plan
from .schedule import learning_rate

logger = logging.getLogger(__name__)


class Progress(keras.callbacks.Callback):
    """One line per epoch (loss, time per epoch, time left); the kept weights saved to ``checkpoint``.

    With ``keep`` BEST the best-loss weights are remembered (and saved when they improve);
    otherwise the weights are saved after every epoch. Either way a killed run leaves its
    result so far at ``checkpoint`` (None: nowhere).
    """

    def __init__(self, epochs: int, keep: str, checkpoint: Path | None, label: str) -> None:
        super().__init__()
        self.epochs, self.keep, self.checkpoint, self.label = epochs, keep, checkpoint, label
        self.start = time.perf_counter()
        self.best = math.inf
        self.best_weights: list[Any] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Start the clock."""
        self.start = time.perf_counter()
        self.best, self.best_weights = math.inf, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Keep or save the weights; say how the epoch went."""
        loss = float((logs or {}).get("loss", math.nan))
        elapsed = time.perf_counter() - self.start
        left = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        note = ""
        if self.keep == BEST:
            if loss < self.best:
                self.best, self.best_weights, note = loss, self.model.get_weights(), " (best)"
                if self.checkpoint is not None:
                    save_keras(self.model, self.checkpoint)
        elif self.checkpoint is not None:
            save_keras(self.model, self.checkpoint)
        logger.info("%s epoch %d/%d  loss %.4f%s  %.1f s/epoch  %s left", self.label, epoch + 1, self.epochs, loss,
                    note, elapsed / (epoch + 1), duration(left))


def duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``: a time left, for people."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fit(model: keras.Model, feed: Feed, loss: Any, tc: TrainConfig, plan: Plan, checkpoint: Path | None,
        label: str) -> list[float]:
    """Compile ``model`` with Adam on ``plan``'s schedule and fit it on ``feed`` for ``tc.epochs``.

    Parameters
    ----------
    model : an uncompiled Keras model.
    feed : the epoch's data (:mod:`.feeds`).
    loss : a Keras loss.
    tc : epochs and peak learning rate.
    plan : the schedule, and which epoch's weights end in ``model`` (the best-loss one, or the last).
    checkpoint : where the kept weights are saved while training (None: nowhere).
    label : name used in the progress lines.

    Returns
    -------
    The training loss per epoch.
    """
    rate = learning_rate(plan.schedule, tc.learning_rate, feed.steps * tc.epochs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=loss)
    progress = Progress(tc.epochs, plan.keep, checkpoint, label)
    history = model.fit(**feed.fit_arguments(), epochs=tc.epochs, verbose=0, callbacks=[progress])
    if plan.keep == BEST and progress.best_weights is not None:
        model.set_weights(progress.best_weights)
    return [float(v) for v in history.history["loss"]]
