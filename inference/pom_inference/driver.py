"""Run workers (one per device), forward stop signals, show progress, report the whole dataset.

One device runs its worker in this process; several run one process each (spawned, so
every worker opens its own ONNX Runtime session on its own GPU). The workers' results
come back to the driver; the final tally is the claim store's view of every tomogram,
because other servers may have done part of the work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pom_common.errors import ConfigError, PomError
from pom_common.naming import tomogram_stem
from pom_common.workqueue import check_lease

from .checks import check_options, check_output_folder, check_tomograms
from .eligibility import DONE, FAILED, FOREIGN, describe, foreign_owner, recorded_outputs
from .gpu import _ort
from .options import ProcessOptions, Stop, WorkerResult, open_store
from .outputs import make_writer
from .progress import DatasetProgress
from .records import current_inputs, judge
from .worker import run_worker

logger = logging.getLogger(__name__)

class Interrupted(PomError):
    """The run was stopped by SIGINT or SIGTERM (its claims were released, or say which were not)."""

    exit_code = 130


@dataclass
class RunResult:
    """The state of every tomogram of the run at its end, and what this command's workers did."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # inputs still being written: tried by a later run
    workers: list[WorkerResult] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # held by workers of other commands, left to them and the keeper
    seconds: float = 0.0  # the command's run, from start to the final tally

    @property
    def done_here(self) -> int:
        """Tomograms this command's workers completed."""
        return sum(len(w.done) for w in self.workers)

    @property
    def errors(self) -> list[str]:
        """Workers that stopped early (their state folder failed)."""
        return [f"{w.name}: {w.fatal}" for w in self.workers if w.fatal is not None]

    @property
    def ok(self) -> bool:
        """Every tomogram done and every worker ended normally."""
        return not self.failed and not self.skipped and not self.errors


def summary(result: RunResult) -> list[str]:
    """The lines a command prints at the end of a run."""
    here = "" if result.done_here == len(result.done) else f" ({result.done_here} of them by this command)"
    skipped = f", {len(result.skipped)} skipped for now" if result.skipped else ""
    lines = [f"{len(result.done)} done, {len(result.failed)} failed{skipped}{here}"]
    if result.left:
        keeper = next((w.keeper for w in result.workers if w.keeper), "?")
        shown = ", ".join(result.left[:5]) + (", ..." if len(result.left) > 5 else "")
        lines.append(f"  {len(result.left)} held by other workers, left to them and to this folder's keeper "
                     f"({keeper}): {shown}")
    lines += [f"  FAILED {stem}: {error}" for stem, error in result.failed]
    lines += [f"  SKIPPED {stem}: {reason}" for stem, reason in result.skipped]
    lines += [f"  STOPPED {error}" for error in result.errors]
    throughput = throughput_line(result)
    return lines + ([throughput] if throughput else [])


