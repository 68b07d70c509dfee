"""Tests of gmm_jax.kmeans: Lloyd k-means against scikit-learn, k-means++ seeding, LBG, empty
clusters."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

import gmm_jax
from gmm_jax.kmeans import kmeans_plusplus, lloyd


def blobs(seed: int, n_per: int = 40, k: int = 4, d: int = 2, spread: float = 10.0):
    """Well separated isotropic Gaussian blobs.

    Args:
        seed: numpy seed.
        n_per: samples per blob.
        k: number of blobs.
        d: number of features.
        spread: scale of the blob centres (the blobs have unit variance).

    Returns:
        (X, centres): (k * n_per, d) float32 samples and the (k, d) true centres.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, size=(k, d))
    # keep the centres at least 6 standard deviations apart
    while np.min([np.linalg.norm(a - b) for i, a in enumerate(centres)
                  for b in centres[i + 1:]]) < 6.0:
        centres = rng.uniform(-spread, spread, size=(k, d))
    X = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    return X.astype(np.float32), centres


def test_kmeans_matches_sklearn_inertia_on_blobs():
    X, centres = blobs(0)
    res = gmm_jax.kmeans(jax.random.key(0), X, 4, n_init=3)
    with threadpool_limits(1):
        sk = KMeans(4, n_init=3, random_state=0).fit(X.astype(np.float64))
    assert res.centers.shape == (4, 2) and res.labels.shape == (160,)
    assert res.labels.dtype == jnp.int32
    assert float(res.inertia) <= sk.inertia_ * (1 + 1e-4)
    np.testing.assert_allclose(float(res.inertia), sk.inertia_, rtol=1e-4)
    # the true centres are found, up to the order
    order = np.argmin(np.linalg.norm(np.asarray(res.centers)[:, None] - centres[None], axis=-1),
                      axis=1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(np.asarray(res.centers), centres[order], atol=0.5)
    assert 1 <= int(res.n_iter) <= 300


def test_kmeans_labels_and_inertia_are_consistent_with_centers():
    X, _ = blobs(0)
    res = gmm_jax.kmeans(jax.random.key(1), X, 4, n_init=3)
    C = np.asarray(res.centers, np.float64)
    d2 = np.sum((X[:, None, :].astype(np.float64) - C[None]) ** 2, axis=-1)
    np.testing.assert_array_equal(res.labels, np.argmin(d2, axis=1))
    np.testing.assert_allclose(float(res.inertia), np.min(d2, axis=1).sum(), rtol=1e-4)
    # at convergence every centre is the mean of its cluster
    for j in range(4):
        np.testing.assert_allclose(C[j], X[np.asarray(res.labels) == j].mean(axis=0), atol=1e-4)


def test_kmeans_restarts_pick_lowest_inertia():
    X, _ = blobs(0)
    key = jax.random.key(1)
    best = gmm_jax.kmeans(key, X, 4, n_init=3)
    # the program vmaps one restart per key of jax.random.split(key, n_init)
    Xc = jnp.asarray(X) - jnp.mean(jnp.asarray(X), axis=0)
    tol = 1e-4 * jnp.mean(jnp.var(Xc, axis=0))
    one = jax.jit(lambda k: lloyd(Xc, kmeans_plusplus(k, Xc, 4)[0], max_iter=300, tol=tol)[2])
    inertias = [float(one(k)) for k in jax.random.split(key, 3)]
    np.testing.assert_allclose(float(best.inertia), min(inertias), rtol=1e-5)


def test_kmeans_plusplus_picks_distinct_points():
    X, centres = blobs(2)
    Xj = jnp.asarray(X)
    seed = jax.jit(kmeans_plusplus, static_argnums=2)
    for s in range(3):
        C, idx = seed(jax.random.key(s), Xj, 4)
        idx = np.asarray(idx)
        assert len(set(idx.tolist())) == 4
        np.testing.assert_array_equal(C, X[idx])
        # on well separated blobs, greedy k-means++ puts one seed in each blob
        blob = idx // 40
        assert sorted(blob.tolist()) == [0, 1, 2, 3]
    # more clusters than distinct points: indices may repeat but centres stay finite
    Xd = jnp.repeat(jnp.eye(3, dtype=jnp.float32), 5, axis=0)
    C, idx = seed(jax.random.key(0), Xd, 4)
    assert np.all(np.isfinite(C))
    assert len({tuple(r) for r in np.asarray(C).tolist()}) == 3


@pytest.mark.parametrize("k", [3, 5])
def test_lbg_gives_k_distinct_centres_for_any_k(k):
    X, _ = blobs(3, k=5)
    res = gmm_jax.kmeans(jax.random.key(0), X, k, init="lbg")
    C = np.asarray(res.centers)
    assert C.shape == (k, 2)
    assert np.all(np.isfinite(C))
    assert len({tuple(np.round(r, 4)) for r in C.tolist()}) == k
    assert set(np.unique(res.labels).tolist()) == set(range(k))
    if k == 5:  # one centre per blob
        with threadpool_limits(1):
            sk = KMeans(5, n_init=5, random_state=0).fit(X.astype(np.float64))
        assert float(res.inertia) <= sk.inertia_ * (1 + 1e-4)


def test_lloyd_repairs_empty_clusters_without_nan():
    X, _ = blobs(4, k=3)
    Xc = jnp.asarray(X) - jnp.mean(jnp.asarray(X), axis=0)
    # three centres on top of each other and one far away: clusters 1..3 start empty
    C0 = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1e4, 1e4]], jnp.float32)
    run = jax.jit(partial(lloyd, max_iter=100))
    C, labels, inertia, n_iter = run(Xc, C0, tol=jnp.float32(0.0))
    assert np.all(np.isfinite(C)) and np.isfinite(float(inertia))
    assert len(np.unique(np.asarray(labels))) == 4  # every cluster got samples back
    # an empty cluster is not left behind at its far-away start
    assert np.all(np.abs(np.asarray(C)) < 100.0)


def test_kmeans_on_duplicate_points_is_finite():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]], np.float32), 6, axis=0)
    res = gmm_jax.kmeans(jax.random.key(0), X, 3, n_init=2)
    assert np.all(np.isfinite(res.centers))
    assert float(res.inertia) == pytest.approx(0.0, abs=1e-6)


def test_kmeans_rejects_bad_input():
    X, _ = blobs(0)
    with pytest.raises(ValueError):
        gmm_jax.kmeans(jax.random.key(0), X[:, 0], 2)
    with pytest.raises(ValueError):
        gmm_jax.kmeans(jax.random.key(0), X[:3], 4)
    with pytest.raises(ValueError):
        gmm_jax.kmeans(jax.random.key(0), X, 2, init="bogus")


def test_integer_sample_weights_equal_repeated_rows():
    """Weighted Lloyd (and LBG seeding, which is deterministic) on integer weights is k-means
    on the rows repeated that many times."""
    X, _ = blobs(5, k=3)
    w = np.random.default_rng(0).integers(1, 4, size=len(X)).astype(np.float32)
    weighted = gmm_jax.kmeans(jax.random.key(0), X, 3, init="lbg", sample_weight=w)
    repeated = gmm_jax.kmeans(jax.random.key(0), np.repeat(X, w.astype(int), axis=0), 3,
                              init="lbg")
    np.testing.assert_allclose(weighted.centers, repeated.centers, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(weighted.inertia), float(repeated.inertia), rtol=1e-4)
    with pytest.raises(ValueError, match="sample_weight"):
        gmm_jax.kmeans(jax.random.key(0), X, 3, sample_weight=-w)
