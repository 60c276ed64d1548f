"""Per tomogram: claim -> read -> z-filter -> predict -> write -> mark done -> release.

One worker process per device; any number of servers may run the same command on the
same folders (see :mod:`pom_common.workqueue`). The next tomogram is read and
preprocessed in a background thread while the current one is segmented; class volumes
are written slab by slab through memory-mapped temporary files renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import DENSITY
from pom_common.errors import ConfigError, InputError, LockError, PomError
from pom_common.mrcio import new_volume, read_volume, release_pages
from pom_common.naming import feature_filename, is_derived, list_tomograms, tomogram_stem
from pom_common.workqueue import Claim, WorkQueue

from .predict import DEFAULT_BATCH, predict_slices
from .preprocess import prepare_inputs

logger = logging.getLogger("pom.process")

#: Slices segmented at once (bounds the memory of predictions).
SLAB = 16
#: Bytes written to the memory-mapped outputs between flushes that release their pages.
RELEASE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ProcessOptions:
    """Everything a worker needs; passed by value to each worker process."""

    model: str
    tomograms: tuple[str, ...]
    output_dir: str
    channel_dirs: tuple[str, ...] = ()  # where <stem>__<channel>.mrc are looked for (after the tomogram's folder)
    classes: tuple[str, ...] | None = None  # subset of the model's classes to write
    tta: int = 4
    dtype: str = "float32"  # or "uint8" (0..255, as Ais writes)
    overwrite: bool = False
    retry_failed: bool = False
    lease_seconds: float = 120.0
    fallback_voxel_size: float | None = None  # used when a header says 0 or 1
    batch: int = DEFAULT_BATCH
    poll_seconds: float | None = None  # wait between looks at claims held by others
    threads: int | None = None
    expect_channels: tuple[str, ...] | None = None  # refuse a model whose inputs differ (project runs)


@dataclass
class RunResult:
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- one tomogram


def find_channel(tomogram: Path, channel: str, channel_dirs: tuple[str, ...]) -> Path:
    """The tomogram itself for Density; else <stem>__<channel>.mrc beside it or in a channel folder."""
    if channel == DENSITY:
        return tomogram
    name = feature_filename(tomogram_stem(tomogram), channel)
    candidates = [tomogram.parent / name] + [Path(d) / name for d in channel_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{tomogram.name}: channel {channel!r} not found (expected {candidates[-1]})")


def output_paths(tomogram: Path, classes: tuple[str, ...], output_dir: Path) -> list[Path]:
    stem = tomogram_stem(tomogram)
    return [output_dir / feature_filename(stem, c) for c in classes]


@dataclass
class Prepared:
    tomogram: Path
    inputs: np.ndarray  # (nz', ny', nx', C) float32
    voxel_size: float  # output voxel size (A) = input x bin factor
    seconds: float


def prepare(tomogram: Path, model_info, opts: ProcessOptions) -> Prepared:
    """Read the tomogram and its channels (memory-mapped) and preprocess them."""
    start = time.perf_counter()
    volumes = {}
    density = read_volume(tomogram, opts.fallback_voxel_size)
    for channel in model_info.channels:
        vol = density if channel == DENSITY else read_volume(find_channel(tomogram, channel, opts.channel_dirs))
        if vol.shape != density.shape:
            raise InputError(f"{vol.path}: shape {vol.shape} differs from its tomogram {tomogram.name} {density.shape}")
        volumes[channel] = vol.data
    b = model_info.bin_factor
    if min(density.shape) < b:
        raise InputError(f"{tomogram}: volume {density.shape} is smaller than the bin factor {b}")
    voxel = density.voxel_size
    if not density.voxel_size_from_header and opts.fallback_voxel_size is None:
        voxel = model_info.voxel_size or 1.0
        logger.warning("%s: header voxel size unset; using the model's %.4g A", tomogram.name, voxel)
    try:
        inputs = prepare_inputs(volumes, model_info)
    except InputError as exc:
        raise InputError(f"{tomogram}: {exc}") from None
    return Prepared(tomogram, inputs, voxel * b, time.perf_counter() - start)


def segment(model, prepared: Prepared, opts: ProcessOptions, outputs: list[Path], class_index: list[int],
            claim: Claim | None = None, queue: WorkQueue | None = None) -> None:
    """Segment ``prepared`` slab by slab into the output files (all or none appear)."""
    x = prepared.inputs
    nz, ny, nx, _ = x.shape
    dtype = np.uint8 if opts.dtype == "uint8" else np.float32
    with contextlib.ExitStack() as stack:
        arrays = [stack.enter_context(new_volume(p, (nz, ny, nx), dtype, prepared.voxel_size)) for p in outputs]
        written = 0
        for z0 in range(0, nz, SLAB):
            if claim is not None and claim.lost.is_set():
                raise LockError(f"{prepared.tomogram.name}: claim taken over by another worker; abandoned")
            probs = predict_slices(model.run, x[z0 : z0 + SLAB], model.info.size_multiple, opts.tta, opts.batch)
            for array, k in zip(arrays, class_index):
                p = probs[..., k]
                array[z0 : z0 + len(p)] = np.rint(np.clip(p, 0, 1) * 255) if dtype == np.uint8 else p
            written += probs[..., 0].nbytes * len(arrays)
            if written > RELEASE_BYTES:  # keep resident memory independent of the volume size
                for array in arrays:
                    release_pages(array)
                written = 0
        if claim is not None and queue is not None and not queue.still_owner(claim):
            raise LockError(f"{prepared.tomogram.name}: claim taken over by another worker; abandoned")


def select_classes(info, requested: tuple[str, ...] | None, model: str) -> tuple[tuple[str, ...], list[int]]:
    """The classes to write (default: all of the model's) and their output indices."""
    classes = requested or info.classes
    unknown = [c for c in classes if c not in info.classes]
    if unknown:
        raise InputError(f"--classes {unknown}: not produced by {model} (its classes: {list(info.classes)})")
    return classes, [info.classes.index(c) for c in classes]


# ----------------------------------------------------------------------------- worker


class _Stop(Exception):
    pass


def _install_signal_handlers() -> None:
    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(opts: ProcessOptions, device: int | None, worker: str, model=None) -> RunResult:
    """Process tomograms until every one is done or failed (waiting for others' claims)."""
    from .session import load_model

    if model is None:
        model = load_model(opts.model, device=device, threads=opts.threads)
    info = model.info
    classes, class_index = select_classes(info, opts.classes, opts.model)
    output_dir = Path(opts.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    queue = WorkQueue(output_dir, opts.lease_seconds, namespace=namespace_of(opts.model))
    queue.ensure()
    start_fs = queue.fs_now()
    poll = opts.poll_seconds if opts.poll_seconds is not None else max(min(opts.lease_seconds / 4, 10.0), 0.05)
    tomograms = [Path(t) for t in opts.tomograms]
    # Start at a different place per worker to reduce contention; the order does not change results.
    offset = (hash((queue.host, os.getpid())) % len(tomograms)) if tomograms else 0
    order = tomograms[offset:] + tomograms[:offset]
    result = RunResult()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pom-prefetch")

    def eligible(t: Path) -> bool:
        stem = tomogram_stem(t)
        if queue.is_done(stem, output_paths(t, classes, output_dir)):
            # --overwrite redoes what was done before this run started, once.
            if not (opts.overwrite and _mtime(queue.done_path(stem)) < start_fs):
                return False
        failure = queue.failure(stem)
        if failure is not None and not (opts.retry_failed and _mtime(queue.failed_path(stem)) < start_fs):
            return False
        return True

    attempted: set[str] = set()

    def next_claim() -> tuple[Path, Claim] | None:
        for t in order:
            stem = tomogram_stem(t)
            if stem in attempted or not eligible(t):
                continue
            claim = queue.try_claim(stem)
            if claim is None:
                continue
            if not eligible(t):  # finished by someone else between the look and the claim
                queue.release(claim)
                continue
            attempted.add(stem)
            queue.clear_done(stem)  # outputs are about to be replaced
            if claim.generation > 0:  # taken over from a dead worker: remove its temporary files
                queue.remove_temporaries([p.name for p in output_paths(t, classes, output_dir)])
            return t, claim
        return None

    def submit(item):
        t, claim = item
        return t, claim, pool.submit(prepare, t, info, opts)

    try:
        pending = None
        while True:
            if pending is None:
                item = next_claim()
                if item is None:
                    waiting = [t for t in order if eligible(t) and tomogram_stem(t) not in attempted]
                    if not waiting:
                        break
                    time.sleep(poll)  # held by others: wait for them to finish or go stale
                    continue
                pending = submit(item)
            t, claim, future = pending
            pending = None
            stem = tomogram_stem(t)
            try:
                prepared = future.result()
                upcoming = next_claim()  # prefetch the next tomogram while this one is segmented
                if upcoming is not None:
                    pending = submit(upcoming)
                started = time.perf_counter()
                segment(model, prepared, opts, output_paths(t, classes, output_dir), class_index, claim, queue)
                queue.mark_done(claim, {"classes": list(classes), "model": str(opts.model)})
                result.done.append(stem)
                logger.info("%s  done in %.1f s (read+preprocess %.1f s, segment %.1f s)  %s  %s", stem,
                            prepared.seconds + time.perf_counter() - started, prepared.seconds,
                            time.perf_counter() - started, model.provider, worker)
            except LockError as exc:
                logger.warning("%s: %s", worker, exc)
            except (PomError, OSError, ValueError, MemoryError) as exc:
                if not queue.still_owner(claim):  # taken over meanwhile: the new owner decides
                    logger.warning("%s: %s: lost the claim while failing (%s); left to its new owner", worker, stem, exc)
                    continue
                message = str(exc) if isinstance(exc, PomError) else f"{type(exc).__name__}: {exc}"
                queue.mark_failed(claim, message)
                result.failed.append((stem, message))
                logger.error("%s  FAILED: %s  %s", stem, message, worker)
                logger.debug("%s", traceback.format_exc())
            finally:
                queue.release(claim)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        queue.close()
    return result


def _worker_main(opts: ProcessOptions, device: int | None, worker: str, verbose: bool) -> None:
    from pom_common.log import configure_logging

    configure_logging(verbose)
    _install_signal_handlers()
    try:
        run_worker(opts, device, worker)
    except _Stop as stop:
        logger.warning("%s: stopped by %s; claims released", worker, stop)
        sys.exit(130)
    except PomError as exc:
        logger.error("%s: %s", worker, exc)
        sys.exit(exc.exit_code)


# ----------------------------------------------------------------------------- driver


def process(opts: ProcessOptions, devices: list[int | None], verbose: bool = False) -> RunResult:
    """Run one worker per device (processes), wait, and report every tomogram's state."""
    if not opts.tomograms:
        raise InputError("no tomograms to process")
    from .session import announce, load_model

    # Fail early on a bad model, before any worker starts. A single worker reuses this session;
    # with several, the parent checks on the CPU and leaves the GPUs to the workers.
    single = len(devices) == 1
    model = load_model(opts.model, device=devices[0] if single else None, threads=opts.threads, quiet=True)
    info = model.info
    if opts.expect_channels is not None and tuple(info.channels) != tuple(opts.expect_channels):
        raise ConfigError(f"{opts.model}: the model expects channels {list(info.channels)} but 'macromolecules' is "
                          f"{list(opts.expect_channels)}; retrain it or fix the configuration")
    classes, _ = select_classes(info, opts.classes, opts.model)
    if single:
        announce(model, devices[0])
        _install_signal_handlers()
        try:
            run_worker(opts, devices[0], worker=_name(devices[0]), model=model)
        except _Stop as stop:
            logger.warning("stopped by %s; claims released", stop)
            raise KeyboardInterrupt from None
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    else:
        del model
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(opts, d, _name(d), verbose), name=_name(d)) for d in devices]
        for p in procs:
            p.start()

        def forward(signum, frame):
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for p in procs:
                p.join()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    return collect(opts, classes)


