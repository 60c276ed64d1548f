"""Logging set-up for the command-line programs (library code only uses getLogger)."""

from __future__ import annotations

import logging
import sys

#: On a terminal, each message starts by clearing the line: a progress bar drawn there by another
#: process (``pom-infer``'s workers log while the driver draws the bar) is replaced by the
#: message instead of running into it, and is drawn again below it at its next update.
CLEAR_LINE = "\r\x1b[K"


def configure_logging(verbose: bool = False) -> None:
    """Plain one-line messages on stderr; called by CLIs only."""
    handler = logging.StreamHandler(sys.stderr)
    terminal = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    handler.setFormatter(logging.Formatter((CLEAR_LINE if terminal else "") + "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numba", "tensorflow", "absl", "tf2onnx", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
