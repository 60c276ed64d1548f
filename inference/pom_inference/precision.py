"""Reduced precision, trusted only after a check against true float32 on the data at hand.

``--precision`` picks the arithmetic of the network:

``fp32``
    The exported network as it is (the default; TF32 is off on GPUs, so it is true float32).
``fp16``
    The network converted to float16, except the numerically fragile nodes
    (:data:`FP16_KEEP`: normalisation, softmax, sigmoid, exponentials), which stay float32.
``int8``
    The network quantized to 8 bits (ONNX Runtime static quantization, QDQ format, unsigned
    activations and signed per-channel weights), calibrated on slices of the first tomogram
    of the run. It runs in OpenVINO when the ``[cpu]`` extra is installed (about twice as
    fast as ONNX Runtime's own int8 kernels), else in ONNX Runtime.
``auto``
    ``fp16`` on a GPU; on the CPU ``int8`` when OpenVINO is installed, else ``fp32``.

Before a reduced precision is used, the converted network and the float32 network segment
the same slab (the middle slices of the run's first tomogram, one TTA pass), and the
candidate is kept only when it agrees within :data:`GATES`; otherwise the run says so in
one line and uses float32. The precision used is part of the recipe, so the outputs of
different precisions are never mistaken for each other.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.errors import ConfigError, ModelError, one_line
from pom_common.modelmeta import METADATA_KEY

from .session import Model, load_model

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "auto")
#: Operators kept in float32 by the float16 conversion (besides ONNX Runtime's own list).
FP16_KEEP = ("Softmax", "LogSoftmax", "Sigmoid", "BatchNormalization", "InstanceNormalization",
             "LayerNormalization", "GroupNormalization", "Exp", "Log", "Pow", "ReduceMean", "ReduceSum", "Sqrt",
             "Reciprocal", "Div")
#: Slices of the first tomogram compared (and, for int8, used to calibrate).
SAMPLE_SLICES = 4


@dataclass(frozen=True)
class Gate:
    """What a reduced precision must achieve against float32 on the sample slab."""

    min_argmax: float  # share of pixels whose most probable class is the same
    max_abs: float | None = None  # largest |p - p32| over every class and pixel
    mean_abs: float | None = None  # mean |p - p32|


#: fp16 on real data agrees on 99.994 % of argmax voxels, largest |dp| about 1e-3 (issue 23).
#: int8 moves probabilities at boundaries by more; on trained networks it agrees on 99.6-99.9 %.
GATES = {"fp16": Gate(min_argmax=0.999, max_abs=0.02), "int8": Gate(min_argmax=0.99, mean_abs=0.02)}


@dataclass(frozen=True)
class Agreement:
    """How a candidate's probabilities compare with float32's on the same slab."""

    argmax: float
    max_abs: float
    mean_abs: float

    def passes(self, gate: Gate) -> bool:
        """Whether every threshold of ``gate`` holds (NaN never does)."""
        ok = self.argmax >= gate.min_argmax
        if gate.max_abs is not None:
            ok = ok and self.max_abs <= gate.max_abs
        if gate.mean_abs is not None:
            ok = ok and self.mean_abs <= gate.mean_abs
        return bool(ok)

    def __str__(self) -> str:
        return f"argmax agrees on {100 * self.argmax:.3f} % of pixels, max |dp| {self.max_abs:.3g}, " \
               f"mean |dp| {self.mean_abs:.3g}"


def compare(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """(N, H, W, K) probabilities of float32 and of a candidate -> their :class:`Agreement`."""
    diff = np.abs(candidate.astype(np.float64) - reference)
    finite = bool(np.isfinite(candidate).all())
    agree = float(np.mean(candidate.argmax(-1) == reference.argmax(-1))) if finite else 0.0
    if not finite:
        return Agreement(agree, float("nan"), float("nan"))
    return Agreement(agree, float(diff.max()), float(diff.mean()))


def openvino_available() -> bool:
    """Whether the ``[cpu]`` extra (OpenVINO) is installed."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def resolve(requested: str, device: int | None) -> str:
    """The precision ``auto`` stands for on ``device`` (others unchanged).

    Raises
    ------
    ConfigError
        An unknown name.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision: expected one of {list(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if device is not None:
        return "fp16"
    return "int8" if openvino_available() else "fp32"


def _load_proto(model: Model) -> Any:
    import onnx

    return onnx.load_from_string(model.data) if model.data is not None else onnx.load(str(model.path))


def _with_metadata(proto: Any, source: Any) -> Any:
    """Keep the Pom metadata on a converted network."""
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        if entry.key == METADATA_KEY:
            proto.metadata_props.add(key=entry.key, value=entry.value)
    return proto


def to_fp16(proto: Any) -> Any:
    """The float16 network (inputs and outputs stay float32; :data:`FP16_KEEP` nodes stay float32)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(proto, keep_io_types=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP))
    return _with_metadata(converted, proto)


