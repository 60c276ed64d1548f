"""``make quality``: every label method, several seeds, on a harder synthetic project.

    python -m pom_training.quality [--folder quality] [--seeds 0,1,2] [--methods pom,painted,direct,dense]

Generates the cell project (:mod:`pom_training.synthetic_cell`: 7 classes, raw contrast, an
int8 tomogram, Ais-like annotations on 2-3 slices per tomogram), samples phase 1 once, then
for every method and seed trains in its own run folder (sharing the phase-1 stacks) and
scores the shared network on the held-out tomograms against their dense labels
(``pom evaluate --labels``) and against their annotations in ``test/``. ``dense`` is the
upper bound: the "direct" method on the same boxes with every class painted everywhere on
the annotated slices. Results go to ``<folder>/results.json`` (kept between runs: a run
already there is not repeated unless ``--again``) and a table of mean +- sd Dice per class
and method to ``docs/quality.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pom_common.atomic import atomic_write_text
from pom_common.config import ProjectConfig, config_from_dict, load_config, write_config
from pom_common.constants import CONFIG_FILENAME
from pom_common.layout import ProjectLayout
from pom_common.log import configure_logging
from pom_common.mrcio import read_volume
from pom_common.naming import feature_filename, source_stem
from pom_training.evaluation.evaluate import run_evaluate
from pom_training.fitting.config import TrainConfig
from pom_training.labels.registry import METHODS as LABEL_METHODS
from pom_training.prepare import initialize_phase1, initialize_phase2
from pom_training.train import train_shared, train_single

from .aisfile import AisFeature, write_ais_pickle
from .cell_project import plan_cell_annotation, write_cell_project
from .synthetic import LABELS
from .synthetic_cell import CELL_CLASSES, CELL_PALETTE, CELL_VOXEL_SIZE

logger = logging.getLogger(__name__)

#: CPU-sized settings for every method (the same network and budget for each).
QUALITY = {"model_base_filters": 8, "model_depth": 3, "single_model_epochs": 6, "single_model_batch_size": 32,
           "shared_model_epochs": 30, "shared_model_batch_size": 32, "shared_model_runs_per_volume": 4,
           "GPUS": "cpu"}
#: The upper bound: this label method on the same boxes with every class painted on the whole annotated slices.
DENSE, DENSE_METHOD = "dense", "direct"
#: The method the others are compared with: Pom's.
REFERENCE = "pom"
#: Every label method, then the upper bound.
METHODS = (*LABEL_METHODS, DENSE)
#: What each method is, for the report.
DESCRIPTIONS = {**{name: method.description for name, method in LABEL_METHODS.items()},
                DENSE: f"upper bound: '{DENSE_METHOD}' on the same boxes with every class painted on the whole "
                       "annotated slices"}


def run_config(base: ProjectConfig, folder: Path, method: str, data: Path) -> ProjectConfig:
    """A run folder's configuration: the project's data by absolute path, its own outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    config = replace(base, base_dir=str(folder), root="", tomogram_dir=str(data / "tomograms"),
                     macromolecule_dir=str(data / "macromolecules"), test_dir=str(data / "test"),
                     output_dir="output", label_method=DENSE_METHOD if method == DENSE else method)
    write_config(config, folder / CONFIG_FILENAME)
    return config


def link_phase1(source: ProjectConfig, target: Path) -> None:
    """Share ``source``'s phase-1 stacks with a run folder (a symbolic link)."""
    link = ProjectLayout(target).phase1
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink():
            link.unlink()
        else:
            shutil.rmtree(link)
    link.symlink_to(ProjectLayout.of(source).phase1.resolve(), target_is_directory=True)


def write_dense_project(project: Path, dense: Path, seed: int, box: int, z_sum: int) -> None:
    """The upper bound's annotations: the same boxes, every class painted on whole annotated slices."""
    (dense / "tomograms").mkdir(parents=True, exist_ok=True)
    for i, tomogram in enumerate(sorted((project / "tomograms").glob("*.mrc"))):
        stem = tomogram.stem
        labels = np.asarray(read_volume(project / "ground_truth" / feature_filename(stem, LABELS)).data)
        features = plan_cell_annotation(labels, seed + 500 + i, box, z_sum)
        slices = sorted({z for f in features for z in f.boxes})
        dense_features = []
        for k, title in enumerate(CELL_CLASSES):
            boxes = next((f.boxes for f in features if f.title == title), {})
            masks = {z: (labels[z] == k).astype(np.uint8) for z in slices}
            dense_features.append(AisFeature(title, boxes, masks, CELL_PALETTE[title], box))
        link = dense / "tomograms" / tomogram.name
        if not link.exists():
            link.symlink_to(tomogram.resolve())
        write_ais_pickle(dense / "tomograms" / f"{stem}.scns", tomogram, labels.shape, dense_features,
                         CELL_VOXEL_SIZE / 10)


