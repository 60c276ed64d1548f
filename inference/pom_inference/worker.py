"""One worker: claim a tomogram, read, preprocess, segment, write, record, release; repeat.

Any number of workers on any number of servers run this loop over the same tomograms;
the claim store (:mod:`pom_common.claims`) makes each tomogram processed once. The next
tomogram is read and preprocessed in a background thread while the current one is
segmented. Every error inside one tomogram's work becomes that tomogram's recorded
failure; the others go on. A worker whose claim was taken over abandons the tomogram
without a word and waits for it like any other. Waiting for tomograms other workers hold
is the job of one worker per output folder, the keeper (:mod:`pom_inference.keeper`); the
others end, reporting what they left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.claims import OVERWRITE, RETRY, Claim, ClaimLost, ClaimStore, StoreError, TomogramState
from pom_common.defaults import LEASE_SECONDS, STALL_SECONDS, TTA
from pom_common.errors import InputError, PomError, one_line
from pom_common.naming import tomogram_stem
from pom_common.workqueue import FileClaimStore, check_lease

from .arrays import SLAB
from .checks import check_channels, check_output_folder, check_outputs_are_not_inputs, select_classes
from .eligibility import (
    TRY,
    Decision,
    classify_outputs,
    decide,
    fingerprint,
    recorded_outputs,
    recorded_recipes,
    superseded,
)
from .forms import OutputForm
from .inputs import Identity, NotReady, Prepared, check_unchanged, identity, input_files
from .keeper import ROLE, keeper_store
from .outputs import Inline, OnTomogramGrid, OutputWriter, in_background, make_writer
from .predict import SlicePredictor
from .prefetch import Preparation
from .session import Model, announce, load_model
from .wrapper import GraphPredictor
from .zsmooth import SmoothedSink

logger = logging.getLogger(__name__)

#: Longest wait between looks at tomograms held by other workers.
POLL_SECONDS = 0.25
#: A keeper's claim whose mtime moved by this much (s) since first seen has been refreshed (beyond
#: 1 s timestamps and clock reading jitter; its heartbeats move it by the keeper lease / 4).
HEARTBEAT_SEEN = 1.0


class Stop(BaseException):
    """Raised by the signal handlers; not an ``Exception``, so no error boundary swallows it."""


@dataclass(frozen=True)
class ProcessOptions:
    """Everything a worker needs; passed by value to each worker process."""

    model: str
    tomograms: tuple[str, ...]
    output_dir: str
    channel_dirs: tuple[str, ...] = ()  # where <stem>__<channel>.mrc are looked for (before the tomogram's folder)
    classes: tuple[str, ...] | None = None  # subset of the model's classes to write
    tta: int = TTA
    dtype: str = "float32"  # output writer: "float32" or "uint8" (0..127 in one signed byte, as Pom 1.2 writes)
    grid: str = "binned"  # outputs on the network's binned grid, or "tomogram": upsampled to the tomogram's
    overwrite: bool = False  # redo every tomogram once for this run (also those of other runs' outputs)
    retry_failed: bool = False  # try recorded failures once more
    lease_seconds: float = LEASE_SECONDS
    stall_seconds: float = STALL_SECONDS  # no progress this long: let the claims expire
    fallback_voxel_size: float | None = None  # used when a header says 0 or 1
    batch: int | None = None  # slices per ONNX Runtime call (None: chosen from free GPU memory, else 8)
    poll_seconds: float | None = None  # wait between looks at claims held by others
    threads: int | None = None
    expect_channels: tuple[str, ...] | None = None  # refuse a model whose inputs differ (project runs)
    overlap: bool | None = None  # write slab n while slab n + 1 is predicted (None: yes)
    allow_voxel_size_mismatch: bool = False  # segment tomograms whose voxel size differs from the model's
    precision: str = "fp32"  # fp32, fp16, int8 or auto (pom_inference.precision), checked against fp32 first
    workers_per_device: int = 1  # workers sharing each device (they share its free memory)
    tta_graph: bool | None = None  # TTA and post-processing in an ONNX graph around the network (None: on a GPU)
    form: OutputForm = OutputForm()  # label map and/or OME-Zarr (pom_inference.forms); default: MRC per class

    def conditions(self) -> dict[str, Any]:
        """The settings that decide whether a tomogram is refused (recorded with failures)."""
        return {"allow_voxel_size_mismatch": self.allow_voxel_size_mismatch}


@dataclass
class WorkerResult:
    """What one worker did; returned to the driver."""

    name: str
    classes: tuple[str, ...] = ()
    fingerprint: str = ""
    channels: tuple[str, ...] = ()  # the model's input channels
    model: tuple[str, str] = ("", "")  # the model's path and the sha256 of the bytes loaded
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # inputs still being written: not tried
    fatal: PomError | None = None  # the worker could not start, or its state folder failed
    stopped: str = ""  # the signal that stopped it
    unreleased: list[str] = field(default_factory=list)  # claims it could not give up (they expire)
    left: list[str] = field(default_factory=list)  # held by other workers when it ended: left to them and the keeper
    keeper: str = ""  # who keeps the folder, when it left tomograms to others ("host pid N")
    seconds: float = 0.0  # from the model loaded to the end of the loop
    network_seconds: float = 0.0  # of which the network was running
    input_bytes: int = 0  # of the tomograms (and channels) it completed


def open_store(opts: ProcessOptions) -> FileClaimStore:
    """The claim store of ``opts.output_dir`` (one per output folder, whatever the model)."""
    return FileClaimStore(opts.output_dir, opts.lease_seconds, stall_seconds=opts.stall_seconds)


def current_inputs(tomogram: Path, channels: tuple[str, ...], channel_dirs: tuple[str, ...]) -> Identity | None:
    """The identity of a tomogram's input files now; None when one cannot be found or looked at."""
    try:
        return identity(input_files(tomogram, channels, channel_dirs))
    except InputError:
        return None


