"""Model selection: information criteria and choosing the number of components.

``bic = -2 log L + p log N`` and ``aic = -2 log L + 2 p`` with ``log L`` the total (weighted)
log-likelihood, ``p = n_parameters(...)`` and ``N`` the (weighted) number of samples; both are
scikit-learn's definitions. ``select_n_components`` fits every candidate K and ranks them by BIC,
AIC or k-fold held-out log-likelihood.

Each candidate K is its own compiled fit (restarts under ``vmap`` inside it). Fitting all K in one
program by padding to the largest K and masking components is *not* done: the k-means
initialisation and the component repair of the core are not mask-aware, so padded results would
not equal separate fits exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import validation
from gmm_jax.covariance import check_covariance_type, n_parameters
from gmm_jax.density import log_likelihood
from gmm_jax.em import fit
from gmm_jax.types import FitResult, GMMParams

__all__ = ["Selection", "aic", "bic", "heldout_log_likelihood", "n_parameters",
           "select_n_components"]

CRITERIA = ("bic", "aic", "heldout")


@jax.jit
def _total_log_likelihood(params: GMMParams, X, w):
    shift = params.weights @ params.means
    centred = params._replace(means=params.means - shift)
    return jnp.sum(w * log_likelihood(centred, X - shift)), jnp.sum(w)


def _total(params, X, sample_weight):
    X = validation.check_array(X, n_features=params.means.shape[-1],
                               dtype=np.dtype(params.means.dtype))
    w = validation.check_sample_weight(sample_weight, X.shape[0], X.dtype)
    w = np.ones(X.shape[0], X.dtype) if w is None else w
    total, n = _total_log_likelihood(params, jnp.asarray(X), jnp.asarray(w))
    return float(total), float(n)


def _n_params(params: GMMParams) -> int:
    return n_parameters(params.covariance_type, params.means.shape[0], params.means.shape[1])


def bic(params: GMMParams, X, *, sample_weight=None) -> float:
    """Bayesian information criterion of ``params`` on ``X`` (lower is better).

    Args:
        params: fitted mixture, K components, D features.
        X: (N, D) data.
        sample_weight: optional (N,) weights; ``N`` becomes their sum.

    Returns:
        ``-2 * sum_n w_n log p(x_n) + n_parameters * log(sum_n w_n)``.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> p = gmm_jax.fit(jax.random.key(0), X, 1).params
        >>> gmm_jax.bic(p, X) > gmm_jax.aic(p, X)
        True
    """
    total, n = _total(params, X, sample_weight)
    return -2.0 * total + _n_params(params) * float(np.log(n))


def aic(params: GMMParams, X, *, sample_weight=None) -> float:
    """Akaike information criterion of ``params`` on ``X`` (lower is better).

    Args:
        params: fitted mixture, K components, D features.
        X: (N, D) data.
        sample_weight: optional (N,) weights.

    Returns:
        ``-2 * sum_n w_n log p(x_n) + 2 * n_parameters``.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> p = gmm_jax.fit(jax.random.key(0), X, 1).params
        >>> bool(abs(gmm_jax.aic(p, X) - gmm_jax.bic(p, X) + 5 * (np.log(200) - 2)) < 1e-6)
        True
    """
    total, _ = _total(params, X, sample_weight)
    return -2.0 * total + 2.0 * _n_params(params)


class Selection(NamedTuple):
    """Outcome of :func:`select_n_components`.

    Attributes:
        table: dict of equal-length numpy columns, one row per candidate (``pandas.DataFrame(
            table)`` makes it a frame): ``n_components``; ``criterion`` (BIC or AIC, lower is
            better, or the mean held-out log-likelihood per sample, higher is better);
            ``log_likelihood`` (mean per-sample log-likelihood of the fit on all data);
            ``converged`` (the full-data fit, and for "heldout" every fold fit, converged);
            ``n_parameters``.
        best_n_components: the chosen K.
        best_fit: ``FitResult`` of the chosen K on all the data.
        fits: ``FitResult`` on all the data for every candidate, in table order.
        criterion: the criterion's name.
    """

    table: dict
    best_n_components: int
    best_fit: FitResult
    fits: tuple
    criterion: str


def _fold_indices(key, n: int, n_folds: int) -> list[np.ndarray]:
    perm = np.asarray(jax.random.permutation(key, n))
    return np.array_split(perm, n_folds)


def heldout_log_likelihood(key, X, n_components: int, *, n_folds: int = 5, sample_weight=None,
                           **fit_kwargs) -> tuple[float, bool]:
    """Mean per-sample log-likelihood of held-out data by k-fold cross-validation.

    The rows are shuffled with ``key`` and split into ``n_folds`` folds; each fold is scored by a
    mixture fitted on the others. Fold sizes differ by at most one row, so at most two programs
    are compiled per K.

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) data, N >= n_folds and every training split has >= K rows.
        n_components: K.
        n_folds: number of folds (>= 2).
        sample_weight: optional (N,) weights (used in fitting and in the held-out mean).
        **fit_kwargs: passed to :func:`gmm_jax.fit` (covariance_type, n_init, max_iter, ...).

    Returns:
        (mean held-out log-likelihood per (weighted) sample, all fold fits converged).

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> X = np.random.default_rng(0).normal(size=(100, 2))
        >>> ll, ok = gmm_jax.heldout_log_likelihood(jax.random.key(0), X, 1, n_folds=3)
        >>> bool(np.isfinite(ll))
        True
    """
    key = validation.check_key(key)
    n_folds = validation.check_positive_int(n_folds, "n_folds")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    X = validation.check_array(X)
    n = X.shape[0]
    if n < n_folds:
        raise ValueError(f"n_folds={n_folds} needs at least {n_folds} samples, got {n}.")
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    w = np.ones(n, X.dtype) if sw is None else sw
    k_perm, k_fit = jax.random.split(key)
    folds = _fold_indices(k_perm, n, n_folds)
    total, weight, ok = 0.0, 0.0, True
    for i, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test, assume_unique=True)
        if train.shape[0] < n_components:
            raise ValueError(
                f"a training split has {train.shape[0]} samples, fewer than n_components="
                f"{n_components}; use fewer folds or more data."
            )
        res = fit(jax.random.fold_in(k_fit, i), X[train], n_components,
                  sample_weight=None if sw is None else sw[train], **fit_kwargs)
        t, _ = _total(res.params, X[test], w[test])
        total += t
        weight += float(np.sum(w[test]))
        ok &= bool(res.converged)
    return total / weight, ok


def select_n_components(
    key,
    X,
    candidates,
    *,
    covariance_type: str = "full",
    criterion: str = "bic",
    n_folds: int = 5,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    sample_weight=None,
) -> Selection:
    """Fits a mixture for every candidate number of components and picks the best.

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) data.
        candidates: iterable of positive ints (K values), each <= N.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        criterion: ``"bic"`` or ``"aic"`` (lowest wins) or ``"heldout"`` (highest k-fold held-out
            mean log-likelihood wins).
        n_folds: folds for ``"heldout"``.
        n_init, max_iter, tol, reg_covar, init: passed to :func:`gmm_jax.fit`.
        sample_weight: optional (N,) weights.

    Returns:
        ``Selection(table, best_n_components, best_fit, fits, criterion)``.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-4, 1, (150, 2)), rng.normal(4, 1, (150, 2))]
        >>> sel = gmm_jax.select_n_components(jax.random.key(0), X, [1, 2, 3])
        >>> sel.best_n_components
        2
    """
    check_covariance_type(covariance_type)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    key = validation.check_key(key)
    cands = [validation.check_positive_int(k, "candidate n_components") for k in candidates]
    if not cands:
        raise ValueError("candidates is empty; give at least one number of components.")
    if len(set(cands)) != len(cands):
        raise ValueError(f"candidates must be distinct, got {cands}.")
    X = validation.check_array(X, min_samples=max(cands))
    sw = validation.check_sample_weight(sample_weight, X.shape[0], X.dtype)
    fit_kwargs = dict(covariance_type=covariance_type, n_init=n_init, max_iter=max_iter, tol=tol,
                      reg_covar=reg_covar, init=init)
    rows = {"n_components": [], "criterion": [], "log_likelihood": [], "converged": [],
            "n_parameters": []}
    fits = []
    for i, k in enumerate(cands):
        kf = jax.random.fold_in(key, i)
        res = fit(kf, X, k, sample_weight=sw, **fit_kwargs)
        ok = bool(res.converged)
        if criterion == "bic":
            value = bic(res.params, X, sample_weight=sw)
        elif criterion == "aic":
            value = aic(res.params, X, sample_weight=sw)
        else:
            value, folds_ok = heldout_log_likelihood(
                jax.random.fold_in(kf, 1), X, k, n_folds=n_folds, sample_weight=sw, **fit_kwargs)
            ok &= folds_ok
        total, n = _total(res.params, X, sw)
        rows["n_components"].append(k)
        rows["criterion"].append(value)
        rows["log_likelihood"].append(total / n)
        rows["converged"].append(ok)
        rows["n_parameters"].append(n_parameters(covariance_type, k, X.shape[1]))
        fits.append(res)
    table = {
        "n_components": np.asarray(rows["n_components"], np.int64),
        "criterion": np.asarray(rows["criterion"], np.float64),
        "log_likelihood": np.asarray(rows["log_likelihood"], np.float64),
        "converged": np.asarray(rows["converged"], bool),
        "n_parameters": np.asarray(rows["n_parameters"], np.int64),
    }
    crit = table["criterion"]
    safe = np.where(np.isfinite(crit), crit, np.inf if criterion != "heldout" else -np.inf)
    best = int(np.argmax(safe) if criterion == "heldout" else np.argmin(safe))
    return Selection(table, cands[best], fits[best], tuple(fits), criterion)
