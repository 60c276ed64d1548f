"""The U-Net Pom uses (Ronneberger et al. 2015, as in Pom's phase1model/phase2model).

Per level: two 3x3 convolutions with ReLU, each followed by BatchNorm, then 2x2
max-pooling; a transposed-convolution up path with skip concatenation; a 1x1 head with
sigmoid (single feature) or softmax (shared). Width and depth are configurable; Pom's
network is base_filters=64, depth=4. Input is channels-last (batch, H, W, C) with H and W
multiples of 2**depth.
"""

from __future__ import annotations

import keras
from keras import layers

#: BatchNorm moving-average momentum. Keras's 0.99 needs several hundred steps before the
#: inference statistics settle; small annotation sets give far fewer steps (27 images x 8
#: augmentations, 12 epochs = ~50 steps), and the exported network then predicts from
#: statistics that were never learnt. 0.9 settles within ~30 steps.
BN_MOMENTUM = 0.9


def build_unet(n_channels: int, n_outputs: int, base_filters: int = 64, depth: int = 4,
               activation: str = "sigmoid") -> keras.Model:
    """Build the (uncompiled) Keras U-Net; shape (None, None, None, n_channels) -> (..., n_outputs)."""

    def block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return x

    inputs = keras.Input((None, None, n_channels), name="input")  # (B, H, W, C)
    skips = []
    x = inputs
    for level in range(depth):
        x = block(x, base_filters * 2**level)  # (B, H / 2^level, W / 2^level, F * 2^level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = block(x, base_filters * 2**depth)  # bottleneck
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same")(x)
        x = layers.Concatenate(axis=-1)([x, skips[level]])
        x = block(x, filters)
    outputs = layers.Conv2D(n_outputs, 1, activation=activation, name="output")(x)  # (B, H, W, K)
    return keras.Model(inputs, outputs, name="pom_unet")
