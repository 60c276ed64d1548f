"""What a worker does with a tomogram, decided from the stored state alone (pure functions).

A tomogram's outputs are made by a *recipe*: the model's content, the classes written,
the output type, the TTA and the voxel-size fallback. Its *fingerprint* (16 hex digits of
the recipe's SHA-256) is recorded with each output file it made, beside the identity of
the input files it read (size, modification time, inode). Each record lists every output
file of the tomogram that is still intact, whichever recipe made it, so one folder can
hold several recipes' outputs and each name belongs to one of them:

* every output of this recipe recorded as made by it, intact, from the inputs as they are
  now -> done;
* one of this recipe's output names holding another recipe's intact output -> ``foreign``:
  left alone and reported (naming that model's file), unless the run overwrites
  (``--overwrite``), which redoes it once; except outputs of an earlier version of this
  run's model file (the same path, other bytes: the network was trained again), which are
  *superseded*: segmented again without being asked, as retraining is routine;
* a failure recorded for this recipe, these inputs and these conditions -> failed, unless
  the run retries failures (``--retry-failed``); a failure of another recipe, of inputs that
  changed since (a file rewritten, or completed after it was found truncated), or under
  other conditions (``--allow-voxel-size-mismatch``) is tried again;
* otherwise (pending, outputs missing or replaced, inputs changed) -> try (a live claim
  makes it wait).

``--overwrite`` and ``--retry-failed`` redo what was finished before the *campaign* began:
every worker started for the same fingerprint joins the same campaign, so each tomogram
is redone once however far apart the workers start.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pom_common.claims import TomogramState

Decision = Literal["done", "failed", "foreign", "try"]
DONE: Decision = "done"
FAILED: Decision = "failed"
FOREIGN: Decision = "foreign"
TRY: Decision = "try"

#: How this run's output names stand (:func:`classify_outputs`).
Outputs = Literal["ours", "theirs", "missing"]
OURS: Outputs = "ours"  # every one recorded as made by this recipe, and intact
THEIRS: Outputs = "theirs"  # at least one holds another recipe's intact output
MISSING: Outputs = "missing"  # else: some absent, replaced, or never recorded


def recorded_outputs(record: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Output file name -> {size, inode, fingerprint} from a done or failed record (older records too)."""
    if not isinstance(record, Mapping):
        return {}
    outputs = record.get("outputs")
    if not isinstance(outputs, Mapping):
        return {}
    default = record.get("fingerprint")
    return {str(name): {**entry, "fingerprint": entry.get("fingerprint", default)}
            for name, entry in outputs.items() if isinstance(entry, Mapping)}


def recorded_recipes(record: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Fingerprint -> {recipe, model_path, inputs} of the recipes whose outputs a record lists."""
    if not isinstance(record, Mapping):
        return {}
    recipes = record.get("recipes")
    out = {str(k): dict(v) for k, v in recipes.items() if isinstance(v, Mapping)} if isinstance(recipes, Mapping) else {}
    fingerprint = record.get("fingerprint")
    if isinstance(fingerprint, str) and fingerprint not in out and "error" not in record:  # a record of older versions
        out[fingerprint] = {"recipe": record.get("recipe"), "inputs": record.get("inputs")}
    return out


def superseded(recipe: Mapping[str, Any], model_path: str | None, model_sha256: str | None) -> bool:
    """Whether a recorded recipe's model is an earlier version of this run's: the same file, other bytes."""
    return (model_path is not None and model_sha256 is not None and recipe.get("model_path") == model_path
            and isinstance(recipe.get("recipe"), Mapping) and recipe["recipe"].get("model_sha256") != model_sha256)


def classify_outputs(record: Mapping[str, Any] | None, names: list[str], fingerprint: str,
                     intact: Mapping[str, bool], model_path: str | None = None,
                     model_sha256: str | None = None) -> Outputs:
    """How this run's output ``names`` stand, given the newest record and which recorded files are intact.

    ``intact``: recorded name -> whether the file is still the one recorded (present, same
    size and inode). A file present but never recorded (or replaced since) is nobody's, and
    so is the output of an earlier version of this run's model file (``model_path``, whose
    bytes now hash to ``model_sha256``): see :func:`superseded`.
    """
    recorded = recorded_outputs(record)
    recipes = recorded_recipes(record)
    ours, theirs = True, False
    for name in names:
        entry = recorded.get(name)
        if entry is None or not intact.get(name, False):
            ours = False
        elif entry.get("fingerprint") != fingerprint:
            ours = False
            theirs = theirs or not superseded(recipes.get(str(entry.get("fingerprint")), {}), model_path, model_sha256)
    if theirs:
        return THEIRS
    return OURS if ours and names else MISSING


def foreign_owner(record: Mapping[str, Any] | None, names: list[str], fingerprint: str,
                  intact: Mapping[str, bool], model_path: str | None = None,
                  model_sha256: str | None = None) -> tuple[str, dict[str, Any]]:
    """The first of ``names`` holding another recipe's intact output, and that recipe ({recipe, model_path, ...})."""
    recorded = recorded_outputs(record)
    recipes = recorded_recipes(record)
    for name in names:
        entry = recorded.get(name)
        if entry is not None and intact.get(name, False) and entry.get("fingerprint") != fingerprint:
            recipe = recipes.get(str(entry.get("fingerprint")), {})
            if not superseded(recipe, model_path, model_sha256):
                return name, recipe
    return "", {}


