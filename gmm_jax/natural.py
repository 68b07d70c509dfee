"""Natural-parameter form of the Gaussian log-density: data features times a parameter matrix.

A Gaussian log-density is linear in fixed features of the sample. With ``y = x - shift``::

    log N(y | m_k, P_k^{-1})
        = sum_{i<=j} c_ij y_i y_j * theta^Q_k[ij]      (quadratic, c_ii = -1/2, c_ij = -1)
        + y^T (P_k m_k)                                (linear)
        + log det L_k - D/2 log 2pi - 1/2 m_k^T P_k m_k   (constant)

so for a chunk of samples with features ``phi(y) = [quad(y), y, 1]`` (``F`` columns) the whole
(chunk, K) log-density matrix is ``phi @ Theta`` with ``Theta`` (F, K) built once per E-step from
the parameters, and the weighted moments ``Nk, Fk, Sk`` are the rows of ``R^T phi`` (K, F) where
``R`` holds the weighted responsibilities. Both are dense GEMMs, and ``phi`` does not change
between iterations (the data are fixed and centred once), so EM can cache it.

Features by covariance type:

* ``full``: the products ``y_i y_(i+s mod D)``, ``s = 0..D//2`` (D(D//2+1), each unordered pair
  once, or twice on the ``s = D/2`` block for even D), ``y``, 1;
* diagonal types (``diag``, ``spherical``, ``tied_diag``, ``tied_spherical``): ``y^2``, ``y``, 1;
* ``tied``: not expanded (its fast form ``X @ L`` is already one GEMM, see ``gmm_jax.estep``).

Numerics: expanding ``(y - m)^T P (y - m)`` loses about ``eps * |L^T y|^2`` in absolute terms, so
this form is only used where :func:`gmm_jax.estep.fast_error_bound` shows that loss to be small;
``gmm_jax.estep`` falls back to the exact whitened form otherwise.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import linalg
from gmm_jax.types import GMMParams

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


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
    if covariance_type in cov.DIAGONAL_TYPES:
        return 2 * d + 1
    raise ValueError(f"no natural-parameter features for {covariance_type!r}")


def n_quadratic(covariance_type: str, d: int) -> int:
    return d * (d // 2 + 1) if covariance_type == "full" else d


def features(Y: Array, covariance_type: str) -> Array:
    """(n, F) features ``phi(y) = [quad(y), y, 1]`` of a chunk of (shifted) samples."""
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


def natural_parameters(params: GMMParams, shift: Array | None = None) -> Array:
    """(F, K) matrix ``Theta`` with ``phi(x - shift) @ Theta = log N(x | mu_k, Sigma_k)``.

    The log-weights are *not* included (add ``log w`` afterwards, so that masked components'
    ``-inf`` never enters a GEMM).

    Args:
        params: mixture of a type with features (every type but tied).
        shift: (D,) point the features are taken about (default zero).
    """
    ct = params.covariance_type
    k, d = params.means.shape
    m = params.means if shift is None else params.means - shift[None, :]
    L = params.precisions_cholesky
    log_det = jnp.broadcast_to(cov.log_det_cholesky(L, ct, d), (k,))
    if ct == "full":
        P = linalg.mm(L, jnp.swapaxes(L, -1, -2))  # (K, D, D)
        Pm = linalg.einsum("kde,ke->kd", P, m)
        rows, cols, scale = _pairs(d)
        quad = P[:, rows, cols] * jnp.asarray(scale, P.dtype)[None, :]  # (K, D(D//2+1))
    else:
        p = cov.expand_precision_cholesky(L, ct, k, d) ** 2
        Pm = p * m
        quad = -0.5 * p
    const = log_det - 0.5 * d * _LOG_2PI - 0.5 * jnp.sum(Pm * m, axis=-1)
    return jnp.concatenate([quad, Pm, const[:, None]], axis=1).T


@functools.cache
def _symmetric_index(d: int) -> np.ndarray:
    """(D, D) position in the packed quadratic features of the product ``y_i y_j``."""
    rows, cols, _ = _pairs(d)
    idx = np.zeros((d, d), np.int32)
    idx[rows, cols] = np.arange(rows.size)
    idx[cols, rows] = np.arange(rows.size)
    return idx


def unpack_moments(M: Array, covariance_type: str, d: int) -> tuple[Array, Array, Array]:
    """(Nk, Fk, Sk) from the (K, F) moment matrix ``R^T phi`` (moments about the feature shift).

    ``Sk`` is (K, D, D) for full and (K, D) (the diagonal) for the diagonal types.
    """
    nq = n_quadratic(covariance_type, d)
    quad, Fk, Nk = M[:, :nq], M[:, nq:nq + d], M[:, nq + d]
    if covariance_type == "full":
        Sk = quad[:, _symmetric_index(d)]  # a gather: XLA's CPU scatter is a slow loop
    else:
        Sk = quad
    return Nk, Fk, Sk
