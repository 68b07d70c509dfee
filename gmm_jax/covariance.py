"""Everything that depends on the covariance type, in one place.

Six types. ``full``, ``tied``, ``diag`` and ``spherical`` are scikit-learn's; ``tied_diag`` (one
diagonal covariance shared by every component) and ``tied_spherical`` (one shared variance) are
the two remaining constraints of the seed on covariance structure. For each type this module
holds: shapes, the free-parameter count, the expansion of a type's arrays to per-component form,
log-determinants, the exact Gaussian log-density, and conversions between covariances,
precisions and precision Cholesky factors. The conventions are scikit-learn's:
``precisions_cholesky`` is the factor ``L`` with ``precision = L @ L.T`` (upper triangular for
full and tied), and the diagonal and spherical "Cholesky factors" are ``1 / sqrt(variance)``.

Two families: *matrix* types (full, tied) carry (D, D) matrices; *diagonal* types (diag,
spherical, tied_diag, tied_spherical) carry per-feature variances, so every diagonal type
expands to a (K, D) array of per-component, per-feature precision factors.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from gmm_jax import linalg
from gmm_jax.types import COVARIANCE_TYPES

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)

MATRIX_TYPES = ("full", "tied")
DIAGONAL_TYPES = ("diag", "spherical", "tied_diag", "tied_spherical")
TIED_TYPES = ("tied", "tied_diag", "tied_spherical")


def check_covariance_type(covariance_type: str) -> str:
    """Returns ``covariance_type`` or raises a ValueError naming the valid ones."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}."
        )
    return covariance_type


def is_matrix(covariance_type: str) -> bool:
    """Full and tied carry (D, D) matrices; every other type per-feature variances."""
    return covariance_type in MATRIX_TYPES


def is_tied(covariance_type: str) -> bool:
    """Types whose covariance is shared by every component."""
    return covariance_type in TIED_TYPES


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of ``covariances`` / ``precisions`` / ``precisions_cholesky`` for a type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
        "tied_diag": (n_features,),
        "tied_spherical": (),
    }[check_covariance_type(covariance_type)]


def n_covariance_parameters(covariance_type: str, n_components, n_features: int):
    """Free parameters of the covariances alone (``n_components`` may be a traced integer)."""
    k, d = n_components, n_features
    return {
        "full": k * (d * (d + 1) // 2),
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "tied_diag": d,
        "tied_spherical": 1,
    }[check_covariance_type(covariance_type)]


def n_parameters(*args, covariance_type: str | None = None):
    """Number of free parameters of a mixture: ``(K - 1) + K D`` plus the covariances'.

    Called as ``n_parameters(K, D, covariance_type)`` (the library's order, also accepted as a
    keyword) or, for compatibility, ``n_parameters(covariance_type, K, D)``. ``K`` counts the
    *active* components; it may be a traced integer (inside a one-program sweep over K).

    Example:
        >>> from gmm_jax import n_parameters
        >>> n_parameters(3, 2, "full"), n_parameters(3, 2, "tied_diag")
        (17, 10)
    """
    if covariance_type is not None:
        k, d = args
        ct = covariance_type
    elif len(args) == 3 and isinstance(args[0], str):
        ct, k, d = args
    elif len(args) == 3:
        k, d, ct = args
    else:
        raise TypeError("n_parameters takes (n_components, n_features, covariance_type).")
    total = n_covariance_parameters(ct, k, d) + k * d + k - 1
    return int(total) if isinstance(total, int) else total


# ---------------------------------------------------------------------------------- expansion
def expand_precision_cholesky(prec_chol: Array, covariance_type: str, n_components: int,
                              n_features: int) -> Array:
    """Per-component factors: (K, D, D) for matrix types, (K, D) for diagonal types."""
    k, d = n_components, n_features
    ct = covariance_type
    if ct == "full" or ct == "diag":
        return prec_chol
    if ct == "tied":
        return jnp.broadcast_to(prec_chol, (k, d, d))
    if ct == "spherical":
        return jnp.broadcast_to(prec_chol[:, None], (k, d))
    if ct == "tied_diag":
        return jnp.broadcast_to(prec_chol, (k, d))
    return jnp.broadcast_to(prec_chol, (k, d))  # tied_spherical


def expand_covariances(covariances: Array, covariance_type: str, n_components: int,
                       n_features: int) -> Array:
    """Per-component covariances: (K, D, D) for matrix types, (K, D) variances otherwise."""
    return expand_precision_cholesky(covariances, covariance_type, n_components, n_features)


def log_det_cholesky(prec_chol: Array, covariance_type: str, n_features: int) -> Array:
    """``log det L`` = half the log-determinant of the precision; (K,), or () for tied types."""
    ct = covariance_type
    if ct == "full":
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    if ct == "tied":
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol)))
    if ct in ("diag", "tied_diag"):
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)  # spherical (K,), tied_spherical ()


