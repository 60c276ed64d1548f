"""One tomogram through the network, slab by slab, into a worker's output writer.

The worker (:mod:`.worker`) owns the claim and decides what to segment; this module runs it:
the precision the run's model is used in, the predictor for a slice size, and the slab
pipeline (network, TTA average, z-smoothing, writing), with the outputs published only
while the claim is still ours and the inputs unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import numpy as np

from pom_common.claims import Claim, ClaimLost
from pom_common.errors import PomError

from .inputs import Prepared, check_unchanged
from .options import ProcessOptions
from .outputs import Inline, OnTomogramGrid, OutputWriter, in_background
from .predict import SlicePredictor
from .prefetch import Preparation
from .session import Model
from .wrapper import GraphPredictor
from .zsmooth import SmoothedSink

logger = logging.getLogger(__name__)

Predictor: TypeAlias = SlicePredictor | GraphPredictor


def make_predictor(opts: ProcessOptions, model: Model, writer: OutputWriter, shape: tuple[int, int, int]) -> Predictor:
    """A predictor for slices of ``shape``, its buffers allocated (keep it while the size stays).

    On a GPU the TTA runs in the wrapper graph beside the network (only the final planes
    come back); on the CPU the kernels of :mod:`pom_inference.tta` are faster.
    """
    batch = opts.batch or model.batch_for(shape[0], shape[1], opts.workers_per_device)
    graph = opts.tta_graph if opts.tta_graph is not None else model.provider == "cuda"
    if graph and model.backend is None:
        return GraphPredictor(model, shape, opts.tta, batch, writer.class_index, writer.kind)
    return SlicePredictor(model, shape, model.info.size_multiple, len(model.info.classes), opts.tta, batch,
                          writer.class_index, writer.kind)


def segment_slabs(prepared: Prepared, predictor: Predictor, writer: OutputWriter, claim: Claim,
                  still_owner: Callable[[Claim], bool], progress: Callable[[], None], *, slab: int, overlap: bool,
                  grid: str, bin_factor: int, z_smooth: int, preparation: Preparation | None = None) -> None:
    """Segment slab by slab into ``writer``; the outputs appear only if ``claim`` is still ours.

    With ``preparation``, each slab is segmented as soon as its inputs are prepared.
    ``progress`` is called after each slab (the claim store's heartbeat of work done).

    Raises
    ------
    ClaimLost
        The claim was taken over meanwhile: nothing is published.
    """
    nz, ny, nx, _ = prepared.inputs.shape
    step = min(predictor.batch, slab)

    def still_ours() -> None:  # asked before replacing a different file already in place
        if not still_owner(claim):
            raise ClaimLost(claim.stem)

    on_tomogram = grid == "tomogram"
    shape, voxel_size = ((prepared.tomogram_shape, prepared.voxel_size / bin_factor) if on_tomogram
                         else ((nz, ny, nx), prepared.voxel_size))
    with writer.open(claim.stem, shape, voxel_size, before_replace=still_ours, generation=claim.generation) as sink:
        if on_tomogram:
            sink = OnTomogramGrid(sink, bin_factor, shape)
        # z-consistency (the model's z_smooth) runs in the writing thread, on planes already averaged
        smoothed = SmoothedSink(sink, z_smooth, nz) if z_smooth > 1 else None
        target = smoothed or sink
        with in_background(target) if overlap else contextlib.nullcontext(Inline(target)) as out:
            for z0 in range(0, nz, step):
                if claim.lost.is_set():
                    raise ClaimLost(claim.stem)
                if preparation is not None:
                    preparation.wait(min(nz, z0 + step))
                # averaged and written while the next slab is computed
                out.write(z0, predictor(prepared.inputs[z0 : z0 + step], deferred=overlap))
                progress()
        if smoothed is not None:  # every slab written: the last slices are final now
            smoothed.finish()
        if preparation is not None:
            preparation.wait_finished()
        check_unchanged(prepared.files, prepared.identity)  # written to while we read it: publish nothing
        still_ours()


def choose_precision(opts: ProcessOptions, model: Model) -> Model:
    """The model in ``opts.precision``, if it agrees with float32 on the first tomogram (else float32), said in one line."""
    from .precision import SAMPLE_SLICES, choose, resolve
    from .prefetch import sample_inputs

    if resolve(opts.precision, model.device) == "fp32":
        return model
    first = Path(opts.tomograms[0])
    try:
        sample = sample_inputs(first, model.info, opts.channel_dirs, opts.fallback_voxel_size, SAMPLE_SLICES)
        from .preprocess import pad_to_multiple

        sample = np.ascontiguousarray(pad_to_multiple(sample, model.info.size_multiple)[0])
    except PomError as exc:
        logger.warning("precision %s: cannot read a slab of %s to check it (%s); using fp32", opts.precision,
                       first.name, exc)
        return model
    chosen, line = choose(model, opts.precision, sample, first.name)
    if line:
        (logger.info if chosen is not model else logger.warning)("%s", line)
    return chosen
