"""``make demo``: the whole workflow on synthetic data, scored against ground truth.

    python -m pom_training.demo [--folder demo] [--full]

Generates a project under ``demo/``, runs ``pom single initialize``, ``single train -all 1``,
``single test`` per feature, ``shared initialize``, ``shared train``, ``shared process`` with
two workers, then scores the held-out tomograms: a Dice table per class for the single
networks and the shared network, ``demo/report.json`` and PNG previews under ``demo/``.
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
from pom_common.constants import UNKNOWN
from pom_common.mrcio import read_volume

from .scoring import bin_labels, dice, feature_colours, overlay_png
from .synthetic import CLASSES, PALETTE, write_project

logger = logging.getLogger(__name__)

#: Tiny settings: the same code path as a GPU run, sized for a 2-core CPU.
TINY = {"model_base_filters": 8, "model_depth": 3, "single_model_epochs": 8, "single_model_batch_size": 32,
        "shared_model_epochs": 12, "shared_model_batch_size": 32, "shared_model_runs_per_volume": 4, "GPUS": "cpu"}


def score(project: Path, stems: list[str], classes: tuple[str, ...]) -> dict:
    """Dice per class on held-out tomograms: single networks (p > 0.5) and shared (argmax)."""
    single = {c: [] for c in classes}
    shared = {c: [] for c in classes}
    for stem in stems:
        truth = bin_labels(np.asarray(read_volume(project / "ground_truth" / f"{stem}__labels.mrc").data),
                           len(CLASSES))
        for c in classes:
            p = np.asarray(read_volume(project / "test" / f"{stem}__{c}.mrc").data)
            single[c].append((p > 0.5, truth == CLASSES.index(c)))
        names = (*classes, UNKNOWN)
        probs = np.stack([np.asarray(read_volume(project / "output" / f"{stem}__{n}.mrc").data) for n in names], -1)
        winner = probs.argmax(-1)
        for i, c in enumerate(classes):
            shared[c].append((winner == i, truth == CLASSES.index(c)))

    def pooled(pairs):
        pred = np.concatenate([p.ravel() for p, _ in pairs])
        true = np.concatenate([t.ravel() for _, t in pairs])
        return round(dice(pred, true), 4)

    return {"single": {c: pooled(single[c]) for c in classes}, "shared": {c: pooled(shared[c]) for c in classes}}


def previews(project: Path, folder: Path, stems: list[str], classes: tuple[str, ...], z_sum: int) -> list[Path]:
    """PNG previews of the shared network's output and of the truth, for each held-out tomogram."""
    from .preview import preview_tomogram

    colours = {**PALETTE, **feature_colours()}
    out = []
    for stem in stems:
        out.append(preview_tomogram(project / "tomograms" / f"{stem}.mrc", project / "output", (*classes, UNKNOWN),
                                    folder / f"{stem}_shared.png", z_sum, colours))
        # Ground truth, for comparison.
        from pom_common.zfilter import zfilter_bin

        truth = bin_labels(np.asarray(read_volume(project / "ground_truth" / f"{stem}__labels.mrc").data), len(CLASSES))
        z = truth.shape[0] // 2
        density = zfilter_bin(read_volume(project / "tomograms" / f"{stem}.mrc").data, z_sum)[z]
        overlay_png(folder / f"{stem}_truth.png", density, {c: truth[z] == CLASSES.index(c) for c in classes}, colours)
    return out


def run(folder: Path, full: bool = False, seed: int = 2026, label_method: str | None = None) -> dict:
    """Generate the project in ``folder``, run the whole workflow, return the report.

    ``label_method`` overrides the configuration's default (e.g. "pom" for Pom's algorithm).
    """
    from .cli import main as pom

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
    report["label_method"] = json.loads((project / "project_configuration.json").read_text())["label_method"]
    pngs = previews(project, folder, stems["test"], CLASSES, 2)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'class':<15}{'single':>8}{'shared':>8}")
    for c in CLASSES:
        print(f"{c:<15}{report['single'][c]:>8.3f}{report['shared'][c]:>8.3f}")
    print(f"\n{len(stems['test'])} held-out tomograms, {report['seconds']:.0f} s in all; report: "
          f"{folder / 'report.json'}; previews: {', '.join(str(p) for p in pngs)}")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m pom_training.demo``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pom-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="demo")
    parser.add_argument("--full", action="store_true", help="the configuration's default (GPU) settings")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label-method", default=None, help="override the configuration's label_method, e.g. pom")
    args = parser.parse_args(argv)
    from pom_common.log import configure_logging

    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    run(folder, full=args.full, seed=args.seed, label_method=args.label_method)
    return 0


if __name__ == "__main__":
    sys.exit(main())
