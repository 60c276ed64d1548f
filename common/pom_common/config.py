"""Project configuration: Pom's ``project_configuration.json`` as an immutable value.

An existing Pom project loads unchanged: every key old Pom wrote is known, including
its rendering keys, which this toolkit keeps (and writes back) but does not use.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .atomic import atomic_write_text
from .constants import CONFIG_FILENAME, DENSITY, MAX_Z_SMOOTH, MAX_Z_SUM
from .defaults import CONFIG_TTA_RUNS, TTA
from .errors import ConfigError
from .files import read_regular_file
from .naming import name_problem
from .normalise import DENSITY_PROCESSING

#: The values ``label_method`` may take.
LABEL_METHODS = ("pom", "painted", "direct")

# Keys old Pom wrote that this toolkit accepts, keeps and writes back, but does not use.
_LEGACY_KEYS: dict[str, str] = {
    "image_dir": "str",
    "single_model_overlap": "float",
    "single_model_box_size": "int",
    "shared_model_overlap": "float",
    "shared_model_box_size": "int",
    "shared_model_unknown_output_thresold": "float",  # sic, Pom's spelling
    "tf_distribute_mirrored": "bool",
    "image_size": "int",
    "soft_ignore_in_summary": "list",
    "gallery_categories": "list",
    "raytraced_ontologies": "bool",
    "camera_pitch": "float",
    "camera_yaw": "float",
    "z_margin_summary": "float",
    "silhouette_alpha": "float",
    "silhouette_threshold": "float",
}


@dataclass(frozen=True)
class ProjectConfig:
    """Pom's project settings. Never mutated: use :func:`dataclasses.replace`.

    Every field but ``legacy`` and ``base_dir`` is a configuration key, and its default
    here is the only place that default is written.
    """

    root: str = ""
    tomogram_dir: str = "tomograms"
    macromolecule_dir: str = "macromolecules"
    output_dir: str = "output"
    test_dir: str = "test"
    ontology_annotation_box_size: int = 128  # crop size (px, unbinned) around each Ais box
    apix: float = 15.68  # voxel size (A) used when an MRC header says 0 or 1
    macromolecules: tuple[str, ...] = (DENSITY,)  # input channels, in network order
    ontologies: tuple[str, ...] = ()  # organelle classes
    z_sum: int = 4  # z-average window is 2 * z_sum + 1 slices
    single_model_epochs: int = 100
    single_model_batch_size: int = 32
    shared_model_epochs: int = 200
    shared_model_batch_size: int = 64
    shared_model_unknown_class_threshold: float = 0.33
    shared_model_runs_per_volume: int = TTA  # TTA rotations when processing (1..4)
    GPUS: str = "0"  # GPU indices ("0,1"), or "cpu"
    model_base_filters: int = 64  # U-Net filters at the first level
    model_depth: int = 4  # U-Net pooling levels
    density_normalisation: str = "local"  # "local" (crop-sized window) or "volume" (Pom)
    #: How Ais annotations become training labels: "pom" (Pom's algorithm, for reproduction),
    #: "painted" (every painted feature teaches every network) or "direct" (the shared network
    #: learns the painted labels alone, no single networks); see LABEL_METHODS.
    label_method: str = "direct"
    #: The stable plan ("direct", "painted" shared networks): change each drawn crop's blur,
    #: noise, gain and offset (the labels stay). Off by default: on ``make quality`` it made
    #: some seeds call Void another bland class (docs/quality.md).
    shared_model_augment: bool = False
    #: The stable plan: at least this many crops drawn per epoch, however few the boxes.
    shared_model_min_draws: int = 1024
    #: The shared network as the mean of this many networks trained with other seeds (one model).
    shared_model_members: int = 1
    #: "direct": the weight of a box's negative ("inside a box of X, not painted X: not X")
    #: against a painted pixel in the loss. 3: on ``make quality``'s confounders it halved the
    #: organelle calls in the empty slabs (docs/quality.md); 1 is the first version's.
    shared_model_negative_weight: float = 3.0
    #: The shared network's output averaged over this many binned slices (odd; 1: none), written
    #: into the model so that every program applying it does the same ("pom" never: it reproduces Pom).
    shared_model_z_smooth: int = 3
    #: Pom keys kept for round trips (rendering settings and others), read-only.
    legacy: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Folder the configuration was loaded from; relative folders resolve against it.
    base_dir: str = "."

    def path(self, *parts: str) -> Path:
        """Resolve a project-relative path (Pom's ``root`` joined to ``base_dir``)."""
        return Path(self.base_dir, self.root, *parts)

    @property
    def tomogram_path(self) -> Path:
        """The folder ``tomogram_dir`` names, resolved against the project."""
        return self.path(self.tomogram_dir)

    @property
    def macromolecule_path(self) -> Path:
        """The folder ``macromolecule_dir`` names, resolved against the project."""
        return self.path(self.macromolecule_dir)

    @property
    def output_path(self) -> Path:
        """The folder ``output_dir`` names, resolved against the project."""
        return self.path(self.output_dir)

    @property
    def test_path(self) -> Path:
        """The folder ``test_dir`` names, resolved against the project."""
        return self.path(self.test_dir)

    def require_dir(self, key: str) -> Path:
        """The folder a key names; ConfigError naming the key when it does not exist."""
        folder = self.path(getattr(self, key))
        if not folder.is_dir():
            raise ConfigError(f"key {key!r}: folder {folder} does not exist")
        return folder

    def gpu_list(self) -> list[int] | None:
        """``GPUS`` as a list of indices; None when it says ``cpu``."""
        return parse_gpus(self.GPUS, key="GPUS")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, Pom's keys in Pom's order, then the legacy keys."""
        out: dict[str, Any] = {}
        for key in _USED_KEYS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        for key, value in self.legacy.items():
            out[key] = value
        return out


#: Field annotation -> the JSON type the key takes ("float" accepts integers too).
_KINDS = {"str": "str", "int": "int", "float": "float", "bool": "bool", "tuple[str, ...]": "list[str]"}
#: Fields that are not configuration keys.
_NOT_KEYS = ("legacy", "base_dir")
#: Every key this toolkit uses: name -> (JSON type, default), in Pom's order. The defaults
#: are ProjectConfig's: they are written once, there.
_USED_KEYS: dict[str, tuple[str, Any]] = {
    f.name: (_KINDS[str(f.type)], f.default) for f in dataclasses.fields(ProjectConfig) if f.name not in _NOT_KEYS
}
KNOWN_KEYS = tuple(_USED_KEYS) + tuple(_LEGACY_KEYS)


#: Smallest training crop (pixels): 8 x 8 after binning; the U-Net's depth may ask for more.
MIN_BOX = 16
#: A configuration file larger than this is not one.
MAX_CONFIG_BYTES = 1 << 20

#: What ``GPUS`` (and ``-gpus``/``--gpus``) say to run on the CPU.
CPU = "cpu"


def parse_gpus(text: str, key: str = "GPUS") -> list[int] | None:
    """``"0,1,3"`` -> [0, 1, 3]; ``"cpu"`` -> None (the CPU); a ConfigError naming ``key`` otherwise."""
    if str(text).strip().lower() == CPU:
        return None
    expected = f"{key}: expected GPU indices such as 0,1,3, or {CPU!r} for the CPU, got {text!r}"
    try:
        gpus = [int(part) for part in str(text).split(",") if part.strip() != ""]
    except ValueError:
        raise ConfigError(expected) from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise ConfigError(expected)
    return gpus


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list":
        return isinstance(value, list)
    raise AssertionError(kind)


_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list[str]": "a list of strings", "list": "a list"}
_JSON_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
               dict: "an object", type(None): "null"}


def _int_value(document: Mapping[str, Any], key: str) -> int | None:
    """The integer a key holds, or None when absent or not an integer (reported elsewhere)."""
    value = document.get(key)
    return value if _type_ok("int", value) else None


def validate_config(document: Any) -> list[str]:
    """Check a parsed configuration document; return every problem found (empty if valid)."""
    if not isinstance(document, dict):
        return [f"expected a JSON object of settings, found {_JSON_WORDS.get(type(document), type(document).__name__)}"]
    problems = []
    for key, value in document.items():
        if key in _USED_KEYS:
            kind = _USED_KEYS[key][0]
        elif key in _LEGACY_KEYS:
            kind = _LEGACY_KEYS[key]
        else:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
            continue
        if not _type_ok(kind, value):
            found = _JSON_WORDS.get(type(value), type(value).__name__)
            shown = "" if value is None else f" {json.dumps(value)}"  # "null", not "null null"
            problems.append(f"key {key!r}: expected {_TYPE_WORDS[kind]}, found {found}{shown}")
    for key in ("ontology_annotation_box_size", "single_model_epochs", "single_model_batch_size",
                "shared_model_epochs", "shared_model_batch_size", "model_base_filters", "model_depth",
                "shared_model_members"):
        number = _int_value(document, key)
        if number is not None and number < 1:
            problems.append(f"key {key!r}: expected a positive integer, found {number}")
    number = _int_value(document, "shared_model_z_smooth")
    if number is not None and not (1 <= number <= MAX_Z_SMOOTH and number % 2):
        problems.append(f"key 'shared_model_z_smooth': expected an odd number of slices from 1 to {MAX_Z_SMOOTH}, "
                        f"found {number}")
    number = _int_value(document, "shared_model_min_draws")
    if number is not None and number < 0:
        problems.append(f"key 'shared_model_min_draws': expected 0 or a positive integer, found {number}")
    number = _int_value(document, "z_sum")
    if number is not None and not 0 <= number <= MAX_Z_SUM:
        problems.append(f"key 'z_sum': expected an integer from 0 to {MAX_Z_SUM} (the window is 2 * z_sum + 1 "
                        f"slices), found {number}")
    box = _int_value(document, "ontology_annotation_box_size")
    if box is not None and box >= 1 and (box < MIN_BOX or box % 2):
        problems.append(f"key 'ontology_annotation_box_size': expected an even number of pixels, at least {MIN_BOX} "
                        f"(the crops are binned 2x), found {box}")
    for key in ("apix", "shared_model_unknown_class_threshold", "shared_model_negative_weight"):
        value = document.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value) and value > 0):
            problems.append(f"key {key!r}: expected a positive number, found {json.dumps(value)}")
    for key in ("ontologies", "macromolecules"):
        names = document.get(key)
        if not isinstance(names, list) or not _type_ok("list[str]", names):
            continue
        for name in names:
            problem = name_problem(name)
            if problem:
                problems.append(f"key {key!r}: {problem}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"key {key!r}: {repeated} listed more than once")
    if _type_ok("list[str]", document.get("macromolecules")) and not document["macromolecules"]:
        problems.append("key 'macromolecules': expected at least one input channel, e.g. [\"Density\"]")
    number = _int_value(document, "shared_model_runs_per_volume")
    if number is not None and number not in CONFIG_TTA_RUNS:
        problems.append(f"key 'shared_model_runs_per_volume': expected {CONFIG_TTA_RUNS[0]} to {CONFIG_TTA_RUNS[-1]}, "
                        f"found {number}")
    value = document.get("density_normalisation")
    if isinstance(value, str) and value not in DENSITY_PROCESSING:
        problems.append(f"key 'density_normalisation': expected one of {list(DENSITY_PROCESSING)}, "
                        f"found {json.dumps(value)}")
    value = document.get("label_method")
    if isinstance(value, str) and value not in LABEL_METHODS:
        problems.append(f"key 'label_method': expected one of {list(LABEL_METHODS)}, found {json.dumps(value)}")
    value = document.get("GPUS")
    if isinstance(value, str):
        try:
            parse_gpus(value, key="GPUS")
        except ConfigError as exc:
            problems.append(str(exc).replace("GPUS:", "key 'GPUS':", 1))
    return problems


def config_from_dict(document: Mapping[str, Any], base_dir: str | os.PathLike = ".", source: str = "configuration") -> ProjectConfig:
    """Validate ``document`` and build a :class:`ProjectConfig`.

    Raises
    ------
    ConfigError
        Listing every problem at once, on one line.
    """
    problems = validate_config(dict(document) if isinstance(document, Mapping) else document)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    values: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for key, value in document.items():
        if key in _USED_KEYS:
            kind = _USED_KEYS[key][0]
            if kind == "list[str]":
                value = tuple(value)
            elif kind == "float":
                value = float(value)
            values[key] = value
        else:
            legacy[key] = value
    return ProjectConfig(**values, legacy=MappingProxyType(legacy), base_dir=str(base_dir))


def load_config(path: str | os.PathLike = CONFIG_FILENAME) -> ProjectConfig:
    """Read and validate a ``project_configuration.json``.

    Raises
    ------
    ConfigError
        When the file is missing, is not JSON, or has unknown keys or wrong types.
    """
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no project configuration here (run 'pom init' to create one)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at position {exc.start}); "
                          "save it as UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a configuration (JSON nested too deeply)") from None
    return config_from_dict(document, base_dir=path.parent, source=str(path))


def default_config_dict() -> dict[str, Any]:
    """Pom's defaults plus ours, as written by ``pom init``."""
    return {key: (list(default) if isinstance(default, tuple) else default) for key, (_, default) in _USED_KEYS.items()}


def write_config(config: ProjectConfig, path: str | os.PathLike) -> None:
    """Write ``config`` atomically as JSON (Pom's layout)."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")


def init_project(folder: str | os.PathLike = ".", gpus: str | None = None) -> Path:
    """Write a default ``project_configuration.json`` in ``folder`` unless one exists.

    ``gpus``: the ``GPUS`` value to write (default: Pom's ``"0"``; ``pom init`` writes ``"cpu"``
    on a machine without an NVIDIA driver).
    """
    path = Path(folder) / CONFIG_FILENAME
    if path.exists():
        raise ConfigError(f"{path}: already exists; edit it or remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)  # `pom --project new_project init`
    settings = default_config_dict() if gpus is None else {**default_config_dict(), "GPUS": gpus}
    config = config_from_dict(settings, base_dir=folder)
    write_config(config, path)
    return path


def replace(config: ProjectConfig, **changes: Any) -> ProjectConfig:
    """Return a copy of ``config`` with ``changes`` (the original is untouched)."""
    return dataclasses.replace(config, **changes)
