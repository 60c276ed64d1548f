"""Several networks as one: the mean of their outputs, a single Keras model (and so one ONNX file)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

#: Name of an averaged model, and the prefix of its members' names.
ENSEMBLE_NAME, MEMBER_PREFIX = "pom_ensemble", "member"


def average(models: Sequence[keras.Model]) -> keras.Model:
    """One model whose output is the mean of ``models``' outputs (same input and output shapes).

    With one model, that model. The members keep their weights (they are the same objects,
    renamed ``member_<i>``), so the averaged model saves, loads and exports as any network.
    """
    if len(models) == 1:
        return models[0]
    inputs = keras.Input(models[0].input_shape[1:], name="input")
    outputs = []
    for i, model in enumerate(models):
        model.name = f"{MEMBER_PREFIX}_{i}"
        outputs.append(model(inputs))
    return keras.Model(inputs, layers.Average(name="output")(outputs), name=ENSEMBLE_NAME)


def members(model: keras.Model) -> int:
    """How many networks ``model`` averages (1 for a plain network)."""
    return sum(1 for layer in model.layers if layer.name.startswith(f"{MEMBER_PREFIX}_")) or 1
