"""Loss functions (pure TensorFlow): cross-entropies that ignore the pixels nobody labelled."""

from __future__ import annotations

import tensorflow as tf


def masked_binary_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """BCE averaged over the pixels whose weight is non-zero.

    y_true : (B, H, W, 2) — channel 0 the label in 0..1, channel 1 the per-pixel weight.
    y_pred : (B, H, W, 1) sigmoid output.
    """
    labels = y_true[..., 0:1]
    weights = y_true[..., 1]
    bce = tf.keras.losses.binary_crossentropy(labels, y_pred)  # (B, H, W)
    return tf.reduce_sum(bce * weights) / (tf.reduce_sum(weights) + 1e-7)


def masked_categorical_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Cross-entropy averaged over labelled pixels: those whose target row is not all zero.

    y_true : (B, H, W, K) one-hot, or all zero where the pixel is not labelled.
    y_pred : (B, H, W, K) softmax output.
    """
    weights = tf.reduce_sum(y_true, axis=-1)  # (B, H, W)
    ce = -tf.reduce_sum(y_true * tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)), axis=-1)
    return tf.reduce_sum(ce) / (tf.reduce_sum(weights) + 1e-7)
