"""Model selection: information criteria and choosing the number of components.

``bic = -2 log L + p log N`` and ``aic = -2 log L + 2 p`` with ``log L`` the total (weighted)
log-likelihood, ``p = n_parameters(...)`` and ``N`` the (weighted) number of samples; both are
scikit-learn's definitions. Only active components count in ``p``.

``select_n_components`` fits every candidate K, every restart and (for ``criterion="heldout"``)
every cross-validation fold in **one compiled program** per covariance type: the models are
masked to ``max(candidates)`` component slots and run side by side as one bank
(``gmm_jax.fitting.bank_program``); the folds are row weights (training rows of a fold have
weight one, its held-out rows weight zero), so every fold shares the data and its features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import estep, validation
from gmm_jax._jit import as_array
from gmm_jax.covariance import check_covariance_type, n_parameters
from gmm_jax.density import log_likelihood
from gmm_jax.em import auto_chunk
from gmm_jax.fitting import FEATURE_CACHE_BYTES, bank_program, pad_to_bucket, restart_keys
from gmm_jax.init import check_init
from gmm_jax.linalg import mm
from gmm_jax.types import FitResult, GMMParams

__all__ = ["Selection", "aic", "bic", "heldout_log_likelihood", "n_parameters",
           "select_n_components"]

CRITERIA = ("bic", "aic", "heldout")


@jax.jit
def _total_log_likelihood(params: GMMParams, X, w):
    active = params.weights > 0
    shift = mm(params.weights, jnp.where(active[:, None], params.means, 0.0))
    centred = params._replace(means=params.means - shift)
    return jnp.sum(w * log_likelihood(centred, X - shift)), jnp.sum(w)


def _total(params, X, sample_weight):
    X = validation.check_array(X, n_features=params.means.shape[-1],
                               dtype=np.dtype(params.means.dtype))
    w = validation.check_sample_weight(sample_weight, X.shape[0], X.dtype)
    w = np.ones(X.shape[0], X.dtype) if w is None else w
    total, n = _total_log_likelihood(params, as_array(X), as_array(w))
    return float(total), float(n)


def _n_params(params: GMMParams) -> int:
    k = int(np.sum(np.asarray(params.weights) > 0))
    return n_parameters(k, params.means.shape[1], params.covariance_type)


def bic(params: GMMParams, X, *, sample_weight=None) -> float:
    """Bayesian information criterion of ``params`` on ``X`` (lower is better).

    Args:
        params: fitted mixture, K components (masked ones not counted), D features.
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
            ``n_parameters``; ``n_iter`` (EM iterations of the full-data fit).
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

    def __repr__(self) -> str:
        t = self.table
        name = {"bic": "BIC", "aic": "AIC", "heldout": "held-out ll"}[self.criterion]
        lines = [f"Selection(criterion={self.criterion!r}, best_n_components="
                 f"{self.best_n_components})",
                 f"  {'K':>4} {name:>14} {'loglik/N':>12} {'params':>8} {'iters':>6} conv"]
        for i in range(len(t["n_components"])):
            mark = " <" if t["n_components"][i] == self.best_n_components else ""
            lines.append(f"  {int(t['n_components'][i]):>4} {t['criterion'][i]:>14.6g} "
                         f"{t['log_likelihood'][i]:>12.6g} {int(t['n_parameters'][i]):>8} "
                         f"{int(t['n_iter'][i]):>6} {'yes' if t['converged'][i] else 'no':>4}"
                         f"{mark}")
        return "\n".join(lines)

    __str__ = __repr__


def _fold_ids(key, n: int, n_folds: int) -> np.ndarray:
    """(N,) fold index of every row: a random permutation cut into near-equal folds."""
    perm = np.asarray(jax.random.permutation(key, n))
    ids = np.empty(n, np.int64)
    for i, part in enumerate(np.array_split(perm, n_folds)):
        ids[part] = i
    return ids


def _prepare(X, sample_weight, min_samples):
    X = validation.check_array(X, min_samples=min_samples)
    n = X.shape[0]
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    X, w = pad_to_bucket(X, np.ones(n, X.dtype) if sw is None else np.asarray(sw, X.dtype))
    return X, w, n