def train_method(config: ProjectConfig, method: str, seed: int) -> None:
    """Train the shared network of one method with one seed, as the ``pom`` commands do, on the CPU.

    ``single train -all 1`` (not for "direct"), ``shared initialize``, ``shared train``; the
    configuration's ``label_method`` selects the method.
    """
    assert config.label_method == method, (config.label_method, method)
    if LABEL_METHODS[method].uses_single_networks:
        for feature in config.ontologies:
            train_single(config, feature, tc=replace(TrainConfig.single(config), seed=seed))
    initialize_phase2(config, progress=False)
    train_shared(config, tc=replace(TrainConfig.shared(config), seed=seed))


def score_run(config: ProjectConfig, project: Path, stems: list[str]) -> dict:
    """Dice per class of the run's shared network: dense labels, and the test annotations."""
    model = ProjectLayout.of(config).shared_model()
    labels = [project / "ground_truth" / feature_filename(s, LABELS) for s in stems]
    tomograms = [project / "test" / f"{s}.mrc" for s in stems]
    dense = run_evaluate(config, model, labels=labels, tomograms=tomograms)
    annotated = run_evaluate(config, model)
    return {"dense": {c: dense.dice(c) for c in dense.classes}, "mean": dense.mean("dice"),
            "annotations": {c: annotated.dice(c) for c in annotated.classes}, "annotations_mean": annotated.mean("dice")}


def run(folder: Path, seeds: list[int], methods: list[str], again: bool = False, project_seed: int = 1607,
        settings: dict | None = None, report: Path | None = Path("docs", "quality.md")) -> dict:
    """Generate (once), train every method x seed not yet in the results, score, write the report."""
    folder.mkdir(parents=True, exist_ok=True)
    project = folder / "project"
    results_path = folder / "results.json"
    settings = {**QUALITY, **(settings or {})}
    results = json.loads(results_path.read_text()) if results_path.is_file() and not again else {}
    if results.get("settings") != settings or results.get("project_seed") != project_seed:
        results = {"settings": settings, "project_seed": project_seed, "runs": {}}
    if not (project / CONFIG_FILENAME).is_file() or again:
        if project.exists():
            shutil.rmtree(project)
        write_cell_project(project, seed=project_seed, settings=settings)
    base = load_config(project / CONFIG_FILENAME)
    base = config_from_dict({**base.to_dict(), **settings}, base_dir=project)  # this run's settings
    write_config(base, project / CONFIG_FILENAME)
    stems = sorted(source_stem(p) for p in (project / "ground_truth").glob(feature_filename("*", LABELS))
                   if (project / "test" / f"{source_stem(p)}.mrc").is_file())
    phase1 = initialize_phase1(base, progress=False)
    results["phase1"] = {"images": phase1.images, "annotated": phase1.annotated, "dropped": len(phase1.dropped),
                         "extra": len(phase1.extra_crops)}
    dense_config = None
    if DENSE in methods:
        dense = folder / "dense"
        write_dense_project(project, dense, project_seed, base.ontology_annotation_box_size, base.z_sum)
        dense_config = replace(base, base_dir=str(dense), tomogram_dir="tomograms",
                               macromolecule_dir=str(project / "macromolecules"), test_dir=str(project / "test"))
        write_config(dense_config, dense / CONFIG_FILENAME)
        initialize_phase1(dense_config, progress=False)
    for method in methods:
        for seed in seeds:
            key = f"{method}/{seed}"
            if key in results["runs"]:
                continue
            run_folder = folder / "runs" / f"{method}_seed{seed}"
            config = run_config(base, run_folder, method, project)
            link_phase1(dense_config if method == DENSE and dense_config else base, run_folder)
            started = time.perf_counter()
            logger.info("quality: %s, seed %d", method, seed)
            train_method(config, DENSE_METHOD if method == DENSE else method, seed)
            scores = score_run(config, project, stems)
            scores["seconds"] = round(time.perf_counter() - started, 1)
            results["runs"][key] = scores
            atomic_write_text(results_path, json.dumps(results, indent=1) + "\n")
            logger.info("quality: %s seed %d: mean Dice %.3f (%.0f s)", method, seed, scores["mean"], scores["seconds"])
    if report is not None:
        atomic_write_text(report, markdown(results, methods, seeds) + "\n")
    return results


