"""The end of a run: every tomogram's state, judged from the claim store and the files, and the lines printed.

:func:`tally` decides, for every tomogram of the run, done (this recipe, outputs intact,
inputs unchanged), failed, skipped for now, or left to other workers; :func:`summary` is
what a command prints of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pom_common.naming import tomogram_stem

from .eligibility import DONE, FAILED, FOREIGN, describe, foreign_owner, recorded_outputs
from .options import ProcessOptions, WorkerResult, open_store
from .outputs import make_writer
from .records import current_inputs, judge


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
