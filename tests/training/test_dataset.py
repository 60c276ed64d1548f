import json
import shutil

import numpy as np
import pytest
import tifffile

from pom_common.config import load_config, replace
from pom_common.errors import ConfigError
from pom_training.cli import main
from pom_training.data.sampling import phase1_initialize

from ..helpers import EXPECTED_PHASE1


def test_reproduces_original_pom(ais_project):
    config = load_config(ais_project / "project_configuration.json")
    report = phase1_initialize(config, progress=False)
    assert report.images == {"Cytoplasm": 10, "Mitochondrion": 8, "Vesicle": 9, "Void": 6}
    assert report.annotated == {"Cytoplasm": 10, "Mitochondrion": 7, "Vesicle": 8, "Void": 6}
    assert len(report.dropped) == 5
    info = json.loads((ais_project / "training_datasets" / "phase1" / "info.json").read_text())
    assert info["voxel_size"] == pytest.approx(15.68)
    out = ais_project / "training_datasets" / "phase1"
    for o in config.ontologies:
        for channel in ("y", *config.macromolecules):
            ours = tifffile.imread(out / f"{o}_{channel}.tif")
            pom = tifffile.imread(EXPECTED_PHASE1 / f"{o}_{channel}.tif")
            assert ours.dtype == np.float32 and ours.shape == pom.shape
            np.testing.assert_array_equal(ours, pom.astype(np.float32))


def test_drop_reasons_are_reported(ais_project):
    report = phase1_initialize(load_config(ais_project / "project_configuration.json"), progress=False)
    text = "\n".join(report.dropped)
    assert text.count("leaves the 160x160 image") == 2
    assert text.count("too close to a z end") == 3


def test_cli_prints_table(ais_project, capsys):
    assert main(["--project", str(ais_project), "single", "initialize"]) == 0
    out = capsys.readouterr().out
    assert "Mitochondrion" in out and "dropped box" in out


def test_missing_channel_skips_tomogram(ais_project):
    (ais_project / "macromolecules" / "TS_002__Membrane.mrc").unlink()
    report = phase1_initialize(load_config(ais_project / "project_configuration.json"), progress=False)
    assert any("channel 'Membrane' not found" in s and "TS_002__Membrane.mrc" in s for s in report.skipped_files)
    assert report.tomograms["Void"] == {"TS_001.scns"}


def test_shape_mismatch_skips(ais_project):
    shutil.copy(ais_project / "test" / "TS_003.mrc", ais_project / "tomograms" / "TS_001.mrc")
    report = phase1_initialize(load_config(ais_project / "project_configuration.json"), progress=False)
    assert any("differs from the annotation" in s for s in report.skipped_files)


def test_bad_scns_goes_on(ais_project):
    (ais_project / "tomograms" / "TS_000.scns").write_bytes(b"garbage")
    report = phase1_initialize(load_config(ais_project / "project_configuration.json"), progress=False)
    assert any("TS_000.scns" in s for s in report.skipped_files)
    assert report.images["Cytoplasm"] == 10


def test_features_outside_ontologies_reported(ais_project):
    config = replace(load_config(ais_project / "project_configuration.json"), ontologies=("Void",))
    report = phase1_initialize(config, progress=False)
    assert set(report.unknown_features) == {"Cytoplasm", "Mitochondrion", "Vesicle"}


def test_empty_ontologies(ais_project):
    config = replace(load_config(ais_project / "project_configuration.json"), ontologies=())
    with pytest.raises(ConfigError, match="ontologies"):
        phase1_initialize(config, progress=False)
