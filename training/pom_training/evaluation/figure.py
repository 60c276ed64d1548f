"""Preview figures that explain themselves: density | prediction (| truth | errors), several slices, a legend.

One row per slice, chosen so that every class the prediction (or the truth) holds appears in
at least one row; each row says which slice it is ("z 24 of 96", the tomogram's own slice
numbers). Panels are the z-averaged, binned density in grey, and the same with the classes
overlaid in their colours; where truth exists, the truth and the errors (pixels the truth
labels and the prediction gets wrong; for one feature, false calls and misses in two
colours). Under the panels: a scale bar in nm and the legend (class names and colours).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pom_common.atomic import atomic_path

from .render import FALLBACK_COLOUR, Colour

#: Label value of a pixel no class covers (no call, or unlabelled truth).
NONE = -1
#: Colours of the errors panel: a wrong call, and (one feature) a miss.
WRONG: Colour = (0.95, 0.1, 0.1)
MISSED: Colour = (0.1, 0.45, 1.0)
#: Overlay opacity.
ALPHA = 0.45
#: Panels are enlarged by an integer factor until their longer side is at least this (pixels).
PANEL_SIZE = 256
#: Rows drawn: at least, at most.
MIN_ROWS, MAX_ROWS = 3, 5
#: A class counts as present on a slice from this many pixels on.
MIN_PIXELS = 12
#: Scale-bar lengths tried (nm), the longest that fits in a third of a panel is drawn.
BAR_LENGTHS_NM = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_GAP, _MARGIN, _ROW_LABEL = 6, 10, 78


@dataclass(frozen=True)
class Views:
    """What a figure shows: binned volumes (nz, ny, nx) of the same shape.

    ``calls`` and ``truth`` hold class indices into ``classes`` (:data:`NONE`: nothing);
    ``pixel_nm`` is the binned pixel's size; ``bin_factor`` and ``depth`` (the tomogram's
    number of slices) turn binned slices into the tomogram's slice numbers.
    """

    density: np.ndarray
    calls: np.ndarray
    classes: tuple[str, ...]
    truth: np.ndarray | None = None
    pixel_nm: float | None = None
    bin_factor: int = 2
    depth: int = 0
    title: str = "prediction"


def pick_slices(views: Views, rows: tuple[int, int] = (MIN_ROWS, MAX_ROWS)) -> list[int]:
    """Binned slices to show, in order: every class present somewhere appears in one (greedy cover).

    The slice with the most classes first (the middle one among equals), then slices that
    add classes not yet shown, then the slices farthest from those up to ``rows[0]``; at most
    ``rows[1]``.
    """
    nz = views.density.shape[0]
    present = [set(_classes_on(views.calls[z])) | (set(_classes_on(views.truth[z])) if views.truth is not None else set())
               for z in range(nz)]
    middle = (nz - 1) / 2
    chosen: list[int] = []
    shown: set[int] = set()
    wanted = set().union(*present) if present else set()
    while shown != wanted and len(chosen) < rows[1]:
        z = max((z for z in range(nz) if z not in chosen), key=lambda z: (len(present[z] - shown), -abs(z - middle)))
        if not present[z] - shown:
            break
        chosen.append(z)
        shown |= present[z]
    while len(chosen) < min(rows[0], nz):  # then the slices farthest from those shown
        chosen.append(max((z for z in range(nz) if z not in chosen),
                          key=lambda z: (min((abs(z - c) for c in chosen), default=nz), -abs(z - middle))))
    return sorted(chosen)


def _classes_on(labels: np.ndarray) -> list[int]:
    values, counts = np.unique(labels[labels >= 0], return_counts=True)
    return [int(v) for v, n in zip(values, counts) if n >= MIN_PIXELS]


def render(views: Views, colours: dict[str, Colour], slices: Sequence[int] | None = None) -> Image.Image:
    """The figure as a PIL image (RGB)."""
    slices = list(slices) if slices is not None else pick_slices(views)
    ny, nx = views.density.shape[1:]
    scale = max(1, -(-PANEL_SIZE // max(ny, nx)))
    pw, ph = nx * scale, ny * scale
    palette = np.array([colours.get(c, FALLBACK_COLOUR) for c in views.classes] or [FALLBACK_COLOUR], np.float32)
    titles = ["density", views.title] + (["truth", "errors"] if views.truth is not None else [])
    font = _font(13)
    width = _MARGIN + _ROW_LABEL + len(titles) * (pw + _GAP) - _GAP + _MARGIN
    legend = _legend_items(views, slices, colours)
    legend_rows = _legend_layout(legend, width - 2 * _MARGIN, font)
    height = _MARGIN + 20 + len(slices) * (ph + _GAP) + 34 + 20 * len(legend_rows) + _MARGIN
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    x0, y = _MARGIN + _ROW_LABEL, _MARGIN
    for i, title in enumerate(titles):
        draw.text((x0 + i * (pw + _GAP), y), title, fill="black", font=font)
    y += 20
    for z in slices:
        grey = _grey(views.density[z])
        panels = [grey, _overlay(grey, views.calls[z], palette)]
        if views.truth is not None:
            panels += [_overlay(grey, views.truth[z], palette), _errors(grey, views.calls[z], views.truth[z],
                                                                         len(views.classes) == 1)]
        for i, panel in enumerate(panels):
            image = Image.fromarray((panel * 255).astype(np.uint8)).resize((pw, ph), Image.Resampling.NEAREST)
            figure.paste(image, (x0 + i * (pw + _GAP), y))
        draw.text((_MARGIN, y + 4), f"z {_tomogram_slice(views, z)}\nof {_depth(views)}", fill="black", font=font,
                  spacing=2)
        y += ph + _GAP
    if views.pixel_nm:
        _scale_bar(draw, x0, y + 4, pw, scale, views.pixel_nm, font)
    y += 34
    for row in legend_rows:
        x = _MARGIN
        for colour, text in row:
            draw.rectangle((x, y + 2, x + 12, y + 14), fill=_rgb(colour), outline="black")
            draw.text((x + 17, y), text, fill="black", font=font)
            x += 17 + _text_width(draw, text, font) + 16
        y += 20
    return figure


def write_figure(path: Path, views: Views, colours: dict[str, Colour], slices: Sequence[int] | None = None) -> Path:
    """:func:`render` written to ``path`` (PNG, atomically)."""
    figure = render(views, colours, slices)
    with atomic_path(path) as tmp:
        figure.save(tmp, format="PNG")
    return path


def _tomogram_slice(views: Views, z: int) -> int:
    return z * views.bin_factor + views.bin_factor // 2


def _depth(views: Views) -> int:
    return views.depth or views.density.shape[0] * views.bin_factor


def _grey(density: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(density, (1, 99))
    grey = np.clip((density - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)
    return np.repeat(grey[..., None], 3, axis=-1)


def _overlay(grey: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    covered = ((labels >= 0) & (labels < len(palette)))[..., None]  # (a single feature's truth: 1 = not it)
    colour = palette[np.clip(labels, 0, len(palette) - 1)]
    return np.where(covered, (1 - ALPHA) * grey + ALPHA * colour, grey)


def _errors(grey: np.ndarray, calls: np.ndarray, truth: np.ndarray, one_feature: bool) -> np.ndarray:
    """Wrong calls in red where the truth labels a pixel; with one feature, false calls red and misses blue."""
    dim = 0.6 * grey
    if one_feature:  # truth 0 = the feature, other labels = not it; calls 0 = called
        wrong = (calls == 0) & (truth >= 0) & (truth != 0)
        missed = (calls != 0) & (truth == 0)
    else:
        wrong = (truth >= 0) & (calls != truth)
        missed = np.zeros_like(wrong)
    out = np.where(wrong[..., None], np.asarray(WRONG, np.float32), dim)
    return np.where(missed[..., None], np.asarray(MISSED, np.float32), out)


def _legend_items(views: Views, slices: Sequence[int], colours: dict[str, Colour]) -> list[tuple[Colour, str]]:
    """The classes drawn on the rows shown (called or true), then what the errors' colours mean."""
    calls = views.calls[list(slices)]
    shown = set(np.unique(calls).tolist())
    if views.truth is not None:
        shown |= set(np.unique(views.truth[list(slices)]).tolist())
    items = [(colours.get(c, FALLBACK_COLOUR), c) for i, c in enumerate(views.classes) if i in shown]
    if views.truth is None:
        return items
    truth = views.truth[list(slices)]
    labelled = max(int((truth >= 0).sum()), 1)
    if len(views.classes) == 1:
        wrong = int(((calls == 0) & (truth >= 0) & (truth != 0)).sum())
        missed = int(((calls != 0) & (truth == 0)).sum())
        return [*items, (WRONG, f"called, not {views.classes[0]} ({100 * wrong / labelled:.1f} %)"),
                (MISSED, f"{views.classes[0]} missed ({100 * missed / labelled:.1f} %)")]
    wrong = int(((truth >= 0) & (calls != truth)).sum())
    return [*items, (WRONG, f"wrong class ({100 * wrong / labelled:.1f} % of labelled pixels shown)")]


