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

from pom_common.errors import ConfigError, PomError
from pom_common.workqueue import check_lease

from .checks import check_options, check_output_folder, check_tomograms
from .gpu import _ort
from .options import ProcessOptions, Stop, WorkerResult
from .progress import DatasetProgress
from .tally import RunResult, summary, tally, throughput_line
from .worker import run_worker

__all__ = ["Interrupted", "RunResult", "process", "stop_on_signals", "summary", "throughput_line"]

logger = logging.getLogger(__name__)

class Interrupted(PomError):
    """The run was stopped by SIGINT or SIGTERM (its claims were released, or say which were not)."""

    exit_code = 130


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
