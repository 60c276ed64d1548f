"""The metadata every exported ONNX model carries, so it can be used without the project.

Stored as one JSON document under the ONNX ``metadata_props`` key ``pom``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .constants import BIN_FACTOR, METADATA_VERSION
from .errors import ModelError
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
    version: str = ""
    metadata_version: str = METADATA_VERSION

    def to_json(self) -> str:
        """The JSON document stored under the ONNX metadata key ``pom``."""
        doc = asdict(self)
        doc["classes"], doc["channels"] = list(self.classes), list(self.channels)
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
            info = cls(
                kind=str(doc["kind"]), classes=tuple(str(c) for c in doc["classes"]),
                channels=tuple(str(c) for c in doc["channels"]), z_sum=int(doc["z_sum"]),
                bin_factor=int(doc.get("bin_factor", BIN_FACTOR)),
                normalisation={str(k): canonical(str(v)) for k, v in dict(doc.get("normalisation", {})).items()},
                normalisation_window=int(doc.get("normalisation_window", 64)),
                size_multiple=int(doc["size_multiple"]), voxel_size=float(doc.get("voxel_size", 0.0)),
                training=dict(doc.get("training", {})), version=str(doc.get("version", "")),
                metadata_version=str(doc.get("metadata_version", METADATA_VERSION)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source}: Pom metadata is malformed ({type(exc).__name__}: {exc})") from None
        if info.kind not in ("single", "shared") or not info.classes or not info.channels:
            raise ModelError(f"{source}: Pom metadata is malformed (kind {info.kind!r}, classes {info.classes}, "
                             f"channels {info.channels})")
        for channel in info.channels:
            if info.normalisation_of(channel) not in PROCESSING:
                raise ModelError(f"{source}: unknown normalisation for channel {channel!r}")
        if info.normalisation_window < 1:
            raise ModelError(f"{source}: normalisation_window must be >= 1")
        return info

    def normalisation_of(self, channel: str) -> str:
        """How processing scales ``channel`` (see :mod:`pom_common.normalise`)."""
        return self.normalisation.get(channel, processing_normalisation(channel))
