"""EM over data that does not fit in memory: exact batch EM and online (stepwise) EM.

Because the E-step returns additive sufficient statistics, one exact EM iteration over a data set
split into batches is: sum the batches' statistics, then one M-step. ``fit_batches`` does this
over a *source* of rows, read again on every iteration:

* a path to a 2-D ``.npy`` file, or a list of paths: each file is read a batch of rows at a
  time (``batch_size`` rows by positioned reads; the file is never loaded whole);
* an array, including a memory-mapped one (``np.load(f, mmap_mode="r")``) or any object with
  ``shape``, ``dtype`` and row slicing (an HDF5 dataset); an in-memory NumPy or JAX array is
  kept on the device between iterations;
* a list/tuple of such arrays or paths, or a zero-argument function returning a fresh iterator
  of them (a generator function reading from disk). Every item is cut into row slices of at most
  ``batch_size`` rows.

It gives the iterates of :func:`gmm_jax.fit` on the concatenated data from the same initial
parameters (same stopping rule, same per-iteration choice of E-step form from the computed error
bound, parameters in coordinates centred on the data mean). Every batch is padded to one shape
(zero-weight rows), so the jitted E-step compiles once per form. With ``checkpoint=PATH`` the
state is written after every iteration (``gmm_jax.checkpoint``) and a later call resumes.

The loop here is host-driven (one jitted E-step per batch, statistics summed, one jitted M-step),
which is what lets batches come from disk, lets a fit be checkpointed and resumed, and lets
statistics be summed across processes (``gmm_jax.multihost``) and devices
(``gmm_jax.distributed``): those modules call :func:`fit_source` with their own device mesh and
cross-process reduction.

``online_em`` is Cappe & Moulines' stepwise EM: running statistics are blended with each batch's
(rescaled to the data size) with step ``rho_t = (t + 2) ** -kappa``, then an M-step; one pass over
a stream, for data that arrive once.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gmm_jax import checkpoint as ckpt
from gmm_jax import covariance as cov
from gmm_jax import estep, validation
from gmm_jax.density import responsibilities
from gmm_jax.em import (
    auto_chunk,
    default_shift,
    m_step,
    repair_components,
    stats_from_responsibilities,
)
from gmm_jax.fitting import fit
from gmm_jax.init import check_init
from gmm_jax.types import FitResult, GMMParams

Array = jax.Array
BatchSource = Iterable | Callable[[], Iterable]

#: Rows per batch read from files and memory-mapped arrays (8 MiB of float32 at D = 32).
DEFAULT_BATCH_SIZE = 65_536
#: Batches dispatched to the device before the host waits for the oldest (bounds memory).
_IN_FLIGHT = 2

__all__ = ["DEFAULT_BATCH_SIZE", "NpyFile", "fit_batches", "fit_source", "online_em"]


# ------------------------------------------------------------------------------- sources
class NpyFile:
    """Reads row ranges of a 2-D ``.npy`` file without loading (or mapping) the whole file.

    Rows are read with positioned reads into a fresh array, so the process holds only the rows
    asked for (a memory map would count every page it has touched in the resident set).

    Args:
        path: the ``.npy`` file.

    Raises:
        ValueError: missing or unreadable file, not a ``.npy`` file, object dtype, not 2-D, or
            shorter than its header says.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from gmm_jax.streaming import NpyFile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
        >>> np.save(path, np.arange(12.0).reshape(6, 2))
        >>> f = NpyFile(path)
        >>> f.shape, f.read(2, 4).tolist()
        ((6, 2), [[4.0, 5.0], [6.0, 7.0]])
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            f = open(self.path, "rb")
        except OSError as err:
            raise ValueError(f"cannot read the data file {self.path!r}: {err.strerror}.") from err
        with f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:  # version 3 (UTF-8 field names): let numpy map it
                    shape, fortran, dtype = None, None, None
            except ValueError as err:
                raise ValueError(f"{self.path!r} is not a .npy file ({err}); write data files "
                                 "with numpy.save.") from err
            self.offset = f.tell()
        self._mmap = None
        if shape is None:
            self._mmap = np.load(self.path, mmap_mode="r", allow_pickle=False)
            shape, dtype, fortran = self._mmap.shape, self._mmap.dtype, False
        if dtype.hasobject:
            raise ValueError(f"{self.path!r} holds Python objects (dtype {dtype}); data files "
                             "must hold numbers.")
        if len(shape) != 2:
            raise ValueError(f"{self.path!r} holds an array of shape {tuple(shape)}; data files "
                             "must be 2-D (n_samples, n_features).")
        need = self.offset + int(np.prod(shape)) * dtype.itemsize
        if self._mmap is None and os.path.getsize(self.path) < need:
            raise ValueError(f"{self.path!r} is truncated: its header announces {tuple(shape)} "
                             f"{dtype} ({need} bytes) but the file has "
                             f"{os.path.getsize(self.path)} bytes.")
        if fortran and self._mmap is None:
            self._mmap = np.load(self.path, mmap_mode="r", allow_pickle=False)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new (stop - start, D) array of the file's dtype."""
        if self._mmap is not None:
            return np.array(self._mmap[start:stop])
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        view = memoryview(out).cast("B")
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset + start * row_bytes)
            got = 0
            while got < len(view):
                k = f.readinto(view[got:])
                if not k:
                    raise ValueError(f"{self.path!r} ended while reading rows {start}:{stop} "
                                     "(the file was truncated during the fit?).")
                got += k
        return out


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _is_array(x) -> bool:
    return all(hasattr(x, a) for a in ("shape", "dtype", "__getitem__")) and not _is_path(x)


