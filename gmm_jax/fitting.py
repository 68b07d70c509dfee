"""``fit``: EM as one compiled program that composes with the caller's ``jit``, ``vmap``, ``grad``.

One program per workflow, not per shape:

* **rows** are padded to a bucket (at most 1/8 more rows above 64, see :func:`row_bucket`) with
  weight zero; statistics are weighted sums and every initialisation is weight-aware, so the
  result is unchanged and every N in a bucket shares one compiled program;
* **components** can be masked: a model with ``max_components`` slots of which
  ``n_components`` are active (weights exactly zero elsewhere) equals the unpadded model, with
  ``n_components`` a traced value if the caller likes (a sweep over K under ``vmap``);
* **restarts**, the candidates of a sweep and the classes of a classifier run as one *bank* of
  models in the same loop (``gmm_jax.em.em_iterations``): one E-step per iteration for all of
  them, sharing the per-row work.

Inside the caller's transforms (``jax.jit``, ``jax.vmap`` over data sets, keys, weights,
``reg_covar`` or initial parameters, ``jax.grad``) only the static checks run (see
``gmm_jax.validation``). ``jax.grad`` flows through ``loop="scan"`` (a fixed number of
iterations); through ``loop="while"`` it raises a ``ValueError`` that points to ``loop="scan"``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax import estep, lbg, natural, validation
from gmm_jax._jit import as_array, cpu_tuned_jit
from gmm_jax.chunking import n_chunks, pad_rows
from gmm_jax.em import (
    auto_chunk,
    check_monotone,
    em_iterations,
    stats_from_responsibilities,
    stats_from_seed_rows,
)
from gmm_jax.init import ROW_SEEDED, check_init, initial_responsibilities, seed_rows
from gmm_jax.linalg import einsum, mm
from gmm_jax.mstep import m_step
from gmm_jax.types import FitResult, GMMParams

Array = jax.Array

#: Stopping tolerance of every LBG stage (at most; see ``_lbg_bank_fit``).
LBG_TOL = 1e-6

#: Default memory budget for caching the fast E-step's per-row features between iterations.
FEATURE_CACHE_BYTES = 1 << 30

LOOPS = ("while", "scan")

WHILE_GRAD_MESSAGE = (
    "gmm_jax.fit(..., loop='while') cannot be differentiated in reverse mode: its number of "
    "iterations depends on the data. Use loop='scan' (exactly max_iter EM iterations, "
    "differentiable with jax.grad with respect to the data, sample_weight, reg_covar and the "
    "initial parameters)."
)


#: Every data set of at most this many rows is padded to it: one compiled program for all of
#: them (a fit of 64 rows runs in about the time of a fit of 10; compiling one costs ~1 s).
MIN_ROW_BUCKET = 64


def row_bucket(n: int) -> int:
    """The padded row count for N rows: the next multiple of ``2**(floor(log2 N) - 3)``.

    At most 1/8 of the rows are padding above ``MIN_ROW_BUCKET`` (64) rows, and every N in
    ``[2**j, 2**(j+1))`` maps to one of eight sizes, so fits of many data set sizes share a few
    compiled programs; every N up to 64 shares the 64-row program.

    Example:
        >>> from gmm_jax.fitting import row_bucket
        >>> row_bucket(1797), row_bucket(1500), row_bucket(70), row_bucket(40)
        (1920, 1536, 72, 64)
    """
    if n <= MIN_ROW_BUCKET:
        return MIN_ROW_BUCKET
    granule = 1 << max(0, int(math.floor(math.log2(n))) - 3)
    return -(-n // granule) * granule


def pad_to_bucket(X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) data and (N,) weights padded to ``row_bucket(N)`` rows with zero rows of weight 0.

    Returns the arrays themselves when N is already a bucket size.
    """
    n, d = X.shape
    extra = row_bucket(n) - n
    if extra == 0:
        return X, w
    return (np.concatenate([X, np.zeros((extra, d), X.dtype)]),
            np.concatenate([w, np.zeros(extra, w.dtype)]))


