"""z-consistency: class probabilities averaged over neighbouring binned slices, slab by slab (pure arrays).

A model whose metadata says ``z_smooth`` w > 1 (odd) has each output slice z replaced by the
mean of slices z - r .. z + r, r = (w - 1) // 2, of the network's output (fewer at the
volume's first and last r slices: only those that exist). Each slice is segmented on its
own, so a call that flickers from one slice to the next (noise in an empty slab, the
streaks of a gold bead) is damped; a feature several slices thick is kept. The mean is
per class, so it commutes with choosing classes; integer outputs (the uint8 writer's codes)
are averaged and rounded. :class:`ZSmoother` gives the same bits whether the slices come
all at once (:func:`pom_inference.segment`) or a slab at a time (the file pipeline).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class ZSmoother:
    """Running mean over ``window`` slices along ``axis``: fed slabs in order, gives slabs whose slices are final.

    Parameters
    ----------
    window : odd number of slices averaged (1: the slices as they are).
    nz : slices in the volume (the last ones are final only when it is reached).
    axis : the slice axis of the slabs.
    """

    def __init__(self, window: int, nz: int, axis: int = 0) -> None:
        if window < 1 or window % 2 == 0:
            raise ValueError(f"z_smooth window must be an odd number >= 1, got {window}")
        self.radius, self.nz, self.axis = (window - 1) // 2, nz, axis
        self.slices: dict[int, np.ndarray] = {}  # slice -> float32 plane, kept while a later slice needs it
        self.received = 0  # slices 0..received - 1 have come
        self.emitted = 0  # slices 0..emitted - 1 have gone out
        self.dtype: np.dtype | None = None

    def push(self, z0: int, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Slices z0.. of ``block``; returns the (z0, block) pieces now final (possibly none)."""
        if z0 != self.received:
            raise ValueError(f"slabs must come in order: expected slice {self.received}, got {z0}")
        self.dtype = block.dtype
        for i in range(block.shape[self.axis]):
            self.slices[z0 + i] = np.take(block, i, axis=self.axis).astype(np.float32)
        self.received = z0 + block.shape[self.axis]
        ready = self.nz if self.received >= self.nz else self.received - self.radius
        return self._emit(ready)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """The remaining slices (the volume's last ones, when fewer than ``nz`` came)."""
        return self._emit(self.received)

    def _emit(self, end: int) -> list[tuple[int, np.ndarray]]:
        if end <= self.emitted:
            return []
        last = self.received - 1
        out = []
        for z in range(self.emitted, end):
            lo, hi = max(0, z - self.radius), min(last, z + self.radius)
            total = self.slices[lo].copy()
            for k in range(lo + 1, hi + 1):
                total += self.slices[k]
            out.append(total / np.float32(hi - lo + 1))
        start, self.emitted = self.emitted, end
        for z in [z for z in self.slices if z < end - self.radius]:
            del self.slices[z]
        block = np.stack(out, axis=self.axis)
        if self.dtype is not None and np.issubdtype(self.dtype, np.integer):
            block = np.rint(block)
        return [(start, block.astype(self.dtype or np.float32))]


def smooth_slabs(slabs: Iterator[tuple[int, np.ndarray]], window: int, nz: int,
                 axis: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """The (z0, block) slabs of ``slabs`` averaged over ``window`` slices (themselves when ``window`` is 1)."""
    if window == 1:
        yield from slabs
        return
    smoother = ZSmoother(window, nz, axis)
    for z0, block in slabs:
        yield from smoother.push(z0, block)
    yield from smoother.finish()


class Sink(Protocol):
    """What :class:`SmoothedSink` writes to (an output writer's slab sink)."""

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store planes (Kc, n, h, w) of binned slices z0..z0+n."""


class SmoothedSink:
    """A sink that averages planes (Kc, n, h, w) over ``window`` slices before ``sink`` stores them.

    Planes are copied when written (the predictor reuses its buffers); call :meth:`finish`
    after the last slab.
    """

    def __init__(self, sink: Sink, window: int, nz: int) -> None:
        self.sink = sink
        self.smoother = ZSmoother(window, nz, axis=1)

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Take planes of binned slices z0..z0+n; store those now final."""
        for start, block in self.smoother.push(z0, planes):
            self.sink.write(start, block)

    def finish(self) -> None:
        """Store the last slices."""
        for start, block in self.smoother.finish():
            self.sink.write(start, block)
