"""Volume preprocessing exactly as training saw it (pure arrays, no onnxruntime)."""

from __future__ import annotations

import numpy as np

from pom_common.constants import CHANNEL_SCALE
from pom_common.errors import InputError
from pom_common.modelmeta import STANDARDISE, STANDARDISE_LOCAL, ModelInfo
from pom_common.zfilter import zfilter_bin


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

    Training images are standardised per crop (Pom); this gives every pixel the statistics
    of the crop-sized window around it, so slices with vacuum or thick organelles look to the
    network as the training crops did. A window with no variance is only centred.
    """
    for z in range(binned.shape[0]):
        image = binned[z]
        mean = _box_mean(image, window)
        var = _box_mean(image.astype(np.float64) ** 2, window) - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std[std < 1e-6] = 1.0
        binned[z] = (image - mean) / std
    return binned


def normalise_volume(binned: np.ndarray, how: str, window: int = 64) -> np.ndarray:
    """In place: standardise (whole volume or local window; Density), or v / 255 * 2 - 1."""
    if how == STANDARDISE_LOCAL:
        return standardise_local(binned, window)
    if how == STANDARDISE:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are refused by the caller
            mean = float(binned.mean(dtype=np.float64))
            std = float(binned.std(dtype=np.float64))
            binned -= mean
            if std != 0.0:
                binned /= std
    else:
        binned *= 2.0 / CHANNEL_SCALE
        binned -= 1.0
    return binned


def prepare_inputs(channels: dict[str, np.ndarray], info: ModelInfo) -> np.ndarray:
    """z-filter, bin and normalise each channel; stack channels last.

    Parameters
    ----------
    channels : name -> (nz, ny, nx) volume (memory maps welcome), all the same shape.
    info : the model's metadata (channel order, z_sum, bin factor, normalisation).

    Returns
    -------
    (nz // b, ny // b, nx // b, C) float32
    """
    first = channels[info.channels[0]]
    b = info.bin_factor
    shape = (first.shape[0] // b, first.shape[1] // b, first.shape[2] // b, len(info.channels))
    out = np.empty(shape, dtype=np.float32)
    for j, name in enumerate(info.channels):
        binned = zfilter_bin(channels[name], info.z_sum, b)
        if not np.isfinite(binned).all():
            raise InputError(f"channel {name!r} contains NaN or Inf values")
        out[..., j] = normalise_volume(binned, info.normalisation_of(name), info.normalisation_window)
    return out


def pad_to_multiple(images: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (N, H, W, C) at the bottom/right so H and W are multiples of ``multiple``.

    Returns the padded array and the original (H, W) to crop back to.
    """
    _, h, w, _ = images.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, (h, w)
    mode = "reflect" if (h > 1 and w > 1) else "edge"
    return np.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode), (h, w)
