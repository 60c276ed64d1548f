"""MRC input and output: the only module that imports mrcfile.

Arrays are (nz, ny, nx), mrcfile's native order. Reads are memory-mapped; writes are
atomic (temporary file in the same folder, then os.replace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.dtypes
import mrcfile.utils
import numpy as np
import numpy.typing as npt

from .atomic import Publish, atomic_path
from .constants import UNSET_VOXEL_SIZES
from .errors import InputError
from .files import regular_file
from .slabfile import SlabFile

logger = logging.getLogger(__name__)
HEADER_DTYPE = mrcfile.dtypes.HEADER_DTYPE

#: dtypes this toolkit reads (MRC modes 0, 1, 2, 6, 12; uint8 arrives as mode 6 or 0).
READABLE_DTYPES = (np.int8, np.int16, np.float32, np.uint16, np.float16, np.uint8)
#: IMOD marks its headers with this number at byte 152 (``imodStamp``); bit 0 of the
#: ``imodFlags`` word after it says the bytes of a mode 0 file are signed. IMOD (newstack
#: -mode 0, trimvol, tilt) writes unsigned bytes with that bit clear.
IMOD_STAMP = 1146047817
#: Where ``imodStamp`` is (``imodFlags`` follows it), and where mrcfile's ``extra2`` field that holds them begins.
IMOD_STAMP_OFFSET, EXTRA2_OFFSET = 152, 112
IMOD_SIGNED_BYTES = 1


@dataclass(frozen=True)
class Volume:
    """A memory-mapped MRC volume.

    Attributes
    ----------
    data : np.ndarray
        Read-only memory map, shape (nz, ny, nx).
    voxel_size : float
        Voxel size in A (from the header, or the fallback when the header says 0 or 1).
    voxel_size_from_header : bool
        False when the fallback was used.
    path : Path
    """

    data: np.ndarray
    voxel_size: float
    voxel_size_from_header: bool
    path: Path
    header_voxel_size: float = 0.0  # what the header says (0 when unset), whatever the fallback

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx)."""
        nz, ny, nx = self.data.shape
        return (nz, ny, nx)


