"""``fit`` as one compiled program: inside the caller's jit/vmap/grad, row buckets, masked
component slots, no recompilation, gradients through EM against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import fitting
from tests.gmm_jax.helpers import (
    D_SMALL,
    K_SMALL,
    MAX_ITER,
    assert_params_close,
    blobs,
    precisions_of,
    random_covariances,
)

X64 = blobs(n=64, seed=3)
X32 = X64.astype(np.float32)


def _small(key, X, **kw):
    """The canonical program of the test suite (3 slots, MAX_ITER iterations)."""
    kw = {"covariance_type": "full", "max_iter": MAX_ITER, "tol": 0.0,
          "max_components": K_SMALL, **kw}
    n = kw.pop("n_components", K_SMALL)
    return gmm_jax.fit(key, X, n, **kw)


# ----------------------------------------------------------------------- the caller's transforms
def test_fit_inside_jit_equals_fit_outside():
    key = jax.random.key(0)
    outside = _small(key, X32)
    inside = jax.jit(lambda X: _small(key, X))(jnp.asarray(X32))
    np.testing.assert_allclose(inside.log_likelihood, outside.log_likelihood, rtol=1e-6)
    np.testing.assert_allclose(inside.params.means, outside.params.means, rtol=1e-5, atol=1e-5)
    assert int(inside.n_iter) == int(outside.n_iter)


def test_vmap_over_data_sets_keys_weights_reg_and_initial_means():
    """Two batched programs (over data sets; over keys, weights, reg_covar and initial means at
    once, the data shared): every lane equals its own unbatched fit."""
    key = jax.random.key(1)
    data = jnp.stack([jnp.asarray(X32), jnp.asarray(X32) * 2.0 + 1.0])
    over_data = jax.vmap(lambda X: _small(key, X))(data)
    for i in range(2):
        one = _small(key, np.asarray(data[i]))
        np.testing.assert_allclose(over_data.log_likelihood[i], one.log_likelihood, rtol=1e-5)
    keys = jax.random.split(key, 2)
    w = jnp.stack([jnp.ones(64), jnp.where(jnp.arange(64) < 40, 1.0, 0.0)])
    regs = jnp.asarray([1e-6, 0.5], jnp.float32)
    means = jnp.stack([jnp.asarray(X32[:3]), jnp.asarray(X32[3:6])])
    init = dict(weights_init=np.full(3, 1 / 3, np.float32),
                precisions_init=np.broadcast_to(np.eye(3, dtype=np.float32), (3, 3, 3)))

    def run(k, sw, r, m):
        return _small(k, jnp.asarray(X32), sample_weight=sw, reg_covar=r, means_init=m, **init)

    batched = jax.vmap(run)(keys, w, regs, means)
    lls = []
    for i in range(2):
        one = run(keys[i], np.asarray(w[i]), float(regs[i]), np.asarray(means[i]))
        lls.append(float(one.log_likelihood))
        np.testing.assert_allclose(batched.log_likelihood[i], one.log_likelihood, rtol=1e-5)
        np.testing.assert_allclose(batched.params.means[i], one.params.means, rtol=1e-4,
                                   atol=1e-4)
    assert abs(lls[0] - lls[1]) > 0.1  # the lanes really are different fits
    cov = np.asarray(batched.params.covariances[1])
    assert np.all(np.linalg.eigvalsh(cov) >= 0.5 * (1 - 1e-5))


def test_kmeans_predict_sample_under_jit_and_vmap():
    km = jax.jit(lambda X: gmm_jax.kmeans(jax.random.key(0), X, 3))(jnp.asarray(X32))
    ref = gmm_jax.kmeans(jax.random.key(0), X32, 3)
    np.testing.assert_allclose(km.inertia, ref.inertia, rtol=1e-5)
    res = _small(jax.random.key(0), X32)
    lab = jax.jit(gmm_jax.predict)(res.params, jnp.asarray(X32))
    np.testing.assert_array_equal(lab, gmm_jax.predict(res.params, X32))
    draws, _ = jax.vmap(lambda k: gmm_jax.sample(k, res.params, 5))(jax.random.split(
        jax.random.key(1), 4))
    assert draws.shape == (4, 5, D_SMALL)
    ll = jax.jit(gmm_jax.log_likelihood)(res.params, jnp.asarray(X32))
    assert ll.shape == (64,)


def test_traced_inputs_get_the_static_checks_only():
    with pytest.raises(ValueError, match="2-D"):
        jax.jit(lambda X: gmm_jax.fit(0, X, 2))(jnp.zeros((8,)))
    with pytest.raises(ValueError, match="fewer than the 3 required"):
        jax.jit(lambda X: gmm_jax.fit(0, X, 3))(jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(64,\)"):
        jax.jit(lambda w: _small(0, jnp.asarray(X32), sample_weight=w))(jnp.ones(5))
    with pytest.raises(ValueError, match="means_init must have shape"):
        jax.jit(lambda m: _small(0, jnp.asarray(X32), means_init=m))(jnp.zeros((2, 3)))
    # concrete NaN is caught before tracing; under jit it cannot be seen (documented)
    bad = X32.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite.*row 5"):
        gmm_jax.fit(0, bad, 2)


# ----------------------------------------------------------------------------- gradients
def _loss(X, sw, means0, reg):
    """A loss on a mixture fitted by 6 EM iterations from given initial parameters."""
    init = dict(weights_init=jnp.full(3, 1 / 3), means_init=means0,
                precisions_init=jnp.broadcast_to(jnp.eye(3) * 0.5, (3, 3, 3)))
    res = gmm_jax.fit(0, X, 3, covariance_type="full", max_iter=6, loop="scan",
                      sample_weight=sw, reg_covar=reg, **init)
    p = res.params
    return jnp.sum(p.means[:, 0] * jnp.arange(1.0, 4.0)) + jnp.sum(jnp.log(p.weights)) \
        + 0.3 * jnp.sum(p.covariances) + res.log_likelihood


def _fd(f, x, eps=1e-6):
    """Central finite differences of a scalar function over every entry of ``x``."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        g[idx] = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * eps)
    return g


