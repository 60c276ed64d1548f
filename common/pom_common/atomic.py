"""Atomic file writes: a temporary name in the same folder, then os.replace.

No reader (another worker, another server, a user) ever sees a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def temporary_path(target: str | os.PathLike, tag: str = "") -> Path:
    """A unique hidden name beside ``target`` (``.<name>.tmp-[<tag>-]<pid>-<hex>``); cleaned up by whoever created it."""
    target = Path(target)
    tag = f"{tag}-" if tag else ""
    return target.with_name(f".{target.name}{TMP_MARK}{tag}{os.getpid()}-{secrets.token_hex(4)}")


Publish = Callable[[Path, Path], None]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, publish: Publish | None = None, tag: str = "") -> Iterator[Path]:
    """Yield a temporary path; on success it is moved to ``target``, on error removed.

    ``publish(tmp, target)`` moves it (default: ``os.replace``); see :func:`no_replace`.
    ``tag`` goes into the temporary name (see :func:`temporary_path`).
    """
    target = Path(target)
    tmp = temporary_path(target, tag)
    try:
        yield tmp
        (publish or os.replace)(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write that failed (ENOSPC ...): name the file
            exc.filename = str(target)
        raise


def same_bytes(a: str | os.PathLike, b: str | os.PathLike, block: int = 1 << 20) -> bool:
    """Whether two files hold the same bytes (sizes first, then 1 MiB blocks: outputs are large)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                return False
            if not x:
                return True


def no_replace(before_replace: Callable[[], None]) -> Publish:
    """A publisher for results that several writers may produce, identical when their recipe is.

    ``target`` is created from ``tmp`` only if absent (a hard link, so another writer's file
    is never replaced by accident). If a file is already there with the same bytes, it is
    kept and ``tmp`` removed: a writer that was paused past its turn and finishes late
    leaves the files of the one that took over alone. If a different file is there (old
    outputs being redone), ``before_replace()`` is called, and may raise to refuse (the
    caller no longer owns the work); otherwise ``tmp`` replaces it. (A writer paused between
    that call and the replace still replaces once; the work queue's take-over removes a
    stopped writer's temporary files, which closes that window unless the pause begins
    after the take-over's cleanup; a done record then no longer verifies, and the tomogram
    is redone.)
    """
    def publish(tmp: Path, target: Path) -> None:
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        except OSError as exc:  # no hard links here: the same rules, with a look first
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
            if not os.path.lexists(target):
                os.replace(tmp, target)
                return
        else:
            os.unlink(tmp)
            return
        if os.path.isfile(target) and same_bytes(tmp, target):
            os.unlink(tmp)
            return
        before_replace()
        os.replace(tmp, target)
    return publish


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file, flushed to disk, then renamed."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


#: Leftovers of a killed folder replacement (:func:`atomic_folder`) older than this are removed.
STALE_FOLDER_SECONDS = 3600.0


def _remove_stale_siblings(target: Path, marks: tuple[str, ...], older_than: float) -> None:
    """Remove ``.<target>.tmp-*`` / ``.<target>.old-*`` folders left by killed replacements."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if entry.name.startswith(tuple(f".{target.name}{m}" for m in marks)) and entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                        shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, stale_seconds: float = STALE_FOLDER_SECONDS) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` to fill; on success it replaces ``target`` as a whole.

    Readers see the previous complete folder or the new one, never a mixture: the old folder
    is renamed aside, the new one renamed into place, and the old one removed. A process
    killed between those two renames leaves no ``target`` (and a hidden ``.old-`` folder,
    removed with other leftovers older than ``stale_seconds`` by the next replacement); on an
    error the new folder is removed and ``target`` is untouched.
    """
    target = Path(target)
    _remove_stale_siblings(target, (TMP_MARK, ".old-"), stale_seconds)
    build = temporary_path(target)
    os.makedirs(build)
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(target, old)
    except FileNotFoundError:
        old = None  # type: ignore[assignment]
    os.rename(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
