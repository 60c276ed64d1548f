"""What a worker does with a tomogram, decided from the stored state alone (pure functions).

A tomogram's outputs are made by a *recipe*: the model's content, the classes written,
the output type, the TTA and the voxel-size fallback. Its *fingerprint* (16 hex digits of
the recipe's SHA-256) is recorded with ``done``:

* done with this fingerprint and the outputs still the files recorded -> done;
* done with this fingerprint but an output missing, truncated or replaced -> redo;
* done with another fingerprint -> ``foreign``: left alone and reported, unless the run
  overwrites (``--overwrite``), which redoes it once;
* a recorded failure -> failed, unless the run retries failures (``--retry-failed``);
* otherwise (pending, or held by another worker) -> try (a live claim makes it wait).

``--overwrite`` and ``--retry-failed`` redo what was finished before the *campaign* began:
every worker started for the same fingerprint joins the same campaign, so each tomogram
is redone once however far apart the workers start.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pom_common.claims import TomogramState

Decision = Literal["done", "failed", "foreign", "try"]
DONE: Decision = "done"
FAILED: Decision = "failed"
FOREIGN: Decision = "foreign"
TRY: Decision = "try"


def decide(state: TomogramState, outputs_ok: bool, fingerprint: str, *, overwrite_since: float | None = None,
           retry_since: float | None = None) -> Decision:
    """What to do with a tomogram in ``state`` (see the module's rules).

    Parameters
    ----------
    state : what the claim store holds about it.
    outputs_ok : whether the outputs are the files its done record describes.
    fingerprint : this run's recipe fingerprint.
    overwrite_since, retry_since : start of this run's overwrite / retry campaign (None: not
        overwriting / retrying), by the store's clock.
    """
    if state.done is not None and outputs_ok:
        if overwrite_since is not None and state.done_at is not None and state.done_at < overwrite_since:
            return TRY
        return DONE if state.done.get("fingerprint") == fingerprint else FOREIGN
    if state.failure is not None:
        if retry_since is not None and state.failed_at is not None and state.failed_at < retry_since:
            return TRY
        return FAILED
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
                calibration: str | None = None) -> tuple[str, dict[str, Any]]:
    """The fingerprint of a run's recipe, and the recipe itself (recorded with ``done``).

    ``precision``: of the network that ran (see :mod:`pom_inference.precision`), with the
    tomogram an int8 network was ``calibration``-ed on; float32 leaves both out, so its
    fingerprints are those of runs made before precisions existed.
    """
    recipe = {"model": Path(model).name, "model_sha256": file_sha256(model), "classes": list(classes),
              "dtype": dtype, "tta": tta, "fallback_voxel_size": fallback_voxel_size}
    if precision != "fp32":
        recipe["precision"] = precision
        if calibration is not None:
            recipe["calibration"] = calibration
    text = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], recipe


def describe(recipe: Any) -> str:
    """A recipe in a few words, for messages."""
    if not isinstance(recipe, dict):
        return "an unknown recipe"
    return (f"{recipe.get('model', '?')} (sha256 {str(recipe.get('model_sha256', '?'))[:12]}), "
            f"classes {recipe.get('classes')}, {recipe.get('dtype')}, TTA {recipe.get('tta')}, "
            f"{recipe.get('precision', 'fp32')}")