def read_volume(path: str | os.PathLike, fallback_voxel_size: float | None = None) -> Volume:
    """Open an MRC volume memory-mapped, read-only.

    Parameters
    ----------
    path
        The .mrc file.
    fallback_voxel_size
        Voxel size (A) to use when the header says 0 or 1 (unset); Pom's ``apix``.

    Mode 0 is signed bytes (MRC2014), except where IMOD's header flag says the bytes are
    unsigned (as IMOD writes them): those arrive as uint8.

    Raises
    ------
    InputError
        Missing file (or broken link, or not a regular file), corrupt header, truncated
        data, not a 3D volume, an axis order other than x, y, z, or anisotropic voxels.
        The header is checked against the file size before anything is allocated.
    """
    path = Path(path)
    unsigned_bytes = check_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mrc = mrcfile.mmap(path, mode="r")
    except (ValueError, RuntimeWarning, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from None
    try:
        header = mrc.header
        axes = (int(header.mapc), int(header.mapr), int(header.maps))
        if axes != (1, 2, 3):
            raise InputError(
                f"{path}: axis order mapc/mapr/maps = {axes}, expected (1, 2, 3) (columns = x, rows = y, "
                "sections = z); reorder the volume (e.g. relion_image_handler or IMOD) first"
            )
        data = mrc.data
        if unsigned_bytes and data is not None and data.dtype == np.int8:
            data = data.view(np.uint8)
        if data is None or data.ndim != 3:
            ndim = 0 if data is None else data.ndim
            raise InputError(f"{path}: expected a 3D volume, found a {ndim}D image")
        if data.dtype.type not in READABLE_DTYPES:
            raise InputError(f"{path}: unsupported data type {data.dtype}")
        vs = mrc.voxel_size
        sizes = (float(vs.x), float(vs.y), float(vs.z))
    finally:
        mrc.close()  # the memory map stays valid (read-only) while referenced
    header_size = sizes[0]
    if abs(sizes[0] - sizes[1]) > 1e-3 * max(abs(sizes[0]), 1e-6) or (
        sizes[2] not in UNSET_VOXEL_SIZES and abs(sizes[0] - sizes[2]) > 1e-3 * max(abs(sizes[0]), 1e-6)
    ):
        raise InputError(
            f"{path}: anisotropic voxels {sizes[0]:.4g} x {sizes[1]:.4g} x {sizes[2]:.4g} A; "
            "expected equal sizes in x, y and z (resample the volume first)"
        )
    if header_size in UNSET_VOXEL_SIZES or not (np.isfinite(header_size) and header_size > 0):
        if header_size not in UNSET_VOXEL_SIZES:
            logger.warning("%s: the header's voxel size %s A is not a size; using %s", path.name, header_size,
                           f"{fallback_voxel_size:g} A (the fallback)" if fallback_voxel_size else "the fallback")
        if fallback_voxel_size is None:
            return Volume(data, 0.0, False, path)
        return Volume(data, float(fallback_voxel_size), False, path)
    return Volume(data, header_size, True, path, header_size)


def check_header(path: Path) -> bool:
    """Refuse a file whose header does not describe its own size, before mrcfile allocates anything.

    Returns
    -------
    Whether the file holds unsigned bytes by IMOD's header flag (mode 0, ``imodStamp``
    set, ``imodFlags`` bit 0 clear).

    Raises
    ------
    InputError
        Not a regular file, a header shorter than 1024 bytes, non-positive dimensions, an
        unknown mode, or an extended header or data block larger than the file.
    """
    try:
        size = regular_file(path).st_size
        with open(path, "rb") as handle:
            raw = handle.read(1024)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if len(raw) < 1024:
        raise InputError(f"{path}: not a readable MRC file ({len(raw)} bytes, shorter than a header)")
    header = np.frombuffer(raw, dtype=HEADER_DTYPE)[0]
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(header["machst"])
    except ValueError:
        order = "<" if 0 <= int(header["mode"]) < 64 else ">"  # an unset machine stamp: the plausible order
    if order == ">":
        header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(">"))[0]
    dims = (int(header["nx"]), int(header["ny"]), int(header["nz"]))
    if min(dims) <= 0:
        raise InputError(f"{path}: not a readable MRC file (the header says {dims[0]} x {dims[1]} x {dims[2]} voxels)")
    try:
        itemsize = mrcfile.utils.dtype_from_mode(int(header["mode"])).itemsize
    except ValueError:
        raise InputError(f"{path}: unsupported MRC mode {int(header['mode'])}") from None
    extended = int(header["nsymbt"])
    needed = 1024 + extended + dims[0] * dims[1] * dims[2] * itemsize
    if extended < 0 or 1024 + extended > size:
        raise InputError(f"{path}: not a readable MRC file (the header declares a {extended}-byte extended header, "
                         f"the file holds {size} bytes)")
    if size < needed:
        raise InputError(f"{path}: truncated: {size} bytes, its header implies {needed}")
    imod = np.frombuffer(raw, dtype=np.dtype("i4").newbyteorder(order), count=2, offset=152)
    return int(header["mode"]) == 0 and int(imod[0]) == IMOD_STAMP and not int(imod[1]) & IMOD_SIGNED_BYTES


def _mrc_mode_for(dtype: npt.DTypeLike) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return np.dtype(np.uint16)  # what mrcfile (and Ais) write for uint8 data: mode 6
    if dtype in (np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.float16)):
        return dtype
    raise ValueError(f"cannot write {dtype} to MRC; use float32 or uint8")


