"""Projects of ``make quality`` made like the ``ais_mini`` fixture, with or without real data's confounders.

* :func:`write_lamella_project`: 7 classes (:data:`~pom_tools.synthetic_cell.CELL_CLASSES`),
  annotated and held-out tomograms imaged like the fixture (:mod:`pom_tools.synthetic_lamella`),
  box 64, z_sum 2, annotations as :func:`~pom_tools.cell_project.plan_cell_annotation` makes
  them; with :data:`~pom_tools.synthetic_lamella.REAL` confounders the slices annotated stay
  out of the specimen's top third.
* :func:`write_feature_project`: one tomogram, one feature and "Background", the Density
  channel only, a few boxes on three slices, confounders; it is scored on itself away from
  the annotated slices, as one scores a real tomogram.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion

from pom_common.atomic import atomic_write_text
from pom_common.config import config_from_dict, default_config_dict, write_config
from pom_common.constants import CONFIG_FILENAME
from pom_common.mrcio import write_volume
from pom_common.naming import feature_filename

from .aisfile import AisFeature, write_ais_pickle
from .cell_project import plan_cell_annotation
from .synthetic import LABELS, project_tomograms
from .synthetic_cell import CELL_CLASSES, CELL_PALETTE
from .synthetic_lamella import FIXTURE, LAMELLA_VOXEL_SIZE, REAL, Confounders, Lamella, make_lamella

#: The second class of a feature project: everything that is not the feature.
BACKGROUND = "Background"
#: Where the annotated slices of a feature project are recorded (z values, for scoring away from them).
ANNOTATED_SLICES = "annotated_slices.json"


def _allowed(lamella: Lamella) -> np.ndarray:
    """(nz,) bool: slices inside the specimen and below its top third (where annotators stay)."""
    area = lamella.inside.mean(axis=(1, 2))
    top = lamella.top.mean(axis=(1, 2))
    return (area > 0.3) & (top < 0.05 * np.maximum(area, 1e-6))


def _config(root: Path, channels: list[str], ontologies: list[str], box: int, z_sum: int,
            settings: dict | None) -> None:
    doc = default_config_dict()
    doc.update({"macromolecules": channels, "ontologies": ontologies, "ontology_annotation_box_size": box,
                "z_sum": z_sum, "apix": LAMELLA_VOXEL_SIZE, "GPUS": "0"})
    doc.update(settings or {})
    write_config(config_from_dict(doc, base_dir=root), root / CONFIG_FILENAME)


def write_lamella_project(root: Path, n_train: int = 2, n_test: int = 2, shape: tuple[int, int, int] = (40, 160, 160),
                          seed: int = 4711, box: int = 64, z_sum: int = 2, confounders: Confounders = FIXTURE,
                          settings: dict | None = None) -> dict[str, list[str]]:
    """Seven classes imaged like the fixture: tomograms, channels, ``.scns``, held-out dense labels.

    Returns ``{"train": [stems], "test": [stems]}``; the held-out tomograms and their
    annotations are in ``test/``, every dense label volume in ``ground_truth/``.
    """
    stems: dict[str, list[str]] = {"train": [], "test": []}
    for i, role, stem in project_tomograms(root, n_train, n_test):
        lamella = make_lamella(seed + i, shape, confounders)
        cell = lamella.cell
        folder, channels = (root / "tomograms", root / "macromolecules") if role == "train" else (root / "test",) * 2
        tomogram = folder / f"{stem}.mrc"
        write_volume(tomogram, cell.density, LAMELLA_VOXEL_SIZE)
        write_volume(channels / feature_filename(stem, "Membrane"), cell.membrane, LAMELLA_VOXEL_SIZE)
        write_volume(channels / feature_filename(stem, "Ribosome"), cell.ribosome, LAMELLA_VOXEL_SIZE)
        write_volume(root / "ground_truth" / feature_filename(stem, LABELS), cell.labels, LAMELLA_VOXEL_SIZE)
        allowed = _allowed(lamella) if confounders != FIXTURE else None
        features = plan_cell_annotation(cell.labels, seed + 500 + i, box, z_sum, n_slices=3, allowed=allowed)
        write_ais_pickle(folder / f"{stem}.scns", tomogram, shape, features, LAMELLA_VOXEL_SIZE / 10)
        stems[role].append(stem)
    _config(root, ["Density", "Membrane", "Ribosome"], list(CELL_CLASSES), box, z_sum, settings)
    atomic_write_text(root / "ground_truth" / "classes.json", json.dumps(dict(enumerate(CELL_CLASSES))))
    return stems


def plan_feature_annotation(truth: np.ndarray, allowed: np.ndarray, seed: int, box: int,
                            feature: str) -> list[AisFeature]:
    """Three slices (the middle one first), 1-3 boxes of the feature and 1-2 of Background on each.

    Feature boxes lie on the feature's boundary, Background boxes anywhere else in the image
    (gold and debris included when they are there); each class is painted inside its boxes
    plus a 6-20 px margin.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = truth.shape
    half = box // 2
    middle = nz // 2
    candidates = [z for z in range(3, nz - 3) if allowed[z] and abs(z - middle) >= 4]
    rng.shuffle(candidates)
    slices = [middle]
    for z in candidates:
        if all(abs(z - s) >= 4 for s in slices):
            slices.append(z)
        if len(slices) == 3:
            break
    out = []
    for value, title, counts in ((1, feature, (1, 3)), (0, BACKGROUND, (1, 2))):
        boxes: dict[int, list[list[int]]] = {}
        masks: dict[int, np.ndarray] = {}
        for z in slices:
            mask = truth[z] == value
            region = mask & ~binary_erosion(mask, iterations=4) if value else mask
            ys, xs = np.nonzero(region[half: ny - half, half: nx - half])
            if not len(ys):
                continue
            centres = []
            for _ in range(int(rng.integers(counts[0], counts[1] + 1))):
                i = int(rng.integers(len(ys)))
                centres.append([int(xs[i]) + half, int(ys[i]) + half])
            window = np.zeros((ny, nx), bool)
            for cx, cy in centres:
                m = half + int(rng.integers(6, 21))
                window[max(0, cy - m): cy + m, max(0, cx - m): cx + m] = True
            boxes[z], masks[z] = centres, (mask & window).astype(np.uint8)
        if boxes:
            out.append(AisFeature(title, boxes, masks, CELL_PALETTE.get(title, (0.6, 0.6, 0.6)), box))
    return out


