"""Output forms beyond one float32/uint8 MRC per class: a label map, and OME-Zarr stores.

An :class:`OutputForm` says which: ``format`` (``mrc`` or ``ome-zarr``) and ``labels`` (one
volume of class values instead of one probability volume per class). The default form is
the MRC per class that runs always wrote; it adds nothing to the recipe, so the fingerprints
of those outputs stay as they were, and any other form enters the recipe (outputs of another
form are never taken as done).

The label map (pure function :func:`label_map`): value 0 is Unknown (the model's Unknown
class wins, or no class reaches the minimum probability), values 1.. name the other chosen
classes in order. One byte per voxel (MRC mode 0; fewer than 128 classes, so signed and
unsigned readers agree). The names go into ``classes.json`` beside the outputs (what
``pom evaluate --labels`` reads), into the MRC header's labels, and into the OME-Zarr
store's ``image-label`` metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.atomic import TMP_MARK, atomic_write_text, no_replace
from pom_common.constants import UNKNOWN
from pom_common.defaults import THRESHOLD
from pom_common.errors import ConfigError
from pom_common.mrcio import new_volume
from pom_common.naming import feature_filename

from .copickio import CopickExport, CopickTarget, exporting
from .outputs import SlabSink, _MrcSink, _MrcWriter

#: ``--format`` values.
FORMATS = ("mrc", "ome-zarr")
#: The label map's name in place of a class (``<stem>__labels.mrc``, what ``pom evaluate`` looks for).
LABELS_NAME = "labels"
#: Beside the label maps: value -> class name.
CLASSES_FILE = "classes.json"
#: Suffix of OME-Zarr stores.
ZARR_SUFFIX = ".ome.zarr"
#: Value of Unknown in a label map.
UNKNOWN_VALUE = 0


@dataclass(frozen=True)
class OutputForm:
    """How outputs are stored (passed by value with the run's options)."""

    format: str = "mrc"  # "mrc" or "ome-zarr"
    labels: bool = False  # one label map instead of one volume per class
    min_probability: float | None = None  # labels: below this the voxel is Unknown (None: see resolved())
    copick: CopickTarget | None = None  # labels also written into a copick project (pom_inference.copickio)

    @property
    def default(self) -> bool:
        """Whether this is the per-class MRC form (nothing added to the recipe)."""
        return self.format == "mrc" and not self.labels

    def resolved(self, classes: Sequence[str]) -> float:
        """The minimum probability of a label: as given, else 0 (plain argmax), or 0.5 with one class in play."""
        if self.min_probability is not None:
            return float(self.min_probability)
        return THRESHOLD if len([c for c in classes if c != UNKNOWN]) == 1 else 0.0

    def recipe(self, classes: Sequence[str]) -> dict[str, Any]:
        """What this form adds to the recipe (nothing for the default form)."""
        out: dict[str, Any] = {}
        if self.format != "mrc":
            out["format"] = self.format
        if self.labels:
            out["labels"] = {"min_probability": self.resolved(classes), "values": label_names(classes)}
        if self.copick is not None:
            out["copick"] = self.copick.recipe()
        return out


def check_form(form: OutputForm, names: Mapping[str, str] | None = None) -> None:
    """Refuse a form no run can write.

    Raises
    ------
    ConfigError
        Naming the option (``names``: ``format``, ``min_probability`` -> how the command line spells it).
    """
    names = names or {"format": "--format", "min_probability": "--min-probability"}
    if form.format not in FORMATS:
        raise ConfigError(f"{names['format']}: expected one of {list(FORMATS)}, got {form.format!r}")
    p = form.min_probability
    if p is not None:
        if not form.labels:
            raise ConfigError(f"{names['min_probability']}: only with --labels")
        if not (np.isfinite(p) and 0 <= p <= 1):
            raise ConfigError(f"{names['min_probability']}: expected a probability 0..1, got {p}")
    if form.copick is not None and not form.labels:
        raise ConfigError("--copick writes label maps (copick segmentations hold integers): add --labels")
    if form.format == "ome-zarr":
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise ConfigError(f"{names['format']} ome-zarr needs the zarr package: pip install 'pom-onnx[zarr]'") from None


def label_values(classes: Sequence[str]) -> list[int]:
    """The label value of each class in ``classes``: Unknown 0, the others 1.. in order."""
    values, n = [], 0
    for c in classes:
        if c == UNKNOWN:
            values.append(UNKNOWN_VALUE)
        else:
            n += 1
            values.append(n)
    if n > 127:
        raise ConfigError(f"{n} classes do not fit a label map of one signed byte (at most 127)")
    return values


def label_names(classes: Sequence[str]) -> dict[str, str]:
    """``classes.json``'s content: value (as text) -> class name, Unknown at 0."""
    names = {str(UNKNOWN_VALUE): UNKNOWN}
    names.update({str(v): c for c, v in zip(classes, label_values(classes)) if c != UNKNOWN})
    return names


def label_map(planes: np.ndarray, values: Sequence[int], min_probability: float) -> np.ndarray:
    """(Kc, n, ny, nx) probabilities -> (n, ny, nx) int8 label values.

    The class of highest probability (the first on ties), unless that probability is below
    ``min_probability``: then Unknown (0).
    """
    if len(planes) != len(values):
        raise ValueError(f"{len(planes)} class planes for {len(values)} label values")
    winner = np.argmax(planes, axis=0)
    labels = np.asarray(values, dtype=np.int8)[winner]
    if min_probability > 0:
        labels[np.take_along_axis(planes, winner[None], axis=0)[0] < min_probability] = UNKNOWN_VALUE
    return labels


def header_lines(names: Mapping[str, str]) -> list[str]:
    """The MRC header labels (80 characters each, at most 9) that name the label values."""
    words = [f"{v}={n}" for v, n in names.items()]
    lines, line = [], "pom labels:"
    for word in words:
        if len(line) + 1 + len(word) > 80:
            lines.append(line)
            line = "pom labels:"
        line += " " + word
    lines.append(line)
    return lines[:9]


def check_classes_file(folder: str | os.PathLike, names: Mapping[str, str]) -> None:
    """Refuse an output folder whose ``classes.json`` names other values (label maps of other classes).

    Raises
    ------
    ConfigError
        Naming the file.
    """
    path = Path(folder) / CLASSES_FILE
    try:
        existing = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); remove it, or write the label maps to another folder") from None
    if existing != dict(names):
        raise ConfigError(f"{path}: names {existing}, this run's label maps would name {dict(names)}; "
                          "write them to another folder")


