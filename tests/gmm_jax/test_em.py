"""Tests of gmm_jax.em: one EM step against the textbook formulas, parity with scikit-learn,
monotonicity, restarts under vmap, edge cases (1-D, K=1), compile caching and numerics.

Compilation dominates the runtime of these tests, so they share a few problem shapes and static
options (``MAX_ITER``, ``loop``, ``init``): programs compiled by one test are reused by others.
"""

from functools import cache, partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_iris
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

import gmm_jax
from gmm_jax import COVARIANCE_TYPES, em
from tests.gmm_jax.test_density import dense_covariances, random_covariances

MAX_ITER = 200


@cache
def dataset(name: str) -> np.ndarray:
    """The float64 data of a test problem: ``"iris"`` or the first 600 ``"digits"``."""
    if name == "iris":
        return load_iris().data
    return load_digits().data[:600]


@cache
def kmeans_labels(name: str, k: int) -> np.ndarray:
    """Labels of one scikit-learn k-means run on :func:`dataset` ``(name)``, computed once."""
    with threadpool_limits(1):  # BLAS threads only fight over the two cores
        return KMeans(k, n_init=1, random_state=0).fit(dataset(name)).labels_


# ----------------------------------------------------------------------------------------------
# helpers


def numpy_em_step(X, weights, means, covs, covariance_type, reg_covar):
    """One EM iteration transcribed directly from the textbook formulas, in float64 numpy.

    E-step: ``gamma_nk = w_k N(x_n | mu_k, Sigma_k) / sum_j w_j N(x_n | mu_j, Sigma_j)``.
    M-step: ``N_k = sum_n gamma_nk`` (+ 10 eps, as scikit-learn), ``w_k = N_k / N``,
    ``mu_k = sum_n gamma_nk x_n / N_k``,
    ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg I`` (full); tied is
    ``sum_k N_k Sigma_k / N``, diag the diagonal of ``Sigma_k``, spherical its mean.

    Args:
        X: (N, D) samples.
        weights: (K,) mixing weights.
        means: (K, D) means.
        covs: covariances in the shape of ``covariance_type``.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: value added to the diagonal of the new covariances.

    Returns:
        dict with gamma (N, K), Nk (K,), weights (K,), means (K, D), covariances (type's shape)
        and mean_ll, the mean per-sample log-likelihood under the *old* parameters.
    """
    n, d = X.shape
    k = len(weights)
    dense = dense_covariances(covs, covariance_type, k, d)
    log_joint = np.empty((n, k))
    for j in range(k):
        diff = X - means[j]
        _, logdet = np.linalg.slogdet(dense[j])
        maha = np.einsum("nd,de,ne->n", diff, np.linalg.inv(dense[j]), diff)
        log_joint[:, j] = np.log(weights[j]) - 0.5 * (d * np.log(2 * np.pi) + logdet + maha)
    ll = logsumexp(log_joint, axis=1)
    gamma = np.exp(log_joint - ll[:, None])
    out = numpy_m_step(X, gamma, covariance_type, reg_covar)
    return dict(out, gamma=gamma, Nk=gamma.sum(axis=0), mean_ll=ll.mean())


def init_from_labels(X, labels, k, covariance_type, reg_covar):
    """Initial (weights, means, precisions) of a mixture from hard labels, in numpy.

    Args:
        X: (N, D) samples.
        labels: (N,) integer cluster labels in ``range(k)``.
        k: number of components.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: added to the covariance diagonal before inverting.

    Returns:
        weights (K,), means (K, D) and precisions in the shape of ``covariance_type``.
    """
    resp = np.eye(k)[labels]
    r = numpy_m_step(X, resp, covariance_type, reg_covar)
    cov = r["covariances"]
    if covariance_type in ("full", "tied"):
        prec = np.linalg.inv(cov)
        prec = 0.5 * (prec + np.swapaxes(prec, -1, -2))
    else:
        prec = 1.0 / cov
    return r["weights"], r["means"], prec


