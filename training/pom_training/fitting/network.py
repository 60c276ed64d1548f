"""Fit one network for a label method's :class:`~.job.Job`: seeded, on the devices asked for, checked."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from ..models.losses import (
    masked_binary_crossentropy,
    masked_categorical_crossentropy,
    partial_categorical_crossentropy,
)
from ..models.unet import build_unet
from .checkpoints import check_depth, load_checkpoint
from .config import TrainConfig
from .devices import make_strategy
from .feeds import make_feed
from .job import Job
from .loop import fit
from .plan import CCE, MASKED_BCE, MASKED_CCE, PARTIAL_CCE

logger = logging.getLogger(__name__)

#: The losses a plan names, made fresh for each fit.
LOSSES: dict[str, Callable[[], Any]] = {
    MASKED_BCE: lambda: masked_binary_crossentropy,
    MASKED_CCE: lambda: masked_categorical_crossentropy,
    PARTIAL_CCE: lambda: partial_categorical_crossentropy,
    CCE: keras.losses.CategoricalCrossentropy,
}


def seed(value: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, make TensorFlow's ops deterministic too."""
    keras.utils.set_random_seed(value)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train_network(job: Job, tc: TrainConfig, gpus: list[int] | None, checkpoint: Path, label: str,
                  start: str | os.PathLike | None = None) -> tuple[keras.Model, list[float]]:
    """Build a U-Net (or continue ``start``, a saved ``.keras``) and fit it as ``job`` says.

    Returns
    -------
    The fitted model (the plan's kept weights) and the training loss per epoch.

    Raises
    ------
    ConfigError
        The crops do not fit the network's depth.
    InputError
        ``start`` cannot be loaded, or does not match the data.
    DeviceError
        GPUs were asked for and TensorFlow cannot use them.
    """
    check_depth(job.x, tc)
    seed(tc.seed, job.plan.deterministic)
    os.makedirs(checkpoint.parent, exist_ok=True)
    strategy = make_strategy(gpus)  # None or []: the CPU, asked for
    with strategy.scope():
        if start:
            model = load_checkpoint(start, job.x.shape[-1], job.n_outputs)
        else:
            model = build_unet(job.x.shape[-1], job.n_outputs, tc.base_filters, tc.depth, activation=job.activation)
    feed = make_feed(job, tc)
    logger.info("training %s (label_method %s, seed %d): %d images, %d steps of %d per epoch (%s), %d epochs",
                label, job.method, tc.seed, len(job.x), feed.steps, feed.batch, job.plan.sampling, tc.epochs)
    losses = fit(model, feed, LOSSES[job.loss](), tc, job.plan, checkpoint, label)
    return model, losses
