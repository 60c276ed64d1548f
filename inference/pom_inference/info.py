"""``pom-infer info``: what a model expects and produces, for people (``--json``: the metadata itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pom_common.modelmeta import ModelInfo

#: How each normalisation name reads (pom_common.normalise).
NORMALISATIONS = {"local": "standardised per training-crop-sized window", "volume": "standardised over the volume",
                  "uint8": "0..255 scaled to -1..1"}


def info_lines(path: str | Path, info: ModelInfo) -> list[str]:
    """The readable summary of a model's metadata."""
    path = Path(path)
    t = info.training
    kind = "shared network" if info.kind == "shared" else "single network"
    size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "?"
    voxel = (f"{info.voxel_size:.3g} Å voxels (the network sees {info.voxel_size * info.bin_factor:.3g} Å pixels: "
             f"tomograms binned {info.bin_factor}x)") if info.voxel_size else "not recorded"
    window = 2 * info.z_sum + 1
    lines = [f"{path}: {kind}, {len(info.classes)} class{'es' if len(info.classes) != 1 else ''}: "
             + ", ".join(info.classes),
             f"  inputs      {', '.join(info.channels)} ({window} slice{'s' if window != 1 else ''} averaged "
             f"(z_sum {info.z_sum}), binned {info.bin_factor}x, padded to a multiple of {info.size_multiple} pixels)",
             "  scaling     " + "; ".join(f"{c}: {_normalisation(info, c)}" for c in info.channels),
             f"  trained at  {voxel}"]
    if info.z_smooth > 1:
        lines.append(f"  outputs     each slice the mean of {info.z_smooth} neighbouring binned slices' probabilities "
                     "(z_smooth)")
    trained = [f"label_method {t['label_method']}" if t.get("label_method") else None,
               _count(t.get("epochs"), "epoch"), f"batch {t['batch_size']}" if "batch_size" in t else None,
               f"learning rate {t['learning_rate']:g}" if isinstance(t.get("learning_rate"), (int, float)) else None,
               f"{t['base_filters']} filters, depth {t['depth']}" if "base_filters" in t and "depth" in t else None,
               f"seed {t['seed']}" if "seed" in t else None, _count(t.get("images"), "image"),
               _last_loss(t.get("losses"))]
    lines.append("  training    " + (", ".join(x for x in trained if x) or "not recorded"))
    if t.get("continued_from"):
        lines.append(f"  continued   from {t['continued_from']}")
    lines.append(f"  file        {size}, made by pom-onnx {info.version or '?'} (metadata version {info.metadata_version})")
    return lines


def _normalisation(info: ModelInfo, channel: str) -> str:
    how = info.normalisation_of(channel)
    text = NORMALISATIONS.get(how, how)
    return f"{text} ({info.normalisation_window} px)" if how == "local" else text


def _count(value: Any, word: str) -> str | None:
    return f"{value} {word}{'s' if value != 1 else ''}" if isinstance(value, int) else None


def _last_loss(losses: Any) -> str | None:
    if isinstance(losses, list) and losses and isinstance(losses[-1], (int, float)):
        return f"final loss {losses[-1]:.4g}"
    return None
