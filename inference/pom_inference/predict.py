"""Prediction of preprocessed slices: padding, test-time augmentation, batching (arrays only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pom_common.d4 import apply, invert, rotations_for
from pom_common.defaults import TTA

from .preprocess import pad_to_multiple

#: Slices per ONNX Runtime call on the CPU (and on a GPU whose free memory cannot be read).
DEFAULT_BATCH = 8


def predict_slices(run: Callable[[np.ndarray], np.ndarray], slices: np.ndarray, multiple: int, tta: int = TTA,
                   batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Segment (N, H, W, C) slices, averaging over the TTA transforms.

    Every pixel gets a value: slices are reflect-padded to the size multiple and the
    prediction is cropped back.

    Parameters
    ----------
    run : (B, H, W, C) float32 -> (B, H, W, K) float32, e.g. :meth:`Model.run`.
    slices : (N, H, W, C) preprocessed network inputs.
    multiple : H and W are padded to multiples of this (the network's size multiple).
    tta : 1..4 rotations, or 8 (rotations x flip).
    batch : slices per call of ``run``.

    Returns
    -------
    (N, H, W, K) float32
    """
    padded, (h, w) = pad_to_multiple(slices, multiple)
    transforms = rotations_for(tta)
    total = None
    for k, flip in transforms:
        view = np.ascontiguousarray(apply(padded, k, flip, axes=(1, 2)), dtype=np.float32)  # (N, H, W, C)
        parts = [run(view[i : i + batch]) for i in range(0, len(view), batch)]
        result = invert(np.concatenate(parts), k, flip, axes=(1, 2))
        total = result.astype(np.float32) if total is None else total + result
    assert total is not None  # rotations_for returns at least one transform
    total /= len(transforms)
    return np.ascontiguousarray(total[:, :h, :w])
