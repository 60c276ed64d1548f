"""Dice of the reduced precisions on the `make quality` project (the shared network of one method and seed).

Trains that network once (``quality/``, reused by later runs), then scores it against the
held-out tomograms' dense labels with float32, float16 and int8 (ONNX Runtime, and OpenVINO
when installed), each calibrated/checked as ``pom-infer --precision`` does.
"""

from __future__ import annotations

import logging
from pathlib import Path


def dice_by_precision(folder: Path, method: str = "direct", seed: int = 0, project_name: str = "cell") -> dict:
    from pom_common.config import CONFIG_FILENAME, load_config
    from pom_common.layout import ProjectLayout
    from pom_inference import precision
    from pom_inference.prefetch import sample_inputs
    from pom_inference.preprocess import pad_to_multiple
    from pom_inference.session import load_model
    from pom_tools import quality
    from pom_training.evaluation.evaluate import evaluate_labels

    logging.getLogger("pom_training").setLevel(logging.WARNING)
    logging.getLogger("pom_tools").setLevel(logging.WARNING)
    quality.run(folder, [seed], [method], report=None, projects=(project_name,))
    project = folder / project_name / "project"
    config = load_config(folder / project_name / "runs" / f"{method}_seed{seed}" / CONFIG_FILENAME)
    path = ProjectLayout.of(config).shared_model()
    stems = sorted(p.name[: -len("__labels.mrc")] for p in (project / "ground_truth").glob("*__labels.mrc")
                   if (project / "test" / f"{p.name[: -len('__labels.mrc')]}.mrc").is_file())
    fp32 = load_model(path, quiet=True)
    channel_dirs = (config.macromolecule_path,)
    first = project / "test" / f"{stems[0]}.mrc"
    sample = sample_inputs(first, fp32.info, (first.parent, *channel_dirs), config.apix, precision.SAMPLE_SLICES)
    sample = pad_to_multiple(sample, fp32.info.size_multiple)[0].copy()
    variants = {"fp32": fp32, "fp16": precision.variant(fp32, "fp16", sample)}
    if precision.openvino_available():
        variants["int8-openvino"] = precision.variant(fp32, "int8", sample)
        with _without_openvino(precision):
            variants["int8"] = precision.variant(fp32, "int8", sample)
    else:
        variants["int8"] = precision.variant(fp32, "int8", sample)
    rows = {}
    reference = fp32.run(sample)
    for name, model in variants.items():
        total = None
        for stem in stems:
            labels = project / "ground_truth" / f"{stem}__labels.mrc"
            scores = evaluate_labels(model, labels, project / "test" / f"{stem}.mrc", config,
                                     config.shared_model_runs_per_volume, channel_dirs)
            total = scores if total is None else total.merge(scores)
        agreement = precision.compare(reference, model.run(sample))
        gate = precision.GATES.get(name.split("-")[0])
        rows[name] = {"dice": total.mean("dice"), "agreement": agreement,
                      "gate": "-" if gate is None else ("passes" if agreement.passes(gate) else "fails")}
    return {"project": project_name, "method": method, "seed": seed, "network": dict(fp32.info.training), "tomograms": stems, "rows": rows}


class _without_openvino:
    """Make :func:`pom_inference.precision.openvino_available` say no inside the block."""

    def __init__(self, module) -> None:
        self.module = module

    def __enter__(self):
        self.saved = self.module.openvino_available
        self.module.openvino_available = lambda: False

    def __exit__(self, *exc) -> None:
        self.module.openvino_available = self.saved
