"""Clustering metrics shared by the CLI, benchmarks and vae_jax."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def contingency(y_true, y_pred) -> np.ndarray:
    """(C_pred, C_true) count matrix of predicted clusters against true classes."""
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}.")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty.")
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table


def clustering_accuracy(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one map of clusters to classes (Hungarian algorithm).

    Args:
        y_true: (N,) true labels.
        y_pred: (N,) cluster labels (any integers; the number of clusters may differ from the
            number of classes, unmatched clusters count as errors).

    Returns:
        Fraction of samples whose cluster maps to their class.

    Example:
        >>> clustering_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
        1.0
    """
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())
