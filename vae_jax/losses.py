"""ELBO terms: likelihoods, Gaussian KL divergences, reparametrised sampling, mixture priors.

Conventions: the last axis is the event axis and is summed over, every leading axis is a batch
axis, so a (S, B, D) stack of Monte Carlo samples gives (S, B) log-densities. Variances are
carried as log-variances.

Mixture log-densities are *not* re-implemented here: :func:`mixture_log_prob` and friends
reshape their input and call :func:`gmm_jax.log_likelihood` / :func:`gmm_jax.log_prob_components`
/ :func:`gmm_jax.log_responsibilities`, the same functions the EM uses.

The KL between diagonal Gaussians is seed 004 Theorem 3 with diagonal covariances:

    KL(q || p) = 1/2 sum_i [ log s_p,i^2 - log s_q,i^2 - 1 + s_q,i^2 / s_p,i^2
                             + (mu_p,i - mu_q,i)^2 / s_p,i^2 ],

and against ``N(0, I)`` it reduces to ``1/2 sum_i (s_i^2 + mu_i^2 - 1 - log s_i^2)``.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

import gmm_jax
from gmm_jax.types import GMMParams

Array = jax.Array

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
    """``sum_d log Bernoulli(x_d; sigmoid(logits_d))``, stable for any logit.

    Uses ``x * l - softplus(l)``, which equals ``x log p + (1 - x) log(1 - p)`` with
    ``p = sigmoid(l)`` and never evaluates ``log(0)``. ``x`` may be grey levels in [0, 1]
    (the continuous relaxation commonly used for non-binarised images).

    Args:
        x: (..., D) targets in [0, 1].
        logits: (..., D) decoder logits (broadcastable against ``x``).

    Returns:
        (...,) log-likelihoods.

    Example:
        >>> import jax.numpy as jnp
        >>> float(bernoulli_log_likelihood(jnp.array([1.0]), jnp.array([0.0])))  # log 0.5
        -0.6931...
    """
    x, logits = jnp.broadcast_arrays(x, logits)
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def gaussian_log_likelihood(x: Array, mean: Array, log_var: Array | float = 0.0) -> Array:
    """``sum_d log N(x_d; mean_d, exp(log_var_d))``.

    Args:
        x: (..., D) observations.
        mean: (..., D) means (broadcastable against ``x``).
        log_var: log-variance: a scalar (fixed variance), (D,) (learned per feature) or
            (..., D) (per sample); broadcast against ``x``.

    Returns:
        (...,) log-densities.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(gaussian_log_likelihood(jnp.zeros(1), jnp.zeros(1))), 4)
        -0.9189
    """
    x, mean = jnp.broadcast_arrays(x, mean)
    log_var = jnp.broadcast_to(jnp.asarray(log_var, x.dtype), x.shape)
    return -0.5 * jnp.sum(LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var), axis=-1)


def diag_gaussian_log_prob(z: Array, mean: Array, log_var: Array) -> Array:
    """(...,) ``log N(z; mean, diag exp(log_var))``; an alias of the Gaussian likelihood."""
    return gaussian_log_likelihood(z, mean, log_var)


def standard_normal_log_prob(z: Array) -> Array:
    """(...,) ``log N(z; 0, I)`` for (..., Z) latents."""
    return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def kl_diag_gaussians(mu_q: Array, log_var_q: Array, mu_p: Array, log_var_p: Array) -> Array:
    """Analytic ``KL(N(mu_q, diag e^{log_var_q}) || N(mu_p, diag e^{log_var_p}))``.

    Seed 004 Theorem 3 specialised to diagonal covariances; all inputs broadcast together.

    Args:
        mu_q, log_var_q: (..., Z) parameters of q.
        mu_p, log_var_p: (..., Z) parameters of p.

    Returns:
        (...,) non-negative divergences.

    Example:
        >>> import jax.numpy as jnp
        >>> z = jnp.zeros(3)
        >>> float(kl_diag_gaussians(z, z, z, z))
        0.0
    """
    mu_q, log_var_q, mu_p, log_var_p = jnp.broadcast_arrays(mu_q, log_var_q, mu_p, log_var_p)
    var_ratio = jnp.exp(log_var_q - log_var_p)
    maha = jnp.square(mu_q - mu_p) * jnp.exp(-log_var_p)
    return 0.5 * jnp.sum(var_ratio + maha - 1.0 - (log_var_q - log_var_p), axis=-1)


def kl_standard_normal(mu: Array, log_var: Array) -> Array:
    """Analytic ``KL(N(mu, diag e^{log_var}) || N(0, I))``: (..., Z) -> (...,).

    ``1/2 sum_i (sigma_i^2 + mu_i^2 - 1 - log sigma_i^2)`` (seed 004 section 2.4).

    Example:
        >>> import jax.numpy as jnp
        >>> float(kl_standard_normal(jnp.ones(2), jnp.zeros(2)))
        1.0
    """
    chex.assert_equal_shape([mu, log_var])
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mu) - 1.0 - log_var, axis=-1)


def reparameterize(
    key: Array, mu: Array, log_var: Array, n_samples: int | None = None
) -> Array:
    """Reparametrised draw ``z = mu + exp(log_var / 2) * eps``, ``eps ~ N(0, I)``.

    Gradients flow to ``mu`` and ``log_var`` through the deterministic transform.

    Args:
        key: PRNG key.
        mu: (..., Z) means.
        log_var: (..., Z) log-variances.
        n_samples: if given, draws S = n_samples samples stacked on a new leading axis.

    Returns:
        (..., Z) or (S, ..., Z) samples.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> reparameterize(jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros((4, 2)), 3).shape
        (3, 4, 2)
    """
    chex.assert_equal_shape([mu, log_var])
    shape = mu.shape if n_samples is None else (int(n_samples), *mu.shape)
    eps = jax.random.normal(key, shape, mu.dtype)
    return mu + jnp.exp(0.5 * log_var) * eps


# --------------------------------------------------------------------------------------------
# Mixture priors: thin adaptors around gmm_jax.density (the one mixture log-density).
# --------------------------------------------------------------------------------------------


def diag_mixture_params(logits: Array, means: Array, log_vars: Array) -> GMMParams:
    """Builds a differentiable diagonal-covariance ``GMMParams`` from unconstrained values.

    Args:
        logits: (K,) unnormalised log mixing weights (softmax-ed).
        means: (K, Z) component means.
        log_vars: (K, Z) component log-variances.

    Returns:
        ``GMMParams`` with ``covariance_type="diag"``, usable by every ``gmm_jax`` density.

    Example:
        >>> import jax.numpy as jnp
        >>> p = diag_mixture_params(jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros((3, 2)))
        >>> p.covariance_type, p.means.shape
        ('diag', (3, 2))
    """
    chex.assert_rank([logits, means, log_vars], [1, 2, 2])
    chex.assert_equal_shape([means, log_vars])
    chex.assert_axis_dimension(means, 0, logits.shape[0])
    return gmm_jax.params_from_covariances(
        jax.nn.softmax(logits), means, jnp.exp(log_vars), "diag"
    )


def _flat(z: Array) -> tuple[Array, tuple[int, ...]]:
    return z.reshape(-1, z.shape[-1]), z.shape[:-1]


def mixture_log_prob(params: GMMParams, z: Array) -> Array:
    """``log sum_k w_k N(z; mu_k, Sigma_k)`` via :func:`gmm_jax.log_likelihood`.

    Args:
        params: mixture over Z-dimensional latents (any covariance type).
        z: (..., Z) points; leading axes are flattened for gmm_jax and restored.

    Returns:
        (...,) log-densities.

    Example:
        >>> import jax.numpy as jnp
        >>> p = diag_mixture_params(jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros((2, 3)))
        >>> mixture_log_prob(p, jnp.zeros((4, 5, 3))).shape
        (4, 5)
    """
    flat, lead = _flat(z)
    return gmm_jax.log_likelihood(params, flat).reshape(lead)


def mixture_log_prob_components(params: GMMParams, z: Array) -> Array:
    """(..., K) ``log w_k + log N(z; mu_k, Sigma_k)`` via :func:`gmm_jax.log_prob_components`."""
    flat, lead = _flat(z)
    out = gmm_jax.log_prob_components(params, flat)
    return out.reshape(*lead, out.shape[-1])


def mixture_log_responsibilities(params: GMMParams, z: Array) -> Array:
    """(..., K) ``log p(k | z)`` via :func:`gmm_jax.log_responsibilities`."""
    flat, lead = _flat(z)
    out = gmm_jax.log_responsibilities(params, flat)
    return out.reshape(*lead, out.shape[-1])


def kl_mixture_monte_carlo(
    z: Array, mu_q: Array, log_var_q: Array, params: GMMParams
) -> Array:
    """Single- or multi-sample estimate of ``KL(q(z|x) || mixture)`` at samples ``z ~ q``.

    The KL to a mixture has no closed form; this is ``log q(z|x) - log p(z)`` evaluated at the
    given reparametrised samples (average over a leading sample axis to reduce variance).

    Args:
        z: (..., B, Z) samples from q.
        mu_q, log_var_q: (B, Z) parameters of q (broadcast against ``z``).
        params: mixture prior over Z dimensions.

    Returns:
        (..., B) estimates.
    """
    return diag_gaussian_log_prob(z, mu_q, log_var_q) - mixture_log_prob(params, z)
