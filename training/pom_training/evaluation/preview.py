"""``pom preview``: PNG pictures of processed tomograms (central slice, one colour per class)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import UNKNOWN
from pom_common.defaults import THRESHOLD
from pom_common.errors import InputError
from pom_common.layout import preview_path, previews_folder
from pom_common.mrcio import read_volume
from pom_common.naming import feature_filename, list_tomograms, tomogram_stem
from pom_common.zfilter import zfilter_bin

from .render import DEFAULT_COLOURS, Colour, feature_colours, overlay_png

logger = logging.getLogger(__name__)


def class_volumes(folder: Path, stem: str, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The class probability volumes of ``stem`` found in ``folder`` (missing classes left out)."""
    found = {}
    for c in classes:
        path = folder / feature_filename(stem, c)
        if path.is_file():
            found[c] = np.asarray(read_volume(path).data, dtype=np.float32)
    return found


def preview_tomogram(tomogram: Path, outputs: Path, classes: tuple[str, ...], png: Path, z_sum: int,
                     colours: dict[str, Colour]) -> Path:
    """Central slice of the (z-averaged, binned) density with the argmax class overlaid."""
    volumes = class_volumes(outputs, tomogram_stem(tomogram), classes)
    if not volumes:
        raise InputError(f"{outputs}: no segmentation of {tomogram.name} found")
    names = list(volumes)
    stack = np.stack([volumes[n] for n in names], axis=-1)  # (nz', ny', nx', K)
    z = stack.shape[0] // 2
    density = zfilter_bin(read_volume(tomogram).data, z_sum)[z]
    probs = stack[z]
    winner = probs.argmax(-1)
    strong = probs.max(-1) >= THRESHOLD if len(names) == 1 else np.ones_like(winner, bool)
    masks = {n: (winner == i) & strong for i, n in enumerate(names) if n != UNKNOWN}
    density = density[: probs.shape[0], : probs.shape[1]]
    overlay_png(png, density, masks, colours)
    return png


def preview_project(config: ProjectConfig, folder: Path | None = None) -> list[Path]:
    """One PNG per processed tomogram, written to <output_dir>/previews/."""
    outputs = folder or config.output_path
    classes = (*config.ontologies, UNKNOWN)
    colours = {**DEFAULT_COLOURS, **feature_colours()}
    pngs = []
    previews_folder(outputs).mkdir(parents=True, exist_ok=True)
    for tomogram in list_tomograms(config.require_dir("tomogram_dir")):
        try:
            pngs.append(preview_tomogram(tomogram, outputs, classes, preview_path(outputs, tomogram_stem(tomogram)),
                                         config.z_sum, colours))
        except InputError as exc:
            logger.info("no preview: %s", exc)
    return pngs
