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
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.claims import OVERWRITE, RETRY, Claim, ClaimLost, ClaimStore, StoreError
from pom_common.errors import one_line
from pom_common.naming import tomogram_stem
from pom_common.workqueue import check_lease

from .arrays import SLAB
from .checks import check_channels, check_output_folder, check_outputs_are_not_inputs, select_classes
from .eligibility import TRY, Decision, fingerprint
from .inputs import Identity, NotReady, Prepared
from .keeper import KeeperWatch
from .options import ProcessOptions, Stop, WorkerResult, open_store
from .outputs import OutputWriter, make_writer
from .prefetch import Preparation
from .records import current_inputs, judge, outcome, superseded_here
from .segmenter import Predictor, choose_precision, make_predictor, segment_slabs
from .session import Model, announce, load_model

__all__ = ["ProcessOptions", "Stop", "Worker", "WorkerResult", "run_worker"]

logger = logging.getLogger(__name__)

#: Longest wait between looks at tomograms held by other workers.
POLL_SECONDS = 0.25


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
        self.keeper = KeeperWatch(name, opts.output_dir, opts.lease_seconds, opts.stall_seconds)
        self.predictor: Predictor | None = None  # kept while the slice size stays

    def decision(self, tomogram: Path) -> tuple[Decision, int, bool]:
        """What to do with ``tomogram`` now, the generation decided on, and whether it redoes an outcome."""
        stem = tomogram_stem(tomogram)
        state = self.store.state(stem)
        inputs = current_inputs(tomogram, self.model.info.channels, self.opts.channel_dirs)
        model = (self.model_path, self.recipe["model_sha256"])
        decision = judge(state, self.writer, self.fingerprint, inputs, self.conditions, self.overwrite_since,
                         self.retry_since, model)
        self.looked[stem] = (state.record, inputs)
        if decision == TRY and superseded_here(state.record, stem, self.writer, model):
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
            self.keeper.close()
            self.result.seconds = time.perf_counter() - started
            self.result.network_seconds = self.model.busy_seconds - busy
        if finished:
            for kind, since in ((OVERWRITE, self.overwrite_since), (RETRY, self.retry_since)):
                if since is not None:
                    with contextlib.suppress(OSError, StoreError):
                        self.store.close_campaign(kind, self.fingerprint)
        return self.result

    def _keep_waiting(self) -> bool:
        """Whether to wait for the tomograms other workers hold: only as the output folder's keeper (:class:`KeeperWatch`).

        Otherwise the worker ends, its ``left`` and ``keeper`` saying what it left to whom.
        """
        if self.keeper.keep_waiting():
            return True
        self.result.keeper = self.keeper.holder
        self.result.left = sorted(tomogram_stem(t) for t in self.waiting)
        logger.info("%s: the %d tomograms left are held by other workers; leaving them to them and to "
                    "this folder's keeper (%s)", self.name, len(self.result.left), self.result.keeper)
        return False

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

    def _outcome(self, stem: str, inputs: Identity | None, done: bool) -> dict[str, Any]:
        """The record of ``stem`` done by this worker (or the details of its failure): :func:`.records.outcome`."""
        run = {"fingerprint": self.fingerprint, "recipe": self.recipe, "model_path": self.model_path,
               "conditions": self.conditions}
        return outcome(self.looked.get(stem, (None, None))[0], self.writer, stem, run, inputs, done)

    def _process(self, tomogram: Path, claim: Claim, future: Preparation) -> None:
        """One tomogram's error boundary: done, failed (recorded), or abandoned (claim lost)."""
        stem = claim.stem
        try:
            prepared = future.result()
            self.store.progress()
            started = time.perf_counter()
            self._segment(prepared, claim, future)
            self.spare = prepared.inputs
            self.store.record_done(claim, self._outcome(stem, prepared.identity, done=True))
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
            try:
                self.store.record_failed(claim, message, self._outcome(stem, self.looked.get(stem, (None, None))[1],
                                                                       done=False))
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
        """Segment slab by slab into the writer (:func:`~pom_inference.segmenter.segment_slabs`)."""
        nz, ny, nx, c = prepared.inputs.shape
        segment_slabs(prepared, self._predictor((ny, nx, c)), self.writer, claim, self.store.still_owner,
                      self.store.progress, slab=SLAB, overlap=self.opts.overlap is not False, grid=self.opts.grid,
                      bin_factor=self.model.info.bin_factor, z_smooth=self.model.info.z_smooth,
                      preparation=preparation)

    def _predictor(self, shape: tuple[int, int, int]) -> Predictor:
        """The predictor for slices of ``shape`` (reused while tomograms keep that size: no new buffers)."""
        if self.predictor is None or self.predictor.shape != shape:
            self.predictor = None  # free the old buffers first
            self.predictor = make_predictor(self.opts, self.model, self.writer, shape)
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
