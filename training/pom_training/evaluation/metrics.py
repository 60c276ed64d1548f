"""Dice and IoU from pooled counts: the one place they are computed.

``pom evaluate``, the demo and ``make quality`` all score through :class:`Scores` or
:func:`mask_dice`: Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def dice(tp: int, fp: int, fn: int) -> float | None:
    """2TP / (2TP + FP + FN); None when there is neither truth nor prediction."""
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou(tp: int, fp: int, fn: int) -> float | None:
    """TP / (TP + FP + FN); None when there is neither truth nor prediction."""
    return None if tp + fp + fn == 0 else tp / (tp + fp + fn)


def counts(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) of two boolean arrays of one shape."""
    return (int(np.count_nonzero(predicted & truth)), int(np.count_nonzero(predicted & ~truth)),
            int(np.count_nonzero(~predicted & truth)))


def mask_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (any dtype, non-zero = in); 1.0 when both are empty."""
    value = dice(*counts(prediction.astype(bool), truth.astype(bool)))
    return 1.0 if value is None else value


@dataclass
class Scores:
    """Pooled true positives, false positives and false negatives per class."""

    classes: tuple[str, ...]
    tp: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    tomograms: list[str] = field(default_factory=list)

    def add(self, name: str, predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> None:
        """Count one class over boolean arrays of one shape; ``scored`` limits the pixels counted."""
        if scored is not None:
            predicted, truth = predicted[scored], truth[scored]
        tp, fp, fn = counts(predicted, truth)
        self.tp[name] = self.tp.get(name, 0) + tp
        self.fp[name] = self.fp.get(name, 0) + fp
        self.fn[name] = self.fn.get(name, 0) + fn

    def merge(self, other: Scores) -> Scores:
        """Add ``other``'s counts and tomograms to these (its classes must be these); returns self."""
        for name in self.classes:
            self.tp[name] = self.tp.get(name, 0) + other.tp.get(name, 0)
            self.fp[name] = self.fp.get(name, 0) + other.fp.get(name, 0)
            self.fn[name] = self.fn.get(name, 0) + other.fn.get(name, 0)
        self.tomograms += other.tomograms
        return self

    def _counts(self, name: str) -> tuple[int, int, int]:
        return self.tp.get(name, 0), self.fp.get(name, 0), self.fn.get(name, 0)

    def dice(self, name: str) -> float | None:
        """Dice of one class, None when it has neither truth nor prediction."""
        return dice(*self._counts(name))

    def iou(self, name: str) -> float | None:
        """Intersection over union of one class, None when it has neither truth nor prediction."""
        return iou(*self._counts(name))

    def mean(self, metric: str) -> float | None:
        """Mean of ``"dice"`` or ``"iou"`` over the classes that have a score."""
        values = [v for v in (getattr(self, metric)(c) for c in self.classes) if v is not None]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: per class dice, iou and counts, and the means."""
        per_class = {c: {"dice": _round(self.dice(c)), "iou": _round(self.iou(c)), "tp": self.tp.get(c, 0),
                         "fp": self.fp.get(c, 0), "fn": self.fn.get(c, 0)} for c in self.classes}
        return {"tomograms": self.tomograms, "classes": per_class, "mean_dice": _round(self.mean("dice")),
                "mean_iou": _round(self.mean("iou"))}

    def table(self) -> str:
        """Dice, IoU and pixel counts per class, and the means, as a text table."""
        width = max([len("class"), *(len(c) for c in self.classes)])
        lines = [f"{'class':<{width}}  {'Dice':>6}  {'IoU':>6}  {'truth px':>9}  {'called px':>9}"]
        for c in self.classes:
            truth, called = self.tp.get(c, 0) + self.fn.get(c, 0), self.tp.get(c, 0) + self.fp.get(c, 0)
            lines.append(f"{c:<{width}}  {_fmt(self.dice(c))}  {_fmt(self.iou(c))}  {truth:>9}  {called:>9}")
        lines.append(f"{'mean':<{width}}  {_fmt(self.mean('dice'))}  {_fmt(self.mean('iou'))}")
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:>6.3f}"
