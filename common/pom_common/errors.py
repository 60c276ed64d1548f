"""Exception hierarchy. Every message names the file or key and what was expected."""


class PomError(Exception):
    """Base class of every error this toolkit raises on purpose."""

    exit_code = 1


class ConfigError(PomError):
    """The project configuration (or a command-line option) is invalid."""

    exit_code = 2


class InputError(PomError):
    """An input file (tomogram, channel, annotation, dataset) is missing or unusable."""


class UsageError(InputError):
    """Inputs a command cannot start from, found before any work (nothing to score against): a usage error, exit 2."""

    exit_code = 2


class ModelError(PomError):
    """A model file is missing, not ONNX, or lacks the metadata this toolkit writes (a usage error)."""

    exit_code = 2


class DeviceError(PomError):
    """GPUs were asked for and cannot be used here (missing library, driver, GPU)."""

    exit_code = 2


class NoGpuError(DeviceError):
    """GPUs were asked for on a machine without an NVIDIA driver: the command line names the CPU option first."""


class LockError(PomError):
    """A work claim could not be made or kept."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: our errors as they are, others prefixed with their type."""
    if isinstance(exc, OSError) and not isinstance(exc, PomError):
        return os_error_line(exc)[:500]
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    message = first if isinstance(exc, PomError) else f"{type(exc).__name__}: {first}".rstrip(": ")
    return message[:500]


def _owner(path: str) -> str:
    """``alice (uid 1000), mode drwxr-xr-x`` for ``path`` (or its nearest existing parent)."""
    import os
    import stat

    probe = path
    while probe and not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        st = os.stat(probe)
    except OSError:
        return ""
    return f"{probe} belongs to {user_name(st.st_uid)}, mode {stat.filemode(st.st_mode)}"


def user_name(uid: int) -> str:
    """``alice (uid 1000)``, or ``uid 1000`` where the name is unknown."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def os_error_line(exc: OSError, path: object = None) -> str:
    """An operating-system error as one line that names the file or folder and, for permissions, who owns it.

    ``path``: the file or folder concerned, when the error does not carry it.
    """
    import errno
    import os

    where = exc.filename if exc.filename is not None else path
    what = exc.strerror or str(exc) or type(exc).__name__
    line = f"{where}: {what}" if where is not None else what
    if exc.errno in (errno.EACCES, errno.EPERM) and where is not None:
        owner = _owner(os.fspath(where)) if isinstance(where, (str, os.PathLike)) else ""
        me = user_name(os.geteuid()) if hasattr(os, "geteuid") else "this user"
        line += (f" ({owner}; this command runs as {me})" if owner else f" (this command runs as {me})")
    elif exc.errno == errno.ENOSPC:
        line += " (the disk is full: free space there, or write elsewhere)"
    elif exc.errno == errno.EROFS:
        line += " (a read-only filesystem: write elsewhere)"
    elif exc.errno == errno.EDQUOT:
        line += " (over the disk quota)"
    return line