def write_feature_project(root: Path, seed: int = 5150, shape: tuple[int, int, int] = (96, 192, 192), box: int = 64,
                          z_sum: int = 2, feature: str = "Mitochondrion", confounders: Confounders = REAL,
                          settings: dict | None = None) -> list[int]:
    """One tomogram, ``feature`` and Background, the Density channel only; returns the annotated slices.

    ``ground_truth/TS_001__labels.mrc`` holds 1 for the feature and 0 elsewhere; the
    annotated slices are also in ``ground_truth/annotated_slices.json``.
    """
    for sub in ("tomograms", "test", "ground_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lamella = make_lamella(seed, shape, confounders)
    truth = (lamella.cell.labels == CELL_CLASSES.index(feature)).astype(np.int8)
    tomogram = root / "tomograms" / "TS_001.mrc"
    write_volume(tomogram, lamella.cell.density, LAMELLA_VOXEL_SIZE)
    write_volume(root / "test" / "TS_001.mrc", lamella.cell.density, LAMELLA_VOXEL_SIZE)
    write_volume(root / "ground_truth" / feature_filename("TS_001", LABELS), truth, LAMELLA_VOXEL_SIZE)
    features = plan_feature_annotation(truth, _allowed(lamella), seed + 500, box, feature)
    write_ais_pickle(root / "tomograms" / "TS_001.scns", tomogram, shape, features, LAMELLA_VOXEL_SIZE / 10)
    slices = sorted({z for f in features for z in f.boxes})
    _config(root, ["Density"], [feature, BACKGROUND], box, z_sum, settings)
    atomic_write_text(root / "ground_truth" / "classes.json", json.dumps({"0": BACKGROUND, "1": feature}))
    atomic_write_text(root / "ground_truth" / ANNOTATED_SLICES, json.dumps(slices))
    return slices
