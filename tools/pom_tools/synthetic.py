"""Seeded synthetic cryo-ET tomograms with dense ground truth and Ais-like sparse annotations.

A lamella slab (tilted, wavy) with vacuum above and below (Void); inside it cytoplasm with
ribosome-like particles (Cytoplasm), mitochondria (double membrane, granular matrix,
Mitochondrion) and vesicles (single membrane, light lumen, Vesicle). Dense = dark, as in raw
tomograms. Channels: Membrane and Ribosome, uint8 0..255. Annotations: a few boxes per
feature on a few slices, painted with the ground truth inside the boxes, saved as ``.scns``
pickles with Ais's class layout (``Ais.core.se_frame``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

from pom_common.atomic import atomic_write_text
from pom_common.config import config_from_dict, default_config_dict, write_config
from pom_common.constants import CONFIG_FILENAME, UNKNOWN
from pom_common.mrcio import write_volume
from pom_common.naming import feature_filename
from pom_training.evaluation.render import DEFAULT_COLOURS

from .aisfile import AisFeature, write_ais_pickle

CLASSES = ("Void", "Cytoplasm", "Mitochondrion", "Vesicle")
VOID, CYTOPLASM, MITOCHONDRION, VESICLE = range(4)
#: Colours (RGB 0..1) of the classes in the .scns files: the previews' defaults.
PALETTE = {c: DEFAULT_COLOURS[c] for c in (*CLASSES, UNKNOWN)}
#: The dense ground truth of tomogram ``TS``: ``ground_truth/TS__labels.mrc``.
LABELS = "labels"
#: Box centres planned per feature: title -> z -> [[x, y], ...].
Plan = dict[str, dict[int, list[list[int]]]]


@dataclass(frozen=True)
class Phantom:
    """One synthetic tomogram: density, dense labels and the two input channels."""

    density: np.ndarray  # (nz, ny, nx) float32, standardised, dense = dark
    labels: np.ndarray  # (nz, ny, nx) int8, CLASSES indices
    membrane: np.ndarray  # (nz, ny, nx) uint8
    ribosome: np.ndarray  # (nz, ny, nx) uint8


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed standard normal noise, float32."""
    return gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)


