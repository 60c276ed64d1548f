"""z-averaging and binning, as Pom preprocesses volumes, in numba.

``zfilter_bin(v, z_sum, b)`` equals ``scipy.ndimage.convolve1d(v, ones(w) / w, axis=0,
mode='nearest')`` (w = 2 * z_sum + 1) followed by ``b x b x b`` mean binning with the odd
edges cropped (Pom's ``bin_vol``), without copying the volume to float64: each input
slice is read once, binned in x and y, and the z window is applied to the binned slices
with per-slice weights (the nearest-edge rule folded into the weights).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .jit import compiled

#: Input slices handed to the kernel at once (bounds the float32 copy of float16 input).
_CHUNK = 16
#: Bytes of a memory-mapped input read between releases of its pages, so the resident
#: memory of a worker does not grow with the size of the tomogram.
_DROP_BYTES = 256 * 2**20


def _drop_pages(mapping: Any) -> None:
    """Release the (clean, file-backed) pages of a read-only memory map from this process."""
    import mmap

    try:
        mapping.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass
def _populate(mapping: Any, volume: np.ndarray, row0: int, row1: int) -> None:
    """Map rows row0..row1 of every slice of a memory-mapped volume in one call per slice.

    Faulting the pages in one by one from the kernel's threads costs more than the reading.
    """
    import mmap

    base = volume.ctypes.data - _address(mapping)
    page = mmap.PAGESIZE
    for z in range(volume.shape[0]):
        start = base + z * volume.strides[0] + row0 * volume.strides[1]
        end = base + z * volume.strides[0] + row1 * volume.strides[1]
        aligned = start // page * page
        try:
            mapping.madvise(_MADV_POPULATE_READ, aligned, end - aligned)
        except (AttributeError, OSError, ValueError):
            return  # an older kernel: the pages fault in as they are read


def _address(mapping: Any) -> int:
    return int(np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data)


#: Linux 5.14's madvise(MADV_POPULATE_READ): map a range's pages now.
_MADV_POPULATE_READ = 22
_NUMBA_NATIVE = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64)


@functools.cache
def _kernels() -> tuple[Any, Any, Any]:
    """Compile lazily (never at import); cache on disk, or in memory when no cache folder is writable."""
    import numba

    def build(cache: bool) -> tuple[Any, Any, Any]:
        @numba.njit(parallel=True, cache=cache)
        def bin_xy(chunk: Any, b: Any, out: Any) -> None:
            # chunk (n, ny, nx) any numeric dtype -> out (n, ny // b, nx // b) float32 block sums
            n, ny, nx = chunk.shape
            oy, ox = ny // b, nx // b
            for i in numba.prange(n * oy):
                k = i // oy
                y = i % oy
                acc = np.zeros(ox, dtype=np.float64)
                for dy in range(b):
                    row = chunk[k, y * b + dy]
                    for dx in range(b):
                        for x in range(ox):  # contiguous, vectorised
                            acc[x] += row[x * b + dx]
                for x in range(ox):
                    out[k, y, x] = acc[x]

        @numba.njit(parallel=True, cache=cache)
        def combine_z(binned: Any, weights: Any, first: Any, scale: Any, out: Any) -> None:
            # out[o] = scale * sum_j weights[o, j] * binned[first[o] + j]
            no, oy, ox = out.shape
            nw = weights.shape[1]
            for i in numba.prange(no * oy):
                o = i // oy
                y = i % oy
                acc = np.zeros(ox, dtype=np.float64)
                for j in range(nw):
                    w = weights[o, j]
                    if w != 0.0:
                        row = binned[first[o] + j, y]
                        for x in range(ox):  # contiguous, vectorised
                            acc[x] += w * row[x]
                for x in range(ox):
                    out[o, y, x] = acc[x] * scale

        @numba.njit(parallel=True, cache=cache)
        def fused(volume: Any, b: Any, weights: Any, first: Any, last_plane: Any, scale: Any, y0: Any, y1: Any,
                  out: Any) -> None:
            # For output rows y0..y1: stream every input slice once through a small ring of
            # binned rows (kept in cache), emitting output rows as their windows complete.
            nz = volume.shape[0]
            ox = out.shape[2]
            no = out.shape[0]
            span = weights.shape[1]
            for y in numba.prange(y0, y1):
                ring = np.empty((span, ox), dtype=np.float32)
                acc = np.empty(ox, dtype=np.float64)
                o = 0
                for p in range(nz):
                    if o >= no:
                        break
                    slot = ring[p % span]
                    if b == 2:  # the common case, written out so it vectorises
                        r0 = volume[p, 2 * y]
                        r1 = volume[p, 2 * y + 1]
                        for x in range(ox):
                            slot[x] = (np.float32(r0[2 * x]) + np.float32(r0[2 * x + 1])) + (
                                np.float32(r1[2 * x]) + np.float32(r1[2 * x + 1]))
                    else:
                        for x in range(ox):
                            slot[x] = 0.0
                        for dy in range(b):
                            row = volume[p, y * b + dy]
                            for dx in range(b):
                                for x in range(ox):
                                    slot[x] += row[x * b + dx]
                    while o < no and last_plane[o] == p:
                        for x in range(ox):
                            acc[x] = 0.0
                        for j in range(span):
                            w = weights[o, j]
                            if w != 0.0:
                                src = ring[(first[o] + j) % span]
                                for x in range(ox):
                                    acc[x] += w * src[x]
                        dst = out[o, y]
                        for x in range(ox):
                            dst[x] = acc[x] * scale
                        o += 1

        return bin_xy, combine_z, fused

    return compiled(build)


def z_weights(nz: int, z_sum: int, bin_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output slice, the weight of each input slice (window counts, nearest edges).

    Returns
    -------
    weights : (nz // b, n_span) float64
        Integer counts: how often input slice ``first[o] + j`` enters output slice ``o``.
    first : (nz // b,) int64
        Index of the first input slice contributing to each output slice.
    """
    nzo = nz // bin_factor
    span = min(bin_factor + 2 * z_sum, nz)
    weights = np.zeros((nzo, span), dtype=np.float64)
    first = np.zeros(nzo, dtype=np.int64)
    for o in range(nzo):
        lo = max(o * bin_factor - z_sum, 0)
        first[o] = lo
        for dz in range(bin_factor):
            for k in range(-z_sum, z_sum + 1):
                src = min(max(o * bin_factor + dz + k, 0), nz - 1)
                weights[o, src - lo] += 1.0
    # Keep every window inside the array: shift its start down (trailing weights are 0).
    n_span = weights.shape[1]
    for o in range(nzo):
        if first[o] + n_span > nz:
            shift = first[o] + n_span - nz
            weights[o] = np.roll(weights[o], shift)
            first[o] -= shift
    return weights, first


