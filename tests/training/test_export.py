"""Keras -> ONNX export: many exports in one process, deterministic re-export, failures in -all 1.

Issue #17: with tf2onnx, about one export in twenty of a single-feature network came out with
a 5-D output (1, B, H, W, 1) after other work in the same process; the converter that replaced
it (issue 22) is checked here on the same twelve mixed networks, one after another.
"""

import json
import shutil

import numpy as np
import pytest

from pom_common.config import ProjectConfig
from pom_common.errors import ModelError
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_training.cli import main as pom_main
from pom_training.export import convert, errors, exporter, metadata, parity
from pom_training.fitting.config import TrainConfig
from pom_training.models.unet import build_unet

from ..helpers import initialised_project

pytestmark = pytest.mark.slow  # every test here builds, trains or exports networks with TensorFlow

TINY = {"GPUS": "cpu", "model_base_filters": 4, "model_depth": 2, "single_model_epochs": 2, "single_model_batch_size": 16,
        "ontologies": ["Mitochondrion", "Vesicle"]}

#: (input channels, classes, activation, depth, training steps): mixed on purpose.
MODELS = [(1, 1, "sigmoid", 2, 0), (3, 1, "sigmoid", 2, 2), (2, 3, "softmax", 2, 0), (7, 1, "sigmoid", 3, 0),
          (4, 5, "softmax", 2, 2), (1, 2, "softmax", 3, 0), (3, 1, "sigmoid", 2, 0), (5, 1, "sigmoid", 2, 2),
          (2, 1, "sigmoid", 3, 0), (3, 4, "softmax", 2, 0), (6, 1, "sigmoid", 2, 0), (1, 1, "sigmoid", 2, 2)]


def _model(seed: int, channels: int, classes: int, activation: str, depth: int, steps: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_unet(channels, classes, base_filters=4, depth=depth, activation=activation)
    if steps:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((4 * steps, 16, 16, channels)).astype(np.float32)
        y = rng.random((4 * steps, 16, 16, classes)).astype(np.float32)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=True)  # no tracing: fast
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    return model


def _info(channels: int, classes: int, depth: int) -> ModelInfo:
    kind = "single" if classes == 1 else "shared"
    config = ProjectConfig(macromolecules=("Density", *(f"ch{i}" for i in range(1, channels))))
    return metadata.model_metadata(config, kind, tuple(f"c{i}" for i in range(classes)), TrainConfig(1, 1, 4, depth),
                                   10.0)


