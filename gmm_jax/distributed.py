"""Data-parallel EM across devices (and hosts) with JAX's own sharding.

Rows of X are sharded over a 1-D device mesh; each device runs the E-step on its shard and the
sufficient statistics are summed with one ``psum`` per iteration (they are additive), so every
device holds the same parameters and takes the same M-step. The whole EM loop is one jitted
``lax.while_loop`` around a ``shard_map``ped E-step.

With ``checkpoint=PATH`` (or a ``callback``) the same E-step runs under a host-driven loop
(``gmm_jax.streaming.fit_source``) that writes the EM state after every iteration and resumes
from it. Multi-process jobs (``jax.distributed``, each process with its own rows) use
:func:`gmm_jax.multihost.fit_multiprocess`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gmm_jax import checkpoint as ckpt
from gmm_jax import estep, streaming, validation
from gmm_jax._jit import cpu_tuned_jit
from gmm_jax.em import auto_chunk, em_iterations
from gmm_jax.fitting import fit
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


def sharded_e_step(params: GMMParams, X: Array, w: Array, *, mesh: Mesh, form: str = "exact",
                   axis_name: str = "data", chunk_size: int | None = None
                   ) -> tuple[SuffStats, Array]:
    """E-step on row-sharded, centred data: local statistics on each device, then one ``psum``.

    Args:
        params: replicated mixture parameters (centred like ``X``).
        X: (N, D) centred rows sharded over ``axis_name``.
        w: (N,) sample weights sharded the same way (zero for padding rows).
        mesh: the device mesh.
        form: ``"exact"`` or ``"fast"`` E-step form (static).
        axis_name: mesh axis the rows are split over.
        chunk_size: rows per chunk on each device (static).

    Returns:
        (summed statistics, weighted mean log-likelihood), replicated.
    """
    k, d = params.means.shape

    def local(p, x, wt):
        size = auto_chunk(x.shape[0], k, d) if chunk_size is None else chunk_size
        moments = estep.chunked_moments(p, x, wt, None, form=form, assignment="soft",
                                        chunk_size=size)
        Nk, Fk, Sk, sum_ll = jax.lax.psum(moments, axis_name)
        total = jax.lax.psum(jnp.sum(wt), axis_name)
        stats, sum_ll = estep.wrap_stats(p, (Nk, Fk, Sk, sum_ll), form)
        return stats, sum_ll / total

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(axis_name, None), P(axis_name)), out_specs=P(),
    )(params, X, w)


@cpu_tuned_jit(static_argnames=("mesh", "axis_name", "max_iter"))
def _sharded_em(params, X, w, tol, reg_covar, *, mesh, axis_name, max_iter):
    def stats_fn(p, form):
        stats, ll = sharded_e_step(jax.tree.map(lambda a: a[0], p), X, w, mesh=mesh, form=form,
                                   axis_name=axis_name)
        return jax.tree.map(lambda a: a[None], (stats, ll))

    out = em_iterations(jax.tree.map(lambda a: a[None], params), stats_fn, tol, reg_covar,
                        max_iter=max_iter, loop="while")
    pick = lambda a: a[0]  # noqa: E731
    return FitResult(jax.tree.map(pick, out["params"]), out["lower_bound"][0],
                     out["history"][0], out["n_iter"][0], out["converged"][0],
                     out["lower_bound"], out["n_repaired"][0],
                     out["fast_path"] & (jnp.arange(max_iter) < out["n_iter"][0]))


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
    checkpoint=None,
    callback=None,
) -> FitResult:
    """EM with the rows of X sharded over devices; same iterates as :func:`gmm_jax.fit`.

    Args:
        key: PRNG key or int seed (initialisation only).
        X: (N, D) data (host array; it is padded and sharded here).
        n_components: K.
        mesh: 1-D device mesh (default: all local devices, see :func:`data_mesh`).
        axis_name: the mesh axis for rows.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        max_iter: maximum EM iterations.
        tol: convergence threshold on the change of the mean log-likelihood.
        reg_covar: added to covariance diagonals.
        init: initialisation method (see :func:`gmm_jax.fit`), run on one device.
        init_params: start from these parameters instead (then ``key`` is unused).
        sample_weight: optional (N,) weights.
        checkpoint: optional file path: the EM state is written there after every iteration
            and a later call with the same data and arguments resumes from it (see
            :func:`gmm_jax.fit_batches`). The loop then runs on the host, one jitted sharded
            E-step per iteration, instead of as one compiled ``while_loop``.
        callback: optional ``callback(iteration, lower_bound, change, fast)`` after each
            iteration (also selects the host-driven loop).

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
    checkpoint = ckpt.check_path(checkpoint)
    if checkpoint is not None or callback is not None:
        streaming.check_options(n_components, covariance_type, max_iter, tol, reg_covar, init,
                                1, 1, None, callback)

        def init_fn():
            return fit(key, X, n_components, covariance_type=covariance_type, max_iter=1,
                       tol=0.0, init=init, reg_covar=reg_covar, sample_weight=sw).params

        reader = streaming.BatchReader(X, X.shape[0], sample_weight=sw)
        return streaming.fit_source(
            key, reader, n_components, covariance_type=covariance_type, max_iter=max_iter,
            tol=tol, reg_covar=reg_covar, init=init, init_params=init_params,
            init_sample_size=X.shape[0], chunk_size=None, dtype=X.dtype,
            mesh=streaming.row_mesh(np.asarray(mesh.devices).ravel()), checkpoint=checkpoint,
            callback=callback, kind="fit_sharded", init_fn=init_fn)
    if init_params is None:
        # One EM step from the chosen initialisation, computed on a single device.
        init_params = fit(key, X, n_components, covariance_type=covariance_type, max_iter=1,
                          tol=0.0, init=init, reg_covar=reg_covar, sample_weight=sw).params
    w = np.ones((X.shape[0],), X.dtype) if sw is None else sw
    shift = ((w @ X.astype(np.float64)) / w.sum()).astype(X.dtype)
    Xs, ws = shard_rows(X - shift, mesh, sample_weight=w, axis_name=axis_name)
    params = jax.tree.map(lambda a: jnp.asarray(a, X.dtype), init_params)
    params = params._replace(means=params.means - shift)
    res = _sharded_em(params, Xs, ws, jnp.asarray(tol, X.dtype),
                      jnp.asarray(reg_covar, X.dtype), mesh=mesh, axis_name=axis_name,
                      max_iter=max_iter)
    p = res.params
    return res._replace(params=p._replace(means=p.means + shift))
