"""A Keras U-Net written as an ONNX graph, layer by layer, with dynamic batch, height and width.

The networks we train are built from six Keras layer types (:func:`pom_training.models.unet.build_unet`):
Conv2D, BatchNormalization, MaxPooling2D, Conv2DTranspose, Concatenate, and the activations
inside them. Each becomes one or two ONNX nodes, in NCHW between one Transpose at the input
and one at the output; weights are written once, in the layout ONNX wants. Compared with
tf2onnx (trace, freeze, grappler, a dozen optimiser passes), which this replaced: the default
network (31 M weights) took 10.5 GB and 46 s to export, this takes about twice the weights
and a few seconds (docs/benchmarks.md), and the same network gives the same bytes by
construction: names are positions, nodes come in the network's own order.

A layer of any other type, or an option of these layers the U-Net does not use (strides
with "same" padding, a channels-first layer), raises :class:`.errors.UnknownLayer` naming the
layer, and the exporter converts that network with tf2onnx instead (:mod:`.fallback`); the
export check (:mod:`.parity`) compares every export with Keras anyway.

:func:`write_onnx` writes the file one weight at a time (the graph's protobuf encoding with
its weights appended to it, :func:`_stream`), so the export holds no second copy of the
network: neither a ModelProto with every weight nor its bytes. :func:`convert` builds the
same model in memory (what the file parses to).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pom_common.constants import ONNX_OPSET

from .errors import ExportError, UnknownLayer

#: Names of the exported graph's input and output.
INPUT_NAME, OUTPUT_NAME = "input", "output"
#: Names of the dynamic axes of the graph's input and output.
DYNAMIC_AXES = ("batch", "height", "width")
#: Name of the exported graph.
GRAPH_NAME = "pom"
#: IR version written: the oldest that opset 17 allows, so older ONNX Runtimes load the files too.
IR_VERSION = 8
#: Keras activations and the ONNX operator of each (NCHW: the channel axis is 1); "linear" is none.
ACTIVATIONS = {"linear": None, "relu": "Relu", "sigmoid": "Sigmoid", "softmax": "Softmax"}
#: A channels-last axis of a 4-D tensor -> the same axis in NCHW.
NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2, -4: 0}


class _Graph:
    """Nodes and weights as they are added; names by position (``Conv_3``, ``w7``).

    A weight is kept as a function that makes its array, called when it is written.
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[tuple[str, Callable[[], np.ndarray]]] = []

    def weight(self, make: Callable[[], np.ndarray]) -> str:
        name = f"w{len(self.weights)}"
        self.weights.append((name, make))
        return name

    def tensors(self) -> Iterator[onnx.TensorProto]:
        """The weights as ONNX tensors, one at a time."""
        for name, make in self.weights:
            yield numpy_helper.from_array(np.ascontiguousarray(make(), dtype=np.float32), name)

    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        name = f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output or name], name=name, **attributes))
        return output or name


def convert(model: keras.Model, opset: int = ONNX_OPSET) -> onnx.ModelProto:
    """``model`` as an ONNX model in memory: input ``input`` (B, H, W, C) -> output ``output`` (B, H, W, K).

    What the file :func:`write_onnx` writes parses to (without metadata). Holds a copy of
    every weight; exports use :func:`write_onnx`.

    Raises
    ------
    ExportError
        A layer the converter does not know, or an option of it that it does not handle.
    """
    proto, graph = _skeleton(model, opset)
    proto.graph.initializer.extend(graph.tensors())
    return proto


def write_onnx(model: keras.Model, file: str | os.PathLike, metadata: dict[str, str], opset: int = ONNX_OPSET) -> None:
    """Write ``model`` as an ONNX file with ``metadata`` (``metadata_props``), one weight in memory at a time.

    The same model as :func:`convert` plus the metadata; the same bytes for the same network
    and metadata, every time.

    Raises
    ------
    ExportError
        A layer the converter does not know, or an option of it that it does not handle.
    OSError
        ``file`` cannot be written.
    """
    proto, graph = _skeleton(model, opset)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with open(file, "wb") as handle:
        _stream(proto, graph, handle)


