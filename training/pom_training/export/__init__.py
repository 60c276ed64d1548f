"""Keras -> ONNX, deterministic and checked: what a trained network becomes.

* :mod:`.metadata`: what an exported network carries, and its copy beside the ``.keras``.
* :mod:`.convert`: tf2onnx conversion with dynamic batch, height and width.
* :mod:`.tf2onnx_fix`: the optimiser fix that makes the conversion independent of memory addresses.
* :mod:`.canonical`: the converted graph in a canonical form (same network, same bytes).
* :mod:`.parity`: ONNX Runtime (through :func:`pom_inference.load_model`) against Keras.
* :mod:`.exporter`: the ``.onnx`` file written only when the check passes; ``pom export``.
"""
