"""ELBO terms: closed forms against direct formulas and Monte Carlo; mixture priors via gmm_jax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import gmm_jax
from vae_jax import losses


def test_bernoulli_matches_direct_formula_and_is_stable():
    key = jax.random.key(0)
    logits = jax.random.normal(key, (4, 6)) * 3
    x = (jax.random.uniform(jax.random.key(1), (4, 6)) > 0.5).astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    direct = jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p), -1)
    out = losses.bernoulli_log_likelihood(x, logits)
    chex.assert_shape(out, (4,))
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-5)
    extreme = losses.bernoulli_log_likelihood(jnp.array([1.0, 0.0]), jnp.array([-200.0, 200.0]))
    assert bool(jnp.isfinite(extreme)) and float(extreme) == -400.0


def test_gaussian_likelihood_matches_scipy_fixed_and_per_feature_variance():
    x = np.array([[0.3, -1.0, 2.0]], np.float32)
    m = np.array([[0.0, 0.5, 1.0]], np.float32)
    lv = np.array([0.1, -0.7, 1.2], np.float32)
    ref = stats.norm(m, np.exp(0.5 * lv)).logpdf(x).sum(-1)
    np.testing.assert_allclose(losses.gaussian_log_likelihood(x, m, lv), ref, rtol=1e-5)
    ref0 = stats.norm(m, 1.0).logpdf(x).sum(-1)
    np.testing.assert_allclose(losses.gaussian_log_likelihood(x, m), ref0, rtol=1e-5)


def test_kl_diag_matches_theorem3_and_monte_carlo():
    k = jax.random.split(jax.random.key(2), 5)
    mu_q, mu_p = jax.random.normal(k[0], (3, 4)), jax.random.normal(k[1], (3, 4))
    lv_q, lv_p = 0.5 * jax.random.normal(k[2], (3, 4)), 0.5 * jax.random.normal(k[3], (3, 4))
    kl = losses.kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p)
    chex.assert_shape(kl, (3,))
    # Theorem 3 with full matrices.
    for i in range(3):
        Sq, Sp = np.diag(np.exp(lv_q[i])), np.diag(np.exp(lv_p[i]))
        d = np.asarray(mu_p[i] - mu_q[i])
        ref = 0.5 * (np.log(np.linalg.det(Sp) / np.linalg.det(Sq)) - 4
                     + np.trace(np.linalg.solve(Sp, Sq)) + d @ np.linalg.solve(Sp, d))
        np.testing.assert_allclose(kl[i], ref, rtol=1e-4)
    # Monte Carlo E_q[log q - log p] with reparametrised samples.
    z = losses.reparameterize(k[4], mu_q, lv_q, 200_000)
    mc = jnp.mean(losses.diag_gaussian_log_prob(z, mu_q, lv_q)
                  - losses.diag_gaussian_log_prob(z, mu_p, lv_p), 0)
    np.testing.assert_allclose(mc, kl, atol=0.03 + 0.01 * float(jnp.max(kl)))
    # Against N(0, I) is the special case.
    z0 = jnp.zeros_like(mu_q)
    np.testing.assert_allclose(losses.kl_standard_normal(mu_q, lv_q),
                               losses.kl_diag_gaussians(mu_q, lv_q, z0, z0), rtol=1e-6)
    assert float(losses.kl_diag_gaussians(mu_q, lv_q, mu_q, lv_q).max()) < 1e-6


def test_reparameterize_moments_and_gradient():
    mu, lv = jnp.array([1.0, -2.0]), jnp.array([0.0, jnp.log(4.0)])
    z = losses.reparameterize(jax.random.key(3), mu, lv, 100_000)
    chex.assert_shape(z, (100_000, 2))
    np.testing.assert_allclose(z.mean(0), mu, atol=0.03)
    np.testing.assert_allclose(z.var(0), jnp.exp(lv), rtol=0.03)
    g = jax.grad(lambda m: losses.reparameterize(jax.random.key(0), m, lv).sum())(mu)
    np.testing.assert_allclose(g, jnp.ones(2))


def test_mixture_prior_goes_through_gmm_jax():
    k = jax.random.split(jax.random.key(4), 4)
    logits, means = jax.random.normal(k[0], (3,)), jax.random.normal(k[1], (3, 2))
    log_vars = 0.3 * jax.random.normal(k[2], (3, 2))
    params = losses.diag_mixture_params(logits, means, log_vars)
    assert params.covariance_type == "diag"
    z = jax.random.normal(k[3], (5, 7, 2))
    out = losses.mixture_log_prob(params, z)
    chex.assert_shape(out, (5, 7))
    np.testing.assert_allclose(out.reshape(-1), gmm_jax.log_likelihood(params, z.reshape(-1, 2)),
                               rtol=1e-6)
    comp = losses.mixture_log_prob_components(params, z)
    chex.assert_shape(comp, (5, 7, 3))
    resp = jnp.exp(losses.mixture_log_responsibilities(params, z))
    np.testing.assert_allclose(resp.sum(-1), 1.0, rtol=1e-5)
    # One component: the mixture is that Gaussian.
    one = losses.diag_mixture_params(jnp.zeros(1), means[:1], log_vars[:1])
    np.testing.assert_allclose(losses.mixture_log_prob(one, z),
                               losses.diag_gaussian_log_prob(z, means[0], log_vars[0]), rtol=1e-5)
    # Differentiable in the prior's parameters.
    g = jax.grad(lambda m: losses.mixture_log_prob(
        losses.diag_mixture_params(logits, m, log_vars), z).sum())(means)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_kl_to_one_component_mixture_mc_matches_analytic():
    mu_q, lv_q = jnp.array([[0.5, -0.2]]), jnp.array([[-0.3, 0.4]])
    mu_p, lv_p = jnp.array([0.1, 0.3]), jnp.array([0.2, -0.1])
    prior = losses.diag_mixture_params(jnp.zeros(1), mu_p[None], lv_p[None])
    z = losses.reparameterize(jax.random.key(5), mu_q, lv_q, 100_000)
    mc = losses.kl_mixture_monte_carlo(z, mu_q, lv_q, prior).mean(0)
    np.testing.assert_allclose(mc, losses.kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p), atol=0.02)
