"""EM over data that does not fit in memory: exact batch EM and online (stepwise) EM.

Because the E-step returns additive sufficient statistics, one exact EM iteration over a data set
split into batches is: sum the batches' statistics, then one M-step. ``fit_batches`` does this
with a re-iterable source of batches (a list of arrays, a memory-mapped file cut into slices, a
generator factory); it gives the same iterates as :func:`gmm_jax.fit` on the concatenated data
from the same initial parameters. Every batch is padded to one fixed shape (zero-weight rows), so
the jitted E-step compiles once.

``online_em`` is Cappe & Moulines' stepwise EM: running statistics are blended with each batch's
(rescaled to the data size) with step ``rho_t = (t + 2) ** -kappa``, then an M-step; one pass over
a stream, for data that arrive once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import estep, validation
from gmm_jax.density import responsibilities
from gmm_jax.em import e_step, m_step, repair_components, stats_from_responsibilities
from gmm_jax.fitting import fit
from gmm_jax.types import FitResult, GMMParams

Array = jax.Array
BatchSource = Iterable | Callable[[], Iterable]


def _iterate(source: BatchSource) -> Iterable:
    return source() if callable(source) else iter(source)


def _padded(batch: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    n = batch.shape[0]
    w = np.ones((size,), batch.dtype)
    if n < size:
        batch = np.concatenate([batch, np.zeros((size - n, batch.shape[1]), batch.dtype)])
        w[n:] = 0.0
    return batch, w


@partial(jax.jit, static_argnames=("chunk_size", "method"))
def _batch_stats(params: GMMParams, X: Array, w: Array, shift: Array, *, chunk_size=None,
                 method="exact"):
    stats, mean_ll = e_step(params, X, sample_weight=w, shift=shift, chunk_size=chunk_size,
                            method=method)
    return stats, mean_ll * jnp.sum(w)


@jax.jit
def _fast_bound(params: GMMParams, shift: Array):
    return estep.fast_error_bound(params._replace(means=params.means - shift))


@jax.jit
def _m_step_repaired(stats, reg_covar):
    params = m_step(stats, reg_covar=reg_covar)
    return repair_components(params, stats)


@jax.jit
def _responsibilities(params: GMMParams, X: Array):
    return responsibilities(params, X)


def _checked_batches(source: BatchSource, n_features: int | None, dtype):
    for i, batch in enumerate(_iterate(source)):
        yield validation.check_array(batch, name=f"batch {i}", n_features=n_features, dtype=dtype)


def _scan_source(source: BatchSource, dtype):
    """One pass: batch size, number of rows and the data mean (the moments' shift)."""
    size, n, total, d = 0, 0, None, None
    for i, b in enumerate(_checked_batches(source, None, dtype)):
        if d is not None and b.shape[1] != d:
            raise ValueError(f"batch {i} has {b.shape[1]} features, but batch 0 has {d} features.")
        d = b.shape[1]
        size = max(size, b.shape[0])
        n += b.shape[0]
        s = b.astype(np.float64).sum(axis=0)
        total = s if total is None else total + s
    if n == 0:
        raise ValueError("the batch source yielded no data.")
    return size, n, d, (total / n)


def fit_batches(
    key,
    batches: BatchSource,
    n_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    init_sample_size: int = 10_000,
    chunk_size: int | None = None,
    dtype=np.float32,
) -> FitResult:
    """Exact EM over a re-iterable source of batches (data larger than memory).

    Each iteration streams every batch through the jitted E-step, sums the statistics and takes
    one M-step: the iterates are those of full-batch EM. Initial parameters are ``init_params``
    or a :func:`gmm_jax.fit` initialisation on the first ``init_sample_size`` rows.

    Args:
        key: PRNG key or int seed (used for the initialisation only).
        batches: a list/tuple of (n_i, D) arrays, or a zero-argument callable returning a fresh
            iterator of them (a generator function reading from disk). Read ``max_iter + 2``
            times at most.
        n_components: K.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        max_iter: maximum passes over the data.
        tol: stop when the mean log-likelihood changes by less than this.
        reg_covar: added to covariance diagonals.
        init: initialisation method for the sample (see :func:`gmm_jax.fit`).
        init_params: start from these parameters instead.
        init_sample_size: rows used for the initialisation.
        chunk_size: rows per E-step chunk inside a batch.
        dtype: computation dtype (float64 needs x64).

    Returns:
        ``FitResult`` (one restart: ``restart_log_likelihoods`` has one entry).

    Example:
        >>> import numpy as np, gmm_jax
        >>> from gmm_jax.streaming import fit_batches
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-4, 1, (500, 2)), rng.normal(4, 1, (500, 2))]
        >>> res = fit_batches(0, [X[:300], X[300:600], X[600:]], 2)
        >>> res.params.means.shape
        (2, 2)
    """
    dtype = validation.float_dtype(dtype) if dtype is not None else np.float32
    n_components, max_iter, tol, reg_covar = validation.check_em_options(
        n_components, max_iter, tol, reg_covar)
    size, n, d, mean = _scan_source(batches, dtype)
    if n < n_components:
        raise ValueError(f"the batches hold {n} samples, fewer than n_components={n_components}.")
    shift = jnp.asarray(mean, dtype)
    if init_params is None:
        rows, got = [], 0
        for b in _checked_batches(batches, d, dtype):
            rows.append(b[: init_sample_size - got])
            got += rows[-1].shape[0]
            if got >= init_sample_size:
                break
        sample = np.concatenate(rows)
        init_params = fit(key, sample, n_components, covariance_type=covariance_type,
                          max_iter=1, tol=0.0, init=init, reg_covar=reg_covar).params
        # max_iter=1 ran one EM step on the sample; that is the initialisation.
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), init_params)
    history = np.zeros((max_iter,), dtype)
    fast_path = np.zeros((max_iter,), bool)
    prev, lb, converged, n_iter, n_rep = -np.inf, -np.inf, False, 0, 0
    reg = jnp.asarray(reg_covar, dtype)
    for it in range(max_iter):
        bound = float(_fast_bound(params, shift))
        fast = bool(np.isfinite(lb) and bound <= estep.FAST_RTOL * max(1.0, abs(lb)))
        fast_path[it] = fast
        acc, sum_ll = None, 0.0
        for b in _checked_batches(batches, d, dtype):
            Xb, wb = _padded(b, size)
            stats, s_ll = _batch_stats(params, jnp.asarray(Xb), jnp.asarray(wb), shift,
                                       chunk_size=chunk_size, method="fast" if fast else "exact")
            acc = stats if acc is None else _add_stats(acc, stats)
            sum_ll += float(s_ll)
        prev, lb = lb, sum_ll / n
        history[it] = lb
        new, n_bad = _m_step_repaired(acc, reg)
        if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(new)):
            break
        params, n_rep, n_iter = new, n_rep + int(n_bad), it + 1
        if abs(lb - prev) < tol:
            converged = True
            break
    history[n_iter:] = lb
    fast_path[n_iter:] = False
    return FitResult(params, jnp.asarray(lb, dtype), jnp.asarray(history), jnp.asarray(n_iter),
                     jnp.asarray(converged), jnp.asarray([lb], dtype), jnp.asarray(n_rep),
                     jnp.asarray(fast_path))


