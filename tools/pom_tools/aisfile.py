"""Write annotations as Ais saves them: a ``.scns`` file is a pickled ``SEFrame`` (protocol 4).

The classes are stand-ins whose pickled names are Ais's, so :func:`pom_common.scns.read_scns`
reads the files as it reads Ais's own; Ais itself is never imported.
"""

from __future__ import annotations

import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_bytes


def _ais_classes() -> types.ModuleType:
    """Classes whose pickled names are Ais's (``Ais.core.se_frame.SEFrame`` ...)."""
    module = types.ModuleType("Ais.core.se_frame")
    for name in ("SEFrame", "Segmentation"):
        setattr(module, name, type(name, (), {"__module__": "Ais.core.se_frame"}))
    return module


@dataclass(frozen=True)
class AisFeature:
    """One feature as Ais saves it: title, box centres and painted masks per slice."""

    title: str
    boxes: dict[int, list[list[int]]]  # z -> [[x, y], ...] (column, row), in click order
    masks: dict[int, np.ndarray]  # z -> (ny, nx) uint8 0/1
    colour: tuple[float, float, float]
    box_size: int


def write_ais_pickle(path: Path, tomogram_path: Path, shape: tuple[int, int, int], features: list[AisFeature],
                     pixel_size_nm: float) -> None:
    """Write ``features`` as an Ais ``SEFrame`` pickle (the ``.scns`` layout, protocol 4)."""
    module = _ais_classes()
    nz, ny, nx = shape
    frame = module.SEFrame()
    frame.path, frame.title = str(tomogram_path), tomogram_path.stem
    frame.n_slices, frame.height, frame.width, frame.pixel_size = nz, ny, nx, pixel_size_nm
    frame.includes_map, frame.map = False, None
    frame.features = []
    for f in features:
        feature = module.Segmentation()
        feature.title, feature.box_size, feature.colour = f.title, f.box_size, f.colour
        feature.boxes = {z: [list(c) for c in centres] for z, centres in f.boxes.items()}
        feature.slices = dict(f.masks)
        frame.features.append(feature)
    names = ("Ais", "Ais.core", "Ais.core.se_frame")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        sys.modules["Ais"], sys.modules["Ais.core"] = types.ModuleType("Ais"), types.ModuleType("Ais.core")
        sys.modules["Ais.core.se_frame"] = module
        data = pickle.dumps(frame, protocol=4)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    atomic_write_bytes(path, data)
