"""Opening input files safely: regular files only, bounded reads, plain-words reasons.

A named pipe called ``X.scns`` would make a reader wait for ever; a broken symbolic link or
a link loop would be skipped without a word by ``Path.is_file``. These helpers say what the
path is instead, as an ``OSError`` whose ``strerror`` reads well after the file name.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def regular_file(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of ``path``, insisting on a regular file (symbolic links followed).

    Raises
    ------
    FileNotFoundError
        Missing, or a symbolic link whose target is missing ("broken symbolic link").
    OSError
        A link loop, or not a regular file (a folder, a named pipe, a device ...).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(errno.ENOENT, f"broken symbolic link (to {os.readlink(os.fspath(path))})") from None
        raise FileNotFoundError(errno.ENOENT, "file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "symbolic link loop") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        kind = next((word for test, word in _KINDS if test(st.st_mode)), "not a file")
        raise OSError(errno.EINVAL, f"not a regular file ({kind})")
    return st


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (never blocks on a pipe).

    Raises
    ------
    OSError
        As :func:`regular_file`, or EFBIG when the file is larger than ``limit``.
    """
    st = regular_file(path)
    if st.st_size > limit:
        raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than the {limit} expected")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # replaced by a pipe since the stat: no wait
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise OSError(errno.EFBIG, f"more than the {limit} bytes expected")
        return b"".join(chunks)
    finally:
        os.close(fd)
