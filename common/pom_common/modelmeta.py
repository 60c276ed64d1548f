"""The metadata every exported ONNX model carries, so it can be used without the project.

Stored as one JSON document under the ONNX ``metadata_props`` key ``pom``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .constants import BIN_FACTOR, MAX_Z_SMOOTH, MAX_Z_SUM, METADATA_VERSION
from .errors import ModelError
from .naming import name_problem
from .normalise import PROCESSING, canonical, processing_normalisation

METADATA_KEY = "pom"


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects and produces."""

    kind: str  # "single" or "shared"
    classes: tuple[str, ...]  # output channels, in order
    channels: tuple[str, ...]  # input channels, in order ("Density" = the tomogram)
    z_sum: int
    bin_factor: int = BIN_FACTOR
    normalisation: dict[str, str] = field(default_factory=dict)  # channel -> pom_common.normalise name
    normalisation_window: int = 64  # binned pixels: the training crop size, for standardise_local
    size_multiple: int = 16
    voxel_size: float = 0.0  # unbinned voxel size (A) of the training tomograms
    training: dict[str, Any] = field(default_factory=dict)
    #: Output slices averaged over this many binned slices (odd; 1: none, and the key is left out).
    z_smooth: int = 1
    version: str = ""
    metadata_version: str = METADATA_VERSION

    def to_json(self) -> str:
        """The JSON document stored under the ONNX metadata key ``pom``."""
        doc = asdict(self)
        doc["classes"], doc["channels"] = list(self.classes), list(self.channels)
        if self.z_smooth == 1:  # models without z-smoothing carry the metadata they always did
            del doc["z_smooth"]
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str | None, source: str) -> ModelInfo:
        """Parse and check the metadata of the model file ``source``.

        Raises
        ------
        ModelError
            Naming ``source``, when the metadata is missing or malformed.
        """
        if text is None:
            raise ModelError(f"{source}: an ONNX model without Pom metadata (export it with 'pom single train' "
                             "or 'pom shared train')")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise ModelError(f"{source}: Pom metadata is not JSON") from None
        if not isinstance(doc, dict):
            raise ModelError(f"{source}: Pom metadata is not a JSON object")
        problems: list[str] = []

        def integer(key: str, low: int, high: int, default: int | None = None) -> int:
            value = doc.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{key} must be an integer from {low} to {high}, found {json.dumps(value)}")
                return low
            return value

        def names(key: str) -> tuple[str, ...]:
            value = doc.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                problems.append(f"{key} must be a non-empty list of names, found {json.dumps(value)[:80]}")
                return ()
            for name in value:
                problem = name_problem(name)
                if problem:
                    problems.append(f"{key}: {problem}")
            if len(set(value)) != len(value):
                problems.append(f"{key} lists a name twice: {value}")
            return tuple(value)

        kind = doc.get("kind")
        if kind not in ("single", "shared"):
            problems.append(f"kind must be 'single' or 'shared', found {json.dumps(kind)}")
        classes, channels = names("classes"), names("channels")
        z_sum = integer("z_sum", 0, MAX_Z_SUM)
        bin_factor = integer("bin_factor", 1, 8, BIN_FACTOR)
        window = integer("normalisation_window", 1, 1_000_000, 64)
        multiple = integer("size_multiple", 1, 1024)
        z_smooth = integer("z_smooth", 1, MAX_Z_SMOOTH, 1)
        if z_smooth % 2 == 0:
            problems.append(f"z_smooth must be odd (slices averaged around each one), found {z_smooth}")
        voxel = doc.get("voxel_size", 0.0)
        if isinstance(voxel, bool) or not isinstance(voxel, (int, float)) or not (math.isfinite(voxel) and voxel >= 0):
            problems.append(f"voxel_size must be a number >= 0, found {json.dumps(voxel)}")
            voxel = 0.0
        raw_norm = doc.get("normalisation", {})
        normalisation: dict[str, str] = {}
        if not isinstance(raw_norm, dict) or not all(isinstance(v, str) for v in raw_norm.values()):
            problems.append("normalisation must map channel names to names")
        else:
            normalisation = {str(k): canonical(v) for k, v in raw_norm.items()}
            for channel in channels:
                how = normalisation.get(channel, processing_normalisation(channel))
                if how not in PROCESSING:
                    problems.append(f"normalisation of {channel!r} is {how!r}, expected one of {list(PROCESSING)}")
        training = doc.get("training", {})
        if problems:
            raise ModelError(f"{source}: Pom metadata: " + "; ".join(problems))
        return cls(kind=str(kind), classes=classes, channels=channels, z_sum=z_sum, bin_factor=bin_factor,
                   normalisation=normalisation, normalisation_window=window, size_multiple=multiple,
                   voxel_size=float(voxel), training=dict(training) if isinstance(training, dict) else {},
                   z_smooth=z_smooth,
                   version=str(doc.get("version", "")), metadata_version=str(doc.get("metadata_version", METADATA_VERSION)))

    def normalisation_of(self, channel: str) -> str:
        """How processing scales ``channel`` (see :mod:`pom_common.normalise`)."""
        return self.normalisation.get(channel, processing_normalisation(channel))