def _name(device: int | None) -> str:
    return "worker cpu" if device is None else f"worker gpu{device}"


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


def namespace_of(model: str | os.PathLike) -> str:
    """Queue state is kept per model (file stem), so several models can share an output folder."""
    return Path(model).stem


def collect(opts: ProcessOptions, classes: tuple[str, ...]) -> RunResult:
    queue = WorkQueue(opts.output_dir, opts.lease_seconds, namespace=namespace_of(opts.model))
    result = RunResult()
    for t in opts.tomograms:
        t = Path(t)
        stem = tomogram_stem(t)
        if queue.is_done(stem, output_paths(t, classes, Path(opts.output_dir))):
            result.done.append(stem)
        else:
            failure = queue.failure(stem)
            result.failed.append((stem, failure.get("error", "?") if failure else "not processed"))
    return result


def tomograms_from(source: str | os.PathLike) -> list[Path]:
    """A folder of tomograms, or a .txt list with one path per line (relative to the list)."""
    source = Path(source)
    if source.is_dir():
        return list_tomograms(source)
    if source.suffix == ".txt" and source.is_file():
        paths = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            p = p if p.is_absolute() else source.parent / p
            if not is_derived(p):
                paths.append(p)
        return paths
    raise InputError(f"{source}: expected a folder of .mrc tomograms or a .txt list of paths")