def _in_memory(x) -> bool:
    return (isinstance(x, np.ndarray) and not isinstance(x, np.memmap)) or \
        isinstance(x, jax.Array)


class BatchReader:
    """A re-iterable source of rows cut into validated batches of at most ``batch_size`` rows.

    Args:
        source: see the module docstring (path, array, list/tuple of them, or a zero-argument
            function returning a fresh iterator of them).
        batch_size: most rows per batch.
        sample_weight: optional (N,) weights, only for a single in-memory array.
    """

    def __init__(self, source, batch_size: int, *, sample_weight=None):
        self.batch_size = batch_size
        self.resident = _in_memory(source)
        self.sample_weight = sample_weight
        if sample_weight is not None and not self.resident:
            raise ValueError("sample_weight is supported for one in-memory array only.")
        if _is_path(source) or _is_array(source):
            self._factory = lambda: iter((source,))
        elif isinstance(source, (list, tuple)):
            self._factory = lambda: iter(source)
        elif callable(source):
            def factory():
                items = source()
                if _is_path(items) or _is_array(items):
                    return iter((items,))
                if not isinstance(items, Iterable):
                    raise TypeError(f"the batch source function returned "
                                    f"{type(items).__name__}, not an iterable of batches.")
                return iter(items)
            self._factory = factory
        elif isinstance(source, Iterable):
            if iter(source) is source:
                raise TypeError(
                    "the batch source is a one-shot iterator (e.g. a generator), but EM reads the "
                    "data once per iteration. Pass a list, or a zero-argument function that "
                    "returns a fresh iterator, e.g. `lambda: (np.load(f, mmap_mode='r') for f in "
                    "files)`, or simply the list of .npy paths.")
            self._factory = lambda: iter(source)
        else:
            raise TypeError(f"batches must be a .npy path, an array, a list/tuple of them or a "
                            f"function returning an iterator of them; got "
                            f"{type(source).__name__}.")

    def resident_array(self, dtype) -> np.ndarray:
        """The single in-memory array, validated and converted once."""
        if getattr(self, "_resident", None) is None or self._resident.dtype != dtype:
            self._resident = validation.check_array(next(self._factory()), dtype=dtype)
        return self._resident

    def batches(self, dtype, n_features: int | None = None, first_name: str | None = None
                ) -> Iterator[tuple[str, np.ndarray]]:
        """Yields ``(name, batch)``: finite 2-D arrays of ``dtype``, at most ``batch_size`` rows.

        Raises:
            ValueError: a batch that is not 2-D, empty, holds NaN/inf, or has a different number
                of features than the first.
        """
        bs = self.batch_size
        for j, item in enumerate(self._factory()):
            if _is_path(item):
                f = NpyFile(item)
                n, d_item, read, label = f.shape[0], f.shape[1], f.read, f"file {f.path!r}"
            else:
                if not _is_array(item):
                    item = validation.check_array(item, name=f"batch {j}", dtype=dtype)
                if len(item.shape) != 2:
                    raise ValueError(f"batch {j} must be 2-D (n_samples, n_features), got shape "
                                     f"{tuple(item.shape)}.")
                n, d_item, label = int(item.shape[0]), int(item.shape[1]), f"batch {j}"

                def read(a, b, item=item):
                    return item[a:b]
            if n_features is not None and d_item != n_features:
                raise ValueError(f"{label} has {d_item} features, but {first_name or 'batch 0'} "
                                 f"has {n_features} features.")
            if n == 0:
                raise ValueError(f"{label} is empty (0 rows); remove it from the source.")
            for a in range(0, n, bs):
                b = min(n, a + bs)
                name = label if (a == 0 and b == n) else f"{label} rows {a}:{b}"
                x = validation.check_array(read(a, b), name=name, dtype=dtype)
                if n_features is None:
                    n_features, first_name = d_item, name
                yield name, x


