"""The README's quick start, measured: time, peak memory and disk of each step of a first try on the CPU.

``python bench/first_project.py FOLDER`` writes a synthetic project (pom_tools.synthetic: 3 annotated
tomograms and 2 held-out ones of 48 x 192 x 192, 3 input channels, 4 features) with the
README's first-try settings, runs the five commands of the quick start one after another, each
under ``/usr/bin/time -v``, then segments one tomogram of a typical size (200 x 960 x 928
float32, with its two channels) with the network it trained. Prints a markdown table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

#: The README's first try on a CPU (everything else: the configuration's defaults).
FIRST_TRY = {"GPUS": "cpu", "model_base_filters": 16, "shared_model_epochs": 20, "shared_model_runs_per_volume": 1}
#: A typical tomogram: 200 slices of 960 x 928 (float32, 713 MB).
BIG = (200, 960, 928)
STEPS = (["single", "initialize"], ["shared", "initialize"], ["shared", "train"], ["shared", "process"], ["preview"])


def timed(argv: list[str]) -> dict:
    """Run ``argv`` under /usr/bin/time -v: wall seconds and peak resident MiB."""
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    return {"s": sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":")))), "mib": peak / 1024}


def size_mib(folder: Path) -> float:
    """Bytes under ``folder`` (files only), MiB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(folder: str) -> None:
    from pom_common.mrcio import write_volume
    from pom_common.naming import feature_filename
    from pom_tools.synthetic import write_project

    root = Path(folder)
    project = root / "project"
    write_project(project, settings=FIRST_TRY)
    bin_dir = Path(sys.executable).parent
    rows = []
    for step in STEPS:
        before = size_mib(project)
        result = timed([str(bin_dir / "pom"), "--project", str(project), *step])
        rows.append((f"pom {' '.join(step)}", result["s"], result["mib"], size_mib(project) - before))
    big = root / "big"
    big.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    write_volume(big / "TS_big.mrc", rng.standard_normal(BIG, dtype=np.float32), 10.0)
    for channel in ("Membrane", "Ribosome"):
        write_volume(big / feature_filename("TS_big", channel), rng.integers(0, 256, BIG, dtype=np.uint8), 10.0)
    result = timed([str(bin_dir / "pom-infer"), "process", str(project / "models" / "phase2" / "shared.onnx"),
                    "--tomograms", str(big), "--output", str(root / "big_out"), "--gpus", "cpu", "--tta", "1"])
    rows.append((f"pom-infer process: one {'x'.join(map(str, BIG))} tomogram, TTA 1", result["s"], result["mib"],
                 size_mib(root / "big_out")))
    print(f"settings: {FIRST_TRY}; {os.cpu_count()} cores")
    print("| step | time | peak memory | disk added |\n|---|---|---|---|")
    for name, seconds, mib, disk in rows:
        print(f"| `{name}` | {seconds:.0f} s | {mib:.0f} MiB | {disk:.1f} MiB |")


if __name__ == "__main__":
    main(sys.argv[1])
