"""``pom view [TS_001]``: a tomogram with its outputs in napari (the reader plugin of :mod:`pom_tools.napari_reader`, by its manifest)."""

from __future__ import annotations

from pathlib import Path

import napari
from PIL import Image

from pom_common.atomic import atomic_path
from pom_common.config import load_config
from pom_common.constants import CONFIG_FILENAME
from pom_common.errors import InputError
from pom_common.naming import find_tomogram


def find(project: Path, name: str | None) -> Path:
    """The tomogram ``name`` (a path, or a name looked up in the project's tomogram and test folders).

    Raises
    ------
    InputError
        No such tomogram.
    """
    if name is None:
        return project
    path = Path(name)
    if path.is_file() or path.is_dir():
        return path
    config_path = project / CONFIG_FILENAME
    if not config_path.is_file():
        raise InputError(f"{name}: no such file, and {project} is no project to look it up in")
    config = load_config(config_path)
    for folder in (config.tomogram_path, config.test_path):
        try:
            return find_tomogram(folder, name)
        except (InputError, OSError, ValueError):
            continue
    raise InputError(f"{name}: no such tomogram in {config.tomogram_path} or {config.test_path}")


def view(project: Path, name: str | None, screenshot: Path | None = None) -> int:
    """Open the tomogram (or the project's first) with its outputs; with ``screenshot``, save one and close.

    Needs a display with OpenGL (on a server: ``xvfb-run -a pom view ...``; Qt's offscreen
    platform has no OpenGL).
    """
    target = find(project, name)
    viewer = napari.Viewer()  # shown: a hidden canvas renders black
    viewer.open(str(target), plugin="pom-onnx")
    if screenshot is None:
        napari.run()
        return 0
    viewer.reset_view()
    image = viewer.screenshot(canvas_only=True, flash=False)
    viewer.close()
    with atomic_path(screenshot) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    print(screenshot)
    return 0
