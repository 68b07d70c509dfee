"""Everything that depends on the covariance type, in one place.

For each of ``full``, ``tied``, ``diag`` and ``spherical`` this module holds: the M-step
covariance from sufficient statistics, the Cholesky factor of the precision, its log-determinant,
the Gaussian log-density of every sample under every component, conversions from precisions and
the free-parameter count. The conventions are scikit-learn's: ``precisions_cholesky`` is the
factor ``L`` with ``precision = L @ L.T`` (upper triangular for full and tied), and spherical and
diag "Cholesky factors" are ``1 / sqrt(variance)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from gmm_jax.types import COVARIANCE_TYPES, SuffStats

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


def check_covariance_type(covariance_type: str) -> str:
    """Returns ``covariance_type`` or raises a ValueError naming the valid ones."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}."
        )
    return covariance_type


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of ``covariances`` / ``precisions`` / ``precisions_cholesky`` for a type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[check_covariance_type(covariance_type)]


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Number of free parameters of a mixture (as scikit-learn's ``_n_parameters``)."""
    k, d = n_components, n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[check_covariance_type(covariance_type)]
    return int(cov + k * d + k - 1)


def _symmetrize(a: Array) -> Array:
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def covariances_from_stats(
    stats: SuffStats, nk: Array, rel_means: Array, reg_covar, covariance_type: str
) -> Array:
    """M-step covariance of every component.

    Args:
        stats: sufficient statistics about ``stats.shift``.
        nk: (K,) ``stats.Nk`` plus the small floor that keeps the division finite.
        rel_means: (K, D) new means relative to the shift, ``Fk / nk``.
        reg_covar: scalar added to the diagonal.
        covariance_type: static type name.

    Returns:
        covariances in the type's shape.
    """
    d = rel_means.shape[-1]
    # Exact second central moment about m = Fk / nk with the floored nk:
    # sum_n r_nk (y_n - m)(y_n - m)^T / nk = Sk / nk - (2 - Nk / nk) m m^T. Dropping the factor
    # errs by (nk - Nk) / nk * m m^T, which swamps a light, tight component far from the shift.
    corr = 2.0 - stats.Nk / nk
    if covariance_type == "full":
        cov = stats.Sk / nk[:, None, None] - corr[:, None, None] * (
            rel_means[:, :, None] * rel_means[:, None, :])
        return _symmetrize(cov) + reg_covar * jnp.eye(d, dtype=cov.dtype)
    if covariance_type == "tied":
        total = jnp.sum(nk)
        between = jnp.einsum("k,kd,ke->de", nk, rel_means, rel_means)
        cov = (stats.Sk - between) / total
        return _symmetrize(cov) + reg_covar * jnp.eye(d, dtype=cov.dtype)
    var = stats.Sk / nk[:, None] - corr[:, None] * rel_means**2
    # A variance is >= 0 in exact arithmetic; float cancellation can make it slightly negative.
    var = jnp.maximum(var, 0.0) + reg_covar
    if covariance_type == "diag":
        return var
    return jnp.mean(var, axis=-1)  # spherical


def precision_cholesky_from_covariances(covariances: Array, covariance_type: str) -> Array:
    """Cholesky factor of the precision, ``L`` with ``inv(cov) = L L^T``.

    A covariance that is not positive definite gives non-finite entries (``jnp.linalg.cholesky``
    returns NaN); callers inside EM detect them and repair the component.
    """
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype),
                               covariances.shape)
        inv = solve_triangular(chol, eye, lower=True)
        return jnp.swapaxes(inv, -1, -2)
    return jax.lax.rsqrt(covariances)


def stabilised_precision_cholesky(covariances: Array, covariance_type: str) -> tuple[Array, Array]:
    """Precision Cholesky factor, adding diagonal jitter where the factorisation fails.

    Rounding can leave a rank-deficient covariance (more features than samples, a component on
    few points) slightly indefinite, so ``cholesky`` returns NaN. Such matrices (per component for
    full) take the first of ``+100 eps`` and ``+1e4 eps`` times their mean variance on the diagonal
    that factorises; matrices whose factorisation succeeds are returned unchanged. Whatever still
    fails stays non-finite for ``repair_components``.

    The three candidates are factorised in one batched call (stacked on a leading axis): separate
    factorisations inside ``lax.scan`` deadlocked XLA's CPU runtime (jax 0.10.2).

    Returns:
        (covariances, precisions_cholesky), both in the type's shape.
    """
    if covariance_type not in ("full", "tied"):
        return covariances, precision_cholesky_from_covariances(covariances, covariance_type)
    eps = jnp.finfo(covariances.dtype).eps
    eye = jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
    scale = jnp.mean(jnp.diagonal(covariances, axis1=-2, axis2=-1), axis=-1)
    scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)[..., None, None]
    factors = jnp.asarray([0.0, 1e2, 1e4], covariances.dtype) * eps
    candidates = covariances[None] + factors.reshape((3,) + (1,) * covariances.ndim) * scale * eye
    chols = precision_cholesky_from_covariances(candidates, covariance_type)
    ok = jnp.all(jnp.isfinite(chols), axis=(-2, -1))  # (3,) or (3, K)
    # index of the first candidate that factorises (0 when none does: stays non-finite)
    pick = jnp.argmax(ok, axis=0)
    take = lambda a: jnp.take_along_axis(  # noqa: E731
        a, pick.reshape((1,) + pick.shape + (1, 1)), axis=0)[0]
    return take(candidates), take(chols)


