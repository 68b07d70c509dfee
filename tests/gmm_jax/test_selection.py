"""Information criteria and select_n_components: scikit-learn parity, one compiled program per
sweep, every candidate equal to its own fit, held-out scoring of the held-out fold."""

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmm_jax
from gmm_jax import fitting
from gmm_jax.selection import _fold_ids

RNG = np.random.default_rng(0)
X3 = np.r_[RNG.normal(-5, 1, (60, 2)), RNG.normal(0, 1, (60, 2)), RNG.normal(5, 1, (60, 2))]


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_bic_aic_match_sklearn(ct):
    sk = SkGaussianMixture(3, covariance_type=ct, random_state=0).fit(X3)
    assert gmm_jax.n_parameters(3, 2, ct) == sk._n_parameters()
    with jax.enable_x64(True):
        p = gmm_jax.params_from_covariances(sk.weights_, sk.means_, sk.covariances_, ct)
        np.testing.assert_allclose(gmm_jax.bic(p, X3), sk.bic(X3), rtol=1e-12)
        np.testing.assert_allclose(gmm_jax.aic(p, X3), sk.aic(X3), rtol=1e-12)


@pytest.mark.parametrize("ct", ["tied_diag", "tied_spherical"])
def test_bic_aic_of_the_tied_constrained_types(x64, ct):
    from scipy.special import logsumexp

    from tests.gmm_jax.helpers import numpy_log_joint, random_covariances

    c = random_covariances(np.random.default_rng(1), ct, 3, 2)
    w, m = np.array([0.2, 0.3, 0.5]), np.array([[-5.0, 0], [0, 0], [5.0, 0]])
    p = gmm_jax.params_from_covariances(w, m, c, ct)
    total = logsumexp(numpy_log_joint(X3, w, m, c, ct), axis=1).sum()
    n_par = 2 + 6 + (2 if ct == "tied_diag" else 1)
    np.testing.assert_allclose(gmm_jax.bic(p, X3), -2 * total + n_par * np.log(180),
                               rtol=1e-12)
    np.testing.assert_allclose(gmm_jax.aic(p, X3), -2 * total + 2 * n_par, rtol=1e-12)


def test_weighted_bic_equals_repeated():
    p = gmm_jax.params_from_covariances(np.array([0.5, 0.5]), np.array([[-5.0, 0], [5.0, 0]]),
                                        np.array([1.0, 1.0]), "spherical")
    w = RNG.integers(1, 3, size=X3.shape[0])
    np.testing.assert_allclose(gmm_jax.bic(p, X3, sample_weight=w),
                               gmm_jax.bic(p, np.repeat(X3, w, axis=0)), rtol=1e-5)


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_select_finds_three_clusters_in_one_program(criterion):
    before = fitting.bank_program._cache_size()
    sel = gmm_jax.select_n_components(jax.random.key(0), X3, [1, 2, 3, 4],
                                      covariance_type="spherical", criterion=criterion)
    assert fitting.bank_program._cache_size() - before <= 1  # every candidate, one program
    assert sel.best_n_components == 3
    t = sel.table
    assert list(t["n_components"]) == [1, 2, 3, 4]
    assert set(t) == {"n_components", "criterion", "log_likelihood", "converged",
                      "n_parameters", "n_iter"}
    assert t["converged"].dtype == bool and np.all(np.isfinite(t["criterion"]))
    assert sel.best_fit.params.means.shape == (3, 2)
    assert t["criterion"][2] == t["criterion"].min()
    # the criterion is the formula applied to the table's numbers
    n_par = np.array([gmm_jax.n_parameters(k, 2, "spherical") for k in [1, 2, 3, 4]])
    pen = n_par * np.log(180) if criterion == "bic" else 2 * n_par
    np.testing.assert_allclose(t["criterion"], -2 * 180 * t["log_likelihood"] + pen, rtol=1e-6)