def _run_onnx(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_many_exports_in_one_process(tmp_path):
    """Twelve different networks, some after training steps, exported one after another."""
    first = None
    for i, (channels, classes, activation, depth, steps) in enumerate(MODELS):
        model = _model(i, channels, classes, activation, depth, steps)
        path = exporter.export_onnx(model, tmp_path / f"m{i}.onnx", _info(channels, classes, depth))  # checks parity
        m = 2**depth
        x = np.random.default_rng(100 + i).standard_normal((3, 5 * m, 2 * m, channels)).astype(np.float32)
        got, expected = _run_onnx(path, x), np.asarray(model(x, training=False))
        assert got.shape == expected.shape == (3, 5 * m, 2 * m, classes), f"model {i}"
        assert np.max(np.abs(got - expected)) < parity.PARITY_TOLERANCE, f"model {i}"
        if i == 0:
            first = (model, path.read_bytes())
    # The first network again, after eleven other exports: the same bytes.
    again = exporter.export_onnx(first[0], tmp_path / "again.onnx", _info(1, 1, 2))
    assert again.read_bytes() == first[1]


def test_a_layer_the_writer_does_not_know_goes_to_tf2onnx(tmp_path, caplog):
    """Dropout and LeakyReLU are not our U-Net's: tf2onnx converts that network, said in one line, and checked."""
    import logging

    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 2), name="input")
    x = keras.layers.LeakyReLU(negative_slope=0.2)(keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Dropout(0.1)(inputs)))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    with pytest.raises(errors.UnknownLayer, match="the writer does not know Dropout layers"):
        convert.convert(model)
    with caplog.at_level(logging.INFO, logger="pom_training.export.exporter"):
        path = exporter.export_onnx(model, tmp_path / "m.onnx", _info(2, 1, 2))  # checks parity
    said = [r.getMessage() for r in caplog.records if "tf2onnx" in r.getMessage()]
    assert len(said) == 1 and "m.onnx" in said[0] and "Dropout" in said[0], said
    x = np.random.default_rng(1).standard_normal((2, 12, 20, 2)).astype(np.float32)
    got, expected = _run_onnx(path, x), np.asarray(model(x, training=False))
    assert got.shape == expected.shape == (2, 12, 20, 1) and np.max(np.abs(got - expected)) < parity.PARITY_TOLERANCE
    assert [t.name for t in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left
    from pom_inference.session import load_model

    assert load_model(path, quiet=True).info.channels == ("Density", "ch1")
    strided = keras.Model(inputs, keras.layers.Conv2D(1, 3, strides=2, padding="same")(inputs))
    with pytest.raises(errors.UnknownLayer, match="'same' padding with strides"):
        convert.convert(strided)


def test_the_graph_is_plain_onnx(tmp_path):
    """Opset 17 at IR version 8 (older ONNX Runtimes load it), dynamic batch/height/width, weights stored once."""
    import onnx

    model = _model(0, 2, 3, "softmax", 2, 1)
    proto = convert.convert(model)
    assert proto.ir_version == 8 and [o.version for o in proto.opset_import] == [17]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*proto.graph.input,
                                                                                        *proto.graph.output)]
    assert dims == [["batch", "height", "width", 2], ["batch", "height", "width", 3]]
    stored = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert stored == convert.parameter_count(model) - sum(2 * layer.moving_mean.shape[0] for layer in norms)  # 4 -> 2
    onnx.checker.check_model(proto)
    # The file, written one weight at a time, parses to the same model (+ metadata); again: the same bytes.
    convert.write_onnx(model, tmp_path / "a.onnx", {"pom": "{}"})
    convert.write_onnx(model, tmp_path / "b.onnx", {"pom": "{}"})
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pom", "{}"
    assert onnx.load(tmp_path / "a.onnx") == proto
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


# ----------------------------------------------------------------------------- pom export


@pytest.fixture(scope="module")
def initialised(tmp_path_factory):
    """The fixture project, two features, tiny settings, after ``pom single initialize``."""
    return initialised_project(tmp_path_factory.mktemp("export") / "project", TINY)


def _copy(project, tmp_path):
    return shutil.copytree(project, tmp_path / "project")


def test_pom_export_recreates_the_same_onnx(initialised, tmp_path, capsys):
    project = _copy(initialised, tmp_path)
    models = project / "models" / "phase1"
    capsys.readouterr()
    assert pom_main(["--project", str(project), "single", "train", "-o", "Vesicle"]) == 0
    said = capsys.readouterr().err.splitlines()  # what the export does, said as it starts and as it ends
    assert len([line for line in said if "exporting" in line and "Vesicle.onnx" in line and "weights" in line]) == 1
    assert len([line for line in said if "wrote" in line and "Vesicle.onnx" in line and "agree" in line]) == 1
    trained = (models / "Vesicle.onnx").read_bytes()
    meta = json.loads((models / "Vesicle.metadata.json").read_text())
    assert meta["classes"] == ["Vesicle"] and len(meta["training"]["losses"]) == 2
    (models / "Vesicle.onnx").unlink()
    assert pom_main(["--project", str(project), "export", "-o", "Vesicle"]) == 0
    assert (models / "Vesicle.onnx").read_bytes() == trained  # same graph, same metadata, same bytes
    # Networks trained before the metadata file existed: the metadata comes from the .onnx.
    (models / "Vesicle.metadata.json").unlink()
    assert pom_main(["--project", str(project), "export", "-o", "Vesicle"]) == 0
    assert (models / "Vesicle.onnx").read_bytes() == trained
    # -all 1 exports what is trained and names what is not.
    capsys.readouterr()
    assert pom_main(["--project", str(project), "export", "-all", "1"]) == 1
    out, err = capsys.readouterr()
    assert "Vesicle.onnx" in out and (models / "Vesicle.onnx").read_bytes() == trained
    assert "'Mitochondrion'" in err and "train it with: pom single train -o Mitochondrion" in err
    assert "1 of 2 features not exported" in err and "pom export -o FEATURE" in err


