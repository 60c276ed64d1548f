import json

from pom_training.cli import main


def test_bare_pom_creates_configuration(tmp_path, capsys):
    assert main(["--project", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "project_configuration.json").read_text())
    assert doc["z_sum"] == 4 and doc["model_depth"] == 4


def test_pom_init(tmp_path):
    assert main(["--project", str(tmp_path), "init"]) == 0
    assert main(["--project", str(tmp_path), "init"]) == 2


def test_config_error_is_one_line(tmp_path, capsys):
    (tmp_path / "project_configuration.json").write_text(json.dumps({"z_summ": 4}))
    assert main(["--project", str(tmp_path), "single", "initialize"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "z_summ" in err and "Traceback" not in err


def test_bad_gpus_option(ais_project, capsys):
    code = main(["--project", str(ais_project), "single", "train", "-o", "Void", "-gpus", "zero"])
    assert code == 2
    assert "-gpus" in capsys.readouterr().err
