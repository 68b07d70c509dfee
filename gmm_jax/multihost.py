"""Multi-process EM on JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program on its own rows (held in memory, memory-mapped, or read
from its own files, as in :func:`gmm_jax.fit_batches`). Per EM iteration each process computes
the E-step moments of its rows on its local devices (rows sharded over them, one ``psum`` among
them), and the moments ``(Nk, Fk, Sk, sum log-likelihood)`` of all processes are summed with one
``psum`` over a global mesh of every process's devices (``("processes", "local")``): on CPU the
collective runs over gloo (TCP), on GPU over NCCL, on TPU over ICI/DCN; the code is the same.
Every process then takes the same M-step from the same sums, so all end each iteration with the
same parameters (checked at the end), and every decision of the loop (E-step form, stopping)
follows from those identical values: all processes run the same number of collectives.

The data mean (the shift the moments are taken about), the row counts and a random
initialisation sample are exchanged once at the start; the checkpoint (``checkpoint=PATH``) is
written by process 0 after every iteration, and on a restart process 0 reads it, checks it and
broadcasts the state, so the other processes need no shared file system.

Launch: every process calls :func:`initialize` (a thin layer over ``jax.distributed.initialize``
that selects gloo collectives on CPU) before any other JAX call, then
:func:`fit_multiprocess` with its own rows. ``examples/multihost_em.py`` launches N local
processes on the loopback address.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gmm_jax import checkpoint as ckpt
from gmm_jax import streaming, validation
from gmm_jax.types import FitResult, GMMParams

__all__ = ["ProcessGroup", "fit_multiprocess", "initial_params", "initialize"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None,
               cpu_collectives: str | None = "gloo", initialization_timeout: int = 300,
               heartbeat_timeout_seconds: int = 100) -> None:
    """Joins this process to a multi-process JAX job (call once, before any other JAX call).

    Arguments left as None are read from the environment: ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; failing those,
    ``jax.distributed`` detects SLURM (``srun``), Open MPI and TPU pods by itself.

    Args:
        coordinator_address: ``"host:port"`` where process 0 serves the coordination service.
        num_processes: number of processes in the job.
        process_id: this process's index in ``[0, num_processes)``.
        local_device_ids: optional device ids this process uses (GPU jobs with one process per
            GPU: ``[local_rank]``).
        cpu_collectives: CPU collective backend, ``"gloo"`` (TCP; works everywhere) or
            ``"mpi"``; None leaves JAX's default. Ignored for GPU/TPU computations.
        initialization_timeout: seconds to wait for all processes to connect.
        heartbeat_timeout_seconds: a process that stops answering for this long fails the job.

    Raises:
        ValueError: inconsistent or missing arguments.
        RuntimeError: called after JAX already created its backends (an array, ``jax.devices()``
            or a computation ran first).

    Example:
        >>> # on each of 2 hosts (process_id 0 and 1):
        >>> # gmm_jax.multihost.initialize("10.0.0.1:12355", 2, process_id)   # doctest: +SKIP
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    if num_processes is not None:
        num_processes = validation.check_positive_int(num_processes, "num_processes")
        if process_id is not None and not 0 <= int(process_id) < num_processes:
            raise ValueError(f"process_id must lie in [0, {num_processes}), got {process_id}.")
    if cpu_collectives is not None:
        if cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(f"cpu_collectives must be 'gloo', 'mpi' or None, got "
                             f"{cpu_collectives!r}.")
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id, local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    except RuntimeError as err:
        if "before" in str(err) or "already" in str(err):
            raise RuntimeError(
                "gmm_jax.multihost.initialize must run before any other JAX call in this process "
                f"(arrays, jax.devices(), computations): {err}") from err
        raise


# ------------------------------------------------------------------------- exchanges
def _words(a: np.ndarray) -> np.ndarray:
    """The bytes of ``a`` as uint32 words (exact transport whatever the dtype and x64 mode)."""
    raw = np.ascontiguousarray(a).tobytes()
    raw += b"\0" * (-len(raw) % 4)
    return np.frombuffer(raw, np.uint32).copy()


