"""Painted labels: which ontology is painted at each pixel of a training crop (all features).

Pom's phase-1 label of a crop is the mask of the crop's own feature only. Ais annotators
paint every feature on the same slices, so a crop also shows other features' paint. This
module records it: for every crop, a binned *code map* beside Pom's stacks,
``training_datasets/phase1/<feature>_painted.tif`` (uint8, (N, h, w)), where

* 0 means nothing is painted there (unknown),
* k (1..K) means ``ontologies[k - 1]`` is painted there.

A binned pixel (b x b voxels, b = 2) takes the ontology painted on most of its voxels, when
that is at least half of them (ties go to the ontology listed first); otherwise 0. Features
are matched to ontologies exactly, as Pom matches them. Everything here takes and returns arrays.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from pom_common.constants import BIN_FACTOR
from pom_common.scns import Annotation

#: Code of a pixel where no ontology is painted.
UNPAINTED = 0
#: Extra crops sampled around each box for the painted-label methods (``phase1/extra/``).
EXTRA_PER_BOX = 2


class PaintedSlices:
    """Per slice, which ontologies are painted where, built lazily from one annotation.

    Parameters
    ----------
    annotation : the tomogram's annotation; every feature whose title is one of
        ``ontologies`` contributes (two features with the same title are merged).
    ontologies : the configuration's ontologies; code k is ``ontologies[k - 1]``.
    """

    def __init__(self, annotation: Annotation, ontologies: Sequence[str]) -> None:
        self.annotation = annotation
        self.ontologies = tuple(ontologies)
        self._cache: dict[int, np.ndarray | None] = {}

    def painted(self, z: int) -> np.ndarray | None:
        """(K, height, width) bool: ontology k-1 painted at each voxel of slice z; None if none is."""
        if z not in self._cache:
            stack = None
            for feature in self.annotation.features:
                if feature.title not in self.ontologies:
                    continue
                mask = feature.slices.get(z)
                if mask is None or not np.any(mask):
                    continue
                if stack is None:
                    stack = np.zeros((len(self.ontologies), *mask.shape), dtype=bool)
                stack[self.ontologies.index(feature.title)] |= mask > 0
            if len(self._cache) >= 4:  # boxes come feature by feature, slice by slice: keep a few
                self._cache.pop(next(iter(self._cache)))
            self._cache[z] = stack
        return self._cache[z]

    def crop(self, z: int, y0: int, y1: int, x0: int, x1: int, b: int = BIN_FACTOR) -> np.ndarray:
        """The binned code map of the crop ``[y0:y1, x0:x1]`` of slice z, (h / b, w / b) uint8."""
        h, w = (y1 - y0) // b, (x1 - x0) // b
        stack = self.painted(z)
        if stack is None:
            return np.zeros((h, w), dtype=np.uint8)
        return code_map(stack[:, y0:y1, x0:x1], b)


def jittered_centres(stem: str, z: int, x: int, y: int, box: int, height: int, width: int,
                     n: int) -> list[tuple[int, int]]:
    """``n`` crop centres (x, y) around the box at (x, y): offsets up to half a box, seeded.

    The offsets depend only on (stem, z, x, y), so the extra crops are the same whatever
    the order of files and boxes. Crops are shifted back inside the image.
    """
    rng = np.random.default_rng(zlib.crc32(f"{stem}:{z}:{x}:{y}".encode()))
    half = box // 2
    out = []
    for _ in range(n):
        dx, dy = (int(v) for v in rng.integers(-half, half + 1, 2))
        cx = min(max(x + dx, half), width - half)
        cy = min(max(y + dy, half), height - half)
        out.append((cx, cy))
    return out


def code_map(painted: np.ndarray, b: int = BIN_FACTOR) -> np.ndarray:
    """Bin a (K, H, W) painted stack into a (H / b, W / b) uint8 code map.

    A binned pixel gets code k + 1 for the ontology k painted on most of its b * b voxels,
    when that is at least half of them (ties: the lowest k); otherwise 0 (unpainted).
    """
    k, height, width = painted.shape
    counts = painted.reshape(k, height // b, b, width // b, b).sum(axis=(2, 4))  # (K, h, w)
    best = np.argmax(counts, axis=0)  # first maximum on ties
    enough = np.take_along_axis(counts, best[None], axis=0)[0] * 2 >= b * b
    return np.where(enough, best + 1, UNPAINTED).astype(np.uint8)


def has_paint(codes: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the (N, h, w) code maps have a painted pixel."""
    return (codes != UNPAINTED).reshape(len(codes), -1).any(axis=1)
