"""Tests of gmm_jax.covariance: per-type Gaussian log-density, precision Cholesky factors and
their conversions, and parameter counts, against scipy/numpy/scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from gmm_jax import COVARIANCE_TYPES
from gmm_jax import covariance as cov
from tests.gmm_jax.test_density import dense_covariances, random_covariances

K, D = 3, 3


def _problem(covariance_type, seed=0, n=30):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(K, D))
    covs = random_covariances(rng, covariance_type, K, D)
    X = rng.normal(scale=2.0, size=(n, D))
    return X, means, covs


@jax.jit
def _log_gauss_all(X, means, pc_full, pc_tied, pc_diag, pc_sph):
    """All four types' (N, K) log-densities in one compiled program."""
    return [cov.log_gaussian_prob(X, means, pc, ct)
            for pc, ct in zip((pc_full, pc_tied, pc_diag, pc_sph), COVARIANCE_TYPES,
                              strict=True)]


def test_log_gaussian_prob_matches_scipy_for_every_type(x64):
    X, means, _ = _problem("full")
    rng = np.random.default_rng(1)
    covs = {ct: random_covariances(rng, ct, K, D) for ct in COVARIANCE_TYPES}
    pcs = [cov.precision_cholesky_from_covariances(jnp.asarray(covs[ct]), ct)
           for ct in COVARIANCE_TYPES]
    got = _log_gauss_all(jnp.asarray(X), jnp.asarray(means), *pcs)
    for ct, g in zip(COVARIANCE_TYPES, got, strict=True):
        dense = dense_covariances(covs[ct], ct, K, D)
        want = np.stack([multivariate_normal(means[k], dense[k]).logpdf(X) for k in range(K)],
                        axis=1)
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10, err_msg=ct)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precision_cholesky_conversions_round_trip(x64, covariance_type):
    _, _, covs = _problem(covariance_type, seed=2)
    c = jnp.asarray(covs)
    L = np.asarray(cov.precision_cholesky_from_covariances(c, covariance_type))
    precisions = np.asarray(cov.precisions_from_cholesky(jnp.asarray(L), covariance_type))
    if covariance_type in ("full", "tied"):
        # upper triangular with a positive diagonal, L L^T = inverse(covariance)
        assert np.allclose(np.tril(L, -1), 0.0)
        assert np.all(np.diagonal(L, axis1=-2, axis2=-1) > 0)
        np.testing.assert_allclose(precisions, np.linalg.inv(covs), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(precisions, 1.0 / covs, rtol=1e-12)
    # from precisions back to the same factor, and back to the covariances
    L2 = cov.precision_cholesky_from_precisions(jnp.asarray(precisions), covariance_type)
    np.testing.assert_allclose(L2, L, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.covariances_from_precision_cholesky(L2, covariance_type),
                               covs, rtol=1e-9, atol=1e-12)
    # half the log-determinant of the precision
    dense = dense_covariances(covs, covariance_type, K, D)
    want = -0.5 * np.linalg.slogdet(dense)[1]
    got = np.asarray(cov.log_det_cholesky(jnp.asarray(L), covariance_type, D))
    np.testing.assert_allclose(np.broadcast_to(got, want.shape), want, rtol=1e-11)


def test_precision_cholesky_is_sklearns(x64):
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    for ct in COVARIANCE_TYPES:
        _, _, covs = _problem(ct, seed=3)
        np.testing.assert_allclose(
            cov.precision_cholesky_from_covariances(jnp.asarray(covs), ct),
            _compute_precision_cholesky(covs, ct), rtol=1e-10, atol=1e-12, err_msg=ct)


def test_not_positive_definite_covariance_gives_nonfinite_factor(x64):
    bad = jnp.array([[[1.0, 2.0], [2.0, 1.0]]])  # eigenvalues 3 and -1
    L = cov.precision_cholesky_from_covariances(bad, "full")
    assert not np.all(np.isfinite(L))  # EM detects this and repairs the component


def test_squared_mahalanobis_is_nonnegative_far_from_origin():
    # float32, data far from the means: the expansions must not go negative
    rng = np.random.default_rng(4)
    X = jnp.asarray(rng.normal(size=(50, 2)) * 1e-3 + 3e3, jnp.float32)
    means = X[:2]
    for ct, c in (("diag", jnp.full((2, 2), 1e-6)), ("spherical", jnp.full((2,), 1e-6))):
        pc = cov.precision_cholesky_from_covariances(c.astype(jnp.float32), ct)
        lp = cov.log_gaussian_prob(X, means, pc, ct)
        assert np.all(np.isfinite(lp))
        # the density can never exceed its peak, 1 / sqrt(det(2 pi Sigma))
        peak = -0.5 * 2 * np.log(2 * np.pi * 1e-6)
        assert np.all(np.asarray(lp) <= peak + 1e-3)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_n_parameters_matches_sklearn(covariance_type):
    gm = GaussianMixture(4, covariance_type=covariance_type)
    gm.means_ = np.zeros((4, 5))
    assert cov.n_parameters(covariance_type, 4, 5) == gm._n_parameters()


def test_covariance_shape_and_type_check():
    assert cov.covariance_shape("full", 3, 2) == (3, 2, 2)
    assert cov.covariance_shape("tied", 3, 2) == (2, 2)
    assert cov.covariance_shape("diag", 3, 2) == (3, 2)
    assert cov.covariance_shape("spherical", 3, 2) == (3,)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        cov.check_covariance_type("Full")
