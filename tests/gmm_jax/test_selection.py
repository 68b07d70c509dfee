"""Information criteria and select_n_components."""

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmm_jax
from gmm_jax import COVARIANCE_TYPES

RNG = np.random.default_rng(0)
X3 = np.r_[RNG.normal(-5, 1, (60, 2)), RNG.normal(0, 1, (60, 2)), RNG.normal(5, 1, (60, 2))]


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_bic_aic_match_sklearn(ct):
    sk = SkGaussianMixture(3, covariance_type=ct, random_state=0).fit(X3)
    p = gmm_jax.params_from_covariances(sk.weights_, sk.means_, sk.covariances_, ct)
    assert gmm_jax.n_parameters(ct, 3, 2) == sk._n_parameters()
    with jax.enable_x64(True):
        p = gmm_jax.params_from_covariances(sk.weights_, sk.means_, sk.covariances_, ct)
        np.testing.assert_allclose(gmm_jax.bic(p, X3), sk.bic(X3), rtol=1e-10)
        np.testing.assert_allclose(gmm_jax.aic(p, X3), sk.aic(X3), rtol=1e-10)


def test_weighted_bic_equals_repeated():
    p = gmm_jax.params_from_covariances(np.array([0.5, 0.5]), np.array([[-5.0, 0], [5.0, 0]]),
                                        np.array([1.0, 1.0]), "spherical")
    w = RNG.integers(1, 3, size=X3.shape[0])
    np.testing.assert_allclose(gmm_jax.bic(p, X3, sample_weight=w),
                               gmm_jax.bic(p, np.repeat(X3, w, axis=0)), rtol=1e-5)


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_select_finds_three_clusters(criterion):
    sel = gmm_jax.select_n_components(jax.random.key(0), X3, [2, 3, 4],
                                      covariance_type="spherical", criterion=criterion)
    assert sel.best_n_components == 3
    t = sel.table
    assert list(t["n_components"]) == [2, 3, 4]
    assert set(t) == {"n_components", "criterion", "log_likelihood", "converged", "n_parameters"}
    assert t["converged"].dtype == bool and np.all(np.isfinite(t["criterion"]))
    assert sel.best_fit.params.means.shape == (3, 2)
    assert t["criterion"][1] == t["criterion"].min()


def test_select_heldout_cross_validation():
    sel = gmm_jax.select_n_components(jax.random.key(1), X3, [2, 3], covariance_type="spherical",
                                      criterion="heldout", n_folds=3)
    assert sel.best_n_components == 3
    assert sel.table["criterion"][1] > sel.table["criterion"][0]
    ll, ok = gmm_jax.heldout_log_likelihood(5, X3, 3, n_folds=3, covariance_type="spherical")
    assert np.isfinite(ll) and isinstance(ok, bool)


def test_select_validation():
    with pytest.raises(ValueError, match="criterion"):
        gmm_jax.select_n_components(0, X3, [1], criterion="mdl")
    with pytest.raises(ValueError, match="empty"):
        gmm_jax.select_n_components(0, X3, [])
    with pytest.raises(ValueError, match="distinct"):
        gmm_jax.select_n_components(0, X3, [2, 2])
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        gmm_jax.select_n_components(0, X3, [0, 1])
    with pytest.raises(ValueError, match="fewer than"):
        gmm_jax.select_n_components(0, X3[:3], [1, 5])
    with pytest.raises(ValueError, match="n_folds"):
        gmm_jax.heldout_log_likelihood(0, X3, 1, n_folds=1)
