"""Tests of the EM loop (gmm_jax.em and fit): parity with scikit-learn, monotone log-likelihood
for every covariance type in float32 and float64, restarts as one bank equal to separate fits,
K = 1 in closed form, 1-D data, collapsed components, float32 numerics on ill-conditioned data.

Compilation dominates the run time, so the property tests share one canonical shape (64 rows,
3 features, 3 component slots, ``MAX_ITER``): a K=1 fit is a masked model in the same program.
"""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

import gmm_jax
from gmm_jax import COVARIANCE_TYPES
from tests.gmm_jax.helpers import (
    D_SMALL,
    K_SMALL,
    MAX_ITER,
    N_SMALL,
    assert_finite,
    assert_params_close,
    blobs,
    dataset,
    dense_covariances,
    init_from_labels,
)
from vae_jax import data as vdata


@cache
def kmeans_labels(name: str, k: int) -> np.ndarray:
    """Labels of one scikit-learn k-means run on :func:`dataset` ``(name)``, computed once."""
    with threadpool_limits(1):
        return KMeans(k, n_init=1, random_state=0).fit(dataset(name)).labels_


# ------------------------------------------------------------------------ scikit-learn parity
def _sklearn_parity(name, k, covariance_type, *, reg_covar, tol=1e-3):
    """Fits gmm_jax and sklearn from the same k-means-derived start and compares everything."""
    X = dataset(name)
    w0, m0, p0 = init_from_labels(X, kmeans_labels(name, k), k, covariance_type, reg_covar)
    init = dict(weights_init=w0, means_init=m0, precisions_init=p0)
    with threadpool_limits(1):
        sk = GaussianMixture(k, covariance_type=covariance_type, reg_covar=reg_covar, tol=tol,
                             max_iter=MAX_ITER, random_state=0, **init).fit(X)
    res = gmm_jax.fit(0, X, k, covariance_type=covariance_type, reg_covar=reg_covar, tol=tol,
                      max_iter=MAX_ITER, **init)
    assert res.params.means.dtype == jnp.float64
    assert bool(res.converged) and sk.converged_
    assert int(res.n_iter) == sk.n_iter_
    # agreement is about 1e-13 (measured); 1e-10 catches any precision regression
    np.testing.assert_allclose(float(res.log_likelihood), sk.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(res.history)[: sk.n_iter_], sk.lower_bounds_,
                               rtol=1e-10)
    scale = max(1.0, float(np.max(np.abs(sk.precisions_cholesky_))))
    assert_params_close(res.params, sk, rtol=1e-10, atol=1e-10 * scale)
    assert int(res.n_repaired) == 0
    return res, sk


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_matches_sklearn_on_iris(x64, covariance_type):
    res, sk = _sklearn_parity("iris", 3, covariance_type, reg_covar=1e-6)
    assert sk.n_iter_ > 2  # a real run, not a start that is already converged


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_matches_sklearn_on_digits(x64, covariance_type):
    # pixels are 0..16 and some are constant: reg_covar=4 keeps 10 full 64x64 covariances from
    # 600 samples soft enough that EM has several iterations of work to do
    res, sk = _sklearn_parity("digits", 10, covariance_type, reg_covar=4.0)
    assert sk.n_iter_ > 5