def throughput_line(result: RunResult) -> str:
    """Tomograms per hour, GiB of input per second and the network's busy share of this command's run ('' if none done)."""
    done = result.done_here
    if not done or result.seconds <= 0:
        return ""
    gib = sum(w.input_bytes for w in result.workers) / 2**30
    worker_seconds = sum(w.seconds for w in result.workers)
    busy = sum(w.network_seconds for w in result.workers) / worker_seconds if worker_seconds > 0 else 0.0
    return (f"{done} tomograms in {result.seconds:.1f} s: {done * 3600 / result.seconds:.1f} tomograms/hour, "
            f"{gib / result.seconds:.3f} GiB/s of input, network busy {100 * busy:.0f} % of the workers' time")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stop` once; a second signal while cleaning up is ignored."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            logger.warning("%s again: still releasing claims, please wait", name)
            return
        stopping.set()
        raise Stop(name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _name(device: int | None) -> str:
    return "worker cpu" if device is None else f"worker gpu{device}"


def _worker_main(opts: ProcessOptions, device: int | None, name: str, verbose: bool,
                 results: multiprocessing.Queue) -> None:
    """Entry point of a worker process: run, and send the result (or the fatal error) back."""
    from pom_common.log import configure_logging

    configure_logging(verbose)
    result = WorkerResult(name)
    _ort()  # imported before the handlers: a Stop raised inside its import would become an ImportError
    try:
        with stop_on_signals():
            result = run_worker(opts, device, name)
    except Stop as stop:  # before the worker loop started: no claim held
        result.stopped = str(stop)
    except PomError as exc:
        result.fatal = exc
    finally:
        results.put(result)
    sys.exit(130 if result.stopped else 0)


def _run_processes(opts: ProcessOptions, devices: list[int | None], verbose: bool) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    names = [f"{_name(d)}.{i}" if devices.count(d) > 1 else _name(d) for i, d in enumerate(devices)]
    procs = [ctx.Process(target=_worker_main, args=(opts, d, n, verbose, results), name=n)
             for d, n in zip(devices, names)]
    for p in procs:
        p.start()

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    collected: list[WorkerResult] = []
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Read while they run: a result larger than the pipe's buffer would block its sender.
        while len(collected) < len(procs) and any(p.is_alive() for p in procs):
            try:
                collected.append(results.get(timeout=0.2))
            except queue.Empty:
                pass
        while len(collected) < len(procs):  # exited: whatever they sent is in the queue now
            try:
                collected.append(results.get(timeout=1.0))
            except queue.Empty:
                break
        for p in procs:
            p.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for p, name in zip(procs, names):
        if p.exitcode not in (0, 130) and not any(w.name == name for w in collected):
            collected.append(WorkerResult(name, fatal=PomError(f"the worker process died (exit code {p.exitcode})")))
    return collected


def process(opts: ProcessOptions, devices: list[int | None], verbose: bool = False,
            progress: bool = True) -> RunResult:
    """Segment ``opts.tomograms`` with one worker per device; return every tomogram's final state.

    Raises
    ------
    PomError
        When no worker could start (a bad model, a class the model lacks, ...): the first
        worker's error, with its exit code.
    Interrupted
        When stopped by SIGINT or SIGTERM (after releasing the claims held).
    """
    if not opts.tomograms:
        raise ConfigError("no tomograms to process")
    check_options(opts.batch, opts.tta, opts.dtype, opts.fallback_voxel_size, opts.stall_seconds)
    check_lease(opts.lease_seconds)
    check_tomograms(opts.tomograms)
    check_output_folder(opts.output_dir, create=False)
    started = time.perf_counter()
    bar = DatasetProgress(opts) if progress else None
    try:
        if bar is not None:
            bar.__enter__()
        if len(devices) == 1:
            _ort()  # imported before the handlers: a Stop raised inside its import would become an ImportError
            try:
                with stop_on_signals():
                    workers = [run_worker(opts, devices[0], _name(devices[0]))]
            except Stop as stop:  # while loading the model: no claim was held yet
                raise Interrupted(f"stopped by {stop}; no claims were held") from None
        else:
            workers = _run_processes(opts, devices, verbose)
    finally:
        if bar is not None:
            bar.__exit__()
    stopped = [w for w in workers if w.stopped]
    if stopped:
        unreleased = sorted({s for w in workers for s in w.unreleased})
        what = (f"{len(unreleased)} claims could not be released ({', '.join(unreleased[:5])}); they expire after "
                f"{opts.lease_seconds:g} s" if unreleased else "claims released")
        raise Interrupted(f"stopped by {stopped[0].stopped}; {what}")
    running = [w for w in workers if w.fingerprint]
    if not running:
        fatal = next((w.fatal for w in workers if w.fatal is not None), None)
        raise fatal if fatal is not None else PomError("no worker finished (killed?)")
    result = tally(opts, running[0], workers)
    result.seconds = time.perf_counter() - started
    return result


def tally(opts: ProcessOptions, reference: WorkerResult, workers: list[WorkerResult]) -> RunResult:
    """Done (this recipe, outputs intact, inputs unchanged) or not, for every tomogram of ``opts``."""
    store = open_store(opts)
    writer = make_writer(opts.dtype, opts.output_dir, reference.classes, range(len(reference.classes)), opts.form)
    stems = {tomogram_stem(Path(t)): Path(t) for t in opts.tomograms}
    states = store.states(list(stems), sweep=True)  # and remove what killed workers left half-written
    skipped = {stem: reason for w in workers for stem, reason in w.skipped}
    conditions = opts.conditions()
    result = RunResult(workers=workers)
    left = {stem for w in workers for stem in w.left}
    for stem, tomogram in stems.items():
        state = states[stem]
        inputs = current_inputs(tomogram, reference.channels, opts.channel_dirs)
        decision = judge(state, writer, reference.fingerprint, inputs, conditions, model=reference.model)
        if decision == DONE:
            result.done.append(stem)
        elif decision == FAILED:
            result.failed.append((stem, state.error))
        elif decision == FOREIGN:
            names = [p.name for p in writer.paths(stem)]
            name, owner = foreign_owner(state.record, names, reference.fingerprint,
                                        writer.intact(recorded_outputs(state.record)), *reference.model)
            result.failed.append((stem, f"{name} holds the output of another recipe, "
                                        f"{describe(owner.get('recipe'), owner.get('model_path'))}; left alone "
                                        "(run again with --overwrite to replace it)"))
        elif stem in skipped:
            result.skipped.append((stem, skipped[stem]))
        elif stem in left:
            result.left.append(stem)
        else:
            result.failed.append((stem, "not processed (stopped, or its inputs or outputs changed meanwhile)"))
    return result
