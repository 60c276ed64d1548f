"""Training side of the Pom toolkit (Keras + tf2onnx).

TensorFlow is imported lazily, inside the functions that train or export, never by
importing this package.
"""

__all__: list[str] = []
