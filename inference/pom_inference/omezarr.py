"""OME-Zarr output stores (OME-NGFF 0.4, zarr format 2 with "/" chunk keys, what copick and napari's readers use).

A store is written slab by slab into a hidden folder beside its final name
(``.<name>.tmp-...``): level 0 as the slabs come, then the lower levels of the pyramid
(2x2x2 means; nearest voxel for label maps) a few slices at a time, then the metadata,
every file flushed to disk, then the folder renamed into place. A store at its final name is
therefore always complete: a killed worker leaves only the hidden folder, which the work
queue's take-over removes. A store already in place (an output redone) is renamed aside
first and removed after; a worker killed between the two renames leaves no store at the
name, never a partial one. :func:`check_complete` is what a reader may check.

Needs the ``zarr`` package (``pip install 'pom-onnx[zarr]'``); imported when a store is made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pom_common.atomic import temporary_path
from pom_common.errors import InputError

#: Chunk shape of every level (cut to the volume's shape).
CHUNKS = (32, 256, 256)
#: Lower levels are made while the largest axis of the last is above this (and every axis is at least 2).
SMALLEST = 64
#: Most levels, level 0 included.
MAX_LEVELS = 5
#: Output slices computed at once for a lower level.
PYRAMID_SLICES = 16


def level_shapes(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Shapes of the pyramid's levels: halved (rounded down) while the last is larger than :data:`SMALLEST`."""
    shapes = [tuple(int(s) for s in shape)]
    while len(shapes) < MAX_LEVELS and max(shapes[-1]) > SMALLEST and min(shapes[-1]) >= 2:
        shapes.append(tuple(s // 2 for s in shapes[-1]))
    return shapes  # type: ignore[return-value]


def downsample(block: np.ndarray, labels: bool) -> np.ndarray:
    """(2n, 2y, 2x) (odd edges cropped) -> (n, y, x): the mean of each 2x2x2 cube, or its first voxel for labels."""
    n, y, x = (s // 2 for s in block.shape)
    block = block[: 2 * n, : 2 * y, : 2 * x]
    if labels:
        return np.ascontiguousarray(block[::2, ::2, ::2])
    mean = block.reshape(n, 2, y, 2, x, 2).astype(np.float32).mean(axis=(1, 3, 5))
    if np.issubdtype(block.dtype, np.integer):
        return np.rint(mean).astype(block.dtype)
    return mean.astype(block.dtype)


def multiscales(levels: int, voxel_size: float, name: str) -> list[dict[str, Any]]:
    """The OME-NGFF 0.4 ``multiscales`` metadata: axes z, y, x in Angstrom, level l at voxel size x 2**l."""
    return [{
        "version": "0.4",
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": [{"path": str(level),
                      "coordinateTransformations": [{"type": "scale", "scale": [voxel_size * 2**level] * 3}]}
                     for level in range(levels)],
        "type": "mean",
    }]


def image_label(names: Mapping[str, str]) -> dict[str, Any]:
    """The OME-NGFF ``image-label`` metadata naming each label value."""
    return {"version": "0.4", "properties": [{"label-value": int(v), "class": n} for v, n in names.items()],
            "source": {"image": "../../"}}


def _open_group(path: Path) -> Any:
    """A new zarr (format 2) group; zarr 3 is refused by the extra's pin (``zarr<3``, as copick pins it)."""
    import zarr

    return zarr.open_group(str(path), mode="w")


class _Level0:
    """Level 0 of a store being written: ``write(z0, block)`` as the worker's sinks expect."""

    def __init__(self, array: Any, dtype: np.dtype) -> None:
        self.array = array
        self.dtype = dtype

    def write(self, z0: int, block: np.ndarray) -> None:
        block = np.asarray(block).astype(self.dtype, copy=False)
        if block.ndim != 3 or block.shape[1:] != self.array.shape[1:] or not 0 <= z0 <= self.array.shape[0] - len(block):
            raise ValueError(f"slab {block.shape} at z {z0} does not fit a volume of {self.array.shape}")
        self.array[z0 : z0 + len(block)] = block


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publish(tmp: Path, target: Path, before_replace: Callable[[], None] | None) -> None:
    """Rename ``tmp`` to ``target``; a store already there is moved aside first (after ``before_replace()``)."""
    try:
        os.rename(tmp, target)  # fails on a store in place (a non-empty folder)
        return
    except OSError:
        if not os.path.lexists(target):
            raise
    if before_replace is not None:
        before_replace()
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def new_store(path: str | os.PathLike, shape: tuple[int, int, int], dtype: npt.DTypeLike, voxel_size: float,
              before_replace: Callable[[], None] | None = None, tag: str = "",
              label_names: Mapping[str, str] | None = None) -> Iterator[_Level0]:
    """Create an OME-Zarr store to fill slab by slab (level 0); it appears at ``path`` complete, or not at all.

    ``label_names`` (value -> class): the store is a label map (``image-label`` metadata,
    nearest-voxel pyramid). ``before_replace`` is called before a store already at ``path``
    is replaced, and may raise to refuse.
    """
    target = Path(path)
    dtype = np.dtype(dtype)
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    voxel_size = float(str(np.float32(voxel_size)))  # as the MRC header holds it, without float32's tail digits
    tmp = temporary_path(target, tag)
    try:
        group = _open_group(tmp)
        shapes = level_shapes(shape)
        arrays = [group.zeros(name=str(level), shape=s, chunks=tuple(min(c, n) for c, n in zip(CHUNKS, s)),
                              dtype=dtype, dimension_separator="/")  # "/": required by OME-NGFF 0.4
                  for level, s in enumerate(shapes)]
        yield _Level0(arrays[0], dtype)
        labels = label_names is not None
        for level in range(1, len(shapes)):
            source, out = arrays[level - 1], arrays[level]
            for z0 in range(0, out.shape[0], PYRAMID_SLICES):
                z1 = min(out.shape[0], z0 + PYRAMID_SLICES)
                out[z0:z1] = downsample(source[2 * z0 : 2 * z1], labels)[:, : out.shape[1], : out.shape[2]]
        attrs: dict[str, Any] = {"multiscales": multiscales(len(shapes), float(voxel_size), target.name)}
        if label_names is not None:
            attrs["image-label"] = image_label(label_names)
        attrs["pom"] = {"voxel_size": float(voxel_size), **({"classes": dict(label_names)} if label_names else {})}
        group.attrs.update(attrs)  # written last: the marker check_complete looks for
        _fsync_tree(tmp)
        _publish(tmp, target, before_replace)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(target)
        raise


def check_complete(path: str | os.PathLike) -> None:
    """Refuse a store without its multiscales metadata (not written by :func:`new_store`, or damaged).

    Raises
    ------
    OSError
        Naming the store.
    """
    import errno
    import json

    attrs = Path(path) / ".zattrs"
    try:
        meta = json.loads(attrs.read_text())
    except (OSError, ValueError) as exc:
        raise OSError(errno.EIO, f"{Path(path).name}: not a complete OME-Zarr store ({exc})") from None
    if not isinstance(meta, dict) or "multiscales" not in meta:
        raise OSError(errno.EIO, f"{Path(path).name}: not a complete OME-Zarr store (no multiscales metadata)")


def read_level(path: str | os.PathLike, level: int = 0) -> tuple[np.ndarray, float]:
    """One level of a store as an array, and its voxel size (A), from the multiscales metadata.

    Raises
    ------
    InputError
        Not an OME-Zarr store with that level, or zarr not installed.
    """
    try:
        import zarr
    except ImportError:
        raise InputError(f"{path}: reading OME-Zarr needs the zarr package: pip install 'pom-onnx[zarr]'") from None
    try:
        check_complete(path)
        group = zarr.open_group(str(path), mode="r")
        meta = group.attrs["multiscales"][0]
        dataset = meta["datasets"][level]
        scale = next(t["scale"] for t in dataset["coordinateTransformations"] if t["type"] == "scale")
        return np.asarray(group[dataset["path"]][...]), float(scale[-1])
    except (OSError, KeyError, IndexError, StopIteration, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable OME-Zarr store ({exc})") from None
