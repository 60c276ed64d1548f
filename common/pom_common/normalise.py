"""The preprocessing contract: how each input channel is scaled, in training and in processing.

One vocabulary, used by the configuration (``density_normalisation``), the ONNX metadata
(``normalisation``), phase-1 sampling and inference:

``crop``
    Density, training images: standardised per image, as Pom does (mean 0, std 1).
``local``
    Density, processing (default): every pixel standardised by the mean and std of the
    crop-sized window around it, so slices with vacuum or thick organelles look to the
    network as the training crops did.
``volume``
    Density, processing: standardised over the whole volume, as Pom's processing does.
``uint8``
    Other channels (segmentations): ``v / s * 2 - 1``, in training and processing alike,
    where ``s`` is the channel file's full scale (:func:`channel_scale`): 255 for Ais's
    0..255 segmentations (unsigned bytes, mode 6, or IMOD's unsigned mode 0), 127 for
    signed bytes (mode 0, as easymode and Pom 1.2 write them), 1 for probabilities 0..1
    (a float32 output of ``pom-infer``) or a 0/1 mask.

Functions take and return arrays; none reads or writes files.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .constants import CHANNEL_SCALE, DENSITY
from .errors import InputError
from .jit import compiled
from .sums import numpy_mean_std

LOCAL = "local"
VOLUME = "volume"
UINT8 = "uint8"
#: What processing may do with Density (the configuration's ``density_normalisation``).
DENSITY_PROCESSING = (LOCAL, VOLUME)
#: What a model's metadata may ask of a channel.
PROCESSING = (LOCAL, VOLUME, UINT8)
#: Names written by exports before the vocabulary was unified (still read).
LEGACY_NAMES = {"standardise_local": LOCAL, "standardise": VOLUME, "uint8_to_unit": UINT8}


def canonical(name: str) -> str:
    """The current name of a normalisation (older metadata spelled them differently)."""
    return LEGACY_NAMES.get(name, name)


def processing_normalisation(channel: str, density: str = LOCAL) -> str:
    """How processing scales ``channel``: ``density`` for Density, ``uint8`` for the others."""
    return density if channel == DENSITY else UINT8


#: Voxel sizes of a channel and its tomogram (the same grid) may differ by this fraction (header rounding).
CHANNEL_VOXEL_TOLERANCE = 0.01
#: Full scale of signed-byte segmentations (easymode, Pom 1.2: probability 1 is 127).
SIGNED_BYTE_SCALE = 127.0
#: Full scale of probabilities and 0/1 masks.
UNIT_SCALE = 1.0
#: Slices read at once when looking for a channel's value range.
_RANGE_CHUNK = 8


def value_range(volume: np.ndarray) -> tuple[float, float]:
    """(min, max) of a volume, read a few slices at a time (memory maps welcome); NaN when it holds NaN."""
    lo, hi = np.inf, -np.inf
    for z in range(0, volume.shape[0], _RANGE_CHUNK):
        chunk = np.asarray(volume[z : z + _RANGE_CHUNK])
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    return lo, hi


def channel_scale(volume: np.ndarray, source: str) -> tuple[float, str]:
    """The full scale of a segmentation channel, from its data type and values.

    ======================================  ===========  ==============================
    values                                  full scale   what writes them
    ======================================  ===========  ==============================
    0..1 (any type; all zeros included)     1            probabilities, 0/1 masks
    0..127 in signed bytes (MRC mode 0)     127          easymode, Pom 1.2
    0..255 (other types)                    255          Ais, IMOD (unsigned mode 0)
    ======================================  ===========  ==============================

    Parameters
    ----------
    volume : (nz, ny, nx) channel data (read slab by slab).
    source : the file (or channel) name, for messages.

    Returns
    -------
    (full scale, a sentence saying how it was read when that is not 0..255; '' otherwise).

    Raises
    ------
    InputError
        Naming ``source``, for values that no segmentation holds: negative, or above 255.
    """
    lo, hi = value_range(volume)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return CHANNEL_SCALE, ""  # NaN / Inf: refused by the preprocessing, naming the channel
    signed_bytes = np.dtype(volume.dtype) == np.int8
    if lo < -0.01 * max(hi, 1.0):
        hint = (" (unsigned bytes stored as signed? IMOD marks unsigned mode 0 files in its header; "
                "rewrite it with IMOD or as MRC mode 6)") if signed_bytes else ""
        raise InputError(f"{source}: values {lo:g}..{hi:g}, but a segmentation channel holds 0..255, 0..127 "
                         f"(signed bytes) or 0..1 (probabilities){hint}")
    if hi <= UNIT_SCALE * (1 + 1e-6):
        if hi <= 0:
            return CHANNEL_SCALE, ""
        what = "a 0/1 mask" if np.issubdtype(volume.dtype, np.integer) else "probabilities"
        return UNIT_SCALE, f"{source}: values {lo:g}..{hi:g}, read as {what} (1 = full scale)"
    if signed_bytes:
        return SIGNED_BYTE_SCALE, f"{source}: signed bytes 0..{hi:g}, read as 0..127 (as easymode and Pom 1.2 write them)"
    if hi > CHANNEL_SCALE * (1 + 1e-6):
        raise InputError(f"{source}: values up to {hi:g}, but a segmentation channel holds 0..255, 0..127 "
                         "(signed bytes) or 0..1 (probabilities)")
    return CHANNEL_SCALE, ""


def normalise_crop(image: np.ndarray, channel: str, scale: float = CHANNEL_SCALE) -> np.ndarray:
    """A training image as Pom makes it: Density standardised (``crop``), others ``uint8``.

    Parameters
    ----------
    image : (h, w) array, the z-averaged, binned crop.
    channel : its channel name.
    scale : the channel's full scale (:func:`channel_scale`; Pom's 255 by default).

    Returns
    -------
    A new (h, w) array (Pom's dtype rules: the input's float type is kept).
    """
    if channel == DENSITY:
        image = image - np.mean(image)
        std = np.std(image)
        if std != 0.0:
            image /= std
        return image
    return image / scale * 2.0 - 1.0


def _box_mean(image: np.ndarray, window: int) -> np.ndarray:
    """Mean over a window x window box around each pixel (edges mirrored), via an integral image."""
    h, w = image.shape
    before, after = window // 2, window - window // 2
    padded = np.pad(image.astype(np.float64), ((before, after), (before, after)), mode="symmetric")
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    total = (integral[window : window + h, window : window + w] - integral[:h, window : window + w]
             - integral[window : window + h, :w] + integral[:h, :w])
    return total / (window * window)


def standardise_local_reference(binned: np.ndarray, window: int) -> np.ndarray:
    """:func:`standardise_local` in NumPy, slice by slice (the definition; for tests)."""
    window = _clamp_window(binned, window)
    for z in range(binned.shape[0]):
        image = binned[z]
        mean = _box_mean(image, window)
        var = _box_mean(image.astype(np.float64) ** 2, window) - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std[std < 1e-6] = 1.0
        binned[z] = (image - mean) / std
    return binned


def _clamp_window(binned: np.ndarray, window: int) -> int:
    return max(1, min(int(window), 3 * max(binned.shape[1:], default=1)))


@functools.cache
def _local_kernel() -> Any:
    """Compile lazily (never at import); cache on disk, or in memory when no cache folder is writable."""
    import numba

    def build(cache: bool) -> Any:
        @numba.njit(parallel=True, nogil=True, cache=cache, boundscheck=False)
        def kernel(binned: Any, window: Any, ry: Any, rx: Any) -> None:
            # The reference's arithmetic in its order: integral images of v and v**2 over the
            # symmetric padding (cumsum along y, then x), box sums ((A - B) - C) + D, float64.
            nz, h, w = binned.shape
            area = float(window * window)
            for z in numba.prange(nz):
                image = binned[z]
                ph, pw = h + window, w + window
                s1 = np.zeros((ph + 1, pw + 1), dtype=np.float64)
                s2 = np.zeros((ph + 1, pw + 1), dtype=np.float64)
                col1 = np.zeros(pw, dtype=np.float64)
                col2 = np.zeros(pw, dtype=np.float64)
                for i in range(ph):
                    src = image[ry[i]]
                    row1 = 0.0
                    row2 = 0.0
                    for j in range(pw):
                        v = np.float64(src[rx[j]])
                        col1[j] += v
                        col2[j] += v * v
                        row1 += col1[j]
                        row2 += col2[j]
                        s1[i + 1, j + 1] = row1
                        s2[i + 1, j + 1] = row2
                for y in range(h):
                    a1, b1, a2, b2 = s1[y + window], s1[y], s2[y + window], s2[y]
                    dst = image[y]
                    for x in range(w):  # branch-free, so that it vectorises
                        mean = (((a1[x + window] - b1[x + window]) - a1[x]) + b1[x]) / area
                        sq = (((a2[x + window] - b2[x + window]) - a2[x]) + b2[x]) / area
                        var = sq - mean * mean
                        std = np.sqrt(var if var > 0.0 else 0.0)
                        std = std if std >= 1e-6 else 1.0
                        dst[x] = (np.float64(dst[x]) - mean) / std

        return kernel

    return compiled(build)


def standardise_local(binned: np.ndarray, window: int) -> np.ndarray:
    """In place, slice by slice: (v - local mean) / local std over a window x window box.

    Parameters
    ----------
    binned : (nz, ny, nx) float32, modified in place (a strided view is fine).
    window : box size in (binned) pixels; the training crop size. A window with no
        variance is only centred. A window more than 3 times the slice is clamped to that,
        so memory stays proportional to the slice whatever the model's metadata says.

    Returns
    -------
    ``binned``: the bits of :func:`standardise_local_reference`, computed in parallel over
    slices (numba) with no temporary larger than two padded slices per thread.
    """
    if binned.size == 0:
        return binned
    window = _clamp_window(binned, window)
    before, after = window // 2, window - window // 2
    ry = np.pad(np.arange(binned.shape[1], dtype=np.int64), (before, after), mode="symmetric")
    rx = np.pad(np.arange(binned.shape[2], dtype=np.int64), (before, after), mode="symmetric")
    _local_kernel()(binned, window, ry, rx)
    return binned


def standardise_volume(binned: np.ndarray) -> np.ndarray:
    """In place: (v - mean) / std over the whole volume (only centred when std is 0).

    The mean and std are NumPy's ``mean(dtype=float64)`` and ``std(dtype=float64)`` to the
    bit (:mod:`pom_common.sums`), without the float64 temporary of the volume's size that
    ``std`` makes; the volume is read a few slices at a time.
    """
    if binned.size == 0:
        return binned
    step = max(1, (16 * 2**20) // max(1, binned[0].size * 4))

    def pieces() -> Any:
        return (binned[z : z + step] for z in range(0, binned.shape[0], step))

    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are refused by the caller
        mean, std = numpy_mean_std(binned.size, pieces, np.float64, cast=True)
        mean, std = float(mean), float(std)
        binned -= mean
        if std != 0.0:
            binned /= std
    return binned


def scale_uint8(binned: np.ndarray, scale: float = CHANNEL_SCALE) -> np.ndarray:
    """In place: 0..scale -> -1..1."""
    binned *= 2.0 / scale
    binned -= 1.0
    return binned


def normalise_volume(binned: np.ndarray, how: str, window: int, scale: float = CHANNEL_SCALE) -> np.ndarray:
    """In place, for processing: ``local`` (window ``window``), ``volume`` or ``uint8`` (full scale ``scale``).

    Raises
    ------
    ValueError
        For a name that is not a processing normalisation.
    """
    how = canonical(how)
    if how == LOCAL:
        return standardise_local(binned, window)
    if how == VOLUME:
        return standardise_volume(binned)
    if how == UINT8:
        return scale_uint8(binned, scale)
    raise ValueError(f"unknown normalisation {how!r}; expected one of {list(PROCESSING)}")
