"""Test-time augmentation: the D4 transforms of (N, H, W, C) images, their inverses, and numba kernels.

:func:`forward` and :func:`inverse` are the NumPy definitions (the reference the tests
compare with). The kernels do the same work in one pass each, without temporaries:

* :func:`pad_into` and :func:`gather` pad a batch to the network's size multiple and apply
  a transform, writing the network's input buffer (NumPy's strided copies);
* :func:`combine` reads the network's outputs of every transform, undoes each transform,
  averages them in the order NumPy adds them (so the bits are the same), crops the padding,
  converts to the output type and writes one plane per class (class-major, the layout of
  the output files).

A transform maps pixel (y, x) of a padded (Hp, Wp) image to (y', x') of the transformed
image by an integer affine map, ``y' = a0 + a1 y + a2 x``, ``x' = a3 + a4 y + a5 x``
(:func:`frame_map`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pom_common.d4 import rotations_for
from pom_common.jit import compiled

Transform = tuple[int, bool]  # (quarter turns in (H, W), flip H afterwards)
#: Output conversions of :func:`combine`: probabilities as float32, or 0..127 signed bytes (uint8 writer).
FLOAT32, UINT8 = 0, 1
#: Rows of a class plane that :func:`combine` assembles at once (its working set stays in the cache).
_ROWS = 16

__all__ = ["FLOAT32", "UINT8", "combine", "forward", "frame_map", "gather", "inverse", "pad_index", "pad_into",
           "rotations_for"]


def forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """(N, H, W, C): rotate by k * 90 degrees in (H, W), then flip H (a view)."""
    image = np.rot90(image, k, axes=(1, 2))
    return image[:, ::-1] if flip else image


def inverse(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Undo :func:`forward` (a view)."""
    if flip:
        image = image[:, ::-1]
    return np.rot90(image, -k, axes=(1, 2))


@functools.lru_cache(maxsize=64)
def frame_map(h: int, w: int, k: int, flip: bool) -> np.ndarray:
    """The affine map (a0..a5, int64) of pixel (y, x) of an (h, w) image to its place after :func:`forward`.

    Derived from :func:`forward` itself (applied to an image of pixel indices), so the
    kernels cannot disagree with the NumPy definition.
    """
    index = np.arange(h * w, dtype=np.int64).reshape(1, h, w, 1)
    moved = forward(index, k, flip)[0, ..., 0]  # moved[y', x'] = y * w + x
    place = np.empty((h * w, 2), dtype=np.int64)
    rows, cols = np.indices(moved.shape)
    place[moved.ravel()] = np.stack([rows.ravel(), cols.ravel()], axis=1)
    origin = place[0]
    along_y = place[w] - origin if h > 1 else np.zeros(2, dtype=np.int64)
    along_x = place[1] - origin if w > 1 else np.zeros(2, dtype=np.int64)
    result = np.array([origin[0], along_y[0], along_x[0], origin[1], along_y[1], along_x[1]], dtype=np.int64)
    result.setflags(write=False)
    return result


@functools.lru_cache(maxsize=64)
def pad_index(n: int, padded: int, reflect: bool) -> np.ndarray:
    """Source index of each of ``padded`` positions when ``n`` are padded at the end (np.pad's rule)."""
    index = np.arange(n, dtype=np.int64)
    result = np.pad(index, (0, padded - n), mode="reflect") if reflect else np.pad(index, (0, padded - n), mode="edge")
    result.setflags(write=False)
    return result


