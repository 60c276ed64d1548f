"""What a model calls and what counts as truth, on arrays (no files).

* Calls: the argmax of a shared model (Unknown included); for a single model, probability >
  :data:`pom_common.defaults.THRESHOLD`.
* Annotations: on every slice with boxes, the pixels inside the boxes count; a pixel painted
  with exactly one class is that class; for class c, the pixels of c's own boxes that
  nothing painted count too, as not-c (Pom's rule: a box is complete for its feature).
  Other pixels, and pixels painted with two classes, are not scored.
* Dense labels: integer values named by classes, binned like the network's output by majority.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pom_common.constants import BIN_FACTOR
from pom_common.defaults import THRESHOLD
from pom_common.errors import InputError
from pom_common.scns import Annotation

from .metrics import Scores

#: calls_at(z) -> (ny, nx, K) calls at an unbinned slice.
CallsAt = Callable[[int], np.ndarray]


def decide(probabilities: np.ndarray, classes: Sequence[str], kind: str) -> np.ndarray:
    """Per-pixel calls (..., K) bool: the argmax of a shared model, p > THRESHOLD for a single one."""
    if kind == "shared":
        winner = np.argmax(probabilities, axis=-1)
        return winner[..., None] == np.arange(len(classes))
    return probabilities > THRESHOLD


def bin_labels(labels: np.ndarray, n_classes: int, b: int = BIN_FACTOR) -> np.ndarray:
    """Majority label of each b x b x b block (odd edges cropped), (nz//b, ny//b, nx//b) int."""
    nz, ny, nx = (s // b for s in labels.shape)
    blocks = labels[: nz * b, : ny * b, : nx * b].reshape(nz, b, ny, b, nx, b)
    counts = np.stack([(blocks == c).sum(axis=(1, 3, 5)) for c in range(n_classes)], axis=-1)
    return counts.argmax(-1)


def score_dense(scores: Scores, calls: np.ndarray, model_classes: Sequence[str], truth: np.ndarray,
                names: dict[int, str]) -> None:
    """Add one tomogram scored against dense labels.

    Parameters
    ----------
    calls : (nz, ny, nx, K) bool, one call per model class.
    model_classes : the K classes of ``calls`` (``scores.classes`` are scored).
    truth : (nz, ny, nx) integer labels, the shape of ``calls`` without the last axis.
    names : label value -> class name; values naming no model class are negatives for all.
    """
    for k, name in enumerate(model_classes):
        if name not in scores.classes:
            continue
        values = [v for v, n in names.items() if n == name]
        scores.add(name, calls[..., k], np.isin(truth, values))


def binned_truth(truth: np.ndarray, names: dict[int, str], b: int) -> np.ndarray:
    """Dense labels at the tomogram's size binned by majority to the output's; values naming no class become -1."""
    values = sorted(names)
    index = np.searchsorted(values, truth)  # labels -> 0..n-1 for the majority vote
    known = np.isin(truth, values)
    binned = bin_labels(np.where(known, index, len(values)), len(values) + 1, b)
    return np.where(binned < len(values), np.asarray(values)[np.minimum(binned, len(values) - 1)], -1)


def check_label_values(labels: Path, truth: np.ndarray, names: dict[int, str]) -> None:
    """Refuse a label volume with values that are not integers or that no class name covers.

    Raises
    ------
    InputError
        Naming the file ``labels``, the values and what they may be.
    """
    if not np.issubdtype(truth.dtype, np.integer):
        if not np.all(np.isfinite(truth)) or np.any(truth != np.round(truth)):
            raise InputError(f"{labels}: expected integer labels (one value per class), found fractional values "
                             f"({truth.dtype}); probabilities are not labels")
    present = np.unique(truth)
    unnamed = [int(v) for v in present if int(v) not in names]
    if unnamed:
        shown = ", ".join(f"{v} {n}" for v, n in sorted(names.items()))
        more = "..." if len(unnamed) > 10 else ""
        raise InputError(f"{labels}: label values {unnamed[:10]}{more} name no class (values: {shown}); "
                         f"name every value in {labels.parent / 'classes.json'}, e.g. {{\"0\": \"Void\"}}")


def annotation_truth(annotation: Annotation, classes: Sequence[str], box: int,
                     z: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The scored truth of one annotated slice.

    Returns
    -------
    truth : (ny, nx) int, index into ``classes`` where exactly one class is painted, else -1.
    in_boxes : (ny, nx) bool, inside any box of a class on this slice.
    own_boxes : class -> (ny, nx) bool, inside that class's boxes.
    """
    ny, nx = annotation.height, annotation.width
    half = box // 2
    count = np.zeros((ny, nx), np.int16)
    truth = np.full((ny, nx), -1, np.int32)
    in_boxes = np.zeros((ny, nx), bool)
    own: dict[str, np.ndarray] = {}
    for feature in annotation.features:
        if feature.title not in classes:
            continue
        k = list(classes).index(feature.title)
        mask = feature.slices.get(z)
        if mask is None:  # boxes without a mask on their slice: dropped, as phase 1 drops them
            continue
        for x, y in feature.boxes.get(z, ()):
            region = own.setdefault(feature.title, np.zeros((ny, nx), bool))
            region[max(0, y - half): max(0, y + half), max(0, x - half): max(0, x + half)] = True
        painted = (mask > 0) & (truth != k)
        count += painted
        truth[painted] = k
    for region in own.values():
        in_boxes |= region
    truth[count > 1] = -2  # painted with two classes: not scored
    return truth, in_boxes, own


def score_annotation(scores: Scores, calls_at: CallsAt, annotation: Annotation, classes: Sequence[str], box: int,
                     known: Sequence[str] = ()) -> int:
    """Add one annotated tomogram; ``calls_at(z)`` gives the (ny, nx, K) calls at unbinned slice z.

    Parameters
    ----------
    classes : the K classes of the calls (the model's).
    known : further feature titles whose paint is truth too (the ontologies): for a single
        network, the other features' painted pixels are its negatives.

    Returns
    -------
    The number of slices scored.
    """
    titles = tuple(dict.fromkeys((*classes, *known)))
    slices = sorted({z for f in annotation.features if f.title in titles for z, b in f.boxes.items() if b})
    for z in slices:
        truth, in_boxes, own = annotation_truth(annotation, titles, box, z)
        calls = calls_at(z)
        labelled = in_boxes & (truth >= 0)
        for k, name in enumerate(classes):
            if name not in scores.classes:
                continue
            scored = labelled | (own.get(name, np.zeros_like(in_boxes)) & (truth == -1))
            scores.add(name, calls[..., k], truth == k, scored)
    return len(slices)


def upsample_calls(calls: np.ndarray, shape: tuple[int, ...], b: int) -> CallsAt:
    """A function z -> (ny, nx, K): the binned calls at unbinned slice z, each pixel from its bin."""
    nzo, nyo, nxo, _ = calls.shape
    rows = np.minimum(np.arange(shape[1]) // b, nyo - 1)
    cols = np.minimum(np.arange(shape[2]) // b, nxo - 1)

    def at(z: int) -> np.ndarray:
        return calls[min(z // b, nzo - 1)][rows][:, cols]

    return at
