"""The SLURM recipes on a real (private, one-host) SLURM cluster: ``make slurm-test``.

A CPU node and a fake GPU node run the job-array recipe over small tomograms (a tiny ONNX
model); a task is cancelled, one requeued, one killed with SIGKILL, and the array is submitted
again. Each time: every tomogram done once (the workers' journals), outputs byte-identical to
one process, ``pom-infer status`` exact, and after the kill only one task (the keeper) waits for
the lease. Needs root and Debian's slurm packages (installed if missing); skipped otherwise.
"""

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pom_common.workqueue import FileClaimStore
from pom_inference.cli import main as infer_main
from pom_inference.status import dataset_status

from .conftest import make_onnx_model, make_tomograms
from .slurmcluster import Cluster, install, unavailable

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "slurm_array.sh"
TRAIN = ROOT / "examples" / "slurm_train.sh"
HARNESS = ROOT / "tests" / "harness.py"
VENV = Path(sys.prefix)
TOMOGRAMS = 12
#: The lease of the fault run: longer than the other tasks need to finish the rest after the kill.
LEASE = 30.0  # long enough that "ended before the lease" is clear of the noise of a loaded machine
FINAL = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = unavailable() or install()
    if why:
        pytest.skip(f"slurm-test skipped: {why}")
    started = time.monotonic()
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    print(f"\nslurm-test: private cluster up in {time.monotonic() - started:.1f} s ({c.folder})")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A project folder (Pom's layout: the model, tomograms/) and the outputs of one process."""
    project = tmp_path_factory.mktemp("project")
    (project / "models" / "phase2").mkdir(parents=True)
    model = make_onnx_model(project / "models" / "phase2" / "shared.onnx", classes=("Void", "Cytoplasm"),
                            kind="shared")
    make_tomograms(project / "tomograms", TOMOGRAMS, shape=(8, 20, 24))
    reference = project.parent / f"{project.name}-reference"
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        assert infer_main(["process", str(model), "--tomograms", str(project / "tomograms"), "--output",
                           str(reference), "--gpus", "cpu"]) == 0
    return project, model, _hashes(reference)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*__*.mrc"))}


def _done_events(out: Path) -> Counter:
    """Stem -> how many generations produced its outputs (a done carried forward is its source's)."""
    produced = {(e["stem"], e.get("carried_from", e["generation"])) for e in FileClaimStore(out).journal()
                if e["event"] == "done"}
    return Counter(stem for stem, _ in produced)


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith((".tmp", ".clock")) or ".mrc.tmp-" in p.name]


