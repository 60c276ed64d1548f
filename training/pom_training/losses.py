"""Loss functions (pure TensorFlow)."""

from __future__ import annotations


def masked_binary_crossentropy(y_true, y_pred):
    """BCE averaged over the pixels whose weight is non-zero.

    y_true : (B, H, W, 2) — channel 0 the label in 0..1, channel 1 the per-pixel weight.
    y_pred : (B, H, W, 1) sigmoid output.
    """
    import tensorflow as tf

    labels = y_true[..., 0:1]
    weights = y_true[..., 1]
    bce = tf.keras.losses.binary_crossentropy(labels, y_pred)  # (B, H, W)
    return tf.reduce_sum(bce * weights) / (tf.reduce_sum(weights) + 1e-7)
