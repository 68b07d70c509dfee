"""gmm_jax.GaussianMixture against scikit-learn: its own estimator checks, attributes, parity.

Compilation dominates the run time on CPU, so the tests share a few data shapes (the jit cache is
per process) and use small ``max_iter`` where convergence is not the point.
"""

import pickle
import warnings

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from gmm_jax import COVARIANCE_TYPES, GaussianMixture

# Checks scikit-learn's suite skips by itself in this environment (SkipTest raised inside the
# check). None of them is a failure of the estimator.
SKIPPED_BY_SKLEARN = {
    "check_sample_weights_pandas_series": "pandas is not installed in the test environment",
    "check_array_api_input": "runs only with SCIPY_ARRAY_API=1 and an array-API library; the "
                             "estimator converts any array input to NumPy/JAX itself",
}
# Checks expected to fail: none. Every other check of the suite runs and passes.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [GaussianMixture(n_init=2, max_iter=5)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    half = n // 2
    return np.r_[rng.normal(-3, 1, (half, 2)), rng.normal(3, 0.7, (n - half, 2))]


X_BLOBS = _blobs()


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_attributes_shapes_and_parity_with_sklearn(ct):
    gm = GaussianMixture(2, covariance_type=ct, random_state=0).fit(X_BLOBS)
    # same init for scikit-learn: start from our fitted solution, it must stay there.
    sk = SkGaussianMixture(2, covariance_type=ct, weights_init=gm.weights_, means_init=gm.means_,
                           precisions_init=gm.precisions_).fit(X_BLOBS)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        ours, theirs = getattr(gm, name), getattr(sk, name)
        assert ours.shape == theirs.shape, name
        assert ours.dtype == np.float64
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8, err_msg=name)
    assert gm.converged_ is True and gm.n_iter_ >= 1
    assert gm.n_features_in_ == 2
    assert len(gm.lower_bounds_) == gm.n_iter_
    np.testing.assert_allclose(gm.score_samples(X_BLOBS), sk.score_samples(X_BLOBS), rtol=1e-7)
    np.testing.assert_allclose(gm.score(X_BLOBS), gm.lower_bound_, rtol=1e-3)
    np.testing.assert_allclose(gm.bic(X_BLOBS), sk.bic(X_BLOBS), rtol=1e-8)
    np.testing.assert_allclose(gm.aic(X_BLOBS), sk.aic(X_BLOBS), rtol=1e-8)
    proba = gm.predict_proba(X_BLOBS)
    assert proba.shape == (120, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(gm.predict(X_BLOBS), proba.argmax(1))


def test_same_init_matches_sklearn_to_high_precision():
    rng = np.random.default_rng(1)
    m0 = X_BLOBS[rng.choice(120, 2, replace=False)]
    kw = dict(covariance_type="full", means_init=m0, tol=1e-8, max_iter=40)
    # unit sample weights: same compiled program as the weighted test below
    ours = GaussianMixture(2, **kw).fit(X_BLOBS, sample_weight=np.ones(120))
    sk = SkGaussianMixture(2, **kw).fit(X_BLOBS)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-11)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-11)
    assert ours.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-12)


def test_not_fitted_raises():
    gm = GaussianMixture(2)
    for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
        with pytest.raises(NotFittedError):
            getattr(gm, method)(X_BLOBS)
    with pytest.raises(NotFittedError):
        gm.sample(3)


def test_convergence_warning_when_not_converged():
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = GaussianMixture(2, init_params="random", max_iter=3, tol=0.0,
                             random_state=0).fit(X_BLOBS)
    assert gm.converged_ is False and gm.n_iter_ == 3


