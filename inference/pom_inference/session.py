"""ONNX Runtime sessions: one place that picks providers, reads Pom metadata and runs batches.

A GPU is used only when asked for (``device`` an index) and then always: when CUDA cannot
run, :class:`~pom_common.errors.DeviceError` names the cause and the fix; there is no
silent fall-back to the CPU. The CPU is asked for with ``device=None``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pom_common.errors import DeviceError, ModelError, one_line
from pom_common.files import read_regular_file
from pom_common.modelmeta import METADATA_KEY, ModelInfo

from . import gpu, nvidia
from .predict import DEFAULT_BATCH

logger = logging.getLogger(__name__)

CUDA = gpu.CUDA
CPU = "CPUExecutionProvider"
#: Largest model file read (ONNX's protobuf limit is 2 GiB).
MAX_MODEL_BYTES = 2 << 30
#: Most pixels per call on the CPU (8 slices of 512 x 512; 2 of 1024 x 1024): ONNX Runtime's
#: working memory grows with them, its speed does not.
CPU_BATCH_PIXELS = 8 * 512 * 512
#: Most slices per call on a GPU, whatever its memory.
MAX_GPU_BATCH = 64
#: Bytes of activations per input pixel per base filter of the U-Net, with room to spare
#: (all levels, both paths, skip copies; ONNX Runtime reuses much of it).
_BYTES_PER_PIXEL_FILTER = 64


@dataclass
class Model:
    """A loaded model: the ORT session, its metadata, and the provider that actually runs it.

    ``io_binding``: inputs and outputs go through ONNX Runtime's IO binding (the outputs
    are bound on the device that computes them and copied back once); the default on a GPU.
    """

    session: Any  # onnxruntime.InferenceSession
    info: ModelInfo
    provider: str  # "cuda" or "cpu"
    path: Path
    input_name: str
    output_name: str
    device: int | None = None
    io_binding: bool = False
    sha256: str = ""  # of the bytes the session was built from (what runs, whatever the file holds now)
    threads: int | None = None
    data: bytes | None = field(default=None, repr=False)  # the bytes ONNX Runtime runs, when not the file's
    precision: str = "fp32"  # of the network that runs (see pom_inference.precision)
    backend: Any = None  # another runtime running the network instead of ``session`` (e.g. OpenVINO)
    busy_seconds: float = 0.0  # time spent inside ONNX Runtime's run (the network busy)
    _bound_outputs: bool | None = field(default=None, repr=False)  # outputs written into the caller's buffers

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, C) float32 -> (B, H, W, K) float32."""
        start = time.perf_counter()
        try:
            return self._run(batch)
        finally:
            self.busy_seconds += time.perf_counter() - start

    def run_into(self, batch: np.ndarray, out: np.ndarray) -> None:
        """Like :meth:`run`, the result written into ``out`` (C-contiguous float32 of the output's shape).

        On the CPU, ONNX Runtime writes straight into ``out`` (IO binding with the caller's
        buffers, checked on the first call): no allocation and no copy per call.

        Raises
        ------
        ModelError
            The network's output for this input is not of ``out``'s shape.
        """
        start = time.perf_counter()
        try:
            if self._bound_outputs and self.provider == "cpu" and self.backend is None:
                binding = self.session.io_binding()
                batch = np.ascontiguousarray(batch, dtype=np.float32)
                binding.bind_input(self.input_name, "cpu", 0, np.float32, batch.shape, batch.ctypes.data)
                binding.bind_output(self.output_name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
                self.session.run_with_iobinding(binding)
                return
            result = self._run(batch)
            if result.shape != out.shape:
                raise ModelError(f"{self.path}: the network returned {result.shape} for an input of {batch.shape}; "
                                 f"expected {out.shape}")
            out[...] = result
            if self._bound_outputs is None:
                self._bound_outputs = out.flags.c_contiguous and out.dtype == np.float32
        finally:
            self.busy_seconds += time.perf_counter() - start

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.backend is not None:
            return self.backend.run(batch)
        if not self.io_binding:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch, dtype=np.float32))
        if self.provider == "cuda":
            binding.bind_output(self.output_name, "cuda", self.device or 0)
        else:
            binding.bind_output(self.output_name)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def batch_for(self, height: int, width: int, sharing: int = 1) -> int:
        """Slices per call for (height, width) images: from free GPU memory on a GPU, else the default.

        ``sharing``: workers on this GPU; each counts on its share of the free memory.
        """
        if self.provider != "cuda" or self.device is None:  # the network's working memory grows with the pixels
            return int(max(1, min(DEFAULT_BATCH, CPU_BATCH_PIXELS // max(1, height * width))))
        free = nvidia.free_memory_mib(self.device)
        if free is not None:
            free //= max(1, sharing)
        filters = int(self.info.training.get("base_filters", 64) or 64)
        return batch_from_memory(free, height, width, filters)


def batch_from_memory(free_mib: int | None, height: int, width: int, base_filters: int) -> int:
    """How many (height, width) images fit in half of ``free_mib`` of GPU memory (1..64)."""
    if free_mib is None:
        return DEFAULT_BATCH
    per_image = height * width * base_filters * _BYTES_PER_PIXEL_FILTER
    return int(max(1, min(MAX_GPU_BATCH, free_mib * 2**20 // 2 // max(per_image, 1))))


def _ort() -> Any:
    return gpu._ort()


def _options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def check_gpus(gpus: list[int] | None) -> list[int | None]:
    """The worker devices for ``gpus`` (None: one CPU worker), after checking that CUDA runs on them.

    Raises
    ------
    DeviceError
        GPUs were asked for and CUDA cannot run them here: every reason, with its fix, on one line.
    """
    if gpus is None:
        return [None]
    report = gpu.diagnose(gpus)
    if not report.ok:
        raise DeviceError(f"GPU {','.join(map(str, gpus))} requested, but CUDA cannot run here: "
                          + "; ".join(report.problems))
    return list(gpus)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The Pom metadata of an ONNX model file (raises ModelError for anything else)."""
    return load_model(path, device=None, quiet=True).info


def load_model(path: str | os.PathLike, device: int | None = None, threads: int | None = None,
               quiet: bool = False, io_binding: bool | None = None, data: bytes | None = None,
               tf32: bool = True) -> Model:
    """Open ``path`` on GPU ``device`` (ONNX Runtime's CUDA provider), or on the CPU when ``device`` is None.

    Parameters
    ----------
    path : an ONNX model exported by this toolkit (its metadata names classes and channels).
    device : GPU index, or None for the CPU.
    threads : ONNX Runtime intra-op threads (default: OMP_NUM_THREADS, else all cores).
    quiet : do not say in a log line what runs the model.
    io_binding : feed inputs and outputs through IO binding (default: on a GPU only).
    data : the model's bytes, to run instead of the file's (a converted network); ``path``
        then only names it in messages.
    tf32 : let the CUDA provider use TF32 in float32 convolutions (its default); False for true float32.

    Raises
    ------
    ModelError
        The file is missing, not ONNX, or lacks Pom metadata.
    DeviceError
        A GPU was asked for and CUDA cannot run on it (the message says why and how to fix it).
    """
    path = Path(path)
    if data is None:
        try:  # read once: the session is built from these bytes and the recipe names their hash
            data = read_regular_file(path, MAX_MODEL_BYTES)
        except OSError as exc:
            raise ModelError(f"{path}: model: {exc.strerror or exc}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    session = open_session(path, data, device, threads, tf32)
    meta = session.get_modelmeta().custom_metadata_map
    info = ModelInfo.from_json(meta.get(METADATA_KEY), str(path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or (isinstance(inputs[0].shape[-1], int) and inputs[0].shape[-1] != len(info.channels)):
        raise ModelError(f"{path}: the graph's input {inputs[0].shape} does not match its metadata "
                         f"channels {list(info.channels)}")
    if not outputs or (isinstance(outputs[0].shape[-1], int) and outputs[0].shape[-1] != len(info.classes)):
        shape = outputs[0].shape if outputs else None
        raise ModelError(f"{path}: the graph's output {shape} does not match its metadata classes "
                         f"{list(info.classes)}")
    provider = "cuda" if device is not None else "cpu"
    model = Model(session=session, info=info, provider=provider, path=path, input_name=inputs[0].name,
                  output_name=outputs[0].name, device=device,
                  io_binding=(provider == "cuda") if io_binding is None else io_binding, threads=threads, data=data,
                  sha256=sha256)
    if not quiet:
        announce(model)
    return model


def open_session(path: Path, data: bytes | None, device: int | None, threads: int | None, tf32: bool = True) -> Any:
    """An ONNX Runtime session of ``data`` (or of the file ``path``) on GPU ``device`` or the CPU.

    Raises
    ------
    ModelError
        ONNX Runtime cannot load the graph.
    DeviceError
        A GPU was asked for and CUDA cannot run on it.
    """
    ort = _ort()
    options = _options(ort, threads)
    providers: list = [CPU]
    if device is not None:
        gpu.preload()
        if CUDA not in ort.get_available_providers():
            check_gpus([device])  # raises, naming what is missing
        providers = [(CUDA, cuda_options(device, tf32)), CPU]
    try:
        session = ort.InferenceSession(data if data is not None else str(path), sess_options=options,
                                       providers=providers)
    except Exception as exc:
        if device is not None and "CUDA" in str(exc):
            check_gpus([device])
            raise DeviceError(f"GPU {device}: ONNX Runtime's CUDA provider failed ({one_line(exc)})") from None
        raise ModelError(f"{path}: not a usable ONNX model ({one_line(exc)})") from None
    active = session.get_providers()[0]
    if device is not None and active != CUDA:  # ONNX Runtime fell back to the CPU on its own
        check_gpus([device])
        raise DeviceError(f"GPU {device}: ONNX Runtime could not start its CUDA provider (run 'pom-infer doctor')")
    return session


def cuda_options(device: int, tf32: bool = True) -> dict[str, Any]:
    """ONNX Runtime CUDA provider options for GPU ``device`` (``use_tf32`` 0: true float32 convolutions)."""
    options: dict[str, Any] = {"device_id": int(device)}
    if not tf32:
        options["use_tf32"] = 0
    return options


def announce(model: Model) -> None:
    """Say in one line what runs the model."""
    if model.provider == "cuda":
        logger.info("ONNX Runtime: CUDA provider on GPU %s for %s", model.device, model.path.name)
    else:
        logger.info("ONNX Runtime: running %s on the CPU", model.path.name)
