"""Training side of the Pom toolkit (Keras, ONNX export): the ``pom`` command and the stages behind it.

Sub-packages, lowest first: :mod:`.data` (the training stacks), :mod:`.models` (U-Net,
losses), :mod:`.evaluation` (Dice/IoU, previews), :mod:`.fitting` (the one training loop),
:mod:`.labels` (the label methods) and :mod:`.export` (Keras -> ONNX); then the workflow's
steps (:mod:`.prepare`, :mod:`.train`), :mod:`.commands` and :mod:`.cli`.

Importing this package, its CLI or its commands loads no TensorFlow: a command imports what
needs the training extra when it runs.
"""

__all__: list[str] = []
