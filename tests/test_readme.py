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


def test_the_quick_start_is_what_the_benchmark_measures():
    """The README's first 20 lines: install, make demo, pom init, then the five commands bench/first_project.py times."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("first_project", README.parent / "bench" / "first_project.py")
    assert spec is not None and spec.loader is not None
    first = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(first)
    head = "\n".join(README.read_text().splitlines()[:20])
    block = re.search(r"```bash\n(.*?)```", head, re.S)
    assert block, "no shell block in the README's first 20 lines"
    commands = [line.split("#")[0].split() for line in block.group(1).splitlines() if line.strip()]
    assert commands[0][:2] == ["pip", "install"] and ["make", "demo"] in commands
    assert [c[1:] for c in commands if c[:1] == ["pom"]] == [list(step) for step in first.STEPS]
    for key, value in first.FIRST_TRY.items():  # the first-try settings, as the README writes them
        assert f'"{key}": {value if isinstance(value, int) else chr(34) + value + chr(34)}' in head, key