def test_every_candidate_equals_its_own_fit(x64):
    sel = gmm_jax.select_n_components(jax.random.key(4), X3, [2, 3, 4], covariance_type="full",
                                      n_init=2)
    for i, k in enumerate([2, 3, 4]):
        # one program for the three reference fits: K active of 4 slots equals the unpadded
        # fit (test_fitting.py::test_masked_fit_equals_the_unpadded_fit)
        alone = gmm_jax.fit(jax.random.fold_in(jax.random.key(4), i), X3, k,
                            covariance_type="full", n_init=2, max_components=4)
        got = sel.fits[i]
        assert got.params.means.shape == (k, 2)
        np.testing.assert_allclose(got.log_likelihood, alone.log_likelihood, rtol=1e-10)
        np.testing.assert_allclose(got.params.means, alone.params.means[:k], rtol=1e-9,
                                   atol=1e-10)
        np.testing.assert_allclose(got.restart_log_likelihoods, alone.restart_log_likelihoods,
                                   rtol=1e-10)
        assert int(got.n_iter) == int(alone.n_iter)
        np.testing.assert_allclose(sel.table["log_likelihood"][i],
                                   np.mean(gmm_jax.log_likelihood(got.params, X3)), rtol=1e-10)
        bic = gmm_jax.bic(got.params, X3)
        np.testing.assert_allclose(sel.table["criterion"][i], bic, rtol=1e-10)


def test_heldout_scores_the_held_out_fold(x64):
    """The criterion is the mean log-likelihood of each fold under the model fitted on the other
    folds: recomputed here fold by fold, and unlike the training-split score."""
    key = jax.random.key(2)
    ll, ok = gmm_jax.heldout_log_likelihood(key, X3, 2, n_folds=3, covariance_type="diag",
                                            n_init=1)
    k_perm, k_fit = jax.random.split(key)
    fold = _fold_ids(k_perm, len(X3), 3)
    total, train_total = 0.0, 0.0
    for f in range(3):
        train = X3[fold != f]
        w = (fold != f).astype(np.float64)
        # fitted on the training rows only (zero weight on the held-out ones, same key)
        res = gmm_jax.fit(jax.random.fold_in(k_fit, 0), X3, 2, covariance_type="diag",
                          sample_weight=w)
        total += float(np.sum(gmm_jax.log_likelihood(res.params, X3[fold == f])))
        train_total += float(np.mean(gmm_jax.log_likelihood(res.params, train)))
    np.testing.assert_allclose(ll, total / len(X3), rtol=1e-9)
    assert abs(ll - train_total / 3) > 1e-3  # scoring the training split would differ
    assert isinstance(ok, bool) and ok


def test_select_heldout_prefers_the_true_number_of_clusters():
    sel = gmm_jax.select_n_components(jax.random.key(1), X3, [2, 3], covariance_type="spherical",
                                      criterion="heldout", n_folds=3)
    assert sel.best_n_components == 3
    assert sel.table["criterion"][1] > sel.table["criterion"][0]


def test_selection_repr_is_a_short_table():
    sel = gmm_jax.select_n_components(jax.random.key(0), X3, [1, 2, 3, 4],
                                      covariance_type="spherical")
    text = repr(sel)
    lines = text.splitlines()
    assert len(lines) == 2 + 4 and len(text) < 600
    assert "best_n_components=3" in lines[0] and lines[4].rstrip().endswith("<")
    assert "Array(" not in text and "GMMParams" not in text


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
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_jax.select_n_components(0, X3, [1, 2], covariance_type="full_diag")


@pytest.mark.parametrize("ct", ["tied_diag", "tied_spherical"])
def test_the_tied_constrained_types_sweep(ct):
    sel = gmm_jax.select_n_components(jax.random.key(3), X3, [2, 3], covariance_type=ct)
    assert sel.best_n_components in (2, 3)
    assert np.all(np.isfinite(sel.table["criterion"]))
