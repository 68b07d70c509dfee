"""Fast E-step in natural parameters: one GEMM for the log-densities, one for the statistics.

A Gaussian log-density is linear in fixed features of the sample. With ``y = x - shift``::

    log w_k + log N(y | m_k, P_k^{-1})
        = sum_{i<=j} c_ij y_i y_j * theta^Q_k[ij]      (quadratic, c_ii = -1/2, c_ij = -1)
        + y^T (P_k m_k)                                (linear)
        + log w_k + log det L_k - D/2 log 2pi - 1/2 m_k^T P_k m_k   (constant)

so for a chunk of samples with features ``phi(y) = [quad(y), y, 1]`` (``F`` columns) the whole
(chunk, K) log-density matrix is ``phi @ Theta`` with ``Theta`` (F, K) built once per E-step from
the parameters, and the weighted moments ``Nk, Fk, Sk`` are the rows of ``R^T phi`` (K, F) where
``R`` holds the weighted responsibilities. Both are dense GEMMs that run near the machine's matmul
peak; the direct forms (a (chunk, K, D) intermediate for the Mahalanobis distances, a broadcast
product for ``Sk``) are memory-bound.

Features by covariance type (``F`` columns):

* ``full``: the products ``y_i y_(i+s mod D)``, ``s = 0..D//2`` (D(D//2+1), each unordered pair
  once, or twice on the ``s = D/2`` block for even D), ``y``, 1;
* ``diag``: ``y^2`` (D), ``y``, 1;
* ``spherical``: ``|y|^2`` (1), ``y``, 1 (the statistics keep the per-feature ``y^2`` for Sk);
* ``tied``: not expanded here (the direct form ``X @ L`` is already one GEMM).

Numerics: expanding ``(y - m)^T P (y - m)`` loses about ``eps * (|L^T y| + |L^T m|)^2`` in absolute
terms (float32 cancellation), so ``fit`` centres the data first (``shift`` = weighted mean) and the
features are built on ``y = x - shift``. ``choose_method`` keeps the direct form wherever that
error could matter: the expansion is used for float32 and float64 alike, but callers can force
``method="direct"`` (the reference implementation in ``gmm_jax.covariance``, which tests compare
against). ``phi`` is only ever built for one chunk of rows at a time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax.chunking import sum_over_chunks
from gmm_jax.types import GMMParams, SuffStats

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)

METHODS = ("auto", "natural", "direct")
NATURAL_TYPES = ("full", "diag", "spherical")


def choose_method(method: str, covariance_type: str) -> str:
    """Resolves ``method`` ("auto", "natural" or "direct") for a covariance type (static)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if covariance_type not in NATURAL_TYPES:
        return "direct"
    if method == "auto":
        # diag and spherical direct forms are already GEMMs ((N, D) @ (D, K)); the expansion
        # pays off for full covariances, whose direct form is memory-bound.
        return "natural" if covariance_type == "full" else "direct"
    return method


