"""The joint-label rule, checked value by value on a hand-made case."""

import numpy as np

from pom_training.labels.joint import joint_labels


def reference(own, source, predictions, threshold, sigma):
    """The rule written out pixel by pixel (Gaussian from scipy as Pom does)."""
    from scipy.ndimage import gaussian_filter

    n, h, w, k = predictions.shape
    scores = np.zeros((n, h, w, k + 1))
    for i in range(n):
        for j in range(k):
            for y in range(h):
                for x in range(w):
                    if source[i] == j:
                        v = own[i, y, x]
                    elif own[i, y, x] == 1:
                        v = 0.0
                    else:
                        v = predictions[i, y, x, j]
                    scores[i, y, x, j] = v
        scores[i, :, :, k] = threshold
    for i in range(n):
        for c in range(k + 1):
            scores[i, :, :, c] = gaussian_filter(scores[i, :, :, c], sigma, mode="nearest")
    onehot = np.zeros_like(scores, dtype=np.float32)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                onehot[i, y, x, int(np.argmax(scores[i, y, x]))] = 1
    return onehot


def test_joint_labels_hand_made():
    own = np.zeros((2, 12, 12))
    own[0, :, :6] = 1  # image 0 comes from feature 0: its left half is annotated
    own[1, 3:9, 3:9] = 0.75  # image 1 comes from feature 1: partial annotation
    source = np.array([0, 1])
    pred = np.zeros((2, 12, 12, 2))
    pred[0, :, :, 1] = 0.9  # network 1 claims all of image 0 ...
    pred[1, :, 8:, 0] = 0.8  # network 0 claims the right of image 1
    pred[1, :6, :, 1] = 0.1  # network 1's own output is ignored on its own image
    got = joint_labels(own, source, pred, unknown_threshold=0.33)
    expected = reference(own, source, pred, 0.33, 1.5)
    np.testing.assert_array_equal(got, expected)
    # ... but not where image 0's own annotation is 1: there feature 0 wins.
    assert got[0, 5, 1, 0] == 1 and got[0, 5, 10, 1] == 1
    # Nothing above the threshold in image 1's top-left: Unknown.
    assert got[1, 0, 0, 2] == 1
    assert got[1, 0, 11, 0] == 1  # network 0's claim
    assert got[1, 6, 6, 1] == 1  # own annotation 0.75 beats Unknown 0.33
