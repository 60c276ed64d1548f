"""A harder synthetic project than the demo's: a cell with a nucleus, for ``make quality``.

Seven classes: Void (outside the lamella), Cytoplasm (cytosol with ribosomes and ~3x as many
small protein blobs), Mitochondrion (double membrane, cristae, granular matrix), Vesicle
(small: radius 6-12 px, single membrane, light lumen), Lipid droplet (dense homogeneous
sphere, thin dense rim), Nuclear envelope (outer membrane, perinuclear space, inner
membrane) and Nucleoplasm (mottled chromatin, peripheral heterochromatin, no ribosomes).

Unlike the demo: raw contrast (dense = dark, not standardised: values around 0 with a std
of ~22, as a reconstruction writes them), one training and one test tomogram stored as
int8 (MRC mode 0), voxel size 13.7 A, and annotations like a person painting in Ais: 2-3
slices per tomogram (the middle one first, where Ais opens), several features per slice,
boxes mostly on boundaries (small objects centred; 2-4 per slice for vesicles and lipid
droplets, 2-3 for mitochondria and the nuclear envelope, 1-2 for the cytoplasm, vacuum and
nucleoplasm around them, the second one inside the region), the feature painted inside its
boxes plus a 6-20 px margin, and whole vesicles and lipid droplets a box touches.
Held-out tomograms have dense ground truth and their own annotations in ``test/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_text
from pom_common.mrcio import write_volume

from .synthetic import AisFeature, _smooth_noise, lamella, write_ais_pickle

CELL_CLASSES = ("Void", "Cytoplasm", "Mitochondrion", "Vesicle", "Lipid droplet", "Nucleoplasm", "Nuclear envelope")
VOID, CYTOPLASM, MITOCHONDRION, VESICLE, LIPID, NUCLEOPLASM, ENVELOPE = range(7)
#: RGB 0..1 for previews and the .scns files.
CELL_PALETTE = {"Void": (0.55, 0.55, 0.6), "Cytoplasm": (0.26, 0.84, 0.64), "Mitochondrion": (0.95, 0.45, 0.2),
                "Vesicle": (0.3, 0.5, 1.0), "Lipid droplet": (0.95, 0.85, 0.2), "Nucleoplasm": (0.7, 0.3, 0.9),
                "Nuclear envelope": (0.9, 0.2, 0.4), "Unknown": (0.9, 0.9, 0.9)}
#: Voxel size of the cell project (A); the demo's is 10.
CELL_VOXEL_SIZE = 13.7
#: Classes painted as whole objects when a box touches them (as annotators do).
_WHOLE = (VESICLE, LIPID)
#: Boxes per feature on an annotated slice (fewest, most): annotators box the organelles more
#: than the cytoplasm, vacuum and nucleoplasm around them.
_BOXES = {VOID: (1, 2), CYTOPLASM: (1, 2), NUCLEOPLASM: (1, 2), MITOCHONDRION: (2, 3), ENVELOPE: (2, 3),
          VESICLE: (2, 4), LIPID: (2, 4)}
#: The classes around the organelles: their first box on a boundary, the second inside.
_CONTEXT = (VOID, CYTOPLASM, NUCLEOPLASM)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed noise scaled to standard deviation 1."""
    noise = _smooth_noise(rng, shape, sigma)
    return noise / max(float(noise.std()), 1e-12)


@dataclass(frozen=True)
class Cell:
    """One synthetic cell tomogram."""

    density: np.ndarray  # (nz, ny, nx) float32, raw contrast (dense = dark)
    labels: np.ndarray  # (nz, ny, nx) int8, CELL_CLASSES indices
    membrane: np.ndarray  # (nz, ny, nx) uint8
    ribosome: np.ndarray  # (nz, ny, nx) uint8


