"""GPU setup without a GPU: the doctor's report, the refusal of a silent CPU run, the GPU feeding code.

The test machines have onnxruntime-gpu but no CUDA libraries and no NVIDIA driver. Where
a test needs a driver, a fake ``libcuda.so.1`` (a Python object answering the driver
API calls used) is passed to the functions that load libraries.
"""

import ctypes
import json
import threading
import time

import numpy as np
import pytest

from pom_common.errors import DeviceError
from pom_inference import gpu, nvidia
from pom_inference.cli import main as infer_main
from pom_inference.outputs import in_background
from pom_inference.session import batch_from_memory, check_gpus, load_model

from ..helpers import make_onnx_model, make_tomograms


def _set(pointer, value):
    pointer._obj.value = value
    return 0


class FakeDriver:
    """libcuda.so.1 of a driver supporting CUDA 13.0 with two 80 GB GPUs."""

    def __init__(self, version=13000, count=2):
        self.version, self.count = version, count

    def cuDriverGetVersion(self, out):
        return _set(out, self.version)

    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, out):
        return _set(out, self.count)

    def cuDeviceGet(self, out, index):
        return _set(out, index)

    def cuDeviceGetName(self, buffer, size, device):
        buffer.value = b"NVIDIA H100 80GB HBM3"
        return 0

    def cuDeviceTotalMem_v2(self, out, device):
        return _set(out, 80 * 2**30)

    def cuDeviceGetPCIBusId(self, buffer, size, device):
        return 1  # no bus id: no free-memory figure


def loader(missing=(), driver=None):
    """A library loader where ``missing`` fail to load and libcuda.so.1 is ``driver`` (absent when None)."""
    def load(name):
        if name in missing or (name == gpu.DRIVER_LIBRARY and driver is None) or name == nvidia.NVML_LIBRARY:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return driver if name == gpu.DRIVER_LIBRARY else object()
    return load


def test_elf_reader_lists_what_the_cuda_provider_links_against():
    provider = gpu.provider_library()
    if provider is None:
        pytest.skip("onnxruntime without the CUDA provider")
    needed = gpu.elf_needed(provider)
    assert "libcuda.so.1" in needed and any(n.startswith("libcublas") for n in needed)
    with pytest.raises(ValueError, match="not a 64-bit"):
        gpu.elf_needed(__file__)


def test_report_names_the_missing_library_and_its_package():
    report = gpu.diagnose([0], load=loader(missing=("libcublas.so.13",), driver=FakeDriver()))
    assert [lib.name for lib in report.libraries if not lib.ok] == ["libcublas.so.13"]
    assert len(report.problems) == 1
    assert "libcublas.so.13 (nvidia-cublas)" in report.problems[0] and "pom-onnx[gpu]" in report.problems[0]
    assert report.driver_cuda == (13, 0) and [g.name for g in report.gpus] == ["NVIDIA H100 80GB HBM3"] * 2


def test_report_with_everything_in_place_is_ok():
    report = gpu.diagnose([0, 1], load=loader(driver=FakeDriver()))
    assert report.ok and report.gpus[1].total_mib == 80 * 1024
    doc = report.to_dict()
    assert doc["ok"] and doc["driver_cuda"] == "13.0" and doc["libraries"][-1]["name"] == "libcuda.so.1"


def test_report_old_driver_and_absent_gpu():
    old = gpu.diagnose([0], load=loader(driver=FakeDriver(version=12040)))
    assert "supports CUDA up to 12.4" in old.problems[0] and "gpu-cuda12" in old.problems[0]
    absent = gpu.diagnose([3], load=loader(driver=FakeDriver(count=2)))
    assert absent.problems == ["GPU [3] not present: the driver sees 2 GPU(s) (0..1)"]


def test_report_without_driver_names_only_the_driver_when_libraries_load():
    report = gpu.diagnose([0], load=loader())
    missing = [lib for lib in report.libraries if not lib.ok]
    assert [lib.name for lib in missing] == ["libcuda.so.1"] and missing[0].package == "the NVIDIA driver"
    assert report.problems == ["no NVIDIA driver (libcuda.so.1 not found): this machine cannot run CUDA; "
                               "install the NVIDIA driver (580 or newer for CUDA 13)"]


def test_package_names_per_cuda_major():
    assert gpu.package_for("libcublasLt.so.13", 13) == "nvidia-cublas"
    assert gpu.package_for("libcublasLt.so.12", 12) == "nvidia-cublas-cu12"
    assert gpu.package_for("libcudnn.so.9", 13) == "nvidia-cudnn-cu13"
    assert gpu.package_for("libcuda.so.1", 13) == "the NVIDIA driver"


