"""LBG growth of Gaussian mixtures: start from one component, split, run EM, repeat.

The Linde-Buzo-Gray procedure of the seed (GMM chapter): from the single-Gaussian maximum
likelihood estimate, every component is split in two, ``mu +/- d`` with ``d = split_scale *
sqrt(lambda_max) * v_max`` (``v_max`` the principal eigenvector of its covariance, ``lambda_max``
its eigenvalue), each half taking half the weight and the parent's covariance, and EM runs to
convergence before the next split: 1 -> 2 -> 4 -> ... components. A final size that is not a
power of two is reached by splitting only the heaviest components. Spherical components have no
principal direction of their own; they split along the principal eigenvector of the data's
covariance. The default offset, ``split_scale=0.1``, is the seed's small epsilon; it suits
many overlapping components (the per-class image tables). Between two well-separated clusters
it starts the halves next to the saddle, where EM separates them by about 1% per iteration and a
stage can stop short of the modes (clusters at +/-6 with spread 0.7: 0.1 ends at means -0.7 and
0.6, 0.5 at -6.0 and 5.9 in 8 iterations): pass ``split_scale=0.5`` there. Tied covariances
need a wider split still (near 1): right after a split the shared covariance is the data's.

Every stage runs inside one compiled program: the mixture has ``max_components`` slots of which
the first ``size`` are active (masks), the split is a pure function of the parameters and the
stages are a ``lax.scan`` around the EM loop, so the EM program is compiled once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax import covariance as cov
from gmm_jax._jit import as_array
from gmm_jax.linalg import mm
from gmm_jax.types import GMMParams

Array = jax.Array


def stage_sizes(max_components: int) -> list[int]:
    """The sizes of the LBG stages: 1, 2, 4, ..., and ``max_components`` last.

    Example:
        >>> from gmm_jax.lbg import stage_sizes
        >>> stage_sizes(1), stage_sizes(8), stage_sizes(12)
        ([1], [1, 2, 4, 8], [1, 2, 4, 8, 12])
    """
    sizes = [1]
    while sizes[-1] < max_components:
        sizes.append(min(2 * sizes[-1], max_components))
    return sizes


def n_stages(max_components: int) -> int:
    return 1 + max(0, math.ceil(math.log2(max_components)))


def stage_schedule(n_active: np.ndarray | Array, max_components: int) -> Array:
    """(S, ...) number of active components at every stage for models of ``n_active``
    components (each model follows :func:`stage_sizes` of its own K, then stays there)."""
    s = jnp.arange(n_stages(max_components)).reshape((-1,) + (1,) * jnp.ndim(n_active))
    return jnp.minimum(2 ** s, jnp.asarray(n_active)[None]).astype(jnp.int32)


def principal_directions(params: GMMParams, data_direction: Array) -> tuple[Array, Array]:
    """(K, D) unit principal eigenvector of every component's covariance and (K,) its eigenvalue.

    Args:
        params: one mixture.
        data_direction: (D,) unit vector used by spherical types (no direction of their own).
    """
    ct = params.covariance_type
    k, d = params.means.shape
    c = cov.expand_covariances(params.covariances, ct, k, d)
    if cov.is_matrix(ct):
        if ct == "tied":
            lam, v = jnp.linalg.eigh(params.covariances)
            return jnp.broadcast_to(v[:, -1], (k, d)), jnp.broadcast_to(lam[-1], (k,))
        lam, v = jnp.linalg.eigh(c)
        return v[:, :, -1], lam[:, -1]
    if ct in ("spherical", "tied_spherical"):
        return jnp.broadcast_to(data_direction, (k, d)), c[:, 0]
    top = jnp.argmax(c, axis=1)
    return jax.nn.one_hot(top, d, dtype=c.dtype), jnp.max(c, axis=1)


def split_components(params: GMMParams, n_from, n_to, split_scale,
                     data_direction: Array) -> GMMParams:
    """Splits the ``n_to - n_from`` heaviest of the first ``n_from`` components.

    Component j (split) becomes ``mu_j - d_j`` in its slot and ``mu_j + d_j`` in slot
    ``n_from + rank_j``, each with half its weight and its covariance. ``n_from`` and ``n_to``
    may be traced; with ``n_to == n_from`` nothing changes.

    Args:
        params: one mixture with K slots, the first ``n_from`` active.
        n_from: active components now.
        n_to: active components after the split (``n_from <= n_to <= min(2 n_from, K)``).
        split_scale: the split offset in units of ``sqrt(lambda_max)``.
        data_direction: (D,) direction for spherical types.

    Returns:
        ``GMMParams`` with ``n_to`` active components.
    """
    ct = params.covariance_type
    k, _ = params.means.shape
    idx = jnp.arange(k)
    active = idx < n_from
    order = jnp.argsort(-jnp.where(active, params.weights, -jnp.inf))
    rank = jnp.zeros((k,), jnp.int32).at[order].set(jnp.arange(k, dtype=jnp.int32))
    split = active & (rank < (n_to - n_from))
    target = jnp.where(split, n_from + rank, k)  # out of range: dropped
    v, lam = principal_directions(params, data_direction)
    delta = split_scale * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None] * v
    half = jnp.where(split, params.weights / 2, params.weights)
    means = jnp.where(split[:, None], params.means - delta, params.means)
    means = means.at[target].set(params.means + delta, mode="drop")
    weights = half.at[target].set(params.weights / 2, mode="drop")

    def copy(a):
        if cov.is_tied(ct):
            return a
        return a.at[target].set(a, mode="drop")

    return params._replace(weights=weights, means=means, covariances=copy(params.covariances),
                           precisions_cholesky=copy(params.precisions_cholesky))


def data_direction(Y: Array, w: Array) -> Array:
    """(D,) principal eigenvector of the weighted covariance of centred rows ``Y``."""
    c = mm((Y * w[:, None]).T, Y) / jnp.sum(w)
    _, v = jnp.linalg.eigh(c)
    return v[:, -1]


def check_options(covariance_type, method, max_components, max_iter, tol, reg_covar,
                  split_scale, eigenvalue_floor):
    """Validates the options shared by :func:`fit_lbg` and ``fit_classifier_lbg`` (host side).

    Returns:
        (max_components, max_iter, tol, reg_covar, split_scale, eigenvalue_floor), checked.
    """
    from gmm_jax import estep, validation

    cov.check_covariance_type(covariance_type)
    estep.check_method(method)
    k = validation.check_positive_int(max_components, "max_components")
    max_iter, tol, reg_covar, eigenvalue_floor = validation.check_loop_options(
        max_iter, tol, reg_covar, eigenvalue_floor)
    split_scale = validation.check_nonneg_float(split_scale, "split_scale")
    return k, max_iter, tol, reg_covar, split_scale, eigenvalue_floor


def fit_lbg(key, X, max_components: int, *, covariance_type: str = "full",
            split_scale: float = 0.1, eigenvalue_floor=None, max_iter: int = 100,
            tol: float = 1e-6, reg_covar: float = 1e-6, sample_weight=None,
            method: str = "auto") -> tuple:
    """LBG growth: one EM fit per size 1, 2, 4, ..., ``max_components``, each started by
    splitting the previous one (the seed's procedure, all stages in one compiled program).

    Args:
        key: unused by the procedure (it is deterministic); accepted for a uniform API.
        X: (N, D) data.
        max_components: the last size; a size that is not a power of two is reached by
            splitting only the heaviest components of the stage before.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        split_scale: the split offset ``+/- split_scale * sqrt(lambda_max) * v_max``.
        eigenvalue_floor: optional floor on covariance eigenvalues at every M-step.
        max_iter: EM iterations per stage at most.
        tol: stopping tolerance of every stage (at most ``fitting.LBG_TOL``: after a split EM
            starts slowly, and a coarse tolerance would stop it on the saddle).
        reg_covar: added to covariance diagonals.
        sample_weight: optional (N,) weights.
        method: E-step form (see :func:`gmm_jax.fit`).

    Returns:
        tuple of ``FitResult``, one per size of :func:`stage_sizes` (component count
        1, 2, 4, ...).

    Example:
        >>> import numpy as np, gmm_jax
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-5, 1, (100, 2)), rng.normal(5, 1, (100, 2))]
        >>> fits = gmm_jax.fit_lbg(0, X, 2)
        >>> [f.params.means.shape[0] for f in fits]
        [1, 2]
    """
    from gmm_jax import estep, validation
    from gmm_jax.em import auto_chunk
    from gmm_jax.fitting import lbg_program, pad_to_bucket
    from gmm_jax.types import FitResult

    validation.check_key(key)
    k, max_iter, tol, reg_covar, split_scale, eigenvalue_floor = check_options(
        covariance_type, method, max_components, max_iter, tol, reg_covar, split_scale,
        eigenvalue_floor)
    X = validation.check_array(X, min_samples=k)
    n, d = X.shape
    sw = validation.check_sample_weight(sample_weight, n, X.dtype)
    X, w = pad_to_bucket(X, np.ones(n, X.dtype) if sw is None else np.asarray(sw, X.dtype))
    n_pad = X.shape[0]
    dtype = X.dtype
    stages, shift = lbg_program(
        as_array(X), as_array(w), jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype),
        None if eigenvalue_floor is None else jnp.asarray(eigenvalue_floor, dtype),
        n_components=k, covariance_type=covariance_type, max_iter=max_iter,
        chunk_size=auto_chunk(n_pad, k, d), method=method, split_scale=float(split_scale),
        exact_kernel=estep.exact_kernel(covariance_type, k, d))
    results = []
    # each stage taken apart on the host: op-by-op indexing would compile per stage and shape
    stages, shift = jax.tree.map(np.asarray, (stages, shift))
    tied = cov.is_tied(covariance_type)
    for s, size in enumerate(stage_sizes(k)):
        p = jax.tree.map(lambda a, s=s: a[s, 0, 0], stages["params"])
        p = GMMParams(p.weights[:size], p.means[:size] + shift[0],
                      p.covariances if tied else p.covariances[:size],
                      p.precisions_cholesky if tied else p.precisions_cholesky[:size],
                      covariance_type)
        pick = lambda a, s=s: as_array(a[s, 0, 0])  # noqa: E731
        lb = pick(stages["lower_bound"])
        results.append(FitResult(
            params=jax.tree.map(as_array, p), log_likelihood=lb,
            history=pick(stages["history"]), n_iter=pick(stages["n_iter"]),
            converged=pick(stages["converged"]), restart_log_likelihoods=lb[None],
            n_repaired=pick(stages["n_repaired"]), fast_path=as_array(stages["fast_path"][s])))
    return tuple(results)
