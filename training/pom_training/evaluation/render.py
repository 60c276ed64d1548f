"""The colours of classes in pictures (:mod:`.figure`).

Colours come from the Ais feature library (``~/.Ais/feature_library.txt``) when present,
else :data:`DEFAULT_COLOURS`, else magenta.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

Colour = tuple[float, float, float]

#: Colours (RGB 0..1) of common class names, used when no Ais feature library names them.
DEFAULT_COLOURS: dict[str, Colour] = {
    "Void": (0.55, 0.55, 0.6), "Cytoplasm": (0.26, 0.84, 0.64), "Mitochondrion": (0.95, 0.45, 0.2),
    "Vesicle": (0.3, 0.5, 1.0), "Unknown": (0.9, 0.9, 0.2)}
#: Colour of a class no library names.
FALLBACK_COLOUR: Colour = (1.0, 0.0, 1.0)


def feature_colours(library: str | os.PathLike | None = None) -> dict[str, Colour]:
    """Colours from the Ais feature library (~/.Ais/feature_library.txt) when present.

    The file is a JSON list of features, or ``{"active": name, "libraries": {name: [features]}}``;
    each feature has a title and a colour (0..1 or 0..255). Unreadable files give {}.
    """
    path = Path(library) if library else Path.home() / ".Ais" / "feature_library.txt"
    try:
        doc: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(doc, dict):
        libraries = doc.get("libraries", {})
        doc = libraries.get(doc.get("active"), next(iter(libraries.values()), [])) if isinstance(libraries, dict) else []
    colours: dict[str, Colour] = {}
    for feature in doc if isinstance(doc, list) else []:
        try:
            rgb = tuple(float(c) for c in feature["colour"])[:3]
            if max(rgb) > 1:
                rgb = tuple(c / 255 for c in rgb)
            colours[str(feature["title"])] = (rgb[0], rgb[1], rgb[2])
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return colours
