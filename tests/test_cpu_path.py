"""The CPU path without friction (issue 22): no NVIDIA driver, GPUs asked for, and no GPUs asked for.

The test machines have no NVIDIA driver; where a test needs one, ``has_driver`` is replaced.
"""

import json

import pytest

from pom_common.errors import NoGpuError
from pom_inference import cli as infer_cli
from pom_inference import nvidia, process_cli, session
from pom_training import commands
from pom_training.cli import main as pom_main

from .helpers import make_onnx_model, make_tomograms, one_line_error

NO_GPU_POM = 'pom: error: no GPU on this machine: add -gpus cpu or set "GPUS": "cpu" in project_configuration.json'


@pytest.fixture
def no_driver(monkeypatch):
    monkeypatch.setattr(nvidia, "has_driver", lambda load=None: False)


def test_gpus_from_the_configuration_without_a_driver_say_the_fix_first(ais_project, no_driver, capsys):
    """GPUS "0" (Pom's template) on a machine without a driver: the first words are the fix, not CUDA libraries."""
    assert json.loads((ais_project / "project_configuration.json").read_text())["GPUS"] == "0"
    for command in (["shared", "process"], ["single", "test", "-o", "Mitochondrion"],
                    ["shared", "process", "-gpus", "1"]):
        assert pom_main(["--project", str(ais_project), *command]) == 2
        line = one_line_error(capsys, "libcuda.so.1")
        assert line.startswith(NO_GPU_POM), line
        assert "libcublas" not in line and "pip install" not in line  # the library diagnosis is for machines with a driver
    assert not (ais_project / "output").exists() or not any((ais_project / "output").iterdir())


def test_pom_infer_gpus_named_without_a_driver_is_refused(tmp_path, no_driver, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 1)
    code = infer_cli.main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
                           "--gpus", "0"])
    assert code == 2
    line = one_line_error(capsys, "libcuda.so.1")
    assert line.startswith("pom-infer: error: no GPU on this machine: add --gpus cpu (GPU 0 requested"), line
    assert not (tmp_path / "o").exists()
    with pytest.raises(NoGpuError):
        session.check_gpus([0])


def test_pom_infer_without_gpus_runs_on_the_cpu_saying_so(tmp_path, no_driver, capsys):
    """No --gpus on a machine without a driver: the CPU, and one line that says it (never silent)."""
    model = make_onnx_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 2)
    assert infer_cli.main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output",
                           str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "no GPU on this machine (no NVIDIA driver (libcuda.so.1 not found)): segmenting on the CPU" in err
    assert len(list((tmp_path / "o").glob("*.mrc"))) == 2


def test_pom_infer_without_gpus_means_gpu_0_where_there_is_a_driver(monkeypatch):
    monkeypatch.setattr(nvidia, "has_driver", lambda load=None: True)
    assert process_cli._process_gpus(None) == [0]
    assert process_cli._process_gpus("cpu") is None and process_cli._process_gpus("1,2") == [1, 2]


@pytest.mark.parametrize("driver, expected", [(False, "cpu"), (True, "0")])
def test_pom_init_writes_cpu_on_a_machine_without_a_gpu(tmp_path, monkeypatch, capsys, driver, expected):
    monkeypatch.setattr(commands, "has_driver", lambda: driver)
    assert pom_main(["--project", str(tmp_path / "a"), "init"]) == 0
    assert json.loads((tmp_path / "a" / "project_configuration.json").read_text())["GPUS"] == expected
    assert ('GPUS: "cpu" (no GPU on this machine' in capsys.readouterr().out) == (not driver)
    (tmp_path / "b").mkdir()
    assert pom_main(["--project", str(tmp_path / "b")]) == 0  # a bare `pom`, as Pom: the same configuration
    assert json.loads((tmp_path / "b" / "project_configuration.json").read_text())["GPUS"] == expected


def test_training_on_gpus_without_a_driver(monkeypatch):
    from pom_training.fitting import devices

    monkeypatch.setattr(devices, "has_driver", lambda: False)
    with pytest.raises(NoGpuError, match="GPU 0 requested for training, but no NVIDIA driver"):
        devices.make_strategy([0])