def summary(results: dict, method: str, seeds: list[int], key: str = "dense") -> dict:
    """Mean and sd over seeds, per class and of the mean Dice, for one method."""
    runs = [results["runs"][f"{method}/{s}"] for s in seeds if f"{method}/{s}" in results["runs"]]
    if not runs:
        return {}
    out: dict = {"n": len(runs), "classes": {}}
    for c in CELL_CLASSES:
        values = [r[key][c] for r in runs if r[key].get(c) is not None]
        out["classes"][c] = (float(np.mean(values)), float(np.std(values))) if values else None
    means = [r["mean" if key == "dense" else "annotations_mean"] for r in runs]
    out["mean"] = (float(np.mean(means)), float(np.std(means)))
    out["range"] = float(max(means) - min(means))
    out["seconds"] = float(np.mean([r["seconds"] for r in runs]))
    return out


def markdown(results: dict, methods: list[str], seeds: list[int]) -> str:
    """The report: settings, a table of mean +- sd Dice per class and method, the seed spread, the best method."""
    s = results["settings"]
    lines = ["# Label methods on a harder synthetic project (`make quality`)", "",
             "Generated by `python -m pom_tools.quality` (`make quality`); numbers from the last run.", "",
             f"Project: {len(CELL_CLASSES)} classes ({', '.join(CELL_CLASSES)}), raw contrast (dense = dark), "
             "one training and one test tomogram stored as int8, voxel size 13.7 A; annotations on 2-3 slices "
             "per tomogram with several features per slice, painted inside the boxes plus a margin "
             "(`pom_tools.synthetic_cell`, project seed "
             f"{results['project_seed']}). Phase 1: {sum(results['phase1']['images'].values())} crops ("
             + ", ".join(f"{c} {n}" for c, n in sorted(results['phase1']['images'].items()))
             + f") and {results['phase1'].get('extra', 0)} extra crops.", "",
             f"Settings (every method): U-Net base {s['model_base_filters']} filters, depth {s['model_depth']}; "
             f"single networks {s['single_model_epochs']} epochs, shared network {s['shared_model_epochs']} "
             f"epochs, batch {s['shared_model_batch_size']}; 8-fold augmentation; TTA "
             f"{s['shared_model_runs_per_volume']}. Seeds {', '.join(map(str, seeds))}.", "",
             "Dice of the shared network (argmax) on the two held-out tomograms against their dense labels "
             "(binned 2x by majority), pooled; mean +- sd over seeds.", ""]
    header = "| method | " + " | ".join(CELL_CLASSES) + " | mean Dice | seed range | s/run |"
    lines += [header, "|" + "---|" * (len(CELL_CLASSES) + 4)]
    for method in methods:
        summ = summary(results, method, seeds)
        if not summ:
            continue
        cells = [f"{m:.3f} ± {sd:.3f}" if v is not None else "-" for v in summ["classes"].values()
                 for m, sd in [v or (0, 0)]]
        m, sd = summ["mean"]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | **{m:.3f} ± {sd:.3f}** | {summ['range']:.3f} | "
                     f"{summ['seconds']:.0f} |")
    lines += ["", "Against the held-out tomograms' own Ais-style annotations (`pom evaluate` on `test/`, "
              "pixels inside their boxes), mean Dice:", ""]
    lines += ["| method | mean Dice (annotations) |", "|---|---|"]
    for method in methods:
        summ = summary(results, method, seeds, key="annotations")
        if summ:
            lines.append(f"| {method} | {summ['mean'][0]:.3f} ± {summ['mean'][1]:.3f} |")
    lines += ["", "Methods:", ""]
    lines += [f"* `{m}`: {DESCRIPTIONS[m]}." for m in methods]
    pom = summary(results, REFERENCE, seeds)
    ranked = sorted((summary(results, m, seeds)["mean"][0], m) for m in methods
                    if m not in (REFERENCE, DENSE) and summary(results, m, seeds))
    if pom and ranked:
        best_mean, best = ranked[-1]
        spread = summary(results, best, seeds)
        lines += ["", f"Best method: `{best}`, mean Dice {best_mean:.3f} vs Pom's {pom['mean'][0]:.3f} "
                  f"(+{best_mean - pom['mean'][0]:.3f}); its seed sd {spread['mean'][1]:.3f}, range "
                  f"{spread['range']:.3f} (Pom's: sd {pom['mean'][1]:.3f}, range {pom['range']:.3f})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pom_tools.quality``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pom-quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="quality", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--again", action="store_true", help="regenerate the project and rerun everything")
    parser.add_argument("--report", default="docs/quality.md", help="markdown report ('' for none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. shared_model_epochs=20 (JSON values)")
    args = parser.parse_args(argv)
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    results = run(args.folder, [int(s) for s in args.seeds.split(",")], methods, again=args.again,
                  settings=settings, report=Path(args.report) if args.report else None)
    print(markdown(results, methods, [int(s) for s in args.seeds.split(",")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
