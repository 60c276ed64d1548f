"""Volumes to network inputs exactly as training saw them (pure arrays, no onnxruntime).

The scaling of each channel is :mod:`pom_common.normalise`'s contract; this module adds
the z-filter and binning of whole volumes, the channel stacking and the padding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from pom_common.constants import CHANNEL_SCALE
from pom_common.errors import InputError
from pom_common.modelmeta import ModelInfo
from pom_common.normalise import UINT8, channel_scale, normalise_volume
from pom_common.zfilter import zfilter_bin

logger = logging.getLogger(__name__)


def channel_scales(channels: Mapping[str, np.ndarray], info: ModelInfo,
                   sources: Mapping[str, str] | None = None) -> dict[str, float]:
    """The full scale of each segmentation channel (:func:`pom_common.normalise.channel_scale`), said when not 0..255.

    ``sources``: channel -> file name, for messages (default: the channel's name).

    Raises
    ------
    InputError
        Naming the file, for values no segmentation holds.
    """
    scales = {}
    for name in info.channels:
        if info.normalisation_of(name) == UINT8 and name in channels:
            scale, note = channel_scale(channels[name], (sources or {}).get(name, f"channel {name!r}"))
            if note:
                logger.info("%s", note)
            scales[name] = scale
    return scales


def prepare_inputs(channels: Mapping[str, np.ndarray], info: ModelInfo,
                   scales: Mapping[str, float] | None = None) -> np.ndarray:
    """z-filter, bin and normalise each channel; stack channels last.

    Parameters
    ----------
    channels : name -> (nz, ny, nx) volume (memory maps welcome), all the same shape.
    info : the model's metadata (channel order, z_sum, bin factor, normalisation).
    scales : full scale of each segmentation channel (default: :func:`channel_scales`).

    Returns
    -------
    (nz // b, ny // b, nx // b, C) float32

    Raises
    ------
    InputError
        A channel is missing, the shapes differ, a channel holds NaN or Inf, or a
        segmentation channel holds values no segmentation holds.
    """
    missing = [name for name in info.channels if name not in channels]
    if missing:
        raise InputError(f"channels {missing} missing (the model needs {list(info.channels)})")
    first = channels[info.channels[0]]
    for name in info.channels:
        if channels[name].shape != first.shape:
            raise InputError(f"channel {name!r} has shape {channels[name].shape}, "
                             f"{info.channels[0]!r} has {first.shape}")
    if scales is None:
        scales = channel_scales(channels, info)
    b = info.bin_factor
    shape = (first.shape[0] // b, first.shape[1] // b, first.shape[2] // b, len(info.channels))
    out = np.empty(shape, dtype=np.float32)
    for j, name in enumerate(info.channels):
        binned = zfilter_bin(channels[name], info.z_sum, b)
        if not np.isfinite(binned).all():
            raise InputError(f"channel {name!r} contains NaN or Inf values")
        out[..., j] = normalise_volume(binned, info.normalisation_of(name), info.normalisation_window,
                                       scales.get(name, CHANNEL_SCALE))
    return out


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