def test_random_state_semantics():
    a = GaussianMixture(2, init_params="random", max_iter=3, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m1 = a.fit(X_BLOBS).means_.copy()
        m2 = a.fit(X_BLOBS).means_.copy()
        np.testing.assert_array_equal(m1, m2)  # int: same result on every fit
        gen = np.random.default_rng(0)
        b = GaussianMixture(2, init_params="random", max_iter=3, random_state=gen)
        g1 = b.fit(X_BLOBS).means_.copy()
        g2 = b.fit(X_BLOBS).means_.copy()
        assert not np.array_equal(g1, g2)  # Generator: consumed, successive fits differ
        b2 = GaussianMixture(2, init_params="random", max_iter=3,
                             random_state=np.random.default_rng(0))
        np.testing.assert_array_equal(b2.fit(X_BLOBS).means_, g1)  # but reproducible
        rs = GaussianMixture(2, init_params="random", max_iter=3,
                             random_state=np.random.RandomState(0))
        r1 = rs.fit(X_BLOBS).means_.copy()
        r2 = rs.fit(X_BLOBS).means_.copy()
        assert not np.array_equal(r1, r2)  # RandomState: consumed like a Generator ...
        rs2 = GaussianMixture(2, init_params="random", max_iter=3,
                              random_state=np.random.RandomState(0))
        np.testing.assert_array_equal(rs2.fit(X_BLOBS).means_, r1)  # ... and reproducible
        none = GaussianMixture(2, init_params="random", max_iter=3, random_state=None)
        n1 = none.fit(X_BLOBS).means_.copy()
        n2 = none.fit(X_BLOBS).means_.copy()
        assert not np.array_equal(n1, n2)  # None: fresh entropy on every fit


def test_clone_get_set_params_pickle():
    gm = GaussianMixture(3, covariance_type="diag", n_init=2, random_state=1)
    c = clone(gm)
    assert c.get_params() == gm.get_params()
    c.set_params(n_components=2, covariance_type="full")
    assert c.n_components == 2 and gm.n_components == 3
    c.fit(X_BLOBS)
    restored = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(restored.predict(X_BLOBS), c.predict(X_BLOBS))


def test_warm_start_continues_from_previous_solution():
    """The second fit starts where the first stopped: its first E-step is at the previous
    parameters (a cold refit from the initialisation would start lower again), and 2 x 3
    warm iterations equal 6 iterations in one go."""
    kw = dict(init_params="random", tol=0.0, random_state=0, n_init=2)
    gm = GaussianMixture(2, warm_start=True, max_iter=3, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X_BLOBS)
        lb1 = gm.lower_bound_
        first_start = gm.lower_bounds_[0]
        gm.fit(X_BLOBS)
        six = GaussianMixture(2, max_iter=6, **kw).fit(X_BLOBS)
    assert lb1 > first_start + 1e-3  # the first fit made progress from its start
    assert gm.lower_bounds_[0] >= lb1 - 1e-12  # the second continues from there
    np.testing.assert_allclose(gm.lower_bounds_, six.lower_bounds_[3:], rtol=1e-10)
    np.testing.assert_allclose(gm.means_, six.means_, rtol=1e-9)
    gm.set_params(n_components=3)
    with pytest.raises(ValueError, match="warm_start"):
        gm.fit(X_BLOBS)


def test_n_init_keeps_best():
    """The kept solution is the best restart: the restarts' bounds (from the functional fit
    with the same key) differ, and the estimator's bound is their maximum, not the minimum."""
    import gmm_jax
    from gmm_jax.validation import key_from_random_state

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        many = GaussianMixture(3, init_params="random", max_iter=3, tol=0.0, n_init=4,
                               random_state=0).fit(X_BLOBS)
        with jax.enable_x64(True):
            res = gmm_jax.fit(key_from_random_state(0), X_BLOBS, 3, init="random", max_iter=3,
                              tol=0.0, n_init=4)
    lbs = np.asarray(res.restart_log_likelihoods)
    assert np.ptp(lbs) > 1e-3
    assert many.lower_bound_ == pytest.approx(lbs.max(), rel=1e-12)


@pytest.mark.parametrize("ct", ["tied_diag", "tied_spherical"])
def test_the_tied_constrained_types_in_the_estimator(ct):
    import gmm_jax

    gm = GaussianMixture(2, covariance_type=ct, random_state=0, eigenvalue_floor=0.2)
    gm.fit(X_BLOBS)
    shape = (2,) if ct == "tied_diag" else ()
    assert gm.covariances_.shape == shape and gm.precisions_.shape == shape
    assert np.all(gm.covariances_ >= 0.2)
    n_par = gmm_jax.n_parameters(2, 2, ct)
    np.testing.assert_allclose(gm.bic(X_BLOBS), -2 * gm.score(X_BLOBS) * 120
                               + n_par * np.log(120), rtol=1e-10)


def test_fit_predict_equals_fit_then_predict():
    gm = GaussianMixture(2, random_state=0)
    labels = gm.fit_predict(X_BLOBS)
    np.testing.assert_array_equal(labels, gm.predict(X_BLOBS))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sample_grouped_by_component_like_sklearn(ct):
    gm = GaussianMixture(2, covariance_type=ct, random_state=0).fit(X_BLOBS)
    Xs, ys = gm.sample(400)
    assert Xs.shape == (400, 2) and ys.shape == (400,)
    assert np.all(np.diff(ys) >= 0)  # grouped, as scikit-learn returns them
    for k in range(2):
        np.testing.assert_allclose(Xs[ys == k].mean(0), gm.means_[k], atol=0.35)
    Xs2, _ = gm.sample(400)
    np.testing.assert_array_equal(Xs, Xs2)  # int random_state: reproducible
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_integer_sample_weight_equals_repeated_rows():
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=120)
    X_rep = np.repeat(X_BLOBS, w, axis=0)
    m0 = np.array([[-2.0, -2.0], [2.0, 2.0]])
    kw = dict(means_init=m0, tol=1e-10, max_iter=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(2, **kw).fit(X_BLOBS, sample_weight=w)
        b = GaussianMixture(2, **kw).fit(X_rep)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9)
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-10)
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=1e-10)


