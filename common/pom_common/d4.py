"""The eight rotations and flips of an image (the dihedral group D4): one home for training and inference.

An element is ``(k, flip)``: rotate by ``k`` quarter turns in the (y, x) plane, then flip y.
Training augments with all eight; test-time augmentation averages over some of them.
"""

from __future__ import annotations

import numpy as np

from .defaults import TTA_RUNS

Element = tuple[int, bool]

#: Every element, in Pom's order: each rotation, then the same rotation flipped.
ELEMENTS: tuple[Element, ...] = tuple((k, flip) for k in range(4) for flip in (False, True))


def element(index: int) -> Element:
    """The element numbered ``index`` (0..7) in :data:`ELEMENTS`' order: ``(index // 2, index % 2 == 1)``."""
    return ELEMENTS[index]


def apply(image: np.ndarray, k: int, flip: bool, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Rotate ``image`` by ``k`` quarter turns in ``axes`` (y, x), then flip y; a view where NumPy can."""
    rotated = np.rot90(image, k, axes=axes)
    return np.flip(rotated, axis=axes[0]) if flip else rotated


def invert(image: np.ndarray, k: int, flip: bool, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Undo :func:`apply` with the same ``k``, ``flip`` and ``axes``."""
    if flip:
        image = np.flip(image, axis=axes[0])
    return np.rot90(image, -k, axes=axes)


def all_eight(images: np.ndarray) -> np.ndarray:
    """(N, H, W, ...) -> (8N, H, W, ...) float32: every image in every element, image by image (Pom's add_redundancy)."""
    out = [apply(image, k, flip) for image in images for k, flip in ELEMENTS]
    return np.ascontiguousarray(np.array(out, dtype=np.float32))


def rotations_for(runs: int) -> tuple[Element, ...]:
    """Test-time augmentation table for ``runs``.

    ``runs`` 1..4 gives that many rotations without flips (Pom's
    shared_model_runs_per_volume); 8 gives every element.

    Raises
    ------
    ValueError
        ``runs`` is not one of :data:`pom_common.defaults.TTA_RUNS`.
    """
    if runs not in TTA_RUNS:
        raise ValueError(f"TTA runs must be 1, 2, 3, 4 or 8, got {runs}")
    if runs == len(ELEMENTS):
        return ELEMENTS
    return tuple((k, False) for k in range(runs))