def write_classes_file(folder: str | os.PathLike, names: Mapping[str, str]) -> None:
    """Write ``classes.json`` (atomically; the same bytes each time for the same classes)."""
    path = Path(folder) / CLASSES_FILE
    text = json.dumps(dict(names), indent=1) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    atomic_write_text(path, text)


class _LabelSink:
    """Probabilities in, label values out to the one volume."""

    def __init__(self, volume: SlabSink, values: Sequence[int], min_probability: float) -> None:
        self.volume = volume
        self.values = values
        self.min_probability = min_probability

    def write(self, z0: int, planes: np.ndarray) -> None:
        self.volume.write(z0, label_map(planes, self.values, self.min_probability))


class FormWriter(_MrcWriter):
    """Outputs of an :class:`OutputForm`: per class or one label map, as MRC or OME-Zarr.

    ``kind``: the per-class conversion (``float32`` or ``uint8``); a label map is made from
    float32 probabilities.
    """

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str], class_index: Sequence[int], kind: str,
                 form: OutputForm) -> None:
        super().__init__(folder, classes, class_index)
        self.form = form
        self.kind = "float32" if form.labels else kind
        self.dtype = np.int8 if self.kind == "uint8" else np.float32  # 0..127 (see outputs.MrcUint8Writer)
        if form.labels:
            self.values = label_values(self.classes)
            self.names = label_names(self.classes)
            self.min_probability = form.resolved(self.classes)
        self.export: CopickExport | None = None  # set by make_form_writer for a copick target

    def paths(self, stem: str) -> list[Path]:
        """``<stem>__<Class>`` per class, or ``<stem>__labels``; ``.mrc`` or ``.ome.zarr``."""
        names = [feature_filename(stem, c) for c in ((LABELS_NAME,) if self.form.labels else self.classes)]
        if self.form.format == "ome-zarr":
            names = [n[: -len(".mrc")] + ZARR_SUFFIX for n in names]
        return [self.folder / n for n in names]

    @contextlib.contextmanager
    def open(self, stem: str, shape: tuple[int, int, int], voxel_size: float,
             before_replace: Callable[[], None] | None = None, generation: int | None = None) -> Iterator[SlabSink]:
        """Create every output under a temporary name; move all of them into place when the block succeeds.

        With a copick target, the label map is then written into the run's segmentation
        (after ``before_replace()`` confirmed the claim is still ours).
        """
        opened = self._open(stem, shape, voxel_size, before_replace, generation)
        if self.export is not None:
            opened = exporting(opened, self.export, stem, self.paths(stem)[0], voxel_size, before_replace)
        with opened as sink:
            yield sink

    @contextlib.contextmanager
    def _open(self, stem: str, shape: tuple[int, int, int], voxel_size: float,
              before_replace: Callable[[], None] | None, generation: int | None) -> Iterator[SlabSink]:
        tag = f"g{generation}" if generation is not None else ""
        dtype: Any = np.int8 if self.form.labels else self.dtype
        with contextlib.ExitStack() as stack:
            volumes: list[Any] = []
            for path in self.paths(stem):
                if self.form.format == "ome-zarr":
                    from .omezarr import new_store

                    volumes.append(stack.enter_context(new_store(
                        path, shape, dtype, voxel_size, before_replace, tag,
                        label_names=self.names if self.form.labels else None)))
                else:
                    publish = no_replace(before_replace) if before_replace is not None else None
                    lines = header_lines(self.names) if self.form.labels else ()
                    volumes.append(stack.enter_context(new_volume(path, shape, dtype, voxel_size, publish, tag,
                                                                  labels=lines)))
            if self.form.labels:
                yield _LabelSink(volumes[0], self.values, self.min_probability)
            else:
                yield _MrcSink(volumes)
            if self.form.format == "mrc":
                _MrcSink(volumes).finish()
            if self.form.labels:
                write_classes_file(self.folder, self.names)

    def describe(self, stem: str) -> dict[str, dict[str, int]]:
        """Size and inode of each output (an OME-Zarr store: of its folder, once complete)."""
        if self.form.format == "mrc":
            return super().describe(stem)
        from .omezarr import check_complete

        out = {}
        for path in self.paths(stem):
            check_complete(path)
            st = os.stat(path)
            out[path.name] = {"size": st.st_size, "inode": st.st_ino}
        return out

    def remove_temporaries(self, stem: str, below: int | None = None) -> int:
        """As :meth:`_MrcWriter.remove_temporaries`, for files and store folders alike."""
        removed = 0
        for path in self.paths(stem):
            prefix = f".{path.name}{TMP_MARK}"
            for tmp in self.folder.glob(f".{glob_escape(path.name)}*"):
                if tmp.name.startswith(prefix):
                    tag = re.match(r"g(\d+)-", tmp.name[len(prefix):])
                elif tmp.name.startswith(f".{path.name}.old-"):  # a killed store replacement's old folder
                    tag = None
                else:
                    continue
                if below is not None and tag is not None and int(tag.group(1)) >= below:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if tmp.is_dir() and not tmp.is_symlink():
                        shutil.rmtree(tmp)
                    else:
                        tmp.unlink()
                    removed += 1
        return removed


def glob_escape(name: str) -> str:
    """``glob.escape`` (imported here under one name for the two uses)."""
    import glob

    return glob.escape(name)


def make_form_writer(kind: str, folder: str | os.PathLike, classes: Sequence[str], class_index: Sequence[int],
                     form: OutputForm) -> FormWriter:
    """The writer of ``form``; for a label map, refuses a folder whose ``classes.json`` names other classes.

    Raises
    ------
    ConfigError
        See :func:`check_classes_file` and :func:`label_values`.
    """
    writer = FormWriter(folder, classes, class_index, kind, form)
    if form.labels:
        check_classes_file(folder, writer.names)
        if form.copick is not None:
            writer.export = CopickExport(form.copick, writer.classes, writer.names)
    return writer


__all__ = ["FORMATS", "OutputForm", "check_form", "label_map", "label_names", "label_values", "make_form_writer"]
