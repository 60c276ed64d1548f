"""Cell tomograms imaged like the ``ais_mini`` fixture, with or without the confounders of real data.

The specimen is :func:`pom_tools.synthetic_cell.cell_phantom`'s (7 classes). Imaging as the
fixture's README describes it: the density seen through a +-60 deg missing wedge about the
Y axis (15 % of the missing frequencies left, the lowest kept) and a Gaussian low-pass
(sigma 0.7 px in x, y, 1.1 px in z), band-limited noise through the same wedge (std 0.35
in density units), a weak illumination gradient, dense = dark, standardised per volume. The
Membrane channel sees the bilayers through a milder wedge with a gain field.

:class:`Confounders` adds what real tomograms have and the fixture lacks:

* gold fiducials: very dense beads on the lamella surfaces, whose missing-wedge streaks
  (X-shaped in XZ, smeared along X in XY slices) reach far above and below them;
* debris and ice contamination: dense irregular lumps on the surfaces, outside the specimen;
* empty slabs: a taller volume whose top and bottom are noise only;
* the top of the specimen looks different: FIB curtaining stripes and a contrast gradient,
  and no one annotates there (:func:`annotation_slices`);
* defocus-like contrast: a contrast transfer function (300 kV, a few um underfocus, 7 %
  amplitude contrast) per slice, which takes the low frequencies away and rings at edges.

Gold and debris are labelled Void: they are not specimen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .synthetic import smooth_noise
from .synthetic_cell import CYTOPLASM, VOID, Cell, _unit_noise, cell_phantom, to_u8

#: Voxel size of these tomograms (A), the fixture's.
LAMELLA_VOXEL_SIZE = 15.68
#: Electron wavelength at 300 kV (A).
WAVELENGTH = 0.0197


@dataclass(frozen=True)
class Confounders:
    """What real tomograms have beside the specimen (all off: the fixture's imaging)."""

    gold: int = 0  # fiducial beads
    debris: int = 0  # contamination lumps on the surfaces
    empty_fraction: float = 0.0  # of nz: noise-only slabs above and below (the lamella's thickness shrinks)
    curtaining: bool = False  # the top of the specimen: FIB stripes and less contrast
    defocus_um: float = 0.0  # underfocus of the CTF (0: no CTF, the fixture's low-pass only)
    noise: float = 0.8  # noise std in density units, after the wedge (0.8: the fixture's separability)


#: No confounders: the fixture's imaging.
FIXTURE = Confounders()
#: Everything :class:`Confounders` can add, at levels seen in lamella tomograms.
REAL = Confounders(gold=6, debris=4, empty_fraction=0.25, curtaining=True, defocus_um=3.0, noise=0.45)


@dataclass(frozen=True)
class Lamella:
    """One tomogram, its labels and channels, and where the specimen is."""

    cell: Cell
    inside: np.ndarray  # (nz, ny, nx) bool, the lamella
    top: np.ndarray  # (nz, ny, nx) bool, the lamella's top third (curtained, never annotated)
    gold: np.ndarray | None = None  # (nz, ny, nx) bool, the fiducial beads (None: no beads)
    debris: np.ndarray | None = None  # (nz, ny, nx) bool, the debris and ice lumps (None: none)
    beads: tuple[tuple[int, int, int, float], ...] = ()  # (z, y, x, radius) of each bead: its streaks' centre


def wedge_filter(volume: np.ndarray, half_angle: float = 60.0, residual: float = 0.15) -> np.ndarray:
    """``volume`` seen through a missing wedge about Y: frequencies beyond ``half_angle`` from X kept at ``residual``."""
    nz, _, nx = volume.shape
    kz = np.fft.fftfreq(nz)[:, None, None]
    kx = np.fft.rfftfreq(nx)[None, None, :]
    seen = (np.abs(kz) <= np.tan(np.radians(half_angle)) * kx) | (kz**2 + kx**2 <= (1.5 / nz) ** 2)
    spectrum = np.fft.rfftn(volume) * np.where(seen, 1.0, residual)
    return np.fft.irfftn(spectrum, volume.shape, axes=(0, 1, 2)).astype(np.float32)


def ctf_filter(volume: np.ndarray, defocus_um: float, voxel: float = LAMELLA_VOXEL_SIZE,
               amplitude: float = 0.07) -> np.ndarray:
    """Each XY slice through a contrast transfer function (phase-flipped sign: dense stays dense)."""
    _, ny, nx = volume.shape
    ky = np.fft.fftfreq(ny)[:, None] / voxel
    kx = np.fft.rfftfreq(nx)[None, :] / voxel
    k2 = ky**2 + kx**2
    chi = np.pi * WAVELENGTH * defocus_um * 1e4 * k2
    ctf = np.sqrt(1 - amplitude**2) * np.sin(chi) + amplitude * np.cos(chi)
    envelope = np.exp(-k2 * voxel**2 * 2.0)  # B-factor-like fall-off towards Nyquist
    spectrum = np.fft.rfft2(volume, axes=(1, 2)) * (ctf * envelope)[None]
    return np.fft.irfft2(spectrum, (ny, nx), axes=(1, 2)).astype(np.float32)


def _surface_points(rng: np.random.Generator, inside: np.ndarray, n: int, outward: float,
                    margin: int) -> list[tuple[int, int, int, int]]:
    """``n`` points just outside the lamella's top or bottom surface: (z, y, x, side)."""
    nz, ny, nx = inside.shape
    points = []
    for _ in range(n):
        y, x = int(rng.integers(margin, ny - margin)), int(rng.integers(margin, nx - margin))
        column = np.nonzero(inside[:, y, x])[0]
        if not len(column):
            continue
        side = int(rng.choice([-1, 1]))
        z = int(round(column.max() + outward)) if side > 0 else int(round(column.min() - outward))
        points.append((int(np.clip(z, 1, nz - 2)), y, x, side))
    return points


def _gold_streaks(shape: tuple[int, int, int], beads: list[tuple[int, int, int, float]],
                  strength: float) -> np.ndarray:
    """Back-projection streaks of the beads: rays at the tilt angles in XZ, high-passed, along X in XY."""
    nz, ny, nx = shape
    out = np.zeros(shape, np.float32)
    zz, xx = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    yy = np.arange(ny)
    for z0, y0, x0, r in beads:
        rays = np.zeros((nz, nx), np.float32)
        thetas = np.radians(np.arange(-60, 61, 3))
        for theta in thetas:  # a ray per tilt: x - x0 = (z - z0) tan(theta)
            rays += np.exp(-((xx - x0) - (zz - z0) * np.tan(theta)) ** 2 / (2 * 0.8**2)) / len(thetas)
        rays -= gaussian_filter(rays, 3.0)  # the reconstruction's ramp filter: fringes of both signs
        rays *= np.exp(-np.hypot(zz - z0, (xx - x0) / 3) / 40.0)
        out += strength * rays[:, None, :] * np.exp(-((yy - y0) ** 2) / (2 * r**2))[None, :, None]
    return out


def make_lamella(seed: int, shape: tuple[int, int, int] = (40, 160, 160),
                 confounders: Confounders = Confounders()) -> Lamella:
    """One tomogram imaged like the fixture (deterministic for a seed), with ``confounders``."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    empty = confounders.empty_fraction
    ph = cell_phantom(rng, shape, (0.28 * (1 - empty), 0.34 * (1 - empty)))
    density, labels = ph.density.copy(), ph.labels.copy()
    zs = np.arange(nz)[:, None, None]
    present = ph.inside.any(axis=0)
    top_z = np.where(present, nz - 1 - np.argmax(ph.inside[::-1], axis=0), 0)
    bottom_z = np.where(present, np.argmax(ph.inside, axis=0), 0)
    top = ph.inside & (zs > (bottom_z + 2 * (top_z - bottom_z) / 3)[None])
    beads: list[tuple[int, int, int, float]] = []
    gold = np.zeros(shape, bool) if confounders.gold else None
    debris = np.zeros(shape, bool) if confounders.debris else None
    if debris is not None:
        for z0, y0, x0, _side in _surface_points(rng, ph.inside, confounders.debris, rng.uniform(3, 8), 0):
            r = rng.uniform(8, 18)
            zz, yy, xx = np.ogrid[:nz, :ny, :nx]
            shape_noise = smooth_noise(rng, shape, 3.0)
            blob = (np.sqrt(((zz - z0) / 0.6) ** 2 + (yy - y0) ** 2 + (xx - x0) ** 2) / r
                    + 0.8 * shape_noise / max(float(shape_noise.std()), 1e-6) < 1.0) & ~ph.inside
            density[blob] = rng.uniform(0.6, 1.1) + 0.15 * shape_noise[blob]
            labels[blob] = VOID
            debris |= blob
    if gold is not None:
        for z0, y0, x0, _side in _surface_points(rng, ph.inside, confounders.gold, 3.0, 8):
            r = rng.uniform(2.5, 4.0)
            zz, yy, xx = np.ogrid[:nz, :ny, :nx]
            bead = (zz - z0) ** 2 + (yy - y0) ** 2 + (xx - x0) ** 2 < r**2
            density[bead] = 6.0
            labels[bead] = VOID
            gold |= bead
            beads.append((z0, y0, x0, r))
    if confounders.curtaining:  # stripes along y, varying in x, and less specimen contrast at the top
        stripes = np.sin(np.arange(nx) / rng.uniform(3, 6) + rng.uniform(0, 6))[None, None, :]
        stripes = stripes * (0.6 + 0.4 * _unit_noise(rng, (1, 1, nx), 8.0))
        density = np.where(top, 0.30 + 0.8 * (density - 0.30) + 0.08 * stripes, density).astype(np.float32)
    # Imaging as the fixture's: wedge + low-pass, wedge-filtered noise, a gradient, dense = dark, standardised.
    image = gaussian_filter(wedge_filter(density), (1.1, 0.7, 0.7))
    if confounders.defocus_um:  # the same signal energy in the specimen, moved from low to mid frequencies
        before = float(image[ph.inside].std())
        image = ctf_filter(image, confounders.defocus_um)
        image *= before / max(float(image[ph.inside].std()), 1e-6)
    noise = wedge_filter(gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7))
    image = image + confounders.noise * noise / max(float(noise.std()), 1e-6)
    _, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    image = -image + 0.1 * (x / nx - 0.5) + 0.08 * (y / ny - 0.5)
    if beads:
        image -= _gold_streaks(shape, beads, 12.0)  # dense = dark, as the beads
    tomogram = ((image - image.mean()) / image.std()).astype(np.float32)
    gain = rng.uniform(0.75, 1.05) + 0.1 * _unit_noise(rng, shape, 12.0)
    mem = gaussian_filter(wedge_filter(ph.membrane, 70.0, 0.4), 0.8) * np.clip(gain, 0.5, 1.2)
    mem += 0.05 * smooth_noise(rng, shape, 1.0)
    cyto = labels == CYTOPLASM
    rib = gaussian_filter(ph.ribosomes + 0.3 * ph.proteins * cyto, 1.0) * 2.0 + 0.05 * smooth_noise(rng, shape, 1.0)
    cell = Cell(tomogram, labels, to_u8(np.clip(mem * 1.6, 0, 1)), to_u8(np.clip(rib, 0, 1)))
    return Lamella(cell, ph.inside, top, gold, debris, tuple(beads))