def _run(key, X, w_train, w_score, cands, *, covariance_type, n_init, max_iter, tol, reg_covar,
         init, method, eigenvalue_floor):
    g = w_train.shape[0] if w_train.ndim == 2 else 1
    c = len(cands)
    k_max = max(cands)
    n, d = X.shape
    dtype = X.dtype
    keys = jax.vmap(lambda i: restart_keys(jax.random.fold_in(key, i), n_init))(
        jnp.arange(c))  # (C, n_init): the same keys for every group
    keys = jnp.broadcast_to(keys.reshape(1, c * n_init), (g, c * n_init))
    n_active = jnp.broadcast_to(jnp.repeat(jnp.asarray(cands, jnp.int32), n_init),
                                (g, c * n_init))
    chunk = auto_chunk(n, k_max, d, g * c * n_init)
    out = bank_program(
        keys, as_array(X), as_array(w_train), as_array(w_score), None,
        jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype),
        None if eigenvalue_floor is None else jnp.asarray(eigenvalue_floor, dtype), n_active,
        n_components=k_max, covariance_type=covariance_type, max_iter=max_iter, init=init,
        loop="while", chunk_size=chunk, assignment="soft", method=method,
        cache_bytes=FEATURE_CACHE_BYTES,
        exact_kernel=estep.exact_kernel(covariance_type, n_init * sum(cands), d),
        active_counts=tuple(k for k in cands for _ in range(n_init)))
    return jax.tree.map(np.asarray, out), g, c


def _fit_result(out, gi, ci, n_init, k, best) -> FitResult:
    """The FitResult of group gi, candidate ci (restart ``best``), trimmed to k components."""
    j = ci * n_init + best
    p = jax.tree.map(lambda a: a[gi, j], out["params"])
    ct = p.covariance_type
    cov_trim = p.covariances if cov.is_tied(ct) else p.covariances[:k]
    pc_trim = p.precisions_cholesky if cov.is_tied(ct) else p.precisions_cholesky[:k]
    params = GMMParams(jnp.asarray(p.weights[:k]), jnp.asarray(p.means[:k]),
                       jnp.asarray(cov_trim), jnp.asarray(pc_trim), ct)
    sl = slice(ci * n_init, (ci + 1) * n_init)
    return FitResult(
        params=params,
        log_likelihood=jnp.asarray(out["lower_bound"][gi, j]),
        history=jnp.asarray(out["history"][gi, j]),
        n_iter=jnp.asarray(out["n_iter"][gi, j]),
        converged=jnp.asarray(out["converged"][gi, j]),
        restart_log_likelihoods=jnp.asarray(out["lower_bound"][gi, sl]),
        n_repaired=jnp.asarray(out["n_repaired"][gi, j]),
        fast_path=jnp.asarray(out["fast_path"]),
    )


def _best_restarts(lb: np.ndarray, c: int, n_init: int) -> np.ndarray:
    """(G, C) index of the best restart of every candidate (highest finite lower bound)."""
    scores = np.where(np.isfinite(lb), lb, -np.inf).reshape(lb.shape[0], c, n_init)
    return np.argmax(scores, axis=-1)


def heldout_log_likelihood(key, X, n_components: int, *, n_folds: int = 5, sample_weight=None,
                           **fit_kwargs) -> tuple[float, bool]:
    """Mean per-sample log-likelihood of held-out data by k-fold cross-validation.

    The rows are shuffled with ``key`` and split into ``n_folds`` folds; each fold is scored by a
    mixture fitted on the others. All folds are fitted in one compiled program (a fold is a row
    weighting of the same data).

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) data, N >= n_folds and every training split has >= K rows.
        n_components: K.
        n_folds: number of folds (>= 2).
        sample_weight: optional (N,) weights (used in fitting and in the held-out mean).
        **fit_kwargs: covariance_type, n_init, max_iter, tol, reg_covar, init, method,
            eigenvalue_floor (as in :func:`gmm_jax.fit`).

    Returns:
        (mean held-out log-likelihood per (weighted) sample, all fold fits converged).

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> X = np.random.default_rng(0).normal(size=(100, 2))
        >>> ll, ok = gmm_jax.heldout_log_likelihood(jax.random.key(0), X, 1, n_folds=3)
        >>> bool(np.isfinite(ll))
        True
    """
    sel = _select(key, X, [n_components], criterion="heldout", n_folds=n_folds,
                  sample_weight=sample_weight, want_fits=False, **fit_kwargs)
    return float(sel["criterion"][0]), bool(sel["folds_converged"][0])


