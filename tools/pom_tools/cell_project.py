"""The cell project of ``make quality`` on disk: annotations like a person painting in Ais, then every file.

The tomograms themselves are :mod:`pom_tools.synthetic_cell`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion, label

from pom_common.atomic import atomic_write_text
from pom_common.config import config_from_dict, default_config_dict, write_config
from pom_common.constants import CONFIG_FILENAME
from pom_common.mrcio import write_volume
from pom_common.naming import feature_filename

from .aisfile import AisFeature, write_ais_pickle
from .synthetic import LABELS, project_tomograms
from .synthetic_cell import (
    CELL_CLASSES,
    CELL_PALETTE,
    CELL_VOXEL_SIZE,
    CONTEXT_CLASSES,
    CYTOPLASM,
    ENVELOPE,
    LIPID,
    MITOCHONDRION,
    NUCLEOPLASM,
    VESICLE,
    VOID,
    as_int8,
    make_cell,
)

#: Classes painted as whole objects when a box touches them (as annotators do).
_WHOLE = (VESICLE, LIPID)
#: Boxes per feature on an annotated slice (fewest, most): annotators box the organelles more
#: than the cytoplasm, vacuum and nucleoplasm around them.
_BOXES = {VOID: (1, 2), CYTOPLASM: (1, 2), NUCLEOPLASM: (1, 2), MITOCHONDRION: (2, 3), ENVELOPE: (2, 3),
          VESICLE: (2, 4), LIPID: (2, 4)}


def plan_cell_annotation(labels: np.ndarray, seed: int, box: int, z_sum: int,
                         n_slices: int | None = None, allowed: np.ndarray | None = None) -> list[AisFeature]:
    """Annotate like a person in Ais: a few slices, several features on each, boxes and paint.

    Parameters
    ----------
    labels : (nz, ny, nx) dense labels (CELL_CLASSES indices).
    seed : randomness of the slices, boxes and margins.
    box : the box size (unbinned px); boxes lie fully inside the image.
    z_sum : boxes stay where Pom keeps them (z_sum < z < nz - z_sum).
    n_slices : 2 or 3 (random when None).
    allowed : (nz,) bool, the slices the annotator may choose besides the middle one (None: all).

    Returns
    -------
    The features in the order the annotator first used them.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = labels.shape
    half = box // 2
    n_slices = n_slices or int(rng.choice([2, 3], p=[0.3, 0.7]))
    lo, hi = z_sum + 2, nz - z_sum - 3
    middle = nz // 2  # Ais opens there
    void = (labels[:, half: ny - half, half: nx - half] == VOID).mean(axis=(1, 2))
    others = [z for z in range(lo, hi + 1) if abs(z - middle) >= 8 and (allowed is None or allowed[z])]
    others.sort(key=lambda z: -min(void[z], 1 - void[z]) + 0.02 * rng.random())  # the lamella surface crosses
    slices = [middle]
    for z in others:
        if all(abs(z - s) >= 8 for s in slices):
            slices.append(z)
        if len(slices) == n_slices:
            break
    order = list(rng.permutation(len(CELL_CLASSES)))
    boxes: dict[int, dict[int, list[list[int]]]] = {}
    masks: dict[int, dict[int, np.ndarray]] = {}
    used: list[int] = []
    for z in slices:
        plane = labels[z]
        for f in order:
            mask = plane == f
            if mask[half: ny - half, half: nx - half].sum() < 40:
                continue
            core = binary_erosion(mask, iterations=5)
            rim = mask & ~core
            pools = []
            for region in (rim, core, mask):
                ys, xs = np.nonzero(region)
                ok = (ys >= half) & (ys < ny - half) & (xs >= half) & (xs < nx - half)
                pools.append((ys[ok], xs[ok]))
            small = f in _WHOLE
            lo, hi = _BOXES[f]
            n_boxes = int(rng.integers(lo, hi + 1))
            centres: list[list[int]] = []
            if small:  # a box centred on an object
                parts, n = label(mask)
                ids = [i for i in range(1, n + 1)]
                rng.shuffle(ids)
                for i in ids[:n_boxes]:
                    ys, xs = np.nonzero(parts == i)
                    cy, cx = int(np.clip(ys.mean(), half, ny - half - 1)), int(np.clip(xs.mean(), half, nx - half - 1))
                    centres.append([cx, cy])
            else:  # on the boundary; the second box of a context class inside it, others sometimes anywhere
                for k in range(n_boxes):
                    if f in CONTEXT_CLASSES and k % 2 == 1 and len(pools[1][0]):
                        ys, xs = pools[1]
                    else:
                        ys, xs = pools[0] if (k % 3 != 2 and len(pools[0][0])) else pools[2]
                    if len(ys) == 0:
                        continue
                    i = int(rng.integers(len(ys)))
                    centres.append([int(xs[i]), int(ys[i])])
            if not centres:
                continue
            window = np.zeros((ny, nx), bool)
            for cx, cy in centres:
                m = box // 2 + int(rng.integers(6, 21))
                window[max(0, cy - m): cy + m, max(0, cx - m): cx + m] = True
            paint = mask & window
            if small:  # whole objects the window touches
                parts, _ = label(mask)
                touched = np.unique(parts[paint])
                paint |= np.isin(parts, touched[touched > 0])
            if f not in used:
                used.append(f)
                boxes[f], masks[f] = {}, {}
            boxes[f][z] = centres
            masks[f][z] = paint.astype(np.uint8)
    return [AisFeature(CELL_CLASSES[f], boxes[f], masks[f], CELL_PALETTE[CELL_CLASSES[f]], box) for f in used]


