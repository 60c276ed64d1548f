"""Exception hierarchy. Every message names the file or key and what was expected."""


class PomError(Exception):
    """Base class of every error this toolkit raises on purpose."""

    exit_code = 1


class ConfigError(PomError):
    """The project configuration (or a command-line option) is invalid."""

    exit_code = 2


class InputError(PomError):
    """An input file (tomogram, channel, annotation, dataset) is missing or unusable."""


class ModelError(PomError):
    """A model file is missing, not ONNX, or lacks the metadata this toolkit writes (a usage error)."""

    exit_code = 2


class DeviceError(PomError):
    """GPUs were asked for and cannot be used here (missing library, driver, GPU)."""

    exit_code = 2


class LockError(PomError):
    """A work claim could not be made or kept."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: our errors as they are, others prefixed with their type."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    message = first if isinstance(exc, PomError) else f"{type(exc).__name__}: {first}".rstrip(": ")
    return message[:500]
