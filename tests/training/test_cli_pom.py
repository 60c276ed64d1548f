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


def test_direct_says_which_steps_matter(tmp_path, monkeypatch, capsys):
    """With "direct" (the default) single train and shared initialize say the single networks are optional."""
    from pom_training import train

    from ..helpers import initialised_project

    project = initialised_project(tmp_path / "project", {"GPUS": "cpu"})
    trained = []
    monkeypatch.setattr(train, "train_single", lambda config, feature, **kwargs: trained.append(feature) or {})
    capsys.readouterr()
    note = 'label_method "direct": the shared network learns from the painted labels'
    assert main(["--project", str(project), "single", "train", "-all", "1"]) == 0
    out = capsys.readouterr().out
    assert note in out and "optional, for pom single test" in out
    assert trained == ["Cytoplasm", "Mitochondrion", "Vesicle", "Void"]  # still trained when asked for
    assert main(["--project", str(project), "shared", "initialize"]) == 0
    assert capsys.readouterr().out.startswith(note)
    path = project / "project_configuration.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "label_method": "pom"}))
    assert main(["--project", str(project), "single", "train", "-o", "Void"]) == 0
    assert "label_method" not in capsys.readouterr().out  # Pom's method needs them: nothing to say
