"""Plain, vectorised numpy EM for Gaussian mixtures: the baseline gmm_jax is compared against.

All four covariance types (full, tied, diag, spherical) with scikit-learn's conventions
(``precisions_cholesky`` is the upper factor ``L`` with ``precision = L L^T``), the same
initialisation interface as ``gmm_jax.fit`` (``weights_init``, ``means_init``, ``precisions_init``)
and the same stopping rule: stop when the change of the mean per-sample log-likelihood between two
E-steps is below ``tol`` (``tol=0`` runs exactly ``max_iter`` iterations). Like gmm_jax, the
reported lower bound is the mean log-likelihood of the last E-step, and the returned parameters
are those of the M-step that followed it. Computation stays in the dtype of ``X``.

What it deliberately does not do (gmm_jax does): chunking over N, repair of collapsed
components, restarts.

Example:
    >>> import numpy as np
    >>> from benchmarks.numpy_em import fit
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))]
    >>> res = fit(X, 2, means_init=np.array([[-1.0, 0], [1, 0]]), max_iter=50)
    >>> bool(res.converged)
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.linalg import solve_triangular

_LOG_2PI = math.log(2.0 * math.pi)


class NumpyGMM(NamedTuple):
    """Parameters: weights (K,), means (K, D), covariances and precisions_cholesky by type."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str


class NumpyFitResult(NamedTuple):
    """Outcome of :func:`fit` (mirrors ``gmm_jax.FitResult``)."""

    params: NumpyGMM
    log_likelihood: float
    history: np.ndarray
    n_iter: int
    converged: bool


def precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Upper factor ``L`` with ``inv(cov) = L L^T`` (full, tied); ``1/sqrt(var)`` otherwise."""
    if covariance_type == "full":
        out = np.empty_like(covariances)
        eye = np.eye(covariances.shape[-1], dtype=covariances.dtype)
        for k, c in enumerate(covariances):
            chol = np.linalg.cholesky(c)
            out[k] = solve_triangular(chol, eye, lower=True).T
        return out
    if covariance_type == "tied":
        chol = np.linalg.cholesky(covariances)
        return solve_triangular(chol, np.eye(len(covariances), dtype=covariances.dtype),
                                lower=True).T
    return 1.0 / np.sqrt(covariances)


def _chol_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("full", "tied"):
        flipped = np.flip(precisions, axis=(-1, -2))
        return np.flip(np.linalg.cholesky(flipped), axis=(-1, -2)).copy()
    return np.sqrt(precisions)


def _covariances_from_chol(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("full", "tied"):
        prec = prec_chol @ np.swapaxes(prec_chol, -1, -2)
        return np.linalg.inv(prec)
    return 1.0 / prec_chol**2


def log_prob_components(params: NumpyGMM, X: np.ndarray) -> np.ndarray:
    """(N, K) ``log w_k + log N(x_n | mu_k, Sigma_k)``.

    Full: one (N, D) @ (D, D) GEMM per component (a loop over K, no N x K x D array).
    Tied: one GEMM. Diag and spherical: distance expansions as GEMMs.
    """
    ct = params.covariance_type
    n, d = X.shape
    m, L = params.means, params.precisions_cholesky
    if ct == "full":
        maha = np.empty((n, len(m)), X.dtype)
        for k in range(len(m)):
            y = X @ L[k] - m[k] @ L[k]
            maha[:, k] = np.einsum("nd,nd->n", y, y)
        log_det = np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    elif ct == "tied":
        xl, ml = X @ L, m @ L
        maha = (np.einsum("nd,nd->n", xl, xl)[:, None] - 2.0 * xl @ ml.T
                + np.einsum("kd,kd->k", ml, ml)[None, :])
        log_det = np.sum(np.log(np.diag(L)))
    elif ct == "diag":
        p = L**2
        maha = (X**2) @ p.T - 2.0 * X @ (m * p).T + np.sum(m**2 * p, axis=1)[None, :]
        log_det = np.sum(np.log(L), axis=1)
    else:
        p = L**2
        maha = (np.einsum("nd,nd->n", X, X)[:, None] * p[None, :] - 2.0 * (X @ m.T) * p[None, :]
                + (np.sum(m**2, axis=1) * p)[None, :])
        log_det = d * np.log(L)
    return -0.5 * (d * _LOG_2PI + maha) + log_det + np.log(params.weights)[None, :]


def e_step(params: NumpyGMM, X: np.ndarray) -> tuple[float, np.ndarray]:
    """Returns (mean log-likelihood, (N, K) responsibilities), normalised with log-sum-exp."""
    lp = log_prob_components(params, X)
    mx = lp.max(axis=1, keepdims=True)
    ll = mx[:, 0] + np.log(np.sum(np.exp(lp - mx), axis=1))
    return float(np.mean(ll)), np.exp(lp - ll[:, None])


def m_step(X: np.ndarray, resp: np.ndarray, covariance_type: str, reg_covar: float) -> NumpyGMM:
    """Maximum-likelihood parameters from responsibilities (scikit-learn's formulas)."""
    n, d = X.shape
    nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
    means = (resp.T @ X) / nk[:, None]
    eye = np.eye(d, dtype=X.dtype)
    if covariance_type == "full":
        cov = np.empty((len(nk), d, d), X.dtype)
        for k in range(len(nk)):
            diff = X - means[k]
            cov[k] = (resp[:, k, None] * diff).T @ diff / nk[k] + reg_covar * eye
    elif covariance_type == "tied":
        cov = (X.T @ X - (nk * means.T) @ means) / nk.sum() + reg_covar * eye
    else:
        avg_x2 = (resp.T @ (X * X)) / nk[:, None]
        var = avg_x2 - means**2 + reg_covar
        cov = var if covariance_type == "diag" else var.mean(axis=1)
    cov = cov.astype(X.dtype)
    return NumpyGMM((nk / nk.sum()).astype(X.dtype), means, cov,
                    precision_cholesky(cov, covariance_type), covariance_type)


def fit(X, n_components: int, *, covariance_type: str = "full", max_iter: int = 100,
        tol: float = 1e-3, reg_covar: float = 1e-6, weights_init=None, means_init=None,
        precisions_init=None, seed: int = 0) -> NumpyFitResult:
    """EM from given (or random-from-data) initial parameters.

    Args:
        X: (N, D) float array; computation stays in its dtype.
        n_components: K.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        max_iter: maximum number of EM iterations.
        tol: stop when the change of the mean log-likelihood is below ``tol``.
        reg_covar: added to covariance diagonals.
        weights_init: optional (K,) weights (uniform if None).
        means_init: optional (K, D) means (K random samples if None).
        precisions_init: optional precisions shaped by type (one M-step on hard assignments
            to the nearest initial mean if None).
        seed: seed for the random choice of initial means.

    Returns:
        ``NumpyFitResult(params, log_likelihood, history, n_iter, converged)``.
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    dt = X.dtype
    n, d = X.shape
    k = n_components
    rng = np.random.default_rng(seed)
    means = (X[rng.choice(n, k, replace=False)] if means_init is None
             else np.asarray(means_init, dt))
    weights = np.full(k, 1.0 / k, dt) if weights_init is None else np.asarray(weights_init, dt)
    if precisions_init is None:
        d2 = (X**2).sum(1)[:, None] - 2 * X @ means.T + (means**2).sum(1)[None, :]
        resp = np.eye(k, dtype=dt)[np.argmin(d2, axis=1)]
        p0 = m_step(X, resp, covariance_type, reg_covar)
        chol, covs = p0.precisions_cholesky, p0.covariances
    else:
        chol = _chol_from_precisions(np.asarray(precisions_init, dt), covariance_type)
        covs = _covariances_from_chol(chol, covariance_type)
    params = NumpyGMM(weights, means, covs, chol, covariance_type)
    history = np.zeros(max_iter)
    lb, converged, it = -np.inf, False, 0
    for it in range(1, max_iter + 1):
        ll, resp = e_step(params, X)
        params = m_step(X, resp, covariance_type, reg_covar)
        history[it - 1] = ll
        change, lb = ll - lb, ll
        if abs(change) < tol:
            converged = True
            break
    history[it:] = lb
    return NumpyFitResult(params, lb, history, it, converged)
