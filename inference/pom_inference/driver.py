"""Run workers (one per device), forward stop signals, and report the whole dataset's state.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pom_common.errors import InputError, PomError
from pom_common.naming import tomogram_stem
from pom_common.workqueue import FileClaimStore

from .outputs import make_writer
from .worker import ProcessOptions, WorkerResult, namespace_of, run_worker

logger = logging.getLogger(__name__)


class Stop(BaseException):
    """Raised by the signal handlers; not an ``Exception``, so no error boundary swallows it."""


@dataclass
class RunResult:
    """The state of every tomogram of the run at its end, and what this command's workers did."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: list[WorkerResult] = field(default_factory=list)

    @property
    def done_here(self) -> int:
        """Tomograms this command's workers completed."""
        return sum(len(w.done) for w in self.workers)


def summary(result: RunResult) -> list[str]:
    """The lines a command prints at the end of a run."""
    here = "" if result.done_here == len(result.done) else f" ({result.done_here} of them by this command)"
    lines = [f"{len(result.done)} done, {len(result.failed)} failed{here}"]
    lines += [f"  FAILED {stem}: {error}" for stem, error in result.failed]
    return lines


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stop` in the main thread while the block runs."""
    def handler(signum: int, frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _name(device: int | None) -> str:
    return "worker cpu" if device is None else f"worker gpu{device}"


def _worker_main(opts: ProcessOptions, device: int | None, verbose: bool, results: multiprocessing.Queue) -> None:
    """Entry point of a worker process: run, and send the result (or the fatal error) back."""
    from pom_common.log import configure_logging

    configure_logging(verbose)
    name = _name(device)
    result = WorkerResult(name)
    code = 0
    try:
        with _stop_on_signals():
            result = run_worker(opts, device, name)
    except Stop as stop:
        logger.warning("%s: stopped by %s; claims released", name, stop)
        code = 130
    except PomError as exc:
        result.fatal = exc
        code = exc.exit_code
    finally:
        results.put(result)
    sys.exit(code)


def _run_processes(opts: ProcessOptions, devices: list[int | None], verbose: bool) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(opts, d, verbose, results), name=_name(d)) for d in devices]
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
    if any(p.exitcode == 130 for p in procs):
        raise KeyboardInterrupt
    return collected


def process(opts: ProcessOptions, devices: list[int | None], verbose: bool = False) -> RunResult:
    """Segment ``opts.tomograms`` with one worker per device; return every tomogram's final state.

    Raises
    ------
    PomError
        When no worker could start (a bad model, a class the model lacks, ...): the first
        worker's error, with its exit code.
    KeyboardInterrupt
        When stopped by SIGINT or SIGTERM (claims are released first).
    """
    if not opts.tomograms:
        raise InputError("no tomograms to process")
    if len(devices) == 1:
        try:
            with _stop_on_signals():
                workers = [run_worker(opts, devices[0], _name(devices[0]))]
        except Stop as stop:
            logger.warning("stopped by %s; claims released", stop)
            raise KeyboardInterrupt from None
    else:
        workers = _run_processes(opts, devices, verbose)
    started = [w for w in workers if w.fatal is None]
    if not started:
        fatal = next((w.fatal for w in workers if w.fatal is not None), None)
        raise fatal if fatal is not None else PomError("no worker finished (killed?)")
    return tally(opts, started[0].classes, workers)


def tally(opts: ProcessOptions, classes: tuple[str, ...], workers: list[WorkerResult]) -> RunResult:
    """Done (record and outputs in place) or failed, for every tomogram of ``opts``."""
    store = FileClaimStore(opts.output_dir, opts.lease_seconds, namespace=namespace_of(opts.model))
    writer = make_writer(opts.dtype, opts.output_dir, classes, range(len(classes)))
    stems = [tomogram_stem(Path(t)) for t in opts.tomograms]
    states = store.states(stems)
    result = RunResult(workers=workers)
    for stem in stems:
        state = states[stem]
        if state.done is not None and writer.complete(stem):
            result.done.append(stem)
        else:
            result.failed.append((stem, state.error or "not processed"))
    return result
