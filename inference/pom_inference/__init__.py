"""Inference side of the Pom toolkit: ONNX Runtime + numba, never TensorFlow.

The public face is small: load an exported model, segment volumes held in memory.

>>> model = load_model("models/phase2/shared.onnx")               # doctest: +SKIP
>>> probabilities = segment(model, {"Density": tomogram, ...})    # doctest: +SKIP

Files, claims and workers (``pom-infer process``) are layers on top of these; see
:mod:`pom_inference.driver`. Importing this package does nothing but define names.
"""

from .arrays import iter_slabs, segment
from .session import Model, load_model

__all__ = ["Model", "iter_slabs", "load_model", "segment"]
