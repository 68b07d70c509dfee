"""numpyro interop: log_prob agreement, round trip, and a fitted mixture as a prior."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

import gmm_jax
from gmm_jax import COVARIANCE_TYPES


def _params(ct):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2, 2))
    covs = {"full": a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(2), "tied": np.array([[2.0, 0.3],
            [0.3, 1.0]]), "diag": np.array([[0.5, 2.0], [1.0, 0.3]]),
            "spherical": np.array([0.5, 2.0]), "tied_diag": np.array([0.5, 2.0]),
            "tied_spherical": np.array(0.8)}[ct]
    return gmm_jax.params_from_covariances(jnp.array([0.4, 0.6]), jnp.array([[-2.0, 0.0],
                                           [2.0, 1.0]]), jnp.asarray(covs, jnp.float32), ct)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_log_prob_agrees_and_round_trips(ct):
    p = _params(ct)
    d = gmm_jax.to_numpyro(p)
    assert isinstance(d, dist.MixtureSameFamily)
    assert isinstance(d.component_distribution, dist.MultivariateNormal)
    X = jax.random.normal(jax.random.key(0), (50, 2)) * 3
    np.testing.assert_allclose(d.log_prob(X), gmm_jax.log_likelihood(p, X), atol=1e-5, rtol=1e-5)
    q = gmm_jax.from_numpyro(d, ct)
    assert q.covariance_type == ct
    np.testing.assert_allclose(q.covariances, p.covariances, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gmm_jax.log_likelihood(q, X), gmm_jax.log_likelihood(p, X),
                               atol=1e-5, rtol=1e-5)
    full = gmm_jax.from_numpyro(d)  # any mixture reads back as full
    np.testing.assert_allclose(gmm_jax.log_likelihood(full, X), gmm_jax.log_likelihood(p, X),
                               atol=1e-4, rtol=1e-5)


def test_from_numpyro_rejects_wrong_structure_and_types():
    d = gmm_jax.to_numpyro(_params("full"))
    with pytest.raises(ValueError, match="diagonal"):
        gmm_jax.from_numpyro(d, "diag")
    with pytest.raises(ValueError, match="MixtureSameFamily"):
        gmm_jax.from_numpyro(dist.Normal(0.0, 1.0))
    indep = dist.MixtureSameFamily(dist.Categorical(logits=jnp.zeros(2)),
                                   dist.Normal(jnp.zeros((2, 3)), 2.0).to_event(1))
    q = gmm_jax.from_numpyro(indep, "spherical")
    np.testing.assert_allclose(q.covariances, [4.0, 4.0], rtol=1e-6)


def test_fitted_mixture_as_numpyro_prior():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-3, 0.5, (60, 2)), rng.normal(3, 0.5, (60, 2))]
    # same shape and options as the estimator tests, so the compiled fit is reused
    gm = gmm_jax.GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), gm.params_)
    prior = gmm_jax.to_numpyro(p)
    obs = jnp.array([2.5, 3.5])

    def model(y):
        theta = numpyro.sample("theta", prior)
        numpyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)

    tr = handlers.trace(handlers.seed(model, jax.random.key(1))).get_trace(obs)
    theta = tr["theta"]["value"]
    assert theta.shape == (2,)
    # the model's joint density uses the mixture log-density for the prior term
    ld, _ = log_density(model, (obs,), {}, {"theta": theta})
    expect = gmm_jax.log_likelihood(p, theta[None])[0] + dist.Normal(theta, 1.0).log_prob(obs).sum()
    np.testing.assert_allclose(ld, expect, rtol=1e-5)
    # prior predictive draws come from the mixture
    draws = numpyro.infer.Predictive(model, num_samples=2000)(jax.random.key(3), None)["theta"]
    np.testing.assert_allclose(np.mean(np.asarray(draws[:, 0]) > 0), p.weights[
        int(np.argmax(np.asarray(p.means[:, 0])))], atol=0.05)


@pytest.mark.slow
def test_nuts_posterior_with_mixture_prior():
    p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]), jnp.array([[-3.0, -3.0],
                                        [3.0, 3.0]]), jnp.array([0.25, 0.25]), "spherical")
    prior = gmm_jax.to_numpyro(p)
    obs = jnp.array([2.5, 3.5])

    def model(y):
        theta = numpyro.sample("theta", prior)
        numpyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)

    # posterior sampling: a short NUTS run lands in the mode near the observation
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=150, num_samples=150,
                              progress_bar=False)
    mcmc.run(jax.random.key(2), obs)
    post = mcmc.get_samples()["theta"]
    assert np.all(np.isfinite(post))
    assert float(jnp.mean(post[:, 0])) > 1.5
