"""The SLURM recipe and ``pom-infer slurm``, without SLURM: what the script asks pom-infer to do.

The recipe is run with bash under the environment variables SLURM gives a task, with a
stand-in environment whose ``bin/pom-infer`` records its arguments (the real cluster run is
tests/test_slurm_cluster.py, ``make slurm-test``).
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pom_inference.cli import main as infer_main
from pom_inference.slurm import BODY_START, recipe_text

from ..helpers import make_onnx_model, make_tomograms

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "slurm_array.sh"
RECORDER = """#!/bin/bash
printf '%s\\n' "$@" > "$(dirname "$0")/../args"
echo "$OMP_NUM_THREADS $NUMBA_NUM_THREADS" > "$(dirname "$0")/../threads"
"""
NVIDIA_SMI = """#!/bin/bash
echo called >> "$(dirname "$0")/nvidia-smi.calls"
for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_venv(tmp_path):
    venv = tmp_path / "venv"
    _executable(venv / "bin" / "pom-infer", RECORDER)
    _executable(tmp_path / "bin" / "nvidia-smi", NVIDIA_SMI)  # lists 8 GPUs, whatever was allocated
    return venv


def _run(script, venv, env, *args, cwd):
    base = {"PATH": f"{venv.parent / 'bin'}:/usr/bin:/bin", "POM_VENV": str(venv)}
    done = subprocess.run(["bash", str(script), *args], env={**base, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    return done


def _process_args(venv):
    return (venv / "args").read_text().splitlines()


def _option(args, name):
    return args[args.index(name) + 1]


CASES = [  # (what SLURM set, --gpus the recipe must pass)
    ({"SLURM_JOB_GPUS": "2,3", "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "2,3"}, "0,1"),  # not confined
    ({"SLURM_JOB_GPUS": "2,3", "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),  # confined
    ({"SLURM_GPUS_ON_NODE": "1", "CUDA_VISIBLE_DEVICES": "MIG-4b2e"}, "0"),  # a MIG slice, by UUID
    ({"SLURM_JOB_GPUS": "1,3"}, "1,3"),  # CUDA sees the whole node
    ({"SLURM_GPUS_ON_NODE": "2"}, "0,1"),
    ({}, "cpu"),  # a CPU node, or no GPU asked for
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, "cpu"),  # from the submitting shell, not an allocation
    ({"SLURM_JOB_GPUS": "0", "SLURM_GPUS_ON_NODE": "1", "CUDA_VISIBLE_DEVICES": "0", "POM_GPUS": "cpu"}, "cpu"),
]


@pytest.mark.parametrize("env, gpus", CASES)
def test_the_recipe_uses_the_gpus_slurm_allocated(tmp_path, fake_venv, env, gpus):
    done = _run(RECIPE, fake_venv, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _option(_process_args(fake_venv), "--gpus") == gpus
    assert not (tmp_path / "bin" / "nvidia-smi.calls").exists()  # never asks nvidia-smi


def test_the_recipe_shares_the_task_cpus_and_passes_options_on(tmp_path, fake_venv):
    (tmp_path / "project" / "macromolecules").mkdir(parents=True)
    env = {"SLURM_JOB_GPUS": "0,1", "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1",
           "SLURM_CPUS_PER_TASK": "8", "POM_LEASE_SECONDS": "300", "POM_WORKERS": "2"}
    done = _run(RECIPE, fake_venv, env, "project", "--dtype", "uint8", "--classes", "Lipid droplet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = _process_args(fake_venv)
    assert args[:2] == ["process", "models/phase2/shared.onnx"]
    assert _option(args, "--macromolecules") == "macromolecules" and _option(args, "--lease-seconds") == "300"
    assert _option(args, "--workers") == "2" and args[-4:] == ["--dtype", "uint8", "--classes", "Lipid droplet"]
    assert (fake_venv / "threads").read_text().split() == ["2", "2"]  # 8 CPUs, 2 GPUs x 2 workers
    assert "GPU 0,1, 2 worker(s) per device, 2 thread(s) per worker" in done.stdout


def test_the_recipe_names_a_missing_environment(tmp_path, fake_venv):
    done = _run(RECIPE, tmp_path / "nowhere", {}, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "POM_VENV" in done.stderr


def test_the_example_is_the_packaged_recipe():
    assert RECIPE.read_text() == recipe_text() and BODY_START in recipe_text()
    assert "nvidia-smi" not in recipe_text().replace("Never from\n# nvidia-smi", "")
    for directive in ("--open-mode=append", "--requeue"):
        assert f"#SBATCH {directive}" in recipe_text()


@pytest.fixture
def model_case(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("Void", "Cytoplasm"), kind="shared")
    make_tomograms(tmp_path / "t", 3, shape=(8, 20, 24))
    return tmp_path, model


def test_the_helper_writes_a_script_that_segments(model_case, capsys, monkeypatch):
    tmp, model = model_case
    monkeypatch.chdir(tmp)
    assert infer_main(["slurm", str(model), "--tomograms", "t", "--output", "o", "--tasks", "3", "--cpu",
                       "--partition", "short", "--time", "1:00:00", "--mem", "4G", "--lease-seconds", "200",
                       "--sbatch-option=--account=lab", "--", "--dtype", "uint8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    script = tmp / "slurm" / "pom-process.sh"
    assert printed[-1] == f"sbatch {script}" and "3 tasks of 4 CPUs (no GPU)" in printed[0]
    text = script.read_text()
    header = text[:text.index("POM_VENV=")]
    for directive in ("--array=1-3", "--cpus-per-task=4", "--partition=short", "--time=1:00:00", "--mem=4G",
                      f"--output={tmp}/slurm/logs/pom-process-%A_%a.log", "--open-mode=append", "--requeue",
                      "--account=lab"):
        assert f"#SBATCH {directive}\n" in header
    assert "--gres" not in header and (tmp / "slurm" / "logs").is_dir()
    assert all(line.startswith("#") for line in header.splitlines())  # sbatch reads directives up to the first command
    assert f"POM_VENV={sys.prefix}\n" in text  # the environment, named
    env = {"PATH": "/usr/bin:/bin", "SLURM_CPUS_PER_TASK": "2", "HOME": str(tmp)}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "3 done, 0 failed" in done.stdout and "--lease-seconds 200 --dtype uint8" in done.stdout
    assert len(list((tmp / "o").glob("TS_*__*.mrc"))) == 6


def test_the_helper_reads_a_project(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "models" / "phase2").mkdir(parents=True)
    (project / "project_configuration.json").write_text(json.dumps(
        {"macromolecules": ["Density"], "ontologies": ["Void", "Cytoplasm"], "shared_model_runs_per_volume": 2,
         "apix": 12.5, "output_dir": "segmented"}))
    assert infer_main(["slurm", str(project), "--tasks", "2"]) == 2
    assert "models/phase2/shared.onnx: no model here (train it first: pom shared train)" in capsys.readouterr().err
    make_onnx_model(project / "models" / "phase2" / "shared.onnx", classes=("Void", "Cytoplasm"), kind="shared")
    make_tomograms(project / "tomograms", 2)
    assert infer_main(["slurm", str(project), "--tasks", "2", "--gpus-per-task", "2"]) == 0
    text = (project / "slurm" / "pom-process.sh").read_text()
    assert "#SBATCH --gres=gpu:2\n" in text and "#SBATCH --cpus-per-task=8\n" in text
    assert f"POM_OUTPUT={project}/segmented\n" in text and "POM_MACROMOLECULES=''" in text
    assert f"set -- {project} --tta 2 --voxel-size 12.5\n" in text


@pytest.mark.parametrize("args, message", [
    (["--time", "1h"], "--time: expected minutes, H:M:S or D-H:M:S"),
    (["--tasks", "0"], "--tasks: expected a positive number"),
    (["--mem", "lots"], "--mem: expected a size"),
    (["--venv", "/nowhere"], "--venv: /nowhere has no bin/pom-infer"),
    (["--", "--gpus", "0"], "--gpus: set by the script"),
    (["--", "--no-such-option"], "not options of pom-infer process: --no-such-option"),
])
def test_the_helper_refuses_bad_options_in_one_line(model_case, capsys, args, message):
    tmp, model = model_case
    base = ["slurm", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "o"), "--tasks", "2",
            "--script", str(tmp / "s.sh")]
    assert infer_main([*base, *args]) == 2  # (the last --tasks counts)
    assert message in capsys.readouterr().err
    assert not (tmp / "s.sh").exists()


def test_the_helper_submits(model_case, capsys, monkeypatch):
    tmp, model = model_case
    sbatch = _executable(tmp / "bin" / "sbatch", f'#!/bin/bash\necho "$@" > {tmp}/sbatch.args\necho "4242;cluster"\n')
    monkeypatch.setenv("PATH", f"{sbatch.parent}:{os.environ['PATH']}")
    script = tmp / "s.sh"
    assert infer_main(["slurm", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "o"),
                       "--tasks", "2", "--script", str(script), "--submit"]) == 0
    assert f"submitted job 4242: sbatch {script}" in capsys.readouterr().out
    assert (tmp / "sbatch.args").read_text().split() == ["--parsable", str(script)]
    _executable(sbatch, "#!/bin/bash\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    assert infer_main(["slurm", str(model), "--tomograms", str(tmp / "t"), "--output", str(tmp / "o"),
                       "--tasks", "2", "--script", str(script), "--submit"]) == 2
    assert "sbatch refused" in (err := capsys.readouterr().err) and "invalid partition specified: gpu" in err


TRAIN = ROOT / "examples" / "slurm_train.sh"
POM_RECORDER = """#!/bin/bash
(printf '%s|' "$@"; echo) >> "$(dirname "$0")/../pom.calls"
"""
SBATCH_RECORDER = """#!/bin/bash
n=$(( $(cat "$(dirname "$0")/sbatch.n" 2>/dev/null || echo 100) + 1 )); echo $n > "$(dirname "$0")/sbatch.n"
(printf '%s|' "$@"; echo) >> "$(dirname "$0")/sbatch.calls"
echo "$n;cluster"
"""


@pytest.fixture
def training_project(tmp_path):
    venv = tmp_path / "venv"
    _executable(venv / "bin" / "pom", POM_RECORDER)
    _executable(venv / "bin" / "python", f'#!/bin/bash\nexec {sys.executable} "$@"\n')  # reads the configuration
    _executable(tmp_path / "bin" / "sbatch", SBATCH_RECORDER)
    project = tmp_path / "project"
    (project / "training_datasets" / "phase1").mkdir(parents=True)
    (project / "training_datasets" / "phase1" / "info.json").write_text("{}")
    config = {"ontologies": ["Cytoplasm", "Lipid droplet"], "label_method": "pom"}
    (project / "project_configuration.json").write_text(json.dumps(config))
    return tmp_path, venv, project


def _calls(path):
    return [line.rstrip("|").split("|") for line in path.read_text().splitlines()] if path.exists() else []


def test_the_training_recipe_submits_an_array_then_the_shared_network(training_project):
    tmp, venv, project = training_project
    done = _run(TRAIN, venv, {}, str(project), "--gres=gpu:1", "--time=2:00:00", cwd=tmp)
    assert done.returncode == 0, done.stderr
    single, shared = _calls(tmp / "bin" / "sbatch.calls")
    assert "--array=0-1" in single and "--job-name=pom-single-train" in single
    assert f"--export=ALL,POM_VENV={venv},POM_SEED=0,POM_STEP=single" in single
    assert "--dependency=afterok:101" in shared and f"--export=ALL,POM_VENV={venv},POM_SEED=0,POM_STEP=shared" in shared
    for call in (single, shared):
        assert call[-3:] == ["--gres=gpu:1", "--time=2:00:00", str(TRAIN)] and "--open-mode=append" in call
        assert f"--chdir={project}" in call
    assert "submitted job 101" in done.stdout and "submitted job 102" in done.stdout
    assert (project / "slurm" / "logs").is_dir()


def test_the_training_recipe_steps(training_project):
    tmp, venv, project = training_project
    env = {"POM_STEP": "single", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_GPUS": "3", "SLURM_GPUS_ON_NODE": "1",
           "CUDA_VISIBLE_DEVICES": "3"}
    assert _run(TRAIN, venv, env, cwd=project).returncode == 0
    assert _run(TRAIN, venv, {"POM_STEP": "shared"}, cwd=project).returncode == 0
    assert _calls(venv / "pom.calls") == [["single", "train", "-o", "Lipid droplet", "-gpus", "0", "-seed", "0"],
                                          ["shared", "initialize"], ["shared", "train", "-gpus", "cpu", "-seed", "0"]]
    assert not (tmp / "bin" / "nvidia-smi.calls").exists()


def test_the_training_recipe_refuses_in_one_line(training_project):
    tmp, venv, project = training_project
    config = json.loads((project / "project_configuration.json").read_text())
    (project / "project_configuration.json").write_text(json.dumps({**config, "label_method": "direct"}))
    done = _run(TRAIN, venv, {}, str(project), cwd=tmp)
    assert done.returncode == 0 and len(_calls(tmp / "bin" / "sbatch.calls")) == 1  # direct: the shared job only
    (project / "training_datasets" / "phase1" / "info.json").unlink()
    done = _run(TRAIN, venv, {}, str(project), cwd=tmp)
    assert done.returncode == 2 and "run 'pom single initialize' there first" in done.stderr
    (project / "project_configuration.json").write_text(json.dumps({**config, "ontologie": []}))
    done = _run(TRAIN, venv, {}, str(project), cwd=tmp)
    assert done.returncode == 2 and "ontologie" in done.stderr and done.stderr.count("\n") == 1, done.stderr
