"""VAE: shapes, and the bounds on a linear-Gaussian model whose marginal is known exactly.

Model: z ~ N(0, I_Z), x | z ~ N(z K + b, s2 I_D) (decoder ``hidden=()``, fixed variance), so
x ~ N(b, K^T K + s2 I), evaluated with gmm_jax (a one-component full-covariance mixture). With
orthogonal rows of K the exact posterior is diagonal:
P = I + K K^T / s2, q*(z|x) = N((x - b) K^T P^-1 / s2, P^-1); an affine encoder represents it.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gmm_jax
import vae_jax

D, Z, S2 = 3, 2, 0.25


def _linear_gaussian(exact_posterior: bool):
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    K = (np.diag([1.5, 0.7]) @ Q[:Z]).astype(np.float32)  # (Z, D), orthogonal rows
    b = rng.normal(size=D).astype(np.float32)
    m = vae_jax.VAE(D, Z, hidden=(), likelihood="gaussian", learn_variance=False,
                    fixed_log_var=math.log(S2), rngs=nnx.Rngs(0))
    lin = m.decoder.net.layers[0]
    lin.kernel[...] = jnp.asarray(K)
    lin.bias[...] = jnp.asarray(b)
    P_inv = np.linalg.inv(np.eye(Z) + K @ K.T / S2)
    A = K.T @ P_inv / S2  # (D, Z)
    enc = m.encoder
    if exact_posterior:
        enc.mean_head.kernel[...] = jnp.asarray(A, jnp.float32)
        enc.mean_head.bias[...] = jnp.asarray(-b @ A, jnp.float32)
        enc.log_var_head.bias[...] = jnp.asarray(np.log(np.diag(P_inv)), jnp.float32)
    else:  # a deliberately imperfect encoder: shifted mean, too wide
        enc.mean_head.kernel[...] = jnp.asarray(0.8 * A, jnp.float32)
        enc.mean_head.bias[...] = jnp.asarray(-b @ A + 0.3, jnp.float32)
        enc.log_var_head.bias[...] = jnp.asarray(np.log(np.diag(P_inv)) + 0.7, jnp.float32)
    enc.log_var_head.kernel[...] = jnp.zeros((D, Z))
    marginal = gmm_jax.params_from_covariances(
        jnp.ones(1), jnp.asarray(b)[None], jnp.asarray(K.T @ K + S2 * np.eye(D))[None], "full")
    x = jnp.asarray(b + rng.normal(size=(6, D)) * 1.2, jnp.float32)
    return m, x, gmm_jax.log_likelihood(marginal, x)


@nnx.jit(static_argnums=3)
def _iw_mean(m, x, keys, k):
    """Mean over keys of the k-sample importance-weighted bound (one compiled program)."""
    return jnp.mean(jax.vmap(lambda kk: m.log_marginal(x, kk, k))(keys), 0)


@nnx.jit(static_argnums=3)
def _elbo_mc(m, x, key, n_samples):
    return m.elbo_terms(x, key, n_samples=n_samples)["elbo"]


def test_shapes():
    m = vae_jax.VAE(10, 3, hidden=(8,), rngs=nnx.Rngs(0))
    x = jnp.ones((4, 10)) * 0.5

    @nnx.jit
    def everything(m, x, key):  # one compiled program; chex asserts run at trace time
        k = jax.random.split(key, 5)
        return (vae_jax.elbo(m, x, k[0], n_samples=5), m.encode(x), m.reconstruct(x),
                m.sample(k[1], 7), m.sample(k[2], 7, mean=False),
                vae_jax.importance_weighted_log_likelihood(m, x, k[3], k=3), m.loss(x, k[4]))

    t, enc, rec, s_mean, s_draw, iw, (loss, metrics) = everything(m, x, jax.random.key(0))
    chex.assert_shape([t["elbo"], t["recon"], t["kl"], iw], (4,))
    chex.assert_trees_all_close(t["elbo"], t["recon"] - t["kl"])
    assert bool(jnp.all(t["kl"] >= 0))
    chex.assert_shape(enc, ((4, 3), (4, 3)))
    chex.assert_shape(rec, (4, 10))
    chex.assert_shape([s_mean, s_draw], (7, 10))
    chex.assert_shape(loss, ())
    assert set(metrics) >= {"loss", "elbo", "recon", "kl"}
    with pytest.raises(AssertionError):
        m.encode(jnp.ones((4, 9)))


def test_exact_posterior_makes_bounds_tight():
    m, x, log_px = _linear_gaussian(exact_posterior=True)
    iw1 = m.log_marginal(x, jax.random.key(0), 1)  # log p(x,z) - log q*(z|x) = log p(x) for all z
    np.testing.assert_allclose(iw1, log_px, atol=2e-4)
    elbo = _elbo_mc(m, x, jax.random.key(1), 4000)
    np.testing.assert_allclose(elbo, log_px, atol=0.03)


def test_elbo_below_log_px_and_iw_bound_approaches_it():
    m, x, log_px = _linear_gaussian(exact_posterior=False)
    elbo = _elbo_mc(m, x, jax.random.key(1), 20000)
    gap = log_px - elbo
    assert bool(jnp.all(gap > 0.05)), gap  # a clearly loose bound, below log p(x)
    gaps = []
    for k in (1, 10, 100, 1000):
        keys = jax.random.split(jax.random.key(k), max(64, 4096 // k))
        lk = _iw_mean(m, x, keys, k)
        gaps.append(float(jnp.mean(log_px - lk)))
    assert gaps[0] == pytest.approx(float(jnp.mean(gap)), abs=0.03)  # L_1 is the ELBO
    assert all(a > b for a, b in zip(gaps[:-1], gaps[1:], strict=True)), gaps
    assert gaps[-1] > -0.01 and gaps[-1] < 0.1 * gaps[0], gaps