def test_float32_input_is_computed_in_float32():
    gm = GaussianMixture(2, random_state=0).fit(X_BLOBS.astype(np.float32))
    assert gm.means_.dtype == np.float32
    ref = GaussianMixture(2, random_state=0).fit(X_BLOBS)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(ref.means_[:, 0]), atol=1e-3)
    # float64 data scored by a float32 model: cast, finite
    assert np.all(np.isfinite(gm.score_samples(X_BLOBS)))


def test_params_property_feeds_functional_api():
    import gmm_jax

    gm = GaussianMixture(2, random_state=0).fit(X_BLOBS)
    p = gm.params_
    assert p.covariance_type == "full" and p.means.shape == (2, 2)
    with jax.enable_x64(True):
        np.testing.assert_allclose(gmm_jax.log_likelihood(p, X_BLOBS), gm.score_samples(X_BLOBS),
                                   rtol=1e-12)
        np.testing.assert_array_equal(gmm_jax.predict(p, X_BLOBS), gm.predict(X_BLOBS))
        np.testing.assert_allclose(gmm_jax.bic(p, X_BLOBS), gm.bic(X_BLOBS), rtol=1e-12)


def test_estimators_load_scikit_learn_on_first_use():
    """``import gmm_jax`` (and the gmm-jax command) start without scikit-learn; the estimators
    are still attributes of the package and load it when first used."""
    import subprocess
    import sys

    code = ("import sys, gmm_jax, gmm_jax.cli\n"
            "assert 'sklearn.base' not in sys.modules, 'import gmm_jax loaded scikit-learn'\n"
            "assert {'GaussianMixture', 'GMMClassifier'} <= set(dir(gmm_jax))\n"
            "from gmm_jax import GaussianMixture\n"
            "assert GaussianMixture.__module__ == 'gmm_jax.sklearn'\n"
            "assert gmm_jax.GMMClassifier.__name__ == 'GMMClassifier'\n"
            "assert 'sklearn.base' in sys.modules\n"
            "print('LAZY_OK')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "LAZY_OK" in out.stdout, out.stderr[-2000:]