def decide(state: TomogramState, outputs: Outputs, fingerprint: str, *, inputs: Mapping[str, Any] | None = None,
           conditions: Mapping[str, Any] | None = None, overwrite_since: float | None = None,
           retry_since: float | None = None) -> Decision:
    """What to do with a tomogram in ``state`` (see the module's rules).

    Parameters
    ----------
    state : what the claim store holds about it.
    outputs : how this run's output names stand (:func:`classify_outputs`).
    fingerprint : this run's recipe fingerprint.
    inputs : the identity of its input files now (channel -> size, mtime_ns, inode); None
        when a file cannot be found (then nothing recorded is current).
    conditions : the run's settings that decide whether a tomogram is refused (a failure
        recorded under other conditions is tried again).
    overwrite_since, retry_since : start of this run's overwrite / retry campaign (None: not
        overwriting / retrying), by the store's clock.
    """
    conditions = dict(conditions or {})
    record_at = state.record_at
    if state.failure is not None:
        failure = state.failure
        same = (failure.get("fingerprint", fingerprint) == fingerprint
                and ("inputs" not in failure or failure.get("inputs") == inputs)
                and failure.get("conditions", conditions) == conditions)
        if same:
            if retry_since is not None and state.failed_at is not None and state.failed_at < retry_since:
                return TRY
            return FAILED
    overwriting = overwrite_since is not None and (record_at is None or record_at < overwrite_since)
    if outputs == THEIRS:
        return TRY if overwriting else FOREIGN
    if outputs == OURS:
        made_from = recorded_recipes(state.record).get(fingerprint, {}).get("inputs")
        if made_from is None or made_from == inputs:
            return TRY if overwriting else DONE
    return TRY


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model: str | os.PathLike, classes: tuple[str, ...], dtype: str, tta: int,
                fallback_voxel_size: float | None, precision: str = "fp32",
                calibration: str | None = None, model_sha256: str | None = None) -> tuple[str, dict[str, Any]]:
    """The fingerprint of a run's recipe, and the recipe itself (recorded with ``done``).

    ``precision``: of the network that ran (see :mod:`pom_inference.precision`), with the
    tomogram an int8 network was ``calibration``-ed on; float32 leaves both out, so its
    fingerprints are those of runs made before precisions existed. ``model_sha256``: of the
    bytes the model was loaded from (default: the file's now). Pass the loaded bytes' hash:
    a file replaced after loading must not lend its name to the old network's outputs.
    """
    recipe = {"model": Path(model).name, "model_sha256": model_sha256 or file_sha256(model), "classes": list(classes),
              "dtype": dtype, "tta": tta, "fallback_voxel_size": fallback_voxel_size}
    if precision != "fp32":
        recipe["precision"] = precision
        if calibration is not None:
            recipe["calibration"] = calibration
    text = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], recipe


def describe(recipe: Any, model_path: Any = None) -> str:
    """A recipe in a few words, for messages (the model's path where it was recorded)."""
    if not isinstance(recipe, Mapping):
        return "an unknown recipe"
    model = model_path if isinstance(model_path, str) and model_path else recipe.get("model", "?")
    return (f"{model} (sha256 {str(recipe.get('model_sha256', '?'))[:12]}), "
            f"classes {recipe.get('classes')}, {recipe.get('dtype')}, TTA {recipe.get('tta')}, "
            f"{recipe.get('precision', 'fp32')}")