def _unwords(words: np.ndarray, like: np.ndarray) -> np.ndarray:
    like = np.asarray(like)
    nbytes = like.size * like.dtype.itemsize
    return np.frombuffer(np.ascontiguousarray(words).tobytes()[:nbytes],
                         like.dtype).reshape(like.shape).copy()


class ProcessGroup:
    """Cross-process operations of a multi-process fit (every process must call each one, in
    the same order, with arrays of the same shapes).

    Attributes:
        n_processes, process_index: ``jax.process_count()``, ``jax.process_index()``.
        is_writer: whether this process writes checkpoints (process 0).
        mesh: the global ``("processes", "local")`` mesh of every process's devices.
    """

    def __init__(self):
        self.n_processes = jax.process_count()
        self.process_index = jax.process_index()
        self.is_writer = self.process_index == 0
        groups = [[d for d in jax.devices() if d.process_index == p]
                  for p in range(self.n_processes)]
        sizes = {len(g) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"every process must have the same number of devices, got "
                             f"{[len(g) for g in groups]}.")
        self.mesh = Mesh(np.asarray(groups), ("processes", "local"))
        self._rows = NamedSharding(self.mesh, P("processes"))

        def total(tree):
            return jax.tree.map(lambda x: jax.lax.psum(x[0], "processes"), tree)

        self._psum = jax.jit(jax.shard_map(total, mesh=self.mesh, in_specs=P("processes"),
                                           out_specs=P()))

    def sum_moments(self, moments):
        """Each leaf summed over processes with one ``psum`` over the global mesh; host arrays,
        identical on every process."""
        local = [np.asarray(m)[None] for m in moments]
        glob = [jax.make_array_from_process_local_data(self._rows, a) for a in local]
        out = self._psum(glob)
        return tuple(np.asarray(o.addressable_data(0)) for o in out)

    def allgather(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Each array stacked over processes, (n_processes, ...), bit-exact."""
        gathered = multihost_utils.process_allgather([_words(a) for a in arrays])
        return [np.stack([_unwords(g[p], a) for p in range(self.n_processes)])
                for g, a in zip(gathered, arrays, strict=True)]

    def broadcast(self, tree):
        """Process 0's values of a pytree of host arrays (same shapes everywhere), bit-exact."""
        leaves, treedef = jax.tree.flatten(tree)
        leaves = [np.asarray(v) for v in leaves]
        out = multihost_utils.broadcast_one_to_all([_words(v) for v in leaves])
        return jax.tree.unflatten(treedef, [_unwords(w, v) for w, v in zip(out, leaves,
                                                                            strict=True)])

    def check_same(self, params: GMMParams) -> None:
        """Raises ``RuntimeError`` if the processes ended with different parameters."""
        digest = np.frombuffer(bytes.fromhex(streaming._params_digest(params)), np.uint8)
        all_digests = self.allgather([digest])[0]
        if np.any(all_digests != all_digests[0]):
            raise RuntimeError(
                "the processes ended with different parameters although they summed the same "
                "statistics: the processes must run the same gmm_jax, JAX and hardware type "
                "(the M-step is computed on every process).")


def _exchange():
    return streaming.SingleProcess() if jax.process_count() == 1 else ProcessGroup()


def local_mesh() -> Mesh:
    """1-D mesh over this process's devices (the rows of each batch are sharded over it)."""
    return streaming.row_mesh(jax.local_devices())


# ------------------------------------------------------------------------------ fitting
def fit_multiprocess(
    key,
    local_data,
    n_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    init_sample_size: int = 10_000,
    batch_size: int = streaming.DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    dtype=np.float32,
    checkpoint=None,
    callback: Callable | None = None,
) -> FitResult:
    """Exact EM over the rows of all processes of a ``jax.distributed`` job.

    Call it on every process (after :func:`initialize`) with the same arguments except
    ``local_data``: each process passes its own rows. The E-step moments are summed across
    processes once per iteration (one ``psum`` over the global device mesh); every process
    returns the same ``FitResult``, the EM iterates of :func:`gmm_jax.fit` on all rows from the
    same initial parameters. With one process it is :func:`gmm_jax.fit_batches` on all local
    devices.

    Args:
        key: PRNG key or int seed, the same on every process (initialisation only).
        local_data: this process's rows: an (n_p, D) array (in memory or memory-mapped), a
            ``.npy`` path, a list of them, or a function returning a fresh iterator of them (see
            :func:`gmm_jax.fit_batches`). Processes may hold different numbers of rows.
        n_components: K.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        max_iter: maximum EM iterations.
        tol: stop when the mean log-likelihood (over all rows) changes by less than this.
        reg_covar: added to covariance diagonals.
        init: initialisation method (see :func:`gmm_jax.fit`) run on a random sample of rows
            gathered from all processes (:func:`initial_params`).
        init_params: start from these parameters instead (the same on every process).
        init_sample_size: rows in the initialisation sample (over all processes).
        batch_size: most rows per batch read from this process's files or memory maps.
        chunk_size: rows per E-step chunk on each device.
        dtype: computation dtype (float64 needs x64 on every process).
        checkpoint: optional file path; process 0 writes the EM state there after every
            iteration (atomically, ``.npz`` + JSON, no pickle). Relaunching the job with the
            same path, data split and arguments resumes (process 0 reads the file and broadcasts
            the state); a checkpoint of other data, sizes or options is refused on every process
            with a ``ValueError``.
        callback: optional ``callback(iteration, lower_bound, change, fast)`` called on every
            process after each iteration.

    Returns:
        ``FitResult``, identical on every process.

    Example:
        >>> # on every process, after gmm_jax.multihost.initialize(...):
        >>> # X_local = np.load("data.npy", mmap_mode="r")[lo:hi]          # doctest: +SKIP
        >>> # res = gmm_jax.multihost.fit_multiprocess(0, X_local, 64)     # doctest: +SKIP
    """
    dtype = validation.float_dtype(dtype) if dtype is not None else np.dtype(np.float32)
    (n_components, max_iter, tol, reg_covar, batch_size, init_sample_size,
     chunk_size) = streaming.check_options(n_components, covariance_type, max_iter, tol,
                                           reg_covar, init, batch_size, init_sample_size,
                                           chunk_size, callback)
    checkpoint = ckpt.check_path(checkpoint)
    reader = streaming.BatchReader(local_data, batch_size)
    return streaming.fit_source(
        key, reader, n_components, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
        reg_covar=reg_covar, init=init, init_params=init_params,
        init_sample_size=init_sample_size, chunk_size=chunk_size, dtype=dtype,
        mesh=local_mesh(), exchange=_exchange(), checkpoint=checkpoint, callback=callback,
        kind="fit_multiprocess")


def initial_params(
    key,
    local_data,
    n_components: int,
    *,
    covariance_type: str = "full",
    init: str = "kmeans",
    reg_covar: float = 1e-6,
    init_sample_size: int = 10_000,
    batch_size: int = streaming.DEFAULT_BATCH_SIZE,
    dtype=np.float32,
) -> GMMParams:
    """The initial parameters :func:`fit_multiprocess` starts from (call on every process).

    ``min(init_sample_size, N)`` rows are drawn uniformly at random (from ``key``) from the rows
    of all processes and gathered; one EM step of :func:`gmm_jax.fit` with method ``init`` on
    them gives the start; process 0's result is broadcast, so it is identical on every process.
    Pass it as ``init_params`` (and to a single-process reference fit) to compare fits from one
    start.

    Returns:
        ``GMMParams`` (NumPy leaves, data coordinates).
    """
    dtype = validation.float_dtype(dtype) if dtype is not None else np.dtype(np.float32)
    n_components, *_ = streaming.check_options(n_components, covariance_type, 1, 0.0, reg_covar,
                                               init, batch_size, init_sample_size, None, None)
    key = validation.check_key(key)
    exchange = _exchange()
    reader = streaming.BatchReader(local_data, batch_size)
    g = streaming.global_scan(reader, np.dtype(dtype), exchange, digest=False)
    if g.n_samples < n_components:
        raise ValueError(f"the data hold {g.n_samples} samples, fewer than n_components="
                         f"{n_components}.")
    return streaming.sampled_init(key, reader, g, exchange, n_components,
                                  covariance_type=covariance_type, init=init,
                                  reg_covar=reg_covar, init_sample_size=init_sample_size,
                                  dtype=np.dtype(dtype))
