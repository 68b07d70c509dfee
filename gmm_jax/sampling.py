"""Drawing samples from a fitted mixture, jointly or from one chosen component.

Samples are ``x = mu_k + A_k z`` with ``z ~ N(0, I)`` and ``A_k A_k^T = Sigma_k``. ``A_k`` comes
from the stored precision Cholesky factor ``L_k`` (``P_k = L_k L_k^T``): ``A_k = L_k^{-T}``, a
triangular solve, so sampling uses exactly the covariance the density is evaluated with.
Both functions are jitted with the sample count static.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from gmm_jax import covariance as cov
from gmm_jax import validation
from gmm_jax.linalg import einsum
from gmm_jax.types import GMMParams

Array = jax.Array


def _scale_factors(params: GMMParams) -> Array:
    """``A_k`` with ``A_k A_k^T = Sigma_k``: (K, D, D) for full and tied, (K, D) otherwise."""
    ct = params.covariance_type
    k, d = params.means.shape
    pc = cov.expand_precision_cholesky(params.precisions_cholesky, ct, k, d)
    if cov.is_matrix(ct):
        eye = jnp.broadcast_to(jnp.eye(d, dtype=pc.dtype), pc.shape)
        # L is upper triangular, so L^T is lower: A = (L^T)^{-1} is lower triangular.
        return solve_triangular(jnp.swapaxes(pc, -1, -2), eye, lower=True)
    return 1.0 / pc


def _noise_to_samples(params: GMMParams, scale: Array, labels: Array, z: Array) -> Array:
    means = params.means[labels]
    if cov.is_matrix(params.covariance_type):
        k, d = params.means.shape
        if k <= d:
            # all components for every row (n*K*D) is cheaper than gathering n DxD factors
            allk = einsum("kde,ne->nkd", scale, z)
            noise = jnp.take_along_axis(allk, labels[:, None, None], axis=1)[:, 0]
        else:
            noise = einsum("nde,ne->nd", scale[labels], z)
    else:
        noise = z * scale[labels]
    return means + noise


@partial(jax.jit, static_argnames=("n",))
def _sample_program(key, params, *, n):
    k_lab, k_z = jax.random.split(key)
    d = params.means.shape[-1]
    logw = cov.safe_log_weights(params.weights)  # masked components are never drawn
    labels = jax.random.categorical(k_lab, logw, shape=(n,)).astype(jnp.int32)
    z = jax.random.normal(k_z, (n, d), params.means.dtype)
    return _noise_to_samples(params, _scale_factors(params), labels, z), labels


@partial(jax.jit, static_argnames=("n",))
def _sample_component_program(key, params, component, *, n):
    d = params.means.shape[-1]
    z = jax.random.normal(key, (n, d), params.means.dtype)
    labels = jnp.full((n,), component, jnp.int32)
    return _noise_to_samples(params, _scale_factors(params), labels, z)


def _check_n(n) -> int:
    return validation.check_positive_int(n, "n")


def sample(key, params: GMMParams, n: int) -> tuple[Array, Array]:
    """Draws ``n`` samples from the mixture.

    Args:
        key: ``jax.random.key`` (or an int seed).
        params: mixture with K components in D dimensions, any covariance type.
        n: number of samples (static: each new value compiles once).

    Returns:
        (X, labels): X (n, D) samples in random order and labels (n,) int32, the component each
        sample was drawn from.

    Example:
        >>> import jax, jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.3, 0.7]),
        ...     jnp.array([[0.0, 0.0], [5.0, 5.0]]), jnp.array([1.0, 0.5]), "spherical")
        >>> X, labels = gmm_jax.sample(jax.random.key(0), p, 1000)
        >>> X.shape, labels.shape
        ((1000, 2), (1000,))
    """
    key = validation.check_key(key)
    return _sample_program(key, params, n=_check_n(n))


def sample_component(key, params: GMMParams, component, n: int) -> Array:
    """Draws ``n`` samples from one component (conditional generation, ``x ~ p(x | k)``).

    Args:
        key: ``jax.random.key`` (or an int seed).
        params: mixture with K components in D dimensions, any covariance type.
        component: index in ``[0, K)``; a Python int is range-checked, a traced int is not.
        n: number of samples (static).

    Returns:
        (n, D) samples from ``N(mu_k, Sigma_k)``.

    Example:
        >>> import jax, jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]),
        ...     jnp.array([[0.0], [10.0]]), jnp.array([[1.0], [1.0]]), "diag")
        >>> X = gmm_jax.sample_component(jax.random.key(0), p, 1, 500)
        >>> bool(abs(float(X.mean()) - 10.0) < 0.3)
        True
    """
    key = validation.check_key(key)
    k = params.means.shape[0]
    if isinstance(component, int) and not isinstance(component, bool):
        if not -k <= component < k:
            raise ValueError(f"component must be in [0, {k}), got {component}.")
        component = component % k
    return _sample_component_program(key, params, jnp.asarray(component, jnp.int32), n=_check_n(n))
