"""Outputs stay byte-identical to those stored before the inference engine was split into layers.

``tests/data/golden/outputs.json`` holds the SHA-256 of every output that ``pom-infer``
wrote at commit 4a2a4bf on the fixture project with two tiny trained models stored beside
it. A refactoring that changes one bit of any probability, header or label fails here; the
differing outputs are kept in pytest's tmp folder for inspection.
"""

import hashlib
import json

import pytest

from pom_inference.cli import main as infer_main

from ..helpers import AIS_MINI, DATA

GOLDEN = DATA / "golden"
RUNS = {
    "out_f32": ["shared.onnx", "--tomograms", AIS_MINI / "tomograms", "--macromolecules", AIS_MINI / "macromolecules",
                "--tta", "4"],
    "out_u8": ["shared.onnx", "--tomograms", AIS_MINI / "tomograms", "--macromolecules", AIS_MINI / "macromolecules",
               "--tta", "8", "--dtype", "uint8", "--classes", "Mitochondrion,Void"],
    "out_single": ["Mitochondrion.onnx", "--tomograms", AIS_MINI / "test", "--tta", "2"],
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_outputs_equal_the_stored_ones(run, tmp_path):
    expected = {k.split("/", 1)[1]: v for k, v in json.loads((GOLDEN / "outputs.json").read_text())["sha256"].items()
                if k.startswith(run + "/")}
    model, *rest = RUNS[run]
    out = tmp_path / run
    assert infer_main(["process", str(GOLDEN / model), *map(str, rest), "--output", str(out), "--gpus", "cpu"]) == 0
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.mrc"))}
    assert got.keys() == expected.keys()
    differ = [name for name in got if got[name] != expected[name]]
    assert not differ, f"outputs differ from the stored ones: {differ} (kept in {out})"