def report(result: RunResult) -> int:
    """Print the summary; 0 when every tomogram is done, 1 otherwise."""
    print(f"{len(result.done)} done, {len(result.failed)} failed")
    for stem, error in result.failed:
        print(f"  FAILED {stem}: {error}")
    return 1 if result.failed else 0


def devices_from(gpus: list[int] | None) -> list[int | None]:
    return [None] if gpus is None else list(gpus)


# ----------------------------------------------------------------------------- project commands


def _project_process(config: ProjectConfig, model: Path, tomograms: list[Path], output_dir: Path,
                     gpus: list[int] | None, classes=None, tta: int = 1, **kwargs) -> int:
    opts = ProcessOptions(model=str(model), tomograms=tuple(str(t) for t in tomograms), output_dir=str(output_dir),
                          channel_dirs=(str(config.macromolecule_path),), classes=classes, tta=tta,
                          fallback_voxel_size=config.apix, expect_channels=tuple(config.macromolecules), **kwargs)
    return report(process(opts, devices_from(_usable(gpus))))


def _usable(gpus: list[int] | None) -> list[int] | None:
    """GPU indices, or None (one CPU worker) when ONNX Runtime has no CUDA provider here."""
    if gpus is None:
        return None
    from .session import cuda_listed

    if not cuda_listed():
        logger.info("ONNX Runtime has no CUDA provider here: one CPU worker instead of GPU %s",
                    ",".join(map(str, gpus)))
        return None
    return gpus


