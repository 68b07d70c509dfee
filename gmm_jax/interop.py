"""Conversion between ``GMMParams`` and numpyro mixture distributions.

``to_numpyro`` gives ``MixtureSameFamily(Categorical(weights), MultivariateNormal(means,
scale_tril))`` for every covariance type (tied, diagonal and spherical covariances are expanded to
full lower-triangular scales), so a fitted mixture can be a prior, a likelihood or a proposal in a
numpyro model. ``from_numpyro`` reads such a distribution back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from gmm_jax import covariance as cov
from gmm_jax.covariance import check_covariance_type
from gmm_jax.density import params_from_covariances
from gmm_jax.types import GMMParams

__all__ = ["from_numpyro", "to_numpyro"]


def _scale_tril(params: GMMParams) -> jax.Array:
    """(K, D, D) lower-triangular ``A_k`` with ``A_k A_k^T = Sigma_k``."""
    ct = params.covariance_type
    k, d = params.means.shape
    pc = cov.expand_precision_cholesky(jnp.asarray(params.precisions_cholesky), ct, k, d)
    if cov.is_matrix(ct):
        eye = jnp.broadcast_to(jnp.eye(d, dtype=pc.dtype), pc.shape)
        return solve_triangular(jnp.swapaxes(pc, -1, -2), eye, lower=True)
    std = 1.0 / pc
    return std[:, :, None] * jnp.eye(d, dtype=std.dtype)[None]


def to_numpyro(params: GMMParams):
    """The mixture as a numpyro distribution.

    Args:
        params: mixture with K components in D features, any covariance type.

    Returns:
        ``numpyro.distributions.MixtureSameFamily`` with a ``Categorical(probs=weights)`` mixing
        distribution and a ``MultivariateNormal(loc=means, scale_tril=...)`` component
        distribution of batch shape (K,) and event shape (D,).

    Example:
        >>> import jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]),
        ...     jnp.array([[0.0], [3.0]]), jnp.array([1.0, 1.0]), "spherical")
        >>> d = gmm_jax.to_numpyro(p)
        >>> bool(jnp.allclose(d.log_prob(jnp.zeros((1, 1))),
        ...                   gmm_jax.log_likelihood(p, jnp.zeros((1, 1))), atol=1e-5))
        True
    """
    import numpyro.distributions as dist

    check_covariance_type(params.covariance_type)
    mixing = dist.Categorical(probs=jnp.asarray(params.weights))
    comps = dist.MultivariateNormal(loc=jnp.asarray(params.means), scale_tril=_scale_tril(params))
    return dist.MixtureSameFamily(mixing, comps)


def from_numpyro(distribution, covariance_type: str = "full") -> GMMParams:
    """Reads a numpyro Gaussian mixture back into ``GMMParams``.

    Args:
        distribution: ``MixtureSameFamily`` whose mixing distribution is a ``Categorical`` and
            whose component distribution is a ``MultivariateNormal`` with batch shape (K,) (or
            an ``Independent(Normal)`` with batch shape (K,) and event shape (D,)).
        covariance_type: type of the result. ``"full"`` always works; the other types require
            the covariances to have that structure (checked to a relative 1e-6) and raise
            ``ValueError`` otherwise.

    Returns:
        ``GMMParams``.

    Example:
        >>> import jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.3, 0.7]),
        ...     jnp.zeros((2, 2)), jnp.ones((2, 2)), "diag")
        >>> q = gmm_jax.from_numpyro(gmm_jax.to_numpyro(p), "diag")
        >>> bool(jnp.allclose(q.covariances, p.covariances))
        True
    """
    import numpyro.distributions as dist

    check_covariance_type(covariance_type)
    if not isinstance(distribution, dist.MixtureSameFamily):
        raise ValueError(f"from_numpyro expects a numpyro MixtureSameFamily, got "
                         f"{type(distribution).__name__}.")
    mixing = distribution.mixing_distribution
    comps = distribution.component_distribution
    if not isinstance(mixing, (dist.CategoricalProbs, dist.CategoricalLogits)):
        raise ValueError("the mixing distribution must be a Categorical.")
    if isinstance(comps, dist.MultivariateNormal):
        loc = comps.loc
        covs = comps.covariance_matrix
    elif isinstance(comps, dist.Independent) and isinstance(comps.base_dist, dist.Normal) \
            and comps.reinterpreted_batch_ndims == 1:
        loc = comps.base_dist.loc
        scale = jnp.broadcast_to(comps.base_dist.scale, loc.shape)
        covs = jnp.square(scale)[..., :, None] * jnp.eye(loc.shape[-1], dtype=loc.dtype)
    else:
        raise ValueError("the component distribution must be a MultivariateNormal (or "
                         "Independent(Normal)) over the components.")
    if loc.ndim != 2:
        raise ValueError(f"expected component locations of shape (K, D), got {loc.shape}.")
    k, d = loc.shape
    covs = jnp.broadcast_to(covs, (k, d, d))
    weights = mixing.probs
    structured = _restructure(np.asarray(covs), covariance_type)
    return params_from_covariances(weights, loc, jnp.asarray(structured, loc.dtype),
                                   covariance_type)


def _restructure(covs: np.ndarray, covariance_type: str) -> np.ndarray:
    k, d, _ = covs.shape
    scale = max(float(np.max(np.abs(covs))), np.finfo(np.float64).tiny)
    tol = 1e-6 * scale
    if covariance_type == "full":
        return covs
    tied = cov.is_tied(covariance_type)
    if tied and not np.allclose(covs, covs[0][None], rtol=0, atol=tol):
        raise ValueError(f"covariance_type={covariance_type!r} needs equal covariances in all "
                         "components.")
    if covariance_type == "tied":
        return covs[0]
    diag = np.diagonal(covs, axis1=-2, axis2=-1)
    off = covs - diag[:, :, None] * np.eye(d)[None]
    if np.max(np.abs(off)) > tol:
        raise ValueError(f"covariance_type={covariance_type!r} needs diagonal covariances.")
    if covariance_type in ("diag", "tied_diag"):
        return diag if covariance_type == "diag" else diag[0]
    if not np.allclose(diag, diag[:, :1], rtol=0, atol=tol):
        raise ValueError(f"covariance_type={covariance_type!r} needs isotropic covariances.")
    return diag[:, 0] if covariance_type == "spherical" else diag[0, 0]
