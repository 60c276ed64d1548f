"""Painted labels: which ontology is painted at each pixel of a training crop (all features).

Pom's phase-1 label of a crop is the mask of the crop's own feature only. Ais annotators
paint every feature on the same slices, so a crop also shows other features' paint. This
module records it: for every crop, a binned *code map* beside Pom's stacks,
``training_datasets/phase1/<feature>_painted.tif`` (uint8, (N, h, w)), where

* 0 means nothing is painted there (unknown),
* k (1..K) means ``ontologies[k - 1]`` is painted there.

A binned pixel (b x b voxels, b = 2) takes the ontology painted on most of its voxels, when
that is at least half of them (ties go to the ontology listed first); otherwise 0. Features
are matched to ontologies exactly, as Pom matches them (:func:`title_hint` only suggests).

Everything here takes and returns arrays, except :func:`read_painted`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pom_common.constants import BIN_FACTOR
from pom_common.scns import Annotation

logger = logging.getLogger(__name__)

#: The code-map "channel" name: ``<feature>_painted.tif`` beside ``<feature>_y.tif``.
PAINTED = "painted"
#: Code of a pixel where no ontology is painted.
UNPAINTED = 0
#: Extra crops sampled around each box for the painted-label methods (``phase1/extra/``).
EXTRA_PER_BOX = 2
#: Folder of the extra crops, inside the phase-1 folder.
EXTRA = "extra"
#: Titles Ais gives a new feature before it is named ("Unnamed feature 3").
UNNAMED = re.compile(r"^\s*unnamed feature\b.*$", re.IGNORECASE)


def _squash(title: str) -> str:
    """A title with case and every space ignored (for hints only; matching stays exact)."""
    return "".join(title.split()).casefold()


def title_hint(title: str, ontologies: Sequence[str]) -> str | None:
    """The ontology ``title`` matches only when case and spaces are ignored, else None.

    Parameters
    ----------
    title : a feature title as typed in Ais, e.g. ``"Lipid Droplet"``.
    ontologies : the configuration's ontologies, e.g. ``("Lipid droplet",)``.

    Returns
    -------
    The ontology (``"Lipid droplet"``), or None when ``title`` matches one exactly or none
    even then.
    """
    if title in ontologies:
        return None
    squashed = _squash(title)
    for o in ontologies:
        if _squash(o) == squashed:
            return o
    return None


def is_unnamed(title: str) -> bool:
    """Whether ``title`` is Ais's placeholder for a feature never named ("Unnamed feature 5")."""
    return bool(UNNAMED.match(title)) or not title.strip()


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


def extra_stack(phase1: Path, channel: str) -> Path:
    """``phase1/extra/<channel>.tif`` (``channel`` :data:`PAINTED`: the code maps)."""
    return phase1 / EXTRA / f"{channel}.tif"


def jittered_centres(stem: str, z: int, x: int, y: int, box: int, height: int, width: int,
                     n: int) -> list[tuple[int, int]]:
    """``n`` crop centres (x, y) around the box at (x, y): offsets up to half a box, seeded.

    The offsets depend only on (stem, z, x, y), so the extra crops are the same whatever
    the order of files and boxes. Crops are shifted back inside the image.
    """
    import zlib

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


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., ) uint8 codes -> (..., n_classes) float32 one-hot; unpainted pixels are all zero."""
    eye = np.concatenate([np.zeros((1, n_classes), np.float32), np.eye(n_classes, dtype=np.float32)])
    return eye[np.asarray(codes, dtype=np.intp)]


def single_targets(own: np.ndarray, codes: np.ndarray, is_own: np.ndarray, code: int) -> np.ndarray:
    """Targets (N, h, w, 2) = (label, weight) of one feature's network from painted labels.

    Parameters
    ----------
    own : (N, h, w) each crop's own label (Pom's ``<feature>_y``, 0..1).
    codes : (N, h, w) the crops' code maps.
    is_own : (N,) bool, True for the crops of this network's feature.
    code : this feature's code (its index in ontologies + 1).

    Returns
    -------
    Inside the feature's own crops Pom's target: the label with weight 1 everywhere (a box
    is complete for its feature). In every other crop: label 1 where the feature is painted,
    0 where another feature is, weight 1 on painted pixels and 0 on unpainted ones.
    """
    painted = codes != UNPAINTED
    label = np.where(is_own[:, None, None], own, (codes == code).astype(np.float32))
    weight = np.where(is_own[:, None, None], 1.0, painted.astype(np.float32))
    return np.stack([label, weight], axis=-1).astype(np.float32)


def override_joint_labels(joint: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Joint one-hot labels (N, h, w, K + 1) with every painted pixel set to its painted class."""
    n_classes = joint.shape[-1]
    painted = codes != UNPAINTED
    out = joint.copy()
    out[painted] = one_hot(codes[painted], n_classes)
    return out


def read_painted(path: Path) -> np.ndarray:
    """A ``<feature>_painted.tif`` code stack (N, h, w) uint8.

    Raises
    ------
    InputError
        Naming the file when it is missing (run ``pom single initialize`` again) or unreadable.
    """
    import tifffile

    from pom_common.errors import InputError

    try:
        array = tifffile.imread(path)
        return np.asarray(array, dtype=np.uint8).reshape(-1, *array.shape[-2:])
    except FileNotFoundError:
        raise InputError(f"{path}: not found; run 'pom single initialize' again to record the painted "
                         "labels") from None
    except Exception as exc:
        raise InputError(f"{path}: not a readable tif stack ({exc})") from None
