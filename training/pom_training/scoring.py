"""Quality scores against ground truth, and PNG previews of segmentations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_path


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def bin_labels(labels: np.ndarray, n_classes: int, b: int = 2) -> np.ndarray:
    """Majority label of each b x b x b block (odd edges cropped), (nz//b, ny//b, nx//b) int."""
    nz, ny, nx = (s // b for s in labels.shape)
    blocks = labels[: nz * b, : ny * b, : nx * b].reshape(nz, b, ny, b, nx, b)
    counts = np.stack([(blocks == c).sum(axis=(1, 3, 5)) for c in range(n_classes)], axis=-1)
    return counts.argmax(-1)


def feature_colours(library: str | os.PathLike | None = None) -> dict[str, tuple[float, float, float]]:
    """Colours from the Ais feature library (~/.Ais/feature_library.txt) when present.

    The file is a JSON list of features, or ``{"active": name, "libraries": {name: [features]}}``;
    each feature has a title and a colour (0..1 or 0..255). Unreadable files give {}.
    """
    path = Path(library) if library else Path.home() / ".Ais" / "feature_library.txt"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(doc, dict):
        libraries = doc.get("libraries", {})
        doc = libraries.get(doc.get("active"), next(iter(libraries.values()), [])) if isinstance(libraries, dict) else []
    colours = {}
    for feature in doc if isinstance(doc, list) else []:
        try:
            rgb = tuple(float(c) for c in feature["colour"])[:3]
            if max(rgb) > 1:
                rgb = tuple(c / 255 for c in rgb)
            colours[str(feature["title"])] = rgb
        except (KeyError, TypeError, ValueError):
            continue
    return colours


#: Previews smaller than this (pixels, longer side) are enlarged by an integer factor.
MIN_PREVIEW_SIZE = 384


def overlay_png(path: Path, density: np.ndarray, masks: dict[str, np.ndarray],
                colours: dict[str, tuple[float, float, float]], alpha: float = 0.45) -> None:
    """A density slice (ny, nx) in grey with one coloured overlay per class, written atomically."""
    from PIL import Image

    lo, hi = np.percentile(density, (1, 99))
    grey = np.clip((density - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for name, mask in masks.items():
        colour = np.asarray(colours.get(name, (1.0, 0.0, 1.0)))
        m = mask.astype(bool)[..., None]
        rgb = np.where(m, (1 - alpha) * rgb + alpha * colour, rgb)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    scale = -(-MIN_PREVIEW_SIZE // max(image.size))  # binned slices are small: enlarge, pixels kept sharp
    if scale > 1:
        image = image.resize((image.size[0] * scale, image.size[1] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
