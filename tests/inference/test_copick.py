"""copick in and out: a local copick project made with copick's own API, segmented by two workers at once."""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pom_common.mrcio import read_volume
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main
from pom_inference.forms import label_names

from ..helpers import AIS_MINI, DATA

copick = pytest.importorskip("copick", reason="the [copick] extra is not installed (pip install 'pom-onnx[copick]')")

SHARED = DATA / "golden" / "shared.onnx"
HARNESS = str(Path(__file__).parent.parent / "harness.py")
CLASSES = ("Cytoplasm", "Mitochondrion", "Vesicle", "Void", "Unknown")  # the shared model's
LABELS = {"Cytoplasm": 3, "Mitochondrion": 5, "Vesicle": 6, "Void": 7}  # copick's labels: not ours (1..4)
RUNS = {"TS_001": "tomograms", "TS_002": "tomograms", "TS_003": "test"}
LEASE = "1.5"


def make_project(tmp_path):
    """Three runs at 15.68 A, each a wbp tomogram and the Membrane and Ribosome segmentations, through copick's API."""
    from copick.models import PickableObject

    objects = [PickableObject(name=n, is_particle=False, label=v) for n, v in LABELS.items()]
    objects += [PickableObject(name=n, is_particle=False, label=v) for n, v in (("Membrane", 1), ("Ribosome", 2))]
    config = tmp_path / "copick.json"
    root = copick.new_config(str(config), str(tmp_path / "overlay"), pickable_objects=objects)
    for name, folder in RUNS.items():
        run = root.new_run(name)
        vs = run.new_voxel_spacing(15.68)
        vs.new_tomogram("wbp").from_numpy(np.asarray(read_volume(AIS_MINI / folder / f"{name}.mrc").data))
        for channel in ("Membrane", "Ribosome"):
            data = np.asarray(read_volume(AIS_MINI / ("macromolecules" if folder == "tomograms" else folder)
                                          / f"{name}__{channel}.mrc").data)
            seg = run.new_segmentation(voxel_size=15.68, name=channel, session_id="1", user_id="ais")
            seg.from_numpy(data.astype(np.uint8))
    return config


def _args(config, *extra):
    return ["process", str(SHARED), "--copick", str(config), "--gpus", "cpu", "--tta", "1",
            "--lease-seconds", LEASE, *map(str, extra)]


def _start(args, **env):
    return subprocess.Popen([sys.executable, HARNESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **{k: str(v) for k, v in env.items()}})


def _done_events(out):
    produced = {(e["stem"], e.get("carried_from", e["generation"])) for e in FileClaimStore(out).journal()
                if e["event"] == "done"}
    return Counter(stem for stem, _ in produced)


def _check_segmentations(config, outputs):
    root = copick.from_file(str(config))
    names = label_names(CLASSES)
    lut = np.zeros(256, np.uint8)
    for value, name in names.items():
        lut[int(value)] = LABELS.get(name, 0)
    for name in RUNS:
        segs = root.get_run(name).get_segmentations(name="shared", user_id="pom-onnx", session_id="0")
        assert len(segs) == 1 and segs[0].is_multilabel and segs[0].voxel_size == 31.36  # the binned grid
        ours = np.asarray(read_volume(outputs / f"{name}__labels.mrc").data)
        data = segs[0].numpy()
        assert data.shape == ours.shape and np.array_equal(data, lut[ours.astype(np.int64)])
        assert set(np.unique(data)) <= {0, *LABELS.values()} and len(np.unique(data)) >= 3


def test_two_workers_share_the_runs_and_a_killed_workers_run_is_taken_over(tmp_path):
    config = make_project(tmp_path)
    outputs = tmp_path / "pom-work" / "outputs"
    # Two workers at once: every run segmented once, by one of them.
    procs = [_start(_args(config), POM_TEST_SLOW=0.02) for _ in range(2)]
    logs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert _done_events(outputs) == Counter(list(RUNS))
    done_by = [set(re.findall(r"(TS_\d+)  done in", err)) for _, err in logs]
    assert done_by[0].isdisjoint(done_by[1]) and done_by[0] | done_by[1] == set(RUNS), logs
    _check_segmentations(config, outputs)
    assert json.loads((outputs / "classes.json").read_text())["0"] == "Unknown"
    # A second look finds every run done: nothing is redone.
    assert infer_main(_args(config)) == 0 and _done_events(outputs) == Counter(list(RUNS))
    # Redo: a worker killed after its label map is in place (before done) leaves the run to the next one.
    a = _start(_args(config, "--overwrite", "--runs", "TS_002"), POM_TEST_PAUSE_BEFORE_DONE="TS_002")
    deadline = time.time() + 120
    while Path(f"/proc/{a.pid}/stat").read_text().split(")")[1].split()[0] != "T":
        assert time.time() < deadline and a.poll() is None, a.communicate()
        time.sleep(0.05)
    a.kill()
    a.communicate()
    time.sleep(float(LEASE) + 0.5)
    assert infer_main(_args(config, "--overwrite", "--runs", "TS_002")) == 0
    events = [e for e in FileClaimStore(outputs).journal() if e["stem"] == "TS_002" and e["event"] == "done"]
    assert len(events) == 2 and events[-1]["generation"] > events[0]["generation"] + 1  # the killed one's skipped
    _check_segmentations(config, outputs)


def test_refusals_are_one_line(tmp_path, capsys):
    from copick.models import PickableObject

    config = tmp_path / "copick.json"
    copick.new_config(str(config), str(tmp_path / "overlay"),
                      pickable_objects=[PickableObject(name="Void", is_particle=False, label=1)])
    root = copick.from_file(str(config))
    run = root.new_run("TS_001")
    run.new_voxel_spacing(15.68).new_tomogram("wbp").from_numpy(np.zeros((8, 16, 16), np.float32))
    assert infer_main(_args(config)) == 2  # no Membrane segmentation: the run is left out, none left
    err = capsys.readouterr().err
    assert "no segmentation named 'Membrane'" in err and "no run has a tomogram" in err
    assert infer_main(_args(config, "--runs", "TS_404")) == 2
    assert "TS_404" in capsys.readouterr().err
    assert infer_main(_args(tmp_path / "missing.json")) == 2
    assert "no such copick configuration" in capsys.readouterr().err
