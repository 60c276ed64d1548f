"""Can ONNX Runtime's CUDA provider run here, and if not, why: the facts behind ``doctor``.

The CUDA provider of onnxruntime-gpu is a shared library that links against CUDA and
cuDNN (pip packages ``nvidia-*``, brought by the ``[gpu]`` extra) and against the NVIDIA
driver (``libcuda.so.1``, never a pip package). :func:`preload` loads the pip-installed
libraries once, so no ``LD_LIBRARY_PATH`` is needed; :func:`diagnose` says, library by
library, what loads and what is missing, and what the driver supports.

Everything here reads the system (ctypes, /proc); nothing changes it but loading libraries.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .elf import elf_needed
from .nvidia import DRIVER_LIBRARY, Gpu, driver_cuda_version, list_gpus

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
#: Oldest driver branch that runs each CUDA major (NVIDIA's compatibility table).
MIN_DRIVER = {12: 525, 13: 580}
#: The install lines, per CUDA major of the onnxruntime-gpu build.
INSTALL = {13: "pip install 'pom-onnx[gpu]' (CUDA 13, NVIDIA driver 580 or newer)",
           12: "pip install 'pom-onnx[gpu-cuda12]' (CUDA 12, NVIDIA driver 525 or newer)"}
#: System libraries the provider also links against; not CUDA's business.
_SYSTEM = ("libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so", "libstdc++.so", "libgcc_s.so",
           "ld-linux", "libonnxruntime")
#: Library name prefix -> pip package (without the CUDA suffix), for the hint on a missing one.
_PACKAGES = (("libcublas", "nvidia-cublas"), ("libcudart", "nvidia-cuda-runtime"), ("libnvrtc", "nvidia-cuda-nvrtc"),
             ("libcurand", "nvidia-curand"), ("libcufft", "nvidia-cufft"), ("libnvJitLink", "nvidia-nvjitlink"),
             ("libcudnn", "nvidia-cudnn"))


@dataclass(frozen=True)
class Library:
    """One library the CUDA provider needs, and where it was loaded from (None: not loadable)."""

    name: str
    path: str | None
    package: str  # what provides it: a pip package, or "the NVIDIA driver"
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether it loads."""
        return self.path is not None


@dataclass
class CudaReport:
    """What ``doctor`` prints: versions, libraries, driver, GPUs, and the problems found."""

    onnxruntime: str
    package: str
    providers: list[str]
    cuda_build: int | None  # CUDA major the onnxruntime-gpu build needs; None: no CUDA build
    libraries: list[Library] = field(default_factory=list)
    driver_cuda: tuple[int, int] | None = None  # the highest CUDA version the driver supports
    gpus: list[Gpu] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the CUDA provider can run on the requested GPUs."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document (``doctor --json``)."""
        return {"onnxruntime": self.onnxruntime, "package": self.package, "providers": self.providers,
                "cuda_build": self.cuda_build, "ok": self.ok, "problems": self.problems,
                "libraries": [{"name": lib.name, "loaded_from": lib.path, "provided_by": lib.package,
                               **({"error": lib.error} if lib.error else {})} for lib in self.libraries],
                "driver_cuda": ".".join(map(str, self.driver_cuda)) if self.driver_cuda else None,
                "gpus": [vars(g) for g in self.gpus]}


# ----------------------------------------------------------------------------- onnxruntime


def _ort() -> Any:
    # ONNX Runtime's telemetry writes a device id under HOME, and prints a coloured warning
    # when it cannot (a second user, a service account): not for our users' logs.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # missing CUDA libraries are reported by us, in one place
    return ort


