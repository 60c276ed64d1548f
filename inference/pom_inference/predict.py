"""Prediction of preprocessed slices: padding, test-time augmentation, batching (arrays only).

:func:`predict_slices` is the NumPy definition: pad, transform, run, transform back, average.
:class:`SlicePredictor` computes the same bits for the file pipeline with the kernels of
:mod:`pom_inference.tta`: no copy of the volume per transform, the network's outputs written
into buffers it reuses, and the average written straight into class planes of the output type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, overload

import numpy as np

from pom_common.d4 import rotations_for
from pom_common.defaults import TTA

from . import tta as d4
from .preprocess import pad_to_multiple

#: Slices per ONNX Runtime call on the CPU (and on a GPU whose free memory cannot be read).
DEFAULT_BATCH = 8
#: Most bytes of network outputs held at once for the TTA average: two sets of all transforms
#: of a batch (one averaged while the next is computed); a larger batch is cut down to fit.
#: Part of the memory bound (README).
OUTPUT_BYTES = 256 * 2**20
#: Output conversions by writer type.
KINDS = {"float32": (d4.FLOAT32, np.float32), "uint8": (d4.UINT8, np.int8)}




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
        view = np.ascontiguousarray(d4.forward(padded, k, flip), dtype=np.float32)
        parts = [run(view[i : i + batch]) for i in range(0, len(view), batch)]
        result = d4.inverse(np.concatenate(parts), k, flip)
        total = result.astype(np.float32) if total is None else total + result
    assert total is not None  # rotations_for returns at least one transform
    total /= len(transforms)
    return np.ascontiguousarray(total[:, :h, :w])


class Runner(Protocol):
    """What :class:`SlicePredictor` needs of a model (see :class:`pom_inference.session.Model`)."""

    def run_into(self, batch: np.ndarray, out: np.ndarray) -> None:
        """(B, H, W, C) float32 -> (B, H, W, K) float32 written into ``out``."""


class SlicePredictor:
    """Segment batches of preprocessed (n, h, w, C) slices into class planes, as :func:`predict_slices` does.

    Parameters
    ----------
    runner : the model (``run_into``).
    shape : (h, w, C) of every slice.
    multiple : the network's size multiple (h, w are padded to it, reflected).
    n_classes : K, the network's output channels.
    tta : 1..4 rotations, or 8 (rotations x flip).
    batch : slices per network call (cut down so that two batches' outputs fit :data:`OUTPUT_BYTES`).
    classes : indices of the classes to write, in output order.
    kind : ``float32`` (probabilities) or ``uint8`` (0..127 in signed bytes, as the uint8 writer stores them).

    Two sets of buffers (network outputs, planes) alternate: the planes returned by one call
    stay valid until the call after next. With ``deferred=True`` a call runs the network and
    returns a function that averages its outputs into the planes (in another thread, while the
    next batch is computed); that function must have run before the call after next.
    """

    def __init__(self, runner: Runner, shape: tuple[int, int, int], multiple: int, n_classes: int, tta: int = 4,
                 batch: int = DEFAULT_BATCH, classes: Sequence[int] | None = None, kind: str = "float32") -> None:
        h, w, c = shape
        self.runner = runner
        self.shape = (h, w, c)
        self.padded = (h + (-h) % multiple, w + (-w) % multiple)
        self.transforms = rotations_for(tta)
        self.n_classes = n_classes
        self.classes = np.asarray(range(n_classes) if classes is None else classes, dtype=np.int64)
        self.kind, dtype = KINDS[kind]
        pixels = self.padded[0] * self.padded[1]
        per_slice = len(self.transforms) * pixels * n_classes * 4
        self.batch = int(max(1, min(batch, OUTPUT_BYTES // max(1, 2 * per_slice))))
        self.inputs = np.empty(self.batch * pixels * c, dtype=np.float32)
        self.padded_inputs = np.empty((self.batch, *self.padded, c), dtype=np.float32) if (h, w) != self.padded else None
        self.outputs = [np.empty((len(self.transforms), self.batch * pixels * n_classes), dtype=np.float32)
                        for _ in range(2)]
        self.planes = [np.empty((len(self.classes), self.batch, h, w), dtype=dtype) for _ in range(2)]
        self.calls = 0
        self._compile()

    def _compile(self) -> None:
        """Compile (or load from numba's cache) the average's kernel here, in the caller's thread.

        A deferred average runs in another thread, and a worker that is stopped waits for that
        thread: it must never be in the middle of a first compilation (tens of seconds on a busy
        machine). A full batch and a partial one are different array layouts to numba.
        """
        for n in sorted({self.batch, 1}):
            d4.combine(self.outputs[0], self.padded, self.transforms, self.n_classes, self.classes, self.kind,
                       self.planes[0][:, :n])

    def frame(self, transform: tuple[int, bool]) -> tuple[int, int]:
        """(Ht, Wt): the padded size after ``transform``."""
        hp, wp = self.padded
        return (wp, hp) if transform[0] % 2 else (hp, wp)

    @overload
    def __call__(self, slices: np.ndarray, deferred: Literal[False] = False) -> np.ndarray: ...

    @overload
    def __call__(self, slices: np.ndarray, deferred: bool) -> np.ndarray | Callable[[], np.ndarray]: ...

    def __call__(self, slices: np.ndarray, deferred: bool = False) -> np.ndarray | Callable[[], np.ndarray]:
        """(n, h, w, C) float32 slices, n <= ``batch`` -> (Kc, n, h, w) planes (a reused buffer).

        ``deferred``: run the network only; return the function that makes the planes.
        """
        n = len(slices)
        if slices.shape[1:] != self.shape or n > self.batch:
            raise ValueError(f"slices {slices.shape} do not fit a predictor of {self.shape} x {self.batch}")
        padded = np.ascontiguousarray(slices, dtype=np.float32)
        if self.padded_inputs is not None:
            padded = d4.pad_into(padded, self.padded_inputs[:n])
        which = self.calls % 2
        outputs = self.outputs[which]
        for t, transform in enumerate(self.transforms):
            ht, wt = self.frame(transform)
            if transform == (0, False):  # the padded slices as they are
                x = padded
            else:
                x = d4.gather(padded, transform, self.inputs[: n * ht * wt * self.shape[2]].reshape(n, ht, wt, self.shape[2]))
            out = outputs[t, : n * ht * wt * self.n_classes].reshape(n, ht, wt, self.n_classes)
            self.runner.run_into(x, out)
        planes = self.planes[which][:, :n]
        self.calls += 1

        def average() -> np.ndarray:
            return d4.combine(outputs, self.padded, self.transforms, self.n_classes, self.classes, self.kind, planes)

        return average if deferred else average()
