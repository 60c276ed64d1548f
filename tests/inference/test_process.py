import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pom_common.mrcio import read_volume
from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main

from ..helpers import make_onnx_model, make_tomograms

CLASSES = ("Void", "Cytoplasm")


def _infer(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "pom_inference.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture
def setup(tmp_path):
    model = make_onnx_model(tmp_path / "shared.onnx", channels=("Density", "Membrane"), classes=CLASSES,
                            kind="shared", z_sum=1, multiple=4)
    tomos = make_tomograms(tmp_path / "tomos", 20, channels=("Membrane",))
    return tmp_path, model, tomos


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*__*.mrc"))}


def test_four_workers_write_each_output_once_and_match_one_worker(setup):
    tmp, model, tomos = setup
    procs = [_infer("process", model, "--tomograms", tmp / "tomos", "--output", tmp / "out4", "--gpus", "cpu")
             for _ in range(4)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    journal = FileClaimStore(tmp / "out4").journal()
    done = sorted(e["stem"] for e in journal if e["event"] == "done")
    assert done == sorted(t.stem for t in tomos)  # each tomogram exactly once
    assert len({e["pid"] for e in journal}) >= 2  # the work was shared
    single = _infer("process", model, "--tomograms", tmp / "tomos", "--output", tmp / "out1", "--gpus", "cpu")
    assert single.wait(timeout=240) == 0
    single.communicate()  # (closes its pipe)
    four, one = _outputs(tmp / "out4"), _outputs(tmp / "out1")
    assert len(one) == 40 and four.keys() == one.keys()
    assert all(four[k] == one[k] for k in one)  # bit for bit
    vol = read_volume(tmp / "out1" / "TS_000__Void.mrc")
    assert vol.shape == (6, 10, 12) and vol.voxel_size == pytest.approx(20.0)
    assert not [p for p in (tmp / "out4").iterdir() if p.name.startswith(".TS")]  # no temporaries left


SLOW_WORKER = """
import sys, time
import pom_inference.predict as predict, pom_inference.worker as worker
real = predict.SlicePredictor.__call__
def slow(*a, **k):
    time.sleep(0.4)
    return real(*a, **k)
predict.SlicePredictor.__call__ = slow
worker.SLAB = 1
from pom_inference.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_worker_leaves_nothing_and_is_taken_over(setup):
    tmp, model, _ = setup
    make_tomograms(tmp / "one", 1, shape=(16, 20, 24), channels=("Membrane",))
    out = tmp / "out"
    args = ["process", str(model), "--tomograms", str(tmp / "one"), "--output", str(out), "--gpus", "cpu",
            "--lease-seconds", "1.5"]
    victim = subprocess.Popen([sys.executable, "-c", SLOW_WORKER, *args])
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob(".TS_000__*.tmp-*")):
        time.sleep(0.05)
    assert list(out.glob(".TS_000__*.tmp-*")), "the worker never started writing"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not list(out.glob("TS_000__*.mrc"))  # nothing at a final name
    survivor = _infer(*args)
    log = survivor.communicate(timeout=120)[0]
    assert survivor.returncode == 0, log
    assert sorted(p.name for p in out.glob("TS_000__*.mrc")) == ["TS_000__Cytoplasm.mrc", "TS_000__Void.mrc"]
    assert not list(out.glob(".TS_000__*"))  # the dead worker's temporaries were cleaned up
    state = FileClaimStore(out).state("TS_000")
    assert state.status == "done" and state.claim is None


def test_sigterm_releases_claims(setup):
    tmp, model, _ = setup
    out = tmp / "out"
    victim = subprocess.Popen([sys.executable, "-c", SLOW_WORKER, "process", str(model), "--tomograms",
                               str(tmp / "tomos"), "--output", str(out), "--gpus", "cpu"], stderr=subprocess.PIPE,
                              text=True)
    store = FileClaimStore(out)
    deadline = time.time() + 60
    while time.time() < deadline and not any(s.claim for s in store.states().values()):
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGTERM)
    assert victim.wait(timeout=60) == 130  # at load 5 a first compile of a kernel alone can take 20 s
    assert "stopped by SIGTERM; claims released" in victim.communicate()[1]
    states = store.states()
    assert states and not any(s.claim for s in states.values())  # every claim given up


def test_bad_inputs_are_recorded_and_others_go_on(setup, capsys):
    tmp, model, tomos = setup
    tomos[3].write_bytes(b"\x00" * 100)  # corrupt
    (tmp / "tomos" / "TS_005__Membrane.mrc").unlink()  # missing channel
    code = infer_main(["process", str(model), "--tomograms", str(tmp / "tomos"), "--output", str(tmp / "out"),
                       "--gpus", "cpu"])
    out = capsys.readouterr().out
    assert code == 1
    assert "18 done, 2 failed" in out and "TS_003" in out and "TS_005" in out and "Membrane" in out
    assert "TS_003.mrc" in FileClaimStore(tmp / "out").state("TS_003").error
    args = ["process", str(model), "--tomograms", str(tmp / "tomos"), "--output", str(tmp / "out"), "--gpus", "cpu"]
    assert infer_main(args) == 1  # unchanged inputs: they stay failed, without being tried again
    assert "18 done, 2 failed" in capsys.readouterr().out
    # Fixed: a plain rerun tries them again, because their input files changed.
    make_tomograms(tmp / "fix", 6, channels=("Membrane",))
    os.replace(tmp / "fix" / "TS_003.mrc", tomos[3])
    os.replace(tmp / "fix" / "TS_005__Membrane.mrc", tmp / "tomos" / "TS_005__Membrane.mrc")
    assert infer_main(args) == 0
    assert "20 done, 0 failed (2 of them by this command)" in capsys.readouterr().out


def test_retry_failed_tries_unchanged_failures_again(setup, capsys):
    tmp, model, tomos = setup
    (tmp / "tomos" / "TS_005__Membrane.mrc").write_bytes(b"\x00" * 100)
    args = ["process", str(model), "--tomograms", str(tmp / "tomos"), "--output", str(tmp / "out"), "--gpus", "cpu"]
    assert infer_main(args) == 1
    capsys.readouterr()
    assert infer_main([*args, "--retry-failed"]) == 1
    assert "TS_005 done" not in capsys.readouterr().err
    journal = FileClaimStore(tmp / "out").journal()
    assert [e["event"] for e in journal if e["stem"] == "TS_005"] == ["failed", "failed"]  # tried twice


def test_uint8_output_and_class_subset(setup):
    tmp, model, tomos = setup
    code = infer_main(["process", str(model), "--tomograms", str(tmp / "tomos"), "--output", str(tmp / "u8"),
                       "--gpus", "cpu", "--dtype", "uint8", "--classes", "Void", "--tta", "8"])
    assert code == 0
    files = sorted(p.name for p in (tmp / "u8").glob("*.mrc"))
    assert len(files) == 20 and all(f.endswith("__Void.mrc") for f in files)
    path = tmp / "u8" / "TS_000__Void.mrc"
    vol = read_volume(path)
    assert vol.data.dtype == np.int8 and 0 <= vol.data.min() and vol.data.max() <= 127
    assert path.stat().st_size == 1024 + vol.data.size  # one byte per voxel


def test_list_file_and_status(setup, capsys):
    tmp, model, tomos = setup
    listing = tmp / "subset.txt"
    listing.write_text("# a subset\n" + "\n".join(str(t) for t in tomos[:3]) + "\ntomos/TS_001__Membrane.mrc\n")
    assert infer_main(["process", str(model), "--tomograms", str(listing), "--output", str(tmp / "o"),
                       "--gpus", "cpu"]) == 0
    capsys.readouterr()
    assert infer_main(["status", "--output", str(tmp / "o"), "--tomograms", str(tmp / "tomos")]) == 0
    out = capsys.readouterr().out
    assert "3 done, 0 running, 0 failed, 17 pending" in out
    assert not list((tmp / "o" / ".pom" / "shared").glob(".clock-*"))  # status leaves nothing behind


def test_info(setup, capsys):
    _, model, _ = setup
    assert infer_main(["info", str(model)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{model}: shared network, {len(CLASSES)} classes: {', '.join(CLASSES)}"
    assert [line.split()[0] for line in out[1:]] == ["inputs", "scaling", "trained", "training", "file"]
    assert infer_main(["info", str(model), "--json"]) == 0  # for scripts: the metadata as stored
    assert json.loads(capsys.readouterr().out)["classes"] == list(CLASSES)


def test_pom_infer_works_without_tensorflow(setup):
    tmp, model, _ = setup
    blocker = tmp / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(blocker))
    proc = _infer("process", model, "--tomograms", tmp / "tomos", "--output", tmp / "o", "--gpus", "cpu", env=env)
    log = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, log
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True)
    assert check.returncode != 0  # the blocker really blocks


def test_two_workers_in_one_command(setup):
    tmp, model, _ = setup
    # Two worker processes on the CPU: the same driver path as one worker per GPU.
    code = infer_main(["process", str(model), "--tomograms", str(tmp / "tomos"), "--output", str(tmp / "o"),
                       "--gpus", "cpu", "--workers", "2"])
    assert code == 0
    assert len(list((tmp / "o").glob("*__*.mrc"))) == 40
    journal = FileClaimStore(tmp / "o").journal()
    assert sorted(e["stem"] for e in journal) == sorted(f"TS_{i:03d}" for i in range(20))  # each once
