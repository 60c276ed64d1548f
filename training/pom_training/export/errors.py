"""The export's own error."""

from __future__ import annotations

from pom_common.errors import ModelError


class ExportError(ModelError):
    """A trained network could not be converted or failed the export check (a failed run, exit 1).

    Its ``.keras`` file is kept, so ``pom export`` can try again.
    """

    exit_code = 1
