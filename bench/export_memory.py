"""Peak memory of exporting a default-size network (64 filters, depth 4): in training, and ``pom export``.

``python bench/export_memory.py FOLDER`` makes a project in FOLDER with one network (built,
compiled with Adam, fitted one step) and saves and exports it as training does
(:func:`pom_training.export.exporter.save_and_export`), measuring what that step adds to the
process's peak resident memory (VmHWM reset before it); then it runs ``pom export -o
Mitochondrion`` in the project under ``/usr/bin/time -v``. Prints one JSON line (MiB, s).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FEATURE = "Mitochondrion"


def make_project(folder: Path, filters: int = 64, depth: int = 4) -> dict:
    """A project whose ``models/phase1/<FEATURE>.keras`` is a default-size network saved as training saves it."""
    import keras
    import numpy as np

    from pom_common.config import ProjectConfig
    from pom_common.layout import ProjectLayout
    from pom_training.export.exporter import save_and_export
    from pom_training.export.metadata import model_metadata
    from pom_training.fitting.config import TrainConfig
    from pom_training.models.unet import build_unet

    folder.mkdir(parents=True, exist_ok=True)
    settings = {"ontologies": [FEATURE], "macromolecules": ["Density"], "model_base_filters": filters,
                "model_depth": depth, "GPUS": "cpu"}
    (folder / "project_configuration.json").write_text(json.dumps(settings))
    config = ProjectConfig(ontologies=(FEATURE,), macromolecules=("Density",), base_dir=str(folder))
    keras.utils.set_random_seed(0)
    model = build_unet(1, 1, filters, depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 1)).astype(np.float32)
    model.train_on_batch(x, (x > 0).astype(np.float32))  # the optimizer's state exists, as after training
    meta = model_metadata(config, "single", (FEATURE,), TrainConfig(1, 2, filters, depth), 10.0)
    layout = ProjectLayout.of(config)
    keras_path = layout.single_model(FEATURE, ".keras")
    keras_path.parent.mkdir(parents=True, exist_ok=True)
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    save_and_export(model, keras_path, layout.single_model(FEATURE), layout.single_checkpoint(FEATURE), meta,
                    f"pom export -o {FEATURE}")
    weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    return {"keras": keras_path, "weights_mib": weights / 2**20, "training_rss_mib": before,
            "training_export_peak_mib": _status()["VmHWM"], "training_export_s": time.perf_counter() - start}


def _status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def measure(folder: Path) -> dict:
    """Run ``pom export -o FEATURE`` in ``folder`` under ``/usr/bin/time -v``: peak RSS (MiB) and wall time (s)."""
    pom = Path(sys.executable).parent / "pom"
    done = subprocess.run(["/usr/bin/time", "-v", str(pom), "--project", str(folder), "export", "-o", FEATURE],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pom export failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    return {"peak_mib": peak / 1024, "wall_s": seconds, "output": done.stdout + done.stderr}


def main(folder: str, filters: int = 64, depth: int = 4) -> None:
    made = make_project(Path(folder), filters, depth)
    result = measure(Path(folder))
    onnx_path = made.pop("keras").with_suffix(".onnx")
    print(json.dumps({**made, "peak_mib": result["peak_mib"], "wall_s": result["wall_s"],
                      "keras_mib": onnx_path.with_suffix(".keras").stat().st_size / 2**20,
                      "onnx_mib": onnx_path.stat().st_size / 2**20}))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:4]))
