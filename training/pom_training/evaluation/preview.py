"""``pom preview``: PNG figures of processed tomograms (:mod:`.figure`): density | prediction (| truth | errors).

Shared networks: the argmax class of every pixel. Single networks (``pom preview -o FEATURE``,
the outputs of ``pom single test``): the feature where its probability is above
:data:`pom_common.defaults.THRESHOLD`. Truth, where there is some: dense labels beside the
tomogram, ``<stem>__labels.mrc`` with ``classes.json`` as ``pom evaluate --labels`` reads
them (the demo passes its ground truth).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR, UNKNOWN
from pom_common.defaults import THRESHOLD
from pom_common.errors import ConfigError, InputError
from pom_common.layout import preview_path, previews_folder
from pom_common.mrcio import read_volume
from pom_common.naming import feature_filename, list_tomograms, tomogram_stem
from pom_common.zfilter import zfilter_bin

from .evaluate import label_names
from .figure import NONE, Views, write_figure
from .render import DEFAULT_COLOURS, Colour, feature_colours
from .truth import binned_truth, check_label_values

logger = logging.getLogger(__name__)

#: Name of the dense label volume ``pom preview`` looks for beside a tomogram (``<stem>__labels.mrc``).
LABELS = "labels"
#: Truth as (binned labels (nz, ny, nx) of indices into ``names``, -1 unlabelled; names).
Truth = tuple[np.ndarray, tuple[str, ...]]


def class_volumes(folder: Path, stem: str, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The class probability volumes (0..1) of ``stem`` found in ``folder`` (missing classes left out)."""
    found = {}
    for c in classes:
        path = folder / feature_filename(stem, c)
        if path.is_file():
            data = read_volume(path).data  # --dtype uint8: 0..127 in signed bytes; older uint8 outputs 0..255
            scale = 127.0 if data.dtype == np.int8 else 255.0 if np.issubdtype(data.dtype, np.integer) else 1.0
            found[c] = np.asarray(data, dtype=np.float32) / np.float32(scale)
    return found


def preview_tomogram(tomogram: Path, outputs: Path, classes: tuple[str, ...], png: Path, z_sum: int,
                     colours: dict[str, Colour], truth: Truth | None = None, voxel_size: float | None = None,
                     single: bool = False) -> Path:
    """Write the figure of one processed tomogram (several slices, legend, scale bar) to ``png``.

    ``classes``: the shared network's classes (the argmax over those found), or with
    ``single`` the one feature (called above the threshold). ``voxel_size`` (Å): for a
    header that does not say it (the scale bar is left out when neither does).

    Raises
    ------
    InputError
        No output of ``tomogram`` in ``outputs``.
    """
    volumes = class_volumes(outputs, tomogram_stem(tomogram), classes)
    if not volumes:
        raise InputError(f"{outputs}: no segmentation of {tomogram.name} found")
    names = tuple(volumes)
    stack = np.stack([volumes[n] for n in names], axis=-1)  # (nz', ny', nx', K)
    if single:
        calls = np.where(stack[..., 0] > THRESHOLD, 0, NONE)
    else:
        calls = stack.argmax(-1)
    volume = read_volume(tomogram, fallback_voxel_size=voxel_size)
    density = zfilter_bin(volume.data, z_sum)[: calls.shape[0], : calls.shape[1], : calls.shape[2]]
    calls = calls[: density.shape[0], : density.shape[1], : density.shape[2]]
    views = Views(density=density, calls=calls, classes=names, pixel_nm=volume.voxel_size * BIN_FACTOR / 10 or None,
                  bin_factor=BIN_FACTOR, depth=int(volume.data.shape[0]),
                  truth=None if truth is None else _aligned(truth, names, calls.shape, single),
                  title=f"{names[0]} (single network, p > {THRESHOLD:g})" if single else "prediction (shared network)")
    return write_figure(png, views, colours)


def _aligned(truth: Truth, names: tuple[str, ...], shape: tuple[int, ...], single: bool) -> np.ndarray:
    """``truth`` as indices into ``names`` (cropped to ``shape``); for a single network 0 = the feature, 1 = not."""
    labels, truth_names = truth
    labels = labels[: shape[0], : shape[1], : shape[2]]
    out = np.full(labels.shape, NONE, np.int32)
    for i, name in enumerate(truth_names):
        if single:
            out[labels == i] = 0 if name == names[0] else 1
        elif name in names:
            out[labels == i] = names.index(name)
    return out


def dense_truth(tomogram: Path, classes: tuple[str, ...], single: bool) -> Truth | None:
    """``<stem>__labels.mrc`` beside ``tomogram``, binned like the outputs; None when there is none.

    Values are named by ``classes.json`` beside it, else they are ``classes`` in order (a
    single network's: 1 the feature), as ``pom evaluate --labels`` reads them.

    Raises
    ------
    InputError
        The label volume has values no class names.
    """
    path = tomogram.parent / feature_filename(tomogram_stem(tomogram), LABELS)
    if not path.is_file():
        return None
    names = label_names(path, classes, "single" if single else "shared")
    labels = np.asarray(read_volume(path).data)
    check_label_values(path, labels, names)
    binned = binned_truth(labels, names, BIN_FACTOR)  # label values, -1 unnamed
    order = tuple(sorted(names))
    index = np.full(binned.shape, NONE, np.int32)
    for i, value in enumerate(order):
        index[binned == value] = i
    return index, tuple(names[v] for v in order)


def preview_project(config: ProjectConfig, folder: Path | None = None, feature: str | None = None) -> list[Path]:
    """One figure per processed tomogram, written to ``<folder>/previews/``.

    The shared network's outputs (default: output_dir, the tomograms of tomogram_dir), or
    with ``feature`` that single network's (default: test_dir, where ``pom single test``
    writes them, and its tomograms).
    """
    if feature is not None and feature not in config.ontologies:
        raise ConfigError(f"-o {feature!r}: not one of the ontologies {list(config.ontologies)}")
    default = config.test_path if feature else config.output_path
    outputs = folder or default
    source = config.test_path if outputs.resolve() == config.test_path.resolve() else config.require_dir("tomogram_dir")
    classes = (feature,) if feature else (*config.ontologies, UNKNOWN)
    colours = {**DEFAULT_COLOURS, **feature_colours()}
    pngs = []
    previews_folder(outputs).mkdir(parents=True, exist_ok=True)
    for tomogram in list_tomograms(source):
        stem = tomogram_stem(tomogram)
        png = preview_path(outputs, Path(feature_filename(stem, feature)).stem if feature else stem)
        try:
            truth = dense_truth(tomogram, classes if feature else tuple(config.ontologies), feature is not None)
            pngs.append(preview_tomogram(tomogram, outputs, classes, png, config.z_sum, colours, truth, config.apix,
                                         single=feature is not None))
        except InputError as exc:
            logger.info("no preview: %s", exc)
    return pngs