def write_cell_project(root: Path, n_train: int = 4, n_test: int = 2, shape: tuple[int, int, int] = (48, 256, 256),
                       seed: int = 1607, box: int = 96, z_sum: int = 2, settings: dict | None = None) -> dict:
    """A complete cell project: configuration, tomograms, channels, .scns, held-out ground truth.

    Returns
    -------
    ``{"train": [stems], "test": [stems]}``. Held-out tomograms (and their channels and
    annotations) are in ``test/``, their dense labels in ``ground_truth/<stem>__labels.mrc``
    with ``ground_truth/classes.json``. The second training and the second test tomogram
    are stored as int8.
    """
    stems: dict[str, list[str]] = {"train": [], "test": []}
    for i, role, stem in project_tomograms(root, n_train, n_test):
        cell = make_cell(seed + i, shape)
        density = as_int8(cell.density) if i in (1, n_train + 1) else cell.density
        folder, channels = (root / "tomograms", root / "macromolecules") if role == "train" else (root / "test",) * 2
        tomogram = folder / f"{stem}.mrc"
        write_volume(tomogram, density, CELL_VOXEL_SIZE)
        write_volume(channels / feature_filename(stem, "Membrane"), cell.membrane, CELL_VOXEL_SIZE)
        write_volume(channels / feature_filename(stem, "Ribosome"), cell.ribosome, CELL_VOXEL_SIZE)
        write_volume(root / "ground_truth" / feature_filename(stem, LABELS), cell.labels, CELL_VOXEL_SIZE)
        features = plan_cell_annotation(cell.labels, seed + 500 + i, box, z_sum)
        write_ais_pickle(folder / f"{stem}.scns", tomogram, shape, features, CELL_VOXEL_SIZE / 10)
        stems[role].append(stem)
    doc = default_config_dict()
    doc.update({"macromolecules": ["Density", "Membrane", "Ribosome"], "ontologies": list(CELL_CLASSES),
                "ontology_annotation_box_size": box, "z_sum": z_sum, "GPUS": "0"})
    doc.update(settings or {})
    write_config(config_from_dict(doc, base_dir=root), root / CONFIG_FILENAME)
    atomic_write_text(root / "ground_truth" / "classes.json", json.dumps(dict(enumerate(CELL_CLASSES))))
    return stems
