"""Data-parallel EM across devices (and hosts) with JAX's own sharding.

Rows of X are sharded over a 1-D device mesh; each device runs the E-step on its shard and the
sufficient statistics are summed with one ``psum`` per iteration (they are additive), so every
device holds the same parameters and takes the same M-step. The whole EM loop is one jitted
``lax.while_loop`` around a ``shard_map``ped E-step.

Multi-host: call ``jax.distributed.initialize()`` on every host, build the global array with
``jax.make_array_from_process_local_data(NamedSharding(mesh, P("data", None)), local_rows)`` and
pass it as ``X`` (with matching ``sample_weight``); the code path is the same.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gmm_jax import validation
from gmm_jax.em import _e_step_batch, em_iterations, fit
from gmm_jax.types import FitResult, GMMParams, SuffStats

Array = jax.Array


def data_mesh(devices=None, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with one axis for the rows."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (axis_name,))


def shard_rows(X, mesh: Mesh, *, sample_weight=None, axis_name: str = "data"):
    """Pads X to a multiple of the mesh size (zero-weight rows) and shards its rows.

    Returns:
        (X_sharded (N', D), weights_sharded (N',)) with N' the padded row count.
    """
    X = np.asarray(X)
    n = X.shape[0]
    n_dev = mesh.shape[axis_name]
    pad = (-n) % n_dev
    w = np.ones((n,), X.dtype) if sample_weight is None else np.asarray(sample_weight, X.dtype)
    if pad:
        X = np.concatenate([X, np.repeat(X[-1:], pad, axis=0)])
        w = np.concatenate([w, np.zeros((pad,), X.dtype)])
    rows = NamedSharding(mesh, P(axis_name, None))
    return jax.device_put(X, rows), jax.device_put(w, NamedSharding(mesh, P(axis_name)))


def sharded_e_step(params: GMMParams, X: Array, w: Array, shift: Array, *, mesh: Mesh,
                   axis_name: str = "data") -> tuple[SuffStats, Array]:
    """E-step on row-sharded data: local statistics on each device, then one ``psum``.

    Args:
        params: replicated mixture parameters.
        X: (N, D) rows sharded over ``axis_name``.
        w: (N,) sample weights sharded the same way (zero for padding rows).
        shift: (D,) point the moments are taken about (replicated).
        mesh: the device mesh.
        axis_name: mesh axis the rows are split over.

    Returns:
        (summed statistics, weighted mean log-likelihood), replicated.
    """

    def local(p, x, wt, s):
        stats, sum_ll = _e_step_batch(p, x, wt, s)
        stats, sum_ll = jax.lax.psum((stats, sum_ll), axis_name)
        return stats._replace(shift=s), sum_ll  # the shift is shared, not summed

    stats, sum_ll = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(axis_name, None), P(axis_name), P()),
        out_specs=P(),
    )(params, X, w, shift)
    return stats, sum_ll / jnp.sum(stats.Nk)


@partial(jax.jit, static_argnames=("mesh", "axis_name", "max_iter"))
def _sharded_em(params, X, w, shift, tol, reg_covar, *, mesh, axis_name, max_iter):
    def stats_fn(p):
        return sharded_e_step(p, X, w, shift, mesh=mesh, axis_name=axis_name)

    p, lb, hist, n_iter, conv, n_rep = em_iterations(params, stats_fn, tol, reg_covar,
                                                     max_iter=max_iter, loop="while")
    return FitResult(p, lb, hist, n_iter, conv, lb[None], n_rep)


def fit_sharded(
    key,
    X,
    n_components: int,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    sample_weight=None,
) -> FitResult:
    """EM with the rows of X sharded over devices; same iterates as :func:`gmm_jax.fit`.

    Args:
        key: PRNG key or int seed (initialisation only).
        X: (N, D) data (host array; it is padded and sharded here).
        n_components: K.
        mesh: 1-D device mesh (default: all local devices, see :func:`data_mesh`).
        axis_name: the mesh axis for rows.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        max_iter: maximum EM iterations.
        tol: convergence threshold on the change of the mean log-likelihood.
        reg_covar: added to covariance diagonals.
        init: initialisation method (see :func:`gmm_jax.fit`), run on one device.
        init_params: start from these parameters instead (then ``key`` is unused).
        sample_weight: optional (N,) weights.

    Returns:
        ``FitResult`` with replicated parameters.

    Example:
        >>> import numpy as np, gmm_jax
        >>> from gmm_jax.distributed import fit_sharded
        >>> X = np.random.default_rng(0).normal(size=(1000, 3))
        >>> fit_sharded(0, X, 2).params.means.shape
        (2, 3)
    """
    mesh = data_mesh(axis_name=axis_name) if mesh is None else mesh
    n_components, max_iter, tol, reg_covar = validation.check_em_options(
        n_components, max_iter, tol, reg_covar)
    X = validation.check_array(X, min_samples=n_components)
    sw = validation.check_sample_weight(sample_weight, X.shape[0], X.dtype)
    if init_params is None:
        # One EM step from the chosen initialisation, computed on a single device.
        init_params = fit(key, X, n_components, covariance_type=covariance_type, max_iter=1,
                          tol=0.0, init=init, reg_covar=reg_covar, sample_weight=sw).params
    w = np.ones((X.shape[0],), X.dtype) if sw is None else sw
    shift = (w @ X.astype(np.float64)) / w.sum()
    Xs, ws = shard_rows(X, mesh, sample_weight=w, axis_name=axis_name)
    params = jax.tree.map(lambda a: jnp.asarray(a, X.dtype), init_params)
    return _sharded_em(params, Xs, ws, jnp.asarray(shift, X.dtype), jnp.asarray(tol, X.dtype),
                       jnp.asarray(reg_covar, X.dtype), mesh=mesh, axis_name=axis_name,
                       max_iter=max_iter)