def write_volume(path: str | os.PathLike, data: np.ndarray, voxel_size: float) -> None:
    """Write ``data`` (nz, ny, nx) atomically with the voxel size set in the header."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {data.shape}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data.astype(_mrc_mode_for(data.dtype), copy=False))
            mrc.voxel_size = float(voxel_size)
            _label(mrc)
        _fsync(tmp)


@contextlib.contextmanager
def new_volume(path: str | os.PathLike, shape: tuple[int, int, int], dtype: npt.DTypeLike,
               voxel_size: float, publish: Publish | None = None, tag: str = "",
               labels: Sequence[str] = ()) -> Iterator[SlabFile]:
    """Create an MRC file to fill slab by slab, atomically.

    Yields a :class:`SlabFile` (``write(z0, block)``, or ``volume[z] = ...``). When the
    block ends without error the header statistics are set (computed slab by slab), the
    file is flushed to disk and renamed to ``path`` (by ``publish``, see
    :func:`pom_common.atomic.atomic_path`); on error the temporary file is removed and
    nothing appears at ``path``. ``tag`` goes into the temporary name; ``labels``: header
    labels after ours (at most 9, 80 characters each). Memory use does not depend on the
    volume's size.
    """
    stored = _mrc_mode_for(dtype)
    mode = {np.dtype(np.float32): 2, np.dtype(np.uint16): 6, np.dtype(np.int16): 1, np.dtype(np.int8): 0}[stored]
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    with atomic_path(path, publish, tag) as tmp:
        # mrcfile writes the header (the same bytes as for a whole array); the data go through pwrite.
        mrc = mrcfile.new_mmap(tmp, shape=shape, mrc_mode=mode, overwrite=True)
        try:
            mrc.voxel_size = float(voxel_size)
            _label(mrc, labels)
            fd = os.open(tmp, os.O_RDWR)
            try:
                # pwrite, not the memory map: a full disk is an error (ENOSPC) here, not a SIGBUS;
                # no fallocate either (on tmpfs it zeroes every page, on NFSv3 glibc writes every block)
                volume = SlabFile(fd, 1024 + int(mrc.header.nsymbt), shape, stored)
                yield volume
                header = mrc.header
                header.dmin, header.dmax, header.dmean, header.rms = volume.header_stats()
            finally:
                os.close(fd)
        finally:
            mrc.close()
        _fsync(tmp)


def expected_size(path: str | os.PathLike) -> int:
    """The file size an MRC file's header implies (header, extended header, data).

    Raises
    ------
    InputError
        The header is unreadable.
    """
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header = mrc.header
            n = int(header.nx) * int(header.ny) * int(header.nz)
            itemsize = mrcfile.utils.data_dtype_from_header(header).itemsize
            return 1024 + int(header.nsymbt) + n * itemsize
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: unreadable MRC header ({exc})") from None


def release_pages(array: np.ndarray) -> None:
    """Write a memory-mapped output's dirty pages to the file and drop them from this process."""
    import mmap

    mapping = getattr(array, "_mmap", None)
    if mapping is None:
        return
    try:
        mapping.flush()
        mapping.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass


#: The header label we write; mrcfile's default label holds a timestamp, which would make
#: identical results differ byte for byte between runs.
LABEL = b"Created by pom-onnx"


def _label(mrc: Any, more: Sequence[str] = ()) -> None:
    mrc.header.label[0] = LABEL
    for i, text in enumerate(more[:9], start=1):
        mrc.header.label[i] = text.encode("ascii", "replace")[:80]
    mrc.header.nlabl = 1 + len(more[:9])
    if int(mrc.header.mode) == 0:  # signed bytes, said as IMOD says it (IMOD would read them as unsigned otherwise)
        extra = bytearray(bytes(mrc.header.extra2))
        start = IMOD_STAMP_OFFSET - EXTRA2_OFFSET
        extra[start:start + 8] = np.array([IMOD_STAMP, IMOD_SIGNED_BYTES], dtype=mrc.header.dtype["nx"]).tobytes()
        mrc.header.extra2 = bytes(extra)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