def pad_groups(X: np.ndarray, w: np.ndarray, rows: list) -> tuple[np.ndarray, np.ndarray]:
    """Each group's rows as one zero-weight-padded block, for a bank that fits groups together.

    Args:
        X: (N, D) data.
        w: (N,) sample weights.
        rows: G index arrays, the rows of each group (a class of a classifier).

    Returns:
        ``(Xg, wg)``: (G, B, D) data and (G, B) weights, B = ``row_bucket`` of the largest group;
        rows past a group's size are zero with weight zero.
    """
    n_max = row_bucket(max(r.size for r in rows))
    Xg = np.zeros((len(rows), n_max, X.shape[1]), X.dtype)
    wg = np.zeros((len(rows), n_max), X.dtype)
    for i, r in enumerate(rows):
        Xg[i, :r.size] = X[r]
        wg[i, :r.size] = w[r]
    return Xg, wg


# ------------------------------------------------------------------------------- the bank
class BankConfig(NamedTuple):
    """Static configuration of a bank of EM models (hashable: it keys the compiled program)."""

    n_components: int
    covariance_type: str
    max_iter: int
    loop: str
    assignment: str
    method: str
    chunk_size: int
    callback: object = None
    #: static number of active components of each model of a group (None: all K slots may be
    #: active); the E-step then works on those components only
    active_counts: tuple | None = None
    #: the exact E-step kernel ("whitened" or "expanded64"), fixed when the program is traced
    #: (part of the static configuration, so no cached trace of one kernel serves the other)
    exact_kernel: str = "whitened"
    #: LBG growth (init="lbg"): split offset in units of the principal standard deviation
    split_scale: float = 0.1

    def cols(self):
        if self.active_counts is None:
            return None
        k = self.n_components
        return tuple(m * k + j for m, c in enumerate(self.active_counts) for j in range(c))


def _features_cache(Y: Array, config: BankConfig, cache_bytes: int) -> Array | None:
    """(N, F) features of the fast form, when they fit in ``cache_bytes`` (else None)."""
    ct = config.covariance_type
    if not estep.has_features(ct) or estep.resolve_method(config.method) == "exact":
        return None
    n, d = Y.shape[-2:]
    groups = int(np.prod(Y.shape[:-2], dtype=np.int64))
    size = groups * n * natural.n_features(ct, d) * Y.dtype.itemsize
    if size > cache_bytes:
        return None
    return natural.features(Y.reshape(-1, d), ct).reshape(Y.shape[:-1] + (-1,))


def _stats_fn(config: BankConfig, data: dict, groups: int):
    """``(params (R, ...), form) -> (SuffStats (R, ...), mean ll (R,))`` over a bank of models.

    Models are laid out group-major: R = G * M; group g's models see group g's data (or the
    shared data when the data have no group axis). Within a group the M models run as one bank
    (wide GEMMs); groups with their own data are a ``vmap``.
    """
    Y, w, labels, phi = data["Y"], data["w"], data.get("labels"), data.get("phi")
    per_group_data = Y.ndim == 3
    group_axes = (
        0 if per_group_data else None,
        0 if w.ndim == 2 and (per_group_data or groups > 1) else None,
        None if labels is None else (0 if labels.ndim == 2 else None),
        None if phi is None else (0 if phi.ndim == 3 else None),
    )

    def per_group(p, y, wt, lab, ph, form):
        kernel = config.exact_kernel if form == "exact" else form
        moments = estep.bank_moments(p, y, wt, lab, form=kernel, assignment=config.assignment,
                                     chunk_size=config.chunk_size,
                                     phi=ph if form == "fast" else None, cols=config.cols())
        stats, sum_ll = estep.wrap_stats(p, moments, form)
        total = jnp.sum(wt, axis=-1)
        return stats, sum_ll / total

    def fn(params, form):
        if groups == 1:
            return per_group(params, Y[0] if per_group_data else Y,
                             w[0] if w.ndim == 2 else w,
                             None if labels is None else (labels[0] if labels.ndim == 2
                                                          else labels),
                             None if phi is None else (phi[0] if phi.ndim == 3 else phi), form)
        pg = jax.tree.map(lambda a: a.reshape((groups, -1) + a.shape[1:]), params)
        stats, ll = jax.vmap(lambda p, y, wt, lab, ph: per_group(p, y, wt, lab, ph, form),
                             in_axes=(0,) + group_axes)(pg, Y, w, labels, phi)
        return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), (stats, ll))

    return fn