def _status(out: Path, tomograms: Path) -> dict:
    done = subprocess.run([str(VENV / "bin" / "pom-infer"), "status", "--output", str(out), "--tomograms",
                           str(tomograms), "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _check_finished(out: Path, data) -> None:
    project, _, reference = data
    events = _done_events(out)
    assert len(events) == TOMOGRAMS and set(events.values()) == {1}, events  # every tomogram, once
    assert _hashes(out) == reference  # byte-identical to one process
    status = _status(out, project / "tomograms")
    assert status["counts"] == {"done": TOMOGRAMS, "running": 0, "failed": 0, "pending": 0}, status
    assert status["keeper"] is None and not _leftovers(out)


def _wait(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _holders(out: Path) -> dict[int, str]:
    """pid -> the tomogram it holds, for every live claim."""
    return {state.claim.pid: stem for stem, state in FileClaimStore(out).states().items()
            if state.claim is not None and not state.claim.stale}


def test_cpu_node_cancel_requeue_kill_and_resubmit(cluster, data, tmp_path):
    """pom-infer slurm's script on the CPU node; each task slowed to ~1.6 s per tomogram (the fault harness)."""
    project, model, _ = data
    out = tmp_path / "out"
    slow = _executable(tmp_path / "slow-venv" / "bin" / "pom-infer",
                       f'#!/bin/bash\nPOM_TEST_SLOW=0.4 exec {sys.executable} {HARNESS} "$@"\n').parent.parent
    script = tmp_path / "process.sh"
    assert infer_main(["slurm", str(model), "--tomograms", str(project / "tomograms"), "--output", str(out),
                       "--tasks", "4", "--cpu", "--cpus-per-task", "1", "--partition", "cpu",
                       "--lease-seconds", f"{LEASE:g}", "--venv", str(slow), "--script", str(script)]) == 0
    job = cluster.sbatch(str(script))
    tasks = [f"{job}_{i}" for i in range(1, 5)]

    def held():  # task -> (pid, tomogram) once every task runs and holds a claim
        holders = _holders(out)
        found = {}
        for task in tasks:
            mine = [p for p in cluster.pids(task) if p in holders]
            if not mine:
                return None
            found[task] = (mine[0], holders[mine[0]])
        return found

    holding = _wait(held, "four tasks, each holding a tomogram")

    # scancel: the claim is released at once (SIGTERM), not left to expire
    cancelled_pid, cancelled_stem = holding[tasks[0]]
    cluster.run(["scancel", tasks[0]])
    released_in = time.monotonic()
    _wait(lambda: _holders(out).get(cancelled_pid) is None, "the cancelled task's claim released", timeout=LEASE / 2)
    released_in = time.monotonic() - released_in

    # requeue (as pre-emption does): SIGTERM, then the task runs again, appending to its log
    requeued_pid, _ = holding[tasks[1]]
    cluster.run(["scontrol", "requeue", tasks[1]])
    _wait(lambda: _holders(out).get(requeued_pid) is None, "the requeued task's claim released", timeout=LEASE / 2)
    _wait(lambda: cluster.tasks(job).get(tasks[1], {}).get("JobState") == "PENDING", "the requeued task pending")
    cluster.run(["scontrol", "update", f"JobId={tasks[1]}", "StartTime=now"])  # else held for 120 s

    # kill -9 (scancel --signal=KILL would not reach the batch shell's children)
    killed_pid, killed_stem = holding[tasks[2]]
    for pid in cluster.pids(tasks[2]):
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    ended: dict[str, float] = {}
    ended_at: dict[str, float] = {}
    none_free = None  # when no tomogram was left unclaimed: from then on a worker out of work has none to take
    while len(ended) < len(tasks):
        for task, state in cluster.states(job).items():
            if task not in ended and state in FINAL:
                ended[task] = time.monotonic() - killed_at
                ended_at[task] = time.time()
        status = dataset_status(out)
        if none_free is None and len(status.done) + len(status.running) == TOMOGRAMS:
            none_free = time.monotonic() - killed_at
        assert time.monotonic() - killed_at < LEASE + 120, cluster.states(job)
        time.sleep(0.2)
    states = cluster.states(job)
    assert [states[t] for t in tasks] == ["CANCELLED", "COMPLETED", "FAILED", "COMPLETED"], states
    assert cluster.tasks(job)[tasks[1]]["Restarts"] == "1"
    logs = {t: (tmp_path / "logs" / f"pom-process-{t}.log").read_text() for t in tasks}
    assert "restart 0:" in logs[tasks[1]] and "restart 1:" in logs[tasks[1]]  # appended, not replaced
    keepers = [t for t in tasks if "as this folder's keeper" in logs[t]]
    assert keepers in ([tasks[1]], [tasks[3]]), logs  # one of the two tasks still running waited ...
    keeper = keepers[0]
    other = tasks[1] if keeper == tasks[3] else tasks[3]
    assert ended[keeper] >= LEASE - 1  # ... for the killed task's claim to expire, and took its tomogram over
    assert f"{killed_stem}  done" in logs[keeper]
    assert none_free is not None and ended[other] < min(LEASE - 2, none_free + 10), (ended, none_free)  # the other
    # ended within seconds of running out of work (one tomogram, ~2 s, a poll, and a loaded machine's delays), not after the lease ...
    keeper_pid = int(logs[other].split("left to them and to this folder's keeper (")[1].split(" pid ")[1].split(")")[0])
    events = FileClaimStore(out).journal()
    other_pids = {e["pid"] for e in events} - {cancelled_pid, requeued_pid, killed_pid, keeper_pid}
    assert len(other_pids) == 1, (other_pids, events)
    idle = ended_at[other] - max(e["time"] for e in events if e["pid"] in other_pids)  # its last tomogram: to its end
    assert idle < 5, idle  # ... and said what it left to whom:
    assert "left to them and to this folder's keeper (" in logs[other]
    _check_finished(out, data)
    print(f"\nslurm-test: scancel released the claim in {released_in:.1f} s; after kill -9 (lease {LEASE:g} s) "
          f"none was left unclaimed at +{none_free:.1f} s, the other task ended at +{ended[other]:.1f} s "
          f"({idle:.1f} s after its last tomogram), the keeper "
          f"(which took the killed task's tomogram over) at +{ended[keeper]:.1f} s")

    # resubmission: nothing is redone
    again = cluster.sbatch(str(script))
    states = cluster.wait_done(again, timeout=120)
    assert set(states.values()) == {"COMPLETED"}, states
    for i in range(1, 5):
        log = (tmp_path / "logs" / f"pom-process-{again}_{i}.log").read_text()
        assert f"{TOMOGRAMS} done, 0 failed (0 of them by this command)" in log, log
    _check_finished(out, data)


NVIDIA_SMI = """#!/bin/bash
echo called >> "$(dirname "$0")/nvidia-smi.calls"
for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000$i)"; done
"""
#: Stands in for pom-infer on the fake GPU node: records what the recipe asked, then runs it on the CPU.
GPU_SHIM = """#!/bin/bash
{{ echo "args $*"; echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"; echo "SLURM_JOB_GPUS=$SLURM_JOB_GPUS"; }} \\
    > "$(dirname "$0")/../record-$SLURM_ARRAY_TASK_ID"
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --gpus) args+=(--gpus cpu --workers "$(tr ',' '\\n' <<<"$2" | grep -c .)"); shift 2 ;;
        --workers) shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
exec {venv}/bin/pom-infer "${{args[@]}}"
"""


def test_fake_gpu_node_uses_the_allocation_not_nvidia_smi(cluster, data, tmp_path):
    """examples/slurm_array.sh as written, 2 of the node's 4 GPUs per task; nvidia-smi lists 8."""
    project, model, _ = data
    out = tmp_path / "out"
    shim = _executable(tmp_path / "gpu-venv" / "bin" / "pom-infer", GPU_SHIM.format(venv=VENV)).parent.parent
    smi = _executable(tmp_path / "fakebin" / "nvidia-smi", NVIDIA_SMI)
    env = {"POM_VENV": str(shim), "POM_OUTPUT": str(out), "PATH": f"{smi.parent}:/usr/bin:/bin"}
    job = cluster.sbatch("--array=1-2", "--partition=gpu", "--gres=gpu:2", "--cpus-per-task=2", str(RECIPE),
                         str(project), env=env, cwd=tmp_path)
    states = cluster.wait_done(job)
    assert set(states.values()) == {"COMPLETED"}, (states, list(tmp_path.glob("*.log")))
    records = [dict(line.split("=", 1) if "=" in line else line.split(" ", 1)
                    for line in (shim / f"record-{i}").read_text().splitlines()) for i in (1, 2)]
    for record in records:
        assert " --gpus 0,1 " in f" {record['args']} "  # what CUDA numbers the two allocated GPUs
        assert len(record["CUDA_VISIBLE_DEVICES"].split(",")) == 2
    assert sorted(r["SLURM_JOB_GPUS"] for r in records) == ["0,1", "2,3"]  # side by side, disjoint
    assert not (smi.parent / "nvidia-smi.calls").exists()
    logs = "".join(p.read_text() for p in tmp_path.glob("pom-process-*.log"))  # the recipe's own --output
    assert logs.count("GPU 0,1, 1 worker(s) per device") == 2, logs
    _check_finished(out, data)


def test_cpu_only_node_runs_the_example_as_written(cluster, data, tmp_path):
    """examples/slurm_array.sh with the real environment, submitted from the project (its defaults)."""
    project, _, _ = data
    work = project  # the project's own folders: models/phase2/shared.onnx, tomograms/, output/
    job = cluster.sbatch("--array=1-2", "--cpus-per-task=2", str(RECIPE), env={"POM_VENV": str(VENV)}, cwd=work)
    states = cluster.wait_done(job)
    logs = {i: (work / f"pom-process-{job}_{i}.log").read_text() for i in (1, 2)}
    assert set(states.values()) == {"COMPLETED"}, (states, logs)
    assert all("the CPU, 1 worker(s) per device, 2 thread(s) per worker" in log for log in logs.values()), logs
    _check_finished(work / "output", data)


POM_RECORDER = """#!/bin/bash
echo "start $(date +%s.%N) ${SLURM_ARRAY_TASK_ID:-shared} $*" >> "$(dirname "$0")/../pom.calls"
sleep 1
echo "end $(date +%s.%N) ${SLURM_ARRAY_TASK_ID:-shared} $*" >> "$(dirname "$0")/../pom.calls"
"""


def test_training_recipe_chains_the_shared_network_after_every_feature(cluster, tmp_path):
    """examples/slurm_train.sh submits for real; pom stands in (each step records itself and takes 1 s)."""
    venv = tmp_path / "train-venv"
    _executable(venv / "bin" / "pom", POM_RECORDER)
    _executable(venv / "bin" / "python", f'#!/bin/bash\nexec {sys.executable} "$@"\n')
    project = tmp_path / "project"
    (project / "training_datasets" / "phase1").mkdir(parents=True)
    (project / "training_datasets" / "phase1" / "info.json").write_text("{}")
    (project / "project_configuration.json").write_text(json.dumps(
        {"ontologies": ["Cytoplasm", "Lipid droplet", "Void"], "label_method": "painted"}))
    done = subprocess.run(["bash", str(TRAIN), str(project), "--partition=cpu", "--cpus-per-task=1"],
                          env={**cluster.env, "POM_VENV": str(venv)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    single, shared = (line.split()[2].rstrip(":") for line in done.stdout.splitlines())
    assert set(cluster.wait_done(single).values()) == {"COMPLETED"}
    assert set(cluster.wait_done(shared).values()) == {"COMPLETED"}
    calls = [line.split(" ", 3) for line in (venv / "pom.calls").read_text().splitlines()]
    trained = sorted(c[3] for c in calls if c[0] == "start" and c[2] != "shared")
    assert trained == [f"single train -o {f} -gpus cpu -seed 0" for f in ("Cytoplasm", "Lipid droplet", "Void")]
    last_single_end = max(float(c[1]) for c in calls if c[0] == "end" and c[2] != "shared")
    shared_calls = [c for c in calls if c[2] == "shared"]
    assert [c[3] for c in shared_calls if c[0] == "start"] == ["shared initialize", "shared train -gpus cpu -seed 0"]
    assert min(float(c[1]) for c in shared_calls) > last_single_end  # after every feature (afterok)
    assert len(list((project / "slurm" / "logs").glob("pom-single-train-*.log"))) == 3