def numpy_m_step(X, resp, covariance_type, reg_covar):
    """M-step from responsibilities (the second half of :func:`numpy_em_step`).

    Args:
        X: (N, D) samples.
        resp: (N, K) responsibilities.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: value added to the covariance diagonal.

    Returns:
        dict with weights, means and covariances.
    """
    n, d = X.shape
    # N_k gets 10 * eps, scikit-learn's floor, so that an empty component stays finite
    Nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    mu = resp.T @ X / Nk[:, None]
    sig = np.stack([(resp[:, j, None] * (X - mu[j])).T @ (X - mu[j]) / Nk[j]
                    for j in range(resp.shape[1])])
    if covariance_type == "full":
        cov = sig + reg_covar * np.eye(d)
    elif covariance_type == "tied":
        cov = np.einsum("k,kde->de", Nk, sig) / Nk.sum() + reg_covar * np.eye(d)
    elif covariance_type == "diag":
        cov = np.diagonal(sig, axis1=1, axis2=2) + reg_covar
    else:
        cov = np.diagonal(sig, axis1=1, axis2=2).mean(axis=1) + reg_covar
    return dict(weights=Nk / Nk.sum(), means=mu, covariances=cov)


def assert_finite(tree):
    """Asserts every leaf of a pytree is finite."""
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf))), leaf


def assert_params_close(got, want, *, rtol, atol):
    """Compares the four parameter arrays of two mixtures (``GMMParams`` or sklearn model).

    Args:
        got: ``GMMParams``.
        want: a fitted ``sklearn.mixture.GaussianMixture`` or a ``GMMParams``.
        rtol: relative tolerance.
        atol: absolute tolerance.
    """
    names = ("weights", "means", "covariances", "precisions_cholesky")
    for name in names:
        g = np.asarray(getattr(got, name))
        w = getattr(want, name + "_") if hasattr(want, name + "_") else getattr(want, name)
        np.testing.assert_allclose(g, np.asarray(w), rtol=rtol, atol=atol, err_msg=name)


def user_init(X, k, covariance_type, rng):
    """A data-dependent starting point: K distinct samples as means, the data variance.

    Args:
        X: (N, D) samples.
        k: number of components.
        covariance_type: one of ``COVARIANCE_TYPES``.
        rng: numpy generator choosing the samples.

    Returns:
        dict of ``weights_init``, ``means_init``, ``precisions_init`` for ``gmm_jax.fit``.
    """
    n, d = X.shape
    means = X[rng.choice(n, k, replace=False)]
    var = float(np.mean(np.var(X, axis=0))) + 1e-3
    shape = gmm_jax.covariance.covariance_shape(covariance_type, k, d)
    if covariance_type in ("full", "tied"):
        prec = np.broadcast_to(np.eye(d) / var, shape).copy()
    else:
        prec = np.full(shape, 1.0 / var)
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=prec)


# ----------------------------------------------------------------------------------------------
# one EM step against the formulas


