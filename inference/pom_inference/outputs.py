"""Output writers: class probabilities of one tomogram into files, all or none.

A writer owns its file names, temporary names and renames. :class:`OutputWriter` is the
interface the worker uses; :class:`MrcFloat32Writer` (probabilities 0..1) and
:class:`MrcUint8Writer` (0..127 in one signed byte, as Pom 1.2 and easymode write them) are its implementations.
Each class goes to ``<output>/<stem>__<Class>.mrc`` at the network's voxel size.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import glob
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pom_common.atomic import TMP_MARK, no_replace
from pom_common.mrcio import expected_size, new_volume
from pom_common.naming import feature_filename
from pom_common.normalise import SIGNED_BYTE_SCALE as BYTE_FULL_SCALE
from pom_common.slabfile import SlabFile


class SlabSink(Protocol):
    """Where one tomogram's outputs go, slab by slab."""

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store (Kc, n, ny, nx) planes (the writer's classes, in order, already converted) at slices z0..z0+n."""


class OutputWriter(Protocol):
    """Writes the chosen classes of each tomogram; the files appear together or not at all."""

    classes: tuple[str, ...]
    class_index: tuple[int, ...]  # each class's channel in the network's output
    kind: str  # the conversion the planes must have had: "float32" or "uint8" (see pom_inference.predict.KINDS)

    def paths(self, stem: str) -> list[Path]:
        """The final files of ``stem``, one per class."""

    def planes(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, ny, nx, K) probabilities -> the (Kc, n, ny, nx) planes a sink stores (NumPy; the predictor makes them directly)."""

    def open(self, stem: str, shape: tuple[int, int, int], voxel_size: float,
             before_replace: Callable[[], None] | None = None,
             generation: int | None = None) -> contextlib.AbstractContextManager[SlabSink]:
        """Begin ``stem``'s outputs of (nz, ny, nx) voxels; moved into place when the block ends.

        With ``before_replace``, a file already in place is kept when it holds the same bytes
        (another worker of the same recipe put it there), and replaced only after
        ``before_replace()`` did not raise (see :func:`pom_common.atomic.no_replace`).
        ``generation``: the claim's, written into the temporary names (see
        :meth:`remove_temporaries`).
        """

    def describe(self, stem: str) -> dict[str, dict[str, int]]:
        """Name -> size and inode of each output of ``stem`` just written (for :meth:`verify`)."""

    def intact(self, outputs: Mapping[str, Any]) -> dict[str, bool]:
        """Recorded output name -> whether the file is still the one :meth:`describe` recorded (present, same size and inode)."""

    def remove_temporaries(self, stem: str, below: int | None = None) -> int:
        """Delete temporary files a stopped worker left for ``stem`` (of generations < ``below``); how many."""


class _MrcSink:
    def __init__(self, volumes: list[SlabFile]) -> None:
        self.volumes = volumes

    def write(self, z0: int, planes: np.ndarray) -> None:
        if len(planes) != len(self.volumes):
            raise ValueError(f"{len(planes)} class planes for {len(self.volumes)} files")
        for volume, plane in zip(self.volumes, planes):
            volume.write(z0, plane)

    def finish(self) -> None:
        """Compute every file's header statistics (files written out of order are read back, in parallel)."""
        if len(self.volumes) < 2 or all(v.in_order for v in self.volumes):  # accumulated as written: nothing to read
            for volume in self.volumes:
                volume.header_stats()
            return
        with ThreadPoolExecutor(max_workers=min(len(self.volumes), os.cpu_count() or 1),
                                thread_name_prefix="pom-stats") as pool:
            list(pool.map(lambda v: v.header_stats(), self.volumes))


