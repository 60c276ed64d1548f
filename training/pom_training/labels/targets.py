"""Targets from painted code maps (:mod:`pom_training.data.painted`): pure array arithmetic."""

from __future__ import annotations

import numpy as np

from ..data.painted import UNPAINTED


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., ) uint8 codes -> (..., n_classes) float32 one-hot; unpainted pixels are all zero."""
    eye = np.concatenate([np.zeros((1, n_classes), np.float32), np.eye(n_classes, dtype=np.float32)])
    return eye[np.asarray(codes, dtype=np.intp)]


def single_targets(own: np.ndarray, codes: np.ndarray, is_own: np.ndarray, code: int) -> np.ndarray:
    """Targets (N, h, w, 2) = (label, weight) of one feature's network from painted labels.

    Parameters
    ----------
    own : (N, h, w) each crop's own label (Pom's ``<feature>_y``, 0..1).
    codes : (N, h, w) the crops' code maps.
    is_own : (N,) bool, True for the crops of this network's feature.
    code : this feature's code (its index in ontologies + 1).

    Returns
    -------
    Inside the feature's own crops Pom's target: the label with weight 1 everywhere (a box
    is complete for its feature). In every other crop: label 1 where the feature is painted,
    0 where another feature is, weight 1 on painted pixels and 0 on unpainted ones.
    """
    painted = codes != UNPAINTED
    label = np.where(is_own[:, None, None], own, (codes == code).astype(np.float32))
    weight = np.where(is_own[:, None, None], 1.0, painted.astype(np.float32))
    return np.stack([label, weight], axis=-1).astype(np.float32)


def override_joint_labels(joint: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Joint one-hot labels (N, h, w, K + 1) with every painted pixel set to its painted class."""
    n_classes = joint.shape[-1]
    painted = codes != UNPAINTED
    out = joint.copy()
    out[painted] = one_hot(codes[painted], n_classes)
    return out
