"""What tests share: fixture paths, a copy of the Ais fixture project, tiny ONNX models and tomograms."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
AIS_MINI = DATA / "ais_mini"
EXPECTED_PHASE1 = DATA / "expected_pom_phase1"
REAL_MRC = DATA / "real_mrc"


def one_line_error(capsys, *needles):
    """The one line on stderr (no traceback anywhere), after checking it names every one of ``needles``."""
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def copy_project(dst: Path) -> Path:
    """A writable copy of the Ais fixture project at ``dst``."""
    shutil.copytree(AIS_MINI, dst)
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


def initialised_project(dst: Path, settings: dict) -> Path:
    """A copy of the fixture project with ``settings`` merged into its configuration, after ``pom single initialize``."""
    import json

    from pom_training.cli import main as pom_main

    project = copy_project(dst)
    path = project / "project_configuration.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    assert pom_main(["--project", str(project), "single", "initialize"]) == 0
    return project


def make_onnx_model(path: Path, channels=("Density",), classes=("Void",), z_sum: int = 1, multiple: int = 4,
                    kind: str = "single", seed: int = 0, metadata: bool = True, only_hw=None) -> Path:
    """A tiny ONNX model (3x3 conv + sigmoid/softmax, NHWC) with Pom metadata, built without TensorFlow.

    ``only_hw=(h, w)`` adds a constant of that size to the output: the graph is valid, but
    ONNX Runtime fails inside ``session.run`` for images of any other size.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pom_common.modelmeta import ModelInfo
    from pom_common.normalise import processing_normalisation

    rng = np.random.default_rng(seed)
    c, k = len(channels), len(classes)
    weight = rng.standard_normal((k, c, 3, 3)).astype(np.float32) * 0.5
    bias = rng.standard_normal(k).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Softmax" if kind == "shared" else "Sigmoid", ["conv"], ["act"],
                         **({"axis": 1} if kind == "shared" else {})),
        helper.make_node("Transpose", ["act"], ["nhwc" if only_hw else "output"], perm=[0, 2, 3, 1]),
    ]
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
    if only_hw:
        nodes.append(helper.make_node("Add", ["nhwc", "zeros"], ["output"]))
        initializers.append(numpy_helper.from_array(np.zeros((1, *only_hw, k), np.float32), "zeros"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "H", "W", c])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "H", "W", k])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        info = ModelInfo(kind=kind, classes=tuple(classes), channels=tuple(channels), z_sum=z_sum,
                         normalisation={ch: processing_normalisation(ch) for ch in channels}, size_multiple=multiple,
                         voxel_size=10.0, version="test")
        entry = model.metadata_props.add()
        entry.key, entry.value = "pom", info.to_json()
    onnx.save(model, str(path))
    return path


def make_tomograms(folder: Path, n: int, shape=(12, 20, 24), channels=(), seed: int = 0, voxel_size: float = 10.0,
                   age: float = 60.0):
    """n small float32 tomograms TS_000..; uint8 channel volumes beside them.

    Their modification times are set ``age`` seconds back, as a lab's files are: inputs
    modified moments ago are watched for a couple of seconds before they are read.
    """
    import numpy as np

    from pom_common.mrcio import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"TS_{i:03d}.mrc"
        write_volume(path, rng.standard_normal(shape).astype(np.float32), voxel_size)
        for channel in channels:
            write_volume(folder / f"TS_{i:03d}__{channel}.mrc", rng.integers(0, 256, shape).astype(np.uint8), voxel_size)
        paths.append(path)
    if age:
        then = time.time() - age
        for p in folder.glob("TS_*.mrc"):
            os.utime(p, (then, then))
    return paths


_copy_project = copy_project  # the name older tests use
