"""What the boxes say besides the paint: inside a box of X, what is not painted X is not X.

Pom's rule (a box is complete for its feature) taught Pom's single networks their negatives;
"direct" learned from the painted pixels alone and dropped it. Here, from the crops' positions
that phase 1 records (``phase1/info.json``: every Pom crop is a box, and extra crops overlap
boxes), each crop gets a mask per class of the pixels known *not* to be that class: inside
any box of that class on the crop's slice, binned pixels entirely inside the box whose
painted code is not the class. Pure arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pom_common.constants import BIN_FACTOR

#: (stem, z, x, y): where a crop or box is centred (unbinned pixels), as phase 1 records it.
Position = tuple[str, int, int, int]


def box_index(crops: Mapping[str, Sequence[Sequence]], ontologies: Sequence[str]) -> dict[tuple[str, int],
                                                                                             list[tuple[int, int, int]]]:
    """(stem, z) -> [(class index, x, y), ...]: every kept box of every ontology, by slice."""
    index: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for feature, positions in crops.items():
        if feature not in ontologies:
            continue
        k = list(ontologies).index(feature)
        for stem, z, x, y in positions:
            index.setdefault((str(stem), int(z)), []).append((k, int(x), int(y)))
    return index


def not_masks(positions: Sequence[Sequence], codes: np.ndarray, boxes: Mapping[tuple[str, int],
              list[tuple[int, int, int]]], n_classes: int, box: int, b: int = BIN_FACTOR) -> np.ndarray:
    """(N, h, w, n_classes) bool: pixels of each crop known not to be each class.

    Parameters
    ----------
    positions : (N,) crop centres (stem, z, x, y), unbinned; the crops are ``box`` wide.
    codes : (N, h, w) the crops' painted codes (0 unpainted, k + 1 class k), h = box / b.
    boxes : :func:`box_index` of the project.
    n_classes : the ontologies' count.
    box : the box (and crop) size, unbinned.
    """
    n, h, w = codes.shape
    out = np.zeros((n, h, w, n_classes), bool)
    half = box // 2
    for i, (stem, z, cx, cy) in enumerate(positions):
        x0, y0 = int(cx) - half, int(cy) - half  # the crop's corner, unbinned
        for k, bx, by in boxes.get((str(stem), int(z)), ()):
            # the box in the crop's binned pixels, only pixels wholly inside it
            r0, r1 = -(-(by - half - y0) // b), (by + half - y0) // b
            c0, c1 = -(-(bx - half - x0) // b), (bx + half - x0) // b
            r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
            if r0 >= r1 or c0 >= c1:
                continue
            out[i, r0:r1, c0:c1, k] |= codes[i, r0:r1, c0:c1] != k + 1
    return out