def zfilter_bin(volume: np.ndarray, z_sum: int, bin_factor: int = 2, out: np.ndarray | None = None,
                z_range: tuple[int, int] | None = None) -> np.ndarray:
    """Running mean over 2 * z_sum + 1 slices (nearest edges), then bin_factor^3 mean binning.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        int8, uint8, int16, uint16, float16 or float32; a memory map is read slice by slice.
    z_sum : int
        Half window; the window is 2 * z_sum + 1 slices.
    bin_factor : int
        Binning in z, y and x; odd edges are cropped.
    out : (nz // b, ny // b, nx // b) float32, optional
        Where to write the result (e.g. one channel of the network's input); may be strided.
    z_range : (o0, o1), optional
        Compute only output slices o0..o1 (into ``out[o0:o1]``; the rest of ``out`` is left
        as it is): a volume can be filtered a slab at a time, reading only the input slices
        those need. Each output slice gets the same bits either way.

    Returns
    -------
    (nz // b, ny // b, nx // b) float32: ``out`` when given.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a (nz, ny, nx) volume, got shape {volume.shape}")
    if z_sum < 0 or bin_factor < 1:
        raise ValueError(f"z_sum must be >= 0 and bin_factor >= 1, got {z_sum}, {bin_factor}")
    mapping = getattr(volume, "_mmap", None)  # np.memmap: its pages can be dropped after use
    volume = np.asarray(volume)  # a memmap stays a view on the file
    nz, ny, nx = volume.shape
    b = bin_factor
    weights, first = z_weights(nz, z_sum, b)
    nzo = nz // b
    if out is None:
        out = np.empty((nzo, ny // b, nx // b), dtype=np.float32)
    elif out.shape != (nzo, ny // b, nx // b) or out.dtype != np.float32:
        raise ValueError(f"out: expected float32 {(nzo, ny // b, nx // b)}, got {out.dtype} {out.shape}")
    if nzo == 0 or ny < b or nx < b:
        return out
    o0, o1 = (0, nzo) if z_range is None else (max(0, int(z_range[0])), min(nzo, int(z_range[1])))
    if o0 >= o1:
        return out
    if (o0, o1) != (0, nzo):  # the input slices these outputs need, and the windows relative to them
        p0, p1 = int(first[o0]), int(first[o1 - 1]) + weights.shape[1]
        volume, weights, first, out_all = volume[p0:p1], weights[o0:o1], first[o0:o1] - p0, out
        _zfilter_into(volume, mapping, weights, first, b, z_sum, o1 - o0, out[o0:o1])
        return out_all
    _zfilter_into(volume, mapping, weights, first, b, z_sum, nzo, out)
    return out


def _zfilter_into(volume: np.ndarray, mapping: Any, weights: np.ndarray, first: np.ndarray, b: int, z_sum: int,
                  nzo: int, out: np.ndarray) -> None:
    """Output slices 0..nzo of (volume, weights, first) into ``out``."""
    bin_xy, combine_z, fused = _kernels()
    nz, ny, nx = volume.shape
    scale = 1.0 / (b * b * b * (2 * z_sum + 1))
    if volume.dtype.type in _NUMBA_NATIVE:
        # Last input slice each output slice needs (its window is complete after it).
        last_plane = np.array([first[o] + np.nonzero(weights[o])[0].max() for o in range(nzo)], dtype=np.int64)
        rows = ny // b
        if volume.dtype.isnative:
            block = rows if mapping is None else max(1, _DROP_BYTES // max(1, nz * b * volume.strides[1]))
        else:  # MRC allows big-endian files: the kernel reads native copies of a few rows at a time
            block = max(1, _DROP_BYTES // max(1, nz * b * nx * volume.dtype.itemsize))
        for y0 in range(0, rows, block):
            y1 = min(rows, y0 + block)
            if volume.dtype.isnative:
                if mapping is not None:
                    _populate(mapping, volume, y0 * b, y1 * b)
                fused(volume, b, weights, first, last_plane, scale, y0, y1, out)
            else:
                part = volume[:, y0 * b : y1 * b].astype(volume.dtype.newbyteorder("="))
                fused(part, b, weights, first, last_plane, scale, 0, y1 - y0, out[:, y0:y1])
            if mapping is not None:
                _drop_pages(mapping)
        return
    # Only slices that some output slice uses are binned (odd z edges excluded).
    last_needed = int(first[-1]) + weights.shape[1]
    binned = np.empty((last_needed, ny // b, nx // b), dtype=np.float32)
    for start in range(0, last_needed, _CHUNK):
        chunk = volume[start : start + _CHUNK]
        chunk = chunk[: min(_CHUNK, last_needed - start)]
        chunk = chunk.astype(np.float32)  # float16: no numba kernel reads it directly
        bin_xy(chunk, b, binned[start : start + chunk.shape[0]])
    combine_z(binned, weights, first, scale, out)


def zfilter_bin_reference(volume: np.ndarray, z_sum: int, bin_factor: int = 2) -> np.ndarray:
    """The scipy definition (Pom's code path), for tests and benchmarks. Needs scipy."""
    from scipy.ndimage import convolve1d

    w = 2 * z_sum + 1
    filtered = convolve1d(np.asarray(volume, dtype=np.float64), np.ones(w) / w, axis=0, mode="nearest")
    b = bin_factor
    nz, ny, nx = filtered.shape
    filtered = filtered[: nz // b * b, : ny // b * b, : nx // b * b]
    return filtered.reshape(nz // b, b, ny // b, b, nx // b, b).mean(axis=(1, 3, 5)).astype(np.float32)
