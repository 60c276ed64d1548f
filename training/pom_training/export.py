"""Keras -> ONNX export (tf2onnx) with Pom metadata and a parity check against Keras.

The export is deterministic: the same weights and metadata give the same ONNX bytes, in a
fresh process or after other exports (so ``pom export`` reproduces the file training wrote).
Two things make it so: tf2onnx runs with the optimiser fix below (:func:`_optimizers`), and
the converted graph is written in a canonical form (:func:`canonical_graph`).

The metadata of every exported network is also saved beside its ``.keras`` file, as
``<name>.metadata.json`` (:func:`metadata_path`), so the network can be exported again
without its training run.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pom_common import __version__
from pom_common.atomic import atomic_path, atomic_write_text
from pom_common.config import ProjectConfig
from pom_common.constants import BIN_FACTOR, ONNX_OPSET
from pom_common.errors import ModelError
from pom_common.modelmeta import METADATA_KEY, ModelInfo
from pom_common.normalise import processing_normalisation

logger = logging.getLogger(__name__)

#: Largest allowed |ONNX Runtime - Keras| on the parity check input.
PARITY_TOLERANCE = 1e-4
#: Suffix of the metadata file written beside a network's ``.keras`` file.
METADATA_SUFFIX = ".metadata.json"
#: Names of the exported graph's input and output, and of their dynamic axes.
INPUT_NAME, OUTPUT_NAME = "input", "output"
DYNAMIC_AXES = ("batch", "height", "width")


class ExportError(ModelError):
    """A trained network could not be converted or failed the export check (a failed run, exit 1).

    Its ``.keras`` file is kept, so ``pom export`` can try again.
    """

    exit_code = 1


def model_metadata(config: ProjectConfig, kind: str, classes: tuple[str, ...], tc: Any, voxel_size: float,
                   extra: dict[str, Any] | None = None) -> ModelInfo:
    """The metadata an exported network carries: what it expects and produces, and how it was trained."""
    training = {"epochs": tc.epochs, "batch_size": tc.batch_size, "learning_rate": tc.learning_rate,
                "base_filters": tc.base_filters, "depth": tc.depth,
                "ontology_annotation_box_size": config.ontology_annotation_box_size}
    training.update(extra or {})
    return ModelInfo(kind=kind, classes=tuple(classes), channels=tuple(config.macromolecules), z_sum=config.z_sum,
                     bin_factor=BIN_FACTOR,
                     normalisation={c: processing_normalisation(c, config.density_normalisation)
                                    for c in config.macromolecules},
                     normalisation_window=max(1, config.ontology_annotation_box_size // BIN_FACTOR),
                     size_multiple=2**tc.depth, voxel_size=float(voxel_size), training=training, version=__version__)


# ----------------------------------------------------------------------------- metadata beside the .keras


def metadata_path(keras_path: str | Path) -> Path:
    """``models/phase1/<name>.metadata.json`` for ``models/phase1/<name>.keras``."""
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.stem + METADATA_SUFFIX)


def write_metadata(keras_path: str | Path, info: ModelInfo) -> Path:
    """Save the metadata the export of ``keras_path`` embeds (the JSON text, verbatim)."""
    path = metadata_path(keras_path)
    atomic_write_text(path, info.to_json())
    return path


def read_metadata(keras_path: str | Path, onnx_path: str | Path) -> str:
    """The metadata JSON to embed when exporting ``keras_path`` again.

    From ``<name>.metadata.json`` (written at training time), else from the existing
    ``onnx_path`` (networks trained before the metadata file existed).

    Raises
    ------
    ModelError
        Neither file holds Pom metadata, or it is malformed.
    """
    sidecar, onnx_path = metadata_path(keras_path), Path(onnx_path)
    if sidecar.is_file():
        text, source = sidecar.read_text(encoding="utf-8"), str(sidecar)
    elif onnx_path.is_file():
        import onnx

        try:
            proto = onnx.load(str(onnx_path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
            raise ModelError(f"{onnx_path}: not an ONNX model ({exc}); cannot take its metadata") from None
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
        source = str(onnx_path)
    else:
        raise ModelError(f"{keras_path}: no metadata to export it with (neither {sidecar.name} nor {onnx_path.name} "
                         "exists); train it again")
    ModelInfo.from_json(text, source)  # raises ModelError when missing or malformed
    return text


# ----------------------------------------------------------------------------- export


def export_onnx(model, path: str | Path, info: ModelInfo | str, opset: int = ONNX_OPSET) -> Path:
    """Convert ``model`` with dynamic batch, H and W; embed ``info``; check against Keras; write ``path``.

    Parameters
    ----------
    model : keras.Model
        Channels-last network, (B, H, W, C) -> (B, H, W, K).
    path : str or Path
        The ``.onnx`` file, written atomically and only when the check passes.
    info : ModelInfo or str
        The metadata, or its JSON text (embedded verbatim, as ``pom export`` does).
    opset : int
        ONNX opset.

    Raises
    ------
    ModelError
        ``info`` is malformed JSON metadata.
    ExportError
        tf2onnx cannot convert the model, or ONNX Runtime and Keras disagree in shape or by
        more than :data:`PARITY_TOLERANCE` (nothing is written).
    """
    import onnx

    path = Path(path)
    text = info.to_json() if isinstance(info, ModelInfo) else info
    parsed = info if isinstance(info, ModelInfo) else ModelInfo.from_json(text, str(path))
    n_channels = int(model.input_shape[-1])
    try:
        proto = convert(model, opset)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise ExportError(f"{path}: conversion to ONNX failed ({type(exc).__name__}: {exc})") from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.checker.check_model(proto)
    data = proto.SerializeToString(deterministic=True)
    _check_parity(model, data, n_channels, parsed.size_multiple, path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def export_saved(keras_path: str | Path, onnx_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Export a saved ``.keras`` network again, with its saved metadata (:func:`read_metadata`).

    Gives the same bytes as the export at training time.

    Raises
    ------
    InputError
        ``keras_path`` does not exist.
    ModelError
        It cannot be loaded, has no metadata, or its export fails.
    """
    from pom_common.errors import InputError

    keras_path = Path(keras_path)
    if not keras_path.is_file():
        raise InputError(f"{keras_path}: no trained network to export")
    text = read_metadata(keras_path, onnx_path)
    import keras

    try:
        model = keras.models.load_model(keras_path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
        raise ModelError(f"{keras_path}: cannot load the trained network ({type(exc).__name__}: {exc})") from None
    return export_onnx(model, onnx_path, text, opset)


def convert(model, opset: int = ONNX_OPSET, optimizers=None):
    """tf2onnx conversion of ``model`` (input ``input`` (B, H, W, C), output ``output``), canonical form.

    The same steps as ``tf2onnx.convert.from_function`` (trace, freeze, map to ONNX,
    optimise), except that the optimisers are ``optimizers`` (name -> tf2onnx optimiser
    class), by default :func:`_optimizers`.
    """
    import tensorflow as tf
    from tf2onnx import optimizer, tf_loader, tfonnx
    from tf2onnx.convert import tensor_names_from_structed

    n_channels = int(model.input_shape[-1])
    spec = (tf.TensorSpec((None, None, None, n_channels), tf.float32, name=INPUT_NAME),)  # dynamic B, H, W

    @tf.function(input_signature=spec)
    def serve(x):
        return {OUTPUT_NAME: model(x, training=False)}

    concrete = serve.get_concrete_function(*spec)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, inputs, outputs)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(frozen, name="")
            graph = tfonnx.process_tf_graph(tf_graph, continue_on_error=True, opset=opset, input_names=inputs,
                                            output_names=outputs,
                                            tensors_to_rename=tensor_names_from_structed(concrete, inputs, outputs))
            graph = optimizer.optimize_graph(graph, catch_errors=True, optimizers=optimizers or _optimizers())
            proto = graph.make_model("pom")
    return canonical_graph(proto)


