"""napari reader (npe2 manifest ``napari.yaml``): a tomogram, or a Pom project folder, with its outputs as layers.

Opening a tomogram (``TS_001.mrc``) gives the tomogram and every ``TS_001__<Name>`` output
found beside it and in the project's ``output_dir`` (when a ``project_configuration.json``
sits in the tomogram's folder or the one above): probabilities as image layers in the class's
colour (the previews' colours: the Ais feature library, else the defaults), added on top; a
label map (``__labels``, with ``classes.json``) as a labels layer (then the probabilities start hidden). Each layer is placed by its
own voxel size: an output on the 2x-binned grid gets scale 2v and is shifted by v/2, so
binned voxel i covers tomogram voxels 2i and 2i + 1. Opening a project folder opens its first
tomogram (``pom view TS_001`` names one). OME-Zarr stores (``.ome.zarr``) are read with zarr.

Nothing here imports napari: the reader returns layer data tuples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.config import load_config
from pom_common.constants import CONFIG_FILENAME, UNKNOWN
from pom_common.mrcio import read_volume
from pom_common.naming import SEPARATOR, is_tomogram_name, list_tomograms, tomogram_stem

LayerData = tuple[Any, dict[str, Any], str]
#: Suffixes of the outputs the reader shows.
OUTPUT_SUFFIXES = (".mrc", ".ome.zarr")


def colours() -> dict[str, tuple[float, float, float]]:
    """The previews' class colours (Ais feature library over the defaults); empty without the training extra."""
    try:
        from pom_training.evaluation.render import DEFAULT_COLOURS, feature_colours
    except ImportError:  # the previews' module needs Pillow (napari brings it)
        return {}
    return {**DEFAULT_COLOURS, **feature_colours()}


FALLBACK = (1.0, 0.0, 1.0)  # magenta, as the previews


def _project(folder: Path) -> Any:
    """The project whose configuration sits in ``folder``, or None."""
    path = folder / CONFIG_FILENAME
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except Exception:  # a broken configuration: show what lies beside the tomogram
        return None


def resolve(path: str | os.PathLike) -> tuple[Path, Any]:
    """(tomogram, project or None) for a tomogram file or a project folder.

    Raises
    ------
    ValueError
        A folder that is no project, or a project without tomograms.
    """
    path = Path(path)
    if path.is_dir():
        config = _project(path)
        if config is None:
            raise ValueError(f"{path}: not a Pom project (no {CONFIG_FILENAME})")
        tomograms = list_tomograms(config.tomogram_path) if config.tomogram_path.is_dir() else []
        if not tomograms and config.test_path.is_dir():
            tomograms = list_tomograms(config.test_path)
        if not tomograms:
            raise ValueError(f"{path}: no tomograms in {config.tomogram_path}")
        return tomograms[0], config
    config = _project(path.parent) or _project(path.parent.parent)
    return path, config


def outputs_of(tomogram: Path, config: Any) -> list[Path]:
    """The ``<stem>__<Name>`` outputs beside the tomogram and in the project's output folder (no input channels)."""
    stem = tomogram_stem(tomogram)
    folders = [tomogram.parent]
    channels: set[str] = set()
    if config is not None:
        folders.append(config.output_path)
        channels = set(config.macromolecules)
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if not name.startswith(stem + SEPARATOR) or not name.endswith(OUTPUT_SUFFIXES):
                continue
            feature = _feature(name, stem)
            if feature in channels and folder == tomogram.parent:
                continue
            found.setdefault(name, entry)
    return list(found.values())


def _feature(name: str, stem: str) -> str:
    rest = name[len(stem) + len(SEPARATOR):]
    for suffix in OUTPUT_SUFFIXES:
        if rest.endswith(suffix):
            return rest[: -len(suffix)]
    return rest


def _read(path: Path) -> tuple[list[np.ndarray], float]:
    """The levels of an output (one for MRC) and the voxel size of the first."""
    if path.name.endswith(".ome.zarr"):
        from pom_inference.omezarr import read_level

        first, voxel_size = read_level(path, 0)
        levels = [first]
        level = 1
        while True:
            try:
                levels.append(read_level(path, level)[0])
            except Exception:
                break
            level += 1
        return levels, voxel_size
    volume = read_volume(path)
    return [np.asarray(volume.data)], volume.voxel_size


def _placement(voxel_size: float, tomogram_voxel: float) -> dict[str, Any]:
    """Scale and shift: voxel i of a grid b times coarser is centred on tomogram voxels b*i .. b*i + b - 1."""
    size = voxel_size if voxel_size > 0 else tomogram_voxel
    shift = (size - tomogram_voxel) / 2
    return {"scale": (size,) * 3, "translate": (shift,) * 3}


def _data(levels: list[np.ndarray]) -> tuple[Any, dict[str, Any]]:
    return (levels, {"multiscale": True}) if len(levels) > 1 else (levels[0], {})


def layers(path: str | os.PathLike) -> list[LayerData]:
    """The layer data of a tomogram (or a project's first tomogram) and its outputs."""
    tomogram, config = resolve(path)
    volume = read_volume(tomogram, config.apix if config is not None else None)
    data = np.asarray(volume.data)
    v = volume.voxel_size or 1.0
    sample = data[:: max(1, data.shape[0] // 8)]
    low, high = (float(x) for x in np.percentile(sample, (1, 99)))
    out: list[LayerData] = [(data, {"name": tomogram_stem(tomogram), "scale": (v,) * 3, "colormap": "gray",
                                    "contrast_limits": (low, high if high > low else low + 1)}, "image")]
    palette = colours()
    outputs = outputs_of(tomogram, config)
    has_labels = any(_feature(o.name, tomogram_stem(tomogram)) == "labels" for o in outputs)
    for output in outputs:
        feature = _feature(output.name, tomogram_stem(tomogram))
        levels, size = _read(output)
        payload, extra = _data(levels)
        kwargs = {"name": feature, **_placement(size, v), **extra}
        if feature == "labels":
            out.append((payload, {**kwargs, "colormap": _label_colours(output, palette), "opacity": 0.45}, "labels"))
            continue
        r, g, b = palette.get(feature, FALLBACK)
        top = 1.0 if np.issubdtype(levels[0].dtype, np.floating) else float(max(1, levels[0].max()))
        out.append((payload, {**kwargs, "colormap": {"name": f"pom {feature}", "colors": [[0, 0, 0, 1], [r, g, b, 1]]},
                              "contrast_limits": (0.0, top), "blending": "additive", "opacity": 0.8,
                              "visible": feature != UNKNOWN and not has_labels}, "image"))
    return out


def _label_colours(output: Path, palette: dict[str, tuple[float, float, float]]) -> dict[Any, tuple[float, ...]]:
    """Label value -> RGBA from ``classes.json`` beside the label map (Unknown transparent)."""
    try:
        names = {int(k): str(n) for k, n in json.loads((output.parent / "classes.json").read_text()).items()}
    except (OSError, ValueError, AttributeError):
        names = {}
    table: dict[Any, tuple[float, ...]] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for value, name in names.items():
        if name != UNKNOWN:
            table[value] = (*palette.get(name, FALLBACK), 1.0)
    return table


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader contribution: a reader for a tomogram (.mrc/.rec) or a Pom project folder, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return read if (p / CONFIG_FILENAME).is_file() else None
    return read if is_tomogram_name(p) else None


def read(path: str | list[str]) -> list[LayerData]:
    """The layers of ``path`` (see :func:`layers`)."""
    return layers(path[0] if isinstance(path, list) else path)
