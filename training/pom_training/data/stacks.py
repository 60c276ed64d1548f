"""The tif stacks of the training data: one writer, one reader, one shape check.

A stack is (N, h, w): N images of one channel (or labels, or painted codes), written
atomically; a stack of 3 or 4 images is still N grey images, never an RGB picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from pom_common.atomic import atomic_path
from pom_common.errors import InputError

#: The command that writes the phase-1 stacks, and the one that writes phase 2's.
PHASE1_STEP, PHASE2_STEP = "pom single initialize", "pom shared initialize"


def write_stack(path: Path, images: Sequence[np.ndarray] | np.ndarray, dtype: type = np.float32) -> None:
    """Write a (n, h, w) tif stack atomically (float32, or ``dtype``)."""
    array: np.ndarray = np.asarray(images, dtype=dtype)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack")


def read_stack(path: Path, step: str = PHASE1_STEP) -> np.ndarray:
    """A training tif stack as float32.

    Raises
    ------
    InputError
        Naming the file when it is missing (run ``step`` first) or unreadable.
    """
    try:
        return tifffile.imread(path).astype(np.float32)
    except FileNotFoundError:
        raise InputError(f"{path}: not found (run '{step}' first)") from None
    except Exception as exc:
        raise InputError(f"{path}: not a readable tif stack ({exc})") from None


def read_codes(path: Path) -> np.ndarray:
    """A painted code stack (N, h, w) uint8 (``<feature>_painted.tif``, ``extra/painted.tif``).

    Raises
    ------
    InputError
        Naming the file when it is missing (run ``pom single initialize`` again) or unreadable.
    """
    try:
        array = tifffile.imread(path)
        return np.asarray(array, dtype=np.uint8).reshape(-1, *array.shape[-2:])
    except FileNotFoundError:
        raise InputError(f"{path}: not found; run '{PHASE1_STEP}' again to record the painted labels") from None
    except Exception as exc:
        raise InputError(f"{path}: not a readable tif stack ({exc})") from None


def check_shape(path: Path, shape: tuple[int, ...], reference: Path, expected: tuple[int, ...]) -> None:
    """Refuse a stack whose shape is not its reference stack's.

    Raises
    ------
    InputError
        Naming ``path``, both shapes and the step to run again.
    """
    if tuple(shape) != tuple(expected):
        raise InputError(f"{path}: {shape[0] if shape else 0} images of {'x'.join(map(str, shape[1:]))}, "
                         f"{reference.name} has {expected[0]} of {'x'.join(map(str, expected[1:]))}; the phase-1 "
                         f"stacks are out of step: run '{PHASE1_STEP}' again")


def read_channels(paths: Sequence[Path], shape: tuple[int, ...], reference: Path) -> np.ndarray:
    """(N, h, w, C) from one (N, h, w) stack per channel, each checked against ``reference``'s ``shape``."""
    stacks = []
    for path in paths:
        stack = read_stack(path)
        check_shape(path, stack.shape, reference, shape)
        stacks.append(stack)
    return np.stack(stacks, axis=-1)