class ScanInfo(NamedTuple):
    """What one pass over the local rows tells: sizes, the weighted sum, the data checksum."""

    n_samples: int
    n_features: int
    batch_rows: int
    sum: np.ndarray  # (D,) float64 weighted column sums
    weight: float  # total weight
    digest: str | None
    first_name: str


def scan_source(reader: BatchReader, dtype, *, digest: bool) -> ScanInfo:
    """One pass: row count, feature count, largest batch, float64 sums and (optionally) the
    BLAKE2b checksum of the rows as read."""
    h = ckpt.DataDigest() if digest else None
    n, d, rows, total, first = 0, None, 0, None, None
    if reader.resident:
        X = reader.resident_array(dtype)
        w = reader.sample_weight
        if h is not None:
            h.update(X)
            if w is not None:
                h.update(np.asarray(w))
        s = (X.sum(axis=0, dtype=np.float64) if w is None
             else np.asarray(w, np.float64) @ X.astype(np.float64))
        weight = float(X.shape[0] if w is None else np.sum(w, dtype=np.float64))
        return ScanInfo(X.shape[0], X.shape[1], X.shape[0], s, weight,
                        None if h is None else h.hexdigest(), "X")
    for name, b in reader.batches(dtype):
        if d is None:
            d, first = b.shape[1], name
        elif b.shape[1] != d:
            raise ValueError(f"{name} has {b.shape[1]} features, but {first} has {d} features.")
        rows = max(rows, b.shape[0])
        n += b.shape[0]
        s = b.sum(axis=0, dtype=np.float64)
        total = s if total is None else total + s
        if h is not None:
            h.update(b)
    if n == 0:
        raise ValueError("the batch source yielded no data.")
    return ScanInfo(n, d, rows, total, float(n), None if h is None else h.hexdigest(), first)


def take_rows(reader: BatchReader, dtype, index: np.ndarray, n_features: int) -> np.ndarray:
    """Rows at the sorted local indices ``index`` (one pass over the source)."""
    out = np.empty((len(index), n_features), dtype)
    if len(index) == 0:
        return out
    if reader.resident:
        X = reader.resident_array(dtype)
        out[:] = X[index]
        return out
    start, pos = 0, 0
    for _, b in reader.batches(dtype, n_features):
        stop = start + b.shape[0]
        hi = np.searchsorted(index, stop, side="left")
        if hi > pos:
            out[pos:hi] = b[index[pos:hi] - start]
            pos = hi
        start = stop
        if pos == len(index):
            break
    return out


# ---------------------------------------------------------------------- per-batch E-step
def row_mesh(devices=None, axis_name: str = "rows") -> Mesh:
    """1-D mesh over ``devices`` (default: the default device only) for a batch's rows."""
    devs = [jax.devices()[0]] if devices is None else list(devices)
    return Mesh(np.asarray(devs), (axis_name,))


@partial(jax.jit, static_argnames=("mesh", "form", "chunk_size"))
def _local_moments(params: GMMParams, X: Array, w: Array, shift: Array, *, mesh: Mesh,
                   form: str, chunk_size: int):
    """(Nk, Fk, Sk, sum_ll) of a row-sharded batch about the data mean: each device's rows,
    then one ``psum`` over the mesh (the devices of this process)."""
    axis = mesh.axis_names[0]

    def local(p, x, wt, s):
        moments = estep.chunked_moments(p, x - s, wt, None, form=form, assignment="soft",
                                        chunk_size=chunk_size)
        return jax.lax.psum(moments, axis)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis, None), P(axis), P()),
                         out_specs=P())(params, X, w, shift)


@jax.jit
def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


@jax.jit
def _fast_form_ok(params: GMMParams, lower_bound: Array, first) -> Array:
    return estep.fast_form_ok(params, lower_bound, first)


@partial(jax.jit, static_argnames=("form",))
def _m_step_moments(params: GMMParams, moments, reg_covar, *, form: str):
    stats, _ = estep.wrap_stats(params, moments, "fast" if form == "fast" else "exact")
    new = m_step(stats, reg_covar=reg_covar)
    return repair_components(new, stats)