def _run_em(config: BankConfig, groups: int, params0, data, tol, reg, floor, active,
            init_stats, start_fields):
    start = None
    if start_fields:
        def start(p):
            return p._replace(**{name: jnp.broadcast_to(v, getattr(p, name).shape)
                                 for name, v in start_fields.items()})
    return em_iterations(params0, _stats_fn(config, data, groups), tol, reg,
                         max_iter=config.max_iter, loop=config.loop, active=active,
                         eigenvalue_floor=floor, method=config.method, callback=config.callback,
                         init_stats=init_stats, start=start)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _em_while(config, groups, params0, data, tol, reg, floor, active, init_stats, start_fields):
    return _run_em(config, groups, params0, data, tol, reg, floor, active, init_stats,
                   start_fields)


def _em_while_fwd(config, groups, *args):
    return _run_em(config, groups, *args), None


def _em_while_bwd(config, groups, residuals, cotangents):
    raise ValueError(WHILE_GRAD_MESSAGE)


_em_while.defvjp(_em_while_fwd, _em_while_bwd)


def _placeholder(config: BankConfig, n_active, d: int, dtype) -> GMMParams:
    """Finite unit parameters (uniform weights over the active slots, zero means, identity)."""
    ct = config.covariance_type
    k = config.n_components
    active = jnp.arange(k) < n_active
    weights = jnp.where(active, 1.0, 0.0).astype(dtype)
    eye = cov.identity_basis(ct, k, d, dtype)
    return GMMParams(weights / jnp.sum(weights), jnp.zeros((k, d), dtype), eye, eye, ct)


def _user_precisions(precisions_init, ct):
    prec_chol = cov.precision_cholesky_from_precisions(precisions_init, ct)
    return prec_chol, cov.covariances_from_precision_cholesky(prec_chol, ct)


def bank_fit(keys, Y, w, labels, tol, reg, floor, n_active, inits, *, config: BankConfig,
             init: str, cache_bytes: int = FEATURE_CACHE_BYTES):
    """Fits a bank of G x M models (traced; callers jit it).

    Args:
        keys: (G, M) PRNG keys.
        Y: (N, D) centred data shared by all models, or (G, N, D) one data set per group; the
            row count must be a multiple of ``config.chunk_size`` or at most it.
        w: (N,) or (G, N) row weights (zero for padding).
        labels: None, (N,) or (G, N) int labels (-1 unknown); labelled rows also seed the
            initialisation of their component.
        tol, reg: scalars or (G, M).
        floor: None or scalar / (G, M) eigenvalue floor.
        n_active: (G, M) int number of active components of each model.
        inits: (weights_init, means_init, precisions_init), each None or an array shaped for one
            model (shared by all) — means centred like ``Y``.
        config: static configuration.
        init: initialisation method (static).
        cache_bytes: feature-cache budget (static).

    Returns:
        dict of per-model results with a leading (G, M) shape (see ``em_iterations``), params
        centred.
    """
    g, m = keys.shape
    r = g * m
    ct = config.covariance_type
    k = config.n_components
    d = Y.shape[-1]
    dtype = Y.dtype
    data = dict(Y=Y, w=w, labels=labels, phi=_features_cache(Y, config, cache_bytes))
    weights_init, means_init, precisions_init = inits
    full_user = all(a is not None for a in inits)
    y_axis = 0 if Y.ndim == 3 else None
    w_axis = 0 if w.ndim == 2 else None
    l_axis = None if labels is None else (0 if labels.ndim == 2 else None)

    user_pc = user_cov = None
    if precisions_init is not None:
        user_pc, user_cov = _user_precisions(precisions_init, ct)
    if init == "lbg" and not full_user:
        return _lbg_bank_fit(keys, Y, w, labels, tol, reg, floor, n_active, data,
                             config=config)

    if full_user:
        one = GMMParams(weights_init, means_init, user_cov, user_pc, ct)
        params0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (r,) + a.shape), one)
        init_stats, start_fields = None, None
    else:
        def stats_one(kk, y, wt, lab, na):
            if lab is None and init in ROW_SEEDED:  # K seed rows: no pass over the data
                idx = seed_rows(kk, jax.lax.stop_gradient(y), k, init,
                                sample_weight=jax.lax.stop_gradient(wt), n_active=na)
                return stats_from_seed_rows(y, idx, ct, sample_weight=wt, n_active=na)
            resp = initial_responsibilities(kk, jax.lax.stop_gradient(y), k, init,
                                            sample_weight=jax.lax.stop_gradient(wt),
                                            n_active=na)
            if lab is not None:
                known = lab >= 0
                resp = jnp.where(known[:, None],
                                 jax.nn.one_hot(jnp.where(known, lab, 0), k, dtype=dtype), resp)
            return stats_from_responsibilities(y, resp, ct, sample_weight=wt,
                                               chunk_size=config.chunk_size)

        def stats_group(kg, y, wt, lab, na):
            return jax.vmap(lambda kk, nn: stats_one(kk, y, wt, lab, nn))(kg, na)

        init_stats = jax.vmap(stats_group, in_axes=(0, y_axis, w_axis, l_axis, 0))(
            keys, Y, w, labels, n_active)
        init_stats = jax.tree.map(lambda a: a.reshape((r,) + a.shape[2:]), init_stats)
        params0 = jax.vmap(lambda na: _placeholder(config, na, d, dtype))(n_active.reshape(r))
        start_fields = {}
        if weights_init is not None:
            start_fields["weights"] = weights_init
        if means_init is not None:
            start_fields["means"] = means_init
        if precisions_init is not None:
            start_fields["precisions_cholesky"] = user_pc
            start_fields["covariances"] = user_cov
    active = jnp.arange(k)[None, :] < n_active.reshape(r, 1)
    tol_r = jnp.broadcast_to(tol, (g, m)).reshape(r)
    reg_r = jnp.broadcast_to(reg, (g, m)).reshape(r)
    floor_r = None if floor is None else jnp.broadcast_to(floor, (g, m)).reshape(r)
    args = (params0, data, tol_r, reg_r, floor_r, active, init_stats, start_fields)
    if config.loop == "while":
        out = _em_while(config, g, *args)
    else:
        out = _run_em(config, g, *args)
    return {name: (v if name == "fast_path" else
                   jax.tree.map(lambda a: a.reshape((g, m) + a.shape[1:]), v))
            for name, v in out.items()}


