"""Safe reader for Ais ``.scns`` annotation files.

A ``.scns`` is a dill pickle (protocol 4) of an Ais ``SEFrame``: plain stdlib ``pickle``
would import Ais, dill and PyOpenGL and run ``SEFrame(path)``, and a crafted file could run
anything. This reader uses a restricted ``Unpickler.find_class``: Ais classes (under
``Ais.core``, ``scNodes.core`` or ``core``) become inert stand-ins, numpy array
reconstruction is allowed, and every other global is refused with :class:`ScnsError`.
Nothing is imported and no file is opened while unpickling
(:mod:`pom_common.aispickle`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .aispickle import ScnsError, Stub, as_array, flat, unpickle
from .files import read_regular_file

#: A .scns file larger than this is refused (Ais's masks of a large tomogram stay far below).
MAX_SCNS_BYTES = 8 << 30

Box = tuple[int, int]  # (x, y) = (column, row), unbinned pixels


@dataclass(frozen=True)
class Feature:
    """One Ais ``Segmentation``.

    Attributes
    ----------
    title : str
        The feature's name as typed in Ais (matched exactly against ontologies).
    boxes : dict[int, tuple[Box, ...]]
        Per slice z, the box centres (x = column, y = row), in the order they were clicked.
        Key order is Ais's (the annotator's path), not sorted.
    slices : dict[int, np.ndarray | None]
        Per slice z, the (height, width) uint8 0/1 mask, or None when nothing was painted.
    box_size : int | None
        The feature's own box size in Ais (Pom ignores it).
    colour : tuple[float, float, float] | None
        RGB in 0..1.
    index : int
        Position of the feature in the file.
    """

    title: str
    boxes: dict[int, tuple[Box, ...]]
    slices: dict[int, np.ndarray | None]
    box_size: int | None
    colour: tuple[float, float, float] | None
    index: int

    @property
    def n_boxes(self) -> int:
        """How many boxes the feature has, over all slices."""
        return sum(len(b) for b in self.boxes.values())


@dataclass(frozen=True)
class Annotation:
    """The content of one .scns file that this toolkit uses."""

    path: Path  # the .scns file read
    source_path: str  # the .mrc path stored by Ais (annotating machine; may be Windows)
    n_slices: int
    height: int
    width: int
    pixel_size: float | None  # nm, as Ais stores it
    features: tuple[Feature, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_slices, height, width) of the annotated volume."""
        return (self.n_slices, self.height, self.width)


# --------------------------------------------------------------------------------------
# Conversion to plain values