def _padded(batch: np.ndarray, size: int, weights: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    n = batch.shape[0]
    w = np.ones((size,), batch.dtype)
    if weights is not None:
        w[:n] = weights
    if n < size:
        batch = np.concatenate([batch, np.zeros((size - n, batch.shape[1]), batch.dtype)])
        w[n:] = 0.0
    return batch, w


class LocalData:
    """The rows of this process, ready for the per-iteration E-step on ``mesh``.

    An in-memory array is padded, sharded over the mesh and kept there; other sources are read
    again on every pass, a batch at a time, each padded to one shape (one compiled program).
    """

    def __init__(self, reader: BatchReader, scan: ScanInfo, dtype, mesh: Mesh, n_components: int,
                 chunk_size: int | None):
        self.reader, self.scan, self.dtype, self.mesh = reader, scan, np.dtype(dtype), mesh
        n_dev = mesh.devices.size
        self.rows = -(-scan.batch_rows // n_dev) * n_dev
        per_device = self.rows // n_dev
        self.chunk_size = (auto_chunk(per_device, n_components, scan.n_features)
                           if chunk_size is None else min(chunk_size, per_device))
        axis = mesh.axis_names[0]
        self._x_sharding = NamedSharding(mesh, P(axis, None))
        self._w_sharding = NamedSharding(mesh, P(axis))
        self._device = None
        if reader.resident:
            X = reader.resident_array(dtype)
            sw = reader.sample_weight
            Xp, wp = _padded(X, self.rows, None if sw is None else np.asarray(sw, dtype))
            self._device = self._put(Xp, wp)

    def _put(self, X, w):
        return jax.device_put(X, self._x_sharding), jax.device_put(w, self._w_sharding)

    def moments(self, params: GMMParams, shift: np.ndarray, form: str):
        """Local (Nk, Fk, Sk, sum_ll) under ``params`` (centred) in the E-step ``form``."""
        kw = dict(mesh=self.mesh, form=form, chunk_size=self.chunk_size)
        if self._device is not None:
            return _local_moments(params, *self._device, shift, **kw)
        acc, pending, n = None, deque(), 0
        for _, b in self.reader.batches(self.dtype, self.scan.n_features,
                                        self.scan.first_name):
            n += b.shape[0]
            m = _local_moments(params, *self._put(*_padded(b, self.rows)), shift, **kw)
            acc = m if acc is None else _add(acc, m)
            pending.append(acc)
            if len(pending) > _IN_FLIGHT:  # bound the batches queued on the device
                jax.block_until_ready(pending.popleft())
        if n != self.scan.n_samples:
            raise ValueError(f"the batch source yielded {n} rows on this pass but "
                             f"{self.scan.n_samples} on the first: a source must give the same "
                             "rows on every pass (a function returning a fresh iterator, not a "
                             "generator that changes).")
        return acc


# --------------------------------------------------------------------- process exchange
class SingleProcess:
    """Cross-process operations of a fit that runs in one process (identities).

    ``gmm_jax.multihost`` provides the multi-process version: statistics summed with a
    ``psum`` over a global device mesh, values broadcast from process 0, all-gathers.
    """

    n_processes = 1
    process_index = 0
    is_writer = True

    def allgather(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Each array stacked over processes: (n_processes, ...)."""
        return [np.asarray(a)[None] for a in arrays]

    def broadcast(self, tree):
        """Process 0's values of a pytree of host arrays, on every process."""
        return jax.tree.map(np.asarray, tree)

    def sum_moments(self, moments):
        """Moments summed over processes, as host arrays."""
        return jax.tree.map(np.asarray, moments)

    def check_same(self, params: GMMParams) -> None:
        """Raises if processes ended with different parameters (never here)."""


def _params_digest(params: GMMParams) -> str:
    h = ckpt.DataDigest()
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        h.update(np.asarray(getattr(params, name), np.float64))
    return h.hexdigest()


def _check_init_params(init_params, k: int, d: int, covariance_type: str) -> GMMParams:
    if not isinstance(init_params, GMMParams):
        raise TypeError(f"init_params must be GMMParams, got {type(init_params).__name__}.")
    if init_params.covariance_type != covariance_type:
        raise ValueError(f"init_params has covariance_type {init_params.covariance_type!r}, but "
                         f"covariance_type={covariance_type!r}.")
    shape = cov.covariance_shape(covariance_type, k, d)
    want = dict(weights=(k,), means=(k, d), covariances=shape, precisions_cholesky=shape)
    for name, s in want.items():
        a = np.asarray(getattr(init_params, name))
        if a.shape != s:
            raise ValueError(f"init_params.{name} has shape {a.shape}, expected {s} for "
                             f"n_components={k}, {d} features, covariance_type "
                             f"{covariance_type!r}.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"init_params.{name} holds NaN or infinite values.")
    return init_params


def check_options(n_components, covariance_type, max_iter, tol, reg_covar, init, batch_size,
                  init_sample_size, chunk_size, callback) -> tuple:
    """Validates the options of :func:`fit_source` callers; returns them normalised."""
    n_components, max_iter, tol, reg_covar = validation.check_em_options(
        n_components, max_iter, tol, reg_covar)
    cov.check_covariance_type(covariance_type)
    check_init(init)
    batch_size = validation.check_positive_int(batch_size, "batch_size")
    init_sample_size = validation.check_positive_int(init_sample_size, "init_sample_size")
    if chunk_size is not None:
        chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}.")
    return n_components, max_iter, tol, reg_covar, batch_size, init_sample_size, chunk_size


class GlobalScan(NamedTuple):
    """The first pass over the data of every process, combined (identical on every process)."""

    scan: ScanInfo  # this process's
    counts: np.ndarray  # (n_processes,) rows of each process
    offsets: np.ndarray  # (n_processes + 1,) global index of each process's first row
    n_samples: int
    weight: float
    shift: np.ndarray  # (D,) the weighted data mean, computation dtype


def global_scan(reader: BatchReader, dtype, exchange, *, digest: bool) -> GlobalScan:
    """:func:`scan_source` on every process, combined: sizes, offsets and the data mean."""
    scan = scan_source(reader, dtype, digest=digest)
    info = np.concatenate([[scan.n_samples, scan.n_features, scan.weight], scan.sum])
    gathered = exchange.allgather([info.astype(np.float64)])[0]
    dims = gathered[:, 1].astype(np.int64)
    if np.any(dims != scan.n_features):
        raise ValueError(f"the processes hold different numbers of features: {dims.tolist()} "
                         "(process 0, 1, ...).")
    counts = gathered[:, 0].astype(np.int64)
    weight = float(np.sum(gathered[:, 2]))
    shift = (np.sum(gathered[:, 3:], axis=0) / weight).astype(dtype)
    return GlobalScan(scan, counts, np.concatenate([[0], np.cumsum(counts)]),
                      int(counts.sum()), weight, shift)


def sampled_init(key, reader: BatchReader, g: GlobalScan, exchange, n_components: int, *,
                 covariance_type: str, init: str, reg_covar: float, init_sample_size: int,
                 dtype) -> GMMParams:
    """Initial parameters (data coordinates, host arrays), identical on every process.

    ``min(init_sample_size, N)`` global row indices are drawn uniformly without replacement
    from ``key``; each process reads its own rows among them; the rows are gathered in global
    order; process 0 runs one EM step of :func:`gmm_jax.fit` (method ``init``) on that sample
    and broadcasts the result (every process starts from the same bits; only process 0
    compiles the initialisation).
    """
    size = min(init_sample_size, g.n_samples)
    if size < n_components:
        raise ValueError(f"init_sample_size={init_sample_size} is smaller than "
                         f"n_components={n_components}.")
    seed = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
    idx = np.sort(np.random.default_rng(seed).choice(g.n_samples, size=size, replace=False))
    me = exchange.process_index
    lo, hi = g.offsets[me], g.offsets[me + 1]
    rows = take_rows(reader, dtype, idx[(idx >= lo) & (idx < hi)] - lo, g.scan.n_features)
    if exchange.n_processes > 1:
        bounds = np.searchsorted(idx, g.offsets, side="left")
        counts = np.diff(bounds)
        padded = np.zeros((int(counts.max()), g.scan.n_features), dtype)
        padded[: len(rows)] = rows
        gathered = exchange.allgather([padded])[0]
        rows = np.concatenate([gathered[p, : counts[p]] for p in range(exchange.n_processes)])
    if exchange.is_writer:
        params = jax.tree.map(lambda a: np.asarray(a, dtype), fit(
            key, rows, n_components, covariance_type=covariance_type, max_iter=1, tol=0.0,
            init=init, reg_covar=reg_covar).params)
    else:  # only process 0 compiles and runs the initialisation; the others receive it
        d, shape = g.scan.n_features, cov.covariance_shape(covariance_type, n_components,
                                                             g.scan.n_features)
        params = GMMParams(np.zeros((n_components,), dtype), np.zeros((n_components, d), dtype),
                           np.zeros(shape, dtype), np.zeros(shape, dtype), covariance_type)
    return exchange.broadcast(params)


def fit_source(
    key,
    reader: BatchReader,
    n_components: int,
    *,
    covariance_type: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
    init: str,
    init_params: GMMParams | None,
    init_sample_size: int,
    chunk_size: int | None,
    dtype,
    mesh: Mesh,
    exchange=None,
    checkpoint: str | None = None,
    callback: Callable | None = None,
    kind: str = "fit_batches",
    init_fn: Callable | None = None,
) -> FitResult:
    """The host-driven EM loop shared by ``fit_batches``, ``fit_multiprocess`` and the
    checkpointed ``fit_sharded`` (options already validated by the caller).

    Every iteration: choose the E-step form from the error bound of the current (replicated)
    parameters and the previous lower bound; stream the local rows through the jitted E-step on
    ``mesh`` and sum the moments; sum them across processes (``exchange.sum_moments``); one
    jitted M-step with repair; the stopping rule of :func:`gmm_jax.fit`; write the checkpoint
    (process 0) and call ``callback``. Every decision depends only on values that are identical
    on every process (the summed moments and what follows from them), so all processes run the
    same number of collectives and end with the same parameters.

    Args:
        key: PRNG key (initialisation only).
        reader: this process's rows.
        n_components: K.
        covariance_type, max_iter, tol, reg_covar, init: as :func:`gmm_jax.fit`.
        init_params: start from these parameters (data coordinates) instead.
        init_sample_size: rows (over all processes) drawn at random for the initialisation.
        chunk_size: rows per E-step chunk on each device (None: from the shapes).
        dtype: computation dtype.
        mesh: 1-D mesh of this process's devices the batch rows are sharded over.
        exchange: cross-process operations (default :class:`SingleProcess`).
        checkpoint: validated checkpoint path or None.
        callback: ``callback(iteration, lower_bound, change, fast)`` after each iteration.
        kind: the calling function's name (part of the checkpoint's fingerprint).
        init_fn: optional ``() -> GMMParams`` computing the initial parameters (data
            coordinates) instead of the sampled initialisation; called only when not resuming.

    Returns:
        ``FitResult`` (one restart).
    """
    exchange = SingleProcess() if exchange is None else exchange
    dtype = np.dtype(dtype)
    key = validation.check_key(key)
    ct = covariance_type
    g = global_scan(reader, dtype, exchange, digest=checkpoint is not None)
    scan, d = g.scan, g.scan.n_features
    if g.n_samples < n_components:
        raise ValueError(f"the data hold {g.n_samples} samples, fewer than n_components="
                         f"{n_components}.")
    if init_params is not None:
        init_params = _check_init_params(init_params, n_components, d, ct)
    data = LocalData(reader, scan, dtype, mesh, n_components, chunk_size)

    fingerprint = None
    state = None
    if checkpoint is not None:
        digests = exchange.allgather([np.frombuffer(bytes.fromhex(scan.digest), np.uint8)])[0]
        fingerprint = dict(
            kind=kind, n_samples=g.n_samples, samples_per_process=g.counts.tolist(), n_features=d,
            n_components=n_components, covariance_type=ct, dtype=dtype.name, max_iter=max_iter,
            tol=tol, reg_covar=reg_covar, batch_rows=data.rows, chunk_size=data.chunk_size,
            n_processes=exchange.n_processes, devices_per_process=int(mesh.devices.size),
            data_checksum=hashlib.blake2b(digests.tobytes(), digest_size=32).hexdigest(),
        )
        if init_params is not None:
            fingerprint["init_params_checksum"] = _params_digest(init_params)
        else:
            fingerprint.update(init=init, key=[int(v) for v in np.asarray(
                jax.random.key_data(key)).ravel()],
                init_sample_size=None if init_fn is not None else init_sample_size)
        state = _load_checkpoint(checkpoint, fingerprint, exchange, n_components, d, ct,
                                 max_iter, dtype)
    if state is None:
        if init_params is None:
            if init_fn is not None:
                init_params = exchange.broadcast(jax.tree.map(np.asarray, init_fn()))
            else:
                init_params = sampled_init(key, reader, g, exchange, n_components,
                                           covariance_type=ct, init=init, reg_covar=reg_covar,
                                           init_sample_size=init_sample_size, dtype=dtype)
        p0 = jax.tree.map(lambda a: np.asarray(a, dtype), init_params)
        state = ckpt.fresh_state(p0._replace(means=p0.means - g.shift), max_iter, dtype)
    state = _run_loop(state, data, exchange, shift=g.shift, total=g.weight, tol=tol,
                      reg_covar=reg_covar, max_iter=max_iter, dtype=dtype, checkpoint=checkpoint,
                      fingerprint=fingerprint, callback=callback)
    exchange.check_same(state.params)
    return _result(state, g.shift)


def _load_checkpoint(path, fingerprint, exchange, k, d, ct, max_iter, dtype):
    """Process 0 reads (and checks) the checkpoint; its verdict and state reach every process."""
    status, message, state = 0, "", None
    if exchange.is_writer:
        try:
            state = ckpt.load(path, fingerprint)
            status = 0 if state is None else 1
        except ValueError as err:
            status, message = 2, str(err)
    if exchange.n_processes > 1:
        msg = np.zeros((4096,), np.uint8)
        raw = message.encode()[:4096]
        msg[: len(raw)] = np.frombuffer(raw, np.uint8)
        status_arr, msg = exchange.broadcast([np.asarray([status], np.int32), msg])
        status = int(status_arr[0])
        message = bytes(msg).rstrip(b"\0").decode(errors="replace")
        if not exchange.is_writer and status == 2:
            message = f"process 0 refused the checkpoint: {message}"
    if status == 2:
        raise ValueError(message)
    if status == 0:
        return None
    if exchange.n_processes > 1:
        template = state if state is not None else ckpt.fresh_state(
            GMMParams(np.zeros((k,), dtype), np.zeros((k, d), dtype),
                      np.zeros(cov.covariance_shape(ct, k, d), dtype),
                      np.zeros(cov.covariance_shape(ct, k, d), dtype), ct), max_iter, dtype)
        scalars = np.asarray([template.iteration, template.n_repaired, template.converged,
                              template.finished], np.int64)
        params, lb, hist, fast, scalars = exchange.broadcast(
            [template.params, template.lower_bound, template.history, template.fast_path,
             scalars])
        state = ckpt.EMState(params, int(scalars[0]), lb, hist, fast.astype(bool),
                             int(scalars[1]), bool(scalars[2]), bool(scalars[3]))
    return state


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def _run_loop(state: ckpt.EMState, data: LocalData, exchange, *, shift, total, tol, reg_covar,
              max_iter, dtype, checkpoint, fingerprint, callback) -> ckpt.EMState:
    """EM iterations from ``state`` until finished (``gmm_jax.em.em_iterations``'s rules)."""
    params, it = state.params, state.iteration
    lb = np.asarray(state.lower_bound, dtype)
    hist, fast_hist = np.array(state.history), np.array(state.fast_path)
    n_rep, conv, finished = state.n_repaired, state.converged, state.finished
    tol_d, total_d = np.asarray(tol, dtype), np.asarray(total, dtype)
    reg = np.asarray(reg_covar, dtype)
    while not finished:
        fast = bool(_fast_form_ok(params, lb, it == 0))
        form = "fast" if fast else "exact"
        moments = exchange.sum_moments(data.moments(params, shift, form))
        ll = np.asarray(moments[3], dtype) / total_d
        change = ll - lb
        hist[it], fast_hist[it] = ll, fast
        it, lb = it + 1, ll
        if not np.isfinite(ll):
            finished = True  # keep the parameters that gave it; no M-step
        else:
            now = bool(np.abs(change) < tol_d)
            conv = conv or now
            new, n_bad = _host(_m_step_moments(params, moments, reg, form=form))
            if all(np.all(np.isfinite(a)) for a in jax.tree.leaves(new)):
                params, n_rep = new, n_rep + int(n_bad)
                finished = now or it >= max_iter
            else:
                finished = True  # keep the previous parameters
        state = ckpt.EMState(params, it, lb, hist.copy(), fast_hist.copy(), n_rep, conv,
                             finished)
        if checkpoint is not None and exchange.is_writer:
            ckpt.save(checkpoint, state, fingerprint)
        if callback is not None:
            callback(it, float(lb), float(change), fast)
    return state


def _result(state: ckpt.EMState, shift: np.ndarray) -> FitResult:
    p = state.params
    params = jax.tree.map(jnp.asarray, p._replace(means=p.means + shift))
    n = state.iteration
    hist = np.array(state.history)
    hist[n:] = state.lower_bound
    fast = np.array(state.fast_path)
    fast[n:] = False
    lb = jnp.asarray(state.lower_bound)
    return FitResult(params, lb, jnp.asarray(hist), jnp.asarray(n, jnp.int32),
                     jnp.asarray(state.converged), lb[None], jnp.asarray(state.n_repaired,
                                                                         jnp.int32),
                     jnp.asarray(fast))


# ------------------------------------------------------------------------------ fit_batches
def fit_batches(
    key,
    batches,
    n_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    init_sample_size: int = 10_000,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    dtype=np.float32,
    checkpoint=None,
    callback: Callable | None = None,
) -> FitResult:
    """Exact EM over data read batch by batch (data larger than memory), resumable.

    Each iteration streams every batch through the jitted E-step, sums the statistics and takes
    one M-step: the iterates are those of full-batch EM (:func:`gmm_jax.fit` from the same
    initial parameters). Initial parameters are ``init_params``, or one EM step of
    :func:`gmm_jax.fit` (method ``init``) on ``init_sample_size`` rows drawn uniformly at random
    from the whole source with ``key``.

    Memory: the process holds one batch (``batch_size`` rows) at a time, plus what is in flight
    on the device; files given by path are read with positioned reads, never loaded whole.
    Measured (``benchmarks/bench_multihost.py --memory``): a 10M x 32 float32 file (1.2 GB),
    K=64 full, peak resident set 596 MB, of which 340 MB before the fit (Python, JAX, imports).

    Args:
        key: PRNG key or int seed (initialisation only).
        batches: a path to a 2-D ``.npy`` file; an (N, D) array (in memory, memory-mapped, or
            anything with ``shape``, ``dtype`` and row slicing); a list/tuple of paths and
            arrays; or a zero-argument function returning a fresh iterator of them (a generator
            function). Read ``max_iter + 3`` times at most. A one-shot iterator is refused.
        n_components: K.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        max_iter: maximum passes over the data.
        tol: stop when the mean log-likelihood changes by less than this.
        reg_covar: added to covariance diagonals.
        init: initialisation method for the sample (see :func:`gmm_jax.fit`).
        init_params: start from these parameters instead (then ``key`` is unused).
        init_sample_size: rows used for the initialisation.
        batch_size: most rows per batch: larger items (files, arrays) are cut into slices.
        chunk_size: rows per E-step chunk inside a batch (None: from the shapes).
        dtype: computation dtype (float64 needs x64).
        checkpoint: optional file path. The EM state is written there after every iteration
            (atomically: temporary file, then rename; ``.npz`` with JSON metadata, no pickle).
            If the file exists, the fit resumes from it and ends with the result of an
            uninterrupted run; a checkpoint written for other data, sizes or options is refused
            with a ``ValueError``. A finished fit's checkpoint returns its result at once.
        callback: optional ``callback(iteration, lower_bound, change, fast)`` called on the host
            after each iteration (after the checkpoint is written): progress reporting.

    Returns:
        ``FitResult`` (one restart: ``restart_log_likelihoods`` has one entry).

    Example:
        >>> import numpy as np, gmm_jax
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(-4, 1, (500, 2)), rng.normal(4, 1, (500, 2))]
        >>> res = gmm_jax.fit_batches(0, [X[:300], X[300:600], X[600:]], 2)
        >>> res.params.means.shape
        (2, 2)
    """
    dtype = validation.float_dtype(dtype) if dtype is not None else np.dtype(np.float32)
    (n_components, max_iter, tol, reg_covar, batch_size, init_sample_size,
     chunk_size) = check_options(n_components, covariance_type, max_iter, tol, reg_covar, init,
                                 batch_size, init_sample_size, chunk_size, callback)
    checkpoint = ckpt.check_path(checkpoint)
    reader = BatchReader(batches, batch_size)
    return fit_source(key, reader, n_components, covariance_type=covariance_type,
                      max_iter=max_iter, tol=tol, reg_covar=reg_covar, init=init,
                      init_params=init_params, init_sample_size=init_sample_size,
                      chunk_size=chunk_size, dtype=dtype, mesh=row_mesh(),
                      checkpoint=checkpoint, callback=callback, kind="fit_batches")


# ------------------------------------------------------------------------------- online EM
@jax.jit
def _m_step_repaired(stats, reg_covar):
    params = m_step(stats, reg_covar=reg_covar)
    return repair_components(params, stats)


@jax.jit
def _responsibilities(params: GMMParams, X: Array):
    return responsibilities(params, X)


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
    shift = default_shift(params) if shift is None else jnp.asarray(shift, dtype)
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