def _optimizers():
    """tf2onnx's optimiser sequence, with a fix for two of its bugs (issue #17).

    About one export in twenty of a single-feature network had a 5-D output (1, B, H, W, 1).
    Cause (tf2onnx 1.17). The channel-1 head ``Conv (NCHW) -> Transpose -> Sigmoid ->
    Identity -> graph output`` goes wrong in two steps:

    1. ``TransposeOptimizer.post_optimize_action`` replaces every Transpose that only moves
       a size-1 axis by a Reshape while it iterates over the graph's *live* node list
       (``graph.get_nodes()``): each replacement removes the Transpose from the list being
       iterated, so the node right after it is skipped. That list is rebuilt after every
       optimiser pass from ``set(nodes)`` (``Graph.extract_sub_graph_nodes``), and Node
       objects hash by ``id()``, i.e. by memory address: the order, hence which node is
       skipped, changes from one conversion to the next and with whatever ran before in the
       process (the heap's state); PYTHONHASHSEED does not fix it. In the tiny U-Nets of
       the issue about 15 of the ~250 nodes are such Transposes, so the head's Transpose
       follows one of them about one time in twenty; it then survives the first optimiser
       round, and ``IdentityOptimizer`` makes it the producer of the graph output.
    2. In the next round it becomes ``Reshape(x, Gather(Shape(x)))`` producing the graph
       output, and ``ReshapeOptimizer`` rewrites that as ``Reshape(x, [1, -1, 0, 0, 1])``
       followed by ``Squeeze(axes=[0])``, wired in with ``insert_node_on_output``, which
       re-points the consumers of the Reshape but not the graph output: the Squeeze is
       dropped as unused and the model returns (1, B, H, W, 1). The parity check caught it.

    Fix: the post pass iterates over a copy of the node list (every such Transpose becomes
    a Reshape in the first round, whatever the order), and the reshape optimiser leaves a
    Reshape that produces a graph output alone. The shared network (two or more output
    channels) has no such head Transpose and was never affected.
    """
    from collections import OrderedDict

    from tf2onnx import optimizer
    from tf2onnx.optimizer.reshape_optimizer import ReshapeOptimizer
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    class SnapshotTransposeOptimizer(TransposeOptimizer):
        """``post_optimize_action`` walks a copy of the node list, so it skips no node."""

        _snapshot = False

        @property
        def nodes(self):
            nodes = self._g.get_nodes()
            return list(nodes) if self._snapshot else nodes

        def post_optimize_action(self):
            self._snapshot = True
            try:
                super().post_optimize_action()
            finally:
                self._snapshot = False

    class OutputSafeReshapeOptimizer(ReshapeOptimizer):
        """Never rewrite a Reshape whose output is a graph output (its Squeeze would be lost)."""

        def _optimize_reshape(self, node, graph):
            if set(node.output) & set(graph.outputs):
                return False
            return super()._optimize_reshape(node, graph)

    replace = {TransposeOptimizer: SnapshotTransposeOptimizer, ReshapeOptimizer: OutputSafeReshapeOptimizer}
    return OrderedDict((name, replace.get(cls, cls)) for name, cls in optimizer._get_optimizers().items())