def test_doctor_command(capsys):
    assert infer_main(["doctor"]) == 1  # no driver on the test machines
    out = capsys.readouterr().out
    assert "MISSING  libcuda.so.1" in out and "CUDA cannot run here" in out and "--gpus cpu" in out
    assert infer_main(["doctor", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert not doc["ok"] and doc["requested"] == [0] and any("libcuda.so.1" in p for p in doc["problems"])
    assert infer_main(["doctor", "--gpus", "cpu"]) == 0


def test_gpus_without_cuda_is_a_one_line_error(tmp_path, capsys):
    model = make_onnx_model(tmp_path / "m.onnx")
    make_tomograms(tmp_path / "t", 1)
    code = infer_main(["process", str(model), "--tomograms", str(tmp_path / "t"), "--output", str(tmp_path / "o"),
                       "--gpus", "0,1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libcuda.so.1" in err[0] and "--gpus cpu" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()  # nothing started
    with pytest.raises(DeviceError, match="GPU 0 requested"):
        check_gpus([0])
    with pytest.raises(DeviceError):
        load_model(model, device=0)
    assert check_gpus(None) == [None]


def test_io_binding_gives_the_same_result_on_the_cpu(tmp_path):
    path = make_onnx_model(tmp_path / "m.onnx", channels=("Density", "Membrane"), classes=("A", "B"), kind="shared")
    plain, bound = load_model(path), load_model(path, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    x = np.random.default_rng(0).standard_normal((3, 8, 12, 2)).astype(np.float32)
    assert np.array_equal(bound.run(x), plain.run(x))
    assert bound.batch_for(512, 512) == 8  # the CPU's default


def test_batch_from_free_memory():
    assert batch_from_memory(None, 512, 512, 64) == 8
    assert batch_from_memory(80 * 1024, 512, 512, 64) == 40  # half of 80 GiB at 1 GiB per image
    assert batch_from_memory(1024, 512, 512, 64) == 1
    assert batch_from_memory(10**7, 64, 64, 8) == 64  # capped


class Sink:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.threads = [], fail_at, set()

    def write(self, z0, probabilities):
        self.threads.add(threading.get_ident())
        if z0 == self.fail_at:
            raise OSError(28, "No space left on device")
        self.calls.append((z0, probabilities.copy()))


def test_background_writes_keep_order_and_raise_errors():
    sink = Sink()
    with in_background(sink) as out:
        for z0 in range(0, 40, 4):
            out.write(z0, np.full((4, 2, 2, 1), z0, np.float32))
    assert [z for z, _ in sink.calls] == list(range(0, 40, 4))
    assert all(np.all(p == z) for z, p in sink.calls) and threading.get_ident() not in sink.threads
    failing = Sink(fail_at=8)
    with pytest.raises(OSError, match="No space"), in_background(failing) as out:
        for z0 in range(0, 40, 4):
            out.write(z0, np.zeros((4, 2, 2, 1), np.float32))
    assert [z for z, _ in failing.calls] == [0, 4]


def test_background_planes_from_two_alternating_buffers_are_written_before_reuse():
    """Planes given as arrays (the GPU graph's own output buffers, two alternating): each is written before
    the caller's next call but one overwrites it, however slow the writes."""
    class SlowSink(Sink):
        def write(self, z0, planes):
            time.sleep(0.01)
            super().write(z0, planes)

    sink = SlowSink()
    buffers = [np.empty((1, 2, 2), np.float32) for _ in range(2)]
    with in_background(sink) as out:
        for i, z0 in enumerate(range(0, 20, 2)):
            planes = buffers[i % 2]
            planes[...] = z0  # the network writing its next output into the buffer of the call before last
            out.write(z0, planes)
    assert [z for z, _ in sink.calls] == list(range(0, 20, 2)) and all(np.all(p == z) for z, p in sink.calls)


def test_background_makes_deferred_planes_in_its_own_thread_and_raises_their_errors():
    """A callable item is made (averaged) in a thread of its own, then written in order; a failure ends the block."""
    made_in = set()

    def deferred(z0, fail=False):
        def make():
            made_in.add(threading.get_ident())
            if fail:
                raise ValueError(f"slab {z0} could not be averaged")
            return np.full((1, 2, 2), z0, np.float32)
        return make

    sink = Sink()
    with in_background(sink) as out:
        for z0 in range(0, 24, 2):
            out.write(z0, deferred(z0))
    assert [z for z, _ in sink.calls] == list(range(0, 24, 2)) and all(np.all(p == z) for z, p in sink.calls)
    assert len(made_in) == 1 and not made_in & (sink.threads | {threading.get_ident()})
    failing = Sink()
    with pytest.raises(ValueError, match="slab 4 could not"), in_background(failing) as out:
        for z0 in range(0, 24, 2):
            out.write(z0, deferred(z0, fail=z0 == 4))
    assert [z for z, _ in failing.calls] == [0, 2]


def test_overlapped_writing_gives_identical_outputs(tmp_path):
    model = make_onnx_model(tmp_path / "m.onnx", classes=("A", "B"), kind="shared")
    make_tomograms(tmp_path / "t", 2, shape=(40, 20, 24))
    from pom_inference.driver import process
    from pom_inference.worker import ProcessOptions

    outputs = {}
    for overlap in (False, True):
        opts = ProcessOptions(model=str(model), tomograms=tuple(str(p) for p in sorted((tmp_path / "t").glob("*.mrc"))),
                              output_dir=str(tmp_path / f"o{overlap}"), overlap=overlap, batch=3)
        assert not process(opts, [None]).failed
        outputs[overlap] = {p.name: p.read_bytes() for p in (tmp_path / f"o{overlap}").glob("*.mrc")}
    assert outputs[True] == outputs[False] and len(outputs[True]) == 4


def test_ctypes_pointer_fake_matches_real_byref():
    value = ctypes.c_int(0)
    _set(ctypes.byref(value), 7)
    assert value.value == 7
