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


@pytest.mark.slow
@pytest.mark.parametrize("init", gi.INIT_METHODS)
def test_every_init_leads_to_a_good_fit(init):
    X = np.asarray(three_blobs())
    res = gmm_jax.fit(0, X, K, init=init, n_init=2, covariance_type="spherical")
    assert np.all(np.isfinite(res.params.means))
    means = np.sort(np.asarray(res.params.means)[:, 0])
    np.testing.assert_allclose(means, [-8.0, 0.0, 8.0], atol=1.5)