def test_pom_export_shared_and_usage_errors(initialised, tmp_path, capsys):
    project = _copy(initialised, tmp_path)
    folder = project / "models" / "phase2"
    folder.mkdir(parents=True)
    model = _model(3, 3, 3, "softmax", 2, 2)
    model.save(folder / "shared.keras")
    info = _info(3, 3, 2)
    metadata.write_metadata(folder / "shared.keras", info)
    written = exporter.export_onnx(model, folder / "shared.onnx", info).read_bytes()
    (folder / "shared.onnx").unlink()
    assert pom_main(["--project", str(project), "export", "shared"]) == 0
    assert (folder / "shared.onnx").read_bytes() == written
    capsys.readouterr()
    assert pom_main(["--project", str(project), "export"]) == 2
    assert pom_main(["--project", str(project), "export", "shared", "-o", "Vesicle"]) == 2
    assert pom_main(["--project", str(project), "export", "-o", "Golgi"]) == 2
    err = capsys.readouterr().err
    assert "give one of -o FEATURE, -all 1 or shared" in err and "'Golgi'" in err
    # Metadata neither beside the .keras nor in an .onnx: say so, write nothing.
    (folder / "shared.metadata.json").unlink()
    (folder / "shared.onnx").unlink()
    assert pom_main(["--project", str(project), "export", "shared"]) == ModelError.exit_code
    assert "no metadata" in capsys.readouterr().err and not (folder / "shared.onnx").exists()


def test_failed_export_does_not_stop_training_the_others(initialised, tmp_path, monkeypatch, capsys):
    project = _copy(initialised, tmp_path)
    models = project / "models" / "phase1"
    real = exporter.export_onnx

    def failing(model, path, info, *args, **kwargs):
        if path.name == "Mitochondrion.onnx":  # the first feature trained
            raise errors.ExportError(f"{path}: export check failed: ONNX output shape (1, 2, 12, 8, 1) != Keras (2, 12, 8, 1)")
        return real(model, path, info, *args, **kwargs)

    monkeypatch.setattr(exporter, "export_onnx", failing)
    assert pom_main(["--project", str(project), "single", "train", "-all", "1"]) == 1
    err = capsys.readouterr().err
    assert "Mitochondrion.onnx: export check failed" in err and "to export it again: pom export -o Mitochondrion" in err
    assert "1 of 2 features trained (their .keras files are kept), but not exported: 'Mitochondrion'" in err
    assert (models / "Vesicle.onnx").is_file() and (models / "Vesicle.keras").is_file()  # trained after
    assert (models / "Mitochondrion.keras").is_file() and (models / "Mitochondrion.metadata.json").is_file()
    assert not (models / "Mitochondrion.onnx").exists() and not (models / "Mitochondrion_checkpoint.keras").exists()
    monkeypatch.undo()
    assert pom_main(["--project", str(project), "export", "-o", "Mitochondrion"]) == 0
    with open(models / "Mitochondrion.onnx", "rb") as handle:
        import onnx

        proto = onnx.load(handle)
    info = ModelInfo.from_json(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY), "test")
    assert info.classes == ("Mitochondrion",) and len(info.training["losses"]) == 2
