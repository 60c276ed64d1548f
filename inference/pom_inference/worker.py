"""One worker: claim a tomogram, read, preprocess, segment, write, record, release; repeat.

Any number of workers on any number of servers run this loop over the same tomograms;
the claim store (:mod:`pom_common.claims`) makes each tomogram processed once. The next
tomogram is read and preprocessed in a background thread while the current one is
segmented. Every error inside one tomogram's work becomes that tomogram's recorded
failure; the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pom_common.claims import Claim, ClaimStore, TomogramState
from pom_common.errors import ConfigError, LockError, PomError, one_line
from pom_common.modelmeta import ModelInfo
from pom_common.naming import tomogram_stem
from pom_common.workqueue import FileClaimStore

from .arrays import SLAB, predict_slabs
from .inputs import Prepared, prepare
from .outputs import OutputWriter, in_background, make_writer
from .session import Model, announce, load_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessOptions:
    """Everything a worker needs; passed by value to each worker process."""

    model: str
    tomograms: tuple[str, ...]
    output_dir: str
    channel_dirs: tuple[str, ...] = ()  # where <stem>__<channel>.mrc are looked for (before the tomogram's folder)
    classes: tuple[str, ...] | None = None  # subset of the model's classes to write
    tta: int = 4
    dtype: str = "float32"  # output writer: "float32" or "uint8" (0..255, as Ais writes)
    overwrite: bool = False
    retry_failed: bool = False
    lease_seconds: float = 120.0
    fallback_voxel_size: float | None = None  # used when a header says 0 or 1
    batch: int | None = None  # slices per ONNX Runtime call (None: chosen from free GPU memory, else 8)
    poll_seconds: float | None = None  # wait between looks at claims held by others
    threads: int | None = None
    expect_channels: tuple[str, ...] | None = None  # refuse a model whose inputs differ (project runs)
    overlap: bool | None = None  # write slab n while slab n + 1 is predicted (None: on a GPU)


@dataclass
class WorkerResult:
    """What one worker did; returned to the driver."""

    name: str
    classes: tuple[str, ...] = ()
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    fatal: PomError | None = None  # the worker could not start (bad model, bad options)


def namespace_of(model: str | os.PathLike) -> str:
    """Queue state is kept per model (file stem), so several models can share an output folder."""
    return Path(model).stem


def select_classes(info: ModelInfo, requested: Sequence[str] | None, model: str) -> tuple[tuple[str, ...], list[int]]:
    """The classes to write (default: all of the model's) and their output indices.

    Raises
    ------
    ConfigError
        A requested class that the model does not produce.
    """
    classes = tuple(requested) if requested else info.classes
    unknown = [c for c in classes if c not in info.classes]
    if unknown:
        raise ConfigError(f"classes {unknown} requested, but {model} produces {list(info.classes)}")
    return classes, [info.classes.index(c) for c in classes]


def check_channels(info: ModelInfo, expected: Sequence[str] | None, model: str) -> None:
    """Refuse a model whose input channels differ from the project's ``macromolecules``."""
    if expected is not None and tuple(info.channels) != tuple(expected):
        raise ConfigError(f"{model}: the model expects channels {list(info.channels)} but 'macromolecules' is "
                          f"{list(expected)}; retrain it or fix the configuration")


def is_eligible(state: TomogramState, outputs_complete: bool, *, overwrite: bool, retry_failed: bool,
                since: float) -> bool:
    """Whether a worker started at store time ``since`` should try this tomogram (pure).

    Done (record and every output present) is redone only with ``overwrite``, and only if
    it was done before ``since``; a recorded failure is retried only with
    ``retry_failed``, likewise. Pending and running tomograms are tried (a live claim
    makes the attempt fail cheaply).
    """
    if state.done is not None and outputs_complete:
        return overwrite and state.done_at is not None and state.done_at < since
    if state.failure is not None:
        return retry_failed and state.failed_at is not None and state.failed_at < since
    return True


class Worker:
    """The claim loop of one worker process (or of the only worker, in-process)."""

    def __init__(self, opts: ProcessOptions, model: Model, name: str) -> None:
        self.opts = opts
        self.model = model
        self.name = name
        check_channels(model.info, opts.expect_channels, opts.model)
        classes, index = select_classes(model.info, opts.classes, opts.model)
        self.writer: OutputWriter = make_writer(opts.dtype, opts.output_dir, classes, index)
        os.makedirs(opts.output_dir, exist_ok=True)
        self.store: ClaimStore = FileClaimStore(opts.output_dir, opts.lease_seconds, namespace_of(opts.model))
        self.since = self.store.now()
        lease = opts.lease_seconds
        self.poll = opts.poll_seconds if opts.poll_seconds is not None else max(min(lease / 4, 10.0), 0.05)
        tomograms = [Path(t) for t in opts.tomograms]
        # Start at a different place per worker to reduce contention; the order does not change results.
        offset = (hash((name, os.getpid())) % len(tomograms)) if tomograms else 0
        self.order = tomograms[offset:] + tomograms[:offset]
        self.attempted: set[str] = set()
        self.result = WorkerResult(name, classes)

    def _eligible(self, tomogram: Path) -> bool:
        stem = tomogram_stem(tomogram)
        if stem in self.attempted:
            return False
        return is_eligible(self.store.state(stem), self.writer.complete(stem), overwrite=self.opts.overwrite,
                           retry_failed=self.opts.retry_failed, since=self.since)

    def _next_claim(self) -> tuple[Path, Claim] | None:
        for tomogram in self.order:
            if not self._eligible(tomogram):
                continue
            claim = self.store.claim(tomogram_stem(tomogram))
            if claim is None:
                continue
            if not self._eligible(tomogram):  # finished by someone else between the look and the claim
                self.store.release(claim)
                continue
            self.attempted.add(claim.stem)
            self.store.clear_done(claim)  # outputs are about to be replaced
            if claim.taken_over:  # from a stopped worker: remove what it left half-written
                self.writer.remove_temporaries(claim.stem)
            return tomogram, claim
        return None

    def run(self) -> WorkerResult:
        """Process tomograms until every one is done or failed (waiting for others' claims)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pom-prefetch")
        pending: tuple[Path, Claim, Future[Prepared]] | None = None
        try:
            while True:
                if pending is None:
                    item = self._next_claim()
                    if item is None:
                        if not any(self._eligible(t) for t in self.order):
                            break
                        time.sleep(self.poll)  # held by others: wait for them to finish or go stale
                        continue
                    pending = (*item, self._prefetch(pool, item[0]))
                tomogram, claim, future = pending
                pending = None
                upcoming = self._next_claim()  # read the next tomogram while this one is segmented
                if upcoming is not None:
                    pending = (*upcoming, self._prefetch(pool, upcoming[0]))
                self._process(claim, future)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.store.close()
        return self.result

    def _prefetch(self, pool: ThreadPoolExecutor, tomogram: Path) -> Future[Prepared]:
        return pool.submit(prepare, tomogram, self.model.info, self.opts.channel_dirs, self.opts.fallback_voxel_size)

    def _process(self, claim: Claim, future: Future[Prepared]) -> None:
        """One tomogram's error boundary: done, failed (recorded), or abandoned (claim lost)."""
        stem = claim.stem
        try:
            prepared = future.result()
            started = time.perf_counter()
            self._segment(prepared, claim)
            self.store.record_done(claim, {"classes": list(self.writer.classes), "model": str(self.opts.model)})
            self.result.done.append(stem)
            seconds = time.perf_counter() - started
            logger.info("%s  done in %.1f s (read+preprocess %.1f s, segment %.1f s)  %s  %s", stem,
                        prepared.seconds + seconds, prepared.seconds, seconds, self.model.provider, self.name)
        except LockError as exc:  # taken over meanwhile: the new owner decides
            logger.warning("%s: %s", self.name, exc)
        except Exception as exc:
            message = one_line(exc)
            logger.debug("%s: %s", stem, traceback.format_exc())
            if not self.store.still_owner(claim):
                logger.warning("%s: %s: lost the claim while failing (%s); left to its new owner", self.name, stem,
                               message)
                return
            self.store.record_failed(claim, message)
            self.result.failed.append((stem, message))
            logger.error("%s  FAILED: %s  %s", stem, message, self.name)
        finally:
            self.store.release(claim)

    def _segment(self, prepared: Prepared, claim: Claim) -> None:
        """Segment slab by slab into the writer; the outputs appear only if we still own the claim."""
        nz, ny, nx = prepared.inputs.shape[:3]
        lost = LockError(f"{claim.stem}: claim taken over by another worker; abandoned")
        batch = self.opts.batch or self.model.batch_for(ny, nx)
        overlap = self.opts.overlap if self.opts.overlap is not None else self.model.provider == "cuda"
        slabs = predict_slabs(self.model, prepared.inputs, tta=self.opts.tta, batch=batch, slab=SLAB)
        with self.writer.open(claim.stem, (nz, ny, nx), prepared.voxel_size) as sink:
            with in_background(sink) if overlap else contextlib.nullcontext(sink) as out:
                for z0, probabilities in slabs:
                    if claim.lost.is_set():
                        raise lost
                    out.write(z0, probabilities)
            if not self.store.still_owner(claim):
                raise lost


def run_worker(opts: ProcessOptions, device: int | None, name: str) -> WorkerResult:
    """Load the model on ``device`` (None: the CPU) and run one worker until the work is done."""
    model = load_model(opts.model, device=device, threads=opts.threads, quiet=True)
    worker = Worker(opts, model, name)  # refuses a model that does not fit the options, before a word
    announce(model)
    return worker.run()
