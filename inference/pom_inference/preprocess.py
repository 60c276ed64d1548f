"""Volumes to network inputs exactly as training saw them (pure arrays, no onnxruntime).

The scaling of each channel is :mod:`pom_common.normalise`'s contract; this module adds
the z-filter and binning of whole volumes, the channel stacking and the padding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from pom_common.constants import CHANNEL_SCALE
from pom_common.errors import InputError
from pom_common.modelmeta import ModelInfo
from pom_common.normalise import UINT8, VOLUME, canonical, channel_scale, normalise_volume
from pom_common.zfilter import zfilter_bin

logger = logging.getLogger(__name__)

#: Binned slices prepared at a time when inputs are prepared progressively (see :func:`prepare_inputs`).
PREPARE_SLICES = 32
#: Binned slices of the first part: the network starts on them while the rest is prepared.
FIRST_SLICES = 8


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


def input_shape(channels: Mapping[str, np.ndarray], info: ModelInfo) -> tuple[int, int, int, int]:
    """(nz // b, ny // b, nx // b, C) of the network input of ``channels``, after checking them.

    Raises
    ------
    InputError
        A channel is missing or the shapes differ.
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
    return (first.shape[0] // b, first.shape[1] // b, first.shape[2] // b, len(info.channels))


def prepare_inputs(channels: Mapping[str, np.ndarray], info: ModelInfo, out: np.ndarray | None = None,
                   on_ready: Callable[[int], None] | None = None, z_range: tuple[int, int] | None = None,
                   scales: Mapping[str, float] | None = None) -> np.ndarray:
    """z-filter, bin and normalise each channel; stack channels last.

    Parameters
    ----------
    channels : name -> (nz, ny, nx) volume (memory maps welcome), all the same shape.
    info : the model's metadata (channel order, z_sum, bin factor, normalisation).
    out : where to write (see Returns), e.g. allocated by the caller who waits for it.
    on_ready : called with z1 each time binned slices 0..z1 are final (a few slices at a
        time, so the caller can segment them while the rest is prepared). A channel
        standardised over the whole volume (``volume``) makes every slice final only at the end.
    z_range : (z0, z1): only binned slices z0..z1, returned as a (z1 - z0, ny, nx, C) array
        (not with ``volume`` channels, whose statistics need every slice).
    scales : full scale of each segmentation channel (default: :func:`channel_scales`).

    Returns
    -------
    (nz // b, ny // b, nx // b, C) float32: ``out`` when given.

    Raises
    ------
    InputError
        A channel is missing, the shapes differ, a channel holds NaN or Inf, or a
        segmentation channel holds values no segmentation holds.
    """
    shape = input_shape(channels, info)
    if scales is None:
        scales = channel_scales(channels, info)
    if z_range is not None:
        z0, z1 = max(0, z_range[0]), min(shape[0], z_range[1])
        part = np.empty((max(0, z1 - z0), *shape[1:]), dtype=np.float32)
        for j, name in enumerate(info.channels):
            how = canonical(info.normalisation_of(name))
            if how == VOLUME:
                raise ValueError("z_range: a channel standardised over the whole volume needs every slice")
            channel = np.empty(shape[:3], dtype=np.float32)  # only slices z0..z1 are computed (and touched)
            binned = zfilter_bin(channels[name], info.z_sum, info.bin_factor, out=channel, z_range=(z0, z1))[z0:z1]
            if not _finite(binned):
                raise InputError(f"channel {name!r} contains NaN or Inf values")
            part[..., j] = normalise_volume(binned, how, info.normalisation_window, scales.get(name, CHANNEL_SCALE))
        return part
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out: expected float32 {shape}, got {out.dtype} {out.shape}")
    hows = [canonical(info.normalisation_of(name)) for name in info.channels]
    whole = [j for j, how in enumerate(hows) if how == VOLUME]  # need every slice before the first is final
    for z0, z1 in _parts(shape[0]):
        for j, name in enumerate(info.channels):
            # read, z-filtered and binned in one pass, into the channel of the input
            binned = zfilter_bin(channels[name], info.z_sum, info.bin_factor, out=out[..., j], z_range=(z0, z1))[z0:z1]
            if not _finite(binned):
                raise InputError(f"channel {name!r} contains NaN or Inf values")
            if j not in whole:
                # slice by slice, in place
                normalise_volume(binned, hows[j], info.normalisation_window, scales.get(name, CHANNEL_SCALE))
        if on_ready is not None and not whole:
            on_ready(z1)
    for j in whole:
        normalise_volume(out[..., j], hows[j], info.normalisation_window,
                         scales.get(info.channels[j], CHANNEL_SCALE))
    if on_ready is not None and whole:
        on_ready(shape[0])
    return out


def _parts(nz: int) -> list[tuple[int, int]]:
    """(z0, z1) of the parts prepared in turn: a short first one, then :data:`PREPARE_SLICES` each."""
    bounds = [0, *range(min(nz, FIRST_SLICES), nz, PREPARE_SLICES), nz]
    return [(z0, z1) for z0, z1 in zip(bounds, bounds[1:]) if z1 > z0]


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
