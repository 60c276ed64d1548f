"""Keras -> ONNX, deterministic and checked: what a trained network becomes.

* :mod:`.metadata`: what an exported network carries, and its copy beside the ``.keras``.
* :mod:`.convert`: the network written as an ONNX graph, layer by layer, dynamic batch, height and
  width (same network, same bytes).
* :mod:`.fallback`: tf2onnx, for a network with a layer :mod:`.convert` does not know.
* :mod:`.parity`: ONNX Runtime (through :func:`pom_inference.load_model`) against Keras.
* :mod:`.exporter`: the ``.onnx`` file written only when the check passes; ``pom export``.
"""