@functools.cache
def _kernels() -> Any:
    """Compile lazily (never at import); cache on disk, or in memory when no cache folder is writable."""
    import numba

    def build(cache: bool) -> Any:
        @numba.njit(parallel=True, nogil=True, cache=cache, boundscheck=False)
        def combine_kernel(flat: Any, frames: Any, maps: Any, cls: Any, runs: Any, kind: Any, out: Any,
                           width: Any) -> None:
            # flat (T, >= n * Ht * Wt * k): transform t's network output (n, Ht, Wt, k), C order
            # out (Kc, n, h, w): class cls[j] of the average over t of the outputs moved back.
            # k = len(width), a tuple: the class count is part of the type, a constant to LLVM,
            # so the per-pixel loops become vector code (and the compiled kernel is cached per k).
            k = len(width)
            nt = flat.shape[0]
            kc, n, h, w = out.shape
            plane = frames[0, 0] * frames[0, 1] * k
            blocks = (h + _ROWS - 1) // _ROWS
            for job in numba.prange(n * blocks):
                b = job // blocks
                y0 = (job % blocks) * _ROWS
                y1 = min(h, y0 + _ROWS)
                acc = np.empty((_ROWS, w, k), dtype=np.float32)
                for t in range(nt):  # in NumPy's order: ((r0 + r1) + r2) + ...
                    wt = frames[t, 1]
                    src = flat[t]
                    step = (maps[t, 2] * wt + maps[t, 5]) * k  # next x
                    for y in range(y0, y1):
                        p0 = b * plane + ((maps[t, 0] + maps[t, 1] * y) * wt + maps[t, 3] + maps[t, 4] * y) * k
                        row = acc[y - y0]
                        if t == 0:
                            for x in range(w):
                                p = p0 + x * step
                                for j in range(k):
                                    row[x, j] = src[p + j]
                        else:
                            for x in range(w):
                                p = p0 + x * step
                                for j in range(k):
                                    row[x, j] += src[p + j]
                for j in range(kc):
                    c = cls[j]
                    for y in range(y0, y1):
                        dst = out[j, b, y]
                        row = acc[y - y0]
                        if kind == FLOAT32:
                            for x in range(w):
                                dst[x] = row[x, c] / runs
                        else:  # np.rint(np.clip(p, 0, 1) * 127), NaN as 0
                            for x in range(w):
                                v = row[x, c] / runs
                                if v < 0:
                                    v = np.float32(0.0)
                                elif v > 1:
                                    v = np.float32(1.0)
                                elif v != v:
                                    v = np.float32(0.0)
                                dst[x] = np.rint(v * np.float32(127.0))

        return combine_kernel

    return compiled(build)


def pad_into(images: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Pad (n, h, w, C) ``images`` at the bottom and right into ``out`` (n, Hp, Wp, C).

    As :func:`~pom_inference.preprocess.pad_to_multiple` does: reflected, or the edge
    repeated for an image one pixel high or wide.
    """
    n, h, w, _ = images.shape
    hp, wp = out.shape[1:3]
    reflect = h > 1 and w > 1
    out[:, :h, :w] = images
    if wp > w:
        out[:, :h, w:] = images[:, :, pad_index(w, wp, reflect)[w:]]
    if hp > h:
        out[:, h:] = out[:, pad_index(h, hp, reflect)[h:]]
    return out


def gather(padded: np.ndarray, transform: Transform, out: np.ndarray) -> np.ndarray:
    """``out`` (n, Ht, Wt, C) = :func:`forward` of the padded images (one strided copy)."""
    k, flip = transform
    np.copyto(out, forward(padded, k, flip))
    return out


def combine(flat: np.ndarray, padded: tuple[int, int], transforms: tuple[Transform, ...], n_classes: int,
            classes: np.ndarray, kind: int, out: np.ndarray) -> np.ndarray:
    """Average the network outputs of ``transforms`` back in the image frame, one plane per class.

    Parameters
    ----------
    flat : (T, L) float32; row t holds transform t's output (n, Ht, Wt, K) from its start.
    padded : (Hp, Wp), the padded image size.
    transforms : the T transforms, in the order NumPy adds them.
    n_classes : K, the network's output channels.
    classes : (Kc,) indices of the classes to write, in output order.
    kind : :data:`FLOAT32` or :data:`UINT8`.
    out : (Kc, n, h, w) float32 (FLOAT32) or an integer type (UINT8); h, w <= Hp, Wp (the crop).

    Returns
    -------
    ``out``: class ``classes[j]`` of the average in ``out[j]``.
    """
    hp, wp = padded
    frames = np.array([(wp, hp) if k % 2 else (hp, wp) for k, _ in transforms], dtype=np.int64)
    maps = np.stack([frame_map(hp, wp, k, flip) for k, flip in transforms])
    _kernels()(flat, frames, maps, np.asarray(classes, dtype=np.int64), np.float32(len(transforms)), kind, out,
                  (0,) * int(n_classes))
    return out