def precision_cholesky_from_precisions(precisions: Array, covariance_type: str) -> Array:
    """Cholesky factor from precision matrices, ``L`` upper with ``P = L L^T`` (full, tied)."""
    if covariance_type in ("full", "tied"):
        flipped = jnp.flip(precisions, axis=(-1, -2))
        return jnp.flip(jnp.linalg.cholesky(flipped), axis=(-1, -2))
    return jnp.sqrt(precisions)


def covariances_from_precision_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Inverse of :func:`precision_cholesky_from_covariances`."""
    if covariance_type in ("full", "tied"):
        precisions = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        return _symmetrize(jnp.linalg.inv(precisions))
    return 1.0 / prec_chol**2


def precisions_from_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Precision matrices (or precisions for diag/spherical) from their Cholesky factor."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def log_det_cholesky(prec_chol: Array, covariance_type: str, n_features: int) -> Array:
    """``log det L`` = half the log-determinant of the precision; (K,) or () for tied."""
    if covariance_type == "full":
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    if covariance_type == "tied":
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol)))
    if covariance_type == "diag":
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)


def squared_mahalanobis(X: Array, means: Array, prec_chol: Array, covariance_type: str) -> Array:
    """Squared Mahalanobis distance of every sample to every component.

    Args:
        X: (N, D) samples (centre them first: the expansions below lose precision in float32
            when the data sit far from the origin).
        means: (K, D).
        prec_chol: precision Cholesky factors in the type's shape.
        covariance_type: static type name.

    Returns:
        (N, K) ``(x_n - mu_k)^T P_k (x_n - mu_k)``.
    """
    if covariance_type == "full":
        # y_nk = L_k^T (x_n - mu_k); all components in one contraction.
        xl = jnp.einsum("nd,kde->nke", X, prec_chol)
        ml = jnp.einsum("kd,kde->ke", means, prec_chol)
        return jnp.sum(jnp.square(xl - ml[None]), axis=-1)
    if covariance_type == "tied":
        xl = X @ prec_chol
        ml = means @ prec_chol
        return _sq_dist(xl, ml)
    if covariance_type == "diag":
        p = prec_chol**2
        return (
            jnp.square(X) @ p.T
            - 2.0 * X @ (means * p).T
            + jnp.sum(jnp.square(means) * p, axis=-1)[None, :]
        )
    p = prec_chol**2
    return (
        jnp.sum(jnp.square(X), axis=-1)[:, None] * p[None, :]
        - 2.0 * (X @ means.T) * p[None, :]
        + (jnp.sum(jnp.square(means), axis=-1) * p)[None, :]
    )


def _sq_dist(a: Array, b: Array) -> Array:
    """(N, K) squared Euclidean distances, clipped at zero."""
    d = (
        jnp.sum(jnp.square(a), axis=-1)[:, None]
        - 2.0 * a @ b.T
        + jnp.sum(jnp.square(b), axis=-1)[None, :]
    )
    return jnp.maximum(d, 0.0)


def log_gaussian_prob(X: Array, means: Array, prec_chol: Array, covariance_type: str) -> Array:
    """(N, K) ``log N(x_n | mu_k, Sigma_k)``."""
    d = X.shape[-1]
    maha = squared_mahalanobis(X, means, prec_chol, covariance_type)
    if covariance_type != "full":
        maha = jnp.maximum(maha, 0.0)
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    return -0.5 * (d * _LOG_2PI + maha) + log_det


def second_moment(X: Array, weighted_resp: Array, covariance_type: str) -> Array:
    """Second-order statistic ``Sk`` for a batch (see ``SuffStats``).

    Args:
        X: (N, D) samples, already shifted.
        weighted_resp: (N, K) responsibilities times sample weights.
        covariance_type: static type name.
    """
    if covariance_type == "full":
        return jnp.einsum("nk,nd,ne->kde", weighted_resp, X, X)
    if covariance_type == "tied":
        w = jnp.sum(weighted_resp, axis=-1)
        return (X * w[:, None]).T @ X
    return weighted_resp.T @ jnp.square(X)
