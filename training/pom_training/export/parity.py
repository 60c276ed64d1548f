"""The export check: the ONNX file, opened by inference's loader, computes what the Keras network does."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from pom_common.errors import ModelError
from pom_inference import load_model

from .errors import ExportError

#: Largest allowed |ONNX Runtime - Keras| on the parity check input.
PARITY_TOLERANCE = 1e-4


def check_parity(model: keras.Model, onnx_file: Path, path: Path) -> float:
    """Run ``onnx_file`` through :func:`pom_inference.load_model` on the CPU and compare with ``model``.

    The loader checks the metadata against the graph as for any run; ``light`` spares the
    re-packed weights of full graph optimisation (1.4x the weights instead of 4x).

    The input is random, (2, 3m, 2m, C) with m the network's size multiple (not square, so a
    transposed axis shows); ``path`` is the name the file will have, for the messages.
    Returns the largest difference.

    Raises
    ------
    ExportError
        ONNX Runtime cannot open the file as a Pom model, or its output differs from Keras's in
        shape or by more than :data:`PARITY_TOLERANCE`.
    """
    try:
        onnx_model = load_model(onnx_file, device=None, quiet=True, light=True)
    except ModelError as exc:
        raise ExportError(f"{path}: export check failed: {exc}") from None
    multiple, n_channels = onnx_model.info.size_multiple, len(onnx_model.info.channels)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3 * multiple, 2 * multiple, n_channels)).astype(np.float32)  # non-square
    expected = np.asarray(model(x, training=False))
    got = onnx_model.run(x)
    if got.shape != expected.shape:
        raise ExportError(f"{path}: export check failed: ONNX output shape {got.shape} != Keras {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{path}: export check failed: ONNX Runtime and Keras differ by {diff:.3g} "
                          f"(> {PARITY_TOLERANCE}); nothing written")
    return diff
