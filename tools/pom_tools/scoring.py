"""Scores of ``make quality``: Dice, precision and recall per class, of a network and of a threshold.

A shared network's calls are its argmax (Unknown included), as ``pom evaluate`` decides; the
truth is a dense label volume binned by majority. Only the binned slices in ``scored`` count
(a real tomogram is scored away from its annotated slices). The baseline is one global
threshold on the network's own Density input (z-averaged, binned, normalised as processing
does), its side and value chosen per class on the painted pixels of the annotated slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR, DENSITY, UNKNOWN
from pom_common.modelmeta import ModelInfo
from pom_common.mrcio import read_volume
from pom_common.normalise import processing_normalisation
from pom_common.scns import read_scns
from pom_inference import load_model, segment
from pom_inference.inputs import read_inputs
from pom_inference.preprocess import prepare_inputs
from pom_training.data.painted import PaintedSlices
from pom_training.evaluation.metrics import Scores, dice
from pom_training.evaluation.truth import bin_labels, decide


def rates(scores: Scores) -> dict[str, dict[str, float | None]]:
    """Per class: Dice, precision, recall (None where undefined)."""
    out = {}
    for c in scores.classes:
        tp, fp, fn = scores.tp.get(c, 0), scores.fp.get(c, 0), scores.fn.get(c, 0)
        out[c] = {"dice": dice(tp, fp, fn), "precision": tp / (tp + fp) if tp + fp else None,
                  "recall": tp / (tp + fn) if tp + fn else None}
    return out


def binned_truth(labels: np.ndarray, shape: tuple[int, ...], b: int = BIN_FACTOR) -> np.ndarray:
    """Dense integer labels binned by majority and cut to ``shape`` (the network output's (nz, ny, nx))."""
    binned = bin_labels(labels, int(labels.max()) + 1, b)
    return binned[: shape[0], : shape[1], : shape[2]]


def score_calls(scores: Scores, calls: np.ndarray, classes: Sequence[str], truth: np.ndarray,
                names: Mapping[int, str], scored: np.ndarray | None = None) -> None:
    """Add (nz, ny, nx, K) calls against binned ``truth`` on the binned slices ``scored`` ((nz,) bool)."""
    keep = slice(None) if scored is None else scored
    for k, name in enumerate(classes):
        if name in scores.classes:
            values = [v for v, n in names.items() if n == name]
            scores.add(name, calls[keep][..., k], np.isin(truth[keep], values))


def score_network(model_path: Path, tomograms: Sequence[Path], labels: Sequence[np.ndarray],
                  names: Mapping[int, str], channel_dirs: Sequence[Path], tta: int,
                  scored: Sequence[np.ndarray | None] | None = None) -> Scores:
    """A shared network on ``tomograms`` against their dense ``labels``, pooled."""
    model = load_model(model_path, device=None, quiet=True)
    classes = tuple(c for c in model.info.classes if c != UNKNOWN)
    scores = Scores(classes)
    for i, (tomogram, label) in enumerate(zip(tomograms, labels)):
        read = read_inputs(tomogram, model.info.channels, (tomogram.parent, *channel_dirs), None,
                           model.info.voxel_size)
        probabilities = segment(model, read.volumes, tta=tta)
        truth = binned_truth(label, probabilities.shape[:3], model.info.bin_factor)
        calls = decide(probabilities, model.info.classes, model.info.kind)
        score_calls(scores, calls, model.info.classes, truth, names, None if scored is None else scored[i])
        scores.tomograms.append(tomogram.name)
    return scores


def density_input(config: ProjectConfig, tomogram: Path) -> np.ndarray:
    """(nz/b, ny/b, nx/b) the Density channel as a network trained on ``config`` sees it."""
    info = ModelInfo(kind="shared", classes=("x",), channels=(DENSITY,), z_sum=config.z_sum,
                     normalisation={DENSITY: processing_normalisation(DENSITY, config.density_normalisation)},
                     normalisation_window=max(1, config.ontology_annotation_box_size // BIN_FACTOR))
    return prepare_inputs({DENSITY: read_volume(tomogram).data}, info)[..., 0]


def painted_pixels(config: ProjectConfig, annotated: Iterable[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Density values and painted codes (1..K) of every painted binned pixel on the annotated slices."""
    values, codes = [], []
    for scns in annotated:
        annotation = read_scns(scns)
        density = density_input(config, scns.with_suffix(".mrc"))
        painted = PaintedSlices(annotation, config.ontologies)
        slices = sorted({z for f in annotation.features for z, b in f.boxes.items() if b})
        for z in slices:
            ny, nx = (annotation.height // BIN_FACTOR) * BIN_FACTOR, (annotation.width // BIN_FACTOR) * BIN_FACTOR
            code = painted.crop(z, 0, ny, 0, nx)
            plane = density[min(z // BIN_FACTOR, len(density) - 1)][: code.shape[0], : code.shape[1]]
            values.append(plane[code > 0])
            codes.append(code[code > 0])
    return np.concatenate(values), np.concatenate(codes)


def fit_thresholds(values: np.ndarray, codes: np.ndarray, classes: Sequence[str]) -> dict[str, tuple[int, float]]:
    """Per class (side, threshold), side +1: above is the class, -1: below; best Dice on the painted pixels."""
    out = {}
    grid = np.quantile(values, np.linspace(0.01, 0.99, 99))
    for k, name in enumerate(classes):
        truth = codes == k + 1
        if not truth.any():
            continue
        best = (-1.0, 1, 0.0)
        for side in (1, -1):
            for t in grid:
                called = values * side > t * side
                d = dice(int((called & truth).sum()), int((called & ~truth).sum()), int((~called & truth).sum()))
                if d is not None and d > best[0]:
                    best = (d, side, float(t))
        out[name] = (best[1], best[2])
    return out


def score_threshold(config: ProjectConfig, thresholds: Mapping[str, tuple[int, float]], tomograms: Sequence[Path],
                    labels: Sequence[np.ndarray], names: Mapping[int, str],
                    scored: Sequence[np.ndarray | None] | None = None) -> Scores:
    """The thresholds (one class each, independently) on ``tomograms`` against their dense ``labels``."""
    classes = tuple(c for c in config.ontologies if c in thresholds)
    scores = Scores(classes)
    for i, (tomogram, label) in enumerate(zip(tomograms, labels)):
        density = density_input(config, tomogram)
        truth = binned_truth(label, density.shape)
        calls = np.stack([density * thresholds[c][0] > thresholds[c][1] * thresholds[c][0] for c in classes], -1)
        score_calls(scores, calls, classes, truth, names, None if scored is None else scored[i])
    return scores


def away_from(slices: Iterable[int], nz_binned: int, z_sum: int, b: int = BIN_FACTOR) -> np.ndarray:
    """(nz_binned,) bool: binned slices whose z window touches no annotated slice."""
    keep = np.ones(nz_binned, bool)
    for z in slices:
        lo, hi = (z - z_sum - b) // b, (z + z_sum + b) // b
        keep[max(lo, 0): hi + 1] = False
    return keep


def dense_labels(path: Path) -> np.ndarray:
    """A dense label volume as int."""
    return np.asarray(read_volume(path).data).astype(np.int64)