def to_int8(proto: Any, calibration: np.ndarray, input_name: str) -> Any:
    """The QDQ int8 network calibrated (min/max) on ``calibration`` (N, H, W, C) float32 slices."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Slices(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="pom-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(proto, str(source))
        quantize_static(str(source), str(target), Slices(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return _with_metadata(onnx.load(str(target)), proto)


class OpenVinoNetwork:
    """A network compiled by OpenVINO for the CPU: ``run`` (B, H, W, C) -> (B, H, W, K) float32."""

    def __init__(self, proto: Any, threads: int | None) -> None:
        import onnx
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="pom-openvino-") as folder:
            path = Path(folder) / "network.onnx"
            onnx.save(proto, str(path))
            network = core.read_model(str(path))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.request = core.compile_model(network, "CPU", config).create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of ``batch`` (a new array)."""
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def variant(model: Model, precision: str, sample: np.ndarray | None) -> Model:
    """``model`` converted to ``precision`` (``fp16`` or ``int8``; ``sample`` calibrates int8).

    Raises
    ------
    ModelError
        The conversion or the converted network's session failed.
    """
    try:
        proto = _load_proto(model)
        if precision == "fp16":
            converted = to_fp16(proto)
        elif precision == "int8":
            if sample is None:
                raise ModelError("int8 needs slices of a tomogram to calibrate on")
            converted = to_int8(proto, sample, model.input_name)
        else:
            raise ValueError(f"no variant for precision {precision!r}")
        data = converted.SerializeToString()
        candidate = load_model(model.path, device=model.device, threads=model.threads, quiet=True, data=data)
        label = precision
        if precision == "int8" and model.provider == "cpu" and openvino_available():
            candidate.backend = OpenVinoNetwork(converted, model.threads)
            label = "int8-openvino"
    except ModelError:
        raise
    except Exception as exc:  # onnx, the converters and OpenVINO raise anything
        raise ModelError(f"{model.path}: the {precision} network could not be made ({one_line(exc)})") from None
    return replace(candidate, precision=label, sha256=model.sha256)  # the recipe names the network it was made from


def choose(model: Model, requested: str, sample: np.ndarray | None, sample_name: str = "the first tomogram",
           gates: dict[str, Gate] | None = None) -> tuple[Model, str]:
    """The model to run for ``requested`` precision, checked on ``sample`` (N, H, W, C) against float32.

    Returns the model and one line saying what was chosen and why (empty for plain fp32).
    A candidate that cannot be made, or disagrees beyond :data:`GATES`, gives the float32
    model back, and the line says so.
    """
    precision = resolve(requested, model.device)
    if precision == "fp32":
        return model, ""
    if sample is None:
        return model, f"precision {precision}: no slab to check it on; using fp32"
    gate = (gates or GATES)[precision]
    try:
        candidate = variant(model, precision, sample)
        reference = model.run(sample)  # workers load float32 networks with TF32 off: true float32
        agreement = compare(reference, candidate.run(sample))
    except ModelError as exc:
        return model, f"precision {precision}: {exc}; using fp32"
    if not agreement.passes(gate):
        return model, (f"precision {candidate.precision} disagrees with fp32 on {sample_name} ({agreement}; needs "
                       f"{describe(gate)}); using fp32")
    candidate.busy_seconds = 0.0
    return candidate, f"precision {candidate.precision}: agrees with fp32 on {sample_name} ({agreement})"


def describe(gate: Gate) -> str:
    """A gate's thresholds in words."""
    parts = [f"argmax >= {100 * gate.min_argmax:g} %"]
    if gate.max_abs is not None:
        parts.append(f"max |dp| <= {gate.max_abs:g}")
    if gate.mean_abs is not None:
        parts.append(f"mean |dp| <= {gate.mean_abs:g}")
    return ", ".join(parts)
