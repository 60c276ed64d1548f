"""What a ``pom-infer process`` run asks of its workers, and what each worker reports back.

Passed by value to every worker process (no global configuration); :class:`Stop` is what
the signal handlers raise in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pom_common.defaults import LEASE_SECONDS, STALL_SECONDS, TTA
from pom_common.errors import PomError
from pom_common.workqueue import FileClaimStore

from .forms import OutputForm


class Stop(BaseException):
    """Raised by the signal handlers; not an ``Exception``, so no error boundary swallows it."""


@dataclass(frozen=True)
class ProcessOptions:
    """Everything a worker needs; passed by value to each worker process."""

    model: str
    tomograms: tuple[str, ...]
    output_dir: str
    channel_dirs: tuple[str, ...] = ()  # where <stem>__<channel>.mrc are looked for (before the tomogram's folder)
    classes: tuple[str, ...] | None = None  # subset of the model's classes to write
    tta: int = TTA
    dtype: str = "float32"  # output writer: "float32" or "uint8" (0..127 in one signed byte, as Pom 1.2 writes)
    grid: str = "binned"  # outputs on the network's binned grid, or "tomogram": upsampled to the tomogram's
    overwrite: bool = False  # redo every tomogram once for this run (also those of other runs' outputs)
    retry_failed: bool = False  # try recorded failures once more
    lease_seconds: float = LEASE_SECONDS
    stall_seconds: float = STALL_SECONDS  # no progress this long: let the claims expire
    fallback_voxel_size: float | None = None  # used when a header says 0 or 1
    batch: int | None = None  # slices per ONNX Runtime call (None: chosen from free GPU memory, else 8)
    poll_seconds: float | None = None  # wait between looks at claims held by others
    threads: int | None = None
    expect_channels: tuple[str, ...] | None = None  # refuse a model whose inputs differ (project runs)
    overlap: bool | None = None  # write slab n while slab n + 1 is predicted (None: yes)
    allow_voxel_size_mismatch: bool = False  # segment tomograms whose voxel size differs from the model's
    precision: str = "fp32"  # fp32, fp16, int8 or auto (pom_inference.precision), checked against fp32 first
    workers_per_device: int = 1  # workers sharing each device (they share its free memory)
    tta_graph: bool | None = None  # TTA and post-processing in an ONNX graph around the network (None: on a GPU)
    form: OutputForm = OutputForm()  # label map and/or OME-Zarr (pom_inference.forms); default: MRC per class

    def conditions(self) -> dict[str, Any]:
        """The settings that decide whether a tomogram is refused (recorded with failures)."""
        return {"allow_voxel_size_mismatch": self.allow_voxel_size_mismatch}


@dataclass
class WorkerResult:
    """What one worker did; returned to the driver."""

    name: str
    classes: tuple[str, ...] = ()
    fingerprint: str = ""
    channels: tuple[str, ...] = ()  # the model's input channels
    model: tuple[str, str] = ("", "")  # the model's path and the sha256 of the bytes loaded
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # inputs still being written: not tried
    fatal: PomError | None = None  # the worker could not start, or its state folder failed
    stopped: str = ""  # the signal that stopped it
    unreleased: list[str] = field(default_factory=list)  # claims it could not give up (they expire)
    left: list[str] = field(default_factory=list)  # held by other workers when it ended: left to them and the keeper
    keeper: str = ""  # who keeps the folder, when it left tomograms to others ("host pid N")
    seconds: float = 0.0  # from the model loaded to the end of the loop
    network_seconds: float = 0.0  # of which the network was running
    input_bytes: int = 0  # of the tomograms (and channels) it completed


def open_store(opts: ProcessOptions) -> FileClaimStore:
    """The claim store of ``opts.output_dir`` (one per output folder, whatever the model)."""
    return FileClaimStore(opts.output_dir, opts.lease_seconds, stall_seconds=opts.stall_seconds)
