"""The converted graph in a canonical form: the same network gives the same bytes, every time."""

from __future__ import annotations

import hashlib
import heapq
from typing import Any

import onnx
from onnx import numpy_helper

from pom_common.errors import ModelError

#: Names of the dynamic axes of the graph's input and output.
DYNAMIC_AXES = ("batch", "height", "width")
#: Name of the exported graph.
GRAPH_NAME = "pom"


def canonical_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
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
    graph = proto.graph
    ident: dict[str, str] = {"": "none"}  # tensor name -> identity
    for i, value in enumerate(graph.input):
        ident[value.name] = f"input{i}"
    weights: dict[str, onnx.TensorProto] = {}
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        key = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()
        ident[tensor.name] = key
        weights.setdefault(key, tensor)
    producer = {name: node for node in graph.node for name in node.output}

    def node_identity(node: onnx.NodeProto) -> str:
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
    order: list[str] = []
    while ready:
        key = heapq.heappop(ready)
        order.append(key)
        for user in users[key]:
            count[user] -= 1
            if count[user] == 0:
                heapq.heappush(ready, user)

    names = {ident[value.name]: value.name for value in (*graph.input, *graph.output)}
    new_weights: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
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
    graph.name, graph.doc_string, proto.doc_string = GRAPH_NAME, "", ""
    opsets = sorted(proto.opset_import, key=lambda o: o.domain)
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    return proto


def _attributes(node: onnx.NodeProto) -> list[onnx.AttributeProto]:
    """``node``'s attributes sorted by name, tensor values unnamed (a name is no part of the value)."""
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