_e_step = jax.jit(gmm_jax.e_step)
_m_step = jax.jit(gmm_jax.m_step)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("problem", ["balanced", "light_component"])
def test_one_em_step_matches_textbook_formulas(x64, covariance_type, problem):
    rng = np.random.default_rng(10)
    k, d, n, reg = 3, 3, 60, 1e-4
    w = rng.dirichlet(np.ones(k) * 3.0)
    m = rng.normal(scale=2.0, size=(k, d)) + 5.0  # off the origin: the shift matters
    c = random_covariances(rng, covariance_type, k, d)
    if problem == "balanced":  # samples of the mixture itself
        dense = dense_covariances(c, covariance_type, k, d)
        z = rng.choice(k, size=n, p=w)
        X = np.stack([rng.multivariate_normal(m[j], dense[j]) for j in z])
    else:  # one component with N_k ~ 1e-4, tight and far from the data's mean
        X = rng.normal(scale=2.0, size=(n, d))
    params = gmm_jax.params_from_covariances(w, m, c, covariance_type)
    ref = numpy_em_step(X, w, m, c, covariance_type, reg)
    if problem == "balanced":
        assert ref["Nk"].min() > 5.0

    stats, mean_ll = _e_step(params, jnp.asarray(X))
    assert stats.covariance_type == covariance_type
    np.testing.assert_allclose(mean_ll, ref["mean_ll"], rtol=1e-12)
    np.testing.assert_allclose(stats.Nk, ref["Nk"], rtol=1e-10)
    np.testing.assert_allclose(stats.Fk, ref["gamma"].T @ (X - np.asarray(stats.shift)),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gmm_jax.responsibilities(params, jnp.asarray(X)), ref["gamma"],
                               rtol=1e-9, atol=1e-13)

    new = _m_step(stats, reg_covar=reg)
    assert new.covariance_type == covariance_type
    np.testing.assert_allclose(new.weights, ref["weights"], rtol=1e-10, atol=1e-15)
    # scikit-learn's 10 eps floor on N_k moves a mean by O(eps / N_k) towards the point the
    # moments are taken about (here the mixture mean, in scikit-learn the origin): visible only
    # for the light component
    slack = 1e3 * np.finfo(np.float64).eps / ref["Nk"] * np.abs(X).max()
    np.testing.assert_array_less(np.abs(np.asarray(new.means) - ref["means"]),
                                 1e-10 * (1.0 + np.abs(ref["means"])) + slack[:, None])
    np.testing.assert_allclose(new.covariances, ref["covariances"], rtol=1e-9, atol=1e-12)
    # the precision factor L satisfies L L^T = inverse(covariance)
    L = np.asarray(new.precisions_cholesky)
    if covariance_type in ("full", "tied"):
        np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), np.linalg.inv(ref["covariances"]),
                                   rtol=1e-8, atol=1e-10)
        assert np.allclose(np.tril(L, -1), 0.0)  # upper triangular, as scikit-learn's
    else:
        np.testing.assert_allclose(L**2, 1.0 / ref["covariances"], rtol=1e-10)


