"""tf2onnx, for a Keras network with a layer the layer-by-layer writer (:mod:`.convert`) does not know.

Our U-Nets never come here. The conversion holds many copies of the weights (the default U-Net:
11.3 GB against 1.06 GB with :mod:`.convert`) and its node names vary between runs, so its
files are not byte-reproducible; the export check (:mod:`.parity`) compares it with Keras as
it does every export. It runs tf2onnx's optimisers with the fix for two of their bugs
(:func:`optimizers`, issue #17).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import keras
import onnx
import tensorflow as tf
from tf2onnx import optimizer, tf_loader, tfonnx
from tf2onnx.convert import tensor_names_from_structed
from tf2onnx.optimizer.reshape_optimizer import ReshapeOptimizer
from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

from .convert import DYNAMIC_AXES, GRAPH_NAME, INPUT_NAME, OUTPUT_NAME


def convert_tf2onnx(model: keras.Model, opset: int) -> onnx.ModelProto:
    """``model`` converted by tf2onnx: input ``input`` (B, H, W, C) -> output ``output``, dynamic B, H, W.

    tf2onnx's own steps (trace, freeze, map to ONNX, optimise) with the fixed optimisers.
    """
    spec = (tf.TensorSpec((None, None, None, int(model.input_shape[-1])), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def serve(x: tf.Tensor) -> dict[str, Any]:
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
            graph = optimizer.optimize_graph(graph, catch_errors=True, optimizers=optimizers())
            proto = graph.make_model(GRAPH_NAME)
    for value in (*proto.graph.input, *proto.graph.output):  # the same axis names as the writer's
        for dim, label in zip(value.type.tensor_type.shape.dim, DYNAMIC_AXES):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    return proto


class _SnapshotTransposeOptimizer(TransposeOptimizer):
    """``post_optimize_action`` walks a copy of the node list, so it skips no node."""

    _snapshot = False

    @property
    def nodes(self) -> Any:
        """The graph's nodes: a copy during the post pass, the live list otherwise."""
        nodes = self._g.get_nodes()
        return list(nodes) if self._snapshot else nodes

    def post_optimize_action(self) -> None:
        """tf2onnx's post pass over a snapshot of the nodes."""
        self._snapshot = True
        try:
            super().post_optimize_action()
        finally:
            self._snapshot = False


class _OutputSafeReshapeOptimizer(ReshapeOptimizer):
    """Never rewrite a Reshape whose output is a graph output (its Squeeze would be lost)."""

    def _optimize_reshape(self, node: Any, graph: Any) -> Any:
        if set(node.output) & set(graph.outputs):
            return False
        return super()._optimize_reshape(node, graph)


def optimizers() -> OrderedDict[str, type]:
    """tf2onnx's optimiser sequence, with a fix for two of its bugs (issue #17, tf2onnx 1.17).

    About one conversion in twenty of a one-channel head came out with a 5-D output (1, B, H, W, 1):
    ``TransposeOptimizer.post_optimize_action`` replaces Transposes while iterating over the live
    node list (whose order depends on memory addresses), so it skips the node after each; a
    surviving head Transpose later becomes a graph-output Reshape that ``ReshapeOptimizer``
    rewrites as Reshape + Squeeze without re-pointing the graph output. Fix: the post pass walks
    a copy of the list, and a Reshape producing a graph output is left alone.
    """
    replace = {TransposeOptimizer: _SnapshotTransposeOptimizer, ReshapeOptimizer: _OutputSafeReshapeOptimizer}
    return OrderedDict((name, replace.get(cls, cls)) for name, cls in optimizer._get_optimizers().items())