def _pairs(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs ``(i, (i + s) mod D)`` for ``s = 0 .. D//2``, and the natural-parameter scale.

    Every unordered pair ``{i, j}`` appears once, except for even D the ``s = D/2`` block, where
    each pair appears twice; the scale (-1/2 on the diagonal and on that block, -1 elsewhere)
    makes ``sum scale * P_ij y_i y_j`` equal ``-1/2 y^T P y`` either way. This "wrapped diagonal"
    layout lets the features be built from rolled copies of ``y`` (``y * roll(y, -s)``), which XLA
    vectorises; an upper-triangle gather is about 20-30 % slower on CPU.
    """
    rows = np.tile(np.arange(d), d // 2 + 1)
    shifts = np.repeat(np.arange(d // 2 + 1), d)
    cols = (rows + shifts) % d
    half = (shifts == 0) | ((d % 2 == 0) & (shifts == d // 2))
    return rows, cols, np.where(half, -0.5, -1.0)


def n_features(covariance_type: str, d: int) -> int:
    """Number of feature columns ``F`` of ``phi`` for a covariance type."""
    if covariance_type == "full":
        return d * (d // 2 + 1) + d + 1
    if covariance_type == "diag":
        return 2 * d + 1
    if covariance_type == "spherical":
        return 2 * d + 1
    raise ValueError(f"no natural-parameter features for {covariance_type!r}")


def features(Y: Array, covariance_type: str) -> Array:
    """(n, F) features ``phi(y) = [quad(y), y, 1]`` of a chunk of (shifted) samples.

    For ``spherical`` the quadratic block is ``y^2`` per feature (D columns), so that the same
    features give the diagonal second moments the M-step needs; its natural parameters repeat
    the one precision across the D columns.
    """
    n, d = Y.shape
    one = jnp.ones((n, 1), Y.dtype)
    if covariance_type == "full":
        # Row s of the (S, D+1) view of tile(y) starts at y[s mod D]: rolled copies without a
        # gather or an S-way concatenate (both compile or run slower on CPU).
        s = d // 2 + 1
        Z = jnp.tile(Y, (1, s + 1))[:, : s * (d + 1)].reshape(n, s, d + 1)[:, :, :d]
        quad = (Y[:, None, :] * Z).reshape(n, s * d)
    else:
        quad = jnp.square(Y)
    return jnp.concatenate([quad, Y, one], axis=1)


def natural_parameters(params: GMMParams, shift: Array) -> Array:
    """(F, K) matrix ``Theta`` with ``phi(x - shift) @ Theta = log w_k + log N(x | mu_k, Sigma_k)``.

    Args:
        params: mixture (full, diag or spherical).
        shift: (D,) point the features are taken about.
    """
    ct = params.covariance_type
    k, d = params.means.shape
    m = params.means - shift[None, :]
    L = params.precisions_cholesky
    log_det = cov.log_det_cholesky(L, ct, d)
    if ct == "full":
        P = L @ jnp.swapaxes(L, -1, -2)  # (K, D, D)
        Pm = jnp.einsum("kde,ke->kd", P, m)
        rows, cols, scale = _pairs(d)
        quad = P[:, rows, cols] * jnp.asarray(scale, P.dtype)[None, :]  # (K, D(D//2+1))
    else:
        p = L**2 if ct == "diag" else jnp.broadcast_to((L**2)[:, None], (k, d))
        Pm = p * m
        quad = -0.5 * p
    const = (jnp.log(params.weights) + log_det - 0.5 * d * _LOG_2PI
             - 0.5 * jnp.sum(Pm * m, axis=-1))
    return jnp.concatenate([quad, Pm, const[:, None]], axis=1).T


def stats_from_moments(M: Array, shift: Array, covariance_type: str) -> SuffStats:
    """``SuffStats`` from the (K, F) moment matrix ``R^T phi``.

    Args:
        M: (K, F) weighted feature moments (quadratic block, first order, zeroth order).
        shift: (D,) the point the features were taken about.
        covariance_type: ``"full"``, ``"diag"`` or ``"spherical"``.
    """
    d = shift.shape[-1]
    nq = d * (d // 2 + 1) if covariance_type == "full" else d
    quad, Fk, Nk = M[:, :nq], M[:, nq:nq + d], M[:, nq + d]
    if covariance_type == "full":
        k = M.shape[0]
        rows, cols, _ = _pairs(d)
        Sk = jnp.zeros((k, d, d), M.dtype).at[:, rows, cols].set(quad).at[:, cols, rows].set(quad)
    else:
        Sk = quad
    return SuffStats(Nk=Nk, Fk=Fk, Sk=Sk, shift=shift, covariance_type=covariance_type)


def e_step_batch(params: GMMParams, X: Array, w: Array, shift: Array) -> tuple[SuffStats, Array]:
    """Statistics and weighted log-likelihood sum of one chunk via two GEMMs.

    Same contract as the direct ``_e_step_batch`` of ``gmm_jax.em``: returns
    ``(SuffStats about shift, sum_n w_n log p(x_n))``.

    Args:
        params: mixture (full, diag or spherical).
        X: (n, D) samples of the chunk.
        w: (n,) sample weights (zero for padding rows).
        shift: (D,) point the statistics (and features) are taken about.
    """
    theta = natural_parameters(params, shift).astype(X.dtype)
    return e_step_batch_theta(theta, X, w, shift, params.covariance_type)


def e_step_batch_theta(theta: Array, X: Array, w: Array, shift: Array,
                       covariance_type: str) -> tuple[SuffStats, Array]:
    """As :func:`e_step_batch` with ``Theta`` precomputed (hoisted out of the chunk loop).

    Rows are processed in sub-chunks of at most ``SUB_ROWS`` so that ``phi`` (SUB_ROWS, F) stays
    in cache between the two GEMMs; the (K, F) moments accumulate and are unpacked once.
    """
    n, d = X.shape
    Y = X - shift[None, :]
    M, sum_ll = sum_over_chunks(lambda y, wt: _moments(theta, y, wt, covariance_type), Y, w,
                                SUB_ROWS)
    return stats_from_moments(M, shift, covariance_type), sum_ll


# Rows per inner GEMM pair: phi (SUB_ROWS, F) is ~4.6 MB at D=32 in float32 and stays in cache.
SUB_ROWS = 2048


def _moments(theta: Array, Y: Array, w: Array, covariance_type: str) -> tuple[Array, Array]:
    """(K, F) moments ``(w * resp)^T phi`` and ``sum w * log p`` of shifted samples ``Y``."""
    phi = features(Y, covariance_type)
    lp = phi @ theta
    ll = jax.nn.logsumexp(lp, axis=-1)
    resp = jnp.exp(lp - ll[:, None]) * w[:, None]
    return resp.T @ phi, jnp.sum(w * ll)