def _legend_layout(items: list[tuple[Colour, str]], width: int, font: Any) -> list[list[tuple[Colour, str]]]:
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[Colour, str]]] = [[]]
    used = 0
    for colour, text in items:
        need = 17 + _text_width(draw, text, font) + 16
        if rows[-1] and used + need > width:
            rows.append([])
            used = 0
        rows[-1].append((colour, text))
        used += need
    return rows


def _scale_bar(draw: ImageDraw.ImageDraw, x: int, y: int, panel_width: int, scale: int, pixel_nm: float,
               font: Any) -> None:
    """A bar of a round length in nm, at most a third of a panel, under the first panel."""
    nm_per_display_pixel = pixel_nm / scale
    fitting = [n for n in BAR_LENGTHS_NM if n / nm_per_display_pixel <= panel_width / 3]
    length_nm = fitting[-1] if fitting else BAR_LENGTHS_NM[0]
    length = max(1, int(round(length_nm / nm_per_display_pixel)))
    draw.rectangle((x, y + 4, x + length, y + 9), fill="black")
    draw.text((x + length + 8, y), f"{length_nm} nm", fill="black", font=font)


def _rgb(colour: Colour) -> tuple[int, int, int]:
    r, g, b = (int(round(255 * min(max(c, 0.0), 1.0))) for c in colour)
    return r, g, b


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _font(size: int) -> Any:
    """Pillow's own font at ``size`` (Pillow 10.1+ with FreeType), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
