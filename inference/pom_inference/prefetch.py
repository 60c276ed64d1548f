"""A tomogram read and preprocessed in a background thread, usable slab by slab as it is prepared.

The worker starts the next tomogram's :class:`Preparation` while it segments the current
one, and segments the first slabs of a tomogram while its later slabs are still being
z-filtered. Memory: the preprocessed input of at most two tomograms (this one and the next).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pom_common.errors import InputError
from pom_common.modelmeta import ModelInfo

from .inputs import Prepared, identity, input_files, read_inputs, settled_identity
from .preprocess import channel_scales, input_shape, prepare_inputs


class Cancelled(BaseException):
    """A preparation given up by :meth:`Preparation.cancel` (the worker is stopping)."""


class Preparation:
    """One tomogram's inputs, prepared by :meth:`run` in another thread.

    Wait on it with :meth:`result` (opened), :meth:`wait` (slices ready) and
    :meth:`wait_finished`; each raises the preparation's error.
    """

    def __init__(self, tomogram: Path, info: ModelInfo, channel_dirs: Sequence[str | os.PathLike] = (),
                 fallback_voxel_size: float | None = None, *, allow_voxel_size_mismatch: bool = False,
                 clock: Callable[[], float] | None = None, spare: np.ndarray | None = None) -> None:
        self.tomogram = tomogram
        self.spare = spare  # an input array no longer used, taken when it has this tomogram's shape (no new pages)
        self.info = info
        self.channel_dirs = channel_dirs
        self.fallback_voxel_size = fallback_voxel_size
        self.allow_voxel_size_mismatch = allow_voxel_size_mismatch
        self.clock = clock  # the filesystem's time: inputs modified moments ago are watched first
        self.changed = threading.Condition()
        self.prepared: Prepared | None = None
        self.ready = 0  # binned slices 0..ready are final
        self.error: BaseException | None = None
        self.finished = False
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Give the preparation up at its next slab of slices (a stopping worker waits for no whole tomogram)."""
        self.cancelled.set()

    def run(self) -> None:
        """Read, z-filter, bin and normalise; never raises (the error is given to the waiters).

        The input files' identity is taken first (after watching files modified moments ago,
        :func:`pom_inference.inputs.settled_identity`); the inputs are checked against each
        other and the model (:func:`pom_inference.inputs.read_inputs`), and each segmentation
        channel read at its full scale.
        """
        start = time.perf_counter()
        try:
            if self.cancelled.is_set():
                raise Cancelled(str(self.tomogram))
            files = input_files(self.tomogram, self.info.channels, self.channel_dirs)
            before = settled_identity(files, self.clock) if self.clock is not None else identity(files)
            read = read_inputs(self.tomogram, self.info.channels, self.channel_dirs, self.fallback_voxel_size,
                               self.info.voxel_size, self.allow_voxel_size_mismatch, files)
            b = self.info.bin_factor
            first = next(iter(read.volumes.values()))
            if min(first.shape) < b:
                raise InputError(f"{self.tomogram}: volume {first.shape} is smaller than the bin factor {b}")
            try:
                shape = input_shape(read.volumes, self.info)
            except InputError as exc:
                raise InputError(f"{self.tomogram}: {exc}") from None
            scales = channel_scales(read.volumes, self.info, {c: str(p) for c, p in read.files.items()})
            spare, self.spare = self.spare, None
            if spare is None or spare.shape != shape or spare.dtype != np.float32:
                spare = np.empty(shape, dtype=np.float32)
            inputs = spare
            prepared = Prepared(self.tomogram, inputs, read.voxel_size * b, 0.0, read.files, before,
                                sum(int(v.nbytes) for v in read.volumes.values()),
                                (int(first.shape[0]), int(first.shape[1]), int(first.shape[2])))
            with self.changed:
                self.prepared = prepared
                self.changed.notify_all()
            try:
                prepare_inputs(read.volumes, self.info, out=inputs, on_ready=self._advance, scales=scales)
            except InputError as exc:
                raise InputError(f"{self.tomogram}: {exc}") from None
            prepared.seconds = time.perf_counter() - start
        except BaseException as exc:  # given to the waiting worker, which records it as this tomogram's failure
            with self.changed:
                self.error = exc
                self.changed.notify_all()
        finally:
            with self.changed:
                self.finished = True
                self.changed.notify_all()

    def _advance(self, ready: int) -> None:
        if self.cancelled.is_set():
            raise Cancelled(str(self.tomogram))
        with self.changed:
            self.ready = ready
            self.changed.notify_all()

    def result(self) -> Prepared:
        """The tomogram opened (its input array allocated, maybe not filled yet); raises its error."""
        with self.changed:
            self.changed.wait_for(lambda: self.prepared is not None or self.error is not None or self.finished)
            if self.error is not None:
                raise self.error
            assert self.prepared is not None
            return self.prepared

    def wait(self, z1: int) -> None:
        """Block until binned slices 0..z1 are final; raises the preparation's error."""
        with self.changed:
            self.changed.wait_for(lambda: self.ready >= z1 or self.error is not None or self.finished)
            if self.error is not None:
                raise self.error

    def wait_finished(self) -> None:
        """Block until :meth:`run` returned; raises the preparation's error."""
        with self.changed:
            self.changed.wait_for(lambda: self.finished)
            if self.error is not None:
                raise self.error


def sample_inputs(tomogram: Path, info: ModelInfo, channel_dirs: Sequence[str | os.PathLike] = (),
                  fallback_voxel_size: float | None = None, count: int = 4) -> np.ndarray:
    """The middle ``count`` binned slices of ``tomogram``, preprocessed as for segmentation ((n, ny, nx, C) float32).

    Only the input slices those need are read, unless a channel is standardised over the
    whole volume (``volume``).

    Raises
    ------
    InputError
        The tomogram or a channel cannot be read or is unusable.
    """
    read = read_inputs(tomogram, info.channels, channel_dirs, fallback_voxel_size, info.voxel_size,
                       allow_voxel_size_mismatch=True)  # (the slab only calibrates; each tomogram is checked itself)
    scales = channel_scales(read.volumes, info)
    shape = input_shape(read.volumes, info)
    start = max(0, shape[0] // 2 - count // 2)
    stop = min(shape[0], start + count)
    inputs = np.empty(shape, dtype=np.float32) if _needs_whole(info) else None
    if inputs is not None:
        prepare_inputs(read.volumes, info, out=inputs, scales=scales)
        return np.ascontiguousarray(inputs[start:stop])
    return prepare_inputs(read.volumes, info, z_range=(start, stop), scales=scales)


def _needs_whole(info: ModelInfo) -> bool:
    from pom_common.normalise import VOLUME, canonical

    return any(canonical(info.normalisation_of(name)) == VOLUME for name in info.channels)
