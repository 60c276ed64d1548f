"""Reduced precision is used only after it agrees with float32; --workers auto; the run's throughput line."""

import json

import numpy as np
import pytest

from pom_common.workqueue import FileClaimStore
from pom_inference import precision
from pom_inference.cli import main as infer_main
from pom_inference.driver import RunResult, throughput_line
from pom_inference.precision import GATES, Agreement, Gate, choose, compare, resolve, variant
from pom_inference.session import load_model
from pom_inference.worker import WorkerResult
from pom_inference.workers import MAX_PER_GPU, workers_per_device

from ..helpers import make_onnx_model, make_tomograms


def overflowing_model(path):
    """A network float16 cannot hold: its constant 1e6 is beyond float16's range (65504), so (x * 1e6) * 1e-6
    becomes 0.066 x instead of x, and the probabilities softmax(x, -x) move by up to 0.4."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pom_common.modelmeta import ModelInfo

    nodes = [
        helper.make_node("Mul", ["input", "big"], ["a"]),
        helper.make_node("Mul", ["a", "small"], ["c"]),
        helper.make_node("Neg", ["c"], ["d"]),
        helper.make_node("Concat", ["c", "d"], ["logits"], axis=-1),
        helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "overflow",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "H", "W", 1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "H", "W", 2])],
                              [numpy_helper.from_array(np.array(1e6, np.float32), "big"),
                               numpy_helper.from_array(np.array(1e-6, np.float32), "small")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(kind="shared", classes=("A", "B"), channels=("Density",), z_sum=1,
                     normalisation={"Density": "local"}, size_multiple=4, voxel_size=10.0, version="test")
    model.metadata_props.add(key="pom", value=info.to_json())
    onnx.save(model, str(path))
    return path


def _recipes(out):
    store = FileClaimStore(out)
    return [state.done["recipe"] for state in store.states().values() if state.done is not None]


def test_fp16_that_disagrees_falls_back_to_fp32_with_one_line(tmp_path, capsys):
    model = overflowing_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 2, shape=(12, 20, 24))
    outputs = {}
    for name in ("fp32", "fp16"):
        out = tmp_path / name
        assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(out),
                           "--gpus", "cpu", "--precision", name]) == 0
        outputs[name] = {p.name: p.read_bytes() for p in out.glob("*.mrc")}
    lines = [line for line in capsys.readouterr().err.splitlines() if "disagrees with fp32" in line]
    assert len(lines) == 1 and "precision fp16" in lines[0] and "using fp32" in lines[0] and "TS_000" in lines[0]
    assert outputs["fp16"] == outputs["fp32"] and len(outputs["fp32"]) == 4  # float32 ran: the same bytes
    assert all("precision" not in recipe for recipe in _recipes(tmp_path / "fp16"))  # the fp32 recipe


def test_fp16_that_agrees_is_used_and_recorded(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared")
    make_tomograms(tmp_path / "t", 1, shape=(12, 20, 24))
    out = tmp_path / "o"
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(out),
                       "--gpus", "cpu", "--precision", "fp16"]) == 0
    assert "precision fp16: agrees with fp32 on TS_000" in capsys.readouterr().err
    recipes = _recipes(out)
    assert recipes and all(r["precision"] == "fp16" for r in recipes)
    # a float32 run of the same folder sees another recipe's outputs, and says which
    code = infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(out), "--gpus", "cpu"])
    assert code == 1


def test_int8_network_runs_and_strict_gate_refuses_it(tmp_path):
    path = make_onnx_model(tmp_path / "m.onnx", classes=("A", "B", "C"), kind="shared", multiple=4)
    model = load_model(path, quiet=True)
    sample = np.random.default_rng(0).standard_normal((4, 16, 16, 1), dtype=np.float32)
    quantized = variant(model, "int8", sample)
    assert quantized.precision in ("int8", "int8-openvino")
    probabilities = quantized.run(sample)
    assert probabilities.shape == (4, 16, 16, 3) and np.isfinite(probabilities).all()
    assert compare(model.run(sample), probabilities).mean_abs < 0.05
    strict = {"int8": Gate(min_argmax=1.01)}  # no network can pass this
    chosen, line = choose(model, "int8", sample, "TS_x", gates=strict)
    assert chosen is model and "disagrees with fp32 on TS_x" in line and "using fp32" in line


def test_agreement_thresholds():
    reference = np.zeros((1, 2, 2, 2), np.float32)
    reference[..., 0] = 1
    same = compare(reference, reference.copy())
    assert same == Agreement(1.0, 0.0, 0.0) and same.passes(GATES["fp16"]) and same.passes(GATES["int8"])
    flipped = reference[..., ::-1].copy()
    assert not compare(reference, flipped).passes(GATES["fp16"])
    broken = reference.copy()
    broken[0, 0, 0, 0] = np.nan
    assert not compare(reference, broken).passes(Gate(min_argmax=0.0, max_abs=1.0))


def test_auto_precision(monkeypatch):
    assert resolve("auto", 0) == "fp16"
    monkeypatch.setattr(precision, "openvino_available", lambda: False)
    assert resolve("auto", None) == "fp32"
    monkeypatch.setattr(precision, "openvino_available", lambda: True)
    assert resolve("auto", None) == "int8"
    assert resolve("fp16", None) == "fp16"
    with pytest.raises(Exception, match="--precision"):
        resolve("fp8", None)


@pytest.mark.parametrize("devices, cores, free, expected", [
    ([None], 2, None, 1),                  # a small CPU server: one worker with every core
    ([None], 64, None, 4),                 # many cores: one worker per 16
    ([0], 32, 80_000, MAX_PER_GPU),        # one big GPU, many cores: capped
    ([0, 1, 2, 3], 32, 80_000, 2),         # 4 GPUs share 32 cores: 8 cores per GPU, 4 per worker
    ([0], 32, 3_000, 1),                   # a GPU almost full: memory for one
    ([0, 1], 64, None, MAX_PER_GPU),       # the driver does not say: cores decide
    ([0], 1, 80_000, 1),                   # never fewer than one
])
def test_workers_auto(devices, cores, free, expected):
    assert workers_per_device(devices, cores=cores, free_mib=lambda d: free) == expected


def test_workers_auto_on_the_command_line(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A",))
    make_tomograms(tmp_path / "t", 2, shape=(8, 12, 12))
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
                       "--gpus", "cpu", "--workers", "auto"]) == 0
    captured = capsys.readouterr()
    assert "--workers auto: " in captured.err and "tomograms/hour" in captured.out and "GiB/s of input" in captured.out
    assert infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
                       "--gpus", "cpu", "--workers", "many"]) == 2


def test_throughput_line():
    worker = WorkerResult("w", done=["a", "b"], seconds=10.0, network_seconds=7.5, input_bytes=3 * 2**30)
    result = RunResult(done=["a", "b"], workers=[worker], seconds=12.0)
    line = throughput_line(result)
    assert line == ("2 tomograms in 12.0 s: 600.0 tomograms/hour, 0.250 GiB/s of input, "
                    "network busy 75 % of the workers' time")
    assert throughput_line(RunResult(done=["a"], workers=[WorkerResult("w")], seconds=1.0)) == ""
    assert json.dumps(line)  # one printable line
