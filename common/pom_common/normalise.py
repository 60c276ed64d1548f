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
    Other channels (segmentations, uint8 0..255): ``v / 255 * 2 - 1``, in training and
    processing alike.

Functions take and return arrays; none reads or writes files.
"""

from __future__ import annotations

import numpy as np

from .constants import CHANNEL_SCALE, DENSITY

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


def normalise_crop(image: np.ndarray, channel: str) -> np.ndarray:
    """A training image as Pom makes it: Density standardised (``crop``), others ``uint8``.

    Parameters
    ----------
    image : (h, w) array, the z-averaged, binned crop.
    channel : its channel name.

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
    return image / CHANNEL_SCALE * 2.0 - 1.0


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


def standardise_local(binned: np.ndarray, window: int) -> np.ndarray:
    """In place, slice by slice: (v - local mean) / local std over a window x window box.

    Parameters
    ----------
    binned : (nz, ny, nx) float32, modified in place.
    window : box size in (binned) pixels; the training crop size. A window with no
        variance is only centred. A window more than 3 times the slice is clamped to that,
        so memory stays proportional to the slice whatever the model's metadata says.

    Returns
    -------
    ``binned``.
    """
    window = max(1, min(int(window), 3 * max(binned.shape[1:], default=1)))
    for z in range(binned.shape[0]):
        image = binned[z]
        mean = _box_mean(image, window)
        var = _box_mean(image.astype(np.float64) ** 2, window) - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std[std < 1e-6] = 1.0
        binned[z] = (image - mean) / std
    return binned


def standardise_volume(binned: np.ndarray) -> np.ndarray:
    """In place: (v - mean) / std over the whole volume (only centred when std is 0)."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are refused by the caller
        mean = float(binned.mean(dtype=np.float64))
        std = float(binned.std(dtype=np.float64))
        binned -= mean
        if std != 0.0:
            binned /= std
    return binned


def scale_uint8(binned: np.ndarray) -> np.ndarray:
    """In place: 0..255 -> -1..1."""
    binned *= 2.0 / CHANNEL_SCALE
    binned -= 1.0
    return binned


def normalise_volume(binned: np.ndarray, how: str, window: int) -> np.ndarray:
    """In place, for processing: ``local`` (window ``window``), ``volume`` or ``uint8``.

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
        return scale_uint8(binned)
    raise ValueError(f"unknown normalisation {how!r}; expected one of {list(PROCESSING)}")