def _int(value: Any, what: str, path: Path, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ScnsError(f"{path}: {what}: expected an integer, found {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ScnsError(f"{path}: {what}: expected an integer >= {minimum}, found {value}")
    return value


def _feature(obj: Any, index: int, height: int, width: int, path: Path) -> Feature:
    if not isinstance(obj, Stub):
        raise ScnsError(f"{path}: features[{index}]: expected an Ais Segmentation, found {type(obj).__name__}")
    attrs = obj.__dict__
    title = attrs.get("title")
    if not isinstance(title, str):
        raise ScnsError(f"{path}: features[{index}].title: expected a string, found {type(title).__name__}")
    where = f"feature {index} ({title!r})"
    raw_boxes = attrs.get("boxes", {})
    raw_slices = attrs.get("slices", {})
    if not isinstance(raw_boxes, dict) or not isinstance(raw_slices, dict):
        raise ScnsError(f"{path}: {where}: boxes and slices must be dictionaries keyed by slice")
    boxes: dict[int, tuple[Box, ...]] = {}
    for z, items in raw_boxes.items():
        z = _int(z, f"{where} box slice", path)
        if not isinstance(items, (list, tuple)):
            raise ScnsError(f"{path}: {where}: boxes at z={z}: expected a list of [x, y]")
        points = []
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ScnsError(f"{path}: {where}: box at z={z}: expected [x, y], found {item!r:.60}")
            points.append((_int(item[0], f"{where} box x", path), _int(item[1], f"{where} box y", path)))
        boxes[z] = tuple(points)
    slices: dict[int, np.ndarray | None] = {}
    for z, mask in raw_slices.items():
        z = _int(z, f"{where} slice index", path)
        mask = as_array(mask)
        if mask is None:
            slices[z] = None
            continue
        if not isinstance(mask, np.ndarray) or mask.shape != (height, width) or mask.dtype.kind not in "biuf":
            shape = getattr(mask, "shape", type(mask).__name__)
            raise ScnsError(f"{path}: {where}: mask at z={z}: expected a ({height}, {width}) array, found {shape}")
        slices[z] = mask
    box_size = attrs.get("box_size")
    box_size = int(box_size) if isinstance(box_size, (int, np.integer)) and not isinstance(box_size, bool) else None
    colour = attrs.get("colour")
    try:
        colour = tuple(float(c) for c in colour)[:3] if colour is not None else None
        if colour is not None and len(colour) != 3:
            colour = None
    except (TypeError, ValueError):
        colour = None
    return Feature(title=title, boxes=boxes, slices=slices, box_size=box_size, colour=colour, index=index)


def read_scns(path: str | os.PathLike) -> Annotation:
    """Read an Ais .scns annotation without Ais, dill or OpenGL, and without running code.

    Raises
    ------
    ScnsError
        The file is missing, truncated, not a pickle, saved "with map", carries a global
        that is not part of an Ais annotation, or lacks the frame's attributes. The message
        names the file and, for a refused global, the global.
    """
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_SCNS_BYTES)
    except OSError as exc:
        raise ScnsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ScnsError(f"{path}: empty file")
    if data[:1] != b"\x80":
        raise ScnsError(f"{path}: not a pickle (an Ais .scns starts with a pickle header)")
    frame = unpickle(path, data)
    try:
        return _to_annotation(path, frame)
    except ScnsError:
        raise
    except Exception as exc:  # any other shape of garbage: still one clear error
        raise ScnsError(f"{path}: not a usable Ais annotation ({type(exc).__name__}: {flat(exc)})") from None


def _to_annotation(path: Path, frame: Any) -> Annotation:
    if not isinstance(frame, Stub) or not frame._pickled_name.endswith(".SEFrame"):
        found = frame._pickled_name if isinstance(frame, Stub) else type(frame).__name__
        raise ScnsError(f"{path}: expected a pickled Ais SEFrame, found {found}")
    attrs = frame.__dict__
    if attrs.get("includes_map") is True or attrs.get("map") is not None:
        raise ScnsError(f"{path}: saved 'with map'; re-save it in Ais without the map")
    for key in ("n_slices", "height", "width", "features"):
        if key not in attrs:
            raise ScnsError(f"{path}: the SEFrame has no {key!r} attribute (not an Ais annotation?)")
    n_slices = _int(attrs["n_slices"], "n_slices", path, minimum=1)
    height = _int(attrs["height"], "height", path, minimum=1)
    width = _int(attrs["width"], "width", path, minimum=1)
    pixel_size = as_array(attrs.get("pixel_size"))
    try:
        pixel_size = float(pixel_size) if pixel_size is not None else None
    except (TypeError, ValueError):
        pixel_size = None
    source = attrs.get("path")
    if not isinstance(source, str):
        args = frame._args if isinstance(frame._args, tuple) else ()
        source = args[0] if args and isinstance(args[0], str) else ""
    raw_features = attrs["features"]
    if not isinstance(raw_features, (list, tuple)):
        raise ScnsError(f"{path}: features: expected a list, found {type(raw_features).__name__}")
    features = tuple(_feature(f, i, height, width, path) for i, f in enumerate(raw_features))
    return Annotation(path=path, source_path=source, n_slices=n_slices, height=height, width=width,
                      pixel_size=pixel_size, features=features)


__all__ = ["Annotation", "Box", "Feature", "ScnsError", "read_scns"]
