"""Exact batch EM equals full-batch EM; online EM converges near the batch solution."""

import jax
import numpy as np
import pytest

import gmm_jax
from gmm_jax import covariance as cov
from gmm_jax.streaming import fit_batches, online_em


def _blobs(seed=0, n=600, d=3):
    rng = np.random.default_rng(seed)
    centers = np.array([[-4.0, 0, 1], [4.0, 1, -1], [0, 5.0, 0]])[:, :d]
    X = np.concatenate([rng.normal(c, 1.0 + i * 0.3, (n // 3, d)) for i, c in enumerate(centers)])
    return rng.permutation(X)


def _init_arrays(params):
    prec = cov.precisions_from_cholesky(params.precisions_cholesky, params.covariance_type)
    return dict(weights_init=np.asarray(params.weights), means_init=np.asarray(params.means),
                precisions_init=np.asarray(prec))


@pytest.mark.parametrize("covariance_type", gmm_jax.COVARIANCE_TYPES)
def test_fit_batches_equals_full_batch(x64, covariance_type):
    X = _blobs() * 0.4  # overlapping clusters: EM needs many iterations
    start = gmm_jax.fit(0, X, 3, covariance_type=covariance_type, max_iter=1, tol=0.0).params
    full = gmm_jax.fit(0, X, 3, covariance_type=covariance_type, tol=1e-8, max_iter=60,
                       **_init_arrays(start))
    batches = [X[i:i + 128] for i in range(0, len(X), 128)]  # last batch is partial
    streamed = fit_batches(0, batches, 3, covariance_type=covariance_type, tol=1e-8,
                           max_iter=60, init_params=start, dtype=np.float64)
    assert int(streamed.n_iter) == int(full.n_iter) > 3
    np.testing.assert_allclose(float(streamed.log_likelihood), float(full.log_likelihood),
                               rtol=1e-10)
    np.testing.assert_allclose(streamed.params.means, full.params.means, atol=1e-8)
    np.testing.assert_allclose(streamed.params.covariances, full.params.covariances, atol=1e-8)
    n = int(full.n_iter)
    np.testing.assert_allclose(streamed.history[:n], full.history[:n], rtol=1e-10)


def test_fit_batches_accepts_generator_factory_and_checks_batches():
    X = _blobs().astype(np.float32)

    def source():
        for i in range(0, len(X), 200):
            yield X[i:i + 200]

    res = fit_batches(jax.random.key(1), source, 3, max_iter=30)
    assert np.all(np.isfinite(np.asarray(res.params.means)))
    assert bool(res.converged)
    bad = [X[:100], np.full((5, 3), np.nan, np.float32)]
    with pytest.raises(ValueError, match="batch 1 contains"):
        fit_batches(0, bad, 2)
    with pytest.raises(ValueError, match="features"):
        fit_batches(0, [X[:100], X[:10, :2]], 2)
    with pytest.raises(ValueError, match="no data"):
        fit_batches(0, [], 2)


def test_online_em_approaches_batch_solution(x64):
    X = _blobs(n=3000)
    batch = gmm_jax.fit(0, X, 3, tol=1e-8, max_iter=200)
    start = gmm_jax.fit(0, X[:300], 3, max_iter=1, tol=0.0).params
    rng = np.random.default_rng(0)
    stream = (X[rng.choice(len(X), 100, replace=False)] for _ in range(300))
    online = online_em(start, stream, n_samples=len(X), kappa=0.6)
    ll_batch = float(np.mean(gmm_jax.log_likelihood(batch.params, X)))
    ll_online = float(np.mean(gmm_jax.log_likelihood(online, X)))
    assert ll_online > ll_batch - 0.02
    with pytest.raises(ValueError, match="kappa"):
        online_em(start, [X[:10]], n_samples=10, kappa=0.3)
