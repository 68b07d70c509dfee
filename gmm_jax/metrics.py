"""Clustering metrics: accuracy under the best label matching (Hungarian), NMI, purity.

Shared by the `gmm-jax demo`, the benchmarks and vae_jax (which re-exports them).

All take integer label vectors (numpy or JAX) of equal length N; predicted cluster ids need not
share the range of the true classes (K clusters may differ from C classes). They run in numpy
on the host: evaluation, not training.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    if y_true.size == 0:
        raise ValueError("empty label vectors")
    return y_true, y_pred


def contingency_matrix(y_true, y_pred) -> np.ndarray:
    """(C, K) counts ``n[c, k]`` of samples of class c put in cluster k.

    Rows and columns follow the sorted unique values of ``y_true`` and ``y_pred``.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    m = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(m, (t, p), 1)
    return m


def clustering_accuracy(y_true, y_pred) -> float:
    """Accuracy of the best one-to-one mapping of clusters to classes.

    ``max_perm (1/N) sum_n 1[y_n = perm(c_n)]``, the mapping found by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) on the contingency matrix. With more clusters
    than classes the unmatched clusters count as errors.

    Args:
        y_true: (N,) class labels.
        y_pred: (N,) cluster ids.

    Returns:
        Accuracy in [0, 1].

    Example:
        >>> clustering_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
        1.0
    """
    m = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(-m)
    return float(m[rows, cols].sum() / m.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(y_true, y_pred) -> float:
    """NMI with arithmetic-mean normalisation, ``I(T; P) / ((H(T) + H(P)) / 2)``.

    The normalisation matches scikit-learn's default ``average_method="arithmetic"``. Two
    single-cluster labelings give 1.0.

    Example:
        >>> round(normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0]), 6)
        1.0
    """
    m = contingency_matrix(y_true, y_pred).astype(np.float64)
    n = m.sum()
    h_t, h_p = _entropy(m.sum(1)), _entropy(m.sum(0))
    if h_t == 0.0 and h_p == 0.0:
        return 1.0
    nz = m > 0
    outer = np.outer(m.sum(1), m.sum(0))
    mi = float((m[nz] / n * np.log(m[nz] * n / outer[nz])).sum())
    denom = 0.5 * (h_t + h_p)
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0


def purity(y_true, y_pred) -> float:
    """Fraction of samples whose cluster's majority class is their class.

    ``(1/N) sum_k max_c n[c, k]``; many-to-one, so it rises with the number of clusters.

    Example:
        >>> purity([0, 0, 1, 1], [0, 0, 0, 1])
        0.75
    """
    m = contingency_matrix(y_true, y_pred)
    return float(m.max(axis=0).sum() / m.sum())
