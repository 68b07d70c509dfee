"""Bad input fails fast with a clear message; degenerate but legal data gives finite results.

The degenerate cases share the (40, 3), K = 3 shape so they reuse four compiled programs.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import gmm_jax
from gmm_jax import COVARIANCE_TYPES, GaussianMixture
from gmm_jax.validation import DataTypeError, check_array, key_from_random_state

RNG = np.random.default_rng(0)
X_OK = RNG.normal(size=(40, 3))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "X, exc, match",
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), ValueError, "NaN or infinite"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), ValueError, "NaN or infinite"),
        (np.arange(5.0), ValueError, "2-D.*Reshape your data"),
        (np.zeros((2, 2, 2)), ValueError, "2-D"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.zeros((4, 0)), ValueError, "0 feature"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
        (np.array([[1, {"a": 1}]], dtype=object), TypeError, "hold numbers"),
        (np.ones((3, 2), dtype=complex), ValueError, "Complex data not supported"),
        (sp.csr_matrix(np.eye(3)), ValueError, "sparse"),
        ([[1.0, 2.0], [3.0]], ValueError, "converted|numeric|inhomogeneous"),
    ],
)
def test_bad_X_rejected_by_fit_and_estimator(X, exc, match):
    with pytest.raises(exc, match=match):
        gmm_jax.fit(0, X, 1)
    with pytest.raises(exc, match=match):
        GaussianMixture(1).fit(X)


def test_datatypeerror_is_both_type_and_value_error():
    assert issubclass(DataTypeError, TypeError) and issubclass(DataTypeError, ValueError)


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="fewer than the 5 required"):
        gmm_jax.fit(0, X_OK[:4], 5)
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(5).fit(X_OK[:4])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_components=0), ValueError, "n_components must be >= 1"),
        (dict(n_components=1.5), TypeError, "n_components must be an integer"),
        (dict(covariance_type="banana"), ValueError, "covariance_type must be one of"),
        (dict(reg_covar=-1e-3), ValueError, "reg_covar must be a finite number >= 0"),
        (dict(tol=-1.0), ValueError, "tol must be a finite number >= 0"),
        (dict(tol=float("nan")), ValueError, "tol"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(n_init=0), ValueError, "n_init"),
        (dict(init_params="nope"), ValueError, "init_params must be one of"),
        (dict(random_state="x"), TypeError, "random_state"),
        (dict(random_state=-3), ValueError, "random_state"),
        (dict(n_components=2, weights_init=[0.2, 0.2]), ValueError, "sum to 1"),
        (dict(n_components=2, weights_init=[1.5, -0.5]), ValueError, r"\[0, 1\]"),
        (dict(n_components=2, weights_init=[1.0]), ValueError, r"weights_init must have shape"),
        (dict(n_components=2, means_init=np.zeros((2, 4))), ValueError,
         r"means_init must have shape \(2, 3\)"),
        (dict(n_components=2, precisions_init=np.ones((2, 3))), ValueError,
         r"precisions_init.*shape \(2, 3, 3\)"),
        (dict(n_components=2, precisions_init=np.stack([np.eye(3), -np.eye(3)])), ValueError,
         "positive-definite"),
        (dict(n_components=2, precisions_init=np.stack([np.eye(3), np.triu(np.ones((3, 3)))])),
         ValueError, "symmetric"),
        (dict(n_components=2, covariance_type="diag", precisions_init=-np.ones((2, 3))),
         ValueError, "positive"),
        (dict(n_components=2, covariance_type="spherical", precisions_init=np.ones((3,))),
         ValueError, "shape"),
    ],
)
def test_bad_parameters_rejected_before_tracing(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GaussianMixture(**kwargs).fit(X_OK)


def test_bad_sample_weight():
    for w, match in [(np.ones(3), "shape"), (-np.ones(40), "non-negative"),
                     (np.zeros(40), "sums to zero"), (np.full(40, np.nan), "finite")]:
        with pytest.raises(ValueError, match=match):
            GaussianMixture(1).fit(X_OK, sample_weight=w)


def test_predict_errors():
    gm = GaussianMixture(1, covariance_type="spherical")
    with pytest.raises(NotFittedError):
        gm.predict(X_OK)
    gm.fit(X_OK)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(X_OK[:, :2])
    bad = X_OK.copy()
    bad[0, 0] = np.nan
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score):
        with pytest.raises(ValueError, match="NaN"):
            method(bad)
    with pytest.raises(ValueError, match="2-D"):
        gm.predict(X_OK[0])


def test_check_array_conversions():
    assert check_array([[1, 2], [3, 4]], dtype=np.float32).dtype == np.float32
    assert check_array(np.array([[True, False]]), dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="model was fitted with 3"):
        check_array(np.ones((2, 2)), n_features=3)


def test_key_from_random_state():
    import jax

    k = key_from_random_state(7)
    assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
    assert np.array_equal(jax.random.key_data(k), jax.random.key_data(key_from_random_state(7)))
    with pytest.raises(TypeError):
        key_from_random_state(True)


# ----------------------------------------------------------------------------- degenerate data
def _degenerate_cases():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 3))
    return {
        "all_identical": np.full((40, 3), 2.5),
        "constant_column": np.c_[base[:, :2], np.full(40, 7.0)],
        "K_distinct_points": np.repeat(rng.normal(size=(3, 3)), [10, 15, 15], axis=0),
        "scaled_1e8": base * 1e8,
        "scaled_1e-8": base * 1e-8,
        "integers": rng.integers(0, 5, (40, 3)),
        "booleans": rng.random((40, 3)) > 0.5,
    }


CASES = _degenerate_cases()
ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _assert_finite(gm, X):
    for a in ATTRS:
        assert np.all(np.isfinite(getattr(gm, a))), a
    assert np.isfinite(gm.lower_bound_)
    assert np.all(np.isfinite(gm.score_samples(X)))
    proba = gm.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(gm.bic(X)) and np.isfinite(gm.aic(X))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_degenerate_data_gives_finite_results(name, ct):
    X = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    _assert_finite(gm, X)
    if name == "K_distinct_points" and ct != "tied":
        # each component sits on one distinct point with covariance ~ reg_covar
        np.testing.assert_allclose(np.sort(gm.weights_), [0.25, 0.375, 0.375], atol=1e-6)


@pytest.mark.parametrize("ct", ["full"])
def test_float32_offset_1e4_finite(ct):
    X = (np.random.default_rng(2).normal(size=(40, 3)) + 1e4).astype(np.float32)
    gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    _assert_finite(gm, X)
    # the centred computation keeps the spread: variances near 1, not swamped by 1e4**2 * eps
    var = gm.covariances_ if ct == "diag" else np.diagonal(gm.covariances_, axis1=1, axis2=2)
    assert np.all(var < 5.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_more_features_than_samples_full(dtype):
    X = np.random.default_rng(3).normal(size=(10, 30)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, RuntimeWarning))
        gm = GaussianMixture(3, covariance_type="full", random_state=0).fit(X)
    _assert_finite(gm, X)


def test_zero_variance_dimension_diag():
    X = np.c_[np.random.default_rng(4).normal(size=(40, 2)), np.zeros(40)]
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    _assert_finite(gm, X)
    np.testing.assert_allclose(gm.covariances_[:, 2], 1e-6, rtol=1e-3)  # reg_covar only
