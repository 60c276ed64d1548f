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


def partial_categorical_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Cross-entropy on labelled pixels, and on pixels known only *not* to be some classes.

    y_true : (B, H, W, K): 1 for a pixel's class; -w for each class it is known not to be
        (inside a box of that class, not painted with it; w > 0 its weight, usually 1); 0
        otherwise. A pixel with a 1 counts as -log p(class); one with only negative
        entries as w * -log(1 - sum of their p), the probability that it is something else
        (w the largest weight among them); a pixel of zeros is ignored. The sum is divided
        by the pixels' total weight.
    y_pred : (B, H, W, K) softmax output.
    """
    positive = tf.nn.relu(y_true)
    weighted = tf.nn.relu(-y_true)
    negative = tf.sign(weighted)  # 1 where a class is excluded, whatever the weight
    labelled = tf.reduce_max(positive, axis=-1)  # (B, H, W)
    excluded = tf.reduce_max(weighted, axis=-1) * (1.0 - labelled)
    ce = -tf.reduce_sum(positive * tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)), axis=-1)
    rest = 1.0 - tf.reduce_sum(negative * y_pred, axis=-1)
    ce_not = -tf.math.log(tf.clip_by_value(rest, 1e-7, 1.0))
    return tf.reduce_sum(ce + excluded * ce_not) / (tf.reduce_sum(labelled + excluded) + 1e-7)
