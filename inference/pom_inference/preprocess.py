"""Volumes to network inputs exactly as training saw them (pure arrays, no onnxruntime).

The scaling of each channel is :mod:`pom_common.normalise`'s contract; this module adds
the z-filter and binning of whole volumes, the channel stacking and the padding.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pom_common.errors import InputError
from pom_common.modelmeta import ModelInfo
from pom_common.normalise import normalise_volume
from pom_common.zfilter import zfilter_bin


def prepare_inputs(channels: Mapping[str, np.ndarray], info: ModelInfo) -> np.ndarray:
    """z-filter, bin and normalise each channel; stack channels last.

    Parameters
    ----------
    channels : name -> (nz, ny, nx) volume (memory maps welcome), all the same shape.
    info : the model's metadata (channel order, z_sum, bin factor, normalisation).

    Returns
    -------
    (nz // b, ny // b, nx // b, C) float32

    Raises
    ------
    InputError
        A channel is missing, the shapes differ, or a channel holds NaN or Inf.
    """
    missing = [name for name in info.channels if name not in channels]
    if missing:
        raise InputError(f"channels {missing} missing (the model needs {list(info.channels)})")
    first = channels[info.channels[0]]
    for name in info.channels:
        if channels[name].shape != first.shape:
            raise InputError(f"channel {name!r} has shape {channels[name].shape}, "
                             f"{info.channels[0]!r} has {first.shape}")
    b = info.bin_factor
    shape = (first.shape[0] // b, first.shape[1] // b, first.shape[2] // b, len(info.channels))
    out = np.empty(shape, dtype=np.float32)
    for j, name in enumerate(info.channels):
        binned = zfilter_bin(channels[name], info.z_sum, b, out=out[..., j])  # read, z-filtered, binned in one pass
        if not _finite(binned):
            raise InputError(f"channel {name!r} contains NaN or Inf values")
        normalise_volume(binned, info.normalisation_of(name), info.normalisation_window)  # in place
    return out


def _finite(volume: np.ndarray) -> bool:
    """Whether every value is finite (a few slices at a time: no mask of the volume's size)."""
    step = max(1, (16 * 2**20) // max(1, volume[0].size))
    return all(bool(np.isfinite(volume[z : z + step]).all()) for z in range(0, volume.shape[0], step))


def pad_to_multiple(images: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (N, H, W, C) at the bottom/right so H and W are multiples of ``multiple``.

    Returns
    -------
    The padded array and the original (H, W) to crop back to.
    """
    _, h, w, _ = images.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, (h, w)
    widths = ((0, 0), (0, ph), (0, pw), (0, 0))
    if h > 1 and w > 1:
        return np.pad(images, widths, mode="reflect"), (h, w)
    return np.pad(images, widths, mode="edge"), (h, w)
