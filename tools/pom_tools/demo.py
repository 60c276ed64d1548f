"""``make demo``: the whole workflow on synthetic data, scored against ground truth.

    python -m pom_tools.demo [--folder demo] [--full]

Generates a project under ``demo/``, runs ``pom single initialize``, ``single train -all 1``,
``single test`` per feature, ``shared initialize``, ``shared train``, ``shared process`` with
two workers, then scores the held-out tomograms: a Dice table per class for the single
networks and the shared network, ``demo/report.json`` and PNG figures under ``demo/``
(density | prediction | truth | errors, for the shared network and each single network).
Tiny model settings by default (minutes on a laptop CPU); ``--full`` uses the
configuration's defaults (a GPU run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_text
from pom_common.constants import CONFIG_FILENAME, UNKNOWN
from pom_common.defaults import THRESHOLD
from pom_common.log import configure_logging
from pom_common.mrcio import read_volume
from pom_common.naming import feature_filename
from pom_training.cli import main as pom
from pom_training.evaluation.metrics import mask_dice
from pom_training.evaluation.preview import preview_tomogram
from pom_training.evaluation.render import feature_colours
from pom_training.evaluation.truth import bin_labels

from .synthetic import CLASSES, LABELS, PALETTE, write_project

logger = logging.getLogger(__name__)

#: Tiny settings: the same code path as a GPU run, sized for a 2-core CPU.
TINY = {"model_base_filters": 8, "model_depth": 3, "single_model_epochs": 8, "single_model_batch_size": 32,
        "shared_model_epochs": 12, "shared_model_batch_size": 32, "shared_model_runs_per_volume": 4, "GPUS": "cpu"}


def _truth(project: Path, stem: str) -> np.ndarray:
    """The held-out tomogram's dense labels, binned like the networks' outputs."""
    return bin_labels(np.asarray(read_volume(project / "ground_truth" / feature_filename(stem, LABELS)).data),
                      len(CLASSES))


def score(project: Path, stems: list[str], classes: tuple[str, ...]) -> dict:
    """Dice per class on held-out tomograms: single networks (p > THRESHOLD) and shared (argmax)."""
    single: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in classes}
    shared: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in classes}
    for stem in stems:
        truth = _truth(project, stem)
        for c in classes:
            p = np.asarray(read_volume(project / "test" / feature_filename(stem, c)).data)
            single[c].append((p > THRESHOLD, truth == CLASSES.index(c)))
        names = (*classes, UNKNOWN)
        probs = np.stack([np.asarray(read_volume(project / "output" / feature_filename(stem, n)).data)
                          for n in names], -1)
        winner = probs.argmax(-1)
        for i, c in enumerate(classes):
            shared[c].append((winner == i, truth == CLASSES.index(c)))

    def pooled(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
        pred = np.concatenate([p.ravel() for p, _ in pairs])
        true = np.concatenate([t.ravel() for _, t in pairs])
        return round(mask_dice(pred, true), 4)

    return {"single": {c: pooled(single[c]) for c in classes}, "shared": {c: pooled(shared[c]) for c in classes}}


def previews(project: Path, folder: Path, stems: list[str], classes: tuple[str, ...], z_sum: int) -> list[Path]:
    """Figures of each held-out tomogram against its ground truth: the shared network's, and each single network's.

    ``<stem>_shared.png`` and ``<stem>_single_<feature>.png``: density | prediction | truth |
    errors, on slices where every class appears, with a legend and a scale bar.
    """
    colours = {**PALETTE, **feature_colours()}
    out = []
    for stem in stems:
        truth = (_truth(project, stem), CLASSES)
        tomogram = project / "tomograms" / f"{stem}.mrc"
        out.append(preview_tomogram(tomogram, project / "output", (*classes, UNKNOWN), folder / f"{stem}_shared.png",
                                    z_sum, colours, truth))
        for c in classes:
            out.append(preview_tomogram(tomogram, project / "test", (c,), folder / f"{stem}_single_{c}.png", z_sum,
                                        colours, truth, single=True))
    return out


def run(folder: Path, full: bool = False, seed: int = 2026, label_method: str | None = None) -> dict:
    """Generate the project in ``folder``, run the whole workflow, return the report.

    ``label_method`` overrides the configuration's default (e.g. "pom" for Pom's algorithm).
    """
    project = folder / "project"
    if project.exists():
        shutil.rmtree(project)
    started = time.perf_counter()
    settings = {} if full else dict(TINY)
    if label_method:
        settings["label_method"] = label_method
    stems = write_project(project, seed=seed, settings=settings)
    logger.info("generated %d training and %d held-out tomograms in %s", len(stems["train"]), len(stems["test"]),
                project)
    p = ["--project", str(project)]
    steps = [["single", "initialize"], ["single", "train", "-all", "1"],
             *[["single", "test", "-o", c] for c in CLASSES],
             ["shared", "initialize", "-selective", "1"], ["shared", "train"], ["shared", "process", "-gpus", "cpu", "-workers", "2"]]
    for step in steps:
        logger.info("$ pom %s", " ".join(step))
        code = pom([*p, *step])
        if code != 0:
            raise SystemExit(f"demo: 'pom {' '.join(step)}' failed with exit code {code}")
    report = score(project, stems["test"], CLASSES)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["settings"] = "full" if full else TINY
    report["label_method"] = json.loads((project / CONFIG_FILENAME).read_text())["label_method"]
    pngs = previews(project, folder, stems["test"], CLASSES, 2)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    print()
    print(f"Dice against the ground truth of {len(stems['test'])} held-out tomograms (1 = perfect; single networks "
          f"called at p > {THRESHOLD:g}, the shared network by argmax):")
    print(f"{'class':<15}{'single':>8}{'shared':>8}")
    for c in CLASSES:
        print(f"{c:<15}{report['single'][c]:>8.3f}{report['shared'][c]:>8.3f}")
    print(f"\n{report['seconds']:.0f} s in all; report: {folder / 'report.json'}; previews ({len(pngs)}): "
          f"{folder}/*_shared.png, {folder}/*_single_*.png")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m pom_tools.demo``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pom-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="demo")
    parser.add_argument("--full", action="store_true", help="the configuration's default (GPU) settings")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label-method", default=None, help="override the configuration's label_method, e.g. pom")
    args = parser.parse_args(argv)
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    run(folder, full=args.full, seed=args.seed, label_method=args.label_method)
    return 0


if __name__ == "__main__":
    sys.exit(main())