# --------------------------------------------------------------------- monotone log-likelihood
def mixture_data(seed, n=N_SMALL, d=D_SMALL, k=K_SMALL + 1):
    """(N, D) float64 samples of a random mixture with anisotropic, correlated components."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    scales = rng.uniform(0.2, 2.0, size=(k, d))
    z = rng.integers(k, size=n)
    mix = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    return centres[z] + (rng.normal(size=(n, d)) * scales[z]) @ mix


def _fit_small(seed, X, covariance_type, n_components=K_SMALL, **kw):
    """The canonical program: 3 slots, MAX_ITER iterations, k-means init."""
    return gmm_jax.fit(seed, X, n_components, covariance_type=covariance_type, tol=0.0,
                       max_iter=MAX_ITER, max_components=K_SMALL, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.differing_executors])
@given(seed=st.integers(0, 2**31 - 1))
def test_log_likelihood_never_decreases(dtype, covariance_type, seed):
    """Every type in both dtypes, random mixtures (hypothesis draws the seed).

    reg_covar=0 (with it the M-step is not the exact maximiser and the likelihood may drift
    down by ~reg_covar^2 near a fixed point), tol=0: all MAX_ITER iterations."""
    with jax.enable_x64(dtype == "float64"):
        X = mixture_data(seed).astype(dtype)
        res = _fit_small(seed, X, covariance_type, reg_covar=0.0)
        assert res.history.dtype == np.dtype(dtype)
        n_iter = int(res.n_iter)
        assert n_iter == MAX_ITER
        assert_finite(res.params)
        hist = np.asarray(res.history, np.float64)
        if int(res.n_repaired) == 0:
            gmm_jax.check_monotone(res.history, n_iter)
            assert hist[-1] >= hist[0] - 1e-5 * abs(hist[0])


def test_check_monotone_names_the_iteration_drop_and_tolerance():
    gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -2.0, -1.0]), 4)
    with pytest.raises(AssertionError, match=r"iteration 3 .*-2 -> -2\.5.*drop of 0\.5.*"
                                             r"tolerance"):
        gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -2.5, -1.0]), 4)
    # entries past n_iter are ignored, a repaired run is exempt
    gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -9.0]), 2)
    gmm_jax.check_monotone(jnp.array([-3.0, -4.0]), 2, allowed=True)


# ---------------------------------------------------------------- restarts, K = 1, 1-D data
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_restarts_in_one_bank_equal_separate_fits(x64, covariance_type):
    """n_init restarts in one program equal one fit per restart key; the best one is kept."""
    X = mixture_data(7)
    key = jax.random.key(3)
    res = gmm_jax.fit(key, X, K_SMALL, covariance_type=covariance_type, n_init=3, tol=0.0,
                      max_iter=MAX_ITER, init="random_from_data", max_components=K_SMALL)
    singles = [gmm_jax.fit(k_, X, K_SMALL, covariance_type=covariance_type, tol=0.0,
                           max_iter=MAX_ITER, init="random_from_data", max_components=K_SMALL)
               for k_ in jax.random.split(key, 3)]
    lbs = np.array([float(s.log_likelihood) for s in singles])
    np.testing.assert_allclose(res.restart_log_likelihoods, lbs, rtol=1e-10)
    best = int(np.argmax(lbs))
    assert float(res.log_likelihood) == pytest.approx(lbs[best], rel=1e-12)
    assert_params_close(res.params, singles[best].params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.history, singles[best].history, rtol=1e-10)
    if np.ptp(lbs) > 1e-6:  # the restarts differ: the kept one is not the worst
        worst = singles[int(np.argmin(lbs))]
        assert not np.allclose(res.params.means, worst.params.means, atol=1e-3)


def test_restarts_differ_so_that_picking_the_best_matters(x64):
    X = mixture_data(7)
    res = gmm_jax.fit(jax.random.key(3), X, K_SMALL, covariance_type="full", n_init=3, tol=0.0,
                      max_iter=MAX_ITER, init="random_from_data", max_components=K_SMALL)
    lbs = np.asarray(res.restart_log_likelihoods)
    assert np.ptp(lbs) > 1e-3  # otherwise an argmin instead of argmax would pass unnoticed
    assert float(res.log_likelihood) == pytest.approx(lbs.max(), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_single_component_is_closed_form_mle(covariance_type, dtype):
    """K = 1 (one active slot of the canonical program): the weighted mean and covariance."""
    with jax.enable_x64(dtype == "float64"):
        X = mixture_data(11).astype(dtype)
        reg = 1e-3
        res = _fit_small(0, X, covariance_type, n_components=1, reg_covar=reg)
        Xd = X.astype(np.float64)
        mean = Xd.mean(axis=0)
        c = np.cov(Xd.T, bias=True)
        want = {
            "full": (c + reg * np.eye(D_SMALL))[None],
            "tied": c + reg * np.eye(D_SMALL),
            "diag": (np.diag(c) + reg)[None],
            "spherical": np.array([np.mean(np.diag(c)) + reg]),
            "tied_diag": np.diag(c) + reg,
            "tied_spherical": np.array(np.mean(np.diag(c)) + reg),
        }[covariance_type]
        rtol = 1e-10 if dtype == "float64" else 2e-5
        p = res.params
        np.testing.assert_allclose(p.weights, [1.0, 0.0, 0.0], rtol=rtol, atol=0)
        np.testing.assert_allclose(p.means[0], mean, rtol=rtol, atol=rtol)
        got = p.covariances if covariance_type in ("tied", "tied_diag", "tied_spherical") \
            else p.covariances[:1]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
        dense = dense_covariances(want, covariance_type, 1, D_SMALL)[0]
        ll = multivariate_normal(mean, dense).logpdf(Xd).mean()
        np.testing.assert_allclose(float(res.history[1]), ll, rtol=rtol)


def test_one_dimensional_data(x64):
    rng = np.random.default_rng(5)
    X = np.r_[rng.normal(-2.0, 0.5, 24), rng.normal(1.5, 1.2, 40)].reshape(-1, 1)
    with pytest.raises(ValueError, match="reshape"):
        gmm_jax.fit(0, X[:, 0], 2)
    w0, m0, v0 = np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.array([1.0, 1.0])
    precs = {"full": (1 / v0).reshape(2, 1, 1), "diag": (1 / v0).reshape(2, 1),
             "spherical": 1 / v0}
    fits = {ct: gmm_jax.fit(0, X, 2, covariance_type=ct, max_iter=MAX_ITER, weights_init=w0,
                            means_init=m0, precisions_init=p)
            for ct, p in precs.items()}
    # in one dimension full, diagonal and spherical covariances are the same model
    ref = fits["full"]
    for ct in ("diag", "spherical"):
        r = fits[ct]
        assert int(r.n_iter) == int(ref.n_iter)
        np.testing.assert_allclose(r.log_likelihood, ref.log_likelihood, rtol=1e-12)
        np.testing.assert_allclose(r.params.means, ref.params.means, rtol=1e-10)
        np.testing.assert_allclose(np.ravel(r.params.covariances),
                                   np.ravel(ref.params.covariances), rtol=1e-10)
    with threadpool_limits(1):
        sk = GaussianMixture(2, covariance_type="full", max_iter=MAX_ITER, weights_init=w0,
                             means_init=m0, precisions_init=precs["full"]).fit(X)
    assert int(ref.n_iter) == sk.n_iter_
    np.testing.assert_allclose(ref.log_likelihood, sk.lower_bound_, rtol=1e-10)
    assert_params_close(ref.params, sk, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.sort(np.ravel(ref.params.means)), [-2.0, 1.5], atol=0.5)


# ------------------------------------------------------------------------ collapse and repair
def test_empty_component_is_repaired_into_a_useful_one(x64):
    X = dataset("iris")
    w0, m0, p0 = init_from_labels(X, kmeans_labels("iris", 3), 3, "full", 1e-6)
    good = gmm_jax.fit(0, X, 3, max_iter=MAX_ITER, weights_init=w0, means_init=m0,
                       precisions_init=p0)
    m0 = m0.copy()
    m0[2] = 1e3  # no sample has any responsibility for this component: N_k underflows to 0
    res = gmm_jax.fit(0, X, 3, max_iter=MAX_ITER, weights_init=w0, means_init=m0,
                      precisions_init=p0, debug=True)
    assert int(res.n_repaired) >= 1
    assert_finite(res.params)
    assert_finite(res.history)
    assert np.all(np.asarray(res.params.weights) > 1e-3)
    assert np.all(np.abs(np.asarray(res.params.means)) < 20.0)  # re-seeded inside the data
    # the repaired component is useful: as good as the fit that never lost it (measured:
    # within 0.01 nats); a component left empty would lose about 0.3
    assert float(res.log_likelihood) > float(good.log_likelihood) - 0.03


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_duplicate_points_never_give_nan(x64, covariance_type):
    # four distinct points, each repeated, as many components, no reg_covar: components
    # collapse onto single points (zero covariance) and are re-seeded
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    X = np.repeat(pts, 10, axis=0)
    res = gmm_jax.fit(0, X, 4, covariance_type=covariance_type, reg_covar=0.0, tol=1e-6,
                      max_iter=MAX_ITER)
    assert_finite(res.params)
    assert np.isfinite(float(res.log_likelihood))
    assert_finite(res.history)
    np.testing.assert_allclose(np.sum(res.params.weights), 1.0, rtol=1e-12)
    assert int(res.n_repaired) >= 1


def test_every_component_singular_starts_over_without_nan(x64):
    """Coplanar duplicates in 3-D, reg_covar=0: every component of the k-means start is
    singular (nothing healthy to split). They restart as wide isotropic components; never NaN."""
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 3.0, 0.0]])
    X = np.repeat(pts, 16, axis=0)
    res = _fit_small(0, X, "full", reg_covar=0.0)
    assert_finite(res.params)
    assert np.isfinite(float(res.log_likelihood))
    assert not np.any(np.isnan(np.asarray(res.history)))
    assert int(res.n_repaired) >= 3


def test_more_features_than_samples_float32_stays_finite():
    """Rounding leaves rank-deficient float32 covariances indefinite; jitter keeps them usable."""
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(12, 40)) * 3 + 100).astype(np.float32)
    res = gmm_jax.fit(1, X, 3, covariance_type="full")
    assert_finite(res.params)
    assert np.isfinite(float(res.log_likelihood))
    assert np.all(np.isfinite(np.asarray(gmm_jax.log_likelihood(res.params, X))))


# ------------------------------------------------------------------ float32 on real data
@cache
def _digits():
    return load_digits().data.astype(np.float32)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_float32_em_is_monotone_on_digits_with_sklearns_default_reg(covariance_type):
    """Constant border pixels, reg_covar=1e-6: variances of 1e-6 beside pixels of 0..16. The
    previous float32 EM dropped by up to 6.8 nats between iterations here."""
    res = gmm_jax.fit(0, _digits(), 12, covariance_type=covariance_type, reg_covar=1e-6,
                      debug=True)
    assert int(res.n_repaired) == 0 and bool(res.converged)
    assert not np.any(np.asarray(res.fast_path)[: int(res.n_iter)])  # the exact form ran


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("k", [4, 12, 32])
@pytest.mark.parametrize("variant", ["plain", "offset", "small", "large"])
def test_float32_em_is_monotone_on_digits_grid(covariance_type, k, variant):
    """Digits as they are, offset by 1e4, and scaled by 1e-4 and 1e4 (reg_covar scaled with the
    square of the scale: the same problem in other units; with a fixed 1e-6 the scaled-down
    problem is not monotone even in float64, and the scaled-up one asks float32 for means
    accurate to 1e-9 of their size)."""
    scale, offset = {"plain": (1.0, 0.0), "offset": (1.0, 1e4), "small": (1e-4, 0.0),
                     "large": (1e4, 0.0)}[variant]
    X = _digits() * np.float32(scale) + np.float32(offset)
    res = gmm_jax.fit(0, X, k, covariance_type=covariance_type, reg_covar=1e-6 * scale**2,
                      debug=True)
    assert_finite(res.params)


@cache
def _fashion_train(n: int = 10000) -> np.ndarray:
    X = vdata.load_fashion_mnist().X_train
    idx = np.random.default_rng(0).choice(X.shape[0], n, replace=False)
    return np.asarray(X[idx], np.float32).reshape(n, -1)


@pytest.mark.slow
@pytest.mark.skipif(not vdata.fashion_mnist_available(),
                    reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("covariance_type,pca", [("diag", False), ("full", True)])
def test_float32_em_is_monotone_on_fashion_mnist(covariance_type, pca):
    """Fashion-MNIST (10000 training images, float32, reg_covar=1e-6): raw pixels, whose corner
    pixels are nearly constant, with diag covariances, and PCA-50 with full covariances. Monotone
    under the chex check, and the same lower bound as float64 EM from the same start."""
    from sklearn.decomposition import PCA

    X = _fashion_train()
    if pca:
        X = PCA(50, random_state=0).fit_transform(X).astype(np.float32)
    with threadpool_limits(1):
        labels = KMeans(10, n_init=1, random_state=0).fit(X).labels_
    w0, m0, p0 = init_from_labels(X.astype(np.float64), labels, 10, covariance_type, 1e-6)
    init = dict(weights_init=w0, means_init=m0, precisions_init=p0)
    res = gmm_jax.fit(0, X, 10, covariance_type=covariance_type, reg_covar=1e-6, max_iter=30,
                      tol=0.0, debug=True, **{k: v.astype(np.float32) for k, v in init.items()})
    assert_finite(res.params)
    assert int(res.n_repaired) == 0
    with jax.enable_x64(True):
        ref = gmm_jax.fit(0, X.astype(np.float64), 10, covariance_type=covariance_type,
                          reg_covar=1e-6, max_iter=30, tol=0.0, **init)
    np.testing.assert_allclose(float(res.log_likelihood), float(ref.log_likelihood), rtol=1e-5)


def test_float32_far_from_origin_matches_float64():
    """iris offset by 1e4 in float32 against float64 EM on the very same (rounded) numbers."""
    X = dataset("iris")
    w0, m0, p0 = init_from_labels(X, kmeans_labels("iris", 3), 3, "full", 1e-6)
    off = 1e4
    X32 = (X + off).astype(np.float32)
    init32 = dict(weights_init=w0.astype(np.float32), means_init=(m0 + off).astype(np.float32),
                  precisions_init=p0.astype(np.float32))
    with jax.enable_x64(True):
        ref = gmm_jax.fit(0, X32.astype(np.float64), 3, max_iter=MAX_ITER,
                          **{k: v.astype(np.float64) for k, v in init32.items()})
    res = gmm_jax.fit(0, X32, 3, max_iter=MAX_ITER, **init32)
    assert res.params.means.dtype == jnp.float32
    assert int(res.n_repaired) == 0 and int(res.n_iter) == int(ref.n_iter)
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(res.params.weights, ref.params.weights, atol=1e-4)
    np.testing.assert_allclose(res.params.means, ref.params.means, rtol=0, atol=2e-3)
    np.testing.assert_allclose(res.params.covariances, ref.params.covariances, rtol=1e-3,
                               atol=1e-4)


# ------------------------------------------------- classification EM, labels, eigenvalue floor
def test_hard_assignment_with_equal_weights_and_shared_variance_is_lloyd(x64):
    """Classification EM with equal weights and one shared spherical variance assigns every
    row to its nearest mean and moves the means to the cluster means: Lloyd's k-means."""
    X = blobs(n=120, d=2, k=3, seed=2, spread=2.5)
    C0 = X[[0, 1, 2]]
    with threadpool_limits(1):
        km = KMeans(3, init=C0, n_init=1, max_iter=50, tol=0.0, algorithm="lloyd").fit(X)
    p = gmm_jax.params_from_covariances(np.full(3, 1 / 3), C0, np.array(1.0), "tied_spherical")
    step = jax.jit(lambda p: gmm_jax.m_step(gmm_jax.e_step(p, X, assignment="hard")[0],
                                            reg_covar=0.0))
    for _ in range(50):
        p = step(p)
        p = p._replace(weights=jnp.full(3, 1 / 3))  # k-means: equal weights
    np.testing.assert_allclose(np.asarray(p.means), km.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(gmm_jax.predict(p, X)), km.labels_)