def _select(key, X, candidates, *, covariance_type="full", criterion="bic", n_folds=5,
            n_init=1, max_iter=100, tol=1e-3, reg_covar=1e-6, init="kmeans", sample_weight=None,
            method="auto", eigenvalue_floor=None, want_fits=True):
    check_covariance_type(covariance_type)
    check_init(init)
    estep.check_method(method)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    key = validation.check_key(key)
    cands = [validation.check_positive_int(k, "candidate n_components") for k in candidates]
    if not cands:
        raise ValueError("candidates is empty; give at least one number of components.")
    if len(set(cands)) != len(cands):
        raise ValueError(f"candidates must be distinct, got {cands}.")
    n_init = validation.check_positive_int(n_init, "n_init")
    max_iter, tol, reg_covar, eigenvalue_floor = validation.check_loop_options(
        max_iter, tol, reg_covar, eigenvalue_floor)
    X, w, n = _prepare(X, sample_weight, max(cands))
    n_pad, d = X.shape
    kw = dict(covariance_type=covariance_type, n_init=n_init, max_iter=max_iter, tol=tol,
              reg_covar=reg_covar, init=init, method=method, eigenvalue_floor=eigenvalue_floor)
    if criterion == "heldout":
        n_folds = validation.check_positive_int(n_folds, "n_folds")
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
        if n < n_folds:
            raise ValueError(f"n_folds={n_folds} needs at least {n_folds} samples, got {n}.")
        k_perm, k_fit = jax.random.split(key)
        fold = np.full(n_pad, -1)
        fold[:n] = _fold_ids(k_perm, n, n_folds)
        real = fold >= 0
        train = np.stack([w * (fold != f) * real for f in range(n_folds)])
        test = np.stack([w * (fold == f) for f in range(n_folds)])
        smallest = int(min(np.sum((fold != f) & real) for f in range(n_folds)))
        if smallest < max(cands):
            raise ValueError(
                f"a training split has {smallest} samples, fewer than n_components="
                f"{max(cands)}; use fewer folds or more data.")
        # group 0: all data (the reported fits); groups 1..F: the folds
        w_train = np.concatenate([w[None], train]).astype(X.dtype)
        w_score = np.concatenate([w[None], test]).astype(X.dtype)
        out, g, c = _run(k_fit, X, w_train, w_score, cands, **kw)
    else:
        out, g, c = _run(key, X, w, w, cands, **kw)
    best = _best_restarts(out["lower_bound"], c, n_init)  # (G, C)
    idx = np.arange(c) * n_init
    full_score = out["score"][0, idx + best[0]]  # mean ll of the full-data fits
    n_total = float(out["score_total"][0])
    converged = out["converged"][0, idx + best[0]].astype(bool)
    n_par = np.array([n_parameters(k, d, covariance_type) for k in cands], np.int64)
    folds_ok = np.ones(c, bool)
    if criterion == "bic":
        crit = -2.0 * full_score * n_total + n_par * np.log(n_total)
    elif criterion == "aic":
        crit = -2.0 * full_score * n_total + 2.0 * n_par
    else:
        sums = np.stack([out["score"][f, idx + best[f]] * out["score_total"][f]
                         for f in range(1, g)])
        crit = sums.sum(axis=0) / float(np.sum(out["score_total"][1:]))
        folds_ok = np.all(np.stack([out["converged"][f, idx + best[f]] for f in range(1, g)]),
                          axis=0)
        converged = converged & folds_ok
    table = {
        "n_components": np.asarray(cands, np.int64),
        "criterion": np.asarray(crit, np.float64),
        "log_likelihood": np.asarray(full_score, np.float64),
        "converged": np.asarray(converged, bool),
        "n_parameters": n_par,
        "n_iter": out["n_iter"][0, idx + best[0]].astype(np.int64),
    }
    if not want_fits:
        return dict(table, folds_converged=folds_ok)
    fits = tuple(_fit_result(out, 0, ci, n_init, k, int(best[0, ci]))
                 for ci, k in enumerate(cands))
    crit_arr = table["criterion"]
    safe = np.where(np.isfinite(crit_arr), crit_arr,
                    np.inf if criterion != "heldout" else -np.inf)
    b = int(np.argmax(safe) if criterion == "heldout" else np.argmin(safe))
    return Selection(table, cands[b], fits[b], fits, criterion)


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
    method: str = "auto",
    eigenvalue_floor=None,
) -> Selection:
    """Fits a mixture for every candidate number of components and picks the best.

    Every candidate, restart and (for ``"heldout"``) fold runs in one compiled program.
    Candidate K gets the keys ``split(fold_in(key, i), n_init)`` (i its position), so it
    reproduces ``gmm_jax.fit(fold_in(key, i), X, K, n_init=...)`` run alone.

    Args:
        key: ``jax.random.key`` or int seed.
        X: (N, D) data.
        candidates: iterable of distinct positive ints (K values), each <= N.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        criterion: ``"bic"`` or ``"aic"`` (lowest wins) or ``"heldout"`` (highest k-fold held-out
            mean log-likelihood wins).
        n_folds: folds for ``"heldout"``.
        n_init, max_iter, tol, reg_covar, init, method, eigenvalue_floor: as in
            :func:`gmm_jax.fit`.
        sample_weight: optional (N,) weights.

    Returns:
        ``Selection(table, best_n_components, best_fit, fits, criterion)``; its repr is a table.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-4, 1, (150, 2)), rng.normal(4, 1, (150, 2))]
        >>> sel = gmm_jax.select_n_components(jax.random.key(0), X, [1, 2, 3])
        >>> sel.best_n_components
        2
    """
    return _select(key, X, candidates, covariance_type=covariance_type, criterion=criterion,
                   n_folds=n_folds, n_init=n_init, max_iter=max_iter, tol=tol,
                   reg_covar=reg_covar, init=init, sample_weight=sample_weight, method=method,
                   eigenvalue_floor=eigenvalue_floor)
