"""``pom evaluate``: Dice and IoU per class of a model, against annotations or dense labels.

Two kinds of truth:

* **Annotations** (default): the ``.scns`` files Ais saved in ``test_dir`` beside their
  tomograms. On every slice with boxes, the pixels inside the boxes
  (``ontology_annotation_box_size`` around each centre) count: a pixel painted with exactly
  one of the model's classes is that class. For class c, the pixels of c's own boxes that
  nothing painted count too, as not-c (Pom's rule: a box is complete for its feature).
  Other pixels, and pixels painted with two classes, are not scored.
* **A dense label volume** (``--labels``): an integer volume, at the tomogram's size (it is
  binned by majority, like the network's output) or at the output's size; its values name
  classes through ``classes.json`` beside it (``{"0": "Void", ...}``), or the model's
  classes in order.

The prediction of a shared model is its argmax (Unknown included); of a single model,
probability > 0.5. Counts are pooled over all tomograms, then Dice = 2TP / (2TP + FP + FN)
and IoU = TP / (TP + FP + FN); a class with neither truth nor prediction has no score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.errors import ConfigError, InputError
from pom_common.naming import tomogram_stem

logger = logging.getLogger(__name__)

#: Probability above which a single-feature network calls its feature.
SINGLE_THRESHOLD = 0.5


@dataclass
class Scores:
    """Pooled true positives, false positives and false negatives per class."""

    classes: tuple[str, ...]
    tp: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    tomograms: list[str] = field(default_factory=list)

    def add(self, name: str, predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> None:
        """Count one class over boolean arrays of one shape; ``scored`` limits the pixels counted."""
        if scored is not None:
            predicted, truth = predicted[scored], truth[scored]
        self.tp[name] = self.tp.get(name, 0) + int(np.count_nonzero(predicted & truth))
        self.fp[name] = self.fp.get(name, 0) + int(np.count_nonzero(predicted & ~truth))
        self.fn[name] = self.fn.get(name, 0) + int(np.count_nonzero(~predicted & truth))

    def dice(self, name: str) -> float | None:
        """Dice of one class, None when it has neither truth nor prediction."""
        tp, fp, fn = self.tp.get(name, 0), self.fp.get(name, 0), self.fn.get(name, 0)
        return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    def iou(self, name: str) -> float | None:
        """Intersection over union of one class, None when it has neither truth nor prediction."""
        tp, fp, fn = self.tp.get(name, 0), self.fp.get(name, 0), self.fn.get(name, 0)
        return None if tp + fp + fn == 0 else tp / (tp + fp + fn)

    def mean(self, metric: str) -> float | None:
        """Mean of ``"dice"`` or ``"iou"`` over the classes that have a score."""
        values = [v for v in (getattr(self, metric)(c) for c in self.classes) if v is not None]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict:
        """The JSON document: per class dice, iou and counts, and the means."""
        per_class = {c: {"dice": _round(self.dice(c)), "iou": _round(self.iou(c)), "tp": self.tp.get(c, 0),
                         "fp": self.fp.get(c, 0), "fn": self.fn.get(c, 0)} for c in self.classes}
        return {"tomograms": self.tomograms, "classes": per_class, "mean_dice": _round(self.mean("dice")),
                "mean_iou": _round(self.mean("iou"))}

    def table(self) -> str:
        """Dice, IoU and pixel counts per class, and the means, as a text table."""
        width = max([len("class"), *(len(c) for c in self.classes)])
        lines = [f"{'class':<{width}}  {'Dice':>6}  {'IoU':>6}  {'truth px':>9}  {'called px':>9}"]
        for c in self.classes:
            truth, called = self.tp.get(c, 0) + self.fn.get(c, 0), self.tp.get(c, 0) + self.fp.get(c, 0)
            lines.append(f"{c:<{width}}  {_fmt(self.dice(c))}  {_fmt(self.iou(c))}  {truth:>9}  {called:>9}")
        lines.append(f"{'mean':<{width}}  {_fmt(self.mean('dice'))}  {_fmt(self.mean('iou'))}")
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:>6.3f}"


# ----------------------------------------------------------------------------- arrays


def decide(probabilities: np.ndarray, classes: Sequence[str], kind: str) -> np.ndarray:
    """Per-pixel calls (..., K) bool: the argmax of a shared model, p > 0.5 for a single one."""
    if kind == "shared":
        winner = np.argmax(probabilities, axis=-1)
        return winner[..., None] == np.arange(len(classes))
    return probabilities > SINGLE_THRESHOLD


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


def annotation_truth(annotation, classes: Sequence[str], box: int, z: int) -> tuple[np.ndarray, np.ndarray, dict]:
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


def score_annotation(scores: Scores, calls_at, annotation, classes: Sequence[str], box: int,
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


def upsample_calls(calls: np.ndarray, shape: tuple[int, int, int], b: int):
    """A function z -> (ny, nx, K): the binned calls at unbinned slice z, each pixel from its bin."""
    nzo, nyo, nxo, _ = calls.shape
    rows = np.minimum(np.arange(shape[1]) // b, nyo - 1)
    cols = np.minimum(np.arange(shape[2]) // b, nxo - 1)

    def at(z: int) -> np.ndarray:
        return calls[min(z // b, nzo - 1)][rows][:, cols]

    return at


# ----------------------------------------------------------------------------- files


def _segment(model, tomogram: Path, channel_dirs: Sequence[Path], fallback: float, tta: int) -> tuple[np.ndarray, tuple]:
    from pom_inference import segment
    from pom_inference.inputs import read_inputs

    read = read_inputs(tomogram, model.info.channels, channel_dirs, fallback, model.info.voxel_size)
    shape = next(iter(read.volumes.values())).shape
    return segment(model, read.volumes, tta=tta), shape


def evaluate_annotations(model, folder: Path, config: ProjectConfig, tta: int = 4,
                         channel_dirs: Sequence[Path] = ()) -> Scores:
    """Score ``model`` against every ``.scns`` in ``folder`` (tomograms beside them).

    Raises
    ------
    InputError
        No ``.scns`` file in ``folder``, or none with a box of the model's classes.
    """
    from pom_common.scns import read_scns

    classes = _scored_classes(model.info.classes)
    scores = Scores(classes)
    files = sorted(folder.glob("*.scns"))
    if not files:
        raise InputError(f"{folder}: no .scns annotation files to evaluate against (save them from Ais in "
                         "test_dir, or give --labels)")
    for scns in files:
        annotation = read_scns(scns)
        tomogram = folder / f"{tomogram_stem(scns)}.mrc"
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
        raise InputError(f"{folder}: no boxes of the model's classes {list(classes)} in any .scns file")
    return scores


def label_names(labels: Path, classes: Sequence[str], kind: str = "shared") -> dict[int, str]:
    """Value -> class name: ``classes.json`` beside ``labels`` if present, else the model's classes.

    Without ``classes.json``: value k is the k-th class of a shared model; for a single
    model the volume is a mask, 1 the feature and 0 not.

    Raises
    ------
    InputError
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
        raise InputError(f"{path}: expected a JSON object of label value -> class name ({exc})") from None