# ----------------------------------------------------------------------------- canonical form


def canonical_graph(proto):
    """Rewrite a converted model in a canonical form: same computation, same bytes every time.

    tf2onnx's node order, node and tensor names (a process-wide counter, Keras layer
    numbering) and which of several equal constants it keeps all vary between conversions
    of the same network. Here every tensor is identified by what it computes (a hash over
    op type, attributes and the identities of its inputs; weights by value), equal
    computations are kept once, nodes are ordered topologically with ties broken by that
    identity, and everything is renamed by position. Intermediate shape annotations are
    dropped (ONNX Runtime infers them); the dynamic axes are named ``batch``, ``height``,
    ``width``.

    Parameters
    ----------
    proto : onnx.ModelProto
        Without subgraphs (no If/Loop); modified in place and returned.
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    ident: dict[str, str] = {"": "none"}  # tensor name -> identity
    for i, value in enumerate(graph.input):
        ident[value.name] = f"input{i}"
    weights = {}
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        key = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()
        ident[tensor.name] = key
        weights.setdefault(key, tensor)
    producer = {name: node for node in graph.node for name in node.output}

    def node_identity(node) -> str:
        digest = hashlib.sha256(f"{node.domain}|{node.op_type}|{len(node.output)}".encode())
        for attribute in _attributes(node):
            digest.update(attribute.SerializeToString(deterministic=True))
        for name in node.input:
            digest.update(ident[name].encode() + b"|")
        return digest.hexdigest()

    # Identities in dependency order (no recursion: the graph can be deep).
    nodes_of: dict[str, Any] = {}  # identity -> first node with it
    deps: dict[str, set[str]] = {}
    pending = list(graph.node)
    while pending:
        waiting = []
        for node in pending:
            if not all(name in ident for name in node.input):
                waiting.append(node)
                continue
            key = node_identity(node)
            for j, name in enumerate(node.output):
                ident[name] = f"{key}:{j}"
            if key not in nodes_of:
                nodes_of[key] = node
                deps[key] = {ident[name].split(":")[0] for name in node.input if name in producer}
        if len(waiting) == len(pending):
            raise ModelError(f"canonical_graph: inputs never produced: {sorted({n.input[0] for n in waiting})[:3]}")
        pending = waiting

    users: dict[str, list[str]] = {key: [] for key in nodes_of}
    for key, needs in deps.items():
        for need in needs:
            users[need].append(key)
    count = {key: len(needs) for key, needs in deps.items()}
    ready = [key for key, n in count.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        key = heapq.heappop(ready)
        order.append(key)
        for user in users[key]:
            count[user] -= 1
            if count[user] == 0:
                heapq.heappush(ready, user)

    names = {ident[value.name]: value.name for value in (*graph.input, *graph.output)}
    new_weights, new_nodes = [], []
    for k, key in enumerate(order):
        node = nodes_of[key]
        inputs = []
        for name in node.input:
            key_in = ident[name]
            if key_in not in names and key_in in weights:
                names[key_in] = f"w{len(new_weights)}"
                tensor = onnx.TensorProto()
                tensor.CopyFrom(weights[key_in])
                tensor.name, tensor.doc_string = names[key_in], ""
                new_weights.append(tensor)
            inputs.append(names[key_in] if name else "")
        outputs = []
        for j, name in enumerate(node.output):
            names.setdefault(ident[name], f"{node.op_type}_{k}" + (f"_{j}" if j else ""))
            outputs.append(names[ident[name]])
        new = onnx.helper.make_node(node.op_type, inputs, outputs, name=f"{node.op_type}_{k}",
                                    domain=node.domain or None)
        new.attribute.extend(_attributes(node))
        new_nodes.append(new)

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_weights)
    del graph.value_info[:]
    for value in (*graph.input, *graph.output):
        for dim, label in zip(value.type.tensor_type.shape.dim, DYNAMIC_AXES):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    graph.name, graph.doc_string, proto.doc_string = "pom", "", ""
    opsets = sorted(proto.opset_import, key=lambda o: o.domain)
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    return proto


def _attributes(node) -> list:
    """``node``'s attributes sorted by name, tensor values unnamed (a name is no part of the value)."""
    import onnx

    out = []
    for attribute in sorted(node.attribute, key=lambda a: a.name):
        if attribute.HasField("g") or attribute.graphs:
            raise ModelError(f"canonical_graph: node {node.name!r} has a subgraph (If, Loop): not supported")
        copy = onnx.AttributeProto()
        copy.CopyFrom(attribute)
        if copy.HasField("t"):
            copy.t.name = ""
        out.append(copy)
    return out


def _check_parity(model, data: bytes, n_channels: int, multiple: int, path: Path) -> None:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3 * multiple, 2 * multiple, n_channels)).astype(np.float32)  # non-square
    expected = np.asarray(model(x, training=False))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path}: export check failed: ONNX output shape {got.shape} != Keras {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{path}: export check failed: ONNX Runtime and Keras differ by {diff:.3g} "
                         f"(> {PARITY_TOLERANCE}); nothing written")
    logger.info("export check: ONNX Runtime and Keras agree to %.2g on a %dx%d input", diff, x.shape[1], x.shape[2])
