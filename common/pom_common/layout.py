"""Where a Pom project keeps its training data and models (Pom's layout).

::

    training_datasets/phase1/<feature>_y.tif, <feature>_<channel>.tif, <feature>_painted.tif, info.json
    training_datasets/phase1/extra/<channel>.tif, painted.tif
    training_datasets/phase2/in_<channel>.tif, out_<class>.tif, info.json
    models/phase1/<feature>.keras, <feature>.onnx, <feature>.metadata.json
    models/phase2/shared.keras, shared.onnx, shared.metadata.json

and, beside a project's results, ``<output_dir>/previews/<tomogram>.png`` and
``<test_dir>/<model>_evaluation.json``. Every module that reads or writes these files asks
this one for the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import ProjectConfig

#: The label stack's "channel" name in phase 1 (``<feature>_y.tif``).
LABEL = "y"
#: The painted code maps' "channel" name in phase 1 (``<feature>_painted.tif``, ``extra/painted.tif``).
PAINTED = "painted"
#: Folder of the extra crops, inside the phase-1 folder.
EXTRA = "extra"
#: Name of the shared network's files.
SHARED = "shared"
#: Suffix of the metadata file written beside a network's ``.keras`` file.
METADATA_SUFFIX = ".metadata.json"
#: Record of how a folder of stacks was made.
INFO = "info.json"
#: Folder of the PNG previews, inside a segmentation folder.
PREVIEWS = "previews"


@dataclass(frozen=True)
class ProjectLayout:
    """Paths of one project's generated files, resolved against its folder."""

    root: Path

    @classmethod
    def of(cls, config: ProjectConfig) -> ProjectLayout:
        """The layout of the project ``config`` was loaded from."""
        return cls(config.path())

    # ------------------------------------------------------------------ training data

    @property
    def phase1(self) -> Path:
        """Folder of the phase-1 stacks (Pom's)."""
        return self.root / "training_datasets" / "phase1"

    @property
    def phase2(self) -> Path:
        """Folder of the phase-2 stacks (Pom's)."""
        return self.root / "training_datasets" / "phase2"

    def phase1_stack(self, feature: str, channel: str) -> Path:
        """``<feature>_<channel>.tif``; ``channel`` :data:`LABEL` is the label stack."""
        return self.phase1 / f"{feature}_{channel}.tif"

    def phase1_label(self, feature: str) -> Path:
        """``<feature>_y.tif``."""
        return self.phase1_stack(feature, LABEL)

    def phase1_painted(self, feature: str) -> Path:
        """``<feature>_painted.tif``: the painted code map of every crop of ``feature``."""
        return self.phase1_stack(feature, PAINTED)

    def phase1_extra(self, channel: str) -> Path:
        """``extra/<channel>.tif``; ``channel`` :data:`PAINTED` is the extra crops' code maps."""
        return self.phase1 / EXTRA / f"{channel}.tif"

    @property
    def phase1_info(self) -> Path:
        """``info.json``: the voxel size of every training tomogram, the painted classes, the crops."""
        return self.phase1 / INFO

    def phase1_features(self) -> list[str]:
        """Features that have a phase-1 label stack, sorted."""
        suffix = f"_{LABEL}.tif"
        return sorted(p.name[: -len(suffix)] for p in self.phase1.glob(f"*{suffix}"))

    def phase2_input(self, channel: str) -> Path:
        """``in_<channel>.tif``."""
        return self.phase2 / f"in_{channel}.tif"

    def phase2_output(self, name: str) -> Path:
        """``out_<class>.tif`` (one-hot joint labels)."""
        return self.phase2 / f"out_{name}.tif"

    @property
    def phase2_info(self) -> Path:
        """``info.json``: how the phase-2 stacks were made (absent: made by Pom)."""
        return self.phase2 / INFO

    # ------------------------------------------------------------------ models

    @property
    def models1(self) -> Path:
        """Folder of the single-feature networks."""
        return self.root / "models" / "phase1"

    @property
    def models2(self) -> Path:
        """Folder of the shared network."""
        return self.root / "models" / "phase2"

    def single_model(self, feature: str, suffix: str = ".onnx") -> Path:
        """``models/phase1/<feature><suffix>`` (``.onnx``, ``.keras``)."""
        return self.models1 / f"{feature}{suffix}"

    def single_checkpoint(self, feature: str) -> Path:
        """The best-so-far weights while ``feature`` trains."""
        return self.models1 / f"{feature}_checkpoint.keras"

    def shared_model(self, suffix: str = ".onnx") -> Path:
        """``models/phase2/shared<suffix>``."""
        return self.models2 / f"{SHARED}{suffix}"

    def shared_checkpoint(self) -> Path:
        """The best-so-far weights while the shared network trains."""
        return self.models2 / f"{SHARED}_checkpoint.keras"


def metadata_path(model: str | Path) -> Path:
    """``<folder>/<name>.metadata.json`` for the network ``<folder>/<name>.keras`` (or ``.onnx``)."""
    model = Path(model)
    return model.with_name(model.stem + METADATA_SUFFIX)


def evaluation_path(folder: str | Path, model: str | Path) -> Path:
    """``<folder>/<model name>_evaluation.json``: where ``pom evaluate`` writes its scores unless told."""
    return Path(folder) / f"{Path(model).stem}_evaluation.json"


def previews_folder(outputs: str | Path) -> Path:
    """``<outputs>/previews``: the PNG previews of a segmentation folder."""
    return Path(outputs) / PREVIEWS


def preview_path(outputs: str | Path, stem: str) -> Path:
    """``<outputs>/previews/<stem>.png``: the preview of one processed tomogram."""
    return previews_folder(outputs) / f"{stem}.png"