def test_e_step_chunks_and_weights_are_consistent(x64):
    rng = np.random.default_rng(11)
    k, d, n = 3, 2, 50
    w = rng.dirichlet(np.ones(k))
    m = rng.normal(size=(k, d))
    c = random_covariances(rng, "full", k, d)
    params = gmm_jax.params_from_covariances(w, m, c, "full")
    X = jnp.asarray(rng.normal(size=(n, d)))
    e_step = jax.jit(gmm_jax.e_step, static_argnames="chunk_size")
    whole, ll = e_step(params, X)
    chunked, ll_c = e_step(params, X, chunk_size=16)  # 4 chunks, the last one padded
    chex.assert_trees_all_close(whole, chunked, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ll, ll_c, rtol=1e-13)
    # statistics add: the two halves about the same shift sum to the whole
    a, _ = e_step(params, X[:25], shift=whole.shift)
    b, _ = e_step(params, X[25:], shift=whole.shift)
    chex.assert_trees_all_close(jax.tree.map(jnp.add, a, b)._replace(shift=whole.shift), whole,
                                rtol=1e-12, atol=1e-12)
    # integer sample weights equal repeated rows
    sw = rng.integers(0, 3, size=n).astype(np.float64)
    weighted, ll_w = e_step(params, X, sample_weight=jnp.asarray(sw), shift=whole.shift)
    rep, ll_r = e_step(params, jnp.repeat(X, sw.astype(int), axis=0), shift=whole.shift)
    chex.assert_trees_all_close(weighted, rep, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(ll_w, ll_r, rtol=1e-12)


def test_em_shape_asserts_reject_wrong_rank():
    params = gmm_jax.params_from_covariances(jnp.ones(2), jnp.zeros((2, 3)), jnp.ones(2),
                                             "spherical")
    with pytest.raises(AssertionError):
        gmm_jax.e_step(params, jnp.zeros((5,)))
    with pytest.raises(AssertionError):
        gmm_jax.e_step(params, jnp.zeros((5, 3, 1)))
    stats = gmm_jax.SuffStats(jnp.ones(2), jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.zeros(3),
                              "spherical")
    with pytest.raises(AssertionError):
        gmm_jax.m_step(stats._replace(Fk=jnp.zeros((2, 3, 1))))
    with pytest.raises(AssertionError):
        gmm_jax.stats_from_responsibilities(jnp.zeros((5, 3)), jnp.zeros((5,)), "spherical")
    with pytest.raises(AssertionError):  # responsibilities for a different number of samples
        gmm_jax.stats_from_responsibilities(jnp.zeros((5, 3)), jnp.zeros((4, 2)), "spherical")


# ----------------------------------------------------------------------------------------------
# parity with scikit-learn from the same initial parameters


def _sklearn_parity(name, k, covariance_type, *, reg_covar, tol=1e-3, rtol_params=1e-6):
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
    np.testing.assert_allclose(float(res.log_likelihood), sk.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.history)[: sk.n_iter_], sk.lower_bounds_,
                               rtol=1e-6)
    scale = max(1.0, float(np.max(np.abs(sk.precisions_cholesky_))))
    assert_params_close(res.params, sk, rtol=rtol_params, atol=rtol_params * scale)
    assert int(res.n_repaired) == 0
    return res, sk


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_on_iris(x64, covariance_type):
    res, sk = _sklearn_parity("iris", 3, covariance_type, reg_covar=1e-6)
    assert sk.n_iter_ > 2  # a real run, not a start that is already converged


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_on_digits(x64, covariance_type):
    # pixels are 0..16 and some are constant: reg_covar=4 keeps 10 full 64x64 covariances from
    # 600 samples soft enough that EM has several iterations of work to do
    res, sk = _sklearn_parity("digits", 10, covariance_type, reg_covar=4.0)
    assert sk.n_iter_ > 5


# ----------------------------------------------------------------------------------------------
# monotone log-likelihood (hypothesis)

# a small fixed set of (N, D, K) shapes and dtypes, so that examples reuse compiled programs
# (iris' shape in float64 and the 1-D shape are those of the sklearn and 1-D tests)
PROBLEMS = (((150, 4, 3), "float64"), ((64, 1, 2), "float64"), ((150, 4, 3), "float32"))


