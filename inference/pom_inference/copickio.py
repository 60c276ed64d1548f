"""copick projects in and out (``pom-infer process MODEL --copick CONFIG.json``; extra ``[copick]``).

In: each run's tomogram (``--voxel-spacing``, ``--tomo-type``) and the model's other input
channels (segmentations of the channel's name at that voxel spacing) are read through
copick's API and staged once as MRC files in the work folder
(``<work>/tomograms/<run>.mrc``, ``<run>__<Channel>.mrc``): a staged file is linked into
place only if absent, so workers staging at once agree on one file and the work queue's
record of a run's inputs stays valid. The runs are then shared among the workers by the work
queue exactly as files are (claims in ``<work>/outputs/.pom``; default work folder
``pom-work`` beside the config file, or ``--output``).

Out: a copick segmentations are integer masks, so each run's output is the label map
(``--labels``), written as a **multilabel** segmentation: ``name`` the model's file name
without ``.onnx`` (``--copick-name``), ``user_id`` ``pom-onnx`` (``--copick-user``),
``session_id`` ``0`` (copick's mark of a tool's output; ``--copick-session``), each class's
voxels holding the ``label`` of the copick pickable object of that name (Unknown: 0), at the
network's voxel spacing (2x the tomogram's: the binned grid), created in the run if needed.
The segmentation is written while the worker still holds the run's claim, after the label
map is in place and before the run is recorded done: a worker killed before that point
leaves the run to the next one, which writes it again whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.constants import UNKNOWN
from pom_common.errors import ConfigError, InputError
from pom_common.mrcio import read_volume, write_volume

from .outputs import SlabSink

logger = logging.getLogger(__name__)

#: The segmentations' user id and session id by default (session "0": a tool's output, in copick's terms).
USER_ID = "pom-onnx"
SESSION_ID = "0"


@dataclass(frozen=True)
class CopickTarget:
    """Where the label maps go in a copick project (part of :class:`pom_inference.forms.OutputForm`)."""

    config: str  # absolute path of the copick configuration file
    name: str  # the multilabel segmentation's name
    user_id: str = USER_ID
    session_id: str = SESSION_ID

    def recipe(self) -> dict[str, Any]:
        """What the recipe records of it."""
        return {"config": self.config, "name": self.name, "user_id": self.user_id, "session_id": self.session_id}


@contextlib.contextmanager
def keep_logging() -> Iterator[None]:
    """Keep the root logger's handlers and level: copick's modules replace them when imported (a rich console)."""
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        yield
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)


def open_root(config: str | os.PathLike) -> Any:
    """The copick project of ``config``, opened with copick's API.

    Raises
    ------
    ConfigError
        copick is not installed, or the file is not a copick configuration.
    """
    with keep_logging():
        try:
            import copick
        except ImportError:
            raise ConfigError("--copick needs the copick package: pip install 'pom-onnx[copick]'") from None
    if not Path(config).is_file():
        raise ConfigError(f"{config}: no such copick configuration file")
    try:
        with keep_logging():
            return copick.from_file(str(config))
    except Exception as exc:  # copick raises pydantic, JSON and fsspec errors alike
        raise ConfigError(f"{config}: not a readable copick configuration ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def object_labels(root: Any, classes: Sequence[str], config: str) -> dict[str, int]:
    """Class -> the ``label`` of the copick pickable object of that name (Unknown -> 0).

    Raises
    ------
    ConfigError
        A class (other than Unknown) names no pickable object, or a label does not fit a byte.
    """
    objects = {o.name: int(o.label) for o in root.pickable_objects}
    missing = [c for c in classes if c != UNKNOWN and c not in objects]
    if missing:
        raise ConfigError(f"{config}: the copick project has no pickable object named {missing} (it has "
                          f"{sorted(objects)}); add them to its pickable_objects, or choose --classes")
    labels = {c: (0 if c == UNKNOWN else objects[c]) for c in classes}
    if any(not 0 <= v <= 255 for v in labels.values()):
        raise ConfigError(f"{config}: pickable object labels {labels} do not fit a segmentation of one byte (0..255)")
    return labels


def _voxel_spacing(run: Any, voxel_spacing: float | None, model_voxel_size: float) -> Any:
    """The run's voxel spacing: the one asked for, else the one closest to the model's training voxel size."""
    spacings = run.voxel_spacings
    if not spacings:
        return None
    if voxel_spacing is not None:
        return run.get_voxel_spacing(round(float(voxel_spacing), 3))
    return min(spacings, key=lambda vs: abs(float(vs.voxel_size) - model_voxel_size))


def _tomogram(vs: Any, tomo_type: str | None) -> tuple[Any, str]:
    """The tomogram of ``tomo_type`` (None: the only one there), or (None, why not)."""
    if tomo_type is not None:
        tomogram = vs.get_tomogram(tomo_type)
        return (tomogram, "") if tomogram is not None else (None, f"no tomogram of type {tomo_type!r}")
    tomograms = vs.tomograms
    if len(tomograms) != 1:
        types = sorted(t.tomo_type for t in tomograms)
        return None, f"{len(tomograms)} tomograms ({types}): choose one with --tomo-type"
    return tomograms[0], ""


def _stage(target: Path, data: Callable[[], np.ndarray], voxel_size: float) -> None:
    """Write ``target`` once: linked into place only if absent (another worker's copy is kept)."""
    if target.exists():
        return
    tmp = target.with_name(f".{target.name}.stage-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write_volume(tmp, np.asarray(data()), voxel_size)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _segmentation(run: Any, name: str, voxel_size: float) -> Any:
    """The run's segmentation ``name`` at ``voxel_size`` (the first by user and session, when several)."""
    found = run.get_segmentations(name=name, voxel_size=voxel_size, is_instance=None, is_panoptic=None)
    return sorted(found, key=lambda s: (s.user_id, s.session_id))[0] if found else None


def stage_runs(config: str, runs: Sequence[str] | None, voxel_spacing: float | None, tomo_type: str | None,
               channels: Sequence[str], model_voxel_size: float, folder: Path) -> list[Path]:
    """Stage each run's tomogram and input channels as MRC in ``folder``; the staged tomograms, by run name.

    A run without the voxel spacing, the tomogram or a channel is left out with a warning line.

    Raises
    ------
    ConfigError
        copick missing, an unreadable configuration, or a run named in ``runs`` that the project lacks.
    """
    with keep_logging():
        return _stage_runs(config, runs, voxel_spacing, tomo_type, channels, model_voxel_size, folder)


def _stage_runs(config: str, runs: Sequence[str] | None, voxel_spacing: float | None, tomo_type: str | None,
                channels: Sequence[str], model_voxel_size: float, folder: Path) -> list[Path]:
    root = open_root(config)
    by_name = {r.name: r for r in root.runs}
    if runs:
        unknown = [r for r in runs if r not in by_name]
        if unknown:
            raise ConfigError(f"--runs: {config} has no run named {unknown[:5]} (it has {len(by_name)} runs)")
        selected = [by_name[r] for r in runs]
    else:
        selected = [by_name[r] for r in sorted(by_name)]
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for run in selected:
        vs = _voxel_spacing(run, voxel_spacing, model_voxel_size)
        if vs is None:
            logger.warning("%s: no voxel spacing %s; left out", run.name, voxel_spacing if voxel_spacing else "at all")
            continue
        tomogram, why = _tomogram(vs, tomo_type)
        if tomogram is None:
            logger.warning("%s: %s at voxel spacing %g; left out", run.name, why, vs.voxel_size)
            continue
        inputs = {}
        for channel in channels:
            if channel == "Density":
                continue
            segmentation = _segmentation(run, channel, float(vs.voxel_size))
            if segmentation is None:
                break
            inputs[channel] = segmentation
        else:
            size = float(vs.voxel_size)
            _stage(folder / f"{run.name}.mrc", lambda t=tomogram: t.numpy(), size)  # type: ignore[misc]
            for channel, segmentation in inputs.items():
                _stage(folder / f"{run.name}__{channel}.mrc", lambda s=segmentation: s.numpy(), size)  # type: ignore[misc]
            staged.append(folder / f"{run.name}.mrc")
            continue
        logger.warning("%s: no segmentation named %r at voxel spacing %g (an input channel of the model); left out",
                       run.name, channel, vs.voxel_size)
    return staged


def write_segmentation(root: Any, target: CopickTarget, run_name: str, labels: np.ndarray, voxel_size: float,
                       lut: np.ndarray) -> Any:
    """Write ``labels`` (our values) as the run's multilabel segmentation (copick's object labels)."""
    run = root.get_run(run_name)
    if run is None:
        raise InputError(f"{target.config}: no run named {run_name!r} (removed since it was staged?)")
    size = round(float(voxel_size), 3)
    run.new_voxel_spacing(size, exist_ok=True)
    segmentation = run.new_segmentation(voxel_size=size, name=target.name, session_id=target.session_id,
                                        is_multilabel=True, user_id=target.user_id, exist_ok=True)
    segmentation.from_numpy(lut[np.asarray(labels).astype(np.int64)], dtype=np.uint8)
    return segmentation


class CopickExport:
    """Writes each finished label map into the copick project (used by :class:`pom_inference.forms.FormWriter`)."""

    def __init__(self, target: CopickTarget, classes: Sequence[str], names: dict[str, str]) -> None:
        self.target = target
        root = open_root(target.config)
        labels = object_labels(root, classes, target.config)
        self.lut = np.zeros(256, np.uint8)
        for value, name in names.items():
            self.lut[int(value)] = labels.get(name, 0)
        self._root: Any = None  # opened again in the worker process that writes

    def write(self, run_name: str, label_file: Path, voxel_size: float) -> None:
        """Copy the label map in ``label_file`` into the run's segmentation."""
        if self._root is None:
            self._root = open_root(self.target.config)
        with keep_logging():
            write_segmentation(self._root, self.target, run_name, read_volume(label_file).data, voxel_size, self.lut)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_root": None}


@contextlib.contextmanager
def exporting(sink_context: contextlib.AbstractContextManager[SlabSink], export: CopickExport, run_name: str,
              label_file: Path, voxel_size: float,
              before_replace: Callable[[], None] | None) -> Iterator[SlabSink]:
    """The label map's sink; once it is in place (and still ours), its copy into the copick project."""
    with sink_context as sink:
        yield sink
    if before_replace is not None:
        before_replace()  # raises when the claim was taken over meanwhile
    export.write(run_name, label_file, voxel_size)
