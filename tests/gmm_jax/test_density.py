"""Tests of gmm_jax.density: the mixture log-density against scipy, and what derives from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

import gmm_jax
from gmm_jax import COVARIANCE_TYPES
from tests.gmm_jax.helpers import dense_covariances, random_covariances


def scipy_log_prob(X, weights, means, covs) -> np.ndarray:
    """(N, K) ``log w_k + scipy.stats.multivariate_normal.logpdf(x_n; mu_k, Sigma_k)``."""
    return np.stack(
        [np.log(w) + multivariate_normal(m, c).logpdf(X).reshape(-1)
         for w, m, c in zip(weights, means, covs, strict=True)], axis=1)


def _problem(covariance_type, seed=0, n=40, k=3, d=3):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k) * 2.0)
    m = rng.normal(scale=3.0, size=(k, d))
    c = random_covariances(rng, covariance_type, k, d)
    X = rng.normal(scale=3.0, size=(n, d))
    return X, w, m, c


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prob_components_matches_scipy(x64, covariance_type):
    k, d = 3, 3
    X, w, m, c = _problem(covariance_type, seed=1, k=k, d=d)
    params = gmm_jax.params_from_covariances(w, m, c, covariance_type)
    assert params.means.dtype == jnp.float64
    got = np.asarray(gmm_jax.log_prob_components(params, jnp.asarray(X)))
    want = scipy_log_prob(X, w, m, dense_covariances(c, covariance_type, k, d))
    assert got.shape == (40, 3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_log_prob_components_one_dimensional_matches_scipy(x64, covariance_type):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(25, 1)) * 2.0
    w, m = np.array([0.3, 0.7]), np.array([[-1.0], [2.0]])
    c = np.array([[[0.5]], [[2.0]]]) if covariance_type == "full" else np.array([0.5, 2.0])
    params = gmm_jax.params_from_covariances(w, m, c, covariance_type)
    from scipy.stats import norm

    want = np.stack([np.log(w[j]) + norm(m[j, 0], np.sqrt([0.5, 2.0][j])).logpdf(X[:, 0])
                     for j in range(2)], axis=1)
    np.testing.assert_allclose(gmm_jax.log_prob_components(params, jnp.asarray(X)), want,
                               rtol=1e-12)


def test_log_prob_components_float32_close_to_scipy():
    X, w, m, c = _problem("full", seed=2)
    params = gmm_jax.params_from_covariances(
        jnp.asarray(w, jnp.float32), jnp.asarray(m, jnp.float32), jnp.asarray(c, jnp.float32),
        "full")
    got = gmm_jax.log_prob_components(params, jnp.asarray(X, jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, scipy_log_prob(X, w, m, c), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("covariance_type", ["tied", "diag"])
def test_log_likelihood_responsibilities_predict(x64, covariance_type):
    k, d = 3, 3
    X, w, m, c = _problem(covariance_type, seed=4, k=k, d=d)
    params = gmm_jax.params_from_covariances(w, m, c, covariance_type)
    Xj = jnp.asarray(X)
    ref = scipy_log_prob(X, w, m, dense_covariances(c, covariance_type, k, d))
    np.testing.assert_allclose(gmm_jax.log_likelihood(params, Xj), logsumexp(ref, axis=1),
                               rtol=1e-10)
    resp = np.asarray(gmm_jax.responsibilities(params, Xj))
    np.testing.assert_allclose(resp, softmax(ref, axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(gmm_jax.log_responsibilities(params, Xj)), resp,
                               rtol=1e-9, atol=1e-14)
    labels = gmm_jax.predict(params, Xj)
    assert labels.dtype == jnp.int32
    np.testing.assert_array_equal(labels, np.argmax(ref, axis=1))


def test_log_likelihood_is_stable_far_from_every_component(x64):
    # exp underflows here; log-sum-exp must not
    params = gmm_jax.params_from_covariances(
        jnp.array([0.5, 0.5]), jnp.array([[0.0], [1.0]]), jnp.array([1e-4, 1e-4]), "spherical")
    X = jnp.array([[1e3]])
    ll = gmm_jax.log_likelihood(params, X)
    ref = logsumexp(scipy_log_prob(np.asarray(X), [0.5, 0.5], [[0.0], [1.0]],
                                   [[[1e-4]], [[1e-4]]]), axis=1)
    np.testing.assert_allclose(ll, ref, rtol=1e-12)
    r = gmm_jax.responsibilities(params, X)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(r, [[0.0, 1.0]], atol=1e-12)


def test_params_from_covariances_normalises_weights():
    p = gmm_jax.params_from_covariances(jnp.array([1.0, 3.0]), jnp.zeros((2, 2)),
                                        jnp.ones((2, 2)), "diag")
    np.testing.assert_allclose(p.weights, [0.25, 0.75])
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_jax.params_from_covariances(jnp.ones(2), jnp.zeros((2, 2)), jnp.ones(2), "bogus")


def test_density_is_jittable_and_differentiable(x64):
    X, w, m, c = _problem("full", seed=5)
    params = gmm_jax.params_from_covariances(w, m, c, "full")
    Xj = jnp.asarray(X)
    f = jax.jit(lambda p, x: jnp.sum(gmm_jax.log_likelihood(p, x)))
    np.testing.assert_allclose(f(params, Xj), jnp.sum(gmm_jax.log_likelihood(params, Xj)),
                               rtol=1e-12)
    # d/dmu of sum_n log p(x_n) = sum_n gamma_nk P_k (x_n - mu_k)
    g = jax.grad(lambda mu: jnp.sum(gmm_jax.log_likelihood(params._replace(means=mu), Xj)))(
        params.means)
    resp = np.asarray(gmm_jax.responsibilities(params, Xj))
    prec = np.linalg.inv(c)
    want = np.einsum("nk,kde,nke->kd", resp, prec, X[:, None, :] - m[None])
    np.testing.assert_allclose(g, want, rtol=1e-8)


@pytest.mark.parametrize("fn", [gmm_jax.log_prob_components, gmm_jax.log_likelihood,
                                gmm_jax.responsibilities])
def test_wrong_rank_input_raises(fn):
    params = gmm_jax.params_from_covariances(jnp.ones(2), jnp.zeros((2, 3)), jnp.ones(2),
                                             "spherical")
    with pytest.raises(AssertionError):
        fn(params, jnp.zeros((4,)))
    with pytest.raises(AssertionError):
        fn(params, jnp.zeros((4, 3, 1)))
    with pytest.raises(AssertionError):  # feature dimension disagrees with the means
        fn(params, jnp.zeros((4, 2)))
    bad = params._replace(means=jnp.zeros((3,)))
    with pytest.raises(AssertionError):
        fn(bad, jnp.zeros((4, 3)))


def test_masked_components_have_no_density_and_change_nothing(x64):
    X, w, m, c = _problem("full", seed=6)
    params = gmm_jax.params_from_covariances(w, m, c, "full")
    # one more slot, weight exactly zero: it is masked
    pad = params._replace(
        weights=jnp.concatenate([params.weights, jnp.zeros(1)]),
        means=jnp.concatenate([params.means, jnp.full((1, 3), 1e3)]),
        covariances=jnp.concatenate([params.covariances, jnp.eye(3)[None]]),
        precisions_cholesky=jnp.concatenate([params.precisions_cholesky, jnp.eye(3)[None]]))
    Xj = jnp.asarray(X)
    lp = np.asarray(gmm_jax.log_prob_components(pad, Xj))
    assert np.all(lp[:, 3] == -np.inf)
    np.testing.assert_allclose(lp[:, :3], gmm_jax.log_prob_components(params, Xj), rtol=1e-14)
    np.testing.assert_allclose(gmm_jax.log_likelihood(pad, Xj),
                               gmm_jax.log_likelihood(params, Xj), rtol=1e-14)
    np.testing.assert_array_equal(gmm_jax.responsibilities(pad, Xj)[:, 3], 0.0)
    # and its gradient is finite (no 0 * inf from log 0)
    g = jax.grad(lambda p: jnp.sum(gmm_jax.log_likelihood(p, Xj)))(pad)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(g))


def test_log_prob_components_in_row_blocks_equals_one_block(x64, monkeypatch):
    from gmm_jax import density

    X, w, m, c = _problem("diag", seed=7, n=50)
    params = gmm_jax.params_from_covariances(w, m, c, "diag")
    whole = np.asarray(gmm_jax.log_prob_components(params, jnp.asarray(X)))
    monkeypatch.setattr(density, "_BLOCK_ELEMENTS", 7 * 3 * 3)  # blocks of 7 rows, 8 blocks
    blocks = np.asarray(gmm_jax.log_prob_components(params, jnp.asarray(X)))
    assert blocks.shape == (50, 3)
    np.testing.assert_allclose(blocks, whole, rtol=1e-15)
