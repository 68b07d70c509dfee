"""Mixture log-densities: the one implementation shared by EM and by vae_jax.

``log_prob_components(params, X)[n, k] = log w_k + log N(x_n | mu_k, Sigma_k)``; every other
quantity (per-sample log-likelihood, responsibilities, hard labels) is a log-sum-exp or a softmax
of it. All functions are pure and jit/vmap/grad friendly: vae_jax vmaps ``responsibilities`` over a
batch of per-sample mixtures (GMVAE) and differentiates through it. Each is one ``jax.jit``
program, so a call outside any transform compiles once per shape instead of dispatching (and
compiling) its operations one by one.

The density is computed in the exact form (``x - mu_k`` first, then the precision factor), so it
is accurate in float32 for data far from the origin and for ill-conditioned covariances; rows are
processed in blocks so memory stays O(block * K * D). Masked components (weight zero) have
log-density ``-inf``.
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp

from gmm_jax import covariance as cov
from gmm_jax._jit import as_array
from gmm_jax.types import GMMParams

Array = jax.Array

# Rows per block of the density: the (K, block, D) residuals stay below this many elements.
_BLOCK_ELEMENTS = 1 << 22


def _check(params: GMMParams, X: Array) -> None:
    chex.assert_rank(X, 2)
    chex.assert_rank(params.means, 2)
    chex.assert_equal_shape_suffix([X, params.means], 1)
    chex.assert_shape(params.weights, (params.means.shape[0],))


@jax.jit
def log_prob_components(params: GMMParams, X: Array) -> Array:
    """Joint log-density of each sample and each component.

    Args:
        params: mixture with K components in D dimensions.
        X: (N, D) samples.

    Returns:
        (N, K) array ``log w_k + log N(x_n | mu_k, Sigma_k)``.

    Example:
        >>> import jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]),
        ...     jnp.array([[0.0], [3.0]]), jnp.array([1.0, 1.0]), "spherical")
        >>> gmm_jax.log_prob_components(p, jnp.zeros((1, 1))).shape
        (1, 2)
    """
    _check(params, X)
    n, d = X.shape
    k = params.means.shape[0]
    logw = cov.safe_log_weights(params.weights)[None, :]

    def block(x):
        return cov.log_gaussian_prob(x, params.means, params.precisions_cholesky,
                                     params.covariance_type) + logw

    size = max(1, _BLOCK_ELEMENTS // max(1, k * d))
    if n <= size:
        return block(X)
    nb = -(-n // size)
    Xp = jnp.pad(X, ((0, nb * size - n), (0, 0))).reshape(nb, size, d)
    return jax.lax.map(block, Xp).reshape(nb * size, k)[:n]


@jax.jit
def log_likelihood(params: GMMParams, X: Array) -> Array:
    """(N,) per-sample mixture log-density ``log sum_k w_k N(x_n | mu_k, Sigma_k)``."""
    return jax.nn.logsumexp(log_prob_components(params, X), axis=-1)


@jax.jit
def log_responsibilities(params: GMMParams, X: Array) -> Array:
    """(N, K) ``log p(k | x_n)``, normalised with log-sum-exp."""
    lp = log_prob_components(params, X)
    return lp - jax.nn.logsumexp(lp, axis=-1, keepdims=True)


@jax.jit
def responsibilities(params: GMMParams, X: Array) -> Array:
    """(N, K) posterior component probabilities ``p(k | x_n)`` (the E-step's gamma)."""
    return jax.nn.softmax(log_prob_components(params, X), axis=-1)


@jax.jit
def predict(params: GMMParams, X: Array) -> Array:
    """(N,) int32 index of the most probable component of each sample."""
    return jnp.argmax(log_prob_components(params, X), axis=-1).astype(jnp.int32)


def params_from_covariances(
    weights: Array, means: Array, covariances: Array, covariance_type: str = "full"
) -> GMMParams:
    """Builds ``GMMParams`` from weights, means and covariances (computes the precision Cholesky).

    Args:
        weights: (K,) mixing weights; they are renormalised to sum to one (zeros mask
            components).
        means: (K, D).
        covariances: shape by type (see ``gmm_jax.types``).
        covariance_type: one of ``gmm_jax.COVARIANCE_TYPES``.
    """
    cov.check_covariance_type(covariance_type)
    return _params_from_covariances(as_array(weights), as_array(means), as_array(covariances),
                                    covariance_type=covariance_type)


@partial(jax.jit, static_argnames="covariance_type")
def _params_from_covariances(weights, means, covariances, covariance_type):
    return GMMParams(
        weights=weights / jnp.sum(weights),
        means=means,
        covariances=covariances,
        precisions_cholesky=cov.precision_cholesky_from_covariances(covariances, covariance_type),
        covariance_type=covariance_type,
    )
