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

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .synthetic import lamella, smooth_noise

CELL_CLASSES = ("Void", "Cytoplasm", "Mitochondrion", "Vesicle", "Lipid droplet", "Nucleoplasm", "Nuclear envelope")
VOID, CYTOPLASM, MITOCHONDRION, VESICLE, LIPID, NUCLEOPLASM, ENVELOPE = range(7)
#: RGB 0..1 for previews and the .scns files.
CELL_PALETTE = {"Void": (0.55, 0.55, 0.6), "Cytoplasm": (0.26, 0.84, 0.64), "Mitochondrion": (0.95, 0.45, 0.2),
                "Vesicle": (0.3, 0.5, 1.0), "Lipid droplet": (0.95, 0.85, 0.2), "Nucleoplasm": (0.7, 0.3, 0.9),
                "Nuclear envelope": (0.9, 0.2, 0.4), "Unknown": (0.9, 0.9, 0.9)}
#: Voxel size of the cell project (A); the demo's is 10.
CELL_VOXEL_SIZE = 13.7
#: The classes around the organelles: their first box on a boundary, the second inside.
CONTEXT_CLASSES = (VOID, CYTOPLASM, NUCLEOPLASM)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed noise scaled to standard deviation 1."""
    noise = smooth_noise(rng, shape, sigma)
    return noise / max(float(noise.std()), 1e-12)


@dataclass(frozen=True)
class Cell:
    """One synthetic cell tomogram."""

    density: np.ndarray  # (nz, ny, nx) float32, raw contrast (dense = dark)
    labels: np.ndarray  # (nz, ny, nx) int8, CELL_CLASSES indices
    membrane: np.ndarray  # (nz, ny, nx) uint8
    ribosome: np.ndarray  # (nz, ny, nx) uint8


@dataclass(frozen=True)
class CellPhantom:
    """The specimen before imaging: densities (a.u., dense = high), labels and what the channels see."""

    density: np.ndarray  # (nz, ny, nx) float32
    labels: np.ndarray  # (nz, ny, nx) int8, CELL_CLASSES indices
    membrane: np.ndarray  # (nz, ny, nx) float32 bilayer occupancy (lipid rim 0.45)
    ribosomes: np.ndarray  # (nz, ny, nx) float32 0..1
    proteins: np.ndarray  # (nz, ny, nx) float32 0..1, small non-ribosome blobs (cytosol only)
    inside: np.ndarray  # (nz, ny, nx) bool, inside the lamella
    half: float  # the lamella's half-thickness (px)


def make_cell(seed: int, shape: tuple[int, int, int] = (48, 256, 256)) -> Cell:
    """One tomogram with its dense labels and channels (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    ph = cell_phantom(rng, shape)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    density, ribosomes, proteins, membrane = ph.density, ph.ribosomes, ph.proteins, ph.membrane
    cyto = ph.labels == CYTOPLASM
    # Imaging: blur, noise, dense = dark, a weak illumination gradient; raw scale, not standardised.
    tomogram = -gaussian_filter(density, (1.1, 0.7, 0.7)) + 0.35 * smooth_noise(rng, shape, 0.8) * 2.5
    tomogram += 0.15 * (x / nx - 0.5) + 0.1 * (y / ny - 0.5)
    tomogram = ((tomogram - tomogram.mean()) / tomogram.std() * 22.0 + rng.uniform(-6, 6)).astype(np.float32)
    gain = rng.uniform(0.75, 1.05) + 0.1 * _unit_noise(rng, shape, 12.0)
    mem = gaussian_filter(membrane, 0.8) * gain + 0.05 * smooth_noise(rng, shape, 1.0)
    rib = gaussian_filter(ribosomes + 0.3 * proteins * cyto, 1.0) * 2.0 + 0.05 * smooth_noise(rng, shape, 1.0)
    return Cell(tomogram, ph.labels, to_u8(np.clip(mem * 1.6, 0, 1)), to_u8(np.clip(rib, 0, 1)))


def to_u8(values: np.ndarray) -> np.ndarray:
    """0..1 -> uint8 0..255, as Ais writes a segmentation."""
    return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)


def cell_phantom(rng: np.random.Generator, shape: tuple[int, int, int],
                 half_range: tuple[float, float] = (0.28, 0.34)) -> CellPhantom:
    """The cell's specimen: a lamella (half-thickness ``half_range`` x nz) with a nucleus and organelles."""
    nz, ny, nx = shape
    (z, y, x), inside, half = lamella(rng, shape, 0.07, half_range)
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
    return CellPhantom(density, labels, membrane, ribosomes.astype(np.float32), proteins.astype(np.float32),
                       inside, float(half))


def as_int8(density: np.ndarray) -> np.ndarray:
    """The tomogram as a reconstruction stored in MRC mode 0 would hold it (signed bytes)."""
    return np.clip(np.rint(density), -128, 127).astype(np.int8)
