"""make quality's runs: a setting given to one run does not stay in force for the next."""

import json

from pom_common.config import default_config_dict
from pom_common.constants import CONFIG_FILENAME


def test_a_set_left_out_reverts_to_the_generated_value(tmp_path):
    from pom_tools.quality import GENERATED, run_settings

    document = {**default_config_dict(), "ontologies": ["A"], "z_sum": 2}
    for name in (CONFIG_FILENAME, GENERATED):
        (tmp_path / name).write_text(json.dumps(document))
    first = run_settings(tmp_path, {"shared_model_negative_weight": 1.0, "z_sum": 1})
    assert first.shared_model_negative_weight == 1.0 and first.z_sum == 1
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(first.to_dict()))  # as run_project leaves it
    again = run_settings(tmp_path, {})
    assert again.shared_model_negative_weight == 3.0 and again.z_sum == 2 and again.ontologies == ("A",)
    (tmp_path / GENERATED).unlink()  # a project generated before the copy: its configuration as it is
    assert run_settings(tmp_path, {}).shared_model_negative_weight == 1.0