def _skeleton(model: keras.Model, opset: int) -> tuple[onnx.ModelProto, _Graph]:
    """The model without its weights, and the graph that makes them."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"{model.name}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                          "only networks with one of each can be exported")
    graph = _Graph()
    names: dict[int, str] = {id(model.inputs[0]): graph.node("Transpose", [INPUT_NAME], perm=[0, 3, 1, 2])}
    for layer, inputs, outputs in _calls(model):
        if len(outputs) != 1:
            raise UnknownLayer(f"layer {layer.name!r} ({type(layer).__name__}): {len(outputs)} outputs; expected 1")
        try:
            sources = [names[id(t)] for t in inputs]
        except KeyError:
            raise UnknownLayer(f"layer {layer.name!r}: an input that no earlier layer produces") from None
        names[id(outputs[0])] = _layer(graph, layer, sources)
    graph.node("Transpose", [names[id(model.outputs[0])]], OUTPUT_NAME, perm=[0, 2, 3, 1])
    n_in, n_out = int(model.input_shape[-1]), int(model.output_shape[-1])
    proto = helper.make_model(
        helper.make_graph(graph.nodes, GRAPH_NAME,
                          [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [*DYNAMIC_AXES, n_in])],
                          [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [*DYNAMIC_AXES, n_out])]),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="pom-onnx")
    proto.ir_version = IR_VERSION
    return proto, graph


def _stream(proto: onnx.ModelProto, graph: _Graph, handle: BinaryIO) -> None:
    """Write ``proto`` with ``graph``'s weights as its graph's initializers, one weight at a time.

    Protocol buffers allow a message's fields in any order, so the encoding is: the model's
    fields but the graph, then the graph field (tag, length), the graph's fields but the
    weights, then each weight as one ``initializer`` entry. The length of the graph field
    needs every weight's size: a first pass makes each weight and measures it.
    """
    graph_field = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
    initializer_field = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
    body = proto.graph.SerializeToString(deterministic=True)
    proto.ClearField("graph")
    sizes = [tensor.ByteSize() for tensor in graph.tensors()]
    length = len(body) + sum(len(_key(initializer_field)) + len(_varint(n)) + n for n in sizes)
    handle.write(proto.SerializeToString(deterministic=True))
    handle.write(_key(graph_field) + _varint(length) + body)
    for tensor, size in zip(graph.tensors(), sizes):
        data = tensor.SerializeToString(deterministic=True)
        if len(data) != size:
            raise ExportError(f"weight {tensor.name}: {len(data)} bytes, measured {size}")  # (not nondeterministic)
        handle.write(_key(initializer_field) + _varint(size) + data)


def _key(field: int) -> bytes:
    """The key of a length-delimited protobuf field (wire type 2)."""
    return _varint(field << 3 | 2)


def _varint(value: int) -> bytes:
    """Protocol buffers' base-128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def parameter_count(model: keras.Model) -> int:
    """Number of values in the network's weights (what the ``.onnx`` file holds, 4 bytes each)."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def _calls(model: keras.Model) -> Iterator[tuple[Any, list[Any], list[Any]]]:
    """(layer, input tensors, output tensors) of every layer call, in the order Keras computes them."""
    nodes_by_depth = model._nodes_by_depth  # Keras's own evaluation order (keras.src.ops.function.Function)
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield node.operation, list(node.input_tensors), list(node.outputs)


def _layer(graph: _Graph, layer: Any, inputs: list[str]) -> str:
    """Add the nodes of one layer call; returns the name of its output."""
    kind = type(layer).__name__
    if kind == "InputLayer":
        return inputs[0]
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnknownLayer(f"layer {layer.name!r} ({kind}): data_format {layer.data_format}; expected channels_last")
    if kind == "Conv2D":
        return _activation(graph, layer, _conv(graph, layer, inputs[0]))
    if kind == "Conv2DTranspose":
        return _activation(graph, layer, _conv_transpose(graph, layer, inputs[0]))
    if kind == "BatchNormalization":
        return _batch_norm(graph, layer, inputs[0])
    if kind == "MaxPooling2D":
        if layer.padding != "valid":
            raise UnknownLayer(f"layer {layer.name!r} (MaxPooling2D): padding {layer.padding!r}; expected 'valid'")
        return graph.node("MaxPool", inputs, kernel_shape=list(layer.pool_size), strides=list(layer.strides))
    if kind == "Concatenate":
        return graph.node("Concat", inputs, axis=_axis(layer, layer.axis))
    if kind == "Activation":
        return _activation(graph, layer, inputs[0])
    raise UnknownLayer(f"layer {layer.name!r}: the writer does not know {kind} layers (it knows Conv2D, Conv2DTranspose, "
                      "BatchNormalization, MaxPooling2D, Concatenate, Activation)")


def _axis(layer: Any, axis: int) -> int:
    if axis not in NHWC_TO_NCHW:
        raise UnknownLayer(f"layer {layer.name!r}: axis {axis} of a 4-D tensor")
    return NHWC_TO_NCHW[axis]


def _conv(graph: _Graph, layer: Any, x: str) -> str:
    """Conv2D: kernel (kh, kw, in, out) -> ONNX (out, in, kh, kw); 'same' padding for stride 1."""
    kh, kw = layer.kernel.shape[:2]  # kernel (kh, kw, in/groups, out)
    strides, dilations = list(layer.strides), list(layer.dilation_rate)
    if layer.padding == "same":
        if strides != [1, 1]:
            raise UnknownLayer(f"layer {layer.name!r} (Conv2D): 'same' padding with strides {strides}; expected 1")
        total = [(kh - 1) * dilations[0], (kw - 1) * dilations[1]]
        pads = [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]  # TF: extra at the end
    elif layer.padding == "valid":
        pads = [0, 0, 0, 0]
    else:
        raise UnknownLayer(f"layer {layer.name!r} (Conv2D): padding {layer.padding!r}")
    inputs = [x, graph.weight(lambda: layer.kernel.numpy().transpose(3, 2, 0, 1))]
    if layer.use_bias:
        inputs.append(graph.weight(lambda: layer.bias.numpy()))
    return graph.node("Conv", inputs, kernel_shape=[kh, kw], strides=strides, dilations=dilations, pads=pads,
                      group=int(getattr(layer, "groups", 1)))


def _conv_transpose(graph: _Graph, layer: Any, x: str) -> str:
    """Conv2DTranspose: kernel (kh, kw, out, in) -> ONNX (in, out, kh, kw); 'same' only where it pads nothing."""
    kh, kw = layer.kernel.shape[:2]  # kernel (kh, kw, out, in)
    strides = list(layer.strides)
    if list(layer.dilation_rate) != [1, 1] or getattr(layer, "output_padding", None) is not None:
        raise UnknownLayer(f"layer {layer.name!r} (Conv2DTranspose): dilation or output_padding set")
    if layer.padding == "same" and [kh, kw] != strides:
        raise UnknownLayer(f"layer {layer.name!r} (Conv2DTranspose): 'same' padding with kernel {[kh, kw]} and "
                          f"strides {strides}; expected kernel == strides")
    if layer.padding not in ("same", "valid"):
        raise UnknownLayer(f"layer {layer.name!r} (Conv2DTranspose): padding {layer.padding!r}")
    inputs = [x, graph.weight(lambda: layer.kernel.numpy().transpose(3, 2, 0, 1))]
    if layer.use_bias:
        inputs.append(graph.weight(lambda: layer.bias.numpy()))
    return graph.node("ConvTranspose", inputs, kernel_shape=[kh, kw], strides=strides)


def _batch_norm(graph: _Graph, layer: Any, x: str) -> str:
    """BatchNormalization at inference: x * scale + shift per channel, folded in float64."""
    if _axis(layer, layer.axis if isinstance(layer.axis, int) else -99) != 1:
        raise UnknownLayer(f"layer {layer.name!r} (BatchNormalization): axis {layer.axis}; expected the channels")
    scaled = graph.node("Mul", [x, graph.weight(lambda: _folded(layer)[0])])
    return graph.node("Add", [scaled, graph.weight(lambda: _folded(layer)[1])])


def _folded(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization layer's (scale, shift), each (1, C, 1, 1), computed in float64."""
    mean = layer.moving_mean.numpy().astype(np.float64)
    variance = layer.moving_variance.numpy().astype(np.float64)
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale.reshape(1, -1, 1, 1), (beta - mean * scale).reshape(1, -1, 1, 1)


def _activation(graph: _Graph, layer: Any, x: str) -> str:
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name not in ACTIVATIONS:
        raise UnknownLayer(f"layer {layer.name!r}: the writer does not know activation {name!r} (it knows {sorted(ACTIVATIONS)})")
    op = ACTIVATIONS[name]
    if op is None:
        return x
    if op == "Softmax":
        return graph.node(op, [x], axis=1)
    return graph.node(op, [x])