def segment_folder_single(config: ProjectConfig, feature: str, test: bool, gpus: list[int] | None) -> int:
    """``pom single test`` (test_dir -> test_dir) and ``pom single process`` (tomogram_dir -> output_dir)."""
    if feature not in config.ontologies:
        raise InputError(f"-o {feature!r}: not in ontologies {list(config.ontologies)}")
    model = config.path("models", "phase1", f"{feature}.onnx")
    source = config.require_dir("test_dir" if test else "tomogram_dir")
    tomograms = list_tomograms(source)
    if not tomograms:
        raise InputError(f"{source}: no tomograms (*.mrc without '__') found")
    output = config.test_path if test else config.output_path
    # Like Pom, the single-model commands replace earlier outputs of the same model.
    return _project_process(config, model, tomograms, output, gpus, tta=config.shared_model_runs_per_volume,
                            overwrite=True)


def process_project(config: ProjectConfig, gpus: list[int] | None, overwrite: bool = False,
                    retry_failed: bool = False, dtype: str = "float32") -> int:
    """``pom shared process``: every tomogram in tomogram_dir with the shared model into output_dir."""
    model = config.path("models", "phase2", "shared.onnx")
    tomograms = list_tomograms(config.require_dir("tomogram_dir"))
    if not tomograms:
        raise InputError(f"{config.tomogram_path}: no tomograms (*.mrc without '__') found")
    return _project_process(config, model, tomograms, config.output_path, gpus,
                            tta=config.shared_model_runs_per_volume, overwrite=overwrite,
                            retry_failed=retry_failed, dtype=dtype)
