"""Phase 1 training data: sample images around Ais boxes exactly as Pom does.

For every box of a feature whose title is an ontology: crop ontology_annotation_box_size
pixels centred on the box; the label is the mask crop binned 2x; each input channel is
the mean over the z window 2 * z_sum + 1 of the crop, binned 2x; Density is standardised
per image, other channels (uint8 0..255) are mapped to -1..1. Stacks are written in Pom's
layout, ``training_datasets/phase1/<feature>_y.tif`` and ``<feature>_<channel>.tif``.

Beside them (added, Pom's stacks unchanged): ``<feature>_painted.tif``, for every crop which
ontology is painted at each pixel on that slice, every feature's paint, not only the crop's
own (:mod:`.painted`); and in ``info.json`` the position of every crop.
Also, for the painted-label methods, ``phase1/extra/``: more crops per annotated slice,
:data:`.painted.EXTRA_PER_BOX` around each box at seeded random offsets, with their
channels and painted code maps (no Pom label: only their paint teaches).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pom_common.atomic import atomic_folder
from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR, CHANNEL_SCALE, CONFIG_FILENAME, DENSITY
from pom_common.errors import ConfigError, InputError
from pom_common.layout import LABEL, PAINTED, ProjectLayout
from pom_common.mrcio import read_volume
from pom_common.naming import find_channel, find_tomogram, tomogram_stem
from pom_common.normalise import CHANNEL_VOXEL_TOLERANCE, channel_scale, normalise_crop
from pom_common.scns import Annotation, read_scns

from .info import write_info
from .painted import EXTRA_PER_BOX, PaintedSlices, jittered_centres
from .report import Phase1Report
from .stacks import write_stack
from .titles import is_unnamed, title_hint

logger = logging.getLogger(__name__)


def bin_image(image: np.ndarray, b: int = BIN_FACTOR) -> np.ndarray:
    """Mean-bin a (h, w) image by b (h and w multiples of b); keeps Pom's dtype rules."""
    h, w = image.shape
    return image.reshape(h // b, b, w // b, b).mean(3).mean(1)


def painted_channel(config: ProjectConfig) -> str | None:
    """The channel whose stacks would be the painted-label stacks (named like them, case ignored), if any."""
    return next((c for c in config.macromolecules if c.casefold() == PAINTED.casefold()), None)


def sample_annotation(
    annotation: Annotation,
    channels: dict[str, np.ndarray],
    config: ProjectConfig,
    stacks: dict[str, dict[str, list[np.ndarray]]],
    report: Phase1Report,
    painted: dict[str, list[np.ndarray]] | None = None,
    extra: dict[str, list[np.ndarray]] | None = None,
    scales: dict[str, float] | None = None,
) -> None:
    """Append the images of one annotated tomogram to ``stacks[feature][channel]`` (pure arrays).

    With ``painted``, also append each crop's painted code map to ``painted[feature]``
    (:class:`.painted.PaintedSlices`) and its position to ``report.crops``. With
    ``extra`` too, append the extra crops around each kept box to ``extra[channel]`` and
    ``extra[PAINTED]`` (those with a painted pixel), their positions to ``report.extra_crops``.
    ``scales``: each segmentation channel's full scale (:func:`pom_common.normalise.channel_scale`;
    Pom's 255 where absent).
    """
    scales = scales or {}
    box = config.ontology_annotation_box_size
    half = box // 2
    z_sum = config.z_sum
    name = annotation.path.name
    n_slices, height, width = annotation.shape
    codes = PaintedSlices(annotation, config.ontologies) if painted is not None else None
    for feature in annotation.features:
        o = feature.title
        if o not in config.ontologies:
            report.unknown_features.setdefault(o, set()).add(name)
            hint = title_hint(o, config.ontologies)
            if hint is not None:
                report.title_hints[o] = hint
            if is_unnamed(o):
                report.unnamed_features.setdefault(o, []).append(f"{name} ({feature.n_boxes} boxes)")
            continue
        report.tomograms.setdefault(o, set()).add(name)
        for z, points in feature.boxes.items():
            for x, y in points:
                where = f"{name}: {o} box at z={z}, x={x}, y={y}"
                if not (z_sum < z < n_slices - z_sum):
                    report.dropped.append(f"{where}: too close to a z end (needs {z_sum} < z < {n_slices - z_sum})")
                    report.dropped_by_key["z_sum"] = report.dropped_by_key.get("z_sum", 0) + 1
                    continue
                mask = feature.slices.get(z)
                if mask is None:
                    report.dropped.append(f"{where}: no mask on that slice")
                    continue
                y0, y1, x0, x1 = y - half, y + half, x - half, x + half
                if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
                    report.dropped.append(f"{where}: the {box}x{box} crop leaves the {height}x{width} image")
                    key = "ontology_annotation_box_size"
                    report.dropped_by_key[key] = report.dropped_by_key.get(key, 0) + 1
                    continue
                label = bin_image(mask[y0:y1, x0:x1])
                stacks[o][LABEL].append(label)
                for channel, volume in channels.items():
                    crop = volume[z - z_sum : z + z_sum + 1, y0:y1, x0:x1]
                    stacks[o][channel].append(normalise_crop(bin_image(crop.mean(0)), channel,
                                                             scales.get(channel, CHANNEL_SCALE)))
                if codes is not None and painted is not None:
                    stem = tomogram_stem(annotation.path)
                    painted[o].append(codes.crop(z, y0, y1, x0, x1))
                    report.crops.setdefault(o, []).append([stem, int(z), int(x), int(y)])
                    if extra is not None:
                        for ex, ey in jittered_centres(stem, z, x, y, box, height, width, EXTRA_PER_BOX):
                            code = codes.crop(z, ey - half, ey + half, ex - half, ex + half)
                            if not code.any():
                                continue
                            extra[PAINTED].append(code)
                            for channel, volume in channels.items():
                                crop = volume[z - z_sum : z + z_sum + 1, ey - half : ey + half, ex - half : ex + half]
                                extra[channel].append(normalise_crop(bin_image(crop.mean(0)), channel,
                                                                     scales.get(channel, CHANNEL_SCALE)))
                            report.extra_crops.append([stem, int(z), int(ex), int(ey)])
                report.images[o] = report.images.get(o, 0) + 1
                if np.any(label != 0):
                    report.annotated[o] = report.annotated.get(o, 0) + 1


def phase1_initialize(config: ProjectConfig, progress: bool = True) -> Phase1Report:
    """Sample every .scns in tomogram_dir into phase 1 training stacks.

    Bad .scns files, missing channels and shape mismatches are reported and skipped; the
    other files go on. Stacks are written only at the end, atomically.
    """
    report = Phase1Report()
    if not config.ontologies:
        raise ConfigError(f"{config.path(CONFIG_FILENAME)}: 'ontologies' is empty; "
                         "list the features to segment, e.g. [\"Mitochondrion\", \"Void\"]")
    files = sorted(config.require_dir("tomogram_dir").glob("*.scns"))
    if not files:
        raise InputError(f"{config.tomogram_path}: no .scns annotation files found")
    stacks: dict[str, dict[str, list[np.ndarray]]] = {
        o: OrderedDict((c, []) for c in (LABEL, *config.macromolecules)) for o in config.ontologies
    }
    painted: dict[str, list[np.ndarray]] | None = {o: [] for o in config.ontologies}
    extra: dict[str, list[np.ndarray]] | None = {c: [] for c in (PAINTED, *config.macromolecules)}
    clash = painted_channel(config)
    if clash:  # its stack would be <feature>_painted.tif too (the same file where case is ignored)
        logger.warning("a channel is named %r: the painted labels are not recorded (only a label method that "
                       "needs no paint can train)", clash)
        painted = extra = None
    for scns in tqdm(files, desc="annotations", unit="file", disable=None if progress else True):
        try:
            annotation = read_scns(scns)
            stem = tomogram_stem(scns)
            channels, scales = read_channels_of(config, stem, annotation.shape, scns.name)
            if DENSITY in channels:
                report.voxel_sizes[stem] = read_volume(find_tomogram(config.tomogram_path, stem), config.apix).voxel_size
        except InputError as exc:
            report.skipped_files.append(str(exc))
            logger.warning("skipped: %s", exc)
            continue
        if not any(f.n_boxes for f in annotation.features):
            report.skipped_files.append(f"{scns}: no boxes in any feature (place boxes in Ais with shift+click)")
            continue
        sample_annotation(annotation, channels, config, stacks, report, painted, extra, scales)
    if not any(per_channel[LABEL] for per_channel in stacks.values()):
        if report.dropped_by_key:  # every box there was, dropped because of a setting: name it
            why = {"z_sum": f"'z_sum' {config.z_sum}: {{n}} box(es) closer than z_sum to a z end",
                   "ontology_annotation_box_size": f"'ontology_annotation_box_size' {config.ontology_annotation_box_size}"
                                                   ": {n} box(es) whose crop leaves the image"}
            raise ConfigError(f"{config.path(CONFIG_FILENAME)}: no training images: "
                              + "; ".join(why[k].format(n=n) for k, n in sorted(report.dropped_by_key.items()))
                              + " (lower the setting, or place the boxes further from the edges)")
        raise InputError(f"{config.tomogram_path}: no training images could be sampled from {len(files)} .scns "
                         f"file(s) for ontologies {list(config.ontologies)}"
                         + (f"; features found: {sorted(report.unknown_features)}" if report.unknown_features else ""))
    layout = ProjectLayout.of(config)
    os.makedirs(layout.phase1.parent, exist_ok=True)
    with atomic_folder(layout.phase1) as build:  # the whole of phase1/ is replaced, or none of it

        def aside(path: Path) -> Path:  # where a file of phase1/ is built
            return build / path.relative_to(layout.phase1)

        for o, per_channel in stacks.items():
            if not per_channel[LABEL]:
                continue
            for channel, images in per_channel.items():
                path = layout.phase1_stack(o, channel)
                write_stack(aside(path), images)
                report.written.append(path)
            if painted is not None:
                path = layout.phase1_painted(o)
                write_stack(aside(path), painted[o], dtype=np.uint8)
                report.written.append(path)
        if extra is not None and extra[PAINTED]:
            os.makedirs(aside(layout.phase1_extra(PAINTED)).parent, exist_ok=True)
            for channel, crops in extra.items():
                path = layout.phase1_extra(channel)
                write_stack(aside(path), crops, dtype=np.uint8 if channel == PAINTED else np.float32)
                report.written.append(path)
        write_info(aside(layout.phase1_info), _phase1_record(config, report, painted is not None), indent=1)
    return report


def _phase1_record(config: ProjectConfig, report: Phase1Report, with_paint: bool) -> dict[str, Any]:
    """``phase1/info.json``: voxel sizes, painted classes, crop positions, and this build's token."""
    info: dict[str, Any] = {}
    if report.voxel_sizes:  # recorded in the exported models as the pixel size they were trained at
        sizes = sorted(report.voxel_sizes.values())
        info = {"voxel_size": sizes[len(sizes) // 2], "tomograms": report.voxel_sizes}
    # The painted stacks' codes index these classes; the crops' positions group them by slice.
    info.update({"painted_classes": list(config.ontologies) if with_paint else None, "crops": report.crops,
                 "extra_crops": report.extra_crops})
    info["build"] = secrets.token_hex(8)  # phase 2 records which phase 1 it was made from
    return info


def read_channels_of(config: ProjectConfig, stem: str, shape: tuple[int, int, int],
                     source: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The input channels of tomogram ``stem`` (memory-mapped) and the full scale of its segmentation channels.

    The tomogram is ``<stem>.mrc`` or ``<stem>.rec`` in tomogram_dir; other channels are found
    by :func:`pom_common.naming.find_channel`'s rule.

    Raises
    ------
    InputError
        A file missing or unreadable; a shape other than the annotation's (``source``); a
        channel whose header voxel size differs from the tomogram's by more than 1 %; values no
        segmentation holds.
    """
    tomogram = find_tomogram(config.tomogram_path, stem)
    # (a project without Density as an input may lack the tomogram itself: then nothing to compare with)
    density = read_volume(tomogram, config.apix) if DENSITY in config.macromolecules or tomogram.exists() else None
    channels, scales = {}, {}
    for channel in config.macromolecules:
        volume = density if channel == DENSITY and density is not None else read_volume(
            find_channel(tomogram, channel, (config.macromolecule_path,)))
        if volume.shape != shape:
            raise InputError(f"{volume.path}: shape {volume.shape} differs from the annotation {source} frame {shape}")
        if (density is not None and volume is not density and volume.header_voxel_size and density.header_voxel_size
                and abs(volume.header_voxel_size - density.header_voxel_size)
                > CHANNEL_VOXEL_TOLERANCE * max(volume.header_voxel_size, density.header_voxel_size)):
            raise InputError(f"{volume.path}: voxel size {volume.header_voxel_size:.4g} A, but its tomogram "
                             f"{tomogram.name} has {density.header_voxel_size:.4g} A on the same grid; fix the "
                             "header that is wrong")
        channels[channel] = volume.data
        if channel != DENSITY:
            scales[channel], note = channel_scale(volume.data, str(volume.path))
            if note:
                logger.info("%s", note)
    return channels, scales