def _lbg_bank_fit(keys, Y, w, labels, tol, reg, floor, n_active, data, *, config: BankConfig):
    """LBG growth for a bank (``gmm_jax.lbg``): K=1, then split and EM, stage after stage.

    Returns the dict of :func:`bank_fit` for the last stage, plus ``"stages"``: the same
    results with a leading stage axis (S, G, M, ...), and ``"stage_sizes"`` (S, G, M).
    """
    g, m = keys.shape
    r = g * m
    ct = config.covariance_type
    k = config.n_components
    dtype = Y.dtype
    y_axis = 0 if Y.ndim == 3 else None
    w_axis = 0 if w.ndim == 2 else None
    l_axis = None if labels is None else (0 if labels.ndim == 2 else None)

    def start_group(y, wt, lab):
        resp = jnp.zeros((y.shape[0], k), dtype).at[:, 0].set(1.0)
        if lab is not None:  # labelled rows of other components keep their component
            known = lab >= 0
            resp = jnp.where(known[:, None],
                             jax.nn.one_hot(jnp.where(known, lab, 0), k, dtype=dtype), resp)
        stats = stats_from_responsibilities(y, resp, ct, sample_weight=wt,
                                            chunk_size=config.chunk_size)
        n_lab = 1 if lab is None else jnp.maximum(1, jnp.max(lab) + 1)
        p = m_step(stats, reg_covar=jnp.asarray(reg).reshape(-1)[0],
                   active=jnp.arange(k) < n_lab)
        return p, lbg.data_direction(y, wt)

    p0, direction = jax.vmap(start_group, in_axes=(y_axis, w_axis, l_axis), axis_size=g)(
        Y, w, labels)
    params0 = jax.tree.map(lambda a: jnp.repeat(a, m, axis=0), p0)  # (R, ...) group-major
    dirs = jnp.repeat(direction, m, axis=0)
    sizes = lbg.stage_schedule(n_active.reshape(r), k)  # (S, R)
    if labels is not None:  # components named by labels exist from the start
        n_lab = jnp.max(labels) + 1
        sizes = jnp.maximum(sizes, jnp.minimum(n_lab, n_active.reshape(r))[None])
    prev = jnp.concatenate([sizes[:1], sizes[:-1]])
    # after a split the two halves sit near a saddle where EM starts slowly: a stage stops at
    # min(tol, LBG_TOL), not at scikit-learn's default 1e-3, which would stop right there
    tol_r = jnp.minimum(jnp.broadcast_to(tol, (g, m)).reshape(r), LBG_TOL)
    reg_r = jnp.broadcast_to(reg, (g, m)).reshape(r)
    floor_r = None if floor is None else jnp.broadcast_to(floor, (g, m)).reshape(r)

    def stage(params, xs):
        n_from, n_to = xs
        params = jax.vmap(lambda p, a, b, dd: lbg.split_components(
            p, a, b, config.split_scale, dd))(params, n_from, n_to, dirs)
        active = jnp.arange(k)[None, :] < n_to[:, None]
        args = (params, data, tol_r, reg_r, floor_r, active, None, None)
        out = (_em_while(config, g, *args) if config.loop == "while"
               else _run_em(config, g, *args))
        return out["params"], out

    _, outs = jax.lax.scan(stage, params0, (prev, sizes))

    def shape(name, v, lead):
        if name == "fast_path":
            return v
        return jax.tree.map(lambda a: a.reshape(lead + (g, m) + a.shape[len(lead) + 1:]), v)

    final = {name: shape(name, jax.tree.map(lambda a: a[-1], v), ())
             for name, v in outs.items()}
    n_st = sizes.shape[0]
    final["stages"] = {name: shape(name, v, (n_st,)) for name, v in outs.items()}
    final["stage_sizes"] = sizes.reshape((n_st, g, m))
    return final