def test_grad_through_scan_em_matches_finite_differences(x64):
    X = jnp.asarray(blobs(n=24, d=3, k=3, seed=4, spread=2.0))
    sw = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, 24))
    m0 = X[jnp.array([0, 1, 2])] + 0.1
    reg = jnp.asarray(1e-3)
    gX, gw, gm, gr = jax.grad(_loss, argnums=(0, 1, 2, 3))(X, sw, m0, reg)
    np.testing.assert_allclose(gX[:4], _fd(lambda a: _loss(X.at[:4].set(a), sw, m0, reg),
                                             X[:4]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gw[:6], _fd(lambda a: _loss(X, sw.at[:6].set(a), m0, reg),
                                             sw[:6]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gm, _fd(lambda a: _loss(X, sw, a, reg), m0), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(gr, _fd(lambda a: _loss(X, sw, m0, a), reg), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(gX))) and float(jnp.max(jnp.abs(gX))) > 0


def test_grad_through_while_em_raises_a_clear_error(x64):
    X = jnp.asarray(blobs(n=24, d=3, k=3, seed=4))
    with pytest.raises(ValueError, match="loop='scan'"):
        jax.grad(lambda X: gmm_jax.fit(0, X, 2, covariance_type="diag").log_likelihood)(X)
    # forward passes (and gradients of other things) still work
    res = jax.jit(lambda X: gmm_jax.fit(0, X, 2, covariance_type="diag"))(X)
    assert np.isfinite(float(res.log_likelihood))


# ----------------------------------------------------------------------------- row buckets
def test_row_buckets():
    # every small data set shares the 64-row program; above it at most 1/8 is padding
    assert {fitting.row_bucket(n) for n in range(1, 65)} == {64}
    for n in [65, 100, 1797, 12345, 10**6 + 7]:
        b = fitting.row_bucket(n)
        assert n <= b <= n + n // 8, (n, b)
    assert len({fitting.row_bucket(n) for n in range(1025, 2049)}) == 8


def test_padded_rows_equal_unpadded_and_share_one_program(x64):
    X = blobs(n=61, seed=5)  # bucket: 64 rows
    kw = dict(covariance_type="diag", init="k-means++", max_iter=40, tol=0.0)
    padded = gmm_jax.fit(0, X, 3, **kw)
    plain = gmm_jax.fit(0, X, 3, pad_rows=False, **kw)
    assert_params_close(padded.params, plain.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(padded.history, plain.history, rtol=1e-10)
    before = fitting._fit_program._cache_size()
    other = gmm_jax.fit(0, blobs(n=63, seed=6), 3, **kw)  # same bucket: no new program
    assert fitting._fit_program._cache_size() == before
    assert np.isfinite(float(other.log_likelihood))


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data", "lbg"])
def test_every_initialisation_ignores_padding_rows(x64, init):
    X = blobs(n=61, seed=5)
    kw = dict(covariance_type="spherical", init=init, max_iter=MAX_ITER, tol=0.0)
    padded = gmm_jax.fit(1, X, 3, **kw)
    plain = gmm_jax.fit(1, X, 3, pad_rows=False, **kw)
    assert_params_close(padded.params, plain.params, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- component masks
@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_masked_fit_equals_the_unpadded_fit(x64, covariance_type):
    """K = 3 active in 5 slots == a 3-component fit, from the same initial parameters."""
    rng = np.random.default_rng(0)
    X = blobs(n=64, seed=7)
    c = random_covariances(rng, covariance_type, 5, D_SMALL)
    prec = precisions_of(c, covariance_type)
    w5 = np.array([0.3, 0.3, 0.4, 0.0, 0.0])
    m5 = np.r_[X[:3], np.full((2, 3), 50.0)]
    kw = dict(covariance_type=covariance_type, max_iter=MAX_ITER, tol=0.0)
    masked = gmm_jax.fit(0, X, 3, max_components=5, weights_init=w5, means_init=m5,
                         precisions_init=prec, **kw)
    p3 = prec if covariance_type == "tied" else prec[:3]
    plain = gmm_jax.fit(0, X, 3, weights_init=w5[:3], means_init=m5[:3], precisions_init=p3,
                        **kw)
    p = masked.params
    np.testing.assert_array_equal(p.weights[3:], 0.0)
    trimmed = p._replace(weights=p.weights[:3], means=p.means[:3],
                         covariances=p.covariances if covariance_type == "tied"
                         else p.covariances[:3],
                         precisions_cholesky=p.precisions_cholesky if covariance_type == "tied"
                         else p.precisions_cholesky[:3])
    assert_params_close(trimmed, plain.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(masked.history, plain.history, rtol=1e-12)
    # sampling and the parameter count ignore the masked slots
    _, labels = gmm_jax.sample(0, p, 500)
    assert int(np.max(np.asarray(labels))) < 3
    assert gmm_jax.bic(p, X) == pytest.approx(gmm_jax.bic(plain.params, X), rel=1e-10)


def test_traced_number_of_components_sweeps_in_one_program(x64):
    X = blobs(n=64, seed=8)
    ks = jnp.arange(1, 4)
    res = jax.vmap(lambda k: gmm_jax.fit(0, X, k, max_components=3, covariance_type="diag",
                                         max_iter=MAX_ITER, tol=0.0))(ks)
    for i, k in enumerate([1, 2, 3]):
        assert int(np.sum(np.asarray(res.params.weights[i]) > 0)) == k
        one = gmm_jax.fit(0, X, k, max_components=3, covariance_type="diag",
                          max_iter=MAX_ITER, tol=0.0)
        np.testing.assert_allclose(res.log_likelihood[i], one.log_likelihood, rtol=1e-10)


# ----------------------------------------------------------------------------- no recompiling
def test_second_call_with_new_values_does_not_recompile():
    X1 = blobs(n=37, seed=1).astype(np.float32)
    X2 = blobs(n=37, seed=2).astype(np.float32) + 1.0
    kw = dict(covariance_type="tied_diag", init="random", max_iter=20)
    r1 = gmm_jax.fit(0, X1, 2, tol=1e-3, reg_covar=1e-6, **kw)
    before = fitting._fit_program._cache_size()
    r2 = gmm_jax.fit(1, X2, 2, tol=1e-5, reg_covar=1e-3, eigenvalue_floor=None, **kw)
    assert fitting._fit_program._cache_size() == before
    assert not np.allclose(r1.params.means, r2.params.means)
    assert np.all(np.asarray(r2.params.covariances) >= 1e-3 * (1 - 1e-6))


def test_callback_reports_every_iteration():
    seen = []
    res = gmm_jax.fit(0, X32, 2, covariance_type="spherical", max_iter=15, tol=0.0,
                      callback=lambda it, lb, change, fast: seen.append(
                          (int(it), np.asarray(lb).copy())))
    jax.effects_barrier()
    its = [s[0] for s in seen]
    assert its == list(range(1, 16)) + [16]  # 15 E-steps, then the last M-step's pass
    np.testing.assert_allclose(seen[14][1][0], float(res.history[14]), rtol=1e-6)
