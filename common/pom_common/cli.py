"""What both command-line programs share: argument errors on one line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage block only with ``--help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see prog --help)`` and exit 2."""
        top = self.prog.split()[0]
        print(f"{self.prog}: error: {message} (see '{top} --help')", file=sys.stderr)
        sys.exit(2)
