"""tf2onnx conversion of a Keras network with dynamic batch, height and width, in canonical form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import onnx
import tensorflow as tf
from tf2onnx import optimizer, tf_loader, tfonnx
from tf2onnx.convert import tensor_names_from_structed

from pom_common.constants import ONNX_OPSET

from .canonical import GRAPH_NAME, canonical_graph
from .tf2onnx_fix import optimizers as fixed_optimizers

#: Names of the exported graph's input and output.
INPUT_NAME, OUTPUT_NAME = "input", "output"


def convert(model: keras.Model, opset: int = ONNX_OPSET,
            optimizers: Mapping[str, type] | None = None) -> onnx.ModelProto:
    """tf2onnx conversion of ``model`` (input ``input`` (B, H, W, C), output ``output``), canonical form.

    The same steps as ``tf2onnx.convert.from_function`` (trace, freeze, map to ONNX,
    optimise), except that the optimisers are ``optimizers`` (name -> tf2onnx optimiser
    class), by default :func:`.tf2onnx_fix.optimizers`.
    """
    n_channels = int(model.input_shape[-1])
    spec = (tf.TensorSpec((None, None, None, n_channels), tf.float32, name=INPUT_NAME),)  # dynamic B, H, W

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
            graph = optimizer.optimize_graph(graph, catch_errors=True, optimizers=optimizers or fixed_optimizers())
            proto = graph.make_model(GRAPH_NAME)
    return canonical_graph(proto)
