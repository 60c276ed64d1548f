"""The README's Python example runs as written, on the fixture project."""

import os
import re
import shutil
from pathlib import Path

import numpy as np

from .helpers import DATA, copy_project

README = Path(__file__).parent.parent / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_array_example_runs(tmp_path, capsys):
    project = copy_project(tmp_path / "project")
    (project / "models" / "phase2").mkdir(parents=True)
    shutil.copy(DATA / "golden" / "shared.onnx", project / "models" / "phase2" / "shared.onnx")
    code = _block_after("### From Python")
    assert len(code.strip().splitlines()) <= 12
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(project)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    probabilities, model = namespace["probabilities"], namespace["model"]
    assert probabilities.shape == (20, 80, 80, len(model.info.classes))
    assert np.allclose(probabilities.sum(-1), 1, atol=1e-4)  # softmax over the classes
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0 (8, 80, 80, 5)" and len(lines) == 3
