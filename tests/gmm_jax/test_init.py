"""Tests of gmm_jax.init: the initial responsibilities of each method and the fits they start."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import init as gi

N, D, K = 60, 2, 3


def three_blobs():
    """(60, 2) float32 data: three well separated blobs of 20 samples, centred at the origin."""
    rng = np.random.default_rng(0)
    centres = np.array([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]])
    X = np.concatenate([c + rng.normal(size=(20, 2)) for c in centres])
    return jnp.asarray(X - X.mean(axis=0), jnp.float32)


@partial(jax.jit, static_argnames="init")
def _resp(key, X, *, init):
    return gi.initial_responsibilities(key, X, K, init)


@pytest.mark.parametrize("init", gi.INIT_METHODS)
def test_initial_responsibilities_are_valid(init):
    X = three_blobs()
    r = np.asarray(_resp(jax.random.key(0), X, init=init))
    assert r.shape == (N, K)
    assert np.all(np.isfinite(r)) and np.all(r >= 0) and np.all(r <= 1)
    rows = r.sum(axis=1)
    if init in ("k-means++", "random_from_data"):
        # one-hot on K distinct samples, other rows zero
        assert np.sum(rows) == pytest.approx(K)
        picked = np.flatnonzero(rows)
        assert len(picked) == K
        np.testing.assert_array_equal(r[picked].sum(axis=0), 1.0)
    else:
        np.testing.assert_allclose(rows, 1.0, rtol=1e-6)
        assert np.all(r.sum(axis=0) > 0)  # no component starts empty
    if init in ("kmeans", "lbg", "k-means++"):
        # on well separated blobs the hard methods put one component on each blob
        blob_of = np.arange(N) // 20
        comps = [set(np.argmax(r[blob_of == b][r[blob_of == b].sum(1) > 0], axis=1).tolist())
                 for b in range(3)]
        if init != "k-means++":
            assert all(len(c) == 1 for c in comps)
        assert len(set().union(*comps)) == K


def test_initial_responsibilities_depend_on_key_only_when_random():
    X = three_blobs()
    for init in ("random", "random_from_data"):
        a = _resp(jax.random.key(0), X, init=init)
        b = _resp(jax.random.key(1), X, init=init)
        assert not np.allclose(a, b)
        np.testing.assert_array_equal(a, _resp(jax.random.key(0), X, init=init))
    lbg_a = _resp(jax.random.key(0), X, init="lbg")
    np.testing.assert_array_equal(lbg_a, _resp(jax.random.key(5), X, init="lbg"))


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="init must be one of"):
        gi.check_init("kmeans++")
    with pytest.raises(ValueError, match="init must be one of"):
        gmm_jax.fit(0, np.zeros((10, 2)), 2, init="bogus")


@partial(jax.jit, static_argnames=("init", "k"))
def _resp_general(key, X, w, n_active, *, init, k):
    return gi.initial_responsibilities(key, X, k, init, sample_weight=w, n_active=n_active)


@pytest.mark.parametrize("init", gi.INIT_METHODS)
def test_initial_responsibilities_ignore_padding_rows_and_masked_slots(init):
    """Rows of weight zero are never picked or counted, and K active of 5 slots gives the K
    columns of the unpadded call (per-row and per-slot random draws)."""
    X = three_blobs()
    key = jax.random.key(2)
    plain = np.asarray(_resp_general(key, X, jnp.ones(N), K, init=init, k=K))
    # 4 padding rows far away, weight zero; 2 masked slots
    Xp = jnp.concatenate([X, jnp.full((4, D), 1e3, X.dtype)])
    wp = jnp.concatenate([jnp.ones(N), jnp.zeros(4)])
    padded = np.asarray(_resp_general(key, Xp, wp, K, init=init, k=K + 2))
    np.testing.assert_allclose(padded[:N, :K], plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(padded[:, K:], 0.0)
    if init in ("k-means++", "random_from_data"):  # seeds are never padding rows
        np.testing.assert_array_equal(padded[N:], 0.0)


def test_weighted_kmeans_plusplus_never_seeds_on_zero_weight_rows():
    X = three_blobs()
    w = jnp.where(jnp.arange(N) < 40, 1.0, 0.0)  # the third blob has weight zero
    for s in range(5):
        _, idx = jax.jit(lambda k: gi.km.kmeans_plusplus(k, X, K, sample_weight=w))(
            jax.random.key(s))
        assert np.all(np.asarray(idx) < 40)


@pytest.mark.parametrize("init", gi.INIT_METHODS)
def test_every_init_leads_to_a_good_fit(init):
    """Shares the programs of tests/gmm_jax/test_fitting.py (spherical, 61 rows in the 64-row
    bucket, 3 components, MAX_ITER iterations)."""
    from tests.gmm_jax.helpers import MAX_ITER

    rng = np.random.default_rng(1)
    centres = np.array([[-8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [8.0, 0.0, 0.0]])
    X = centres[np.arange(61) % 3] + rng.normal(size=(61, 3))
    with jax.enable_x64(True):
        res = gmm_jax.fit(1, X, 3, covariance_type="spherical", init=init, max_iter=MAX_ITER,
                          tol=0.0)
    means = np.asarray(res.params.means)
    means = means[np.argsort(means[:, 0] + 0.1 * means[:, 1])]
    np.testing.assert_allclose(means, centres[[0, 1, 2]], atol=0.6)


@jax.jit
def _seeded_vs_dense(key, X, w):
    """Both ways to the initial statistics of every row-seeded method and covariance type,
    with row weights and 2 of 3 slots active."""
    out = {}
    for init in gi.ROW_SEEDED:
        idx = gi.seed_rows(key, X, K, init, sample_weight=w, n_active=2)
        resp = gi.initial_responsibilities(key, X, K, init, sample_weight=w, n_active=2)
        for ct in gmm_jax.COVARIANCE_TYPES:
            out[init, ct] = (
                gmm_jax.em.stats_from_seed_rows(X, idx, ct, sample_weight=w, n_active=2),
                gmm_jax.stats_from_responsibilities(X, resp, ct, sample_weight=w))
    return out


def test_seed_row_statistics_equal_the_dense_pass(x64):
    """fit starts k-means++ and random_from_data from the K seed rows alone; that gives the
    statistics (and so the initial parameters) of the dense pass over all rows."""
    X = jnp.asarray(np.asarray(three_blobs(), np.float64) * 1.7 + 0.3)
    w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, N))
    for (init, ct), (seeded, dense) in _seeded_vs_dense(jax.random.key(3), X, w).items():
        for name in ("Nk", "Fk", "Sk", "shift"):
            np.testing.assert_allclose(getattr(seeded, name), getattr(dense, name), rtol=1e-14,
                                       atol=1e-14, err_msg=f"{init} {ct} {name}")
        active = jnp.arange(K) < 2
        a = gmm_jax.m_step(seeded, reg_covar=1e-3, active=active)
        b = gmm_jax.m_step(dense, reg_covar=1e-3, active=active)
        for name in ("weights", "means", "covariances"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-13,
                                       atol=1e-14, err_msg=f"{init} {ct} {name}")
    with pytest.raises(ValueError, match="seed_rows serves"):
        gi.seed_rows(jax.random.key(0), X, K, "kmeans")
