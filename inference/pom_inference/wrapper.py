"""TTA and post-processing where the network runs: an ONNX graph built around it at load time.

The wrapper graph takes a batch of padded slices and gives back the class planes the
writer stores, so on a GPU only the final outputs cross to the host:

    slices (N, Hp, Wp, C) float32, crop (2,) int64 = (h, w)
      -> for each TTA transform: transform, the network, the inverse transform
      -> their sum in NumPy's order, divided by the number of transforms
      -> cropped to (h, w), the chosen classes, class-major
      -> planes (Kc, N, h, w): float32, or 0..127 as int8 (the uint8 writer's storage)

The network's nodes are copied once per transform, sharing its weights. Each transform is
a transpose and reversals (``Slice`` with step -1), derived from :func:`pom_inference.tta.forward`
itself. :class:`GraphPredictor` has :class:`~pom_inference.predict.SlicePredictor`'s interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pom_common.d4 import rotations_for

from . import tta as d4
from .predict import DEFAULT_BATCH, KINDS
from .session import Model, open_session

PLANES, SLICES, CROP = "planes", "slices", "crop"
_MOST_NEGATIVE = np.iinfo(np.int64).min


def _gather_map(forward: bool, k: int, flip: bool) -> tuple[bool, bool, bool]:
    """(transpose, reverse axis 1, reverse axis 2) doing result[p, q] = src[...] for a transform or its inverse."""
    h, w = 2, 3  # any sizes above 1 give the structure
    ht, wt = (w, h) if (k % 2 and not forward) else (h, w)
    index = np.arange(ht * wt).reshape(1, ht, wt, 1)
    moved = (d4.forward(index, k, flip) if forward else d4.inverse(index, k, flip))[0, ..., 0]
    rows, cols = np.divmod(moved, wt)  # result[p, q] = src[rows[p, q], cols[p, q]]
    transpose = bool(rows[0, 1] != rows[0, 0])  # moving along q changes the source row
    if transpose:
        return True, bool(cols[1, 0] < cols[0, 0]), bool(rows[0, 1] < rows[0, 0])
    return False, bool(rows[1, 0] < rows[0, 0]), bool(cols[0, 1] < cols[0, 0])


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.constants: dict[tuple[str, bytes], str] = {}
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"pom_tta/{hint}_{self.count}"

    def const(self, value: Any, dtype: Any, hint: str) -> str:
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str + str(array.shape), array.tobytes())
        if key not in self.constants:
            self.constants[key] = self.name(hint)
            self.initializers.append(numpy_helper.from_array(array, self.constants[key]))
        return self.constants[key]

    def node(self, op: str, inputs: Sequence[str], hint: str, **attributes: Any) -> str:
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attributes))
        return out

    def move(self, tensor: str, transpose: bool, reverse_1: bool, reverse_2: bool) -> str:
        """Apply a transpose of (H, W) and reversals to an (N, H, W, C) tensor."""
        if transpose:
            tensor = self.node("Transpose", [tensor], "transpose", perm=[0, 2, 1, 3])
        for axis, reverse in ((1, reverse_1), (2, reverse_2)):
            if reverse:
                tensor = self.node("Slice", [tensor, self.const([-1], np.int64, "start"),
                                             self.const([_MOST_NEGATIVE], np.int64, "end"),
                                             self.const([axis], np.int64, "axis"), self.const([-1], np.int64, "step")],
                                   "reverse")
        return tensor


def wrap(proto: Any, tta: int, classes: Sequence[int], kind: str = "float32") -> Any:
    """The wrapper graph (see the module) around the network ``proto`` ((N, H, W, C) -> (N, H, W, K))."""
    import onnx
    from onnx import TensorProto, helper

    graph = proto.graph
    net_input, net_output = graph.input[0].name, graph.output[0].name
    shared = {init.name for init in graph.initializer}
    b = _Builder()
    results = []
    for t, (k, flip) in enumerate(rotations_for(tta)):
        x = b.move(SLICES, *_gather_map(True, k, flip))
        renamed = {net_input: x}
        for index, node in enumerate(graph.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:]
            del copy.output[:]
            copy.input.extend(renamed.get(i, i if (i in shared or not i) else f"pom_tta{t}/{i}") for i in node.input)
            for o in node.output:
                renamed[o] = f"pom_tta{t}/{o}" if o else o
            copy.output.extend(renamed[o] for o in node.output)
            copy.name = f"pom_tta{t}/{index}/{node.name or node.op_type}"
            b.nodes.append(copy)
        results.append(b.move(renamed[net_output], *_gather_map(False, k, flip)))
    total = results[0]
    for r in results[1:]:  # NumPy's order: ((r0 + r1) + r2) + ...
        total = b.node("Add", [total, r], "sum")
    mean = b.node("Div", [total, b.const(np.float32(len(results)), np.float32, "runs")], "mean")
    cropped = b.node("Slice", [mean, b.const([0, 0], np.int64, "zero"), CROP, b.const([1, 2], np.int64, "hw")], "crop")
    chosen = b.node("Gather", [cropped, b.const(np.asarray(classes, np.int64), np.int64, "classes")], "classes", axis=3)
    planes = b.node("Transpose", [chosen], "planes", perm=[3, 0, 1, 2])
    out_type = TensorProto.FLOAT
    if kind == "uint8":  # np.rint(np.clip(p, 0, 1) * 127), stored as int8
        clipped = b.node("Clip", [planes, b.const(np.float32(0), np.float32, "lo"), b.const(np.float32(1), np.float32, "hi")],
                         "clip")
        scaled = b.node("Mul", [clipped, b.const(np.float32(127), np.float32, "scale")], "scale")
        planes = b.node("Cast", [b.node("Round", [scaled], "round")], "cast", to=TensorProto.INT8)
        out_type = TensorProto.INT8
    b.nodes.append(helper.make_node("Identity", [planes], [PLANES], name="pom_tta/out"))
    channels = graph.input[0].type.tensor_type.shape.dim[-1]
    inputs = [helper.make_tensor_value_info(SLICES, TensorProto.FLOAT,
                                            ["N", "H", "W", channels.dim_value if channels.HasField("dim_value") else "C"]),
              helper.make_tensor_value_info(CROP, TensorProto.INT64, [2])]
    outputs = [helper.make_tensor_value_info(PLANES, out_type, [len(classes), "N", "h", "w"])]
    wrapped = helper.make_graph(b.nodes, "pom_tta", inputs, outputs, list(graph.initializer) + b.initializers)
    model = helper.make_model(wrapped, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    for entry in proto.metadata_props:
        model.metadata_props.add(key=entry.key, value=entry.value)
    return model


class GraphPredictor:
    """Segment batches of (n, h, w, C) slices with the wrapper graph (TTA on the network's device).

    The same interface and results as :class:`~pom_inference.predict.SlicePredictor`; the
    slices are padded on the host, everything else runs in ONNX Runtime.
    """

    def __init__(self, model: Model, shape: tuple[int, int, int], tta: int = 4, batch: int = DEFAULT_BATCH,
                 classes: Sequence[int] | None = None, kind: str = "float32") -> None:
        import onnx

        h, w, c = shape
        multiple = model.info.size_multiple
        self.model = model
        self.shape = (h, w, c)
        self.padded = (h + (-h) % multiple, w + (-w) % multiple)
        self.batch = int(max(1, batch))
        chosen = list(range(len(model.info.classes)) if classes is None else classes)
        proto = onnx.load_from_string(model.data) if model.data is not None else onnx.load(str(model.path))
        data = wrap(proto, tta, chosen, kind).SerializeToString()
        self.session = open_session(model.path, data, model.device, model.threads, tf32=False)
        dtype = KINDS[kind][1]
        self.padded_inputs = np.empty((self.batch, *self.padded, c), dtype=np.float32)
        self.planes = [np.empty((len(chosen), self.batch, h, w), dtype=dtype) for _ in range(2)]
        self.crop = np.array([h, w], dtype=np.int64)
        self.calls = 0

    def __call__(self, slices: np.ndarray, deferred: bool = False) -> np.ndarray:
        """(n, h, w, C) float32 slices, n <= ``batch`` -> (Kc, n, h, w) planes (a reused buffer).

        ``deferred`` changes nothing: the TTA ran in the graph, and the planes returned are the
        network's own output buffer, which the call after next overwrites.
        """
        import time

        n = len(slices)
        if slices.shape[1:] != self.shape or n > self.batch:
            raise ValueError(f"slices {slices.shape} do not fit a predictor of {self.shape} x {self.batch}")
        x = d4.pad_into(np.ascontiguousarray(slices, dtype=np.float32), self.padded_inputs[:n])
        planes = self.planes[self.calls % 2][:, :n]
        if not planes.flags.c_contiguous:
            planes = np.empty(planes.shape, planes.dtype)
        self.calls += 1
        binding = self.session.io_binding()
        binding.bind_input(SLICES, "cpu", 0, np.float32, x.shape, x.ctypes.data)
        binding.bind_input(CROP, "cpu", 0, np.int64, self.crop.shape, self.crop.ctypes.data)
        binding.bind_output(PLANES, "cpu", 0, planes.dtype, planes.shape, planes.ctypes.data)
        start = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.model.busy_seconds += time.perf_counter() - start  # the network and its TTA, on its device
        return planes
