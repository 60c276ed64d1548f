"""Inference side of the Pom toolkit: ONNX Runtime + numba, never TensorFlow.

Importing this package does nothing but define names.
"""

__all__: list[str] = []