def make_cell(seed: int, shape: tuple[int, int, int] = (48, 256, 256)) -> Cell:
    """One tomogram with its dense labels and channels (deterministic for a seed)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    (z, y, x), inside, half = lamella(rng, shape, 0.07, (0.28, 0.34))
    labels = np.where(inside, CYTOPLASM, VOID).astype(np.int8)
    density = np.where(inside, 0.30, 0.0).astype(np.float32)
    membrane = np.zeros(shape, np.float32)
    # Nucleus: a large, slightly wavy ellipsoid whose edge crosses the image on one side.
    angle = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(0.6, 0.8) * ny
    edge = rng.uniform(0.08, 0.22) * ny  # distance of its edge from the image centre
    ncy, ncx = ny / 2 + (radius + edge) * np.sin(angle), nx / 2 + (radius + edge) * np.cos(angle)
    phi = np.arctan2(y - ncy, x - ncx)
    wavy = radius + 3.0 * np.sin(3 * phi + rng.uniform(0, 6)) + 2.0 * np.sin(7 * phi + rng.uniform(0, 6))
    depth = wavy - np.sqrt((y - ncy) ** 2 + (x - ncx) ** 2 + (0.3 * (z - nz / 2)) ** 2)  # > 0 inside
    gap = rng.uniform(4.0, 6.0)  # perinuclear space
    envelope = inside & (depth >= 0) & (depth < gap + 4)
    nucleus = inside & (depth >= gap + 4)
    labels[envelope] = ENVELOPE
    labels[nucleus] = NUCLEOPLASM
    bilayer = envelope & ((depth < 2) | (depth >= gap + 2))
    density[envelope] = 0.18
    density[bilayer] = 1.25
    membrane[bilayer] = 1.0
    chromatin = 0.36 + 0.2 * _unit_noise(rng, shape, 2.0)
    hetero = nucleus & (depth < gap + 4 + rng.uniform(5, 8))
    chromatin = np.where(hetero, chromatin + 0.25, chromatin)
    density[nucleus] = np.clip(chromatin, 0.15, 0.9)[nucleus]
    taken = envelope | nucleus
    placed: list[tuple[float, float, float]] = []

    def free(cy: float, cx: float, r: float) -> bool:
        if not (0 <= cy < ny and 0 <= cx < nx):
            return False
        if np.hypot(cy - ncy, cx - ncx) < radius + 6 + r + 6:
            return False
        return all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 5) ** 2 for py, px, pr in placed)

    def place(r_lo: float, r_hi: float, margin: float) -> tuple[float, float, float] | None:
        for _ in range(80):
            r = rng.uniform(r_lo, r_hi)
            cy, cx = rng.uniform(margin, 1 - margin) * ny, rng.uniform(margin, 1 - margin) * nx
            if free(cy, cx, r):
                placed.append((cy, cx, r))
                return cy, cx, r
        return None

    # Mitochondria: ellipsoids with a double membrane, lamellar cristae and a granular matrix.
    for _ in range(int(rng.integers(2, 4))):
        spot = place(22, 32, 0.12)
        if spot is None:
            continue
        cy, cx, r = spot
        ry, rx = r * rng.uniform(0.65, 0.8), r
        if rng.random() < 0.5:
            ry, rx = rx, ry
        rz, cz = rng.uniform(0.5, 0.8) * half, nz / 2 + rng.uniform(-0.2, 0.2) * half
        rr = np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        body = (rr < 1.0) & inside & ~taken
        labels[body] = MITOCHONDRION
        scale = min(ry, rx)
        outer = body & (rr > 1.0 - 2.0 / scale)
        inner = body & (rr < 1.0 - 4.0 / scale) & (rr > 1.0 - 6.0 / scale)
        matrix = body & (rr <= 1.0 - 6.0 / scale)
        along = (x - cx) if rx >= ry else (y - cy)
        cristae = matrix & (np.abs(np.mod(along + rng.uniform(0, 9), 9.0) - 4.5) < 0.8)
        density[body] = 0.20
        granules = gaussian_filter((rng.random(shape) < 0.004).astype(np.float32), 1.2) * 6
        density[matrix] = 0.58 + granules[matrix]
        density[outer | inner | cristae] = 1.25
        membrane[outer | inner | cristae] = 1.0
        taken |= body
    def spheres(count: tuple[int, int], r_range: tuple[float, float], margin: float, z_spread: float, label: int,
                shell_width: float, body_density: float, shell_density: float, shell_membrane: float) -> None:
        """Place spheres of ``label`` with a denser shell (the membrane channel sees it)."""
        nonlocal taken
        for _ in range(int(rng.integers(*count))):
            spot = place(*r_range, margin)
            if spot is None:
                continue
            cy, cx, r = spot
            cz = nz / 2 + rng.uniform(-z_spread, z_spread) * half
            rr = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
            body = (rr < r) & inside & ~taken
            labels[body] = label
            shell = body & (rr > r - shell_width)
            density[body] = body_density
            density[shell] = shell_density
            membrane[shell] = shell_membrane
            taken |= body

    # Lipid droplets: dense homogeneous spheres with a thin, denser rim (the membrane channel sees it a bit).
    spheres((2, 5), (11, 20), 0.08, 0.4, LIPID, 1.5, 0.70, 1.05, 0.45)
    # Small vesicles: a single membrane and a light lumen.
    spheres((12, 19), (6, 12), 0.06, 0.5, VESICLE, 2.0, 0.14, 1.25, 1.0)
    # Ribosomes and ~3x as many smaller, fainter protein blobs in the cytosol only.
    cyto = labels == CYTOPLASM
    ribosomes = np.clip(gaussian_filter(((rng.random(shape) < 0.0022) & cyto).astype(np.float32), 1.6) * 40, 0, 1)
    proteins = np.clip(gaussian_filter(((rng.random(shape) < 0.0066) & cyto).astype(np.float32), 1.0) * 12, 0, 1)
    density += (0.90 * ribosomes + 0.30 * proteins) * cyto
    density += 0.18 * inside
    # Imaging: blur, noise, dense = dark, a weak illumination gradient; raw scale, not standardised.
    tomogram = -gaussian_filter(density, (1.1, 0.7, 0.7)) + 0.35 * _smooth_noise(rng, shape, 0.8) * 2.5
    tomogram += 0.15 * (x / nx - 0.5) + 0.1 * (y / ny - 0.5)
    tomogram = ((tomogram - tomogram.mean()) / tomogram.std() * 22.0 + rng.uniform(-6, 6)).astype(np.float32)
    gain = rng.uniform(0.75, 1.05) + 0.1 * _unit_noise(rng, shape, 12.0)
    mem = gaussian_filter(membrane, 0.8) * gain + 0.05 * _smooth_noise(rng, shape, 1.0)
    rib = gaussian_filter(ribosomes + 0.3 * proteins * cyto, 1.0) * 2.0 + 0.05 * _smooth_noise(rng, shape, 1.0)
    to_u8 = lambda v: np.clip(np.rint(v * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return Cell(tomogram, labels, to_u8(np.clip(mem * 1.6, 0, 1)), to_u8(np.clip(rib, 0, 1)))


def as_int8(density: np.ndarray) -> np.ndarray:
    """The tomogram as a reconstruction stored in MRC mode 0 would hold it (signed bytes)."""
    return np.clip(np.rint(density), -128, 127).astype(np.int8)


# ----------------------------------------------------------------------------- annotations


def plan_cell_annotation(labels: np.ndarray, seed: int, box: int, z_sum: int,
                         n_slices: int | None = None) -> list[AisFeature]:
    """Annotate like a person in Ais: a few slices, several features on each, boxes and paint.

    Parameters
    ----------
    labels : (nz, ny, nx) dense labels (CELL_CLASSES indices).
    seed : randomness of the slices, boxes and margins.
    box : the box size (unbinned px); boxes lie fully inside the image.
    z_sum : boxes stay where Pom keeps them (z_sum < z < nz - z_sum).
    n_slices : 2 or 3 (random when None).

    Returns
    -------
    The features in the order the annotator first used them.
    """
    from scipy.ndimage import binary_erosion, label

    rng = np.random.default_rng(seed)
    nz, ny, nx = labels.shape
    half = box // 2
    n_slices = n_slices or int(rng.choice([2, 3], p=[0.3, 0.7]))
    lo, hi = z_sum + 2, nz - z_sum - 3
    middle = nz // 2  # Ais opens there
    void = (labels[:, half: ny - half, half: nx - half] == VOID).mean(axis=(1, 2))
    others = [z for z in range(lo, hi + 1) if abs(z - middle) >= 8]
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
                    if f in _CONTEXT and k % 2 == 1 and len(pools[1][0]):
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
    from pom_common.config import config_from_dict, default_config_dict, write_config

    for sub in ("tomograms", "macromolecules", "test", "ground_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems: dict[str, list[str]] = {"train": [], "test": []}
    for i in range(n_train + n_test):
        role = "train" if i < n_train else "test"
        stem = f"TS_{i + 1:03d}"
        cell = make_cell(seed + i, shape)
        density = as_int8(cell.density) if i in (1, n_train + 1) else cell.density
        folder, channels = (root / "tomograms", root / "macromolecules") if role == "train" else (root / "test",) * 2
        tomogram = folder / f"{stem}.mrc"
        write_volume(tomogram, density, CELL_VOXEL_SIZE)
        write_volume(channels / f"{stem}__Membrane.mrc", cell.membrane, CELL_VOXEL_SIZE)
        write_volume(channels / f"{stem}__Ribosome.mrc", cell.ribosome, CELL_VOXEL_SIZE)
        write_volume(root / "ground_truth" / f"{stem}__labels.mrc", cell.labels, CELL_VOXEL_SIZE)
        features = plan_cell_annotation(cell.labels, seed + 500 + i, box, z_sum)
        write_ais_pickle(folder / f"{stem}.scns", tomogram, shape, features, CELL_VOXEL_SIZE / 10)
        stems[role].append(stem)
    doc = default_config_dict()
    doc.update({"macromolecules": ["Density", "Membrane", "Ribosome"], "ontologies": list(CELL_CLASSES),
                "ontology_annotation_box_size": box, "z_sum": z_sum, "GPUS": "0"})
    doc.update(settings or {})
    write_config(config_from_dict(doc, base_dir=root), root / "project_configuration.json")
    atomic_write_text(root / "ground_truth" / "classes.json", json.dumps(dict(enumerate(CELL_CLASSES))))
    return stems
