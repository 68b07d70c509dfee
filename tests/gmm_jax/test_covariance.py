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
from tests.gmm_jax.helpers import dense_covariances, random_covariances

K, D = 3, 3


def _problem(covariance_type, seed=0, n=30):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(K, D))
    covs = random_covariances(rng, covariance_type, K, D)
    X = rng.normal(scale=2.0, size=(n, D))
    return X, means, covs


@jax.jit
def _log_gauss_all(X, means, *pcs):
    """Every type's (N, K) log-densities in one compiled program."""
    return [cov.log_gaussian_prob(X, means, pc, ct)
            for pc, ct in zip(pcs, COVARIANCE_TYPES, strict=True)]


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

    for ct in ("full", "tied", "diag", "spherical"):
        _, _, covs = _problem(ct, seed=3)
        np.testing.assert_allclose(
            cov.precision_cholesky_from_covariances(jnp.asarray(covs), ct),
            _compute_precision_cholesky(covs, ct), rtol=1e-10, atol=1e-12, err_msg=ct)


def test_not_positive_definite_covariance_gives_nonfinite_factor(x64):
    bad = jnp.array([[[1.0, 2.0], [2.0, 1.0]]])  # eigenvalues 3 and -1
    L = cov.precision_cholesky_from_covariances(bad, "full")
    assert not np.all(np.isfinite(L))  # EM detects this and repairs the component


def test_log_density_is_exact_in_float32_far_from_the_origin():
    # float32 rows 3e3 from the origin, variances 1e-6: the residual form takes x - mu first,
    # so the log-density matches float64 (an expansion x^2 p - 2 x mu p + mu^2 p loses it all)
    rng = np.random.default_rng(4)
    X64 = rng.normal(size=(50, 2)) * 1e-3 + 3e3
    means64 = X64[:2]
    X, means = jnp.asarray(X64, jnp.float32), jnp.asarray(means64, jnp.float32)
    for ct, c in (("diag", np.full((2, 2), 1e-6)), ("spherical", np.full((2,), 1e-6)),
                  ("full", np.broadcast_to(np.eye(2) * 1e-6, (2, 2, 2))),
                  ("tied_diag", np.full((2,), 1e-6))):
        pc = cov.precision_cholesky_from_covariances(jnp.asarray(c, jnp.float32), ct)
        lp = np.asarray(cov.log_gaussian_prob(X, means, pc, ct), np.float64)
        dense = dense_covariances(c, ct, 2, 2)
        # reference: the same float32 inputs, in float64
        Xr, mr = np.asarray(X, np.float64), np.asarray(means, np.float64)
        want = np.stack([multivariate_normal(mr[k], dense[k]).logpdf(Xr) for k in range(2)], 1)
        np.testing.assert_allclose(lp, want, rtol=2e-6, atol=2e-3, err_msg=ct)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_n_parameters_matches_sklearn(covariance_type):
    gm = GaussianMixture(4, covariance_type=covariance_type)
    gm.means_ = np.zeros((4, 5))
    assert cov.n_parameters(4, 5, covariance_type) == gm._n_parameters()
    # the older (covariance_type, K, D) order and the keyword form agree
    assert cov.n_parameters(covariance_type, 4, 5) == gm._n_parameters()
    assert cov.n_parameters(4, 5, covariance_type=covariance_type) == gm._n_parameters()


def test_n_parameters_of_the_tied_constrained_types():
    # weights K - 1, means K D, and one shared diagonal (D) or one shared variance (1)
    assert cov.n_parameters(4, 5, "tied_diag") == (4 - 1) + 4 * 5 + 5
    assert cov.n_parameters(4, 5, "tied_spherical") == (4 - 1) + 4 * 5 + 1
    # a traced K (one-program sweeps) gives the same number
    got = jax.jit(lambda k: cov.n_parameters(k, 5, "full"))(jnp.int32(4))
    assert int(got) == cov.n_parameters(4, 5, "full")


def test_covariance_shape_and_type_check():
    assert cov.covariance_shape("full", 3, 2) == (3, 2, 2)
    assert cov.covariance_shape("tied", 3, 2) == (2, 2)
    assert cov.covariance_shape("diag", 3, 2) == (3, 2)
    assert cov.covariance_shape("spherical", 3, 2) == (3,)
    assert cov.covariance_shape("tied_diag", 3, 2) == (2,)
    assert cov.covariance_shape("tied_spherical", 3, 2) == ()
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        cov.check_covariance_type("Full")
