"""``pom evaluate``: Dice and IoU per class of a model, against annotations or dense labels, over files.

Two kinds of truth (:mod:`.truth` says what counts):

* **Annotations** (default): the ``.scns`` files Ais saved in ``test_dir`` beside their tomograms.
* **A dense label volume** (``--labels``): an integer volume, at the tomogram's size (it is
  binned by majority, like the network's output) or at the output's size; its values name
  classes through ``classes.json`` beside it (``{"0": "Void", ...}``), or the model's
  classes in order.

Counts are pooled over all tomograms (:class:`.metrics.Scores`); a class with neither truth
nor prediction has no score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_text
from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import InputError, UsageError
from pom_common.mrcio import read_volume
from pom_common.naming import source_stem, tomogram_filename, tomogram_stem
from pom_common.scns import read_scns
from pom_inference import Model, load_model, segment
from pom_inference.inputs import read_inputs
from pom_inference.omezarr import read_level

from .metrics import Scores
from .truth import binned_truth, check_label_values, decide, score_annotation, score_dense, upsample_calls

logger = logging.getLogger(__name__)


def _segment(model: Model, tomogram: Path, channel_dirs: Sequence[Path], fallback: float,
             tta: int) -> tuple[np.ndarray, tuple[int, ...]]:
    read = read_inputs(tomogram, model.info.channels, channel_dirs, fallback, model.info.voxel_size)
    shape = next(iter(read.volumes.values())).shape
    return segment(model, read.volumes, tta=tta), shape


def _scored_classes(classes: Iterable[str]) -> tuple[str, ...]:
    return tuple(c for c in classes if c != UNKNOWN)


def evaluate_annotations(model: Model, folder: Path, config: ProjectConfig, tta: int,
                         channel_dirs: Sequence[Path] = ()) -> Scores:
    """Score ``model`` against every ``.scns`` in ``folder`` (tomograms beside them).

    Raises
    ------
    UsageError
        No ``.scns`` file in ``folder``, or none with a box of the model's classes.
    InputError
        A tomogram's shape differs from its annotation's.
    """
    classes = _scored_classes(model.info.classes)
    scores = Scores(classes)
    files = sorted(folder.glob("*.scns"))
    if not files:
        raise UsageError(f"{folder}: no .scns annotation files to evaluate against (save them from Ais in "
                         "test_dir, or give --labels)")
    for scns in files:
        annotation = read_scns(scns)
        tomogram = folder / tomogram_filename(tomogram_stem(scns))
        probabilities, shape = _segment(model, tomogram, (folder, *channel_dirs), config.apix, tta)
        if shape != annotation.shape:
            raise InputError(f"{tomogram}: shape {shape} differs from the annotation {scns.name} {annotation.shape}")
        calls = decide(probabilities, model.info.classes, model.info.kind)
        n = score_annotation(scores, upsample_calls(calls, shape, model.info.bin_factor), annotation,
                             model.info.classes, config.ontology_annotation_box_size, config.ontologies)
        if n:
            scores.tomograms.append(tomogram.name)
        logger.info("%s: %d annotated slices scored", scns.name, n)
    if not scores.tomograms:
        raise UsageError(f"{folder}: no boxes of the model's classes {list(classes)} in any .scns file")
    return scores


def label_names(labels: Path, classes: Sequence[str], kind: str = "shared") -> dict[int, str]:
    """Value -> class name: ``classes.json`` beside ``labels`` if present, else the model's classes.

    Without ``classes.json``: value k is the k-th class of a shared model; for a single
    model the volume is a mask, 1 the feature and 0 not.

    Raises
    ------
    UsageError
        ``classes.json`` is not a JSON object of value -> name.
    """
    path = labels.parent / "classes.json"
    if not path.is_file():
        if kind == "single":
            return {0: f"not {classes[0]}", 1: classes[0]}
        return dict(enumerate(classes))
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: expected a JSON object of label value -> class name ({exc})") from None


def evaluate_labels(model: Model, labels: Path, tomogram: Path, config: ProjectConfig, tta: int,
                    channel_dirs: Sequence[Path] = ()) -> Scores:
    """Score ``model`` on ``tomogram`` against the dense label volume ``labels``.

    Raises
    ------
    InputError
        The label volume's shape is neither the tomogram's nor the output's.
    """
    classes = _scored_classes(model.info.classes)
    names = label_names(labels, model.info.classes, model.info.kind)
    if labels.name.endswith(".zarr") and labels.is_dir():  # an OME-Zarr label map (pom-infer --format ome-zarr)
        truth = read_level(labels)[0]
    else:
        truth = np.asarray(read_volume(labels).data)
    check_label_values(labels, truth, names)
    probabilities, shape = _segment(model, tomogram, (tomogram.parent, *channel_dirs), config.apix, tta)
    out_shape = probabilities.shape[:3]
    if truth.shape == tuple(shape):
        truth = binned_truth(truth, names, model.info.bin_factor)[: out_shape[0], : out_shape[1], : out_shape[2]]
    if truth.shape != out_shape:
        raise InputError(f"{labels}: shape {truth.shape} is neither the tomogram's {tuple(shape)} nor the "
                         f"segmentation's {out_shape}")
    scores = Scores(classes)
    calls = decide(probabilities, model.info.classes, model.info.kind)
    score_dense(scores, calls, model.info.classes, truth, names)
    scores.tomograms.append(tomogram.name)
    missing = [c for c in classes if c not in names.values()]
    if missing:
        logger.warning("%s: no label value names %s; they count as absent", labels.name, missing)
    return scores


def run_evaluate(config: ProjectConfig, model_path: Path, labels: Sequence[Path] = (), tomograms: Sequence[Path] = (),
                 tta: int | None = None, json_path: Path | None = None) -> Scores:
    """``pom evaluate``: score a model, print nothing, write the JSON; returns the scores.

    Without ``labels``, against the annotations in ``test_dir``. With them, each label
    volume against its tomogram: ``tomograms`` in the same order, or ``test_dir/<stem>.mrc``
    where the label file is ``<stem>__labels.mrc`` (or ``<stem>.mrc``).

    Raises
    ------
    UsageError
        A tomogram cannot be found, ``--tomogram`` does not pair with ``--labels``, nothing to
        score against (exit 2); or as :func:`evaluate_annotations` / :func:`evaluate_labels`.
    """
    model = load_model(model_path, device=None, quiet=True)
    tta = tta or config.shared_model_runs_per_volume
    channel_dirs = (config.macromolecule_path,)
    if labels:
        if tomograms and len(tomograms) != len(labels):
            raise UsageError(f"--tomogram given {len(tomograms)} times for {len(labels)} --labels")
        total: Scores | None = None
        for i, path in enumerate(labels):
            tomogram = tomograms[i] if tomograms else config.test_path / tomogram_filename(source_stem(path))
            if not tomogram.is_file():
                raise UsageError(f"{tomogram}: not found (the tomogram of {path.name}; give it with --tomogram)")
            scores = evaluate_labels(model, path, tomogram, config, tta, channel_dirs)
            total = scores if total is None else total.merge(scores)
        assert total is not None
        result, against = total, "labels"
    else:
        result, against = evaluate_annotations(model, config.require_dir("test_dir"), config, tta, channel_dirs), \
            "annotations"
    document = {"model": str(model_path), "kind": model.info.kind, "against": against, "tta": tta, **result.to_dict()}
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(document, indent=1) + "\n")
    return result
