"""Clustering metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from vae_jax import metrics


def test_accuracy_is_permutation_invariant():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    perm = rng.permutation(5)
    assert metrics.clustering_accuracy(y, perm[y]) == 1.0
    pred = perm[y].copy()
    pred[:20] = (pred[:20] + 1) % 5
    assert metrics.clustering_accuracy(y, pred) == pytest.approx(0.9)
    # More clusters than classes: unmatched clusters count as errors.
    assert metrics.clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5


def test_nmi_matches_sklearn_and_purity():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 6, 300)
    assert metrics.normalized_mutual_info(y, p) == pytest.approx(
        normalized_mutual_info_score(y, p), abs=1e-10)
    assert metrics.normalized_mutual_info(y, y + 7) == pytest.approx(1.0)
    assert metrics.purity([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == pytest.approx(0.8)
    assert metrics.purity(y, np.arange(300)) == 1.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="length"):
        metrics.clustering_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        metrics.purity([], [])
