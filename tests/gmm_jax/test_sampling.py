"""sample / sample_component: moments and labels for every covariance type."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import COVARIANCE_TYPES
from tests.gmm_jax.helpers import dense_covariances

K, D = 2, 3


def _params(ct):
    means = jnp.array([[-4.0, 0.0, 1.0], [4.0, 2.0, -1.0]])
    weights = jnp.array([0.3, 0.7])
    a = jnp.array([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.6]])
    covs = {
        "full": jnp.stack([a @ a.T, jnp.diag(jnp.array([0.5, 1.0, 2.0]))]),
        "tied": a @ a.T,
        "diag": jnp.array([[0.5, 1.0, 2.0], [1.5, 0.2, 0.7]]),
        "spherical": jnp.array([0.5, 2.0]),
        "tied_diag": jnp.array([0.5, 1.0, 2.0]),
        "tied_spherical": jnp.array(0.7),
    }[ct]
    return gmm_jax.params_from_covariances(weights, means, covs, ct)


def _dense_cov(p, k):
    return dense_covariances(p.covariances, p.covariance_type, K, D)[k]


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sample_moments_and_labels(ct):
    p = _params(ct)
    X, labels = gmm_jax.sample(jax.random.key(0), p, 20000)
    X, labels = np.asarray(X), np.asarray(labels)
    assert X.shape == (20000, D) and labels.shape == (20000,) and labels.dtype == np.int32
    np.testing.assert_allclose(np.bincount(labels, minlength=K) / 20000, p.weights, atol=0.015)
    for k in range(K):
        Xk = X[labels == k]
        np.testing.assert_allclose(Xk.mean(0), p.means[k], atol=0.08)
        np.testing.assert_allclose(np.cov(Xk.T), _dense_cov(p, k), atol=0.1)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sample_component(ct):
    p = _params(ct)
    X = np.asarray(gmm_jax.sample_component(jax.random.key(1), p, 1, 20000))
    assert X.shape == (20000, D)
    np.testing.assert_allclose(X.mean(0), p.means[1], atol=0.08)
    np.testing.assert_allclose(np.cov(X.T), _dense_cov(p, 1), atol=0.1)


def test_sample_reproducible_and_validated():
    p = _params("diag")
    a, _ = gmm_jax.sample(jax.random.key(3), p, 10)
    b, _ = gmm_jax.sample(3, p, 10)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n must be >= 1"):
        gmm_jax.sample(0, p, 0)
    with pytest.raises(ValueError, match="component must be in"):
        gmm_jax.sample_component(0, p, 5, 10)
    with pytest.raises(TypeError, match="key"):
        gmm_jax.sample("k", p, 10)


@pytest.mark.parametrize("ct", ["full", "spherical"])
def test_sample_component_traced_index_under_vmap(ct):
    """A traced component index draws from that component: under vmap and jit each row equals
    the concrete call, and its moments are the component's (not component 0's)."""
    p = _params(ct)
    f = jax.jit(jax.vmap(lambda c: gmm_jax.sample_component(jax.random.key(0), p, c, 4000)))
    got = np.asarray(f(jnp.arange(K)))
    assert got.shape == (K, 4000, D)
    for k in range(K):
        np.testing.assert_allclose(got[k], gmm_jax.sample_component(jax.random.key(0), p, k,
                                                                    4000), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[k].mean(0), p.means[k], atol=0.1)
        np.testing.assert_allclose(np.cov(got[k].T), _dense_cov(p, k), atol=0.15)
