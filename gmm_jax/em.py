"""EM for Gaussian mixtures: the public E-step and M-step, and the EM loop over a bank of models.

The E-step returns sufficient statistics (``SuffStats``), not the N x K responsibility matrix, so
statistics of chunks, batches and devices add. The loop (:func:`em_iterations`) runs a *bank* of
R models at once (restarts, the candidates of a sweep over K, the classes of a classifier):
parameters carry a leading model axis, every iteration computes one E-step for all of them
(shared per-row work and wide GEMMs), and ``lax.while_loop`` stops when every model has met the
tolerance; models that have converged stop changing. Each iteration chooses the E-step form for
the whole bank with one ``lax.cond`` on the computed error bound (``gmm_jax.estep``).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import estep
from gmm_jax import kmeans as km
from gmm_jax._jit import cpu_tuned_jit
from gmm_jax.chunking import sum_over_chunks
from gmm_jax.linalg import mm
from gmm_jax.mstep import m_step, repair_components
from gmm_jax.types import GMMParams, SuffStats

Array = jax.Array

__all__ = ["check_monotone", "e_step", "em_iterations", "m_step", "repair_components",
           "stats_from_responsibilities", "stats_from_seed_rows"]

# Budget for the largest per-chunk intermediate of the E-step, (models, K, chunk, D), in elements.
_CHUNK_ELEMENTS = 1 << 21
_MIN_CHUNK, _MAX_CHUNK = 256, 4096


def auto_chunk(n: int, k: int, d: int, n_models: int = 1) -> int:
    """Rows per E-step chunk: a power of two bounding the (models, K, chunk, D) intermediates."""
    per_row = max(k * d * n_models, 1)
    size = _CHUNK_ELEMENTS // per_row
    size = 1 << max(0, int(size).bit_length() - 1)
    return int(max(_MIN_CHUNK, min(_MAX_CHUNK, size)))


def default_shift(params: GMMParams) -> Array:
    """A point inside the data known from the parameters alone: the mixture mean."""
    return mm(params.weights, params.means)


def centre(params: GMMParams, shift: Array) -> GMMParams:
    return params._replace(means=params.means - shift)


# -------------------------------------------------------------------------------- statistics
def stats_from_responsibilities(
    X: Array, resp: Array, covariance_type: str, *, sample_weight: Array | None = None,
    shift: Array | None = None, chunk_size: int | None = None,
) -> SuffStats:
    """Sufficient statistics of a batch under given responsibilities.

    With ``shift=None`` (the default) the moments are taken in two passes about the
    responsibility-weighted means, so the M-step that follows is exact in float32 however far the
    components sit from the origin; with a ``shift`` they are plain moments about that point.

    Args:
        X: (N, D) samples.
        resp: (N, K) responsibilities (rows sum to one, or one-hot, or zero for unused rows).
        covariance_type: static type name.
        sample_weight: optional (N,) non-negative weights.
        shift: optional (D,) or (K, D) point(s) the moments are taken about.
        chunk_size: rows per chunk of the second pass (static).

    Returns:
        ``SuffStats`` with the identity basis.
    """
    chex.assert_rank([X, resp], 2)
    chex.assert_equal_shape_prefix([X, resp], 1)
    n, d = X.shape
    k = resp.shape[1]
    w = jnp.ones((n,), X.dtype) if sample_weight is None else sample_weight.astype(X.dtype)
    wr = resp * w[:, None]
    if shift is None:
        nk = jnp.sum(wr, axis=0)
        shift = mm(wr.T, X) / jnp.maximum(nk, jnp.finfo(X.dtype).tiny)[:, None]
    shift = jnp.broadcast_to(shift, (k, d))
    ct = covariance_type
    size = auto_chunk(n, k, d) if chunk_size is None else chunk_size

    def fn(x, wt, r):
        rw = (r * wt[:, None]).T  # (K, n)
        diff = x[None, :, :] - shift[:, None, :]  # (K, n, D)
        # batched dots, not sums over the middle axis (slow in XLA's CPU backend)
        batched = (((1,), (1,)), ((0,), (0,)))
        Fk = jax.lax.dot_general(rw, diff, batched, precision=estep.HIGHEST)
        if ct == "full":
            Sk = jax.lax.dot_general(diff * rw[:, :, None], diff, batched,
                                     precision=estep.HIGHEST)
        elif ct == "tied":
            Sk = jnp.dot((diff * rw[:, :, None]).reshape(-1, d).T, diff.reshape(-1, d),
                         precision=estep.HIGHEST)
        else:
            Sk = jax.lax.dot_general(rw, jnp.square(diff), batched, precision=estep.HIGHEST)
        return jnp.sum(rw, axis=1), Fk, Sk

    Nk, Fk, Sk = sum_over_chunks(fn, X, w, size, resp)
    return SuffStats(Nk, Fk, Sk, shift, ct, cov.identity_basis(ct, k, d, X.dtype))


def stats_from_seed_rows(X: Array, idx: Array, covariance_type: str, *,
                         sample_weight: Array | None = None, n_active=None) -> SuffStats:
    """The statistics :func:`stats_from_responsibilities` gives for responsibilities one-hot
    on one seed row per component, from those K rows alone (O(K D) instead of O(N K D^2)).

    Each active component k has the weight of row ``idx[k]``, its mean at that row and zero
    scatter about it (exactly what the dense two-pass moments give); inactive slots are empty.

    Args:
        X: (N, D) samples.
        idx: (K,) seed row of each component (``gmm_jax.init.seed_rows``).
        covariance_type: static type name.
        sample_weight: optional (N,) non-negative weights.
        n_active: optional number of active components (the first ``n_active`` slots).

    Returns:
        ``SuffStats`` with the identity basis.
    """
    k = idx.shape[0]
    d = X.shape[1]
    active = km._active_mask(k, n_active)
    nk = jnp.where(active, km._weights(X, sample_weight)[idx], 0.0)
    shift = jnp.where(active[:, None], X[idx], 0.0)
    ct = covariance_type
    s_shape = (k, d, d) if ct == "full" else (d, d) if ct == "tied" else (k, d)
    return SuffStats(nk, jnp.zeros((k, d), X.dtype), jnp.zeros(s_shape, X.dtype), shift, ct,
                     cov.identity_basis(ct, k, d, X.dtype))


@cpu_tuned_jit(static_argnames=("chunk_size", "method", "assignment"))
def e_step(
    params: GMMParams,
    X: Array,
    *,
    sample_weight: Array | None = None,
    shift: Array | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
    labels: Array | None = None,
    assignment: str = "soft",
) -> tuple[SuffStats, Array]:
    """E-step: responsibilities under ``params`` reduced to sufficient statistics.

    Pure and traceable (works under ``jit``, ``vmap`` and ``grad``).

    Args:
        params: current mixture (K components, D features).
        X: (N, D) samples.
        sample_weight: optional (N,) weights; statistics and the log-likelihood are weighted.
        shift: (D,) point the data are centred on before the fast form's expansions; defaults to
            the mixture mean ``weights @ means`` (inside the data, known without a pass over it,
            identical on every chunk and device).
        chunk_size: process X in chunks of this many rows under ``lax.scan`` (static); memory is
            then O(chunk_size * K * D). None picks a size from the shapes.
        method: ``"auto"`` (default: the fast expanded form when its error bound allows, else the
            exact form; the exact form on backends other than the CPU, see
            ``estep.AUTO_FAST_BACKENDS``), ``"exact"`` or ``"fast"`` (static); ``"whitened"``
            and ``"expanded64"`` name the two exact kernels (see ``gmm_jax.estep``).
        labels: optional (N,) int component per row, -1 where unknown (semi-supervised EM).
        assignment: ``"soft"`` (posterior responsibilities) or ``"hard"`` (classification EM).

    Returns:
        (stats, mean_log_likelihood): the statistics (moments of whitened residuals about
        ``stats.shift`` in ``stats.basis``, see ``SuffStats``) and the weighted mean per-sample
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
    estep.check_method(method, kernels=True)
    estep.check_assignment(assignment)
    n, d = X.shape
    k = params.means.shape[0]
    w = jnp.ones((n,), X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    if shift is None:
        shift = default_shift(params).astype(X.dtype)
    Y = X - shift
    pc = centre(params, shift)
    size = auto_chunk(n, k, d) if chunk_size is None else int(chunk_size)

    def run(form):
        moments = estep.chunked_moments(pc, Y, w, labels, form=form, assignment=assignment,
                                        chunk_size=size)
        return estep.wrap_stats(pc, moments, "fast" if form == "fast" else "exact")

    method = estep.resolve_method(method)
    if method == "auto":
        ok = estep.fast_form_ok(pc, jnp.asarray(-jnp.inf, X.dtype), True)
        stats, sum_ll = jax.lax.cond(ok, lambda: run("fast"), lambda: run("exact"))
    else:
        stats, sum_ll = run(method)
    stats = stats._replace(shift=stats.shift + shift)
    return stats, sum_ll / jnp.sum(w)


# -------------------------------------------------------------------------------------- loop
def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def _select(pred: Array, a, b):
    """Per-model ``where`` on pytrees with a leading model axis."""
    def pick(x, y):
        return jnp.where(pred.reshape(pred.shape + (1,) * (x.ndim - pred.ndim)), x, y)
    return jax.tree.map(pick, a, b)


def unit_stats(params: GMMParams) -> SuffStats:
    """Well-formed placeholder statistics (unit mass, zero mean, identity scatter) for a model.

    The loop's first pass takes its M-step from these when the starting parameters are given
    directly; the result is discarded, but it must be finite (also its gradient).
    """
    ct = params.covariance_type
    k, d = params.means.shape[-2:]
    dtype = params.means.dtype
    lead = params.means.shape[:-2]
    if ct == "full":
        sk = jnp.broadcast_to(jnp.eye(d, dtype=dtype), lead + (k, d, d))
    elif ct == "tied":
        sk = jnp.broadcast_to(jnp.eye(d, dtype=dtype) * k, lead + (d, d))
    else:
        sk = jnp.ones(lead + (k, d), dtype)
    basis = jnp.broadcast_to(cov.identity_basis(ct, k, d, dtype),
                             lead + cov.covariance_shape(ct, k, d))
    return SuffStats(jnp.ones(lead + (k,), dtype), jnp.zeros(lead + (k, d), dtype), sk,
                     jnp.zeros(lead + (k, d), dtype), ct, basis)


def em_iterations(params: GMMParams, stats_fn: Callable, tol, reg_covar, *, max_iter: int,
                  loop: str, active: Array | None = None, eigenvalue_floor=None,
                  method: str = "auto", callback: Callable | None = None,
                  init_stats: SuffStats | None = None, start: Callable | None = None):
    """The EM loop over a bank of R models; used by ``fit``, sweeps, classifiers, sharded EM.

    Each pass: M-step (from the previous E-step's statistics; on the first pass from
    ``init_stats``, or the starting ``params`` themselves), repair of collapsed components, a
    guard that keeps the previous parameters (and stops the model) if anything became
    non-finite, then the E-step of the new parameters in the form the error bound allows
    (``method="auto"``: the fast form when every running model's bound allows it, one
    ``lax.cond``). A model stops when its log-likelihood changes by less than ``tol``; one last
    pass then takes the M-step of its final statistics (scikit-learn's order: the returned
    parameters are the M-step after the last E-step), skipping the E-step. Each M-step and
    E-step appears once in the compiled program.

    Args:
        params: starting ``GMMParams`` with a leading model axis R (centred coordinates); used
            as they are unless ``init_stats`` is given.
        stats_fn: ``(params, form) -> (SuffStats (R, ...), mean log-likelihood (R,))``.
        tol: stop a model when its mean log-likelihood changes by less than this
            (``loop="while"``); scalar or (R,).
        reg_covar: added to covariance diagonals; scalar or (R,).
        max_iter: number of E-steps at most (static).
        loop: ``"while"`` (sklearn's stopping rule) or ``"scan"`` (exactly ``max_iter``).
        active: optional (R, K) bool mask of active components.
        eigenvalue_floor: optional scalar or (R,) floor on covariance eigenvalues.
        method: ``"auto"``, ``"exact"`` or ``"fast"`` (static).
        callback: optional host function ``callback(iteration, lower_bounds (R,), changes (R,),
            fast)`` called from inside the compiled loop after every E-step.
        init_stats: optional statistics (R, ...) whose M-step gives the starting parameters.
        start: optional ``params -> params`` applied to the first pass's M-step (user-given
            initial weights or means overriding the initialisation's).

    Returns:
        dict with params, lower_bound (R,), history (R, max_iter), n_iter (R,), converged (R,),
        n_repaired (R,), fast_path (max_iter,).
    """
    dtype = params.means.dtype
    r, k = params.weights.shape
    method = estep.resolve_method(method)
    act = jnp.ones((r, k), bool) if active is None else active
    tol = jnp.broadcast_to(jnp.asarray(tol, dtype), (r,))
    reg = jnp.broadcast_to(jnp.asarray(reg_covar, dtype), (r,))
    floor = None if eigenvalue_floor is None else jnp.broadcast_to(
        jnp.asarray(eigenvalue_floor, dtype), (r,))
    from_stats = init_stats is not None
    stats0 = init_stats if from_stats else unit_stats(params)

    def mstep_one(stats, reg_r, act_r, floor_r):
        new = m_step(stats, reg_covar=reg_r, active=act_r, eigenvalue_floor=floor_r)
        return repair_components(new, stats, act_r)

    def e_step_bank(p, stats, lb, running, first):
        def run():
            if method == "auto":
                # the first E-step scales the bound by the density ceiling (before it did,
                # that E-step always ran exact: a 20-iteration tied fit at N=100k, D=K=32 went
                # from 30-37 to 19-20 ms per iteration)
                ok = jax.vmap(lambda q, b: estep.fast_form_ok(q, b, first))(p, lb)
                fast = jnp.all(ok | ~running)
                s, ll = jax.lax.cond(fast, lambda q: stats_fn(q, "fast"),
                                     lambda q: stats_fn(q, "exact"), p)
                return s, ll, fast
            s, ll = stats_fn(p, method)
            return s, ll, jnp.asarray(method == "fast")

        # the final pass (only M-steps left) skips the E-step
        return jax.lax.cond(jnp.any(running), run, lambda: (stats, lb, jnp.asarray(False)))

    RUN, FINISH, FROZEN = 0, 1, 2

    def step(carry):
        p, stats, lb, it, phase, hist, n_rep, n_it, conv, fast_hist = carry
        first = it == 0
        if floor is None:
            new, n_bad = jax.vmap(lambda s, g, a: mstep_one(s, g, a, None))(stats, reg, act)
        else:
            new, n_bad = jax.vmap(mstep_one)(stats, reg, act, floor)
        if start is not None:
            new = jax.tree.map(lambda a, b: jnp.where(first, a, b), start(new), new)
        if not from_stats:
            new = jax.tree.map(lambda a, b: jnp.where(first, a, b), p, new)
            n_bad = jnp.where(first, 0, n_bad)
        ok = jax.vmap(_all_finite)(new)
        live = phase < FROZEN
        upd = live & ok
        p = _select(upd, new, p)
        n_rep = n_rep + jnp.where(upd, n_bad, 0)
        # finishing models took their final M-step; models that went non-finite stop here
        phase = jnp.where(live & (~ok | (phase == FINISH)), FROZEN, phase)
        running = phase == RUN
        stats_new, ll, fast = e_step_bank(p, stats, lb, running, first)
        change = ll - lb
        converged_now = jnp.abs(change) < tol
        idx = jnp.minimum(it, max_iter - 1)
        hist = hist.at[:, idx].set(jnp.where(running, ll, hist[:, idx]))
        n_it = n_it + running.astype(jnp.int32)
        stats = _select(running, stats_new, stats)
        lb = jnp.where(running, ll, lb)
        fast_hist = fast_hist.at[idx].set(jnp.where(jnp.any(running), fast, fast_hist[idx]))
        finite = jnp.isfinite(ll)
        if loop == "while":
            conv = conv | (running & converged_now)
            stop = converged_now | ~finite | (n_it >= max_iter)
        else:
            conv = jnp.where(running, converged_now, conv)
            stop = ~finite | (n_it >= max_iter)
        phase = jnp.where(running & stop, jnp.where(finite, FINISH, FROZEN), phase)
        if callback is not None:
            jax.debug.callback(callback, it + 1, lb, change, fast)
        return (p, stats, lb, it + 1, phase, hist, n_rep, n_it, conv, fast_hist)

    init = (
        params,
        stats0,
        jnp.full((r,), -jnp.inf, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.zeros((r,), jnp.int32),
        jnp.zeros((r, max_iter), dtype),
        jnp.zeros((r,), jnp.int32),
        jnp.zeros((r,), jnp.int32),
        jnp.zeros((r,), bool),
        jnp.zeros((max_iter,), bool),
    )
    if loop == "scan":
        final, _ = jax.lax.scan(lambda c, _: (step(c), None), init, None, length=max_iter + 1)
    else:
        final = jax.lax.while_loop(lambda c: jnp.any(c[4] < FROZEN), step, init)
    p, _, lb, _, _, hist, n_rep, n_it, conv, fast_hist = final
    hist = jnp.where(jnp.arange(max_iter)[None, :] < n_it[:, None], hist, lb[:, None])
    return dict(params=p, lower_bound=lb, history=hist, n_iter=n_it, converged=conv,
                n_repaired=n_rep, fast_path=fast_hist)


def check_monotone(history, n_iter: int, *, rtol: float | None = None, atol: float = 1e-9,
                   allowed: bool = False):
    """Asserts the log-likelihood history never decreases beyond float tolerance.

    Args:
        history: (T,) mean log-likelihood per iteration.
        n_iter: number of valid entries.
        rtol: relative tolerance; default ``100 * eps`` of the history's dtype.
        atol: absolute slack. With ``reg_covar > 0`` the M-step is not the exact maximiser of the
            likelihood, so near convergence it may drop by about ``reg_covar**2`` times a
            precision scale (seen: 7.5e-13 in float64); the default covers that.
        allowed: skip the check (used when components were repaired, which may lower it).

    Raises:
        AssertionError: naming the first iteration whose log-likelihood dropped, the drop and the
            tolerance it exceeded.
    """
    if allowed or n_iter < 2:
        return
    h = np.asarray(history[:n_iter], dtype=np.float64)
    eps = float(jnp.finfo(jnp.asarray(history).dtype).eps)
    rtol = 100 * eps if rtol is None else rtol
    drops = h[:-1] - h[1:]
    limit = rtol * np.maximum(1.0, np.abs(h[1:])) + atol
    over = np.flatnonzero(drops > limit)
    if over.size:
        i = int(over[0])
        raise AssertionError(
            f"log-likelihood decreased at iteration {i + 2} (1-based E-step count): "
            f"{h[i]:.10g} -> {h[i + 1]:.10g}, a drop of {drops[i]:.3g} nats per sample, above "
            f"the tolerance {limit[i]:.3g} (rtol={rtol:.3g} x max(1, |ll|) + atol={atol:.3g}); "
            f"{over.size} decrease(s) in {n_iter} iterations."
        )