def restart_keys(key, n_init: int):
    """(n_init,) keys of the restarts: ``key`` itself for one, ``split(key, n_init)`` for more,
    so restart i of a bank is the fit of ``split(key, n_init)[i]`` alone."""
    return key[None] if n_init == 1 else jax.random.split(key, n_init)


def best_restart(lower_bound: Array) -> Array:
    """Index of the best restart (highest finite lower bound) along the last axis."""
    score = jnp.where(jnp.isfinite(lower_bound), lower_bound, -jnp.inf)
    return jnp.argmax(score, axis=-1)


# ------------------------------------------------------------------------------- fit program
@cpu_tuned_jit(static_argnames=("n_components", "covariance_type", "max_iter", "n_init",
                                   "init", "loop", "chunk_size", "assignment", "method",
                                   "cache_bytes", "callback", "exact_kernel"))
def _fit_program(key, X, w, labels, tol, reg_covar, floor, n_active, weights_init, means_init,
                 precisions_init, *, n_components, covariance_type, max_iter, n_init, init, loop,
                 chunk_size, assignment, method, cache_bytes, callback,
                 exact_kernel="whitened"):
    n = X.shape[0]
    total = n if chunk_size >= n else n_chunks(n, chunk_size) * chunk_size
    shift = mm(w, X) / jnp.sum(w)
    Y = pad_rows(X - shift, total)
    wp = pad_rows(w, total)
    lab = None if labels is None else jnp.pad(labels, (0, total - n), constant_values=-1)
    m_init = None if means_init is None else means_init - shift
    config = BankConfig(n_components, covariance_type, max_iter, loop, assignment, method,
                        chunk_size, callback, None, exact_kernel)
    keys = restart_keys(key, n_init)[None]
    na = jnp.broadcast_to(jnp.asarray(n_active, jnp.int32), (1, n_init))
    out = bank_fit(keys, Y, wp, lab, tol, reg_covar, floor, na,
                   (weights_init, m_init, precisions_init), config=config, init=init,
                   cache_bytes=cache_bytes)
    out = {name: (v if name == "fast_path" else jax.tree.map(lambda a: a[0], v))
           for name, v in out.items()}
    best = best_restart(out["lower_bound"])
    pick = lambda a: a[best]  # noqa: E731
    params = jax.tree.map(pick, out["params"])
    params = params._replace(means=jnp.where(params.weights[:, None] > 0,
                                             params.means + shift, params.means))
    n_it = out["n_iter"][best]
    fast = out["fast_path"] & (jnp.arange(max_iter) < jnp.max(out["n_iter"]))
    return FitResult(
        params=params,
        log_likelihood=out["lower_bound"][best],
        history=out["history"][best],
        n_iter=n_it,
        converged=out["converged"][best],
        restart_log_likelihoods=out["lower_bound"],
        n_repaired=out["n_repaired"][best],
        fast_path=fast,
    )