# ---------------------------------------------------------------------------------- densities
def whiten(diff: Array, prec_chol: Array, covariance_type: str) -> Array:
    """(K, N, D) ``z_nk = L_k^T diff_nk`` for residuals ``diff`` (K, N, D) already formed."""
    k, _, d = diff.shape
    if covariance_type == "tied":
        # one (K N, D) @ (D, D) GEMM
        return jnp.dot(diff.reshape(-1, d), prec_chol,
                       precision=jax.lax.Precision.HIGHEST).reshape(diff.shape)
    pc = expand_precision_cholesky(prec_chol, covariance_type, k, d)
    if covariance_type == "full":
        return jax.lax.dot_general(diff, pc, (((2,), (1,)), ((0,), (0,))),
                                   precision=jax.lax.Precision.HIGHEST)
    return diff * pc[:, None, :]


def whitened_residuals(X: Array, means: Array, prec_chol: Array, covariance_type: str) -> Array:
    """(K, N, D) ``z_nk = L_k^T (x_n - mu_k)``, the difference taken first (nothing cancels).

    Args:
        X: (N, D) samples.
        means: (K, D).
        prec_chol: factors in the type's shape.
        covariance_type: static type name.
    """
    return whiten(X[None, :, :] - means[:, None, :], prec_chol, covariance_type)


def log_gaussian_prob(X: Array, means: Array, prec_chol: Array, covariance_type: str) -> Array:
    """(N, K) ``log N(x_n | mu_k, Sigma_k)``, exact form (residuals before products).

    Memory is O(N K D); :func:`gmm_jax.log_prob_components` chunks over rows.
    """
    d = X.shape[-1]
    z = whitened_residuals(X, means, prec_chol, covariance_type)
    maha = jnp.sum(jnp.square(z), axis=-1).T  # (N, K)
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    return -0.5 * (d * _LOG_2PI + maha) + log_det


def safe_log_weights(weights: Array) -> Array:
    """``log w`` with ``-inf`` for masked (zero-weight) components and a finite gradient."""
    pos = weights > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, weights, 1.0)), -jnp.inf)


# --------------------------------------------------------------------------------- conversions
# The conversions are jitted (the type is static): called on concrete arrays (building or
# reading parameters) each is one compiled program instead of a dozen op-by-op dispatches, each
# a small compile of its own for every new shape; inside a caller's trace they inline.
_jit_by_type = partial(jax.jit, static_argnames="covariance_type")


@_jit_by_type
def precision_cholesky_from_covariances(covariances: Array, covariance_type: str) -> Array:
    """Cholesky factor of the precision, ``L`` with ``inv(cov) = L L^T``.

    A covariance that is not positive definite (even after jitter) gives non-finite entries;
    callers inside EM detect them and repair the component.
    """
    if is_matrix(covariance_type):
        return linalg.precision_cholesky_from_covariances(covariances)[0]
    return jax.lax.rsqrt(covariances)


@_jit_by_type
def stabilised_precision_cholesky(covariances: Array, covariance_type: str) -> tuple[Array, Array]:
    """(covariances, precisions_cholesky) with jitter added where the factorisation fails."""
    if is_matrix(covariance_type):
        pc, used = linalg.precision_cholesky_from_covariances(covariances)
        return used, pc
    return covariances, jax.lax.rsqrt(covariances)


@_jit_by_type
def precision_cholesky_from_precisions(precisions: Array, covariance_type: str) -> Array:
    """Cholesky factor from precision matrices, ``L`` upper with ``P = L L^T`` (full, tied)."""
    if is_matrix(covariance_type):
        return linalg.precision_cholesky_from_precisions(precisions)
    return jnp.sqrt(precisions)


@_jit_by_type
def covariances_from_precision_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Inverse of :func:`precision_cholesky_from_covariances`."""
    if is_matrix(covariance_type):
        return linalg.covariances_from_precision_cholesky(prec_chol)
    return 1.0 / prec_chol**2


@_jit_by_type
def precisions_from_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Precision matrices (or precisions for diagonal types) from their Cholesky factor."""
    if is_matrix(covariance_type):
        return linalg.mm(prec_chol, jnp.swapaxes(prec_chol, -1, -2))
    return prec_chol**2


def identity_basis(covariance_type: str, n_components: int, n_features: int, dtype) -> Array:
    """The identity whitening in the type's precision-Cholesky shape."""
    shape = covariance_shape(covariance_type, n_components, n_features)
    if is_matrix(covariance_type):
        return jnp.broadcast_to(jnp.eye(n_features, dtype=dtype), shape)
    return jnp.ones(shape, dtype)