def cuda_build() -> int | None:
    """The CUDA major version this onnxruntime build needs (None: not a CUDA build)."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    version = str(getattr(info, "cuda_version", "") or "")
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else None


def provider_library() -> Path | None:
    """The CUDA provider's shared library inside the installed onnxruntime, when there is one."""
    path = Path(_ort().__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    return path if path.is_file() else None


@functools.cache
def preload() -> None:
    """Load the pip-installed CUDA and cuDNN libraries once (ONNX Runtime's ``preload_dlls``), quietly.

    What could not be loaded is found and said by :func:`diagnose`, not printed here.
    """
    ort = _ort()
    if not hasattr(ort, "preload_dlls") or cuda_build() is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception as exc:  # a missing folder or a broken package: diagnose() names it
            logger.debug("preload_dlls: %s", exc)


# ----------------------------------------------------------------------------- libraries


def _loaded_path(name: str) -> str | None:
    """Where the process mapped a library whose file name starts with ``name`` (from /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and Path(parts[5]).name.startswith(name):
            return parts[5]
    return None


def package_for(library: str, cuda_major: int | None) -> str:
    """What provides ``library``: the NVIDIA driver, or the pip package of the CUDA/cuDNN release."""
    if library.startswith("libcuda.so") or library.startswith("libnvidia-ml"):
        return "the NVIDIA driver"
    for prefix, package in _PACKAGES:
        if library.startswith(prefix):
            if package == "nvidia-cudnn":
                return f"nvidia-cudnn-cu{cuda_major or 12}"
            # CUDA 13 wheels dropped the -cuNN suffix; CUDA 12 wheels carry -cu12.
            return package if (cuda_major or 0) >= 13 else f"{package}-cu{cuda_major or 12}"
    return "CUDA (unknown package)"


def required_libraries(provider: Path | None, cuda_major: int | None) -> list[str]:
    """The libraries the CUDA provider links against, then those it loads at run time (cuDNN, ...)."""
    names: list[str] = []
    if provider is not None:
        with contextlib.suppress(OSError, ValueError):
            names = [n for n in elf_needed(provider) if not n.startswith(_SYSTEM)]
    try:  # ONNX Runtime's own list of what preload_dlls loads (names only)
        ort = _ort()
        extra = [p[-1] for p in ort._get_nvidia_dll_paths(False, True, True)]
    except Exception:
        major = cuda_major or 12
        extra = ["libcudnn.so.9", f"libcufft.so.{major - 1}", f"libnvrtc.so.{major}"]
    for name in extra:
        if name not in names:
            names.append(name)
    if DRIVER_LIBRARY in names:  # the driver last: it is the one no pip package can bring
        names.remove(DRIVER_LIBRARY)
    return [*names, DRIVER_LIBRARY]


def check_libraries(names: list[str], cuda_major: int | None,
                    load: Callable[[str], object] = ctypes.CDLL) -> list[Library]:
    """Try to load each library by name (after :func:`preload`); say where from, or why not."""
    found = []
    for name in names:
        try:
            load(name)
            path = _loaded_path(name) or name
            found.append(Library(name, path, package_for(name, cuda_major)))
        except OSError as exc:
            found.append(Library(name, None, package_for(name, cuda_major), str(exc).split(":")[-1].strip()))
    return found


# ----------------------------------------------------------------------------- the report


def _versions(*distributions: str) -> list[str]:
    """``name version`` of each installed distribution among ``distributions``."""
    found = []
    for dist in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{dist} {metadata.version(dist)}")
    return found


def diagnose(gpus: list[int] | None = None, load: Callable[[str], Any] = ctypes.CDLL) -> CudaReport:
    """Everything that decides whether the CUDA provider runs here on ``gpus`` (default: any GPU).

    ``problems`` lists each reason it cannot, in plain words with the fix; empty when it can.
    """
    ort = _ort()
    major = cuda_build()
    package = next((d for d in ("onnxruntime-gpu", "onnxruntime") if _installed(d)), "onnxruntime")
    report = CudaReport(ort.__version__, package, list(ort.get_available_providers()), major)
    if CUDA not in report.providers or major is None:
        report.problems.append(f"this ONNX Runtime ({package} {ort.__version__}) has no CUDA provider; "
                               f"install the GPU build: {INSTALL[13]}")
        return report
    preload()
    report.libraries = check_libraries(required_libraries(provider_library(), major), major, load)
    missing = [lib for lib in report.libraries if not lib.ok]
    pip_missing = [lib for lib in missing if lib.name != DRIVER_LIBRARY]
    if pip_missing:
        names = ", ".join(f"{lib.name} ({lib.package})" for lib in pip_missing)
        report.problems.append(f"CUDA {major} libraries missing: {names}; install them: {INSTALL.get(major, INSTALL[13])}")
    report.driver_cuda = driver_cuda_version(load)
    if report.driver_cuda is None:
        report.problems.append(f"no NVIDIA driver ({DRIVER_LIBRARY} not found): this machine cannot run CUDA; "
                               f"install the NVIDIA driver ({MIN_DRIVER.get(major, 580)} or newer for CUDA {major})")
    elif report.driver_cuda[0] < major:
        report.problems.append(
            f"the NVIDIA driver supports CUDA up to {report.driver_cuda[0]}.{report.driver_cuda[1]}, this "
            f"onnxruntime-gpu needs CUDA {major}: update the driver to {MIN_DRIVER.get(major, 580)} or newer, "
            f"or {INSTALL[12]}")
    else:
        report.gpus = list_gpus(load)
        absent = [g for g in (gpus or []) if g >= len(report.gpus)]
        if not report.gpus:
            report.problems.append("the NVIDIA driver sees no GPU")
        elif absent:
            report.problems.append(f"GPU {absent} not present: the driver sees {len(report.gpus)} GPU(s) "
                                   f"(0..{len(report.gpus) - 1})")
    cudnn = _versions("nvidia-cudnn-cu12", "nvidia-cudnn-cu13")
    if len(cudnn) > 1:
        report.problems.append(f"both {' and '.join(cudnn)} are installed: they write the same files "
                               "(nvidia/cudnn/lib); use one environment per CUDA major (see docs/gpu.md)")
    return report


def _installed(distribution: str) -> bool:
    return bool(_versions(distribution))
