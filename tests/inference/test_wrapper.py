"""The TTA wrapper graph (built around the network at load time) equals the NumPy TTA on the CPU provider."""

import numpy as np
import pytest

from pom_inference.predict import predict_slices
from pom_inference.session import load_model
from pom_inference.wrapper import GraphPredictor, wrap

from ..helpers import make_onnx_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_onnx_model(tmp_path_factory.mktemp("w") / "m.onnx", channels=("Density", "Membrane"),
                           classes=("A", "B", "C"), kind="shared", multiple=8)
    return load_model(path, quiet=True)


@pytest.mark.parametrize("tta", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(3, 20, 24), (2, 17, 9), (2, 1, 7), (1, 16, 16)])
def test_wrapper_equals_numpy_tta(model, tta, shape):
    x = np.random.default_rng(tta).standard_normal((*shape, 2), dtype=np.float32)
    reference = predict_slices(model.run, x, 8, tta, batch=8)
    planes = GraphPredictor(model, x.shape[1:], tta, batch=4, classes=[2, 0])(x)
    assert planes.shape == (2, *shape)
    assert np.abs(planes - np.moveaxis(reference[..., [2, 0]], -1, 0)).max() <= TOLERANCE
    as_uint8 = GraphPredictor(model, x.shape[1:], tta, batch=4, classes=[1], kind="uint8")(x)
    assert as_uint8.dtype == np.uint16
    # a probability within 1e-5 of a rounding boundary may round the other way
    assert np.abs(as_uint8[0].astype(int) - np.rint(np.clip(reference[..., 1], 0, 1) * 255)).max() <= 1


def test_wrapper_shares_the_weights(model):
    import onnx

    proto = onnx.load(str(model.path))
    wrapped = wrap(proto, 8, [0, 1, 2])
    assert len(wrapped.graph.initializer) - len(proto.graph.initializer) < 64  # the TTA's constants only
    assert sum(n.op_type == "Conv" for n in wrapped.graph.node) == 8 * sum(n.op_type == "Conv" for n in proto.graph.node)


def test_a_run_with_the_wrapper_graph_writes_the_same_files(tmp_path):
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions

    from ..helpers import make_tomograms

    model = make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared")
    tomograms = tuple(str(p) for p in make_tomograms(tmp_path / "t", 2, shape=(20, 20, 24)))
    files = {}
    for graph in (False, True):
        opts = ProcessOptions(model=str(model), tomograms=tomograms, output_dir=str(tmp_path / f"o{graph}"),
                              tta_graph=graph, dtype="uint8", batch=3)
        assert not process(opts, [None], progress=False).failed
        files[graph] = {p.name: p.read_bytes() for p in (tmp_path / f"o{graph}").glob("*.mrc")}
    assert files[True] == files[False] and len(files[True]) == 4