def fit(
    key,
    X,
    n_components,
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
    assignment: str = "soft",
    eigenvalue_floor=None,
    labels=None,
    max_components: int | None = None,
    method: str = "auto",
    pad_rows: bool = True,
    feature_cache_bytes: int = FEATURE_CACHE_BYTES,
    callback=None,
) -> FitResult:
    """Fits a Gaussian mixture by EM in one compiled program.

    Initialisation, the EM loop and all ``n_init`` restarts (run side by side as one bank of
    models) are a single ``jax.jit`` program; a second call with the same static options and a
    row count in the same bucket does not retrace (``tol``, ``reg_covar``, ``eigenvalue_floor``
    and ``n_components`` under ``max_components`` are traced values). The stopping rule is
    scikit-learn's: stop when the change of the mean per-sample log-likelihood between two
    E-steps is below ``tol``.

    ``fit`` works inside the caller's transforms: ``jax.jit(lambda X: fit(key, X, 2))``,
    ``jax.vmap`` over data sets, keys, ``sample_weight``, ``reg_covar`` or initial parameters, and
    ``jax.grad`` through ``loop="scan"``; there, only the static checks run.

    Args:
        key: ``jax.random.key`` (or an int seed).
        X: (N, D) data; ints and bools are converted to float. float64 needs
            ``jax.config.update("jax_enable_x64", True)``.
        n_components: K, the number of active components (an int, or a traced int when
            ``max_components`` is given).
        covariance_type: ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``, ``"tied_diag"`` or
            ``"tied_spherical"``.
        max_iter: maximum EM iterations (static).
        tol: convergence threshold on the change of the mean log-likelihood.
        n_init: restarts, run side by side in one program; the best lower bound wins.
        init: ``"kmeans"``, ``"k-means++"``, ``"random"``, ``"random_from_data"`` or ``"lbg"``.
        reg_covar: non-negative value added to covariance diagonals.
        weights_init: optional (K,) initial weights (with ``max_components``: (K_max,), zero on
            inactive slots).
        means_init: optional (K, D) initial means.
        precisions_init: optional initial precisions, shaped by covariance type.
        sample_weight: optional (N,) non-negative sample weights.
        loop: ``"while"`` (stop at ``tol``) or ``"scan"`` (exactly ``max_iter`` iterations;
            differentiable).
        chunk_size: rows per E-step chunk (static); None picks one that bounds memory.
        debug: check on the host that the log-likelihood history never decreases.
        assignment: ``"soft"`` (EM) or ``"hard"`` (classification EM: each row's responsibility
            is one-hot at its most likely component).
        eigenvalue_floor: optional floor on every covariance eigenvalue (applied after each
            M-step, full/tied by eigendecomposition, diagonal types elementwise).
        labels: optional (N,) int component of each row, -1 for unlabelled rows (semi-supervised
            EM): labelled rows' responsibilities are clamped to their component, and they seed
            the initialisation of their component.
        max_components: optional number of component slots K_max >= K; the returned model has
            K_max components of which the last K_max - K have weight zero.
        method: E-step form: ``"auto"`` (fast when its computed error bound allows, else exact;
            exact on backends other than the CPU, see ``estep.AUTO_FAST_BACKENDS``),
            ``"exact"`` or ``"fast"`` (static).
        pad_rows: pad concrete data to a row bucket (:func:`row_bucket`) so that nearby sizes
            share a compiled program.
        feature_cache_bytes: memory budget for caching the fast E-step's features.
        callback: optional ``callback(iteration, lower_bounds, changes, fast)`` called from
            inside the compiled loop after each iteration (progress bars); ``lower_bounds`` and
            ``changes`` have one entry per restart.

    Returns:
        ``FitResult(params, log_likelihood, history, n_iter, converged,
        restart_log_likelihoods, n_repaired, fast_path)``.

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
    estep.check_method(method)
    estep.check_assignment(assignment)
    if loop not in LOOPS:
        raise ValueError(f"loop must be 'while' or 'scan', got {loop!r}.")
    max_iter, tol, reg_covar, eigenvalue_floor = validation.check_loop_options(
        max_iter, tol, reg_covar, eigenvalue_floor)
    n_init = validation.check_positive_int(n_init, "n_init")
    if max_components is None:
        k_slots = validation.check_positive_int(n_components, "n_components")
        n_active = k_slots
    else:
        k_slots = validation.check_positive_int(max_components, "max_components")
        if validation.is_traced(n_components):
            n_active = n_components
        else:
            n_active = validation.check_positive_int(n_components, "n_components")
            if n_active > k_slots:
                raise ValueError(f"n_components={n_active} exceeds max_components={k_slots}.")
    if chunk_size is not None:
        chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
    key = validation.check_key(key)
    min_rows = n_active if isinstance(n_active, int) else 1
    X = validation.check_array(X, min_samples=min_rows)
    n, d = X.shape
    dtype = np.dtype(X.dtype)
    w_init, m_init, p_init = validation.check_init_arrays(
        weights_init, means_init, precisions_init, n_components=k_slots, n_features=d,
        covariance_type=covariance_type, dtype=dtype,
    )
    sw = validation.check_sample_weight(sample_weight, n, dtype)
    lab = validation.check_labels(labels, n, k_slots)
    if isinstance(lab, np.ndarray) and isinstance(n_active, int) and np.any(lab >= n_active):
        raise ValueError(f"labels must lie in [-1, {n_active}) (-1 marks an unlabelled row).")
    if isinstance(sw, np.ndarray) and isinstance(n_active, int):
        n_pos = int(np.sum(sw > 0))
        if n_pos < n_active:
            raise ValueError(f"sample_weight leaves {n_pos} samples with positive weight, fewer "
                             f"than n_components={n_active}.")
    concrete = not validation.is_traced(X, sw, lab)
    traced_any = validation.is_traced(key, X, sw, lab, tol, reg_covar, eigenvalue_floor,
                                      n_active, w_init, m_init, p_init)
    # the float64-accumulating exact kernel only when gmm_jax owns the whole trace
    kernel = "whitened" if traced_any else estep.exact_kernel(
        covariance_type, n_init * k_slots, d)  # every slot is computed, masked or not
    if concrete and pad_rows and row_bucket(n) > n:
        X, sw = pad_to_bucket(X, np.ones((n,), dtype) if sw is None else np.asarray(sw, dtype))
        if lab is not None:
            lab = np.concatenate([lab, np.full((X.shape[0] - n,), -1, np.int32)])
        n = X.shape[0]
    if sw is not None:
        w = jnp.asarray(sw, dtype)
    else:  # a host array when concrete: jnp.ones would compile for every new N
        w = as_array(np.ones((n,), dtype)) if concrete else jnp.ones((n,), dtype)
    if chunk_size is None:
        chunk_size = auto_chunk(n, k_slots, d, n_init)
    result = _fit_program(
        key, as_array(X), w, None if lab is None else jnp.asarray(lab, jnp.int32),
        jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype),
        None if eigenvalue_floor is None else jnp.asarray(eigenvalue_floor, dtype),
        jnp.asarray(n_active, jnp.int32),
        None if w_init is None else as_array(w_init),
        None if m_init is None else as_array(m_init),
        None if p_init is None else as_array(p_init),
        n_components=k_slots, covariance_type=covariance_type, max_iter=max_iter,
        n_init=n_init, init=init, loop=loop, chunk_size=chunk_size, assignment=assignment,
        method=method, cache_bytes=int(feature_cache_bytes), callback=callback,
        exact_kernel=kernel,
    )
    if debug:
        if validation.is_traced(result.history):
            raise ValueError("debug=True checks the history on the host; it cannot run inside "
                             "jit/vmap/grad. Call gmm_jax.check_monotone on the result instead.")
        check_monotone(result.history, int(result.n_iter), allowed=int(result.n_repaired) > 0)
    return result


@cpu_tuned_jit(static_argnames=("n_components", "covariance_type", "max_iter", "chunk_size",
                                   "method", "split_scale", "exact_kernel"))
def lbg_program(X, w, tol, reg_covar, floor, *, n_components, covariance_type, max_iter,
                chunk_size, method, split_scale, exact_kernel):
    """LBG growth (``gmm_jax.lbg``) as one program; returns every stage.

    Args:
        X: (N, D) one data set, or (G, N, D) one per group (the classes of a classifier).
        w: (N,) or (G, N) row weights (zero for padding).

    Returns:
        (stages, shift): ``stages`` the dict of :func:`_lbg_bank_fit` with a leading stage
        axis, then the group axis G (1 for one data set) and one model; params centred;
        ``shift`` (G, D) the centre of each data set.
    """
    if X.ndim == 2:
        X, w = X[None], w[None]
    g, n, _ = X.shape
    total = n if chunk_size >= n else n_chunks(n, chunk_size) * chunk_size
    shift = einsum("gn,gnd->gd", w, X) / jnp.sum(w, axis=1)[:, None]
    Y = jnp.pad(X - shift[:, None, :], ((0, 0), (0, total - n), (0, 0)))
    wp = jnp.pad(w, ((0, 0), (0, total - n)))
    if g == 1:
        Y, wp = Y[0], wp[0]
    config = BankConfig(n_components, covariance_type, max_iter, "while", "soft", method,
                        chunk_size, None, None, exact_kernel, split_scale)
    keys = jnp.broadcast_to(jax.random.key(0), (g, 1))
    out = bank_fit(keys, Y, wp, None, tol, reg_covar, floor,
                   jnp.full((g, 1), n_components, jnp.int32), (None, None, None),
                   config=config, init="lbg", cache_bytes=0)
    return out["stages"], shift


# --------------------------------------------------------------------------- bank programs
@cpu_tuned_jit(static_argnames=("n_components", "covariance_type", "max_iter", "init", "loop",
                                   "chunk_size", "assignment", "method", "cache_bytes",
                                   "active_counts", "exact_kernel"))
def bank_program(keys, X, w, score_w, labels, tol, reg_covar, floor, n_active, *, n_components,
                 covariance_type, max_iter, init, loop, chunk_size, assignment, method,
                 cache_bytes, active_counts=None, exact_kernel="whitened"):
    """One compiled program for a bank of G x M fits (sweeps, cross-validation, classifiers).

    Args:
        keys: (G, M) PRNG keys.
        X: (N, D) rows shared by every group, or (G, N, D) one data set per group.
        w: (N,) or (G, N) training row weights (zero for padding and held-out rows).
        score_w: None, or (N,) / (G, N) weights under which each final model is scored by one
            more (exact) E-step (held-out rows, or all rows for BIC/AIC).
        labels: None, (N,) or (G, N) labels.
        tol, reg_covar, floor: scalars (floor may be None).
        n_active: (G, M) active components per model (<= ``n_components`` slots).
        active_counts: static (M,) tuple, the largest ``n_active`` of each member over the
            groups: the E-step skips the slots beyond it.
        exact_kernel: static name of the exact E-step kernel (``estep.exact_kernel``).

    Returns:
        dict: params (G, M, ...) in data coordinates, lower_bound, history, n_iter, converged,
        n_repaired (G, M), fast_path (max_iter,), and with ``score_w`` the weighted mean
        log-likelihood ``score`` (G, M) of the final parameters and the weight ``score_total``
        (G,) it averages over.
    """
    per_group = X.ndim == 3
    n = X.shape[-2]
    total = n if chunk_size >= n else n_chunks(n, chunk_size) * chunk_size
    if per_group:
        shift = einsum("gn,gnd->gd", w, X) / jnp.sum(w, axis=1)[:, None]
        Y = X - shift[:, None, :]
        Y = jnp.pad(Y, ((0, 0), (0, total - n), (0, 0)))
    else:
        wall = w if w.ndim == 1 else jnp.sum(w, axis=0)
        shift = mm(wall, X) / jnp.sum(wall)
        Y = pad_rows(X - shift, total)

    def padw(a):
        if a is None:
            return None
        return jnp.pad(a, ((0, 0),) * (a.ndim - 1) + ((0, total - n),))

    wp, sw = padw(w), padw(score_w)
    lab = None if labels is None else jnp.pad(
        labels, ((0, 0),) * (labels.ndim - 1) + ((0, total - n),), constant_values=-1)
    config = BankConfig(n_components, covariance_type, max_iter, loop, assignment, method,
                        chunk_size, None, active_counts, exact_kernel)
    out = bank_fit(keys, Y, wp, lab, tol, reg_covar, floor, n_active, (None, None, None),
                   config=config, init=init, cache_bytes=cache_bytes)
    g, m = keys.shape
    if sw is not None:
        params_r = jax.tree.map(lambda a: a.reshape((g * m,) + a.shape[2:]), out["params"])
        data = dict(Y=Y, w=sw, labels=None, phi=None)
        groups = g if (per_group or sw.ndim == 2) else 1
        if groups == 1 and g > 1:
            data["w"] = jnp.broadcast_to(sw, (g,) + sw.shape) if sw.ndim == 1 else sw
            groups = g
        _, mean_ll = _stats_fn(config._replace(assignment="soft"), data, groups)(params_r,
                                                                                 "exact")
        out["score"] = mean_ll.reshape(g, m)
        out["score_total"] = jnp.sum(jnp.broadcast_to(sw, (g, sw.shape[-1])), axis=-1)
    p = out["params"]
    sh = shift[:, None, None, :] if per_group else shift
    out["params"] = p._replace(means=jnp.where(p.weights[..., None] > 0, p.means + sh, p.means))
    return out
