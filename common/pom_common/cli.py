"""What both command-line programs share: one-line argument errors, the ``gpus`` option, the error boundary.

``pom`` and ``pom-infer`` build their parsers with :class:`OneLineParser`, add their GPU
option with :func:`add_gpus_option`, and run through :func:`run_cli`, so an error means the
same exit code and the same one line in both.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

from .errors import DeviceError, PomError
from .log import configure_logging

#: Exit code of a run stopped by Ctrl-C or SIGTERM.
INTERRUPTED = 130


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
            extra: Extra | None = None) -> int:
    """Parse ``argv`` and run the command: the error boundary of a command-line program.

    Parameters
    ----------
    prog : the program's name, the start of every error line.
    parser : its parser (``--debug`` among its options).
    argv : the arguments (None: the command line).
    run : runs the parsed command; returns the exit code, raises :class:`PomError` on failure.
    device_hint : appended to a :class:`DeviceError`'s line (how to run without the GPU).
    prepare : called before ``run`` inside the boundary (e.g. importing a heavy library quietly).
    extra : the optional extra some commands need: a module of it missing is one line, exit 2.

    Returns
    -------
    0; 1 for a failed run; 2 for a usage, configuration or device error; 130 when interrupted.
    Without ``--debug`` an error is one line on stderr; with it, the traceback too.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already said in one line (2)
        return int(exc.code or 0)
    configure_logging(verbose=args.debug)
    try:
        if prepare is not None:
            prepare(args)
        return run(args)
    except PomError as exc:
        if args.debug:
            traceback.print_exc()
        kind = "" if exc.exit_code == INTERRUPTED else "error: "
        hint = device_hint if isinstance(exc, DeviceError) else ""
        print(f"{prog}: {kind}{exc}{hint}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if extra is None or not exc.name or exc.name.split(".")[0] not in extra.modules:
            raise
        print(f"{prog}: error: this command needs the {extra.name} extra ({exc.name} is missing): {extra.install}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