class _MrcWriter:
    """One MRC file per class, written slab by slab under temporary names."""

    dtype: type = np.float32
    kind = "float32"

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str], class_index: Sequence[int]) -> None:
        self.folder = Path(folder)
        self.classes = tuple(classes)
        self.class_index = tuple(class_index)

    @staticmethod
    def convert(p: np.ndarray) -> np.ndarray:
        """Probabilities as stored (identity for float32)."""
        return p

    def planes(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, ny, nx, K) probabilities -> (Kc, n, ny, nx) planes of the chosen classes, converted."""
        return np.stack([self.convert(probabilities[..., k]).astype(self.dtype) for k in self.class_index])

    def paths(self, stem: str) -> list[Path]:
        """``<folder>/<stem>__<Class>.mrc`` per class."""
        return [self.folder / feature_filename(stem, c) for c in self.classes]

    @contextlib.contextmanager
    def open(self, stem: str, shape: tuple[int, int, int], voxel_size: float,
             before_replace: Callable[[], None] | None = None, generation: int | None = None) -> Iterator[SlabSink]:
        """Create every class file (temporary names); move all of them into place when the block succeeds."""
        publish = no_replace(before_replace) if before_replace is not None else None
        tag = f"g{generation}" if generation is not None else ""
        with contextlib.ExitStack() as stack:
            volumes = [stack.enter_context(new_volume(p, shape, self.dtype, voxel_size, publish, tag))
                       for p in self.paths(stem)]
            sink = _MrcSink(volumes)
            yield sink
            sink.finish()

    def describe(self, stem: str) -> dict[str, dict[str, int]]:
        """Size and inode of each class file; the size must be what its header implies.

        Raises
        ------
        OSError
            A file is missing or shorter than its header says (a filesystem that lost data).
        """
        out = {}
        for path in self.paths(stem):
            st = os.stat(path)
            if st.st_size != expected_size(path):
                raise OSError(errno.EIO, f"{path.name}: {st.st_size} bytes, its header implies {expected_size(path)}")
            out[path.name] = {"size": st.st_size, "inode": st.st_ino}
        return out

    def intact(self, outputs: Mapping[str, Any]) -> dict[str, bool]:
        """For each recorded output name (any recipe's), whether that file is still the one recorded.

        ``outputs``: name -> {size, inode, ...} as :meth:`describe` made it. A name that is
        not a plain file name (a record from elsewhere) is not intact.
        """
        result = {}
        for name, recorded in outputs.items():
            ok = False
            if isinstance(recorded, Mapping) and name == Path(name).name and name not in ("", ".", ".."):
                try:
                    st = os.stat(self.folder / name)
                    ok = st.st_size == recorded.get("size") and st.st_ino == recorded.get("inode")
                except OSError:
                    ok = False
            result[name] = ok
        return result

    def remove_temporaries(self, stem: str, below: int | None = None) -> int:
        """Delete ``.<name>.tmp-*`` files of ``stem``'s outputs; with ``below``, only those of earlier generations.

        A worker that takes a claim over at generation G removes what the stopped owners
        (generations < G) left, never the files of a later owner that took over from it
        while it was itself stopped.
        """
        removed = 0
        for path in self.paths(stem):
            prefix = f".{path.name}{TMP_MARK}"
            for tmp in self.folder.glob(f"{glob.escape(prefix)}*"):
                tag = re.match(r"g(\d+)-", tmp.name[len(prefix):])
                if below is not None and tag is not None and int(tag.group(1)) >= below:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed += 1
        return removed


class MrcFloat32Writer(_MrcWriter):
    """Probabilities 0..1 as float32 MRC (mode 2)."""

    dtype = np.float32


class MrcUint8Writer(_MrcWriter):
    """Probabilities as 0..127 in one byte per voxel: MRC mode 0 with IMOD's stamp and its signed-bytes flag.

    Pom 1.2 (int8, full scale 127) and easymode read these files as they are, IMOD reads them
    as signed bytes, and this toolkit reads them back as a channel at full scale 127
    (:func:`pom_common.normalise.channel_scale`). A probability p is stored as round(127 p).
    """

    dtype = np.int8
    kind = "uint8"

    @staticmethod
    def convert(p: np.ndarray) -> np.ndarray:
        """0..1 -> 0..127, rounded."""
        return np.rint(np.clip(p, 0, 1) * BYTE_FULL_SCALE)


class OnTomogramGrid:
    """A sink that stores binned planes on the tomogram's own grid (``--grid tomogram``), for overlays.

    Nearest neighbour: each binned voxel fills its b x b x b block of the tomogram; where a size
    is not a multiple of b, the last n mod b slices, rows or columns repeat the last ones. The
    values are those of the binned outputs (no new ones); one upsampled slice is in memory at a time.
    """

    def __init__(self, sink: SlabSink, factor: int, shape: tuple[int, int, int]) -> None:
        self.sink = sink
        self.factor = int(factor)
        self.shape = shape  # the tomogram's (nz, ny, nx)

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store binned planes (Kc, n, ny // b, nx // b) of binned slices z0..z0+n."""
        b, (nz, ny, nx) = self.factor, self.shape
        _, n, h, w = planes.shape
        for i in range(n):
            up = np.repeat(np.repeat(planes[:, i], b, axis=1), b, axis=2)
            if up.shape[1:] != (ny, nx):
                up = np.pad(up, ((0, 0), (0, ny - h * b), (0, nx - w * b)), mode="edge")
            start = (z0 + i) * b
            end = nz if z0 + i + 1 == nz // b else start + b
            self.sink.write(start, np.broadcast_to(up[:, None], (up.shape[0], end - start, ny, nx)))


#: What a background sink is given: planes, or a function that makes them (see SlicePredictor).
Planes = np.ndarray | Callable[[], np.ndarray]


def _made(item: Planes) -> np.ndarray:
    return item() if callable(item) else item


class PlanesSink(Protocol):
    """A sink given planes or functions that make them (the worker's view of :func:`in_background`)."""

    def write(self, z0: int, item: Planes) -> None:
        """Store the planes ``item`` is or makes at slices z0..z0+n."""


class Inline:
    """A :class:`PlanesSink` that makes and writes each slab at once, in the caller's thread."""

    def __init__(self, sink: SlabSink) -> None:
        self.sink = sink

    def write(self, z0: int, item: Planes) -> None:
        """Make the planes (if deferred) and store them."""
        self.sink.write(z0, _made(item))


class _Background:
    """A sink fed from two threads: one makes the planes (the TTA average), one writes them, in order.

    With the network in the caller's thread, three steps of consecutive slabs run at once:
    slab n + 1 is computed while slab n is averaged and slab n - 1 written.
    """

    def __init__(self, sink: SlabSink, maker: ThreadPoolExecutor, writer: ThreadPoolExecutor) -> None:
        self.sink = sink
        self.maker = maker
        self.writer = writer
        self.pending: collections.deque[tuple[Future[np.ndarray], Future[None]]] = collections.deque()
        self.failed = False

    def write(self, z0: int, item: Planes) -> None:
        """Start making and writing ``item``; raise the error of an earlier slab, if any.

        A function (a deferred average, see :class:`~pom_inference.predict.SlicePredictor`):
        returns once the slab before this one is made (its network buffers may be reused) and
        the one before that written (its planes may be reused). Planes: returns once every slab
        before is written, as the caller's next call may overwrite the planes given before these.
        """
        while len(self.pending) >= (2 if callable(item) else 1):
            self.pending.popleft()[1].result()
        if self.pending:
            self.pending[-1][0].result()
        made = self.maker.submit(_made, item)
        self.pending.append((made, self.writer.submit(self._write, z0, made)))

    def _write(self, z0: int, made: Future[np.ndarray]) -> None:
        if self.failed:  # an earlier slab failed: the block ends with its error, nothing more is written
            return
        try:
            self.sink.write(z0, made.result())
        except BaseException:
            self.failed = True
            raise

    def wait(self) -> None:
        """Wait for every slab in flight (raising the first error)."""
        while self.pending:
            self.pending.popleft()[1].result()


@contextlib.contextmanager
def in_background(sink: SlabSink) -> Iterator[PlanesSink]:
    """Make (average) and write slabs in two threads while the caller computes the next one.

    At most two slabs are in flight, so memory stays bounded. A failed slab is raised by a
    later write or when the block ends; every write has finished when the block ends.
    """
    maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pom-average")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pom-writer")
    background = _Background(sink, maker, writer)
    try:
        yield background
        background.wait()
    finally:
        background.failed = background.failed or bool(background.pending)  # left by an error: write no more
        writer.shutdown(wait=True, cancel_futures=True)
        maker.shutdown(wait=True, cancel_futures=True)


WRITERS: dict[str, type[_MrcWriter]] = {"float32": MrcFloat32Writer, "uint8": MrcUint8Writer}


def make_writer(kind: str, folder: str | os.PathLike, classes: Sequence[str],
                class_index: Sequence[int], form: Any = None) -> OutputWriter:
    """The writer for output type ``kind`` (``float32`` or ``uint8``).

    ``form``: an :class:`pom_inference.forms.OutputForm` other than the default (a label
    map, OME-Zarr) is written by :mod:`pom_inference.forms`.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    if kind not in WRITERS:
        raise ValueError(f"unknown output type {kind!r}; expected one of {sorted(WRITERS)}")
    if form is not None and not form.default:
        from .forms import make_form_writer

        return make_form_writer(kind, folder, classes, class_index, form)
    try:
        return WRITERS[kind](folder, classes, class_index)
    except KeyError:
        raise ValueError(f"unknown output type {kind!r}; expected one of {sorted(WRITERS)}") from None
