"""File-name rules. The only module that knows about the ``__`` separator."""

from __future__ import annotations

import os
from pathlib import Path

SEPARATOR = "__"
MRC_SUFFIX = ".mrc"


def tomogram_stem(path: str | os.PathLike) -> str:
    """``/a/b/TS_001.mrc`` -> ``TS_001`` (works for .scns and Windows paths too)."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def is_derived(path: str | os.PathLike) -> bool:
    """True for ``TS__Feature.mrc`` files: outputs and channels, never tomograms."""
    return SEPARATOR in Path(path).name


def feature_filename(stem: str, feature: str) -> str:
    """``TS_001`` + ``Membrane`` -> ``TS_001__Membrane.mrc``."""
    return f"{stem}{SEPARATOR}{feature}{MRC_SUFFIX}"


def parse_feature_filename(name: str) -> tuple[str, str] | None:
    """``TS_001__Membrane.mrc`` -> (``TS_001``, ``Membrane``); None for other names."""
    base = Path(name).name
    if not base.endswith(MRC_SUFFIX) or SEPARATOR not in base:
        return None
    stem, feature = base[: -len(MRC_SUFFIX)].rsplit(SEPARATOR, 1)
    return stem, feature


def list_tomograms(folder: str | os.PathLike) -> list[Path]:
    """Tomograms in ``folder``: ``*.mrc`` that are not derived files, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f"*{MRC_SUFFIX}") if not is_derived(p) and p.is_file())
