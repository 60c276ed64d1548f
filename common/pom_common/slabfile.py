"""An MRC file's data block filled slab by slab (``os.pwrite``), with its header statistics streamed.

No mrcfile here: :func:`pom_common.mrcio.new_volume` writes the header and hands the open
file to a :class:`SlabFile`, then puts the statistics it computed into the header.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .sums import StreamStd, StreamSum

logger = logging.getLogger(__name__)

#: Bytes read back at a time for the header statistics' second pass.
STATS_READ_BYTES = 16 * 2**20


class SlabFile:
    """The data block of an MRC file being filled slab by slab with ``os.pwrite``.

    The header statistics are accumulated from the slabs as they are written in order:
    ``min``, ``max`` and ``mean(dtype=float32)`` are the bits mrcfile's ``update_header_stats``
    computes from the whole array; ``rms`` is the standard deviation taken in one pass in
    float64 (:class:`pom_common.sums.StreamStd`), within a few float32 ulps of mrcfile's
    float32 two-pass value, so no pass over the file is left for the end. Slabs written out of
    order are read back once, a few MiB at a time. Memory stays that of one slab whatever
    the volume's size.
    """

    def __init__(self, fd: int, offset: int, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.fd = fd
        self.offset = offset
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.slice_bytes = shape[1] * shape[2] * self.dtype.itemsize
        self.size = shape[0] * shape[1] * shape[2]
        self.next_z = 0  # slabs written in order up to here (the streamed statistics cover them)
        self.in_order = True
        self.dmin: Any = None
        self.dmax: Any = None
        self.total = StreamSum(self.size, np.float32, buffered=self.dtype != np.float32)
        self.spread = StreamStd()
        self._stats: tuple[Any, Any, Any, Any] | None = None
        # the sums' kernels compiled (or loaded) in the caller's thread, not in a writing thread a stop waits for
        StreamSum(1, np.float32, buffered=self.dtype != np.float32).feed(np.zeros(1, self.dtype))
        StreamStd().feed(np.zeros(1, self.dtype))

    def write(self, z0: int, block: np.ndarray) -> None:
        """Store ``block`` (n, ny, nx) at slices z0..z0 + n (cast to the file's dtype if needed)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 3 or block.shape[1:] != self.shape[1:] or not 0 <= z0 <= self.shape[0] - len(block):
            raise ValueError(f"slab {block.shape} at z {z0} does not fit a volume of {self.shape}")
        view = memoryview(block.data).cast("B")
        position = self.offset + z0 * self.slice_bytes
        while view:  # pwrite may write less than asked
            written = os.pwrite(self.fd, view, position)
            view, position = view[written:], position + written
        self._stats = None
        if z0 == self.next_z and self.in_order:
            self._accumulate(block)
            self.next_z += len(block)
        else:
            self.in_order = False

    def __setitem__(self, z: int | slice, value: Any) -> None:
        """``volume[z] = value`` or ``volume[z0:z1] = value`` (slices along z only)."""
        z0, z1, step = (z.indices(self.shape[0]) if isinstance(z, slice) else (z, z + 1, 1))
        if step != 1:
            raise ValueError("slabs must be contiguous in z")
        self.write(z0, np.broadcast_to(np.asarray(value, dtype=self.dtype), (z1 - z0, *self.shape[1:])))

    def _accumulate(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        low, high = block.min(), block.max()
        self.dmin = low if self.dmin is None else np.minimum(self.dmin, low)  # NaN wins, as in NumPy's min
        self.dmax = high if self.dmax is None else np.maximum(self.dmax, high)
        self.total.feed(block)
        self.spread.feed(block)

    def _read_back(self) -> Iterator[np.ndarray]:
        """The data block, a few MiB at a time (memory-mapped; each part's pages released after use)."""
        import mmap

        mapping = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        try:
            per = max(1, STATS_READ_BYTES // self.dtype.itemsize)
            page = mmap.PAGESIZE
            for start in range(0, self.size, per):
                count = min(per, self.size - start)
                offset = self.offset + start * self.dtype.itemsize
                part: np.ndarray = np.frombuffer(mapping, dtype=self.dtype, count=count, offset=offset)
                yield part
                del part
                low = offset // page * page
                with contextlib.suppress(OSError, ValueError):
                    mapping.madvise(mmap.MADV_DONTNEED, low, offset + count * self.dtype.itemsize - low)
        finally:
            try:
                mapping.close()
            except BufferError:  # a view is still alive (an error inside the caller): the GC closes it
                pass

    def header_stats(self) -> tuple[Any, Any, Any, Any]:
        """(dmin, dmax, dmean, rms) as mrcfile's ``update_header_stats`` computes them (once; then remembered)."""
        if self._stats is None:
            self._stats = self._header_stats()
        return self._stats

    def _header_stats(self) -> tuple[Any, Any, Any, Any]:
        if self.size == 0:
            return 0, -1, -2, -1
        if not (self.in_order and self.next_z == self.shape[0]):  # written out of order: one pass over the file
            self.dmin = self.dmax = None
            self.total = StreamSum(self.size, np.float32, buffered=self.dtype != np.float32)
            self.spread = StreamStd()
            for part in self._read_back():
                self._accumulate(part)
        mean = np.float32(np.float64(self.total.result()) / np.float64(self.size))
        rms = np.float32(self.spread.result())
        if np.isnan(self.dmin) or np.isinf(self.dmin) or np.isinf(self.dmax):
            logger.warning("an output holds NaN or infinite values")
        return np.float32(self.dmin), np.float32(self.dmax), mean, rms
