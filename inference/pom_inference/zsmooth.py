"""z-consistency: class probabilities averaged over neighbouring binned slices, slab by slab (arrays; one numba kernel).

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

import functools
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from pom_common.jit import compiled


@functools.cache
def _kernel() -> Any:
    """The numba window mean ``(source, base, z0, z1, radius, last, out)``; compiled lazily, cached on disk."""
    import numba

    def build(cache: bool) -> Any:
        @numba.njit(nogil=True, cache=cache, boundscheck=False)
        def window_means(source: Any, base: Any, z0: Any, z1: Any, radius: Any, last: Any, out: Any) -> None:
            # source (m, P) float32: slices base..base + m - 1; out (z1 - z0, P): the mean of slices
            # max(0, z - radius)..min(last, z + radius) for z in z0..z1, added in order in float32
            # ((x[lo] + x[lo + 1]) + ...) and divided by the count: what NumPy gives slice by slice.
            for z in range(z0, z1):
                lo, hi = max(0, z - radius), min(last, z + radius)
                count = np.float32(hi - lo + 1)
                row = out[z - z0]  # one slice at a time: it stays in the cache while its window is added
                row[:] = source[lo - base]
                for k in range(lo + 1, hi + 1):
                    add = source[k - base]
                    for p in range(row.size):
                        row[p] += add[p]
                for p in range(row.size):
                    row[p] = row[p] / count

        return window_means

    return compiled(build)


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
        self.held: np.ndarray | None = None  # float32 slices held_start..received - 1 along axis (a later slice needs them)
        self.whole: np.ndarray | None = None  # the array ``held`` is a part of
        self.spares: list[np.ndarray] = []
        self.held_start = 0
        self.received = 0  # slices 0..received - 1 have come
        self.emitted = 0  # slices 0..emitted - 1 have gone out
        self.dtype: np.dtype | None = None

    def _along(self, array: np.ndarray, z0: int, z1: int, base: int) -> np.ndarray:
        """Slices z0..z1 of ``array``, whose first slice along the axis is slice ``base``."""
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(z0 - base, z1 - base)
        return array[tuple(index)]

    def push(self, z0: int, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Slices z0.. of ``block``; returns the (z0, block) pieces now final (possibly none)."""
        if z0 != self.received:
            raise ValueError(f"slabs must come in order: expected slice {self.received}, got {z0}")
        self.dtype = block.dtype
        n = block.shape[self.axis]
        kept = 0 if self.held is None else self.held.shape[self.axis]
        shape = list(block.shape)
        shape[self.axis] = kept + n
        # the slices still needed, then this block (a copy: the caller reuses its buffers); two arrays take turns
        spare = self.spares.pop() if self.spares else None
        held = spare if spare is not None and list(spare.shape) == shape else np.empty(shape, dtype=np.float32)
        if self.held is not None:
            self._along(held, 0, kept, 0)[...] = self.held
        if self.whole is not None:
            self.spares.append(self.whole)
        self.whole = held
        self._along(held, kept, kept + n, 0)[...] = block
        self.held, self.held_start = held, z0 - kept
        self.received = z0 + n
        ready = self.nz if self.received >= self.nz else self.received - self.radius
        return self._emit(ready)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """The remaining slices (the volume's last ones, when fewer than ``nz`` came)."""
        return self._emit(self.received)

    def _emit(self, end: int) -> list[tuple[int, np.ndarray]]:
        if end <= self.emitted or self.held is None:
            return []
        r, last, held, base = self.radius, self.received - 1, self.held, self.held_start
        start = self.emitted
        shape = list(held.shape)
        shape[self.axis] = end - start
        block = np.empty(shape, dtype=np.float32)
        lead = held.shape[: self.axis]  # the slice axis comes first in held[index] and block[index]
        for index in np.ndindex(*lead):
            source, target = held[index], block[index]
            _kernel()(source.reshape(source.shape[0], -1), base, start, end, r, last,
                      target.reshape(target.shape[0], -1))
        self.emitted = end
        drop = max(0, min(end - r, self.received) - base)  # slices no later window needs
        self.held = self._along(held, base + drop, self.received, base)
        self.held_start = base + drop
        if self.dtype is not None and np.issubdtype(self.dtype, np.integer):
            block = np.rint(block)
        return [(start, block.astype(self.dtype or np.float32, copy=False))]


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
        # compiled (or loaded) here, in the caller's thread: a stopping worker waits for the writing thread
        _kernel()(np.zeros((1, 1), np.float32), 0, 0, 1, 0, 0, np.zeros((1, 1), np.float32))

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Take planes of binned slices z0..z0+n; store those now final."""
        for start, block in self.smoother.push(z0, planes):
            self.sink.write(start, block)

    def finish(self) -> None:
        """Store the last slices."""
        for start, block in self.smoother.finish():
            self.sink.write(start, block)
