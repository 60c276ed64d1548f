"""What both command-line programs share: one-line argument errors, the ``gpus`` option, the error boundary.

``pom`` and ``pom-infer`` build their parsers with :class:`OneLineParser`, add their GPU
option with :func:`add_gpus_option`, and run through :func:`run_cli`, so an error means the
same exit code and the same one line in both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

from .errors import DeviceError, NoGpuError, PomError, os_error_line
from .log import configure_logging

#: Exit code of a run stopped by Ctrl-C or SIGTERM.
INTERRUPTED = 130
#: Exit code when the reader of the output went away (128 + SIGPIPE).
BROKEN_PIPE = 141


#: ``--dtype`` of both programs.
DTYPE_HELP = ("output values: float32 probabilities 0..1 (default), or uint8: one byte per voxel, 0..127 "
              "(MRC mode 0, signed bytes as IMOD marks them; as Pom 1.2 and easymode write them)")


class Extra(NamedTuple):
    """An optional extra some commands need: its name, how to install it, the modules it brings."""

    name: str
    install: str
    modules: tuple[str, ...]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage block only with ``--help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see prog --help)`` and exit 2."""
        top = self.prog.split()[0]
        print(f"{self.prog}: error: {message} (see '{top} --help')", file=sys.stderr)
        sys.exit(2)


def add_gpus_option(parser: argparse.ArgumentParser, flags: Sequence[str], default: str | None, default_help: str,
                    purpose: str = "GPU indices") -> None:
    """Add the GPU option: indices such as ``0,1,3``, or ``cpu``; parsed later by :func:`pom_common.config.parse_gpus`.

    Parameters
    ----------
    flags : the option's spellings, e.g. ``("-gpus", "--gpus")`` (Pom's) or ``("--gpus",)``.
    default : the text used when the option is absent (None: the caller decides, e.g. from the configuration).
    default_help : what the default is, for ``--help``.
    purpose : what the indices are for, e.g. "GPUs to check".
    """
    parser.add_argument(*flags, dest="gpus", default=default,
                        help=f"{purpose}, e.g. 0,1,3, or 'cpu' (default: {default_help})")


def run_cli(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            run: Callable[[argparse.Namespace], int], device_hint: str,
            prepare: Callable[[argparse.Namespace], None] | None = None,
            extra: Extra | None = None,
            parse: Callable[[Sequence[str] | None], argparse.Namespace] | None = None,
            no_gpu_fix: str = "add --gpus cpu") -> int:
    """Parse ``argv`` and run the command: the error boundary of a command-line program.

    Parameters
    ----------
    prog : the program's name, the start of every error line.
    parser : its parser (``--debug`` among its options).
    argv : the arguments (None: the command line).
    run : runs the parsed command; returns the exit code, raises :class:`PomError` on failure.
    device_hint : appended to a :class:`DeviceError`'s line (how to run without the GPU).
    no_gpu_fix : for a :class:`NoGpuError` (no NVIDIA driver), what to do, said first:
        ``no GPU on this machine: <no_gpu_fix> (<the error>)``.
    prepare : called before ``run`` inside the boundary (e.g. importing a heavy library quietly).
    extra : the optional extra some commands need: a module of it missing is one line, exit 2.
    parse : parses ``argv`` instead of ``parser.parse_args`` (may exit through ``parser.error``).

    Returns
    -------
    0; 1 for a failed run, or a file or folder that could not be used (a full disk, another
    user's folder: one line naming it); 2 for a usage, configuration or device error; 130 when
    interrupted; 141 when the reader of the output went away (``| head``), as SIGPIPE would.
    Without ``--debug`` an error is one line on stderr; with it, the traceback too.
    """
    try:
        args = (parse or parser.parse_args)(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already said in one line (2)
        return int(exc.code or 0)
    configure_logging(verbose=args.debug)
    try:
        if prepare is not None:
            prepare(args)
        code = run(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:  # the reader went away (`pom-infer status | head`): stop quietly, as cat does
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return BROKEN_PIPE
    except PomError as exc:
        if args.debug:
            traceback.print_exc()
        kind = "" if exc.exit_code == INTERRUPTED else "error: "
        if isinstance(exc, NoGpuError):
            print(f"{prog}: {kind}no GPU on this machine: {no_gpu_fix} ({exc})", file=sys.stderr)
        else:
            hint = device_hint if isinstance(exc, DeviceError) else ""
            print(f"{prog}: {kind}{exc}{hint}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file or folder outside any one tomogram's work: full disk, permissions, read-only
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if extra is None or not exc.name or exc.name.split(".")[0] not in extra.modules:
            raise
        print(f"{prog}: error: this command needs the {extra.name} extra ({exc.name} is missing): {extra.install}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
