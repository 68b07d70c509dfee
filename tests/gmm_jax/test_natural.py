"""The natural-parameter E-step (two GEMMs) agrees with the direct reference form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import em, natural


def _data(n=600, d=4, k=3, sep=2.0, offset=0.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, d)
    return (X + offset).astype(dtype)


def _params(X, k, ct, seed=2):
    """Parameters near the data without running fit (keeps the tests fast)."""
    X = np.asarray(X)
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(X.shape[0], k, replace=False)]
    var = X.var(0)
    if ct == "full":
        A = rng.normal(size=(k, d, d)) * 0.3
        covs = np.cov(X.T)[None] * 0.3 + A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(d)
    elif ct == "diag":
        covs = var[None] * rng.uniform(0.2, 1.0, (k, d))
    else:
        covs = var.mean() * rng.uniform(0.2, 1.0, k)
    w = rng.uniform(0.5, 1.5, k)
    return gmm_jax.params_from_covariances(
        jnp.asarray(w, X.dtype), jnp.asarray(means), jnp.asarray(covs, X.dtype), ct)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
@pytest.mark.parametrize("chunk", [None, 128])
def test_natural_matches_direct_float64(x64, ct, chunk):
    X = jnp.asarray(_data())
    p = _params(X, 3, ct)
    w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0]))
    s_d, ll_d = em.e_step(p, X, sample_weight=w, chunk_size=chunk, method="direct")
    s_n, ll_n = em.e_step(p, X, sample_weight=w, chunk_size=chunk, method="natural")
    np.testing.assert_allclose(ll_n, ll_d, rtol=1e-12)
    for a, b in zip(s_n[:4], s_d[:4], strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_natural_sub_chunks_match(x64, monkeypatch):
    X = jnp.asarray(_data(n=1000))
    p = _params(X, 3, "full")
    s_a, ll_a = em.e_step(p, X, method="natural")
    monkeypatch.setattr(natural, "SUB_ROWS", 96)  # forces the inner scan with padding
    s_b, ll_b = em.e_step(p, X, method="natural")
    np.testing.assert_allclose(ll_a, ll_b, rtol=1e-12)
    np.testing.assert_allclose(s_a.Sk, s_b.Sk, rtol=1e-10)


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_natural_float32_accuracy(offset):
    """float32: fit centres X, so a large offset does not spoil the expansion."""
    X = _data(n=2000, d=8, k=4, sep=4.0, offset=offset, dtype=np.float32)
    Xc = jnp.asarray(X - X.mean(0))
    p = _params(Xc, 4, "full")
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), p)
        s_ref, ll_ref = em.e_step(p64, jnp.asarray(np.asarray(Xc, np.float64)), method="direct")
    s_n, ll_n = em.e_step(p, Xc, method="natural")
    s_d, ll_d = em.e_step(p, Xc, method="direct")
    err_n = abs(float(ll_n) - float(ll_ref))
    err_d = abs(float(ll_d) - float(ll_ref))
    assert err_n < 1e-4 * abs(float(ll_ref)) and err_d < 1e-4 * abs(float(ll_ref))
    scale = float(jnp.max(jnp.abs(s_ref.Sk)))
    assert float(jnp.max(jnp.abs(s_n.Sk - s_ref.Sk))) < 1e-5 * scale


def test_auto_method_selection():
    assert natural.choose_method("auto", "full") == "natural"
    assert natural.choose_method("auto", "tied") == "direct"
    assert natural.choose_method("natural", "tied") == "direct"
    assert natural.choose_method("direct", "full") == "direct"
    with pytest.raises(ValueError):
        natural.choose_method("fast", "full")