def lamella(rng: np.random.Generator, shape: tuple[int, int, int], max_tilt: float,
            half_range: tuple[float, float]) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, float]:
    """A lamella between two tilted, wavy surfaces: the (sparse) z, y, x grids, the voxels inside, its half-thickness."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    tilt = rng.uniform(-max_tilt, max_tilt, 2)
    wave = 1.5 * np.sin(x / rng.uniform(25, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(30, 50))
    centre = nz / 2 + tilt[0] * (x - nx / 2) + tilt[1] * (y - ny / 2) + wave
    half = rng.uniform(*half_range) * nz
    return (z, y, x), np.abs(z - centre) < half, half


def make_phantom(seed: int, shape: tuple[int, int, int] = (48, 192, 192), n_mito: int = 2,
                 n_vesicles: int = 6) -> Phantom:
    """One tomogram with its ground truth and channels (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    (z, y, x), inside, half = lamella(rng, shape, 0.06, (0.27, 0.33))
    labels = np.where(inside, CYTOPLASM, VOID).astype(np.int8)
    density = np.where(inside, 0.3, 0.0).astype(np.float32)
    membrane = np.zeros(shape, np.float32)
    # Mitochondria: ellipsoids with a double membrane and a granular matrix.
    placed: list[tuple[float, float, float, float]] = []

    def free(cy: float, cx: float, r: float) -> bool:
        return all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 6) ** 2 for py, px, _, pr in placed)

    for _ in range(n_mito):
        for _attempt in range(50):
            ry, rx = rng.uniform(22, 34), rng.uniform(30, 46)
            cy, cx = rng.uniform(0.15, 0.85) * ny, rng.uniform(0.15, 0.85) * nx
            if free(cy, cx, max(ry, rx)):
                break
        rz = rng.uniform(0.5, 0.8) * half
        cz = nz / 2 + rng.uniform(-0.2, 0.2) * half
        placed.append((cy, cx, cz, max(ry, rx)))
        r = np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        body = (r < 1.0) & inside
        labels[body] = MITOCHONDRION
        scale = min(ry, rx)
        outer = body & (r > 1.0 - 2.0 / scale)
        inner = body & (r < 1.0 - 4.0 / scale) & (r > 1.0 - 6.0 / scale)
        matrix = body & (r <= 1.0 - 6.0 / scale)
        # Lamellar cristae: inner-membrane sheets across the matrix, every ~9 px along its long axis.
        along = (x - cx) if rx >= ry else (y - cy)
        cristae = matrix & (np.abs(np.mod(along + rng.uniform(0, 9), 9.0) - 4.5) < 0.8)
        density[body] = 0.2
        density[matrix] = 0.75
        density[outer | inner | cristae] = 1.25
        membrane[outer | inner | cristae] = 1.0
        granules = gaussian_filter((rng.random(shape) < 0.004).astype(np.float32), 1.2) * 6
        density[matrix] += granules[matrix]
    # Vesicles: spheres with a single membrane and a light lumen.
    for _ in range(n_vesicles):
        for _attempt in range(50):
            rad = rng.uniform(12, 20)
            cy, cx = rng.uniform(0.1, 0.9) * ny, rng.uniform(0.1, 0.9) * nx
            if free(cy, cx, rad):
                break
        cz = nz / 2 + rng.uniform(-0.4, 0.4) * half
        placed.append((cy, cx, cz, rad))
        r = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
        body = (r < rad) & inside
        labels[body] = VESICLE
        shell = body & (r > rad - 2.0)
        density[body] = 0.14
        density[shell] = 1.25
        membrane[shell] = 1.0
    # Ribosome-like particles in the cytoplasm.
    cyto = labels == CYTOPLASM
    seeds = (rng.random(shape) < 0.0025) & cyto
    ribosomes = gaussian_filter(seeds.astype(np.float32), 1.6) * 40
    ribosomes = np.clip(ribosomes, 0, 1) * cyto
    density += 0.9 * ribosomes
    # Imaging: blur, noise, dense = dark, standardised.
    tomogram = -gaussian_filter(density, (1.1, 0.7, 0.7)) + 0.35 * smooth_noise(rng, shape, 0.8) * 2.5
    tomogram += 0.15 * (x / nx - 0.5)
    tomogram = ((tomogram - tomogram.mean()) / tomogram.std()).astype(np.float32)
    mem = gaussian_filter(membrane, 0.8) * rng.uniform(0.8, 1.0) + 0.05 * smooth_noise(rng, shape, 1.0)
    rib = gaussian_filter(ribosomes, 1.0) * 2.0 + 0.05 * smooth_noise(rng, shape, 1.0)
    to_u8 = lambda v: np.clip(np.rint(v * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return Phantom(tomogram, labels, to_u8(np.clip(mem * 1.6, 0, 1)), to_u8(np.clip(rib, 0, 1)))


# ----------------------------------------------------------------------------- annotations


def plan_boxes(labels: np.ndarray, seed: int, slices: int = 3, boxes_per_feature: int = 4,
               box: int = 96, z_margin: int = 3) -> dict[str, dict[int, list[list[int]]]]:
    """Like a person in Ais: a few slices per feature, a few boxes each, mostly on boundaries.

    Slices are chosen where the feature is well represented (for Void: where the lamella
    surface crosses the image); box centres lie on the feature, most near its boundary.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = labels.shape
    half = box // 2
    inner = labels[:, half: ny - half, half: nx - half]
    plan: dict[str, dict[int, list[list[int]]]] = {}
    for f, title in enumerate(CLASSES):
        fraction = (inner == f).mean(axis=(1, 2))
        candidates = [z for z in range(z_margin, nz - z_margin) if fraction[z] > 0.02]
        # Prefer slices where the feature covers a good part of the image, but not all of it;
        # Ais opens at the middle slice, so every feature present there is annotated there too.
        candidates.sort(key=lambda z: abs(fraction[z] - 0.5) if f in (VOID, CYTOPLASM) else -fraction[z])
        middle = nz // 2
        chosen: list[int] = [middle] if f != VOID and fraction[middle] > 0.02 else []
        for z in candidates:
            if all(abs(z - c) >= 4 for c in chosen):
                chosen.append(z)
            if len(chosen) == slices:
                break
        per_z: dict[int, list[list[int]]] = {}
        for z in chosen:
            mask = labels[z] == f
            edge = mask & ~binary_erosion(mask, iterations=6)
            core = binary_erosion(mask, iterations=6)
            pool = []
            # Small objects get a box centred on them; large ones mostly a box on their boundary.
            for region in ((core, mask) if f in (VESICLE, CYTOPLASM) and z == middle else (edge, mask)):
                ys, xs = np.nonzero(region)
                ok = (ys >= half) & (ys < ny - half) & (xs >= half) & (xs < nx - half)
                pool.append((ys[ok], xs[ok]))
            centres = []
            for k in range(boxes_per_feature):
                ys, xs = pool[0] if (k % 3 != 2 and len(pool[0][0])) else pool[1]
                if len(ys) == 0:
                    continue
                i = rng.integers(len(ys))
                centres.append([int(xs[i]), int(ys[i])])  # Ais: [x, y] = [column, row]
            if centres:
                per_z[z] = centres
        if per_z:
            plan[title] = per_z
    return plan


def write_scns(path: Path, tomogram_path: Path, labels: np.ndarray, plan: Plan, box: int,
               pixel_size_nm: float) -> None:
    """Save an annotation in Ais's pickle layout; masks = ground truth inside the boxes (+ margin)."""
    nz, ny, nx = labels.shape
    margin = 8
    features = []
    for title, per_z in plan.items():
        f = CLASSES.index(title)
        masks = {}
        for z, centres in per_z.items():
            window = np.zeros((ny, nx), bool)
            for x, y in centres:
                h = box // 2 + margin
                window[max(0, y - h): y + h, max(0, x - h): x + h] = True
            masks[z] = ((labels[z] == f) & window).astype(np.uint8)
        features.append(AisFeature(title, dict(per_z), masks, PALETTE[title], box))
    write_ais_pickle(path, tomogram_path, labels.shape, features, pixel_size_nm)


def project_tomograms(root: Path, n_train: int, n_test: int) -> Iterator[tuple[int, str, str]]:
    """Make a synthetic project's folders; yield (index, "train" or "test", stem TS_001..) per tomogram."""
    for sub in ("tomograms", "macromolecules", "test", "ground_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        yield i, ("train" if i < n_train else "test"), f"TS_{i + 1:03d}"


def write_project(root: Path, n_train: int = 3, n_test: int = 2, shape: tuple[int, int, int] = (48, 192, 192),
                  seed: int = 2026, voxel_size: float = 10.0, box: int = 96,
                  settings: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """A complete demo project: configuration, tomograms, channels, .scns, held-out ground truth."""
    stems: dict[str, list[str]] = {"train": [], "test": []}
    for i, role, stem in project_tomograms(root, n_train, n_test):
        ph = make_phantom(seed + i, shape)
        tomo = root / "tomograms" / f"{stem}.mrc"
        write_volume(tomo, ph.density, voxel_size)
        write_volume(root / "macromolecules" / feature_filename(stem, "Membrane"), ph.membrane, voxel_size)
        write_volume(root / "macromolecules" / feature_filename(stem, "Ribosome"), ph.ribosome, voxel_size)
        write_volume(root / "ground_truth" / feature_filename(stem, LABELS), ph.labels, voxel_size)
        if role == "train":
            plan = plan_boxes(ph.labels, seed + 100 + i, box=box)
            write_scns(root / "tomograms" / f"{stem}.scns", tomo, ph.labels, plan, box, voxel_size / 10)
        else:
            for name in (f"{stem}.mrc",):
                write_volume(root / "test" / name, ph.density, voxel_size)
            write_volume(root / "test" / feature_filename(stem, "Membrane"), ph.membrane, voxel_size)
            write_volume(root / "test" / feature_filename(stem, "Ribosome"), ph.ribosome, voxel_size)
        stems[role].append(stem)
    doc = default_config_dict()
    doc.update({"macromolecules": ["Density", "Membrane", "Ribosome"], "ontologies": list(CLASSES),
                "ontology_annotation_box_size": box, "apix": voxel_size, "z_sum": 2, "GPUS": "0,1"})
    doc.update(settings or {})
    write_config(config_from_dict(doc, base_dir=root), root / CONFIG_FILENAME)
    atomic_write_text(root / "ground_truth" / "classes.json", json.dumps(dict(enumerate(CLASSES))))
    return stems