def check_label_values(labels: Path, truth: np.ndarray, names: dict[int, str]) -> None:
    """Refuse a label volume with values that are not integers or that no class name covers.

    Raises
    ------
    InputError
        Naming the file, the values and what they may be.
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


def evaluate_labels(model, labels: Path, tomogram: Path, config: ProjectConfig, tta: int = 4,
                    channel_dirs: Sequence[Path] = ()) -> Scores:
    """Score ``model`` on ``tomogram`` against the dense label volume ``labels``.

    Raises
    ------
    InputError
        The label volume's shape is neither the tomogram's nor the output's.
    """
    from pom_common.mrcio import read_volume

    from .scoring import bin_labels

    classes = _scored_classes(model.info.classes)
    names = label_names(labels, model.info.classes, model.info.kind)
    truth = np.asarray(read_volume(labels).data)
    check_label_values(labels, truth, names)
    probabilities, shape = _segment(model, tomogram, (tomogram.parent, *channel_dirs), config.apix, tta)
    out_shape = probabilities.shape[:3]
    if truth.shape == tuple(shape):
        values = sorted(names)
        index = np.searchsorted(values, truth)  # labels -> 0..n-1 for the majority vote
        known = np.isin(truth, values)
        binned = bin_labels(np.where(known, index, len(values)), len(values) + 1, model.info.bin_factor)
        truth = np.where(binned < len(values), np.asarray(values)[np.minimum(binned, len(values) - 1)], -1)
        truth = truth[: out_shape[0], : out_shape[1], : out_shape[2]]
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


def _scored_classes(classes: Iterable[str]) -> tuple[str, ...]:
    return tuple(c for c in classes if c != UNKNOWN)


def run_evaluate(config: ProjectConfig, model_path: Path, labels: Sequence[Path] = (), tomograms: Sequence[Path] = (),
                 tta: int | None = None, json_path: Path | None = None) -> Scores:
    """``pom evaluate``: score a model, print nothing, write the JSON; returns the scores.

    Without ``labels``, against the annotations in ``test_dir``. With them, each label
    volume against its tomogram: ``tomograms`` in the same order, or ``test_dir/<stem>.mrc``
    where the label file is ``<stem>__labels.mrc`` (or ``<stem>.mrc``).

    Raises
    ------
    InputError
        A tomogram cannot be found, or as :func:`evaluate_annotations` / :func:`evaluate_labels`.
    """
    from pom_common.atomic import atomic_write_text
    from pom_inference import load_model

    model = load_model(model_path, device=None, quiet=True)
    tta = tta or config.shared_model_runs_per_volume
    channel_dirs = (config.macromolecule_path,)
    if labels:
        if tomograms and len(tomograms) != len(labels):
            raise InputError(f"--tomogram given {len(tomograms)} times for {len(labels)} --labels")
        total: Scores | None = None
        for i, path in enumerate(labels):
            tomogram = tomograms[i] if tomograms else config.test_path / f"{tomogram_stem(path).split('__')[0]}.mrc"
            if not tomogram.is_file():
                raise InputError(f"{tomogram}: not found (the tomogram of {path.name}; give it with --tomogram)")
            scores = evaluate_labels(model, path, tomogram, config, tta, channel_dirs)
            total = scores if total is None else _merge(total, scores)
        assert total is not None
        result, against = total, "labels"
    else:
        result, against = evaluate_annotations(model, config.require_dir("test_dir"), config, tta, channel_dirs), \
            "annotations"
    document = {"model": str(model_path), "kind": model.info.kind, "against": against, "tta": tta, **result.to_dict()}
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(document, indent=1) + "\n")
    return result


def _merge(a: Scores, b: Scores) -> Scores:
    for name in a.classes:
        a.tp[name] = a.tp.get(name, 0) + b.tp.get(name, 0)
        a.fp[name] = a.fp.get(name, 0) + b.fp.get(name, 0)
        a.fn[name] = a.fn.get(name, 0) + b.fn.get(name, 0)
    a.tomograms += b.tomograms
    return a


def default_json_path(config: ProjectConfig, model_path: Path) -> Path:
    """Where ``pom evaluate`` writes its JSON unless told: ``test_dir/<model>_evaluation.json``."""
    return config.test_path / f"{model_path.stem}_evaluation.json"


def add_parser(sub) -> None:
    """Add ``pom evaluate`` to the ``pom`` command's subparsers."""
    p = sub.add_parser("evaluate", help="Dice and IoU per class against the annotations in test_dir, or --labels")
    p.add_argument("-m", "--model", default=None, help="ONNX model (default: the shared network)")
    p.add_argument("-o", "--ontology", default=None, help="evaluate this feature's single network instead")
    p.add_argument("--labels", action="append", default=[], type=Path,
                   help="dense label volume (.mrc; values named by classes.json beside it); repeatable")
    p.add_argument("--tomogram", action="append", default=[], type=Path,
                   help="the tomogram of each --labels (default: test_dir/<stem>.mrc)")
    p.add_argument("--tta", type=int, default=None, help="rotations averaged (default: shared_model_runs_per_volume)")
    p.add_argument("--json", default=None, type=Path, help="JSON output (default: test_dir/<model>_evaluation.json)")


def main_evaluate(args, config: ProjectConfig) -> int:
    """Run ``pom evaluate`` for parsed ``args``; print the table; 0."""
    from pom_common.layout import ProjectLayout

    layout = ProjectLayout.of(config)
    if args.model:
        model_path = Path(args.model)
    elif args.ontology:
        if args.ontology not in config.ontologies:
            raise ConfigError(f"-o {args.ontology!r}: not one of the ontologies {list(config.ontologies)}")
        model_path = layout.single_model(args.ontology)
    else:
        model_path = layout.shared_model()
    json_path = args.json or default_json_path(config, model_path)
    scores = run_evaluate(config, model_path, labels=args.labels, tomograms=args.tomogram, tta=args.tta,
                          json_path=json_path)
    print(f"{model_path.name} on {', '.join(scores.tomograms)}:")
    print(scores.table())
    print(f"Wrote {json_path}")
    return 0


__all__ = ["Scores", "add_parser", "main_evaluate", "run_evaluate"]
