"""EM for Gaussian mixtures: pure E-step and M-step, and ``fit`` as one compiled program.

The E-step returns sufficient statistics (``SuffStats``), not the N x K responsibility matrix, so
statistics of chunks, batches and devices add. ``fit`` runs initialisation, the EM loop
(``lax.while_loop`` with scikit-learn's stopping rule, or ``lax.scan`` for a fixed number of
iterations) and ``n_init`` restarts under ``vmap`` inside a single ``jax.jit``; lanes that have
converged stop changing, and the restart with the highest final lower bound is returned.
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import natural, validation
from gmm_jax.chunking import sum_over_chunks
from gmm_jax.density import log_prob_components
from gmm_jax.init import check_init, initial_responsibilities
from gmm_jax.types import FitResult, GMMParams, SuffStats

Array = jax.Array

# Budget for the largest (chunk, K, D) intermediate of the full-covariance E-step, in elements.
_CHUNK_ELEMENTS = 1 << 24


def default_shift(params: GMMParams) -> Array:
    """A point inside the data known from the parameters alone: the mixture mean."""
    return params.weights @ params.means


def stats_from_responsibilities(
    X: Array, resp: Array, covariance_type: str, *, sample_weight: Array | None = None,
    shift: Array | None = None,
) -> SuffStats:
    """Sufficient statistics of a batch under given responsibilities.

    Args:
        X: (N, D) samples.
        resp: (N, K) responsibilities (rows sum to one, or one-hot, or zero for unused rows).
        covariance_type: static type name.
        sample_weight: optional (N,) non-negative weights.
        shift: (D,) point the moments are taken about; zero if None.

    Returns:
        ``SuffStats`` with ``Nk`` (K,), ``Fk`` (K, D) and ``Sk`` by type.
    """
    chex.assert_rank([X, resp], 2)
    chex.assert_equal_shape_prefix([X, resp], 1)
    if shift is None:
        shift = jnp.zeros(X.shape[-1], X.dtype)
    Y = X - shift
    wr = resp if sample_weight is None else resp * sample_weight[:, None]
    return SuffStats(
        Nk=jnp.sum(wr, axis=0),
        Fk=wr.T @ Y,
        Sk=cov.second_moment(Y, wr, covariance_type),
        shift=shift,
        covariance_type=covariance_type,
    )


def _e_step_batch(params, X, w, shift):
    lp = log_prob_components(params, X)
    ll = jax.nn.logsumexp(lp, axis=-1)
    resp = jnp.exp(lp - ll[:, None])
    stats = stats_from_responsibilities(
        X, resp, params.covariance_type, sample_weight=w, shift=shift
    )
    return stats, jnp.sum(w * ll)


def _auto_chunk(n: int, k: int, d: int) -> int:
    per_row = max(k * d, 1)
    return int(max(256, min(n, _CHUNK_ELEMENTS // per_row)))


def e_step(
    params: GMMParams,
    X: Array,
    *,
    sample_weight: Array | None = None,
    shift: Array | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> tuple[SuffStats, Array]:
    """E-step: responsibilities under ``params`` reduced to sufficient statistics.

    Args:
        params: current mixture (K components, D features).
        X: (N, D) samples.
        sample_weight: optional (N,) weights; statistics and the log-likelihood are weighted.
        shift: (D,) point the moments are taken about; defaults to the mixture mean
            ``weights @ means`` (inside the data, known without a pass over it, identical on every
            chunk and device).
        chunk_size: process X in chunks of this many rows under ``lax.scan`` (static); memory is
            then O(chunk_size * K * D). None picks a size from the shapes.
        method: ``"auto"`` (default), ``"natural"`` or ``"direct"`` (static). ``"natural"`` computes
            the log-densities and statistics of each chunk as two GEMMs on features
            ``[quad(y), y, 1]`` (``gmm_jax.natural``; full, diag, spherical); ``"direct"`` is the
            reference form of ``gmm_jax.covariance``. ``"auto"`` picks natural for full
            covariances (whose direct form is memory-bound) and direct otherwise.

    Returns:
        (stats, mean_log_likelihood): the statistics and the weighted mean per-sample
        log-likelihood of X under ``params`` (scikit-learn's lower bound).

    Example:
        >>> import jax, jax.numpy as jnp, gmm_jax
        >>> X = jax.random.normal(jax.random.key(0), (100, 2))
        >>> p = gmm_jax.fit(jax.random.key(1), X, 2).params
        >>> stats, ll = gmm_jax.e_step(p, X)
        >>> stats.Nk.shape, stats.Fk.shape, stats.Sk.shape
        ((2,), (2, 2), (2, 2, 2))
    """
    chex.assert_rank(X, 2)
    n, d = X.shape
    k = params.means.shape[0]
    w = jnp.ones((n,), X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    if shift is None:
        shift = default_shift(params).astype(X.dtype)
    size = _auto_chunk(n, k, d) if chunk_size is None else int(chunk_size)
    _batch = _e_step_batch
    if natural.choose_method(method, params.covariance_type) == "natural":
        theta = natural.natural_parameters(params, shift).astype(X.dtype)  # once, not per chunk

        def _batch(p, x, w_, s):
            return natural.e_step_batch_theta(theta, x, w_, s, p.covariance_type)

        size = min(size, natural.SUB_ROWS)  # phi stays in cache; one scan level compiles faster

    stats, sum_ll = sum_over_chunks(lambda x, wt: _batch(params, x, wt, shift), X, w, size)
    stats = stats._replace(shift=shift)  # the chunks share one shift; it is not summed
    return stats, sum_ll / jnp.sum(stats.Nk)


def m_step(stats: SuffStats, *, reg_covar=1e-6) -> GMMParams:
    """M-step: maximum-likelihood parameters from sufficient statistics.

    ``w_k = N_k / N``, ``mu_k = F_k / N_k`` and ``Sigma_k = S_k / N_k - m_k m_k^T + reg_covar I``
    (moments about ``stats.shift``), with the tied, diagonal and spherical variants of
    ``gmm_jax.covariance``. ``N_k`` gets ``10 * eps`` added, as in scikit-learn, so an empty
    component gives finite (if useless) parameters; ``fit`` repairs such components.

    Args:
        stats: summed sufficient statistics.
        reg_covar: non-negative scalar added to the covariance diagonal.

    Returns:
        ``GMMParams`` of the covariance type recorded in ``stats``.
    """
    ct = stats.covariance_type
    chex.assert_rank(stats.Fk, 2)
    nk = stats.Nk + 10.0 * jnp.finfo(stats.Fk.dtype).eps
    rel = stats.Fk / nk[:, None]
    covariances = cov.covariances_from_stats(stats, nk, rel, reg_covar, ct)
    covariances, prec_chol = cov.stabilised_precision_cholesky(covariances, ct)
    return GMMParams(
        weights=nk / jnp.sum(nk),
        means=rel + stats.shift[None, :],
        covariances=covariances,
        precisions_cholesky=prec_chol,
        covariance_type=ct,
    )


def repair_components(params: GMMParams, stats: SuffStats) -> tuple[GMMParams, Array]:
    """Re-seeds collapsed components by splitting the heaviest healthy one.

    A component is collapsed when it has (almost) no responsibility mass or its mean, covariance
    or precision factor is not finite. Each one takes the heaviest healthy component's covariance
    and a mean offset from it by half a standard deviation per feature (alternating sides, larger
    steps for later ones); the heavy component's weight is shared equally between them.

    Returns:
        (params, n_repaired) with n_repaired the number of components re-seeded.
    """
    ct = params.covariance_type
    k, d = params.means.shape
    total = jnp.sum(stats.Nk)
    bad = (stats.Nk < 1e-8 * total) | ~jnp.all(jnp.isfinite(params.means), axis=1)
    if ct == "full":
        bad |= ~jnp.all(jnp.isfinite(params.precisions_cholesky.reshape(k, -1)), axis=1)
        bad |= ~jnp.all(jnp.isfinite(params.covariances.reshape(k, -1)), axis=1)
    elif ct in ("diag", "spherical"):
        bad |= ~jnp.all(jnp.isfinite(params.precisions_cholesky.reshape(k, -1)), axis=1)
        bad |= ~jnp.all(jnp.isfinite(params.covariances.reshape(k, -1)), axis=1)
    n_bad = jnp.sum(bad)
    heavy = jnp.argmax(jnp.where(bad, -jnp.inf, params.weights))
    if ct == "full":
        std = jnp.sqrt(jnp.diagonal(params.covariances[heavy]))
    elif ct == "tied":
        std = jnp.sqrt(jnp.diagonal(params.covariances))
    elif ct == "diag":
        std = jnp.sqrt(params.covariances[heavy])
    else:
        std = jnp.full((d,), jnp.sqrt(params.covariances[heavy]))
    rank = jnp.cumsum(bad) - 1
    sign = jnp.where(rank % 2 == 0, 1.0, -1.0) * (1 + rank // 2)
    new_means = jnp.where(
        bad[:, None], params.means[heavy][None, :] + 0.5 * sign[:, None] * std[None, :],
        params.means,
    )
    share = params.weights[heavy] / (1.0 + n_bad)
    new_w = jnp.where(bad, share, params.weights).at[heavy].set(share)
    new_w = new_w / jnp.sum(new_w)

    def take(a):
        if ct == "tied":
            return a
        mask = bad.reshape((k,) + (1,) * (a.ndim - 1))
        return jnp.where(mask, a[heavy][None], a)

    repaired = params._replace(
        weights=new_w, means=new_means, covariances=take(params.covariances),
        precisions_cholesky=take(params.precisions_cholesky),
    )
    out = jax.tree.map(lambda a, b: jnp.where(n_bad > 0, a, b), repaired, params)
    return out, n_bad.astype(jnp.int32)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def em_iterations(params, stats_fn, tol, reg_covar, *, max_iter, loop):
    """The EM loop around any E-step; used by ``fit`` and by the sharded fit.

    Each iteration: ``stats, ll = stats_fn(params)``, M-step, repair of collapsed components, and
    a guard that keeps the previous parameters (and stops) if anything became non-finite.

    Args:
        params: starting ``GMMParams``.
        stats_fn: ``params -> (SuffStats, mean log-likelihood)``, e.g. a chunked or sharded E-step.
        tol: stop when the mean log-likelihood changes by less than this (``loop="while"``).
        reg_covar: added to covariance diagonals.
        max_iter: iteration cap (static).
        loop: ``"while"`` (sklearn's stopping rule) or ``"scan"`` (exactly ``max_iter``).

    Returns:
        (params, lower_bound, history (max_iter,), n_iter, converged, n_repaired).
    """
    dtype = params.means.dtype

    def step(carry):
        params, _, lb, it, _, history, n_rep, _ = carry
        stats, ll = stats_fn(params)
        new = m_step(stats, reg_covar=reg_covar)
        new, n_bad = repair_components(new, stats)
        ok = _all_finite(new) & jnp.isfinite(ll)
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, params)
        converged = jnp.abs(ll - lb) < tol
        history = history.at[it].set(ll)
        return (new, lb, ll, it + 1, converged, history, n_rep + n_bad, ~ok)

    init = (
        params,
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
        jnp.zeros((max_iter,), dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
    )
    if loop == "scan":
        final, _ = jax.lax.scan(lambda c, _: (step(c), None), init, None, length=max_iter)
    else:
        def cond(c):
            return (c[3] < max_iter) & ~c[4] & ~c[7]

        final = jax.lax.while_loop(cond, step, init)
    params, _, lb, n_iter, converged, history, n_rep, _ = final
    history = jnp.where(jnp.arange(max_iter) < n_iter, history, lb)
    return params, lb, history, n_iter, converged, n_rep


def _em_loop(params, X, w, tol, reg_covar, *, max_iter, loop, chunk_size):
    """Runs EM from ``params`` on centred X; returns what :func:`em_iterations` returns."""
    zero_shift = jnp.zeros(X.shape[-1], X.dtype)

    def stats_fn(p):
        return e_step(p, X, sample_weight=w, shift=zero_shift, chunk_size=chunk_size)

    return em_iterations(params, stats_fn, tol, reg_covar, max_iter=max_iter, loop=loop)


def _params_from_init(Xc, w, key, reg_covar, weights_init, means_init, precisions_init, *,
                      n_components, covariance_type, init):
    """Initial parameters: responsibilities -> M-step, then user-given arrays override."""
    ct = covariance_type
    full_user = weights_init is not None and means_init is not None and precisions_init is not None
    if full_user:
        p = None
    else:
        resp = initial_responsibilities(key, Xc, n_components, init)
        stats = stats_from_responsibilities(Xc, resp, ct, sample_weight=w)
        p, _ = repair_components(m_step(stats, reg_covar=reg_covar), stats)
    if weights_init is not None:
        weights = weights_init
    else:
        weights = p.weights
    means = means_init if means_init is not None else p.means
    if precisions_init is not None:
        prec_chol = cov.precision_cholesky_from_precisions(precisions_init, ct)
        covariances = cov.covariances_from_precision_cholesky(prec_chol, ct)
    else:
        prec_chol, covariances = p.precisions_cholesky, p.covariances
    return GMMParams(weights, means, covariances, prec_chol, ct)


@partial(
    jax.jit,
    static_argnames=("n_components", "covariance_type", "max_iter", "n_init", "init", "loop",
                     "chunk_size"),
)
def _fit_program(key, X, sample_weight, tol, reg_covar, weights_init, means_init,
                 precisions_init, *, n_components, covariance_type, max_iter, n_init, init, loop,
                 chunk_size):
    n = X.shape[0]
    w = jnp.ones((n,), X.dtype) if sample_weight is None else sample_weight
    shift = (w @ X) / jnp.sum(w)
    Xc = X - shift
    m_init = None if means_init is None else means_init - shift

    def one(k):
        p0 = _params_from_init(
            Xc, w, k, reg_covar, weights_init, m_init, precisions_init,
            n_components=n_components, covariance_type=covariance_type, init=init,
        )
        return _em_loop(p0, Xc, w, tol, reg_covar, max_iter=max_iter, loop=loop,
                        chunk_size=chunk_size)

    params, lb, history, n_iter, converged, n_rep = jax.vmap(one)(jax.random.split(key, n_init))
    score = jnp.where(jnp.isfinite(lb), lb, -jnp.inf)
    best = jnp.argmax(score)
    pick = lambda a: a[best]  # noqa: E731
    best_params = jax.tree.map(pick, params)
    best_params = best_params._replace(means=best_params.means + shift)
    return FitResult(
        params=best_params,
        log_likelihood=lb[best],
        history=history[best],
        n_iter=n_iter[best],
        converged=converged[best],
        restart_log_likelihoods=lb,
        n_repaired=n_rep[best],
    )


def fit(
    key,
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    init: str = "kmeans",
    reg_covar: float = 1e-6,
    weights_init=None,
    means_init=None,
    precisions_init=None,
    sample_weight=None,
    loop: str = "while",
    chunk_size: int | None = None,
    debug: bool = False,
) -> FitResult:
    """Fits a Gaussian mixture by EM in one compiled program.

    Initialisation, the EM loop and all ``n_init`` restarts (under ``vmap``) run inside a single
    ``jax.jit``; a second call with the same shapes and static options does not retrace (``tol``
    and ``reg_covar`` are traced values). The stopping rule is scikit-learn's: stop when the
    change of the mean per-sample log-likelihood between two E-steps is below ``tol``.

    Args:
        key: ``jax.random.key`` (or an int seed).
        X: (N, D) data; ints and bools are converted to float. float64 needs
            ``jax.config.update("jax_enable_x64", True)``.
        n_components: K.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        max_iter: maximum EM iterations (static).
        tol: convergence threshold on the change of the mean log-likelihood.
        n_init: restarts, run in parallel under ``vmap``; the best lower bound wins.
        init: ``"kmeans"``, ``"k-means++"``, ``"random"``, ``"random_from_data"`` or ``"lbg"``.
        reg_covar: non-negative value added to covariance diagonals.
        weights_init: optional (K,) initial weights.
        means_init: optional (K, D) initial means.
        precisions_init: optional initial precisions, shaped by covariance type.
        sample_weight: optional (N,) non-negative sample weights.
        loop: ``"while"`` (stop at ``tol``) or ``"scan"`` (exactly ``max_iter`` iterations).
        chunk_size: rows per E-step chunk (static); None picks one that bounds memory.
        debug: check on the host that the log-likelihood history never decreases.

    Returns:
        ``FitResult(params, log_likelihood, history, n_iter, converged,
        restart_log_likelihoods, n_repaired)``.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))]
        >>> res = gmm_jax.fit(jax.random.key(0), X, 2, n_init=4)
        >>> bool(res.converged), res.params.means.shape
        (True, (2, 2))
    """
    cov.check_covariance_type(covariance_type)
    check_init(init)
    n_components, max_iter, tol, reg_covar = validation.check_em_options(
        n_components, max_iter, tol, reg_covar)
    n_init = validation.check_positive_int(n_init, "n_init")
    if loop not in ("while", "scan"):
        raise ValueError(f"loop must be 'while' or 'scan', got {loop!r}.")
    if chunk_size is not None:
        chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
    key = validation.check_key(key)
    X = validation.check_array(X, min_samples=n_components)
    n, d = X.shape
    w_init, m_init, p_init = validation.check_init_arrays(
        weights_init, means_init, precisions_init, n_components=n_components, n_features=d,
        covariance_type=covariance_type, dtype=X.dtype,
    )
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    if chunk_size is None:
        chunk_size = _auto_chunk(n, n_components, d)
    result = _fit_program(
        key, jnp.asarray(X), None if sw is None else jnp.asarray(sw),
        jnp.asarray(tol, X.dtype), jnp.asarray(reg_covar, X.dtype),
        None if w_init is None else jnp.asarray(w_init),
        None if m_init is None else jnp.asarray(m_init),
        None if p_init is None else jnp.asarray(p_init),
        n_components=n_components, covariance_type=covariance_type, max_iter=max_iter,
        n_init=n_init, init=init, loop=loop, chunk_size=chunk_size,
    )
    if debug:
        check_monotone(result.history, int(result.n_iter), allowed=int(result.n_repaired) > 0)
    return result


def check_monotone(history, n_iter: int, *, rtol: float | None = None, atol: float = 1e-9,
                   allowed: bool = False):
    """Asserts the log-likelihood history never decreases beyond float tolerance.

    Args:
        history: (T,) mean log-likelihood per iteration.
        n_iter: number of valid entries.
        rtol: relative tolerance; default scales with the dtype's epsilon.
        atol: absolute slack. With ``reg_covar > 0`` the M-step is not the exact maximiser of the
            likelihood, so near convergence it may drop by about ``reg_covar**2`` times a
            precision scale (seen: 7.5e-13 in float64); the default covers that.
        allowed: skip the check (used when components were repaired, which may lower it).

    Raises:
        AssertionError: if some step decreases by more than the tolerance.
    """
    if allowed or n_iter < 2:
        return
    h = np.asarray(history[:n_iter], dtype=np.float64)
    eps = float(jnp.finfo(jnp.asarray(history).dtype).eps)
    rtol = 100 * eps if rtol is None else rtol
    drops = h[:-1] - h[1:]
    limit = rtol * np.maximum(1.0, np.abs(h[1:])) + atol
    chex.assert_trees_all_equal(bool(np.all(drops <= limit)), True,
                                custom_message=f"log-likelihood decreased: {h.tolist()}")