def judge(state: TomogramState, writer: OutputWriter, fingerprint_: str, inputs: Identity | None,
          conditions: dict[str, Any], overwrite_since: float | None = None,
          retry_since: float | None = None, model: tuple[str, str] | None = None) -> Decision:
    """:func:`pom_inference.eligibility.decide`, after looking at the output files the newest record lists.

    ``model``: this run's (model path, sha256 of its bytes): outputs of an earlier version
    of that file are superseded, not protected.
    """
    names = [p.name for p in writer.paths(state.stem)]
    intact = writer.intact(recorded_outputs(state.record))
    outputs = classify_outputs(state.record, names, fingerprint_, intact, *(model or (None, None)))
    return decide(state, outputs, fingerprint_, inputs=inputs, conditions=conditions,
                  overwrite_since=overwrite_since, retry_since=retry_since)


class Worker:
    """The claim loop of one worker process (or of the only worker, in-process)."""

    def __init__(self, opts: ProcessOptions, model: Model, name: str) -> None:
        self.opts = opts
        self.model = model
        self.name = name
        self.preparations: list[Preparation] = []  # started, maybe not finished (cancelled when the worker stops)
        # The input array of the last tomogram segmented, for the next preparation of the same shape: preparations
        # run one after the other in one thread, so the one it goes to starts after its own has ended.
        self.spare: np.ndarray | None = None
        check_channels(model.info, opts.expect_channels, opts.model)
        classes, index = select_classes(model.info, opts.classes, opts.model)
        self.writer: OutputWriter = make_writer(opts.dtype, opts.output_dir, classes, index, opts.form)
        check_output_folder(opts.output_dir)
        check_outputs_are_not_inputs(opts.tomograms, model.info.channels, opts.channel_dirs, opts.output_dir, classes)
        calibration = tomogram_stem(Path(opts.tomograms[0])) if model.precision.startswith("int8") else None
        self.fingerprint, self.recipe = fingerprint(opts.model, classes, opts.dtype, opts.tta, opts.fallback_voxel_size,
                                                    model.precision, calibration, model.sha256 or None, opts.grid,
                                                    opts.form.recipe(classes))
        self.model_path = os.path.abspath(opts.model)
        self.conditions = opts.conditions()
        store = open_store(opts)
        store.check_writable()  # another user's folders: one line, not a traceback
        check_lease(opts.lease_seconds, store.timestamp_granularity())
        self.store: ClaimStore = store
        self.clock_offset = store.now() - time.time()  # the filesystem's clock, for inputs being written
        self.overwrite_since = self.store.campaign(OVERWRITE, self.fingerprint) if opts.overwrite else None
        self.retry_since = self.store.campaign(RETRY, self.fingerprint) if opts.retry_failed else None
        self.poll = opts.poll_seconds if opts.poll_seconds is not None else min(POLL_SECONDS, opts.lease_seconds / 4)
        tomograms = [Path(t) for t in opts.tomograms]
        # Start at a different place per worker to reduce contention; the order does not change results.
        offset = (hash((name, os.getpid())) % len(tomograms)) if tomograms else 0
        self.queue: deque[Path] = deque(tomograms[offset:] + tomograms[:offset])
        self.waiting: list[Path] = []  # held by other workers: looked at again after a poll
        self.attempted: set[str] = set()  # tried once by this worker: never again in this run
        self.looked: dict[str, tuple[Any, Identity | None]] = {}  # stem -> (newest record, inputs) when claimed
        self.result = WorkerResult(name, classes, self.fingerprint, tuple(model.info.channels),
                                   (self.model_path, self.recipe["model_sha256"]))
        self.keeper_store: FileClaimStore | None = None  # opened when it first runs out of work
        self.keeper: Claim | None = None  # held while this worker is the folder's keeper
        self.keeper_seen: tuple[int, float] | None = None  # another keeper's (generation, last heartbeat)
        self.predictor: SlicePredictor | GraphPredictor | None = None  # kept while the slice size stays

    def decision(self, tomogram: Path) -> tuple[Decision, int, bool]:
        """What to do with ``tomogram`` now, the generation decided on, and whether it redoes an outcome."""
        stem = tomogram_stem(tomogram)
        state = self.store.state(stem)
        inputs = current_inputs(tomogram, self.model.info.channels, self.opts.channel_dirs)
        decision = judge(state, self.writer, self.fingerprint, inputs, self.conditions, self.overwrite_since,
                         self.retry_since, (self.model_path, self.recipe["model_sha256"]))
        self.looked[stem] = (state.record, inputs)
        if decision == TRY and self._superseded(state.record, stem):
            logger.info("%s: its outputs were made by an earlier version of %s (trained again since): segmented again",
                        stem, self.model_path)
        return decision, state.generation, state.done is not None or state.failure is not None

    def _next_claim(self) -> tuple[Path, Claim] | None:
        """The next tomogram to work on, claimed; None when every one is finished or held by others."""
        while self.queue:
            tomogram = self.queue.popleft()
            stem = tomogram_stem(tomogram)
            if stem in self.attempted:
                continue
            decision, generation, redo = self.decision(tomogram)
            if decision != TRY:
                continue
            # Claimed only if nobody moved on since we looked (else: look again after a poll).
            claim = self.store.claim(stem, expected=generation, redo=redo)
            if claim is None:
                self.waiting.append(tomogram)
                continue
            self.attempted.add(stem)
            if claim.taken_over:  # from a stopped worker: remove what it left half-written
                self.writer.remove_temporaries(stem, below=claim.generation)
            return tomogram, claim
        return None

    def run(self) -> WorkerResult:
        """Process tomograms until every one is finished (waiting for others' claims); never raises Stop."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pom-prefetch")
        pending: tuple[Path, Claim, Preparation] | None = None
        finished = False
        started, busy = time.perf_counter(), self.model.busy_seconds
        try:
            while True:
                if pending is None:
                    item = self._next_claim()
                    if item is None:
                        if not self.waiting:
                            finished = True
                            break
                        if not self._keep_waiting():
                            break
                        time.sleep(self.poll)  # held by others: wait for them to finish or go stale
                        self.queue.extend(self.waiting)
                        self.waiting.clear()
                        continue
                    pending = (*item, self._prefetch(pool, item[0]))
                tomogram, claim, future = pending
                pending = None
                upcoming = self._next_claim()  # read the next tomogram while this one is segmented
                if upcoming is not None:
                    pending = (*upcoming, self._prefetch(pool, upcoming[0]))
                self._process(tomogram, claim, future)
        except Stop as stop:
            self.result.stopped = str(stop) or "a signal"
        except StoreError as exc:
            logger.error("%s: %s", self.name, exc)
            self.result.fatal = exc
        finally:
            for preparation in self.preparations:  # stopping or failing: no tomogram prepared in vain
                preparation.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self.result.unreleased = self.store.close()
            # Give the keeper role up (else it passes on after the lease); also removes the clock
            # file of the keepers' folder, which a killed keeper on this host may have left.
            (self.keeper_store or keeper_store(self.opts.output_dir, self.opts.lease_seconds)).close()
            self.result.seconds = time.perf_counter() - started
            self.result.network_seconds = self.model.busy_seconds - busy
        if finished:
            for kind, since in ((OVERWRITE, self.overwrite_since), (RETRY, self.retry_since)):
                if since is not None:
                    with contextlib.suppress(OSError, StoreError):
                        self.store.close_campaign(kind, self.fingerprint)
        return self.result

    def _keep_waiting(self) -> bool:
        """Whether to wait for the tomograms other workers hold: only as the output folder's keeper.

        The first worker to run out of work claims the keeper role and waits, taking over
        the claims that expire, until every tomogram is finished. Any other ends (False), its
        ``left`` and ``keeper`` saying what it left to whom, once it has seen the keeper alive:
        a heartbeat of the keeper's claim after it ran out of work (within a keeper heartbeat,
        :data:`~pom_inference.keeper.LEASE` / 4), so nobody leaves work to a keeper that died;
        a keeper that does not refresh its claim within its lease is replaced by this worker.
        A keeper that was paused past its lease and replaced meanwhile ends the same way.
        """
        if self.keeper is None or self.keeper.lost.is_set():
            if self.keeper_store is None:
                self.keeper_store = keeper_store(self.opts.output_dir, self.opts.lease_seconds, self.opts.stall_seconds)
            self.keeper = self.keeper_store.claim(ROLE)
            if self.keeper is None:
                state = self.keeper_store.state(ROLE)
                holder = state.claim
                if holder is None or holder.stale:  # the keeper changed just now: look again after a poll
                    return True
                beat = (state.generation, time.time() - holder.age)  # which keeper, and when it last refreshed
                if self.keeper_seen is None or self.keeper_seen[0] != beat[0]:
                    self.keeper_seen = beat
                    return True  # wait for its next heartbeat: proof that it lives
                if beat[1] < self.keeper_seen[1] + HEARTBEAT_SEEN:
                    return True
                self.result.keeper = f"{holder.host} pid {holder.pid}"
                self.result.left = sorted(tomogram_stem(t) for t in self.waiting)
                logger.info("%s: the %d tomograms left are held by other workers; leaving them to them and to "
                            "this folder's keeper (%s)", self.name, len(self.result.left), self.result.keeper)
                return False
            logger.info("%s: the tomograms left are held by other workers; waiting for them as this folder's "
                        "keeper (claims not refreshed within their lease are taken over)", self.name)
        assert self.keeper_store is not None
        self.keeper_store.progress()
        return True

    def _superseded(self, record: Any, stem: str) -> bool:
        """Whether an output of ``stem`` this run writes is an intact one of an earlier version of its model."""
        recorded = recorded_outputs(record)
        recipes = recorded_recipes(record)
        names = [p.name for p in self.writer.paths(stem) if p.name in recorded]
        intact = self.writer.intact({n: recorded[n] for n in names})
        return any(intact[n] and superseded(recipes.get(str(recorded[n].get("fingerprint")), {}), self.model_path,
                                            self.recipe["model_sha256"]) for n in names)

    def _prefetch(self, pool: ThreadPoolExecutor, tomogram: Path) -> Preparation:
        preparation = Preparation(tomogram, self.model.info, self.opts.channel_dirs, self.opts.fallback_voxel_size,
                                  allow_voxel_size_mismatch=self.opts.allow_voxel_size_mismatch, clock=self._clock,
                                  spare=self.spare)
        self.spare = None
        self.preparations = [p for p in self.preparations if not p.finished] + [preparation]
        pool.submit(preparation.run)
        return preparation

    def _clock(self) -> float:
        """The filesystem's time (this host's clock, corrected by the offset measured at start)."""
        return time.time() + self.clock_offset

    def _carried(self, stem: str, replaced: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The outputs (and their recipes) of the newest record that stay: intact, and not among ``replaced``."""
        record, _ = self.looked.get(stem, (None, None))
        recorded = {n: e for n, e in recorded_outputs(record).items() if n not in replaced}
        intact = self.writer.intact(recorded)
        outputs = {n: e for n, e in recorded.items() if intact.get(n)}
        recipes = recorded_recipes(record)
        kept = {str(e.get("fingerprint")) for e in outputs.values()}
        return outputs, {fp: r for fp, r in recipes.items() if fp in kept}

    def _process(self, tomogram: Path, claim: Claim, future: Preparation) -> None:
        """One tomogram's error boundary: done, failed (recorded), or abandoned (claim lost)."""
        stem = claim.stem
        try:
            prepared = future.result()
            self.store.progress()
            started = time.perf_counter()
            self._segment(prepared, claim, future)
            self.spare = prepared.inputs
            mine = {name: {**entry, "fingerprint": self.fingerprint} for name, entry in self.writer.describe(stem).items()}
            outputs, recipes = self._carried(stem, list(mine))
            recipes[self.fingerprint] = {"recipe": self.recipe, "model_path": self.model_path, "inputs": prepared.identity}
            record = {"fingerprint": self.fingerprint, "recipe": self.recipe, "model_path": self.model_path,
                      "inputs": prepared.identity, "conditions": self.conditions, "outputs": {**outputs, **mine},
                      "recipes": recipes}
            self.store.record_done(claim, record)
            self.result.done.append(stem)
            self.result.input_bytes += prepared.input_bytes
            seconds = time.perf_counter() - started
            logger.info("%s  done in %.1f s (read+preprocess %.1f s, segment %.1f s)  %s  %s", stem,
                        prepared.seconds + seconds, prepared.seconds, seconds, self.model.provider, self.name)
        except ClaimLost:  # taken over meanwhile: the new owner decides; wait for it like any other
            logger.warning("%s: %s: claim taken over by another worker; left to it", self.name, stem)
            self.attempted.discard(stem)
            self.waiting.append(tomogram)
        except NotReady as exc:  # being written: no outcome recorded, tried again by a later run
            self.result.skipped.append((stem, one_line(exc)))
            logger.warning("%s  skipped for now: %s  %s", stem, one_line(exc), self.name)
        except StoreError:
            raise
        except Exception as exc:
            message = one_line(exc)
            logger.debug("%s: %s", stem, traceback.format_exc())
            outputs, recipes = self._carried(stem, [])
            details = {"fingerprint": self.fingerprint, "model_path": self.model_path,
                       "inputs": self.looked.get(stem, (None, None))[1], "conditions": self.conditions,
                       "outputs": outputs, "recipes": recipes}
            try:
                self.store.record_failed(claim, message, details)
            except ClaimLost:
                logger.warning("%s: %s: claim taken over by another worker (here it ended in: %s); left to it",
                               self.name, stem, message)
                self.attempted.discard(stem)  # the new owner decides; wait for it like any other
                self.waiting.append(tomogram)
                return
            self.result.failed.append((stem, message))
            logger.error("%s  FAILED: %s  %s", stem, message, self.name)
        finally:
            with contextlib.suppress(StoreError):
                self.store.release(claim)

    def _segment(self, prepared: Prepared, claim: Claim, preparation: Preparation | None = None) -> None:
        """Segment slab by slab into the writer; the outputs appear only if we still own the claim.

        With ``preparation``, each slab is segmented as soon as its inputs are prepared.
        """
        nz, ny, nx, c = prepared.inputs.shape
        predictor = self._predictor((ny, nx, c))
        step = min(predictor.batch, SLAB)
        overlap = self.opts.overlap if self.opts.overlap is not None else True

        def still_ours() -> None:  # asked before replacing a different file already in place
            if not self.store.still_owner(claim):
                raise ClaimLost(claim.stem)

        b = self.model.info.bin_factor
        on_tomogram = self.opts.grid == "tomogram"
        shape, voxel_size = (prepared.tomogram_shape, prepared.voxel_size / b) if on_tomogram else ((nz, ny, nx),
                                                                                                   prepared.voxel_size)
        with self.writer.open(claim.stem, shape, voxel_size, before_replace=still_ours,
                              generation=claim.generation) as sink:
            if on_tomogram:
                sink = OnTomogramGrid(sink, b, shape)
            # z-consistency (the model's z_smooth) runs in the writing thread, on planes already averaged
            smoothed = SmoothedSink(sink, self.model.info.z_smooth, nz) if self.model.info.z_smooth > 1 else None
            target = smoothed or sink
            with in_background(target) if overlap else contextlib.nullcontext(Inline(target)) as out:
                for z0 in range(0, nz, step):
                    if claim.lost.is_set():
                        raise ClaimLost(claim.stem)
                    if preparation is not None:
                        preparation.wait(min(nz, z0 + step))
                    # averaged and written while the next slab is computed
                    out.write(z0, predictor(prepared.inputs[z0 : z0 + step], deferred=overlap))
                    self.store.progress()
            if smoothed is not None:  # every slab written: the last slices are final now
                smoothed.finish()
            if preparation is not None:
                preparation.wait_finished()
            check_unchanged(prepared.files, prepared.identity)  # written to while we read it: publish nothing
            if not self.store.still_owner(claim):
                raise ClaimLost(claim.stem)

    def _predictor(self, shape: tuple[int, int, int]) -> SlicePredictor | GraphPredictor:
        """The predictor for slices of ``shape`` (reused while tomograms keep that size: no new buffers).

        On a GPU the TTA runs in the wrapper graph beside the network (only the final planes
        come back); on the CPU the kernels of :mod:`pom_inference.tta` are faster.
        """
        if self.predictor is None or self.predictor.shape != shape:
            self.predictor = None  # free the old buffers first
            info = self.model.info
            batch = self.opts.batch or self.model.batch_for(shape[0], shape[1], self.opts.workers_per_device)
            graph = self.opts.tta_graph if self.opts.tta_graph is not None else self.model.provider == "cuda"
            if graph and self.model.backend is None:
                self.predictor = GraphPredictor(self.model, shape, self.opts.tta, batch, self.writer.class_index,
                                                self.writer.kind)
            else:
                self.predictor = SlicePredictor(self.model, shape, info.size_multiple, len(info.classes),
                                                self.opts.tta, batch, self.writer.class_index, self.writer.kind)
        return self.predictor


def run_worker(opts: ProcessOptions, device: int | None, name: str) -> WorkerResult:
    """Load the model on ``device`` (None: the CPU) and run one worker until the work is done."""
    model = load_model(opts.model, device=device, threads=opts.threads, quiet=True, tf32=False)
    check_channels(model.info, opts.expect_channels, opts.model)  # a model that does not fit: refused first
    select_classes(model.info, opts.classes, opts.model)
    model = choose_precision(opts, model)
    worker = Worker(opts, model, name)
    announce(model)
    return worker.run()


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