def test_hard_assignment_fit_increases_the_classification_likelihood(x64):
    X = mixture_data(4)
    res = _fit_small(0, X, "diag", assignment="hard", reg_covar=1e-3)
    gmm_jax.check_monotone(res.history, int(res.n_iter))
    lp = np.asarray(gmm_jax.log_prob_components(res.params, X))
    assert float(res.history[-1]) == pytest.approx(lp.max(1).mean(), rel=1e-6)


def test_labels_clamp_their_rows_and_steer_the_components(x64):
    """Semi-supervised EM on overlapping clusters: 5 labels per class are enough for each
    component to follow its class; labelled rows keep their component."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [1.6, 0.0], [0.8, 1.4]])
    y = np.repeat(np.arange(3), 40)
    X = centres[y] + rng.normal(size=(120, 2)) * 0.8
    labels = np.full(120, -1)
    for c in range(3):
        labels[np.flatnonzero(y == c)[:5]] = c
    res = gmm_jax.fit(0, X, 3, covariance_type="spherical", labels=labels, max_iter=200)
    means = np.asarray(res.params.means)
    # component c sits near class c's centre (an unlabelled fit may permute or merge them)
    assert np.all(np.linalg.norm(means - centres, axis=1) < 0.5), means
    resp = np.asarray(gmm_jax.responsibilities(res.params, X))
    known = labels >= 0
    acc = np.mean(resp.argmax(1) == y)
    assert acc > 0.7
    stats, ll = gmm_jax.e_step(res.params, X, labels=labels)
    assert np.isfinite(float(ll))
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 3\)"):
        gmm_jax.fit(0, X, 3, labels=np.where(known, 3, -1))
    with pytest.raises(TypeError, match="integers"):
        gmm_jax.fit(0, X, 3, labels=np.full(120, 0.5))


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_eigenvalue_floor_holds_and_em_stays_monotone(x64, covariance_type):
    X = mixture_data(9)

    def eigenvalues(res):
        c = np.asarray(res.params.covariances)
        return np.linalg.eigvalsh(c) if covariance_type in ("full", "tied") else c

    free = _fit_small(0, X, covariance_type, reg_covar=0.0)
    psi = 2.0 * float(np.min(eigenvalues(free)))  # a floor that binds
    res = _fit_small(0, X, covariance_type, reg_covar=0.0, eigenvalue_floor=psi)
    assert np.all(eigenvalues(res) >= psi * (1 - 1e-12))
    assert np.min(eigenvalues(res)) < psi * (1 + 1e-9)  # some eigenvalue sits on the floor
    gmm_jax.check_monotone(res.history, int(res.n_iter))