def mixture_data(seed, n, d, k):
    """Samples N points from a random K-component mixture in D dimensions.

    Args:
        seed: numpy seed.
        n: number of samples.
        d: number of features.
        k: number of true components.

    Returns:
        (N, D) float64 samples.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    scales = rng.uniform(0.2, 2.0, size=(k, d))
    z = rng.integers(k, size=n)
    mix = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    return centres[z] + (rng.normal(size=(n, d)) * scales[z]) @ mix


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    problem=st.sampled_from(PROBLEMS),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_log_likelihood_never_decreases(problem, covariance_type, seed):
    (n, d, k), dtype = problem
    with jax.enable_x64(dtype == "float64"):
        X = mixture_data(seed, n, d, k + 1).astype(dtype)
        init = user_init(X, k, covariance_type, np.random.default_rng(seed + 1))
        # tol=0: run every one of MAX_ITER iterations. reg_covar=0: with it, the M-step is not
        # the exact maximiser and the likelihood may drift down by ~reg_covar^2 near a fixed point
        res = gmm_jax.fit(seed, X, k, covariance_type=covariance_type, tol=0.0, reg_covar=0.0,
                          max_iter=MAX_ITER, **init)
        assert res.history.dtype == np.dtype(dtype)
        n_iter = int(res.n_iter)
        assert n_iter == MAX_ITER
        assert_finite(res.params)
        hist = np.asarray(res.history, np.float64)
        assert np.all(np.isfinite(hist))
        if int(res.n_repaired) == 0:
            gmm_jax.check_monotone(res.history, n_iter)
            eps = np.finfo(dtype).eps
            drops = hist[:-1] - hist[1:]
            assert np.all(drops <= 100 * eps * np.maximum(1.0, np.abs(hist[1:]))), hist
            assert hist[-1] > hist[0]


def test_check_monotone_detects_a_decrease():
    gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -2.0, -1.0]), 4)
    with pytest.raises(AssertionError):
        gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -2.5, -1.0]), 4)
    # entries past n_iter are ignored, a repaired run is exempt
    gmm_jax.check_monotone(jnp.array([-3.0, -2.0, -9.0]), 2)
    gmm_jax.check_monotone(jnp.array([-3.0, -4.0]), 2, allowed=True)


# ----------------------------------------------------------------------------------------------
# restarts under vmap


@partial(jax.jit, static_argnames=("n_components", "covariance_type", "max_iter", "init",
                                   "chunk_size"))
def _single_restart(lane_key, X, tol, reg_covar, *, n_components, covariance_type, max_iter,
                    init, chunk_size):
    """One restart of ``em._fit_program`` on its own (no vmap), from the lane's key.

    Mirrors the program: centre the data, initialise from the key, run the EM loop, un-centre.

    Returns:
        (params, lower_bound, history, n_iter, converged, n_repaired).
    """
    w = jnp.ones((X.shape[0],), X.dtype)
    shift = (w @ X) / jnp.sum(w)
    Xc = X - shift
    p0 = em._params_from_init(Xc, w, lane_key, reg_covar, None, None, None,
                              n_components=n_components, covariance_type=covariance_type,
                              init=init)
    params, lb, history, n_iter, converged, n_rep = em._em_loop(
        p0, Xc, w, tol, reg_covar, max_iter=max_iter, loop="while", chunk_size=chunk_size)
    return params._replace(means=params.means + shift), lb, history, n_iter, converged, n_rep


@pytest.mark.parametrize("covariance_type", ["full", pytest.param("tied", marks=pytest.mark.slow)])
def test_vmap_restarts_equal_loop_of_single_fits(x64, covariance_type):
    X = mixture_data(7, 90, 2, 3)
    k, n_init, tol, reg = 4, 4, 1e-3, 1e-6
    key = jax.random.key(3)
    res = gmm_jax.fit(key, X, k, covariance_type=covariance_type, n_init=n_init, tol=tol,
                      reg_covar=reg, max_iter=MAX_ITER, init="random_from_data")
    lanes = [
        _single_restart(lane_key, jnp.asarray(X), jnp.asarray(tol), jnp.asarray(reg),
                        n_components=k, covariance_type=covariance_type, max_iter=MAX_ITER,
                        init="random_from_data", chunk_size=em._auto_chunk(90, k, 2))
        for lane_key in jax.random.split(key, n_init)
    ]
    lbs = np.array([float(lane[1]) for lane in lanes])
    assert res.restart_log_likelihoods.shape == (n_init,)
    np.testing.assert_allclose(res.restart_log_likelihoods, lbs, rtol=1e-9)
    assert np.ptp(lbs) > 1e-6, "restarts should reach different optima for this test to bite"
    best = int(np.argmax(lbs))
    params, lb, history, n_iter, converged, n_rep = lanes[best]
    assert float(res.log_likelihood) == pytest.approx(float(np.max(res.restart_log_likelihoods)))
    np.testing.assert_allclose(res.log_likelihood, lb, rtol=1e-9)
    assert int(res.n_iter) == int(n_iter)
    assert bool(res.converged) == bool(converged)
    assert int(res.n_repaired) == int(n_rep)
    np.testing.assert_allclose(res.history, history, rtol=1e-9)
    assert_params_close(res.params, params, rtol=1e-7, atol=1e-9)
    worst = lanes[int(np.argmin(lbs))][0]
    assert not np.allclose(res.params.means, worst.means, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# 1-D data and a single component


def test_one_dimensional_data(x64):
    rng = np.random.default_rng(5)
    X = np.r_[rng.normal(-2.0, 0.5, 24), rng.normal(1.5, 1.2, 40)].reshape(-1, 1)
    with pytest.raises(ValueError, match="reshape"):
        gmm_jax.fit(0, X[:, 0], 2)
    w0, m0, v0 = np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.array([1.0, 1.0])
    precs = {"full": (1 / v0).reshape(2, 1, 1), "diag": (1 / v0).reshape(2, 1),
             "spherical": 1 / v0}
    fits = {
        ct: gmm_jax.fit(0, X, 2, covariance_type=ct, max_iter=MAX_ITER, weights_init=w0,
                        means_init=m0, precisions_init=p)
        for ct, p in precs.items()
    }
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
    assert_params_close(ref.params, sk, rtol=1e-8, atol=1e-10)
    # the two clusters are found
    np.testing.assert_allclose(np.sort(np.ravel(ref.params.means)), [-2.0, 1.5], atol=0.5)


@pytest.mark.parametrize("covariance_type", [
    "full", "spherical", pytest.param("tied", marks=pytest.mark.slow),
    pytest.param("diag", marks=pytest.mark.slow)])
def test_single_component_is_closed_form_mle(x64, covariance_type):
    X = dataset("iris")
    reg = 1e-3
    res = gmm_jax.fit(0, X, 1, covariance_type=covariance_type, reg_covar=reg, init="random",
                      max_iter=MAX_ITER)
    mean = X.mean(axis=0)
    cov = np.cov(X.T, bias=True)
    want = {
        "full": (cov + reg * np.eye(4))[None],
        "tied": cov + reg * np.eye(4),
        "diag": (np.diag(cov) + reg)[None],
        "spherical": np.array([np.mean(np.diag(cov)) + reg]),
    }[covariance_type]
    assert bool(res.converged) and int(res.n_iter) <= 3
    np.testing.assert_allclose(res.params.weights, [1.0], rtol=1e-12)
    np.testing.assert_allclose(res.params.means, mean[None], rtol=1e-12)
    np.testing.assert_allclose(res.params.covariances, want, rtol=1e-10)
    from scipy.stats import multivariate_normal

    dense = dense_covariances(want, covariance_type, 1, 4)[0]
    ll = multivariate_normal(mean, dense).logpdf(X).mean()
    np.testing.assert_allclose(res.log_likelihood, ll, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# compilation caching


def test_second_call_with_same_shapes_does_not_retrace(monkeypatch):
    traces = []
    real_loop = em._em_loop

    def counting_loop(*args, **kwargs):
        traces.append(1)
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(em, "_em_loop", counting_loop)
    rng = np.random.default_rng(0)
    # a shape no other test uses, so the first call is known to compile
    X1 = rng.normal(size=(37, 2)).astype(np.float32)
    X2 = rng.normal(size=(37, 2)).astype(np.float32) + 1.0
    before = em._fit_program._cache_size()
    r1 = gmm_jax.fit(0, X1, 2, covariance_type="diag", init="random", max_iter=20, tol=1e-3,
                     reg_covar=1e-6)
    after_first = em._fit_program._cache_size()
    r2 = gmm_jax.fit(1, X2, 2, covariance_type="diag", init="random", max_iter=20, tol=1e-5,
                     reg_covar=1e-3)
    after_second = em._fit_program._cache_size()
    assert after_first == before + 1 and len(traces) == 1
    assert after_second == after_first, "same shapes and static options must not recompile"
    assert len(traces) == 1
    # it really ran on the new data and options
    assert not np.allclose(r1.params.means, r2.params.means)
    assert np.all(np.asarray(r2.params.covariances) >= 1e-3 * (1 - 1e-6))


# ----------------------------------------------------------------------------------------------
# numerics


def test_float32_far_from_origin_matches_float64():
    X = dataset("iris")
    w0, m0, p0 = init_from_labels(X, kmeans_labels("iris", 3), 3, "full", 1e-6)
    with jax.enable_x64(True):
        ref = gmm_jax.fit(0, X, 3, max_iter=MAX_ITER, weights_init=w0, means_init=m0,
                          precisions_init=p0)
    off = 1e4
    res = gmm_jax.fit(0, (X + off).astype(np.float32), 3, max_iter=MAX_ITER,
                      weights_init=w0.astype(np.float32), means_init=(m0 + off).astype(np.float32),
                      precisions_init=p0.astype(np.float32))
    assert res.params.means.dtype == jnp.float32
    assert_finite(res.params)
    assert int(res.n_repaired) == 0
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=2e-3)
    np.testing.assert_allclose(res.params.weights, ref.params.weights, atol=5e-3)
    np.testing.assert_allclose(np.asarray(res.params.means, np.float64) - off, ref.params.means,
                               atol=2e-2)
    np.testing.assert_allclose(res.params.covariances, ref.params.covariances, atol=5e-3,
                               rtol=2e-2)


def test_empty_component_is_repaired_not_nan(x64):
    X = dataset("iris")
    w0, m0, p0 = init_from_labels(X, kmeans_labels("iris", 3), 3, "full", 1e-6)
    m0 = m0.copy()
    m0[2] = 1e3  # no sample has any responsibility for this component: N_k underflows to 0
    res = gmm_jax.fit(0, X, 3, max_iter=MAX_ITER, weights_init=w0, means_init=m0,
                      precisions_init=p0, debug=True)
    assert int(res.n_repaired) >= 1
    assert_finite(res.params)
    assert_finite(res.history)
    assert np.all(np.asarray(res.params.weights) > 1e-3)
    assert np.all(np.abs(np.asarray(res.params.means)) < 20.0)  # re-seeded inside the data
    # it is a usable fit, about as good as three components found by sklearn
    with threadpool_limits(1):
        sk = GaussianMixture(3, random_state=0).fit(X)
    assert float(res.log_likelihood) > sk.lower_bound_ - 0.5


@pytest.mark.parametrize("covariance_type", ["full", pytest.param("diag", marks=pytest.mark.slow)])
def test_duplicate_points_never_give_nan(x64, covariance_type):
    # four distinct points, each repeated: as many components as distinct points, no reg_covar
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    X = np.repeat(pts, 10, axis=0)
    init = user_init(X, 4, covariance_type, np.random.default_rng(0))
    res = gmm_jax.fit(0, X, 4, covariance_type=covariance_type, reg_covar=0.0, tol=1e-6,
                      max_iter=MAX_ITER, **init)
    assert_finite(res.params)
    assert np.isfinite(float(res.log_likelihood))
    assert_finite(res.history)
    np.testing.assert_allclose(np.sum(res.params.weights), 1.0, rtol=1e-12)
    assert int(res.n_repaired) >= 1  # a component collapsed onto a point and was repaired


def test_more_features_than_samples_float32_stays_finite():
    """Rounding leaves rank-deficient float32 covariances indefinite; jitter keeps them usable."""
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(12, 40)) * 3 + 100).astype(np.float32)
    res = gmm_jax.fit(1, X, 3, covariance_type="full")
    for leaf in jax.tree.leaves(res.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.isfinite(float(res.log_likelihood))
    assert np.all(np.isfinite(np.asarray(gmm_jax.log_likelihood(res.params, X))))


_SCAN_SCRIPT = """
import jax, numpy as np, gmm_jax
X = np.random.default_rng(0).normal(size=(2000, 32)).astype(np.float32)
res = gmm_jax.fit(0, X, 32, max_iter=3, tol=0.0, loop="scan")
jax.block_until_ready(res)
print("SCAN_OK", int(res.n_iter))
"""


def test_scan_loop_full_covariance_terminates():
    """Regression: separate jitter factorisations inside lax.scan deadlocked XLA's CPU runtime.

    Run in a subprocess so that a deadlock fails the test instead of hanging the suite.
    """
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SCAN_SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "SCAN_OK 3" in out.stdout
