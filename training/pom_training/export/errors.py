"""The export's own error."""

from __future__ import annotations

from pom_common.errors import ModelError


class ExportError(ModelError):
    """A trained network could not be converted or failed the export check (a failed run, exit 1).

    Its ``.keras`` file is kept, so ``pom export`` can try again.
    """

    exit_code = 1


class UnknownLayer(ExportError):
    """A layer, or an option of one, that the layer-by-layer writer (:mod:`.convert`) does not know.

    The exporter then converts the network with tf2onnx (:mod:`.fallback`) instead.
    """
