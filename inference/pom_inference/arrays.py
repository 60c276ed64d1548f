"""The array API: segment volumes held in memory, no files involved.

>>> model = load_model("shared.onnx")                      # doctest: +SKIP
>>> probabilities = segment(model, {"Density": tomogram})  # (nz/2, ny/2, nx/2, classes)

:func:`iter_slabs` yields the same probabilities a few slices at a time, so memory stays
bounded by the preprocessed input (an eighth of each channel's voxels, float32) and one
slab of output. The file pipeline (:mod:`pom_inference.worker`) is built on
:func:`predict_slabs`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from pom_common.defaults import TTA
from pom_common.modelmeta import ModelInfo

from .predict import DEFAULT_BATCH, SlicePredictor
from .preprocess import prepare_inputs
from .session import Model
from .zsmooth import smooth_slabs

#: Slices segmented at once by default (bounds the memory of predictions).
SLAB = 16

Volumes = Mapping[str, np.ndarray] | np.ndarray


def as_channels(volumes: Volumes, info: ModelInfo) -> Mapping[str, np.ndarray]:
    """Channel name -> volume; a bare array is accepted for a single-channel model.

    Raises
    ------
    ValueError
        A bare array given to a model with several input channels.
    """
    if isinstance(volumes, np.ndarray):
        if len(info.channels) != 1:
            raise ValueError(f"the model needs channels {list(info.channels)}; pass a dict of volumes")
        return {info.channels[0]: volumes}
    return volumes


def predict_slabs(model: Model, inputs: np.ndarray, *, tta: int = TTA, batch: int = DEFAULT_BATCH,
                  slab: int = SLAB) -> Iterator[tuple[int, np.ndarray]]:
    """Predict preprocessed inputs ``slab`` slices at a time.

    Parameters
    ----------
    model : a loaded model.
    inputs : (nz', ny', nx', C) float32 from :func:`pom_inference.preprocess.prepare_inputs`.

    Yields
    ------
    (z0, probabilities) with probabilities (n, ny', nx', K) float32 for slices z0..z0+n
    (the bits of :func:`pom_inference.predict.predict_slices`, averaged over the model's
    ``z_smooth`` slices, :mod:`pom_inference.zsmooth`; with smoothing the slabs need not be
    ``slab`` slices each, but they come in order and cover the volume).
    """
    nz, ny, nx, c = inputs.shape
    k = len(model.info.classes)
    predictor = SlicePredictor(model, (ny, nx, c), model.info.size_multiple, k, tta, batch)

    def raw() -> Iterator[tuple[int, np.ndarray]]:
        for z0 in range(0, nz, slab):
            n = min(slab, nz - z0)
            out = np.empty((n, ny, nx, k), dtype=np.float32)
            for i in range(0, n, predictor.batch):
                planes = predictor(inputs[z0 + i : z0 + min(n, i + predictor.batch)])  # (K, m, ny, nx)
                out[i : i + planes.shape[1]] = np.moveaxis(planes, 0, -1)
            yield z0, out

    yield from smooth_slabs(raw(), model.info.z_smooth, nz)


def iter_slabs(model: Model, volumes: Volumes, *, tta: int = TTA, batch: int = DEFAULT_BATCH,
               slab: int = SLAB) -> Iterator[tuple[int, np.ndarray]]:
    """Segment ``volumes`` and yield the probabilities slab by slab.

    Parameters
    ----------
    model : from :func:`pom_inference.load_model`.
    volumes : channel name -> (nz, ny, nx) volume (all the model's input channels, same
        shape; memory maps welcome), or one array for a single-channel model.
    tta : 1..4 rotations, or 8 (rotations x flip), averaged.
    batch : slices per ONNX Runtime call.
    slab : slices per yielded block.

    Yields
    ------
    (z0, probabilities): (n, nz // b ... ) blocks, probabilities (n, ny // b, nx // b, K)
    float32 for binned slices z0..z0+n, K = ``model.info.classes``.
    """
    inputs = prepare_inputs(as_channels(volumes, model.info), model.info)
    yield from predict_slabs(model, inputs, tta=tta, batch=batch, slab=slab)


def segment(model: Model, volumes: Volumes, *, tta: int = TTA, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Class probabilities of a whole volume.

    Parameters
    ----------
    model, volumes, tta, batch : as for :func:`iter_slabs`.

    Returns
    -------
    (nz // b, ny // b, nx // b, K) float32, b = ``model.info.bin_factor``; channel k is
    the probability of ``model.info.classes[k]``.
    """
    inputs = prepare_inputs(as_channels(volumes, model.info), model.info)
    out = np.empty((*inputs.shape[:3], len(model.info.classes)), dtype=np.float32)
    for z0, probabilities in predict_slabs(model, inputs, tta=tta, batch=batch):
        out[z0 : z0 + len(probabilities)] = probabilities
    return out