def _add_stats(a, b):
    """Sum of two statistics taken about the same shift in the same basis."""
    return a._replace(Nk=a.Nk + b.Nk, Fk=a.Fk + b.Fk, Sk=a.Sk + b.Sk)


def online_em(
    init_params: GMMParams,
    batches: Iterable,
    *,
    n_samples: int,
    kappa: float = 0.6,
    reg_covar: float = 1e-6,
    shift=None,
) -> GMMParams:
    """Stepwise (online) EM over one pass of a stream of batches.

    ``S_t = (1 - rho_t) S_{t-1} + rho_t * (n_samples / n_batch) * s(batch_t)`` with
    ``rho_t = (t + 2) ** -kappa`` (``0.5 < kappa <= 1`` for convergence), then an M-step.

    Args:
        init_params: starting mixture.
        batches: iterable of (n_i, D) arrays, consumed once.
        n_samples: size of the data set the statistics are scaled to.
        kappa: step-size decay exponent.
        reg_covar: added to covariance diagonals.
        shift: (D,) point the moments are taken about (default: the initial mixture mean).

    Returns:
        the final ``GMMParams``.
    """
    if not 0.5 < kappa <= 1.0:
        raise ValueError(f"kappa must be in (0.5, 1], got {kappa}.")
    params = init_params
    d = params.means.shape[1]
    dtype = params.means.dtype
    shift = (params.weights @ params.means) if shift is None else jnp.asarray(shift, dtype)
    running = None
    reg = jnp.asarray(reg_covar, dtype)
    for t, b in enumerate(batches):
        b = validation.check_array(b, name=f"batch {t}", n_features=d, dtype=dtype)
        # plain moments about a fixed shift: statistics of different batches (taken under
        # different parameters) can only be blended when they share the shift and basis
        resp = _responsibilities(params, jnp.asarray(b))
        stats = stats_from_responsibilities(jnp.asarray(b), resp, params.covariance_type,
                                            shift=shift)
        factor = n_samples / b.shape[0]
        rho = (t + 2.0) ** (-kappa)
        if running is None:
            running = stats._replace(Nk=stats.Nk * factor, Fk=stats.Fk * factor,
                                     Sk=stats.Sk * factor)
        else:
            running = running._replace(
                Nk=(1 - rho) * running.Nk + rho * factor * stats.Nk,
                Fk=(1 - rho) * running.Fk + rho * factor * stats.Fk,
                Sk=(1 - rho) * running.Sk + rho * factor * stats.Sk)
        params, _ = _m_step_repaired(running, reg)
    return params
