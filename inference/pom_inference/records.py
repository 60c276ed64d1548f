"""A tomogram's stored record against the files on disk: what to do now, and which outputs carry over.

:mod:`.eligibility` decides from the stored state alone; these functions first look at the
files the newest record lists (the inputs' identity, the outputs' intactness), for the
workers and for the driver's report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pom_common.claims import TomogramState
from pom_common.errors import InputError

from .eligibility import Decision, classify_outputs, decide, recorded_outputs, recorded_recipes, superseded
from .inputs import Identity, identity, input_files
from .outputs import OutputWriter


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


def superseded_here(record: Any, stem: str, writer: OutputWriter, model: tuple[str, str]) -> bool:
    """Whether an output of ``stem`` that ``writer`` writes is an intact one of an earlier version of ``model``.

    ``model``: (path, sha256 of the bytes this run loaded).
    """
    recorded = recorded_outputs(record)
    recipes = recorded_recipes(record)
    names = [p.name for p in writer.paths(stem) if p.name in recorded]
    intact = writer.intact({n: recorded[n] for n in names})
    return any(intact[n] and superseded(recipes.get(str(recorded[n].get("fingerprint")), {}), *model) for n in names)


def carried(record: Any, writer: OutputWriter, replaced: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The outputs (and their recipes) of ``record`` that stay: intact, and not among ``replaced``."""
    recorded = {n: e for n, e in recorded_outputs(record).items() if n not in replaced}
    intact = writer.intact(recorded)
    outputs = {n: e for n, e in recorded.items() if intact.get(n)}
    recipes = recorded_recipes(record)
    kept = {str(e.get("fingerprint")) for e in outputs.values()}
    return outputs, {fp: r for fp, r in recipes.items() if fp in kept}


def outcome(record: Any, writer: OutputWriter, stem: str, run: Mapping[str, Any], inputs: Identity | None,
            done: bool) -> dict[str, Any]:
    """What the claim store records for ``stem`` now: its outputs done by this run, or its failure's details.

    ``record``: the newest record when the tomogram was claimed; its intact outputs that this
    run does not replace are carried over, with their recipes. ``run``: this run's
    ``fingerprint``, ``recipe``, ``model_path`` and ``conditions``. ``inputs``: the identity
    of the inputs read (done) or looked at (failed).
    """
    fingerprint_ = run["fingerprint"]
    mine = {n: {**e, "fingerprint": fingerprint_} for n, e in writer.describe(stem).items()} if done else {}
    outputs, recipes = carried(record, writer, list(mine))
    if done:
        recipes[fingerprint_] = {"recipe": run["recipe"], "model_path": run["model_path"], "inputs": inputs}
    head = {"fingerprint": fingerprint_, "recipe": run["recipe"]} if done else {"fingerprint": fingerprint_}
    return {**head, "model_path": run["model_path"], "inputs": inputs, "conditions": run["conditions"],
            "outputs": {**outputs, **mine}, "recipes": recipes}
