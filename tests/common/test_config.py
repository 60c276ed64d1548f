import json
from dataclasses import FrozenInstanceError

import pytest

from pom_common.config import (
    ProjectConfig,
    config_from_dict,
    default_config_dict,
    init_project,
    load_config,
    parse_gpus,
    replace,
    write_config,
)
from pom_common.errors import ConfigError

from ..helpers import AIS_MINI


def test_defaults_are_poms():
    d = default_config_dict()
    assert d["ontology_annotation_box_size"] == 128
    assert d["z_sum"] == 4 and d["apix"] == 15.68 and d["GPUS"] == "0"
    assert d["macromolecules"] == ["Density"] and d["ontologies"] == []
    assert d["model_base_filters"] == 64 and d["model_depth"] == 4
    assert d["shared_model_runs_per_volume"] == 4


def test_round_trip(tmp_path):
    path = init_project(tmp_path)
    config = load_config(path)
    assert config == config_from_dict(default_config_dict(), base_dir=tmp_path)
    changed = replace(config, ontologies=("Void", "Cytoplasm"), z_sum=2)
    write_config(changed, path)
    again = load_config(path)
    assert again.ontologies == ("Void", "Cytoplasm") and again.z_sum == 2
    assert config.ontologies == ()  # the original value is untouched


def test_init_refuses_to_overwrite(tmp_path):
    init_project(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        init_project(tmp_path)


def test_old_pom_configuration_loads_unchanged(tmp_path):
    original = json.loads((AIS_MINI / "project_configuration.json").read_text())
    assert "shared_model_unknown_output_thresold" in original and "camera_pitch" in original
    path = tmp_path / "project_configuration.json"
    path.write_text(json.dumps(original))
    config = load_config(path)
    assert config.ontologies == ("Cytoplasm", "Mitochondrion", "Vesicle", "Void")
    assert config.z_sum == 2 and config.ontology_annotation_box_size == 64
    assert config.legacy["camera_pitch"] == -30.0
    # Written back, every old key is still there with its value.
    write_config(config, path)
    rewritten = json.loads(path.read_text())
    for key, value in original.items():
        assert rewritten[key] == value, key


def test_config_is_immutable():
    config = ProjectConfig()
    with pytest.raises(FrozenInstanceError):
        config.z_sum = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.legacy["x"] = 1  # type: ignore[index]


def test_misspelled_key_names_it_and_suggests(tmp_path):
    path = tmp_path / "project_configuration.json"
    path.write_text(json.dumps({"z_summ": 4}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "'z_summ'" in message and "did you mean 'z_sum'" in message and "\n" not in message


def test_wrong_type_names_key_expected_and_found(tmp_path):
    path = tmp_path / "project_configuration.json"
    path.write_text(json.dumps({"z_sum": "4", "ontologies": "Void"}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "'z_sum': expected an integer, found a string" in message
    assert "'ontologies': expected a list of strings, found a string" in message


def test_not_json(tmp_path):
    path = tmp_path / "project_configuration.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="pom init"):
        load_config(tmp_path / "project_configuration.json")


@pytest.mark.parametrize("text", ["0,x", "", "-1", "a", "0,0", "gpu"])
def test_bad_gpus(text):
    with pytest.raises(ConfigError, match="GPU indices"):
        parse_gpus(text)


def test_gpus_parse():
    assert parse_gpus("0,1, 3") == [0, 1, 3]
    assert parse_gpus("cpu") is None and parse_gpus(" CPU ") is None
